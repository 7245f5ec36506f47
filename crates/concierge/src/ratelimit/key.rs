//! Which bucket a request falls in: the key a policy derives from the
//! identities the auth policies resolved, the client address, a header, the
//! route or the service.
//!
//! A request that lacks the key's source (no authenticated user, no API key,
//! the header absent or empty) is keyed by its client IP instead, under the
//! same policy: anonymous traffic cannot slip past a per-user limit.

use std::fmt::Write as _;
use std::hash::Hasher;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use super::config::KeySpec;

/// What the request path knows about a request, from which each policy
/// derives its key.
#[derive(Debug, Clone, Copy)]
pub struct RequestKeys<'a> {
    /// The verified JWT `sub`.
    pub user: Option<&'a str>,
    /// The API-key consumer.
    pub consumer: Option<&'a str>,
    /// The client address (after trusted-proxy resolution).
    pub ip: IpAddr,
    pub headers: &'a HeaderMap,
    /// The matched route's name.
    pub route: &'a str,
    /// The service the route forwards to.
    pub service: &'a str,
}

/// A policy's key, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRule {
    User,
    ApiKey,
    Ip,
    Subnet { ipv4_prefix: u8, ipv6_prefix: u8 },
    Header(HeaderName),
    Route,
    Service,
}

/// The key of one request under one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKey<'a> {
    User(&'a str),
    Consumer(&'a str),
    Ip(IpAddr),
    /// The network address (host bits zeroed) and its prefix length.
    Subnet(IpAddr, u8),
    Header(&'a [u8]),
    Route(&'a str),
    Service(&'a str),
}

impl KeyRule {
    pub fn compile(spec: &KeySpec) -> Result<Self, String> {
        Ok(match spec {
            KeySpec::User => Self::User,
            KeySpec::ApiKey => Self::ApiKey,
            KeySpec::Ip => Self::Ip,
            KeySpec::Subnet(p) => {
                if p.ipv4_prefix > 32 || p.ipv6_prefix > 128 {
                    return Err(format!(
                        "subnet prefixes must be at most 32 (IPv4) and 128 (IPv6), not {} and {}",
                        p.ipv4_prefix, p.ipv6_prefix
                    ));
                }
                Self::Subnet {
                    ipv4_prefix: p.ipv4_prefix,
                    ipv6_prefix: p.ipv6_prefix,
                }
            }
            KeySpec::Header(name) => Self::Header(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("`{name}` is not a valid header name"))?,
            ),
            KeySpec::Route => Self::Route,
            KeySpec::Service => Self::Service,
        })
    }

    /// A stable text form, part of a policy's identity.
    pub fn canonical(&self) -> String {
        match self {
            Self::User => "user".into(),
            Self::ApiKey => "api_key".into(),
            Self::Ip => "ip".into(),
            Self::Subnet {
                ipv4_prefix,
                ipv6_prefix,
            } => format!("subnet/{ipv4_prefix}/{ipv6_prefix}"),
            Self::Header(name) => format!("header:{name}"),
            Self::Route => "route".into(),
            Self::Service => "service".into(),
        }
    }

    /// The key of `request` under this rule.
    pub fn derive<'a>(&self, request: &RequestKeys<'a>) -> LimitKey<'a> {
        let present = |value: Option<&'a str>| value.filter(|v| !v.is_empty());
        let by_ip = || LimitKey::Ip(request.ip.to_canonical());
        match self {
            Self::User => present(request.user).map_or_else(by_ip, LimitKey::User),
            Self::ApiKey => present(request.consumer).map_or_else(by_ip, LimitKey::Consumer),
            Self::Ip => by_ip(),
            Self::Subnet {
                ipv4_prefix,
                ipv6_prefix,
            } => subnet(request.ip, *ipv4_prefix, *ipv6_prefix),
            Self::Header(name) => request
                .headers
                .get(name)
                .map(|v| v.as_bytes())
                .filter(|v| !v.is_empty())
                .map_or_else(by_ip, LimitKey::Header),
            Self::Route => LimitKey::Route(request.route),
            Self::Service => LimitKey::Service(request.service),
        }
    }
}

/// The client's network: IPv4 (and IPv4-mapped IPv6) addresses use the v4
/// prefix, the rest the v6 prefix.
pub fn subnet(ip: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> LimitKey<'static> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let prefix = ipv4_prefix.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            LimitKey::Subnet(IpAddr::V4((u32::from(v4) & mask).into()), prefix)
        }
        IpAddr::V6(v6) => {
            let prefix = ipv6_prefix.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            LimitKey::Subnet(IpAddr::V6((u128::from(v6) & mask).into()), prefix)
        }
    }
}

