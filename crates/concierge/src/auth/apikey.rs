//! API keys: stored as SHA-256 digests, never in plaintext, each naming the
//! consumer it belongs to.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use http::HeaderName;

use crate::config::security::ApiKeys;

pub struct ApiKeyStore {
    pub header: HeaderName,
    pub query: Option<String>,
    by_digest: HashMap<[u8; 32], Arc<str>>,
}

/// SHA-256 of a key, as stored in config.
pub fn digest(key: &[u8]) -> [u8; 32] {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key);
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.as_ref());
    out
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl ApiKeyStore {
    pub fn build(config: &ApiKeys) -> Result<Self, String> {
        let mut by_digest = HashMap::new();
        for key in &config.keys {
            let digest = parse_hex(&key.sha256.value).ok_or_else(|| {
                format!("consumer `{}`: sha256 must be 64 hex digits", key.consumer)
            })?;
            by_digest.insert(digest, Arc::from(key.consumer.as_str()));
        }
        if let Some(file) = &config.file {
            load_file(&file.value, &mut by_digest)?;
        }
        Ok(Self {
            header: HeaderName::try_from(config.header.as_str())
                .map_err(|_| format!("`{}` is not a header name", config.header))?,
            query: config.query.clone(),
            by_digest,
        })
    }

    /// The consumer owning `key`, if it is a known key.
    pub fn consumer(&self, key: &[u8]) -> Option<&Arc<str>> {
        self.by_digest.get(&digest(key))
    }

    /// The key carried by a request: the header, else the query parameter.
    pub fn extract<'r>(
        &self,
        headers: &'r http::HeaderMap,
        query: Option<&'r str>,
    ) -> Option<std::borrow::Cow<'r, [u8]>> {
        if let Some(value) = headers.get(&self.header) {
            return Some(std::borrow::Cow::Borrowed(value.as_bytes()));
        }
        let name = self.query.as_deref()?;
        query?
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| {
                std::borrow::Cow::Owned(
                    percent_encoding::percent_decode_str(v).collect::<Vec<u8>>(),
                )
            })
    }
}

fn load_file(path: &Path, into: &mut HashMap<[u8; 32], Arc<str>>) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    for (index, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let parsed = line
            .split_once(char::is_whitespace)
            .and_then(|(consumer, hex)| Some((consumer, parse_hex(hex)?)));
        let Some((consumer, digest)) = parsed else {
            return Err(format!(
                "{}:{}: expected `consumer sha256-hex`",
                path.display(),
                index + 1
            ));
        };
        into.insert(digest, Arc::from(consumer));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digests_round_trip() {
        let d = digest(b"secret-key");
        assert_eq!(parse_hex(&to_hex(&d)), Some(d));
        assert_eq!(parse_hex("abc"), None);
    }
}
