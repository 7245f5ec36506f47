//! CORS (the Fetch standard's CORS protocol): preflights are answered at the
//! edge; actual responses get the allow headers when the origin is allowed,
//! and nothing at all when it is not.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::{Body, empty};
use crate::config::security::Cors;

#[derive(Debug, Clone)]
enum OriginRule {
    Any,
    Exact(String),
    /// `https://*.example.com` stored as scheme `https://` and suffix `.example.com`.
    Wildcard {
        scheme: String,
        suffix: String,
    },
}

pub struct CorsPolicy {
    origins: Vec<OriginRule>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: Vec<String>,
    allow_headers_value: HeaderValue,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

fn header_list(items: &[String]) -> Result<HeaderValue, String> {
    HeaderValue::from_str(&items.join(", "))
        .map_err(|_| format!("invalid header list: {}", items.join(", ")))
}

impl CorsPolicy {
    pub fn build(config: &Cors) -> Result<Self, String> {
        let mut origins = Vec::new();
        for origin in &config.allow_origins {
            let rule = if origin == "*" {
                if config.allow_credentials {
                    return Err("allow_credentials cannot be combined with the `*` origin".into());
                }
                OriginRule::Any
            } else if let Some((scheme, host)) = origin.split_once("://*.") {
                OriginRule::Wildcard {
                    scheme: format!("{scheme}://"),
                    suffix: format!(".{}", host.to_ascii_lowercase()),
                }
            } else if origin.contains("://") && !origin.ends_with('/') {
                OriginRule::Exact(origin.to_ascii_lowercase())
            } else {
                return Err(format!(
                    "`{origin}` is not an origin like https://shop.example.com"
                ));
            };
            origins.push(rule);
        }
        let methods = config
            .allow_methods
            .iter()
            .map(|m| Method::from_bytes(m.as_bytes()).map_err(|_| format!("`{m}` is not a method")))
            .collect::<Result<Vec<_>, _>>()?;
        let allow_headers: Vec<String> = config
            .allow_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Ok(Self {
            origins,
            methods,
            allow_methods: header_list(&config.allow_methods)?,
            allow_headers_value: header_list(&allow_headers)?,
            allow_headers,
            expose_headers: if config.expose_headers.is_empty() {
                None
            } else {
                Some(header_list(&config.expose_headers)?)
            },
            credentials: config.allow_credentials,
            max_age: HeaderValue::from(config.max_age.0.as_secs()),
        })
    }

    fn allows(&self, origin: &str) -> bool {
        let lower = origin.to_ascii_lowercase();
        self.origins.iter().any(|rule| match rule {
            OriginRule::Any => true,
            OriginRule::Exact(o) => *o == lower,
            OriginRule::Wildcard { scheme, suffix } => {
                lower.strip_prefix(scheme.as_str()).is_some_and(|host| {
                    host.len() > suffix.len()
                        && host.ends_with(suffix.as_str())
                        && !host.contains('/')
                })
            }
        })
    }

    fn is_wildcard(&self) -> bool {
        self.origins.iter().any(|r| matches!(r, OriginRule::Any))
    }

    /// Answers a preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`); `None` when the request is not one.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response<Body>> {
        if method != Method::OPTIONS {
            return None;
        }
        let origin = headers.get(header::ORIGIN)?;
        let requested = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let out = response.headers_mut();
        out.insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        let origin_ok = origin.to_str().is_ok_and(|o| self.allows(o));
        let method_ok =
            Method::from_bytes(requested.as_bytes()).is_ok_and(|m| self.methods.contains(&m));
        let headers_ok = headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|list| {
                list.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .all(|h| self.allow_headers.contains(&h))
            });
        if !(origin_ok && method_ok && headers_ok) {
            // A refused preflight carries no CORS headers: the browser blocks.
            return Some(response);
        }
        self.set_origin(out, origin);
        out.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        out.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers_value.clone(),
        );
        out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Some(response)
    }

    fn set_origin(&self, out: &mut HeaderMap, origin: &HeaderValue) {
        if self.is_wildcard() {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// Adds CORS headers to an actual response for a request from `origin`.
    pub fn decorate(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        // The frontend owns CORS: an upstream's own allow headers would grant
        // origins this policy refuses.
        for name in [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
        ] {
            out.remove(name);
        }
        // The answer depends on Origin unless every origin gets `*`.
        if !self.is_wildcard() {
            out.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        let Some(origin) = origin else { return };
        if !origin.to_str().is_ok_and(|o| self.allows(o)) {
            return;
        }
        self.set_origin(out, origin);
        if let Some(expose) = &self.expose_headers {
            out.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::DurationStr;

    fn policy(origins: &[&str]) -> CorsPolicy {
        CorsPolicy::build(&Cors {
            allow_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["authorization".into()],
            expose_headers: vec![],
            allow_credentials: false,
            max_age: DurationStr::from_secs(60),
        })
        .unwrap()
    }

    #[test]
    fn origin_patterns() {
        let p = policy(&["https://web.zimmart.co.zw", "https://*.zimmart.app"]);
        assert!(p.allows("https://web.zimmart.co.zw"));
        assert!(p.allows("https://m.zimmart.app"));
        assert!(!p.allows("http://m.zimmart.app"));
        assert!(!p.allows("https://zimmart.app"));
        assert!(!p.allows("https://evil.com"));
        assert!(!p.allows("https://evilzimmart.app"));
    }
}
