//! Rate limiting and load shedding: the engine the policy chain calls.
//!
//! - [`Limiter`]: one compiled policy (GCRA, see [`gcra`]) with its key
//!   rule ([`key`]) and its store: [`local::LocalStore`] for `scope: local`,
//!   [`redis::RedisStore`] for `scope: cluster` (with refusals cached and,
//!   optionally, tokens batched: see [`lease`]), falling back as
//!   `on_store_failure` says.
//! - [`Stores`]: the state every limiter shares. It outlives snapshots:
//!   a reload passes the previous `Stores` to [`Stores::build`], which keeps
//!   the local buckets and the Redis connection.
//! - [`headers::RateLimitHeaders`]: the response fields.
//! - [`concurrency::ConcurrencyLimiter`]: per-service in-flight limit.
//!
//! # Using it on the request path
//!
//! For each policy that applies (frontend, route, service), in order:
//! `limiter.check(&request_keys).await` gives an [`Outcome`]:
//! - `Allowed`: go on;
//! - `Delay { wait }`: the request is admitted, but must first sleep `wait`
//!   (≤ `max_wait`; with several policies, sleep the longest wait once);
//! - `Limited`: answer 429 (problem+json) at once.
//!
//! Feed every outcome to [`Limiter::add_headers`] and write the collected
//! [`headers::RateLimitHeaders`] on the response, 429 or not. A request
//! refused by a later policy has still used a token of the earlier ones
//! (no refunds: a refund would need a second round trip to Redis).
//!
//! # Reloads
//!
//! A bucket's key includes the policy's *identity*: its name, rate, burst,
//! key rule, scope and mode. A policy unchanged by a reload finds its
//! buckets as they were; a changed one starts from fresh buckets, and the
//! old ones expire on their own (locally by the sweep, in Redis by TTL).

pub mod concurrency;
pub mod config;
pub mod gcra;
pub mod headers;
pub mod key;
pub mod lease;
pub mod local;
pub mod redis;
mod shard_map;
pub mod stats;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

pub use self::concurrency::{ConcurrencyLimiter, InFlightGuard};
pub use self::config::{
    ConcurrencyLimit, KeySpec, LocalSettings, Mode, RateLimitPolicy, RateLimitSettings,
    RedisSettings, Scope, StoreFailure,
};
pub use self::gcra::Decision;
pub use self::headers::{Advertised, RateLimitHeaders};
pub use self::key::{KeyRule, LimitKey, RequestKeys};
pub use self::lease::LeaseStore;
pub use self::local::LocalStore;
pub use self::redis::{RedisStats, RedisStore, StoreError};
pub use self::stats::{PolicyStats, PolicyStatsRegistry};

use self::gcra::Gcra;

/// The longest delay mode may hold a request.
pub const MAX_WAIT_LIMIT: Duration = Duration::from_secs(60);

/// The state every limiter shares, carried across reloads.
#[derive(Clone)]
pub struct Stores {
    pub local: Arc<LocalStore>,
    /// What cluster policies may decide without Redis: cached refusals,
    /// tokens leased by hybrid policies.
    pub leases: Arc<LeaseStore>,
    /// Present when some policy has `scope: cluster`.
    pub redis: Option<Arc<RedisStore>>,
    /// Refusal and delay counts of every live policy, for `/metrics`.
    pub stats: Arc<PolicyStatsRegistry>,
    sweep_every_ms: Arc<AtomicU64>,
}

