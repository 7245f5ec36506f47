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

/// One HTTP/1.1 response read off a raw socket by [`raw_request`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Names lower-cased, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: body {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Writes `request` verbatim and reads one response: for request lines and
/// headers an HTTP client would normalise or refuse to send. Bytes that
/// arrived before a connection reset still count, so a response the server
/// wrote just before closing is not lost.
pub async fn raw_request(addr: SocketAddr, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(response) = parse_raw_response(&buf, false) {
            return response;
        }
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut chunk))
                .await
                .expect("no response within 30s");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    parse_raw_response(&buf, true).unwrap_or_else(|| {
        panic!(
            "no complete response in {:?}",
            String::from_utf8_lossy(&buf)
        )
    })
}

fn parse_raw_response(buf: &[u8], eof: bool) -> Option<RawResponse> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let rest = &buf[end + 4..];
    let body = if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..len)?.to_vec()
    } else if eof {
        rest.to_vec()
    } else {
        return None;
    };
    Some(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
