//! Minimal, fast HTTP/1.1 backend for the Concierge benchmark harness.
//!
//! Every request, whatever its method or path, is answered with
//! `200 OK`, `Content-Type: text/plain` and the body `hello from backend\n`.
//! Connections are kept alive. The work per request is deliberately tiny so
//! that the benchmark measures the proxy in front of it, not the backend.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello from backend\n";

/// Minimal HTTP/1.1 backend for the Concierge benchmarks.
#[derive(Debug, Parser)]
#[command(name = "concierge-bench-backend", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18000")]
    addr: SocketAddr,

    /// Number of tokio worker threads (1 = single-threaded runtime).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.threads))
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(args.addr))
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!(
        "concierge-bench-backend listening on http://{}",
        listener.local_addr()?
    );

    let accept_loop = async {
        loop {
            let (stream, _peer) = match listener.accept().await {
                Ok(conn) => conn,
                Err(err) => {
                    // E.g. EMFILE: back off briefly instead of spinning.
                    eprintln!("accept error: {err}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            // Best effort: small responses should not wait for Nagle.
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service_fn(handle));
                // Client resets and aborted connections are routine under load.
                let _ = conn.await;
            });
        }
    };

    tokio::select! {
        () = accept_loop => Ok(()),
        res = tokio::signal::ctrl_c() => res,
    }
}

async fn handle(_req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(BODY)));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(resp)
}
