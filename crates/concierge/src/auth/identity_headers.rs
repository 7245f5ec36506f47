//! The trusted identity headers: client copies are always removed (in any
//! case and in the underscore spelling some servers fold into the same name),
//! then the gateway sets them from the verified identity.

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::identity::Identity;
use crate::config::security::IdentityHeaders;

pub struct IdentityHeadersRt {
    user_id: HeaderName,
    role: HeaderName,
    scopes: HeaderName,
    consumer: HeaderName,
    pub keep_authorization: bool,
    signature: Option<(HeaderName, aws_lc_rs::hmac::Key)>,
    /// Every managed name, lower-case with `-`, for spoofing checks.
    managed: Vec<HeaderName>,
}

fn name(text: &str) -> Result<HeaderName, String> {
    HeaderName::try_from(text).map_err(|_| format!("`{text}` is not a header name"))
}

impl IdentityHeadersRt {
    pub fn build(config: &IdentityHeaders) -> Result<Self, String> {
        let signature = match &config.signature {
            Some(s) if s.hmac_secret.len() < 32 => {
                return Err(
                    "identity_headers.signature.hmac_secret must be at least 32 bytes".into(),
                );
            }
            Some(s) => Some((
                name(&s.header)?,
                aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, s.hmac_secret.as_bytes()),
            )),
            None => None,
        };
        let mut this = Self {
            user_id: name(&config.user_id)?,
            role: name(&config.role)?,
            scopes: name(&config.scopes)?,
            consumer: name(&config.consumer)?,
            keep_authorization: config.keep_authorization,
            signature,
            managed: Vec::new(),
        };
        this.managed = [&this.user_id, &this.role, &this.scopes, &this.consumer]
            .into_iter()
            .cloned()
            .chain(this.signature.as_ref().map(|(n, _)| n.clone()))
            .collect();
        Ok(this)
    }

    fn is_managed(&self, name: &HeaderName) -> bool {
        self.managed.contains(name)
            || (name.as_str().contains('_') && {
                // HeaderName is lower-case already; fold `x_user_id` into `x-user-id`.
                let folded = name.as_str().replace('_', "-");
                self.managed.iter().any(|m| m.as_str() == folded)
            })
    }

    /// Removes every client-supplied copy of a managed header.
    pub fn strip_spoofed(&self, headers: &mut HeaderMap) {
        // One pass over the names; removals only when something is there.
        if !headers.keys().any(|k| self.is_managed(k)) {
            return;
        }
        let spoofed: Vec<HeaderName> = headers
            .keys()
            .filter(|k| self.is_managed(k))
            .cloned()
            .collect();
        for name in spoofed {
            headers.remove(name);
        }
    }

    /// Sets the identity headers (after `strip_spoofed`).
    pub fn inject(&self, headers: &mut HeaderMap, identity: &Identity) {
        let set = |headers: &mut HeaderMap, name: &HeaderName, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(name.clone(), v);
            }
        };
        let values = &identity.values;
        for (name, value) in [
            (&self.user_id, &values.user_id),
            (&self.role, &values.role),
            (&self.scopes, &values.scopes),
        ] {
            if let Some(value) = value {
                headers.insert(name.clone(), value.clone());
            }
        }
        if let Some(consumer) = &identity.consumer {
            set(headers, &self.consumer, consumer);
        }
        if identity.has_token() && !self.keep_authorization {
            headers.remove(header::AUTHORIZATION);
        }
        if let Some((header_name, key)) = &self.signature {
            let roles = identity.roles.join(",");
            let scopes = identity.scopes.join(" ");
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let message = format!(
                "{t}\n{}\n{roles}\n{scopes}\n{}",
                identity.subject.as_deref().unwrap_or_default(),
                identity.consumer.as_deref().unwrap_or_default()
            );
            let tag = aws_lc_rs::hmac::sign(key, message.as_bytes());
            let value = format!("t={t},v1={}", super::apikey::to_hex(tag.as_ref()));
            set(headers, header_name, &value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_every_spelling_of_managed_headers() {
        let rt = IdentityHeadersRt::build(&IdentityHeaders::default()).unwrap();
        let mut h = HeaderMap::new();
        h.insert("X-User-ID", HeaderValue::from_static("evil"));
        h.insert("x_user_id", HeaderValue::from_static("evil"));
        h.insert("X_Role", HeaderValue::from_static("admin"));
        h.insert("x-consumer-id", HeaderValue::from_static("acme"));
        h.insert("x-other", HeaderValue::from_static("kept"));
        rt.strip_spoofed(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-other"));
    }
}
