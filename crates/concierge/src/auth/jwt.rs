//! Bearer JWT verification: the token's `iss` picks the provider; the
//! provider's allow-list and key family decide which key may verify it.
//! Verified tokens are cached by digest, never past `exp`, and dropped as
//! soon as their key leaves the provider's key set.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};

use super::identity::{Identity, IdentityValues, claim_strings};
use super::keys::{KeyLookup, KeyOrigin, KeyStore, VerifyKey};
use super::memo::TokenMemo;
use crate::config::security::IdentityProvider;

/// Tokens larger than this are refused before any parsing, whatever the
/// providers allow.
const HARD_MAX_TOKEN_BYTES: usize = 64 * 1024;
const CACHE_CAPACITY: usize = 100_000;

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is bad: 401 `invalid_token`.
    #[error("{0}")]
    Invalid(String),
    /// No usable keys: 503, the client's token may be fine.
    #[error("the identity provider `{0}` is unavailable")]
    Unavailable(String),
}

fn invalid(reason: impl Into<String>) -> TokenError {
    TokenError::Invalid(reason.into())
}

/// One identity provider, compiled.
pub struct Provider {
    pub name: Arc<str>,
    pub config: IdentityProvider,
    algorithms: Vec<Algorithm>,
    hs_key: Option<DecodingKey>,
    pub keys: Arc<KeyStore>,
    leeway: Duration,
    max_token_bytes: usize,
}