impl LimitKey<'_> {
    /// Short tag naming the kind of key, in Redis keys and hashes.
    pub fn tag(&self) -> &'static str {
        match self {
            Self::User(_) => "user",
            Self::Consumer(_) => "key",
            Self::Ip(_) => "ip",
            Self::Subnet(..) => "net",
            Self::Header(_) => "hdr",
            Self::Route(_) => "route",
            Self::Service(_) => "svc",
        }
    }

    /// Feeds the key to a (keyed) hasher for the local store. Lengths and
    /// tags are included so that no two different keys feed the same bytes.
    pub fn hash_into<H: Hasher>(&self, hasher: &mut H) {
        hasher.write(self.tag().as_bytes());
        match self {
            Self::User(v) | Self::Consumer(v) | Self::Route(v) | Self::Service(v) => {
                hasher.write_usize(v.len());
                hasher.write(v.as_bytes());
            }
            Self::Header(v) => {
                hasher.write_usize(v.len());
                hasher.write(v);
            }
            Self::Ip(ip) => write_ip(hasher, ip),
            Self::Subnet(ip, prefix) => {
                write_ip(hasher, ip);
                hasher.write_u8(*prefix);
            }
        }
    }

    /// The key's part of a Redis key, e.g. `ip:203.0.113.7` or
    /// `net:2001:db8::/64`. Long or unprintable values are replaced by a
    /// SHA-256 prefix so that keys stay short and safe to display.
    pub fn redis_suffix(&self) -> String {
        let mut out = String::with_capacity(48);
        self.push_redis_suffix(&mut out);
        out
    }

    /// Appends `redis_suffix` to `out` (the caller's buffer already holds the prefix).
    pub fn push_redis_suffix(&self, out: &mut String) {
        out.push_str(self.tag());
        out.push(':');
        match self {
            Self::User(v) | Self::Consumer(v) | Self::Route(v) | Self::Service(v) => {
                push_value(out, v.as_bytes());
            }
            Self::Header(v) => push_value(out, v),
            Self::Ip(ip) => push_ip(out, ip),
            Self::Subnet(ip, prefix) => {
                push_ip(out, ip);
                out.push('/');
                out.push_str(itoa::Buffer::new().format(*prefix));
            }
        }
    }
}

