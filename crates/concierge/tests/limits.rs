//! Request limits end to end: body size (declared and streamed), per-route
//! overrides, header size, timeouts and unreachable upstreams.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use support::upstream::{Upstream, full, raw_request};
use support::{GatewayProcess, assert_problem, client, free_addr};

/// An upstream that counts the requests reaching it and answers with the
/// number of body bytes it read.
async fn counting_upstream() -> (Upstream, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let hits = hits.clone();
        Upstream::start(move |req: hyper::Request<hyper::body::Incoming>| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let len = match req.into_body().collect().await {
                    Ok(body) => body.to_bytes().len(),
                    Err(_) => usize::MAX,
                };
                hyper::Response::new(full(len.to_string()))
            }
        })
        .await
    };
    (upstream, hits)
}

fn one_route(listen: SocketAddr, upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
{extra}
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#
    )
}

#[tokio::test]
async fn declared_body_over_the_limit_is_413_before_the_upstream() {
    let (upstream, hits) = counting_upstream().await;
    let listen = free_addr();
    let yaml = one_route(
        listen,
        upstream.addr,
        "server:\n  limits:\n    max_body_bytes: 1KiB",
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let c = client();

    let response = c
        .post(format!("http://{listen}/upload"))
        .body(vec![b'x'; 1025])
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 413).await;
    assert_eq!(problem["title"], "Payload Too Large");
    assert!(
        problem["detail"].as_str().unwrap().contains("1024"),
        "{problem}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the upstream was reached");

    // Exactly at the limit is fine.
    let response = c
        .post(format!("http://{listen}/upload"))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "1024");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn streamed_chunked_body_over_the_limit_is_413() {
    let (upstream, _hits) = counting_upstream().await;
    let listen = free_addr();
    let yaml = one_route(
        listen,
        upstream.addr,
        "server:\n  limits:\n    max_body_bytes: 4KiB",
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let c = client();
    let chunked = |chunks: usize| {
        let stream = futures_util::stream::iter(
            (0..chunks).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 1024])),
        );
        reqwest::Body::wrap_stream(stream)
    };

    // No Content-Length: the limit is enforced while the body streams.
    let response = c
        .post(format!("http://{listen}/upload"))
        .body(chunked(6))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 413).await;
    assert_eq!(problem["title"], "Payload Too Large");

    // A chunked body within the limit streams through whole.
    let response = c
        .post(format!("http://{listen}/upload"))
        .body(chunked(4))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "4096");
}

#[tokio::test]
async fn routes_override_the_body_limit() {
    let (upstream, hits) = counting_upstream().await;
    let listen = free_addr();
    let yaml = format!(
        r#"
server:
  limits:
    max_body_bytes: 10MiB
frontends:
  - name: web
    listen: {listen}
    limits:
      max_body_bytes: 1KiB
    routes:
      - match: {{ path_prefix: /big }}
        service: api
        limits: {{ max_body_bytes: 8KiB }}
      - match: {{ path_prefix: /tiny }}
        service: api
        limits: {{ max_body_bytes: 16 }}
      - match: {{ path_prefix: / }}
        service: api
services:
  api: {{ targets: ["{}"] }}
"#,
        upstream.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let c = client();
    let post = |path: &'static str, len: usize| {
        let c = c.clone();
        async move {
            c.post(format!("http://{listen}{path}"))
                .body(vec![b'z'; len])
                .send()
                .await
                .unwrap()
        }
    };
    let response = post("/big", 4096).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "4096");
    assert_problem(post("/big", 8193).await, 413).await;
    // Other routes keep the frontend's 1KiB.
    assert_problem(post("/other", 4096).await, 413).await;
    assert_eq!(post("/other", 1024).await.status(), 200);
    // And a route can also lower it.
    assert_eq!(post("/tiny", 16).await.status(), 200);
    assert_problem(post("/tiny", 17).await, 413).await;
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

/// An upstream that answers after `delay`.
async fn slow_upstream(delay: Duration) -> Upstream {
    Upstream::start(move |_req| async move {
        tokio::time::sleep(delay).await;
        hyper::Response::new(full("late"))
    })
    .await
}

#[tokio::test]
async fn slow_upstream_is_504_after_the_request_timeout() {
    let upstream = slow_upstream(Duration::from_secs(3)).await;
    let listen = free_addr();
    let yaml = one_route(
        listen,
        upstream.addr,
        "server:\n  limits:\n    request_timeout: 300ms",
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let started = Instant::now();
    let response = client()
        .get(format!("http://{listen}/slow"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let problem = assert_problem(response, 504).await;
    assert_eq!(problem["title"], "Gateway Timeout");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "answered after {elapsed:?}"
    );
}

#[tokio::test]
async fn service_request_timeout_overrides_the_frontend_one() {
    let upstream = slow_upstream(Duration::from_millis(800)).await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    limits: {{ request_timeout: 30s }}
    routes:
      - match: {{ path_prefix: /short }}
        service: short
      - match: {{ path_prefix: /long }}
        service: long
        limits: {{ request_timeout: 200ms }}
services:
  short:
    targets: ["{addr}"]
    timeouts: {{ request: 200ms }}
  long:
    targets: ["{addr}"]
    timeouts: {{ request: 5s }}
"#,
        addr = upstream.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let c = client();
    // The service's 200ms wins over the frontend's 30s...
    let started = Instant::now();
    let response = c
        .get(format!("http://{listen}/short"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 504).await;
    assert!(started.elapsed() < Duration::from_millis(750));
    // ...and its 5s wins over the route's 200ms.
    let response = c.get(format!("http://{listen}/long")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "late");
}

#[tokio::test]
async fn refused_upstream_connection_is_502_problem_json() {
    // Nothing listens here.
    let dead = free_addr();
    let listen = free_addr();
    let yaml = one_route(listen, dead, "");
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let started = Instant::now();
    let response = client()
        .get(format!("http://{listen}/x"))
        .send()
        .await
        .unwrap();
    let problem = assert_problem(response, 502).await;
    assert_eq!(problem["title"], "Bad Gateway");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("connection to the upstream failed"),
        "{detail}"
    );
    // The client learns nothing about internal addresses.
    assert!(!detail.contains(&dead.port().to_string()), "{detail}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refusal is immediate"
    );
}

#[tokio::test]
async fn oversized_request_head_is_431() {
    let (upstream, hits) = counting_upstream().await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    limits: {{ max_header_bytes: 8KiB }}
    routes:
      - match: {{ path_prefix: / }}
        service: api
services:
  api: {{ targets: ["{}"] }}
"#,
        upstream.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let request = |value_len: usize| {
        format!(
            "GET /x HTTP/1.1\r\nHost: shop.test\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "h".repeat(value_len)
        )
    };
    // hyper answers the oversized head itself, before any routing: a bare
    // 431 rather than problem+json, then it closes the connection.
    let response = raw_request(listen, request(20 * 1024).as_bytes()).await;
    assert_eq!(response.status, 431, "{response:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);

    // A head comfortably inside the limit is served.
    let response = raw_request(listen, request(4 * 1024).as_bytes()).await;
    assert_eq!(response.status, 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}
