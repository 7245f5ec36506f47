//! Host matching: exact names and `*.suffix` wildcards, case-insensitive.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// Stored as `.example.com` for `*.example.com`.
    Wildcard(String),
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|label| {
                    !label.is_empty()
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        };
        if let Some(suffix) = lower.strip_prefix("*.") {
            if valid(suffix) {
                return Ok(Self::Wildcard(format!(".{suffix}")));
            }
        } else if valid(&lower) {
            return Ok(Self::Exact(lower));
        }
        Err(format!(
            "`{text}` is not a host name or a `*.example.com` wildcard"
        ))
    }

    /// `host` must already be lower-case and without a port.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name == host,
            Self::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }

    /// Specificity, smaller sorts first: exact names, then longer wildcards.
    pub fn rank(&self) -> (u8, std::cmp::Reverse<usize>) {
        match self {
            Self::Exact(_) => (0, std::cmp::Reverse(0)),
            Self::Wildcard(suffix) => (1, std::cmp::Reverse(suffix.len())),
        }
    }
}

/// The host a request is for, lower-cased and without port; `None` when the
/// request names none.
pub fn request_host<B>(request: &http::Request<B>) -> Option<String> {
    let raw = request
        .uri()
        .host()
        .or_else(|| request.headers().get(http::header::HOST)?.to_str().ok())?;
    let without_port = if raw.starts_with('[') {
        raw.split_once(']').map_or(raw, |(h, _)| &h[1..])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    Some(without_port.trim_end_matches('.').to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_hosts() {
        let exact = HostPattern::parse("API.zimmart.co.zw").unwrap();
        assert!(exact.matches("api.zimmart.co.zw"));
        let wild = HostPattern::parse("*.zimmart.co.zw").unwrap();
        assert!(wild.matches("shop.zimmart.co.zw"));
        assert!(wild.matches("a.b.zimmart.co.zw"));
        assert!(!wild.matches("zimmart.co.zw"));
        assert!(!wild.matches("evilzimmart.co.zw"));
        assert!(HostPattern::parse("bad host").is_err());
        assert!(exact.rank() < wild.rank());
    }

    #[test]
    fn request_host_strips_port_and_case() {
        let req = http::Request::get("/")
            .header("host", "Shop.Example.com:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("shop.example.com"));
        let req = http::Request::get("/")
            .header("host", "[::1]:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("::1"));
    }
}
