//! What every demo service shares: the accept loop, the routes all five
//! answer (`/health`, `/echo/...`) and small response helpers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue, LOCATION};
use hyper::http::request::Parts;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

pub(crate) type Body = Full<Bytes>;

/// Request bodies the services parse are tiny; anything bigger is a mistake.
const MAX_JSON_BODY: usize = 64 * 1024;

/// How long a shutdown waits for in-flight requests before cutting them off.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// One demo service: its own routes. `/health` and `/echo` are answered
/// for it by [`dispatch`], so every service behaves the same there.
pub(crate) trait Service: Send + Sync + 'static {
    const NAME: &'static str;

    /// Sees every request before routing; the product service logs here.
    fn observe(&self, _req: &Request<Incoming>) {}

    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// The outcome of matching a method and path against a service's routes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Routed<R> {
    To(R),
    /// The path exists but not for this method; the value is the Allow header.
    NotAllowed(&'static str),
    NotFound,
}

/// Path segments without the empty ones, so `/products/` routes like `/products`.
pub(crate) fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

/// Serves `svc` on `listener` until `stop` fires (or its sender is dropped).
///
/// Connections live in a `JoinSet` owned by the loop, so aborting the
/// returned task also tears down every open connection.
pub(crate) fn spawn<S: Service>(
    listener: TcpListener,
    svc: Arc<S>,
    mut stop: watch::Receiver<()>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        // auto::Builder sniffs the preface, so one port serves HTTP/1.1 and h2c.
        let builder = auto::Builder::new(TokioExecutor::new());
        let graceful = GracefulShutdown::new();
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => {
                        let _ = stream.set_nodelay(true);
                        let svc = svc.clone();
                        let service = hyper::service::service_fn(move |req| {
                            let svc = svc.clone();
                            async move { Ok::<_, Infallible>(dispatch(&*svc, req).await) }
                        });
                        let conn = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .into_owned();
                        conns.spawn(graceful.watch(conn));
                    }
                    Err(err) => {
                        // Usually EMFILE: back off instead of spinning.
                        tracing::warn!("{}: accept failed: {err}", S::NAME);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stop.changed() => break,
            }
            while conns.try_join_next().is_some() {}
        }
        drop(listener);
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    })
}

async fn dispatch<S: Service>(svc: &S, req: Request<Incoming>) -> Response<Body> {
    svc.observe(&req);
    let path = req.uri().path();
    let mut resp = if path == "/health" {
        if req.method() == Method::GET {
            json(
                StatusCode::OK,
                &json!({ "status": "ok", "service": S::NAME }),
            )
        } else {
            method_not_allowed("GET")
        }
    } else if path == "/echo" || path.starts_with("/echo/") {
        echo(S::NAME, req).await
    } else {
        svc.handle(req).await
    };
    resp.headers_mut()
        .insert("x-served-by", HeaderValue::from_static(S::NAME));
    resp
}

/// Describes the request exactly as it arrived, for gateway tests that need
/// to see what was forwarded (headers added or stripped, path rewrites, body).
async fn echo(service: &str, req: Request<Incoming>) -> Response<Body> {
    let (parts, mut body) = req.into_parts();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    // Count frame by frame so large uploads are not held in memory.
    let mut body_len = 0usize;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => body_len += frame.data_ref().map_or(0, |d| d.len()),
            Err(err) => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "Bad Request",
                    &format!("reading body: {err}"),
                );
            }
        }
    }
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    // HTTP/2 carries the host in :authority, not a Host header.
    let host = header(&parts, "host")
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    json(
        StatusCode::OK,
        &json!({
            "service": service,
            "method": parts.method.as_str(),
            "path": path,
            "host": host,
            "version": format!("{:?}", parts.version),
            "headers": headers,
            "body_len": body_len,
        }),
    )
}

pub(crate) fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value).expect("demo payloads always serialize");
    with_type(status, "application/json", body)
}

pub(crate) fn created<T: Serialize + ?Sized>(location: &str, value: &T) -> Response<Body> {
    let mut resp = json(StatusCode::CREATED, value);
    if let Ok(location) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(LOCATION, location);
    }
    resp
}

pub(crate) fn no_content() -> Response<Body> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp
}

/// An RFC 9457 problem document.
pub(crate) fn problem(status: StatusCode, title: &str, detail: &str) -> Response<Body> {
    let body = json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    let body = serde_json::to_vec(&body).expect("problem documents always serialize");
    with_type(status, "application/problem+json", body)
}

pub(crate) fn not_found(detail: &str) -> Response<Body> {
    problem(StatusCode::NOT_FOUND, "Not Found", detail)
}

pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut resp = problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
        &format!("allowed: {allow}"),
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
}

/// The services trust the gateway for identity; a request without
/// `X-User-ID` did not come through it (or hit a public route by mistake).
pub(crate) fn unauthenticated() -> Response<Body> {
    problem(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "missing X-User-ID header: requests must come through the gateway",
    )
}

/// The 404/405 answer for a route that did not match.
#[expect(
    clippy::result_large_err,
    reason = "the error is the response itself, built at most once per request"
)]
pub(crate) fn unrouted<R>(routed: Routed<R>, path: &str) -> Result<R, Response<Body>> {
    match routed {
        Routed::To(route) => Ok(route),
        Routed::NotAllowed(allow) => Err(method_not_allowed(allow)),
        Routed::NotFound => Err(not_found(&format!("no route for {path}"))),
    }
}

pub(crate) fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The value of `key` in the query string, percent-decoded.
pub(crate) fn query_param(parts: &Parts, key: &str) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a small JSON body, or answers 400/413 with a problem document.
pub(crate) async fn read_json<T: DeserializeOwned>(body: Incoming) -> Result<T, Response<Body>> {
    let bytes = match Limited::new(body, MAX_JSON_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            return Err(problem(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Payload Too Large",
                &format!("JSON bodies are limited to {MAX_JSON_BODY} bytes"),
            ));
        }
        Err(err) => {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "Bad Request",
                &format!("reading body: {err}"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|err| {
        problem(
            StatusCode::BAD_REQUEST,
            "Bad Request",
            &format!("invalid JSON body: {err}"),
        )
    })
}

fn with_type(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str) -> Parts {
        Request::get(uri).body(()).unwrap().into_parts().0
    }

    #[test]
    fn segments_ignore_empty_parts() {
        assert_eq!(segments("/products/"), vec!["products"]);
        assert_eq!(segments("//products//7"), vec!["products", "7"]);
        assert!(segments("/").is_empty());
    }

    #[test]
    fn query_params_are_decoded() {
        let p = parts("/products?category=home%20%26%20garden&x=1");
        assert_eq!(
            query_param(&p, "category").as_deref(),
            Some("home & garden")
        );
        assert_eq!(query_param(&p, "x").as_deref(), Some("1"));
        assert_eq!(query_param(&p, "missing"), None);
        assert_eq!(
            query_param(&parts("/n?unread"), "unread").as_deref(),
            Some("")
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("a+b%2"), "a b%2");
    }
}
