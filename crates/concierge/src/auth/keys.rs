//! An identity provider's verification keys: loaded from a JWKS URL, OIDC
//! discovery or a file, cached, refreshed in the background, refetched (at
//! most once per `min_refetch_interval`) when a token names an unknown key.
//! `jku`, `x5u` and embedded `jwk` token headers are never followed: keys
//! come only from the configured source.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{AlgorithmFamily, DecodingKey};

use super::fetch::{FetchClient, get_json};

type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// One verification key.
pub struct VerifyKey {
    pub key: DecodingKey,
    pub family: AlgorithmFamily,
    /// SHA-256 of the public key material: whether a later key set still
    /// holds the very key a cached verdict was reached with.
    pub fingerprint: [u8; 32],
}

fn fingerprint(material: &[u8]) -> [u8; 32] {
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, material);
    let mut out = [0u8; 32];
    out.copy_from_slice(hash.as_ref());
    out
}

/// A key set as fetched at one moment.
pub struct KeySet {
    pub by_kid: HashMap<String, Arc<VerifyKey>>,
    /// Keys published without a `kid`.
    pub anonymous: Vec<Arc<VerifyKey>>,
    pub fetched_at: Instant,
}

impl KeySet {
    fn from_jwks(document: &serde_json::Value) -> Result<Self, String> {
        let keys = document
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or("the document has no `keys` array")?;
        let mut set = KeySet {
            by_kid: HashMap::new(),
            anonymous: Vec::new(),
            fetched_at: Instant::now(),
        };
        for value in keys {
            // One unusable key must not take the others down with it.
            let Ok(jwk) = serde_json::from_value::<Jwk>(value.clone()) else {
                tracing::debug!("skipping a JWK this gateway cannot use");
                continue;
            };
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let family = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
                AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
                AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
                // Symmetric keys never come from a published key set.
                _ => continue,
            };
            let Ok(key) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let Ok(material) = serde_json::to_vec(&jwk.algorithm) else {
                continue;
            };
            let key = Arc::new(VerifyKey {
                key,
                family,
                fingerprint: fingerprint(&material),
            });
            match jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid, key);
                }
                None => set.anonymous.push(key),
            }
        }
        Ok(set)
    }

    fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let attempts: [(PemParser, AlgorithmFamily); 3] = [
            (DecodingKey::from_rsa_pem, AlgorithmFamily::Rsa),
            (DecodingKey::from_ec_pem, AlgorithmFamily::Ec),
            (DecodingKey::from_ed_pem, AlgorithmFamily::Ed),
        ];
        for (parse, family) in attempts {
            if let Ok(key) = parse(pem) {
                return Ok(KeySet {
                    by_kid: HashMap::new(),
                    anonymous: vec![Arc::new(VerifyKey {
                        key,
                        family,
                        fingerprint: fingerprint(pem),
                    })],
                    fetched_at: Instant::now(),
                });
            }
        }
        Err("the file holds no RSA, EC or Ed25519 public key in PEM".into())
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where keys are read from.
#[derive(Debug, Clone)]
pub enum KeyOrigin {
    Jwks(String),
    Discovery(String),
    /// Loaded once at compile time; never stale.
    Static,
    /// HMAC only: no public keys.
    None,
}

/// The result of looking a key up for a token.
pub enum KeyLookup {
    Found(Arc<VerifyKey>),
    UnknownKid,
    /// No usable key set at all: the provider is unavailable.
    Unavailable,
}

pub struct KeyStore {
    pub provider: String,
    origin: KeyOrigin,
    client: FetchClient,
    current: ArcSwapOption<KeySet>,
    max_staleness: Duration,
    min_refetch: Duration,
    /// Milliseconds since `epoch` of the last refetch triggered by an unknown kid.
    last_refetch_ms: AtomicU64,
    epoch: Instant,
    /// Serialises fetches so a burst of unknown kids causes one request.
    fetching: tokio::sync::Mutex<()>,
    refresh_interval: Duration,
    refresher_started: std::sync::atomic::AtomicBool,
}

impl KeyStore {
    pub fn new(
        provider: &str,
        origin: KeyOrigin,
        client: FetchClient,
        max_staleness: Duration,
        min_refetch: Duration,
        refresh_interval: Duration,
    ) -> Self {
        Self {
            provider: provider.to_string(),
            origin,
            client,
            current: ArcSwapOption::empty(),
            max_staleness,
            min_refetch,
            last_refetch_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            fetching: tokio::sync::Mutex::new(()),
            refresh_interval,
            refresher_started: Default::default(),
        }
    }

    /// Fetches now if there is no key set yet (start-up, new provider).
    pub async fn ensure_loaded(&self) {
        if !self.is_remote() || self.current.load().is_some() {
            return;
        }
        match self.refresh().await {
            Ok(count) => {
                tracing::info!(provider = %self.provider, keys = count, "fetched signing keys")
            }
            Err(error) => tracing::error!(
                provider = %self.provider,
                %error,
                "cannot fetch signing keys; requests needing this provider get 503 until it answers"
            ),
        }
    }