impl Stores {
    /// The stores for a configuration. `cluster` says whether any policy
    /// has `scope: cluster`. `previous` are the stores of the snapshot being
    /// replaced: the local buckets are always kept (with the new bounds), the
    /// Redis store when its settings are unchanged. Connecting happens in
    /// the background, so this never waits for Redis; it needs a Tokio
    /// runtime only when it creates a Redis store.
    pub fn build(
        settings: &RateLimitSettings,
        cluster: bool,
        previous: Option<&Stores>,
    ) -> Result<Self, StoreError> {
        let sweep_ms = u64::try_from(settings.local.sweep_interval.0.as_millis())
            .unwrap_or(u64::MAX)
            .max(10);
        let stores = match previous {
            Some(previous) => {
                previous.local.set_max_keys(settings.local.max_keys);
                previous.leases.set_max_keys(settings.local.max_keys);
                previous.sweep_every_ms.store(sweep_ms, Ordering::Relaxed);
                Self {
                    local: previous.local.clone(),
                    leases: previous.leases.clone(),
                    redis: None,
                    stats: previous.stats.clone(),
                    sweep_every_ms: previous.sweep_every_ms.clone(),
                }
            }
            None => {
                let stores = Self {
                    local: Arc::new(LocalStore::new(settings.local.max_keys)),
                    leases: Arc::new(LeaseStore::new(settings.local.max_keys)),
                    redis: None,
                    stats: Arc::default(),
                    sweep_every_ms: Arc::new(AtomicU64::new(sweep_ms)),
                };
                stores.spawn_sweeper();
                stores
            }
        };
        let redis = if cluster {
            let reusable = previous
                .and_then(|p| p.redis.as_ref())
                .filter(|r| r.settings() == &settings.redis);
            Some(match reusable {
                Some(redis) => redis.clone(),
                None => RedisStore::connect(&settings.redis)?,
            })
        } else {
            None
        };
        Ok(Self { redis, ..stores })
    }

    /// Sweeps idle keys on a timer while the stores live (needs a Tokio
    /// runtime; without one, full shards still evict idle keys themselves).
    fn spawn_sweeper(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let local: Weak<LocalStore> = Arc::downgrade(&self.local);
        let leases: Weak<LeaseStore> = Arc::downgrade(&self.leases);
        let every = self.sweep_every_ms.clone();
        runtime.spawn(async move {
            loop {
                let wait = Duration::from_millis(every.load(Ordering::Relaxed));
                tokio::time::sleep(wait).await;
                let (Some(local), Some(leases)) = (local.upgrade(), leases.upgrade()) else {
                    return;
                };
                let now = local.now();
                let removed = local.sweep() + leases.sweep(now);
                tracing::trace!(removed, kept = local.len(), "idle rate-limit keys swept");
            }
        });
    }
}

/// Where a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The in-process store (`scope: local`).
    Local,
    /// Redis (`scope: cluster`).
    Redis,
    /// Decided in this process from an earlier Redis answer: a leased
    /// token (hybrid mode) or a refusal that cannot have changed.
    Cached,
    /// Redis failed; the policy's `on_store_failure` decided.
    Fallback(StoreFailure),
}

/// What a policy says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Go on.
    Allowed { decision: Decision, source: Source },
    /// Admitted, after sleeping `wait` (delay mode).
    Delay {
        wait: Duration,
        decision: Decision,
        source: Source,
    },
    /// Refuse with 429.
    Limited { decision: Decision, source: Source },
}

impl Outcome {
    fn new(decision: Decision, source: Source) -> Self {
        if !decision.allowed {
            Self::Limited { decision, source }
        } else if decision.delay > Duration::ZERO {
            Self::Delay {
                wait: decision.delay,
                decision,
                source,
            }
        } else {
            Self::Allowed { decision, source }
        }
    }

    pub fn decision(&self) -> &Decision {
        match self {
            Self::Allowed { decision, .. }
            | Self::Delay { decision, .. }
            | Self::Limited { decision, .. } => decision,
        }
    }

    pub fn source(&self) -> Source {
        match self {
            Self::Allowed { source, .. }
            | Self::Delay { source, .. }
            | Self::Limited { source, .. } => *source,
        }
    }

    pub fn is_limited(&self) -> bool {
        matches!(self, Self::Limited { .. })
    }

    /// How long to hold the request before forwarding it.
    pub fn wait(&self) -> Duration {
        match self {
            Self::Delay { wait, .. } => *wait,
            _ => Duration::ZERO,
        }
    }
}

