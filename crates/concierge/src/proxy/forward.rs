//! Building the request sent upstream.

use http::request::Parts;
use http::uri::{PathAndQuery, Uri};
use std::net::IpAddr;

use http::{HeaderName, HeaderValue, Request, header};

use super::ClientInfo;
use crate::auth::identity::Identity;
use crate::auth::identity_headers::IdentityHeadersRt;
use crate::body::Body;
use crate::config::model::HashKey;
use crate::error::GatewayError;
use crate::headers::{X_REQUEST_ID, set_forwarded, strip_hop_by_hop};
use crate::snapshot::RouteRt;
use crate::upstream::InFlight;

/// Everything that shapes the upstream request besides the request itself.
pub struct Forwarding<'a> {
    pub route: &'a RouteRt,
    pub target: &'a InFlight,
    pub client: &'a ClientInfo,
    pub id: &'a HeaderValue,
    /// Names of the trusted identity headers.
    pub identity_headers: &'a IdentityHeadersRt,
    /// The identity to assert upstream.
    pub identity: Option<&'a Identity>,
    /// The API key header, hidden from the upstream.
    pub api_key_header: Option<&'a HeaderName>,
    /// The API key query parameter, also hidden from the upstream.
    pub api_key_query: Option<&'a str>,
}

/// The query without every `name=…` pair, or `None` when it has none.
fn without_param(query: &str, name: &str) -> Option<String> {
    let is_key = |pair: &&str| pair.split('=').next() == Some(name);
    if !query.split('&').any(|pair| is_key(&pair)) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|pair| !is_key(pair)).collect();
    Some(kept.join("&"))
}

/// The consistent-hash key of a request, when the pool hashes.
pub fn hash_key(route: &RouteRt, parts: &Parts, client_ip: IpAddr) -> Option<Vec<u8>> {
    let key = route.pool.hash_key.as_ref()?;
    if let HashKey::Header(name) = key {
        if let Some(value) = parts.headers.get(name.as_str()) {
            return Some(value.as_bytes().to_vec());
        }
    }
    Some(client_ip.to_string().into_bytes())
}

pub fn upstream_request(
    f: &Forwarding<'_>,
    mut parts: Parts,
    path: Option<&str>,
    body: Body,
) -> Result<Request<Body>, GatewayError> {
    let (route, target, client, id) = (f.route, f.target, f.client, f.id);
    let stripped_query = f
        .api_key_query
        .zip(parts.uri.query())
        .and_then(|(name, query)| without_param(query, name));
    let path_and_query = match (path, parts.uri.path_and_query(), &stripped_query) {
        (None, Some(original), None) => original.clone(),
        (path, _, _) => {
            let path = path.unwrap_or(parts.uri.path());
            let query = stripped_query
                .as_deref()
                .or(parts.uri.query())
                .filter(|q| !q.is_empty());
            let text = match query {
                Some(query) => format!("{path}?{query}"),
                None => path.to_string(),
            };
            PathAndQuery::try_from(text).map_err(|_| {
                GatewayError::BadRequest("the request path cannot be forwarded".into())
            })?
        }
    };
    let uri = Uri::builder()
        .scheme(route.pool.scheme.clone())
        .authority(target.authority().clone())
        .path_and_query(path_and_query)
        .build()
        .map_err(|_| GatewayError::BadRequest("the request URI cannot be forwarded".into()))?;

    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let upgrade = parts.headers.contains_key(header::UPGRADE);
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    set_forwarded(
        headers,
        &client.peer_header,
        client.https,
        original_host.as_ref(),
    );
    headers.insert(X_REQUEST_ID, id.clone());
    // Services trust these headers because only the gateway can set them.
    f.identity_headers.strip_spoofed(headers);
    if let Some(verified) = f.identity {
        f.identity_headers.inject(headers, verified);
    }
    if let Some(name) = f.api_key_header {
        headers.remove(name);
    }
    let host = if route.preserve_host {
        original_host
    } else {
        Some(target.host_header().clone())
    };
    match host {
        Some(host) => {
            headers.insert(header::HOST, host);
        }
        None => {
            headers.remove(header::HOST);
        }
    }
    for ops in &route.request_headers {
        ops.apply(headers);
    }
    parts.uri = uri;
    // The upstream protocol is the pool's choice, not the client's.
    parts.version = http::Version::HTTP_11;
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::without_param;

    #[test]
    fn api_key_query_parameter_is_removed() {
        assert_eq!(
            without_param("api_key=s3cret&page=2", "api_key").as_deref(),
            Some("page=2")
        );
        assert_eq!(
            without_param("page=2&api_key=s3cret", "api_key").as_deref(),
            Some("page=2")
        );
        assert_eq!(
            without_param("api_key=s3cret", "api_key").as_deref(),
            Some("")
        );
        assert_eq!(without_param("page=2&api_keyx=1", "api_key"), None);
    }
}
