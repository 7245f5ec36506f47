//! SIGTERM: stop accepting at once, let requests in flight finish within
//! `server.shutdown_grace`, then exit 0 — on time even if they have not.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use support::upstream::{Upstream, full};
use support::{GatewayProcess, client, free_addr};
use tokio::sync::mpsc;

/// An upstream that answers after `delay`, reporting each request's arrival.
async fn slow_upstream(delay: Duration) -> (Upstream, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let upstream = Upstream::start(move |_req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(());
            tokio::time::sleep(delay).await;
            Response::new(full("finally"))
        }
    })
    .await;
    (upstream, rx)
}

fn config(listen: SocketAddr, upstream: SocketAddr, grace: &str) -> String {
    format!(
        r#"
server:
  shutdown_grace: {grace}
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: slow
services:
  slow: {{ targets: ["{upstream}"] }}
"#
    )
}

/// Waits until `addr` refuses connections; returns how long that took.
fn refused_within(addr: SocketAddr, timeout: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_in_flight_request_finish_then_exits_zero() {
    // Long enough that the listener is surely closed before it answers.
    let (upstream, mut arrived) = slow_upstream(Duration::from_secs(2)).await;
    let listen = free_addr();
    let mut gw = GatewayProcess::start(&config(listen, upstream.addr, "10s"), &[listen]);

    let in_flight = tokio::spawn(async move {
        let response = client()
            .get(format!("http://{listen}/slow"))
            .send()
            .await
            .expect("the in-flight request must complete");
        (response.status().as_u16(), response.text().await.unwrap())
    });
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the upstream never got the request");

    let term = Instant::now();
    gw.signal("TERM");
    let refused = tokio::task::block_in_place(|| refused_within(listen, Duration::from_secs(2)));
    let refused = refused.expect("the listener still accepts 2s after SIGTERM");
    assert!(
        !in_flight.is_finished(),
        "the listener should close before the slow request ends"
    );

    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "finally");

    let code = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10)));
    let exited = term.elapsed();
    assert_eq!(code, Some(0), "exit status:\n{}", gw.log_text());
    // Drained as soon as the request was done, well inside the 10s grace.
    assert!(exited < Duration::from_secs(5), "exit took {exited:?}");
    eprintln!("refused after {refused:?}, exited after {exited:?}");
    let log = gw.log_text();
    assert!(log.contains("drained all connections"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_grace_bounds_the_wait_for_slow_requests() {
    let (upstream, mut arrived) = slow_upstream(Duration::from_secs(10)).await;
    let listen = free_addr();
    let mut gw = GatewayProcess::start(&config(listen, upstream.addr, "500ms"), &[listen]);

    let in_flight = tokio::spawn(async move {
        let started = Instant::now();
        let result = client().get(format!("http://{listen}/slow")).send().await;
        (result.map(|r| r.status().as_u16()), started.elapsed())
    });
    tokio::time::timeout(Duration::from_secs(10), arrived.recv())
        .await
        .expect("the upstream never got the request");

    let term = Instant::now();
    gw.signal("TERM");
    let code = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(5)));
    let exited = term.elapsed();
    assert_eq!(code, Some(0), "exit status:\n{}", gw.log_text());
    assert!(
        exited >= Duration::from_millis(450),
        "exited after {exited:?}, before the 500ms grace was over"
    );
    assert!(
        exited < Duration::from_secs(3),
        "exited after {exited:?}, long after the 500ms grace"
    );
    eprintln!("exited {exited:?} after SIGTERM");
    let log = gw.log_text();
    assert!(log.contains("grace period over"), "{log}");

    // The abandoned request fails when the process goes, not after 10s.
    let (result, took) = in_flight.await.unwrap();
    assert!(result.is_err(), "the request cannot succeed: {result:?}");
    assert!(took < Duration::from_secs(5), "the client waited {took:?}");
}