/// Why a policy could not be compiled: every problem at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate-limit policy `{policy}`: {}", .problems.join("; "))]
pub struct PolicyError {
    pub policy: String,
    pub problems: Vec<String>,
}

/// One compiled policy.
pub struct Limiter {
    advertised: Advertised,
    gcra: Gcra,
    key: KeyRule,
    /// The policy's identity, hashed: part of every local key.
    id: u64,
    local: Arc<LocalStore>,
    cluster: Option<Cluster>,
    /// Delay mode: the same rate without the delay, for when the queue is full.
    immediate: Option<Gcra>,
    /// Delay mode: requests held now, and the most that may be.
    queued: AtomicU32,
    max_queued: u32,
    stats: Arc<PolicyStats>,
}

/// A place in a delay-mode policy's queue, given back when dropped (also
/// when the client goes away mid-wait and the request future is dropped).
pub struct QueueSlot<'a>(&'a AtomicU32);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Cluster {
    redis: Arc<RedisStore>,
    /// `{key_prefix}{name}:{id}:`, to which the request's key is appended.
    key_prefix: String,
    on_failure: StoreFailure,
    leases: Arc<LeaseStore>,
    hybrid: Option<Batch>,
}

struct Batch {
    size: u32,
    /// How long leased tokens stay usable: `batch × T`, at least a second.
    hold: u64,
}

/// Leased tokens live at least this long (ns), so that at high rates a
/// batch is not lost to scheduling delays; the overshoot bound does not
/// depend on it (an instance never holds more than `batch − 1` tokens).
const LEASE_MIN_HOLD_NANOS: u64 = 1_000_000_000;

impl Limiter {
    /// The policy's identity: two limiters with the same id share buckets.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn build(policy: &RateLimitPolicy, stores: &Stores) -> Result<Self, PolicyError> {
        let mut problems = Vec::new();
        let name = policy.name.as_str();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
        if !name_ok {
            problems.push("the name must be 1 to 64 letters, digits, `_`, `-` or `.`".to_string());
        }
        let burst = policy.effective_burst();
        let max_wait = policy.mode.max_wait();
        if let Mode::Delay(_) = policy.mode {
            if max_wait.is_zero() || max_wait > MAX_WAIT_LIMIT {
                problems.push(format!(
                    "delay.max_wait must be more than 0 and at most {}s",
                    MAX_WAIT_LIMIT.as_secs()
                ));
            }
            if policy.mode.max_queued() == 0 {
                problems.push("delay.max_queued must be at least 1".to_string());
            }
        }
        let gcra = Gcra::new(policy.rate, burst, max_wait.min(MAX_WAIT_LIMIT))
            .map_err(|e| problems.push(e))
            .ok();
        let key = KeyRule::compile(&policy.key)
            .map_err(|e| problems.push(e))
            .ok();
        if let Some(hybrid) = policy.hybrid {
            if policy.scope != Scope::Cluster {
                problems.push("hybrid needs `scope: cluster`".to_string());
            }
            if policy.mode != Mode::Reject {
                problems.push("hybrid works with `mode: reject` only".to_string());
            }
            if hybrid.batch < 2 || hybrid.batch > burst {
                problems.push(format!(
                    "hybrid.batch must be between 2 and the burst ({burst})"
                ));
            }
        }
        if policy.scope == Scope::Cluster && stores.redis.is_none() {
            problems.push("`scope: cluster` needs the Redis store".to_string());
        }
        let immediate = match policy.mode {
            Mode::Delay(_) => Gcra::new(policy.rate, burst, Duration::ZERO).ok(),
            Mode::Reject => None,
        };
        let (Some(gcra), Some(key), true) = (gcra, key, problems.is_empty()) else {
            return Err(PolicyError {
                policy: policy.name.clone(),
                problems,
            });
        };

