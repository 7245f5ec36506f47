//! A verified identity, as the rest of the request path sees it.

use std::sync::Arc;

/// Who is calling, once the credentials checked out. Cloning is cheap
/// (shared slices and header values), because it happens per request.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    /// JWT `sub`.
    pub subject: Option<Arc<str>>,
    pub roles: Arc<[String]>,
    pub scopes: Arc<[String]>,
    /// API-key consumer.
    pub consumer: Option<Arc<str>>,
    /// Identity provider that issued the token.
    pub provider: Option<Arc<str>>,
    /// The identity header values, built once when the token is verified.
    pub values: IdentityValues,
}

/// Header values of a verified token: `sub`, roles joined by `,`, scopes
/// joined by a space. `None` when empty or not a valid header value.
#[derive(Debug, Clone, Default)]
pub struct IdentityValues {
    pub user_id: Option<http::HeaderValue>,
    pub role: Option<http::HeaderValue>,
    pub scopes: Option<http::HeaderValue>,
}

impl IdentityValues {
    pub fn new(subject: Option<&str>, roles: &[String], scopes: &[String]) -> Self {
        let value = |text: &str| {
            (!text.is_empty())
                .then(|| http::HeaderValue::from_str(text).ok())
                .flatten()
        };
        Self {
            user_id: subject.and_then(value),
            role: value(&roles.join(",")),
            scopes: value(&scopes.join(" ")),
        }
    }
}

impl Identity {
    pub fn has_token(&self) -> bool {
        self.provider.is_some()
    }
}

/// Reads a dotted claim path (`realm_access.roles`) as a list of strings:
/// a string is split on spaces, an array gives its string items.
pub fn claim_strings(claims: &serde_json::Value, path: &str) -> Vec<String> {
    let mut value = claims;
    for part in path.split('.') {
        match value.get(part) {
            Some(next) => value = next,
            None => return Vec::new(),
        }
    }
    match value {
        serde_json::Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_and_flat_claims() {
        let claims = serde_json::json!({
            "role": "admin",
            "scope": "orders:read orders:write",
            "scp": ["a", "b"],
            "realm_access": {"roles": ["customer", "beta"]},
        });
        assert_eq!(claim_strings(&claims, "role"), ["admin"]);
        assert_eq!(
            claim_strings(&claims, "scope"),
            ["orders:read", "orders:write"]
        );
        assert_eq!(claim_strings(&claims, "scp"), ["a", "b"]);
        assert_eq!(
            claim_strings(&claims, "realm_access.roles"),
            ["customer", "beta"]
        );
        assert!(claim_strings(&claims, "missing.path").is_empty());
    }
}
