//! The request path: normalise, route, enforce limits, forward, stream back.

mod forward;
mod policies;
mod upgrade;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use crate::auth::ip;
use crate::body::{Body, BodyTooLarge, Guarded, Limited};
use crate::error::GatewayError;
use crate::headers::{X_REQUEST_ID, request_id};
use crate::ratelimit::{RateLimitHeaders, RequestKeys};
use crate::router::host::request_host;
use crate::router::normalize::normalize_path;
use crate::router::table::Lookup;
use crate::snapshot::{FrontendRt, RouteRt, Snapshot};

/// What the connection knows about the client.
#[derive(Clone)]
pub struct ClientInfo {
    pub peer: SocketAddr,
    /// The peer's address as a header value, for `X-Forwarded-For`.
    pub peer_header: HeaderValue,
    pub https: bool,
    /// The connection's last verified bearer token.
    pub token_memo: Arc<crate::auth::memo::TokenMemo>,
}

/// Handles one request on `frontend`, answering errors itself.
pub async fn handle(
    snapshot: Arc<Snapshot>,
    frontend: Arc<str>,
    client: ClientInfo,
    tunnels: TaskTracker,
    request: Request<Incoming>,
) -> Response<Body> {
    let id = request_id(request.headers());
    // Cheap: a URI shares its bytes; kept only to name the path in errors.
    let uri = request.uri().clone();
    let Some(frontend) = snapshot.frontend(&frontend) else {
        let error = GatewayError::Unavailable(
            "this listener is being retired by a configuration reload".into(),
        );
        return error.to_response(id.to_str().unwrap_or_default(), uri.path());
    };
    let client_ip = ip::client_ip(
        client.peer.ip(),
        request.headers(),
        &frontend.trusted_proxies,
    );
    // IP rules answer before any other work, preflights included.
    if !frontend.ip.permits(client_ip) {
        return GatewayError::Forbidden("the client address is not allowed".into())
            .to_response(id.to_str().unwrap_or_default(), uri.path());
    }
    let origin = match &frontend.cors {
        Some(cors) => {
            if let Some(mut preflight) = cors.preflight(request.method(), request.headers()) {
                if !route_permits_preflight(frontend, &request, client_ip) {
                    return GatewayError::Forbidden(
                        "the client address is not allowed on this route".into(),
                    )
                    .to_response(id.to_str().unwrap_or_default(), uri.path());
                }
                preflight.headers_mut().insert(X_REQUEST_ID, id);
                return preflight;
            }
            request.headers().get(header::ORIGIN).cloned()
        }
        None => None,
    };
    let context = Context {
        snapshot: &snapshot,
        frontend,
        client,
        client_ip,
        tunnels: &tunnels,
        id: &id,
    };
    let mut response = match proxy(context, request).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(request_id = ?id, %error, "answered by the gateway");
            error.to_response(id.to_str().unwrap_or_default(), uri.path())
        }
    };
    if let Some(cors) = &frontend.cors {
        cors.decorate(origin.as_ref(), response.headers_mut());
    }
    response.headers_mut().insert(X_REQUEST_ID, id);
    response
}

/// Whether the route a preflight asks about lets `client_ip` in: a subnet
/// blocked on one route must not learn that route's CORS answer either.
fn route_permits_preflight(
    frontend: &FrontendRt,
    request: &Request<Incoming>,
    client_ip: std::net::IpAddr,
) -> bool {
    let Some(method) = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
    else {
        return true;
    };
    let Ok(path) = normalize_path(request.uri().path()) else {
        return true;
    };
    let host = request_host(request);
    match frontend
        .routes
        .lookup(host.as_deref(), &method, &path, request.headers())
    {
        Lookup::Found { value, .. } => value.ip.permits(client_ip),
        _ => true,
    }
}

/// What the request path knows besides the request itself.
struct Context<'a> {
    snapshot: &'a Snapshot,
    frontend: &'a FrontendRt,
    client: ClientInfo,
    client_ip: std::net::IpAddr,
    tunnels: &'a TaskTracker,
    id: &'a HeaderValue,
}