/// IPv4 by its octets (this runs per cluster decision; `Display` for an
/// address goes through the formatting machinery), IPv6 in its RFC 5952 form.
fn push_ip(out: &mut String, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(digits.format(octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn write_ip<H: Hasher>(hasher: &mut H, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => hasher.write(&v4.octets()),
        IpAddr::V6(v6) => hasher.write(&v6.octets()),
    }
}

/// Values up to this long, in printable ASCII, appear as themselves in Redis keys.
const READABLE_MAX: usize = 64;

fn push_value(out: &mut String, value: &[u8]) {
    let readable = value.len() <= READABLE_MAX && value.iter().all(|b| b.is_ascii_graphic());
    match std::str::from_utf8(value) {
        Ok(text) if readable => out.push_str(text),
        _ => {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, value);
            out.push_str("sha256:");
            for byte in &digest.as_ref()[..16] {
                let _ = write!(out, "{byte:02x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::config::SubnetPrefixes;

    fn request<'a>(headers: &'a HeaderMap, ip: &str) -> RequestKeys<'a> {
        RequestKeys {
            user: Some("alice"),
            consumer: Some("mobile-app"),
            ip: ip.parse().unwrap(),
            headers,
            route: "login",
            service: "payment",
        }
    }

    fn rule(spec: KeySpec) -> KeyRule {
        KeyRule::compile(&spec).unwrap()
    }

    fn subnet_rule(v4: u8, v6: u8) -> KeyRule {
        rule(KeySpec::Subnet(SubnetPrefixes {
            ipv4_prefix: v4,
            ipv6_prefix: v6,
        }))
    }

    #[test]
    fn each_kind_takes_its_source() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        let r = request(&headers, "203.0.113.7");
        assert_eq!(rule(KeySpec::User).derive(&r), LimitKey::User("alice"));
        assert_eq!(
            rule(KeySpec::ApiKey).derive(&r),
            LimitKey::Consumer("mobile-app")
        );
        assert_eq!(rule(KeySpec::Ip).derive(&r), LimitKey::Ip(r.ip));
        assert_eq!(
            rule(KeySpec::Header("X-Tenant".into())).derive(&r),
            LimitKey::Header(b"acme")
        );
        assert_eq!(rule(KeySpec::Route).derive(&r), LimitKey::Route("login"));
        assert_eq!(
            rule(KeySpec::Service).derive(&r),
            LimitKey::Service("payment")
        );
    }

    #[test]
    fn a_missing_source_falls_back_to_the_client_ip() {
        let headers = HeaderMap::new();
        let mut r = request(&headers, "198.51.100.4");
        r.user = None;
        r.consumer = Some("");
        let ip = LimitKey::Ip("198.51.100.4".parse().unwrap());
        assert_eq!(rule(KeySpec::User).derive(&r), ip);
        assert_eq!(rule(KeySpec::ApiKey).derive(&r), ip);
        assert_eq!(rule(KeySpec::Header("x-tenant".into())).derive(&r), ip);
    }

    #[test]
    fn ipv4_subnets_group_by_prefix() {
        let headers = HeaderMap::new();
        let key = |ip| subnet_rule(24, 64).derive(&request(&headers, ip));
        assert_eq!(key("203.0.113.7"), key("203.0.113.250"));
        assert_ne!(key("203.0.113.7"), key("203.0.114.7"));
        assert_eq!(key("203.0.113.7").redis_suffix(), "net:203.0.113.0/24");
        // An IPv4-mapped IPv6 address is the same client as its IPv4 form.
        assert_eq!(key("::ffff:203.0.113.9"), key("203.0.113.7"));
        let wide = |ip| subnet_rule(16, 64).derive(&request(&headers, ip));
        assert_eq!(wide("10.1.2.3"), wide("10.1.200.9"));
        let all = |ip| subnet_rule(0, 0).derive(&request(&headers, ip));
        assert_eq!(all("10.1.2.3"), all("192.0.2.1"));
        let host = |ip| subnet_rule(32, 128).derive(&request(&headers, ip));
        assert_ne!(host("10.1.2.3"), host("10.1.2.4"));
    }

    #[test]
    fn ipv6_subnets_group_by_prefix() {
        let headers = HeaderMap::new();
        let key = |ip| subnet_rule(24, 64).derive(&request(&headers, ip));
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(
            key("2001:db8:1:2:aa::1").redis_suffix(),
            "net:2001:db8:1:2::/64"
        );
        let site = |ip| subnet_rule(24, 48).derive(&request(&headers, ip));
        assert_eq!(site("2001:db8:1:2::1"), site("2001:db8:1:ffff::1"));
        assert_ne!(site("2001:db8:1:2::1"), site("2001:db8:2:2::1"));
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(KeyRule::compile(&KeySpec::Header("bad header".into())).is_err());
        let too_long = KeySpec::Subnet(SubnetPrefixes {
            ipv4_prefix: 33,
            ipv6_prefix: 64,
        });
        assert!(KeyRule::compile(&too_long).is_err());
    }

    #[test]
    fn redis_suffixes_are_short_and_printable() {
        assert_eq!(LimitKey::User("alice").redis_suffix(), "user:alice");
        assert_eq!(LimitKey::Service("payment").redis_suffix(), "svc:payment");
        let spaced = LimitKey::Header(b"has space").redis_suffix();
        assert!(
            spaced.starts_with("hdr:sha256:") && spaced.len() == 11 + 32,
            "{spaced}"
        );
        let long = "x".repeat(200);
        assert_eq!(LimitKey::User(&long).redis_suffix().len(), 5 + 7 + 32);
    }

    #[test]
    fn different_kinds_with_the_same_text_hash_differently() {
        use std::hash::BuildHasher;
        let state = std::collections::hash_map::RandomState::new();
        let hash = |key: LimitKey| {
            let mut h = state.build_hasher();
            key.hash_into(&mut h);
            h.finish()
        };
        assert_ne!(hash(LimitKey::User("a")), hash(LimitKey::Consumer("a")));
        assert_ne!(hash(LimitKey::Route("a")), hash(LimitKey::Service("a")));
        assert_eq!(hash(LimitKey::User("a")), hash(LimitKey::User("a")));
    }
}
