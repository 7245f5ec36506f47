//! Real upstream HTTP servers for tests, built from a handler closure.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub type BoxedBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<BoxedBody>> + Send>>
        + Send
        + Sync,
>;

/// A running test upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn full(body: impl Into<Bytes>) -> BoxedBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

impl Upstream {
    /// Serves HTTP/1.1 and h2c on an ephemeral loopback port.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<BoxedBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    /// Answers every request with JSON describing it, tagged with `name`:
    /// `{"name","method","path","version","headers":{..},"body_len"}`.
    pub async fn echo(name: &'static str) -> Self {
        Self::start(move |req: Request<Incoming>| async move {
            let method = req.method().to_string();
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let version = format!("{:?}", req.version());
            let mut headers = serde_json::Map::new();
            for (k, v) in req.headers() {
                let v = v.to_str().unwrap_or("<binary>").to_string();
                match headers.get_mut(k.as_str()) {
                    Some(serde_json::Value::String(prev)) => {
                        prev.push_str(", ");
                        prev.push_str(&v);
                    }
                    _ => {
                        headers.insert(k.as_str().to_string(), serde_json::Value::String(v));
                    }
                }
            }
            let body_len = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            let json = serde_json::json!({
                "name": name, "method": method, "path": path, "version": version,
                "headers": headers, "body_len": body_len,
            });
            Response::builder()
                .header("content-type", "application/json")
                .header("x-upstream", name)
                .body(full(json.to_string()))
                .expect("response")
        })
        .await
    }
}