async fn proxy(
    cx: Context<'_>,
    mut request: Request<Incoming>,
) -> Result<Response<Body>, GatewayError> {
    let frontend = cx.frontend;
    let path = normalize_path(request.uri().path())
        .map_err(|e| GatewayError::BadRequest(e.to_string()))?;
    let host = request_host(&request);
    let (route, upstream_path) =
        match frontend
            .routes
            .lookup(host.as_deref(), request.method(), &path, request.headers())
        {
            Lookup::Found { value, params } => {
                // `None`: forward the client's path and query as they are.
                let rewritten = match (&value.rewrite, &path) {
                    (Some(rewrite), _) => Some(rewrite.apply(&path, &params)),
                    (None, Cow::Owned(normalised)) => Some(normalised.clone()),
                    (None, Cow::Borrowed(_)) => None,
                };
                (value.clone(), rewritten)
            }
            Lookup::MethodNotAllowed { allow } => {
                return Err(GatewayError::MethodNotAllowed { allow });
            }
            Lookup::NotFound => return Err(GatewayError::NotFound),
        };
    if !route.ip.permits(cx.client_ip) {
        return Err(GatewayError::Forbidden(
            "the client address is not allowed on this route".into(),
        ));
    }
    let identity = policies::authenticate(
        &cx.snapshot.verifier,
        frontend,
        &route,
        request.headers(),
        request.uri().query(),
        &cx.client.token_memo,
    )
    .await?;
    let rate_headers =
        enforce_rate_limits(&cx, &route, identity.as_ref(), request.headers()).await?;
    let concurrency_slot = match &route.concurrency {
        Some(limiter) => Some(limiter.try_acquire().ok_or(GatewayError::Overloaded {
            retry_after: limiter.retry_after(),
        })?),
        None => None,
    };
    let limits = route.limits;
    if let Some(length) = content_length(&request)? {
        if length > limits.max_body_bytes {
            return Err(GatewayError::PayloadTooLarge {
                limit: limits.max_body_bytes,
            });
        }
    }
    let wants_upgrade = request.headers().contains_key(header::UPGRADE);
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut request));

    let (parts, body) = request.into_parts();
    let (limited, tripped) = Limited::new(body, limits.max_body_bytes);
    let body: Body = limited.boxed_unsync();

    let in_flight = route
        .pool
        .pick(forward::hash_key(&route, &parts, cx.client_ip).as_deref());
    let forwarding = forward::Forwarding {
        route: &route,
        target: &in_flight,
        client: &cx.client,
        id: cx.id,
        identity_headers: &frontend.identity,
        identity: identity.as_ref(),
        api_key_header: frontend.api_keys.as_ref().map(|k| &k.header),
        api_key_query: frontend.api_keys.as_ref().and_then(|k| k.query.as_deref()),
    };
    let upstream = forward::upstream_request(&forwarding, parts, upstream_path.as_deref(), body)?;
    let timeout = route.pool.request_timeout.unwrap_or(limits.request_timeout);
    let result = tokio::time::timeout(timeout, route.pool.client.request(upstream)).await;
    let mut response = match result {
        Err(_) => return Err(GatewayError::GatewayTimeout(timeout)),
        Ok(Err(error)) => {
            if tripped.load(Ordering::Relaxed) || source_is::<BodyTooLarge>(&error) {
                return Err(GatewayError::PayloadTooLarge {
                    limit: limits.max_body_bytes,
                });
            }
            tracing::warn!(route = %route.name, target = %in_flight.authority(), error = %error_chain(&error), "upstream request failed");
            return Err(GatewayError::BadGateway(describe(&error)));
        }
        Ok(Ok(response)) => response,
    };

    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            upgrade::splice(
                cx.tunnels,
                client_upgrade,
                hyper::upgrade::on(&mut response),
                route.name.clone(),
            );
        }
    }
    let mut response = finish_response(&route, response, (in_flight, concurrency_slot));
    rate_headers.write_to(response.headers_mut());
    Ok(response)
}

/// Checks every rate limit of the route, in order; the first refusal answers
/// 429. Delays (delay mode) are served once, the longest of them.
async fn enforce_rate_limits(
    cx: &Context<'_>,
    route: &RouteRt,
    identity: Option<&crate::auth::identity::Identity>,
    headers: &http::HeaderMap,
) -> Result<RateLimitHeaders, GatewayError> {
    let mut collected = RateLimitHeaders::new();
    if route.limiters.is_empty() {
        return Ok(collected);
    }
    let keys = RequestKeys {
        user: identity.and_then(|i| i.subject.as_deref()),
        consumer: identity.and_then(|i| i.consumer.as_deref()),
        ip: cx.client_ip,
        headers,
        route: &route.name,
        service: &route.pool.name,
    };
    let mut wait = std::time::Duration::ZERO;
    // Queue places are held until the wait is over; empty unless delaying.
    let mut slots = Vec::new();
    for limiter in &route.limiters {
        let (outcome, slot) = limiter.admit(&keys).await;
        limiter.add_headers(&outcome, &mut collected);
        if outcome.is_limited() {
            return Err(GatewayError::TooManyRequests(Box::new(collected)));
        }
        slots.extend(slot);
        wait = wait.max(outcome.wait());
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    drop(slots);
    Ok(collected)
}

/// Strips hop-by-hop headers, applies the route's response rules and keeps
/// `guards` (in-flight counters) alive until the body has been sent.
fn finish_response<G: Send + Unpin + 'static>(
    route: &RouteRt,
    response: Response<Incoming>,
    guards: G,
) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let upgrade = parts.status == http::StatusCode::SWITCHING_PROTOCOLS;
    crate::headers::strip_hop_by_hop(&mut parts.headers, upgrade);
    for ops in &route.response_headers {
        ops.apply(&mut parts.headers);
    }
    let body = Guarded::new(body, guards)
        .map_err(|e| Box::new(e) as crate::body::BoxError)
        .boxed_unsync();
    Response::from_parts(parts, body)
}

fn content_length<B>(request: &Request<B>) -> Result<Option<u64>, GatewayError> {
    match request.headers().get(header::CONTENT_LENGTH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| GatewayError::BadRequest("invalid Content-Length".into())),
    }
}

fn source_is<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        text.push_str(": ");
        text.push_str(&e.to_string());
        current = e.source();
    }
    text
}

/// A short, safe description for the client: no addresses or internals.
fn describe(error: &hyper_util::client::legacy::Error) -> String {
    if error.is_connect() {
        "connection to the upstream failed".into()
    } else {
        "the upstream connection broke before a response arrived".into()
    }
}