        let identity = format!(
            "v1|{name}|{}/{}|{burst}|{}|{:?}|{}",
            policy.rate.count,
            policy.rate.period_secs(),
            key.canonical(),
            policy.scope,
            max_wait.as_nanos()
        );
        let id = identity_hash(&identity);
        let cluster = match (&stores.redis, policy.scope) {
            (Some(redis), Scope::Cluster) => Some(Cluster {
                redis: redis.clone(),
                key_prefix: format!("{}{name}:{id:016x}:", redis.key_prefix()),
                on_failure: policy.on_store_failure,
                leases: stores.leases.clone(),
                hybrid: policy.hybrid.map(|h| Batch {
                    size: h.batch,
                    hold: gcra
                        .emission_nanos()
                        .saturating_mul(u64::from(h.batch))
                        .max(LEASE_MIN_HOLD_NANOS),
                }),
            }),
            _ => None,
        };
        Ok(Self {
            advertised: Advertised::new(
                Arc::from(name),
                policy.rate.count,
                policy.rate.period_secs(),
                burst,
                policy.headers,
            )
            .with_fresh_bucket(&gcra.take(0, 1).decision),
            gcra,
            key,
            id,
            local: stores.local.clone(),
            cluster,
            immediate,
            queued: AtomicU32::new(0),
            max_queued: policy.mode.max_queued(),
            stats: stores.stats.get(id, name),
        })
    }

    pub fn name(&self) -> &str {
        &self.advertised.name
    }

    /// What the policy advertises in the `RateLimit-Policy` header.
    pub fn advertised(&self) -> &Advertised {
        &self.advertised
    }

    pub fn scope(&self) -> Scope {
        if self.cluster.is_some() {
            Scope::Cluster
        } else {
            Scope::Local
        }
    }

    /// The request's key under this policy.
    pub fn key<'a>(&self, request: &RequestKeys<'a>) -> LimitKey<'a> {
        self.key.derive(request)
    }

    /// The Redis key of a request's bucket (`None` for a local policy).
    pub fn redis_key(&self, key: &LimitKey<'_>) -> Option<String> {
        self.cluster
            .as_ref()
            .map(|c| format!("{}{}", c.key_prefix, key.redis_suffix()))
    }

    /// Decides one request: takes a token from its bucket.
    pub async fn check(&self, request: &RequestKeys<'_>) -> Outcome {
        self.check_key(&self.key(request)).await
    }

    /// Decides for an already derived key.
    pub async fn check_key(&self, key: &LimitKey<'_>) -> Outcome {
        self.decide(key, &self.gcra).await
    }

    /// Decides one request as the proxy does: in delay mode a request that
    /// must wait also needs a place in the policy's queue, returned with
    /// the outcome. With the queue full, the request is decided as if the
    /// policy rejected instead of delaying, so it passes only if it needs
    /// no wait and, when refused, is not charged.
    pub async fn admit(&self, request: &RequestKeys<'_>) -> (Outcome, Option<QueueSlot<'_>>) {
        let (outcome, slot) = self.admit_uncounted(request).await;
        let counter = match outcome {
            Outcome::Limited { .. } => Some(&self.stats.limited),
            Outcome::Delay { .. } => Some(&self.stats.delayed),
            Outcome::Allowed { .. } => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        (outcome, slot)
    }

    async fn admit_uncounted(&self, request: &RequestKeys<'_>) -> (Outcome, Option<QueueSlot<'_>>) {
        let key = self.key(request);
        let Some(immediate) = &self.immediate else {
            return (self.decide(&key, &self.gcra).await, None);
        };
        let reserved = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < self.max_queued).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            return (self.decide(&key, immediate).await, None);
        }
        let slot = QueueSlot(&self.queued);
        let outcome = self.decide(&key, &self.gcra).await;
        let waits = !outcome.wait().is_zero();
        (outcome, waits.then_some(slot))
    }

    async fn decide(&self, key: &LimitKey<'_>, gcra: &Gcra) -> Outcome {
        match &self.cluster {
            None => self.check_local(key, gcra, Source::Local),
            Some(cluster) => self.check_cluster(cluster, key, gcra).await,
        }
    }

    /// Adds this policy's outcome to the response headers. A request let
    /// through because Redis failed (`on_store_failure: allow`) adds nothing:
    /// there are no numbers to tell.
    pub fn add_headers(&self, outcome: &Outcome, headers: &mut RateLimitHeaders) {
        if outcome.source() != Source::Fallback(StoreFailure::Allow) {
            headers.add(&self.advertised, outcome.decision());
        }
    }

    fn check_local(&self, key: &LimitKey<'_>, gcra: &Gcra, source: Source) -> Outcome {
        let hash = self.local.key_hash(self.id, key);
        let take = self.local.take(hash, gcra, 1);
        Outcome::new(take.decision, source)
    }

    async fn check_cluster(&self, cluster: &Cluster, key: &LimitKey<'_>, gcra: &Gcra) -> Outcome {
        let hash = self.local.key_hash(self.id, key);
        if let Some(decision) = cluster
            .leases
            .decide(hash, self.local.now(), self.gcra.burst())
        {
            return Outcome::new(decision, Source::Cached);
        }
        let want = cluster.hybrid.as_ref().map_or(1, |b| b.size);
        let mut redis_key = String::with_capacity(cluster.key_prefix.len() + 48);
        redis_key.push_str(&cluster.key_prefix);
        key.push_redis_suffix(&mut redis_key);
        match cluster.redis.take(&redis_key, gcra, want).await {
            Ok(mut take) => {
                let now = self.local.now();
                let extra = take.granted.saturating_sub(1);
                if !take.decision.allowed {
                    cluster.leases.block(hash, now, &take.decision);
                } else if let (Some(batch), true) = (&cluster.hybrid, extra > 0) {
                    cluster.leases.deposit(
                        hash,
                        now,
                        extra,
                        batch.size - 1,
                        batch.hold,
                        &take.decision,
                    );
                    take.decision.remaining = take.decision.remaining.saturating_add(extra);
                    take.decision.retry_after = Duration::ZERO;
                }
                Outcome::new(take.decision, Source::Redis)
            }
            Err(_) => {
                // The store counted and logged the failure.
                cluster.redis.record_fallback(cluster.on_failure);
                self.on_store_failure(cluster.on_failure, key, gcra)
            }
        }
    }

    fn on_store_failure(&self, mode: StoreFailure, key: &LimitKey<'_>, gcra: &Gcra) -> Outcome {
        let source = Source::Fallback(mode);
        let burst = self.gcra.burst();
        match mode {
            // The policy's identity includes its scope, so these buckets
            // never mix with those of a `scope: local` policy.
            StoreFailure::Local => self.check_local(key, gcra, source),
            StoreFailure::Allow => Outcome::new(
                Decision {
                    allowed: true,
                    limit: burst,
                    remaining: burst,
                    reset_after: Duration::ZERO,
                    retry_after: Duration::ZERO,
                    delay: Duration::ZERO,
                },
                source,
            ),
            // Retry once the breaker may have closed again.
            StoreFailure::Deny => Outcome::new(
                Decision {
                    allowed: false,
                    limit: burst,
                    remaining: 0,
                    reset_after: redis::OPEN_FOR,
                    retry_after: redis::OPEN_FOR,
                    delay: Duration::ZERO,
                },
                source,
            ),
        }
    }
}