    /// Starts the background refresh, once. The task ends when the store is
    /// dropped (its provider left the configuration).
    pub fn start_refresher(self: &Arc<Self>) {
        if !self.is_remote() || self.refresher_started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let interval = self.refresh_interval;
        // Retry failures sooner than the normal interval, but not in a tight loop.
        let retry = interval.min(Duration::from_secs(10));
        // A failed first fetch (provider down at start-up or when added by a
        // reload) is a failure too: waiting a whole refresh interval would
        // keep answering 503 for minutes after the provider is back.
        let mut wait = if self.current.load().is_some() {
            interval
        } else {
            retry
        };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(wait).await;
                let Some(store) = weak.upgrade() else { return };
                wait = match store.refresh().await {
                    Ok(_) => interval,
                    Err(error) => {
                        tracing::warn!(provider = %store.provider, %error, "key refresh failed; keeping the last good key set");
                        retry
                    }
                };
            }
        });
    }

    /// Loads a key file (JWKS JSON or a PEM public key) now.
    pub fn load_file(&self, path: &std::path::Path) -> Result<(), String> {
        let bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let set = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(document) => KeySet::from_jwks(&document)?,
            Err(_) => KeySet::from_pem(&bytes)?,
        };
        if set.is_empty() {
            return Err(format!("{} holds no usable key", path.display()));
        }
        self.current.store(Some(Arc::new(set)));
        Ok(())
    }

    /// Fetches the key set from the network, keeping the old one on failure.
    pub async fn refresh(&self) -> Result<usize, String> {
        let _one_at_a_time = self.fetching.lock().await;
        let jwks_url = match &self.origin {
            KeyOrigin::Jwks(url) => url.clone(),
            KeyOrigin::Discovery(url) => {
                let document = get_json(&self.client, url)
                    .await
                    .map_err(|e| e.to_string())?;
                document
                    .get("jwks_uri")
                    .and_then(|u| u.as_str())
                    .ok_or_else(|| format!("{url} has no jwks_uri"))?
                    .to_string()
            }
            KeyOrigin::Static | KeyOrigin::None => return Ok(self.key_count()),
        };
        let document = get_json(&self.client, &jwks_url)
            .await
            .map_err(|e| e.to_string())?;
        let set = KeySet::from_jwks(&document)?;
        // An empty or wholly unusable set is a broken provider, not a rotation
        // to "no keys": keeping the last good set means its tokens keep
        // working until `max_staleness`, and then the answer is 503, not 401.
        if set.is_empty() {
            return Err(format!("{jwks_url} holds no usable key"));
        }
        let count = set.len();
        self.current.store(Some(Arc::new(set)));
        Ok(count)
    }

    pub fn is_remote(&self) -> bool {
        matches!(self.origin, KeyOrigin::Jwks(_) | KeyOrigin::Discovery(_))
    }

    fn key_count(&self) -> usize {
        self.current.load().as_ref().map_or(0, |s| s.len())
    }

    /// The key set if it is fresh enough to trust.
    fn usable(&self) -> Option<Arc<KeySet>> {
        let set = self.current.load_full()?;
        let fresh = !self.is_remote() || set.fetched_at.elapsed() <= self.max_staleness;
        fresh.then_some(set)
    }

    /// Whether a token naming `kid` would still be verified with `key`; used
    /// to drop cached verdicts for tokens whose key was rotated out. The key
    /// is looked up as for a fresh token, so a token without a kid follows
    /// "the one key of its family" rather than any key being published, and
    /// compared by material, so a refresh republishing the same keys keeps
    /// the cache.
    pub fn still_verifies(&self, kid: Option<&str>, key: &VerifyKey) -> bool {
        self.usable()
            .and_then(|set| Self::find(&set, kid, key.family))
            .is_some_and(|current| current.fingerprint == key.fingerprint)
    }

    fn find(set: &KeySet, kid: Option<&str>, family: AlgorithmFamily) -> Option<Arc<VerifyKey>> {
        let anonymous = set.anonymous.iter();
        match kid {
            // A key published without a kid (a PEM file, say) may sign
            // tokens that name one: use it when it is the only candidate.
            Some(kid) => set
                .by_kid
                .get(kid)
                .cloned()
                .or_else(|| Self::only_one(anonymous, family)),
            // Without a kid, accept only an unambiguous key of the right family.
            None => Self::only_one(anonymous.chain(set.by_kid.values()), family),
        }
    }

    /// The one key of `family` among `keys`; `None` when there are none or several.
    fn only_one<'a>(
        keys: impl Iterator<Item = &'a Arc<VerifyKey>>,
        family: AlgorithmFamily,
    ) -> Option<Arc<VerifyKey>> {
        let mut candidates = keys.filter(|k| k.family == family);
        let first = candidates.next()?;
        candidates.next().is_none().then(|| first.clone())
    }

    /// Finds the key for a token, refetching once when the kid is unknown
    /// and the last such refetch is older than `min_refetch_interval`.
    pub async fn lookup(&self, kid: Option<&str>, family: AlgorithmFamily) -> KeyLookup {
        let Some(set) = self.usable() else {
            return KeyLookup::Unavailable;
        };
        if let Some(key) = Self::find(&set, kid, family) {
            return KeyLookup::Found(key);
        }
        if !self.is_remote() || !self.claim_refetch() {
            return KeyLookup::UnknownKid;
        }
        if let Err(error) = self.refresh().await {
            tracing::warn!(provider = %self.provider, %error, "key refetch for an unknown kid failed");
        }
        match self.usable() {
            Some(set) => {
                Self::find(&set, kid, family).map_or(KeyLookup::UnknownKid, KeyLookup::Found)
            }
            None => KeyLookup::Unavailable,
        }
    }

    /// True for the one caller allowed to refetch in this interval.
    fn claim_refetch(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_refetch_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.min_refetch.as_millis() as u64;
        due && self
            .last_refetch_ms
            .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}
