//! Client address rules: CIDR allow and deny lists, and finding the client
//! behind trusted proxies.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::headers::X_FORWARDED_FOR;

/// Parses a CIDR or a bare address (a /32 or /128).
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("`{text}` is not an IP address or CIDR"))
}

/// Compiled allow and deny lists.
#[derive(Debug, Clone, Default)]
pub struct IpFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

impl IpFilter {
    pub fn new(allow: &[String], deny: &[String]) -> Result<Self, String> {
        Ok(Self {
            allow: allow
                .iter()
                .map(|s| parse_net(s))
                .collect::<Result<_, _>>()?,
            deny: deny
                .iter()
                .map(|s| parse_net(s))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }

    /// True when `ip` may pass: in `allow` (if any is set) and not in `deny`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let allowed = self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&ip));
        allowed && !self.deny.iter().any(|n| n.contains(&ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are their IPv4 selves, so
/// one v4 rule covers a dual-stack listener.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address: the socket peer, unless the peer is a trusted proxy,
/// in which case the right-most `X-Forwarded-For` entry that is not a trusted
/// proxy. Entries left of it are the client's own claims and are ignored.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !trusted.iter().any(|n| n.contains(&peer)) {
        return peer;
    }
    let mut client = peer;
    let entries = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim);
    for entry in entries.rev() {
        let Some(ip) = parse_forwarded_addr(entry).map(canonical) else {
            // Garbage in the chain: stop at the last address we could trust.
            break;
        };
        client = ip;
        if !trusted.iter().any(|n| n.contains(&ip)) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: a bare address, or the `1.2.3.4:5678`,
/// `[2001:db8::1]:5678` and `[2001:db8::1]` forms some proxies write.
/// Failing on those would make the trusted proxy itself the client.
fn parse_forwarded_addr(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, tail) = rest.split_once(']')?;
        let port_ok = tail.is_empty()
            || tail
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok.then(|| host.parse().ok()).flatten();
    }
    let (host, port) = entry.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_then_deny_for_v4_and_v6() {
        let f = IpFilter::new(
            &["10.0.0.0/8".into(), "2001:db8::/32".into()],
            &["10.6.6.0/24".into()],
        )
        .unwrap();
        assert!(f.permits(ip("10.1.2.3")));
        assert!(!f.permits(ip("10.6.6.7")));
        assert!(!f.permits(ip("192.0.2.1")));
        assert!(f.permits(ip("2001:db8::1")));
        assert!(!f.permits(ip("2001:db9::1")));
        assert!(f.permits(ip("::ffff:10.1.2.3")));
        assert!(IpFilter::new(&["nonsense".into()], &[]).is_err());
    }

    #[test]
    fn forwarded_entries_with_ports_are_addresses() {
        assert_eq!(parse_forwarded_addr("203.0.113.9"), Some(ip("203.0.113.9")));
        assert_eq!(
            parse_forwarded_addr("203.0.113.9:443"),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            parse_forwarded_addr("[2001:db8::7]:80"),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(
            parse_forwarded_addr("[2001:db8::7]"),
            Some(ip("2001:db8::7"))
        );
        assert_eq!(parse_forwarded_addr("2001:db8::7"), Some(ip("2001:db8::7")));
        assert_eq!(parse_forwarded_addr("[2001:db8::7]x"), None);
        assert_eq!(parse_forwarded_addr("203.0.113.9:99999"), None);
        assert_eq!(parse_forwarded_addr("unknown"), None);
    }

    #[test]
    fn right_most_untrusted_forwarded_entry_is_the_client() {
        let trusted = vec![parse_net("10.0.0.0/8").unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR,
            "6.6.6.6, 203.0.113.9, 10.0.0.2".parse().unwrap(),
        );
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("203.0.113.9"));
        // An untrusted peer's header is ignored entirely.
        assert_eq!(
            client_ip(ip("198.51.100.1"), &h, &trusted),
            ip("198.51.100.1")
        );
    }
}
