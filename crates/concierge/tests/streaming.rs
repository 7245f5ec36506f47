//! Bodies stream through the gateway both ways: a 1 GiB upload and a 1 GiB
//! download pass with every byte counted, while the gateway's peak resident
//! memory stays far below the body size.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use support::upstream::{BoxedBody, Upstream, full};
use support::{GatewayProcess, free_addr};

const GIB: u64 = 1024 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;
/// The gateway holds at most a few chunks per direction; 1 GiB through a
/// buffering proxy would blow far past this.
const MAX_PEAK_RSS: u64 = 100 * 1024 * 1024;

/// Peak resident set size (VmHWM) of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc/<gateway>/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc status");
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmHWM value");
    kib * 1024
}

/// Routes everything to `service` with a body limit above 1 GiB and room
/// for a slow (debug build) transfer before the upstream answers.
fn config(listen: std::net::SocketAddr, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
frontends:
  - name: bulk
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: bulk
        limits: {{ max_body_bytes: 2GiB, request_timeout: 10m }}
services:
  bulk: {{ targets: ["{upstream}"] }}
"#
    )
}

fn long_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client")
}

fn chunk() -> Bytes {
    Bytes::from((0..CHUNK).map(|i| i as u8).collect::<Vec<u8>>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_with_bounded_memory() {
    // The upstream counts bytes frame by frame and drops each one at once.
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let upstream = Upstream::start(move |req: Request<Incoming>| {
        let counter = counter.clone();
        async move {
            let mut body = req.into_body();
            let mut total = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.expect("upload frame");
                if let Some(data) = frame.data_ref() {
                    total += data.len() as u64;
                    counter.store(total, Ordering::Relaxed);
                }
            }
            Response::new(full(total.to_string()))
        }
    })
    .await;
    let listen = free_addr();
    let gw = GatewayProcess::start(&config(listen, upstream.addr), &[listen]);
    let baseline = peak_rss(gw.child.id());

    let piece = chunk();
    let chunks = GIB / CHUNK as u64;
    let stream =
        futures_util::stream::iter(0..chunks).map(move |_| Ok::<_, std::io::Error>(piece.clone()));
    let started = Instant::now();
    let response = long_client()
        .post(format!("http://{listen}/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("upload through the gateway");
    assert_eq!(response.status(), 200);
    let counted: u64 = response.text().await.unwrap().parse().unwrap();
    let elapsed = started.elapsed();
    assert_eq!(counted, GIB, "the upstream counted every byte");
    assert_eq!(received.load(Ordering::Relaxed), GIB);

    let peak = peak_rss(gw.child.id());
    eprintln!(
        "upload: 1 GiB in {elapsed:?}; gateway VmHWM {} MiB (baseline {} MiB)",
        peak >> 20,
        baseline >> 20
    );
    assert!(
        peak < MAX_PEAK_RSS,
        "gateway peak RSS {} MiB is not bounded (limit {} MiB)",
        peak >> 20,
        MAX_PEAK_RSS >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_download_streams_with_bounded_memory() {
    // The upstream generates the body lazily, one chunk at a time.
    let upstream = Upstream::start(|_req: Request<Incoming>| async move {
        let piece = chunk();
        let chunks = GIB / CHUNK as u64;
        let frames = futures_util::stream::iter(0..chunks).map(move |_| {
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(piece.clone()))
        });
        let body: BoxedBody = BodyExt::boxed(StreamBody::new(frames));
        Response::new(body)
    })
    .await;
    let listen = free_addr();
    let gw = GatewayProcess::start(&config(listen, upstream.addr), &[listen]);
    let baseline = peak_rss(gw.child.id());

    let started = Instant::now();
    let mut response = long_client()
        .get(format!("http://{listen}/download"))
        .send()
        .await
        .expect("download through the gateway");
    assert_eq!(response.status(), 200);
    let mut total = 0u64;
    while let Some(piece) = response.chunk().await.expect("download chunk") {
        total += piece.len() as u64;
    }
    let elapsed = started.elapsed();
    assert_eq!(total, GIB, "the client received every byte");

    let peak = peak_rss(gw.child.id());
    eprintln!(
        "download: 1 GiB in {elapsed:?}; gateway VmHWM {} MiB (baseline {} MiB)",
        peak >> 20,
        baseline >> 20
    );
    assert!(
        peak < MAX_PEAK_RSS,
        "gateway peak RSS {} MiB is not bounded (limit {} MiB)",
        peak >> 20,
        MAX_PEAK_RSS >> 20
    );
}
