//! The cluster store: every gateway instance runs the same GCRA script in
//! Redis, so the instances share one bucket per key.
//!
//! - One `ConnectionManager`: a single multiplexed connection that
//!   reconnects by itself; never a connection per request.
//! - One script call per decision (`EVALSHA`, reloaded on `NOSCRIPT`),
//!   atomic, on Redis's clock; keys carry a TTL and vanish once idle.
//! - Every call is bounded by `rate_limit.redis.timeout`; any failure is
//!   returned as a [`StoreError`] and the policy's `on_store_failure` decides.
//! - A circuit breaker: after [`TRIP_AFTER`] failures in a row, calls fail
//!   at once (no request waits for a dead Redis) and a background probe pings
//!   Redis every [`PROBE_EVERY`]; the first answer closes the breaker.
//!   Even without the probe, a real call is tried again after [`OPEN_FOR`].
//! - Nothing connects at construction: the gateway starts with Redis down
//!   and picks it up when it appears.
//!
//! Failures are counted ([`RedisStats`]) and logged at most once per
//! [`WARN_EVERY`], with the number of failures since the last line.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, Script, ServerErrorKind};

use super::config::{RedisSettings, StoreFailure};
use super::gcra::{Gcra, Take};

/// Consecutive failures that open the breaker.
pub const TRIP_AFTER: u32 = 3;
/// How long the breaker stays open without a successful probe.
pub const OPEN_FOR: Duration = Duration::from_secs(1);
/// How often an open breaker pings Redis.
pub const PROBE_EVERY: Duration = Duration::from_millis(200);
/// At most one warning per this interval while Redis is failing.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// How long the start-up task waits for the first connection.
const WARM_UP: Duration = Duration::from_secs(5);

/// Why the cluster store gave no decision.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis is unavailable: skipped while the circuit breaker is open")]
    CircuitOpen,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis gave an unexpected answer: {0}")]
    Reply(String),
    #[error("invalid redis url `{url}`: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("the redis store must be created inside the Tokio runtime")]
    NoRuntime,
}

/// Counters for metrics; all monotonic except `healthy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Script calls sent.
    pub calls: u64,
    /// Calls that failed with an error from Redis or the connection.
    pub errors: u64,
    /// Calls that hit the per-call timeout.
    pub timeouts: u64,
    /// Decisions that skipped Redis because the breaker was open.
    pub short_circuited: u64,
    /// Times the breaker opened.
    pub breaker_trips: u64,
    /// Decisions made by `on_store_failure`, per mode.
    pub fallback_local: u64,
    pub fallback_allow: u64,
    pub fallback_deny: u64,
    /// False while the breaker is open.
    pub healthy: bool,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    short_circuited: AtomicU64,
    breaker_trips: AtomicU64,
    fallback_local: AtomicU64,
    fallback_allow: AtomicU64,
    fallback_deny: AtomicU64,
    /// Failures since the last warning was logged.
    unlogged: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

pub struct RedisStore {
    manager: ConnectionManager,
    script: Script,
    timeout: Duration,
    settings: RedisSettings,
    /// The URL without credentials, for logs.
    address: String,
    epoch: Instant,
    failures: AtomicU32,
    /// Breaker: open until this instant (store clock, ns); 0 when closed.
    open_until: AtomicU64,
    /// When the last warning was logged (store clock, ns; 0 = never).
    last_warn: AtomicU64,
    counters: Counters,
    /// Becomes true once connected with the script loaded.
    warmed: tokio::sync::watch::Sender<bool>,
}

