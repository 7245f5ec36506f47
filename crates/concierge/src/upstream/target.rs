//! Upstream target addresses.

use http::uri::Authority;

/// Parses `host:port`; the port is required so that no default is guessed.
pub fn parse_authority(text: &str) -> Result<Authority, String> {
    let authority: Authority = text
        .parse()
        .map_err(|_| format!("`{text}` is not a target: expected host:port"))?;
    if authority.port_u16().is_none() {
        return Err(format!("target `{text}` needs a port, e.g. {text}:80"));
    }
    if text.contains('@') || text.contains('/') {
        return Err(format!("target `{text}` must be plain host:port"));
    }
    Ok(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_need_host_and_port() {
        assert!(parse_authority("127.0.0.1:9101").is_ok());
        assert!(parse_authority("[::1]:80").is_ok());
        assert!(parse_authority("orders.internal:8080").is_ok());
        assert!(parse_authority("orders.internal").is_err());
        assert!(parse_authority("user@host:80").is_err());
        assert!(parse_authority("not a host").is_err());
    }
}
