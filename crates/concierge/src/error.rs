//! Errors the gateway answers itself, and their one mapping to HTTP:
//! `application/problem+json` (RFC 9457) carrying the request id.

use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::body::{Body, full};
use crate::ratelimit::RateLimitHeaders;

/// A response the gateway generates instead of forwarding.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no route matches this request")]
    NotFound,
    #[error("this route does not accept the method")]
    MethodNotAllowed { allow: Vec<Method> },
    #[error("the request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("the upstream service could not be reached: {0}")]
    BadGateway(String),
    #[error("the upstream service did not answer within {0:?}")]
    GatewayTimeout(std::time::Duration),
    #[error("{0}")]
    Unavailable(String),
    /// 401 with an RFC 6750 challenge; `invalid_token` unless credentials were missing.
    #[error("{detail}")]
    Unauthorized {
        scheme: &'static str,
        invalid_token: bool,
        detail: String,
    },
    /// 403 for a verified identity that lacks a required scope or role.
    #[error("{0}")]
    InsufficientScope(String),
    /// 403 for everything else refused by policy (e.g. IP rules).
    #[error("{0}")]
    Forbidden(String),
    /// 429: a rate limit refused the request; carries the RateLimit fields.
    #[error("rate limit exceeded ({})", .0.violated().join(", "))]
    TooManyRequests(Box<RateLimitHeaders>),
    /// 503: the service has as many requests in flight as it may.
    #[error("the service is at its concurrency limit; retry later")]
    Overloaded { retry_after: std::time::Duration },
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::InsufficientScope(_) | Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `WWW-Authenticate` value (RFC 6750 section 3).
    fn challenge(&self) -> Option<String> {
        match self {
            Self::Unauthorized {
                scheme,
                invalid_token: true,
                detail,
            } => Some(format!(
                r#"{scheme} realm="concierge", error="invalid_token", error_description="{}""#,
                detail.replace('"', "'")
            )),
            Self::Unauthorized { scheme, .. } => Some(format!(r#"{scheme} realm="concierge""#)),
            Self::InsufficientScope(_) => {
                Some(r#"Bearer realm="concierge", error="insufficient_scope""#.to_string())
            }
            _ => None,
        }
    }

    /// Builds the problem+json response. `instance` is the request path.
    pub fn to_response(&self, request_id: &str, instance: &str) -> Response<Body> {
        let status = self.status();
        let problem = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
            "instance": instance,
            "request_id": request_id,
        });
        let mut response = Response::new(full(problem.to_string()));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Ok(id) = HeaderValue::from_str(request_id) {
            headers.insert(crate::headers::X_REQUEST_ID, id);
        }
        if let Self::MethodNotAllowed { allow } = self {
            let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
            if let Ok(value) = HeaderValue::from_str(&list.join(", ")) {
                headers.insert(header::ALLOW, value);
            }
        }
        if let Some(challenge) = self.challenge() {
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                headers.insert(header::WWW_AUTHENTICATE, value);
            }
        }
        match self {
            Self::TooManyRequests(limits) => limits.write_to(headers),
            Self::Overloaded { retry_after } => {
                let seconds = crate::ratelimit::headers::retry_after_secs(*retry_after);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}