/// A stable 64-bit digest (the same on every instance and version), so
/// that all gateways of a cluster name a policy's Redis keys alike.
fn identity_hash(identity: &str) -> u64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, identity.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_ref()[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use http::HeaderMap;

    use super::*;

    fn policy(yaml: &str) -> RateLimitPolicy {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn local_stores() -> Stores {
        Stores::build(&RateLimitSettings::default(), false, None).unwrap()
    }

    fn keys<'a>(headers: &'a HeaderMap, ip: &str, user: Option<&'a str>) -> RequestKeys<'a> {
        RequestKeys {
            user,
            consumer: None,
            ip: ip.parse::<IpAddr>().unwrap(),
            headers,
            route: "login",
            service: "auth",
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_local_policy_allows_exactly_its_burst() {
        let stores = local_stores();
        let limiter = Limiter::build(
            &policy("{name: login, rate: 1/min, burst: 5, key: ip}"),
            &stores,
        )
        .unwrap();
        let headers = HeaderMap::new();
        let outcomes: Vec<Outcome> = block_on(async {
            let mut v = Vec::new();
            for _ in 0..8 {
                v.push(limiter.check(&keys(&headers, "192.0.2.1", None)).await);
            }
            v
        });
        assert_eq!(outcomes.iter().filter(|o| !o.is_limited()).count(), 5);
        assert!(outcomes[5].is_limited());
        assert_eq!(outcomes[0].source(), Source::Local);
        let retry = outcomes[5].decision().retry_after;
        // The next token is one emission interval (60s) after the burst.
        assert!(
            retry > Duration::from_secs(59) && retry <= Duration::from_secs(60),
            "{retry:?}"
        );
        // Another client has its own bucket.
        let other = block_on(limiter.check(&keys(&headers, "192.0.2.2", None)));
        assert!(!other.is_limited());
    }

    #[test]
    fn a_full_delay_queue_refuses_without_charging() {
        let stores = local_stores();
        let limiter = Limiter::build(
            &policy("{name: q, rate: 10/s, burst: 1, key: service, mode: {delay: {max_wait: 1s, max_queued: 1}}}"),
            &stores,
        )
        .unwrap();
        let headers = HeaderMap::new();
        let request = keys(&headers, "192.0.2.1", None);
        block_on(async {
            // The burst passes without waiting and without a queue place.
            let (first, slot) = limiter.admit(&request).await;
            assert!(first.wait().is_zero() && !first.is_limited() && slot.is_none());
            // The next waits 100ms and holds the one place.
            let (second, held) = limiter.admit(&request).await;
            assert!(second.wait() > Duration::from_millis(90) && held.is_some());
            // The queue is full: refused, retry when the next token is due.
            let (third, none) = limiter.admit(&request).await;
            assert!(third.is_limited() && none.is_none(), "{third:?}");
            let retry = third.decision().retry_after;
            assert!(
                retry > Duration::from_millis(150) && retry <= Duration::from_millis(200),
                "{retry:?}"
            );
            // Once the place is given back, the next request waits only
            // 200ms: the refused one took nothing from the bucket.
            drop(held);
            let (fourth, slot) = limiter.admit(&request).await;
            assert!(slot.is_some(), "{fourth:?}");
            assert!(
                fourth.wait() > Duration::from_millis(150)
                    && fourth.wait() <= Duration::from_millis(200),
                "{fourth:?}"
            );
        });
    }

    #[test]
    fn delay_mode_returns_the_wait() {
        let stores = local_stores();
        let limiter = Limiter::build(
            &policy("{name: smooth, rate: 10/s, burst: 1, key: service, mode: {delay: {max_wait: 250ms}}}"),
            &stores,
        )
        .unwrap();
        let headers = HeaderMap::new();
        let waits: Vec<Duration> = block_on(async {
            let mut v = Vec::new();
            for _ in 0..4 {
                let outcome = limiter.check(&keys(&headers, "192.0.2.1", None)).await;
                v.push(if outcome.is_limited() {
                    Duration::MAX
                } else {
                    outcome.wait()
                });
            }
            v
        });
        assert_eq!(waits[0], Duration::ZERO);
        assert!(waits[1] > Duration::from_millis(95) && waits[1] <= Duration::from_millis(100));
        assert!(waits[2] > Duration::from_millis(195) && waits[2] <= Duration::from_millis(200));
        assert_eq!(
            waits[3],
            Duration::MAX,
            "beyond max_wait the request is refused"
        );
    }

    #[test]
    fn an_unchanged_policy_keeps_its_buckets_across_a_reload() {
        let settings = RateLimitSettings::default();
        let first = Stores::build(&settings, false, None).unwrap();
        let yaml = "{name: login, rate: 1/min, burst: 2, key: ip}";
        let before = Limiter::build(&policy(yaml), &first).unwrap();
        let headers = HeaderMap::new();
        let request = keys(&headers, "192.0.2.9", None);
        block_on(async {
            before.check(&request).await;
            before.check(&request).await;
        });
        let second = Stores::build(&settings, false, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&first.local, &second.local));
        let same = Limiter::build(&policy(yaml), &second).unwrap();
        assert!(
            block_on(same.check(&request)).is_limited(),
            "same policy, same bucket"
        );
        let changed = Limiter::build(
            &policy("{name: login, rate: 2/min, burst: 2, key: ip}"),
            &second,
        )
        .unwrap();
        assert!(
            !block_on(changed.check(&request)).is_limited(),
            "a changed policy starts fresh"
        );
    }

    #[test]
    fn anonymous_requests_are_limited_per_ip_under_a_user_policy() {
        let stores = local_stores();
        let limiter = Limiter::build(
            &policy("{name: mobile, rate: 1/min, burst: 1, key: user}"),
            &stores,
        )
        .unwrap();
        let headers = HeaderMap::new();
        block_on(async {
            assert!(
                !limiter
                    .check(&keys(&headers, "192.0.2.1", Some("alice")))
                    .await
                    .is_limited()
            );
            assert!(
                !limiter
                    .check(&keys(&headers, "192.0.2.1", Some("bob")))
                    .await
                    .is_limited()
            );
            assert!(
                !limiter
                    .check(&keys(&headers, "192.0.2.1", None))
                    .await
                    .is_limited()
            );
            assert!(
                limiter
                    .check(&keys(&headers, "192.0.2.1", None))
                    .await
                    .is_limited()
            );
            assert!(
                limiter
                    .check(&keys(&headers, "192.0.2.2", Some("alice")))
                    .await
                    .is_limited()
            );
        });
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let stores = local_stores();
        let bad = policy(
            "{name: 'bad name', rate: 1/d, burst: 100000, key: {header: 'a b'}, \
             hybrid: {batch: 1}, mode: {delay: {max_wait: 2m}}}",
        );
        let error = Limiter::build(&bad, &stores).err().unwrap();
        assert_eq!(error.problems.len(), 7, "{error}");
        let cluster = policy("{name: c, rate: 1/s, key: ip, scope: cluster}");
        let error = Limiter::build(&cluster, &stores).err().unwrap();
        assert!(
            error.to_string().contains("needs the Redis store"),
            "{error}"
        );
    }

    #[test]
    fn headers_follow_the_outcomes() {
        let stores = local_stores();
        let limiter = Limiter::build(
            &policy("{name: login, rate: 10/s, burst: 2, key: ip}"),
            &stores,
        )
        .unwrap();
        let headers = HeaderMap::new();
        let request = keys(&headers, "198.51.100.1", None);
        let mut collected = RateLimitHeaders::new();
        block_on(async {
            for _ in 0..3 {
                let outcome = limiter.check(&request).await;
                limiter.add_headers(&outcome, &mut collected);
            }
        });
        let mut map = HeaderMap::new();
        collected.write_to(&mut map);
        assert_eq!(map["retry-after"], "1");
        assert_eq!(map["x-ratelimit-remaining"], "0");
        assert!(
            map["ratelimit-policy"]
                .to_str()
                .unwrap()
                .starts_with(r#""login";q=10;w=1;concierge-burst=2"#)
        );
    }

    #[test]
    fn identities_are_stable() {
        // Every instance and version must agree on Redis key names.
        assert_eq!(identity_hash("v1|login"), identity_hash("v1|login"));
        assert_ne!(identity_hash("v1|login"), identity_hash("v1|logout"));
        assert_eq!(format!("{:016x}", identity_hash("")), "e3b0c44298fc1c14");
    }
}