impl RedisStore {
    /// Creates the store without connecting, and starts the task that
    /// connects, loads the script and probes Redis while the breaker is open.
    pub fn connect(settings: &RedisSettings) -> Result<Arc<Self>, StoreError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StoreError::NoRuntime)?;
        let url = settings.effective_url();
        let address = redact(&url);
        let client = redis::Client::open(url.as_str()).map_err(|e| StoreError::InvalidUrl {
            url: address.clone(),
            reason: e.to_string(),
        })?;
        // The connection's own timeouts only bound its housekeeping:
        // decisions are bounded by `settings.timeout`. Reconnection retries
        // a few times with short back-off, and the probe starts it again.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        let store = Arc::new(Self {
            manager,
            script: Script::new(SCRIPT),
            timeout: settings.timeout.0,
            settings: settings.clone(),
            address,
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            last_warn: AtomicU64::new(0),
            counters: Counters::default(),
            warmed: tokio::sync::watch::Sender::new(false),
        });
        runtime.spawn(supervise(Arc::downgrade(&store)));
        Ok(store)
    }

    /// The settings this store was made from (a reload reuses the store when they are unchanged).
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Where it connects, without credentials.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The key prefix from the settings.
    pub fn key_prefix(&self) -> &str {
        &self.settings.key_prefix
    }

    /// Waits, at most `within`, for the first connection (with the script
    /// loaded). Start-up can call this so that the first requests do not
    /// fall back while the connection is being made; false if Redis is not
    /// there yet (the store keeps trying in the background).
    pub async fn wait_connected(&self, within: Duration) -> bool {
        let mut warmed = self.warmed.subscribe();
        matches!(
            tokio::time::timeout(within, warmed.wait_for(|ready| *ready)).await,
            Ok(Ok(_))
        )
    }

    /// Takes up to `want` units from the bucket `key`.
    pub async fn take(&self, key: &str, gcra: &Gcra, want: u32) -> Result<Take, StoreError> {
        let now = self.now();
        let open_until = self.open_until.load(Ordering::Relaxed);
        if now < open_until {
            bump(&self.counters.short_circuited);
            return Err(StoreError::CircuitOpen);
        }
        bump(&self.counters.calls);
        // Built directly rather than through `ScriptInvocation`, which
        // copies every argument twice per call.
        let mut command = Cmd::with_capacity(8, 96 + key.len());
        command
            .arg("EVALSHA")
            .arg(self.script.get_hash())
            .arg(1)
            .arg(key)
            .arg(gcra.emission_nanos())
            .arg(gcra.burst_offset_nanos())
            .arg(gcra.max_delay_nanos())
            .arg(want);
        let result = self.call(&command).await.and_then(|(granted, debt)| {
            if granted > u64::from(want) {
                return Err(StoreError::Reply(format!(
                    "granted {granted} units of {want}"
                )));
            }
            // The check above makes this conversion lossless.
            Ok(gcra.outcome(debt, u32::try_from(granted).unwrap_or(want)))
        });
        match &result {
            Ok(_) => self.succeeded(),
            Err(error) => self.failed(error),
        }
        result
    }

    async fn call(&self, command: &Cmd) -> Result<(u64, u64), StoreError> {
        let mut connection = self.manager.clone();
        let attempt = async {
            match command.query_async(&mut connection).await {
                // Redis lost its scripts (restart, SCRIPT FLUSH): load and retry once.
                Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    self.script.load_async(&mut connection).await?;
                    command.query_async(&mut connection).await
                }
                reply => reply,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => {
                bump(&self.counters.errors);
                Err(StoreError::Redis(error))
            }
            Err(_) => {
                bump(&self.counters.timeouts);
                Err(StoreError::Timeout(self.timeout))
            }
        }
    }

    /// Counts a decision made by `on_store_failure`.
    pub fn record_fallback(&self, mode: StoreFailure) {
        bump(match mode {
            StoreFailure::Local => &self.counters.fallback_local,
            StoreFailure::Allow => &self.counters.fallback_allow,
            StoreFailure::Deny => &self.counters.fallback_deny,
        });
    }

    pub fn stats(&self) -> RedisStats {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RedisStats {
            calls: load(&c.calls),
            errors: load(&c.errors),
            timeouts: load(&c.timeouts),
            short_circuited: load(&c.short_circuited),
            breaker_trips: load(&c.breaker_trips),
            fallback_local: load(&c.fallback_local),
            fallback_allow: load(&c.fallback_allow),
            fallback_deny: load(&c.fallback_deny),
            healthy: self.is_healthy(),
        }
    }

    /// False while the breaker is open.
    pub fn is_healthy(&self) -> bool {
        self.open_until.load(Ordering::Relaxed) == 0
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn succeeded(&self) {
        // Loads first: on the hot path these lines are only read, so the
        // cores do not fight over them.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Relaxed) != 0
            && self.open_until.swap(0, Ordering::Relaxed) != 0
        {
            tracing::info!(redis = %self.address, "rate-limit store: redis answers again");
        }
    }

    fn failed(&self, error: &StoreError) {
        let now = self.now();
        let in_a_row = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let unlogged = self.counters.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
        let tripped = in_a_row >= TRIP_AFTER && {
            let until = now.saturating_add(nanos(OPEN_FOR));
            let previous = self.open_until.swap(until, Ordering::Relaxed);
            previous == 0
        };
        if tripped {
            bump(&self.counters.breaker_trips);
        }
        let last = self.last_warn.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= nanos(WARN_EVERY);
        if (due || tripped)
            && self
                .last_warn
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.counters.unlogged.store(0, Ordering::Relaxed);
            tracing::warn!(
                redis = %self.address,
                %error,
                failures = unlogged,
                breaker_open = !self.is_healthy(),
                "rate-limit store: redis is failing; cluster policies follow on_store_failure"
            );
        }
    }

    /// One PING within the per-call timeout.
    async fn probe(&self) -> Result<(), StoreError> {
        let mut connection = self.manager.clone();
        let ping = redis::cmd("PING");
        match tokio::time::timeout(self.timeout, ping.query_async::<String>(&mut connection)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(StoreError::Redis(error)),
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    /// Connects and loads the script, so that the first decision costs one round trip.
    async fn warm_up(&self) -> Result<(), StoreError> {
        let mut connection = self.manager.clone();
        self.script.load_async(&mut connection).await?;
        self.warmed.send_replace(true);
        Ok(())
    }
}

/// The background task of a store: warm up, then probe while the breaker
/// is open. It ends when the store is dropped.
async fn supervise(store: Weak<RedisStore>) {
    if let Some(strong) = store.upgrade() {
        match tokio::time::timeout(WARM_UP, strong.warm_up()).await {
            Ok(Ok(())) => tracing::debug!(redis = %strong.address, "rate-limit store connected"),
            Ok(Err(error)) => strong.failed(&error),
            Err(_) => strong.failed(&StoreError::Timeout(WARM_UP)),
        }
    }
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(store) = store.upgrade() else { return };
        if store.is_healthy() {
            continue;
        }
        match store.probe().await {
            Ok(()) => {
                store.succeeded();
                store.warmed.send_replace(true);
            }
            Err(_) => {
                // Keep the breaker open while the probe fails.
                let until = store.now().saturating_add(nanos(OPEN_FOR));
                store.open_until.store(until, Ordering::Relaxed);
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The GCRA script (see `gcra.lua`).
pub const SCRIPT: &str = include_str!("gcra.lua");

/// `redis://user:secret@host:6379/0` → `redis://***@host:6379/0`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_logs() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("redis://user:s3cret@redis.internal:6380/2"),
            "redis://***@redis.internal:6380/2"
        );
        assert_eq!(redact("rediss://:pw@h:1"), "rediss://***@h:1");
    }

    #[test]
    fn the_store_needs_a_runtime_but_no_server() {
        assert!(matches!(
            RedisStore::connect(&RedisSettings::default()),
            Err(StoreError::NoRuntime)
        ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let settings = RedisSettings {
                url: Some("redis://127.0.0.1:1".into()),
                ..RedisSettings::default()
            };
            let store = RedisStore::connect(&settings).unwrap();
            assert!(store.is_healthy());
            let bad = RedisSettings {
                url: Some("http://nope".into()),
                ..RedisSettings::default()
            };
            assert!(matches!(
                RedisStore::connect(&bad),
                Err(StoreError::InvalidUrl { .. })
            ));
        });
    }
}