impl Provider {
    pub fn build(name: &str, config: &IdentityProvider) -> Result<Self, String> {
        let mut algorithms = Vec::new();
        for text in &config.algorithms {
            let alg: Algorithm = text
                .parse()
                .map_err(|_| format!("unknown algorithm `{text}`"))?;
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            return Err("list at least one algorithm".into());
        }
        if config.max_token_bytes.0 > HARD_MAX_TOKEN_BYTES as u64 {
            return Err(format!(
                "max_token_bytes can be at most {} KiB: larger tokens are refused before any provider is asked",
                HARD_MAX_TOKEN_BYTES / 1024
            ));
        }
        if config.audiences.iter().all(|a| a.is_empty()) {
            // `aud` must contain one of ours: with none, every token would fail.
            return Err("list at least one audience".into());
        }
        let source = &config.keys;
        let hs_key = match &source.hs_secret {
            Some(secret) if secret.len() < 32 => {
                return Err("hs_secret must be at least 32 bytes".into());
            }
            Some(secret) => {
                Some(DecodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        if config.max_staleness.0 < config.refresh_interval.0 {
            return Err("max_staleness must not be shorter than refresh_interval, or healthy keys would go stale between refreshes".into());
        }
        let wants_hmac = algorithms
            .iter()
            .any(|a| a.family() == AlgorithmFamily::Hmac);
        let wants_public = algorithms
            .iter()
            .any(|a| a.family() != AlgorithmFamily::Hmac);
        if wants_hmac && hs_key.is_none() {
            return Err("HS algorithms need keys.hs_secret".into());
        }
        let discovery_url = match (&source.discovery_url, source.discovery) {
            (Some(url), _) => Some(url.clone()),
            (None, true) => Some(format!(
                "{}/.well-known/openid-configuration",
                config.issuer.trim_end_matches('/')
            )),
            (None, false) => None,
        };
        let origin = match (&source.jwks_url, discovery_url, &source.file) {
            (Some(url), None, None) => KeyOrigin::Jwks(url.clone()),
            (None, Some(url), None) => KeyOrigin::Discovery(url),
            (None, None, Some(_)) => KeyOrigin::Static,
            (None, None, None) if !wants_public => KeyOrigin::None,
            (None, None, None) => {
                return Err(
                    "asymmetric algorithms need keys.jwks_url, keys.discovery or keys.file".into(),
                );
            }
            _ => {
                return Err(
                    "give only one of keys.jwks_url, keys.discovery(_url) and keys.file".into(),
                );
            }
        };
        let roots = crate::upstream::client::root_store(config.ca_file.as_deref())
            .map_err(|e| e.to_string())?;
        let client = super::fetch::client(roots).map_err(|e| e.to_string())?;
        let keys = KeyStore::new(
            name,
            origin,
            client,
            config.max_staleness.0,
            config.min_refetch_interval.0,
            config.refresh_interval.0,
        );
        if let Some(path) = &source.file {
            keys.load_file(path)?;
        }
        Ok(Self {
            name: Arc::from(name),
            config: config.clone(),
            algorithms,
            hs_key,
            keys: Arc::new(keys),
            leeway: config.leeway.0,
            max_token_bytes: usize::try_from(config.max_token_bytes.0).unwrap_or(usize::MAX),
        })
    }
}

/// A verified token, as the shared cache and the connection memos hold it.
pub struct CachedIdentity {
    identity: Arc<Identity>,
    provider: Arc<Provider>,
    kid: Option<String>,
    /// The key that verified the token; `None` for HMAC (the configured secret).
    key: Option<Arc<VerifyKey>>,
    exp: Option<u64>,
}

impl CachedIdentity {
    /// Whether the token may still be accepted without verifying it again:
    /// not expired, its key still published, its provider accepted here.
    fn still_good(&self, allowed: Option<&[String]>) -> bool {
        let fresh = self.exp.is_none_or(|exp| exp > now_secs());
        let key_alive = match &self.key {
            None => true,
            Some(key) => self.provider.keys.still_verifies(self.kid.as_deref(), key),
        };
        fresh && key_alive && is_allowed(allowed, &self.provider.name)
    }
}

/// Distinguishes verifiers (one per configuration) in connection memos.
static NEXT_VERIFIER_ID: AtomicU64 = AtomicU64::new(1);

/// Every identity provider, by issuer, and the verified-token cache.
pub struct Verifier {
    id: u64,
    by_issuer: HashMap<String, Arc<Provider>>,
    pub providers: HashMap<String, Arc<Provider>>,
    cache: quick_cache::sync::Cache<[u8; 32], Arc<CachedIdentity>>,
}

#[derive(serde::Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Verifier {
    pub fn new(providers: HashMap<String, Arc<Provider>>) -> Self {
        let by_issuer = providers
            .values()
            .map(|p| (p.config.issuer.clone(), p.clone()))
            .collect();
        Self {
            id: NEXT_VERIFIER_ID.fetch_add(1, Ordering::Relaxed),
            by_issuer,
            providers,
            cache: quick_cache::sync::Cache::new(CACHE_CAPACITY),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Fetches every provider's keys that are not loaded yet, concurrently,
    /// then keeps them refreshed in the background.
    pub async fn load_keys(&self) {
        let stores: Vec<_> = self.providers.values().map(|p| p.keys.clone()).collect();
        futures_util::future::join_all(stores.iter().map(|k| k.ensure_loaded())).await;
        for store in &stores {
            store.start_refresher();
        }
    }

    /// Verifies a bearer token. `allowed` limits which providers may have
    /// issued it (`None`: any). `memo` is the connection's last token.
    pub async fn verify(
        &self,
        token: &[u8],
        allowed: Option<&[String]>,
        memo: Option<&TokenMemo>,
    ) -> Result<Arc<Identity>, TokenError> {
        if token.len() > HARD_MAX_TOKEN_BYTES {
            return Err(invalid("the token is too large"));
        }
        if let Some(memo) = memo {
            if let Some(hit) = memo.get(self.id, token) {
                if hit.still_good(allowed) {
                    return Ok(hit.identity.clone());
                }
                memo.forget();
            }
        }
        let digest = digest(token);
        if let Some(hit) = self.cache.get(&digest) {
            if hit.still_good(allowed) {
                if let Some(memo) = memo {
                    memo.remember(self.id, token, &hit);
                }
                return Ok(hit.identity.clone());
            }
            self.cache.remove(&digest);
        }
        let token = std::str::from_utf8(token).map_err(|_| invalid("the token is malformed"))?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| invalid("the token is malformed"))?;
        // Reading `iss` before verifying only picks whose keys to verify with.
        let issuer = jsonwebtoken::dangerous::insecure_decode_claims::<IssuerOnly>(token)
            .map_err(|_| invalid("the token is malformed"))?
            .iss
            .ok_or_else(|| invalid("the token has no issuer"))?;
        let provider = self
            .by_issuer
            .get(&issuer)
            .ok_or_else(|| invalid("the token's issuer is not trusted"))?;
        if !is_allowed(allowed, &provider.name) {
            return Err(invalid("the token's issuer is not accepted here"));
        }
        if token.len() > provider.max_token_bytes {
            return Err(invalid("the token is too large"));
        }
        let alg = header.alg;
        if !provider.algorithms.contains(&alg) {
            return Err(invalid(format!("algorithm {alg:?} is not accepted")));
        }
        let family = alg.family();
        let kid = header.kid.clone();
        // HMAC tokens verify only with the configured secret, never with a
        // published public key: that is what defeats algorithm confusion.
        let mut verified_with = None;
        let key: &DecodingKey = if family == AlgorithmFamily::Hmac {
            provider
                .hs_key
                .as_ref()
                .ok_or_else(|| invalid("HMAC tokens are not accepted"))?
        } else {
            match provider.keys.lookup(kid.as_deref(), family).await {
                KeyLookup::Found(k) if k.family == family => &verified_with.insert(k).key,
                KeyLookup::Found(_) => {
                    return Err(invalid("the token's algorithm does not match its key"));
                }
                KeyLookup::UnknownKid => return Err(invalid("the token's signing key is unknown")),
                KeyLookup::Unavailable => {
                    return Err(TokenError::Unavailable(provider.name.to_string()));
                }
            }
        };
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = provider.leeway.as_secs();
        validation.validate_nbf = true;
        // A present `exp` is always enforced; `require_exp` only decides
        // whether a token may leave it out.
        validation.validate_exp = true;
        validation.set_issuer(&[&provider.config.issuer]);
        validation.set_audience(&provider.config.audiences);
        let mut required = vec!["iss", "aud"];
        if provider.config.require_exp {
            required.push("exp");
        }
        validation.set_required_spec_claims(&required);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
            .map_err(|e| invalid(describe(&e)))?;
        let claims = data.claims;
        let now = now_secs();
        if let Some(iat) = numeric_date(&claims, "iat") {
            if iat > now + provider.leeway.as_secs() {
                return Err(invalid("the token was issued in the future"));
            }
        }
        let mut scopes = claim_strings(&claims, "scope");
        scopes.extend(claim_strings(&claims, "scp"));
        let subject: Option<Arc<str>> = claims.get("sub").and_then(|s| s.as_str()).map(Arc::from);
        let roles = claim_strings(&claims, &provider.config.role_claim);
        let values = IdentityValues::new(subject.as_deref(), &roles, &scopes);
        let identity = Arc::new(Identity {
            subject,
            roles: roles.into(),
            scopes: scopes.into(),
            values,
            consumer: None,
            provider: Some(provider.name.clone()),
        });
        let entry = Arc::new(CachedIdentity {
            identity: identity.clone(),
            provider: provider.clone(),
            kid,
            key: verified_with,
            exp: numeric_date(&claims, "exp"),
        });
        self.cache.insert(digest, entry.clone());
        if let Some(memo) = memo {
            memo.remember(self.id, token.as_bytes(), &entry);
        }
        Ok(identity)
    }
}

/// A NumericDate claim (RFC 7519 section 2: seconds, possibly fractional),
/// read as jsonwebtoken reads it when validating. Reading only integers would
/// let a token with `"exp": 1700000000.5` stay cached forever and skip the
/// `iat` check.
fn numeric_date(claims: &serde_json::Value, name: &str) -> Option<u64> {
    let value = claims.get(name)?;
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|v| v.is_finite() && *v >= 0.0 && *v < u64::MAX as f64)
            .map(|v| v.round() as u64)
    })
}

fn is_allowed(allowed: Option<&[String]>, provider: &str) -> bool {
    allowed.is_none_or(|list| list.iter().any(|p| p == provider))
}

fn digest(token: &[u8]) -> [u8; 32] {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.as_ref());
    out
}

/// What went wrong, for the client, without key material.
fn describe(error: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet".into(),
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted".into(),
        ErrorKind::InvalidAudience => "the token's audience is not accepted".into(),
        ErrorKind::InvalidSignature => "the token's signature is invalid".into(),
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's `{claim}` claim is malformed"),
        _ => "the token is malformed".into(),
    }
}
