//! The file model of rate limiting: policies, the shared store settings and
//! the per-service concurrency limit, deserialised as operators write them.
//!
//! Like `crate::config::model`, every struct denies unknown fields and
//! documents its defaults. Nothing here is used on the request path:
//! `super::Limiter::build` compiles a policy into its runtime form.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::config::units::DurationStr;

/// One rate-limit policy. Several may apply to a request (frontend, route,
/// service); the request must pass all of them.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitPolicy {
    /// Name shown in the `RateLimit` headers, logs and Redis keys
    /// (letters, digits, `_`, `-`, `.`; at most 64 characters).
    pub name: String,
    /// Sustained rate: `10/s`, `600/min`, `5000/h`, `100000/d`.
    pub rate: Rate,
    /// Requests that may pass at once before the rate applies.
    /// Default: the rate per second, at least 1 (`600/min` → 10).
    #[serde(default)]
    pub burst: Option<u32>,
    /// What a bucket is kept per: user, API-key consumer, IP, subnet, header, route or service.
    pub key: KeySpec,
    /// `local` (this process, the default) or `cluster` (shared through Redis).
    #[serde(default)]
    pub scope: Scope,
    /// What a `cluster` policy does when Redis fails or is slow. Default `local`.
    #[serde(default)]
    pub on_store_failure: StoreFailure,
    /// `reject` (429, the default) or `delay: {max_wait: 500ms}` (queue up to a bound).
    #[serde(default)]
    pub mode: Mode,
    /// Cluster only, off by default: take tokens from Redis in batches.
    #[serde(default)]
    pub hybrid: Option<Hybrid>,
    /// Send the rate-limit headers on allowed responses too. Default true;
    /// limited responses always carry them.
    #[serde(default = "yes")]
    pub headers: bool,
}

fn yes() -> bool {
    true
}

impl RateLimitPolicy {
    /// The configured burst, or the default: the rate per second, at least 1.
    pub fn effective_burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| self.rate.default_burst())
    }
}

/// A rate: `count` requests per `period`. Written `10/s`, `600/min`, `5000/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: u64,
    pub period: Duration,
}

impl Rate {
    /// The period in whole seconds (every accepted unit is a whole number of seconds).
    pub fn period_secs(&self) -> u64 {
        self.period.as_secs()
    }

    /// The rate per second, rounded down, at least 1.
    pub fn default_burst(&self) -> u32 {
        let per_second = self.count / self.period_secs().max(1);
        u32::try_from(per_second.max(1)).unwrap_or(u32::MAX)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period_secs() {
            1 => "s",
            60 => "min",
            3600 => "h",
            _ => "d",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Parses `10/s`, `600/min`, `5000/h` or `100000/d`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let expected = "expected a rate such as 10/s, 600/min, 5000/h or 100000/d";
    let (count, unit) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a rate: {expected}"))?;
    let count: u64 = count.trim().parse().map_err(|_| {
        format!("`{text}` is not a rate: the count must be a whole number; {expected}")
    })?;
    if count == 0 {
        return Err(format!(
            "`{text}`: the rate must allow at least one request"
        ));
    }
    let secs = match unit.trim() {
        "s" | "sec" | "second" => 1,
        "m" | "min" | "minute" => 60,
        "h" | "hour" => 3600,
        "d" | "day" => 86_400,
        other => {
            return Err(format!(
                "`{text}`: unknown rate unit `{other}`: use s, min, h or d"
            ));
        }
    };
    let period = Duration::from_secs(secs);
    // The emission interval (period / count) is kept in whole nanoseconds.
    if u128::from(count) > period.as_nanos() {
        return Err(format!(
            "`{text}` is too fast: at most one request per nanosecond"
        ));
    }
    Ok(Rate { count, period })
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_rate(&text).map_err(de::Error::custom)
    }
}

impl JsonSchema for Rate {
    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+ */ *(s|sec|second|m|min|minute|h|hour|d|day)$",
            "description": "Requests per period, such as 10/s, 600/min, 5000/h or 100000/d."
        })
    }
}

/// What a bucket is kept per.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeySpec {
    /// The authenticated user (the JWT `sub`).
    User,
    /// The API-key consumer.
    ApiKey,
    /// The client IP address.
    Ip,
    /// The client's subnet: `subnet: {ipv4_prefix: 24, ipv6_prefix: 64}`.
    Subnet(SubnetPrefixes),
    /// The value of a request header: `header: X-Tenant`.
    Header(String),
    /// The route: one bucket per route.
    Route,
    /// The service: one bucket for all its traffic ("500/s in total").
    Service,
}

/// Prefix lengths that group client addresses into one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubnetPrefixes {
    /// IPv4 prefix length (0–32). Default 24.
    #[serde(default = "default_v4_prefix")]
    pub ipv4_prefix: u8,
    /// IPv6 prefix length (0–128). Default 64, one customer site.
    #[serde(default = "default_v6_prefix")]
    pub ipv6_prefix: u8,
}

fn default_v4_prefix() -> u8 {
    24
}

fn default_v6_prefix() -> u8 {
    64
}

impl Default for SubnetPrefixes {
    fn default() -> Self {
        Self {
            ipv4_prefix: default_v4_prefix(),
            ipv6_prefix: default_v6_prefix(),
        }
    }
}

/// Where a policy's buckets live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// In this process: nothing else needed; each instance limits on its own.
    #[default]
    Local,
    /// Shared by every instance through Redis.
    Cluster,
}

/// What a cluster policy does while Redis is failing or slower than `rate_limit.redis.timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailure {
    /// Limit in this process instead (each instance then allows the full rate).
    #[default]
    Local,
    /// Let the request through unlimited.
    Allow,
    /// Refuse the request with 429.
    Deny,
}

/// What happens to a request over the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Answer 429 at once.
    #[default]
    Reject,
    /// Hold the request until it fits the rate, up to `max_wait`; beyond that, 429.
    Delay(DelaySettings),
}

/// Settings of the delay mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DelaySettings {
    /// Longest a request is held. Default 500ms.
    #[serde(default = "default_max_wait")]
    pub max_wait: DurationStr,
    /// Most requests this policy holds at once, over all its keys; beyond
    /// that a request that would wait is refused (429). Default 10000.
    #[serde(default = "default_max_queued")]
    pub max_queued: u32,
}

fn default_max_queued() -> u32 {
    10_000
}

fn default_max_wait() -> DurationStr {
    DurationStr(Duration::from_millis(500))
}

impl Mode {
    /// The longest a request may be held (zero when rejecting).
    pub fn max_wait(&self) -> Duration {
        match self {
            Self::Reject => Duration::ZERO,
            Self::Delay(delay) => delay.max_wait.0,
        }
    }

    /// The most requests held at once (zero when rejecting).
    pub fn max_queued(&self) -> u32 {
        match self {
            Self::Reject => 0,
            Self::Delay(delay) => delay.max_queued,
        }
    }
}

/// Hybrid mode: take `batch` tokens from Redis per round trip and spend
/// them locally. Overshoot is bounded by instances × (batch − 1) requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hybrid {
    /// Tokens per Redis call (2 or more, at most the burst).
    pub batch: u32,
}

/// Process-wide rate-limit settings: the stores every policy shares.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// The Redis used by `cluster` policies.
    pub redis: RedisSettings,
    /// The in-process store.
    pub local: LocalSettings,
}

/// Where and how the cluster store reaches Redis.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://host:port/db`. Default: the `REDIS_URL` environment variable,
    /// else `redis://127.0.0.1:6379`.
    pub url: Option<String>,
    /// Longest a rate-limit decision waits for Redis before the policy's
    /// `on_store_failure` applies. Default 10ms: a loopback or same-zone
    /// Redis answers in well under a millisecond, so 10ms only trips when
    /// Redis is really unwell, while bounding what an outage adds to each request.
    pub timeout: DurationStr,
    /// Prefix of every key the gateway writes. Default `concierge:rl:`.
    pub key_prefix: String,
}

/// The Redis address used when neither the config nor `REDIS_URL` gives one.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: None,
            timeout: DurationStr(Duration::from_millis(10)),
            key_prefix: "concierge:rl:".to_string(),
        }
    }
}

impl RedisSettings {
    /// The URL to connect to: the config's, else `REDIS_URL`, else the default.
    pub fn effective_url(&self) -> String {
        self.url
            .clone()
            .or_else(|| std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()))
            .unwrap_or_else(|| DEFAULT_REDIS_URL.to_string())
    }
}

/// Bounds of the in-process store.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSettings {
    /// Most keys held at once (all policies together); idle keys are evicted
    /// first. Default 1,000,000 (36 bytes a key, see `ratelimit::local`).
    pub max_keys: usize,
    /// How often idle keys are swept. Default 10s.
    pub sweep_interval: DurationStr,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            max_keys: 1_000_000,
            sweep_interval: DurationStr::from_secs(10),
        }
    }
}

/// Most requests a service may have in flight; more are shed with 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyLimit {
    /// Requests in flight at most (1 or more).
    pub max_in_flight: u32,
    /// The `Retry-After` sent with the 503. Default 1s.
    #[serde(default = "default_shed_retry")]
    pub retry_after: DurationStr,
}

fn default_shed_retry() -> DurationStr {
    DurationStr::from_secs(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Result<RateLimitPolicy, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn rates_parse_with_their_units() {
        let r = parse_rate("10/s").unwrap();
        assert_eq!((r.count, r.period_secs()), (10, 1));
        let r = parse_rate("600/min").unwrap();
        assert_eq!((r.count, r.period_secs()), (600, 60));
        let r = parse_rate("5000/h").unwrap();
        assert_eq!((r.count, r.period_secs()), (5000, 3600));
        let r = parse_rate(" 7 / d ").unwrap();
        assert_eq!((r.count, r.period_secs()), (7, 86_400));
        assert_eq!(parse_rate("600/min").unwrap().to_string(), "600/min");
    }

    #[test]
    fn bad_rates_say_what_is_wrong() {
        assert!(parse_rate("10").unwrap_err().contains("not a rate"));
        assert!(parse_rate("ten/s").unwrap_err().contains("whole number"));
        assert!(parse_rate("0/s").unwrap_err().contains("at least one"));
        assert!(
            parse_rate("10/week")
                .unwrap_err()
                .contains("unknown rate unit `week`")
        );
        assert!(parse_rate("2000000000/s").unwrap_err().contains("too fast"));
    }

    #[test]
    fn default_burst_is_the_rate_per_second() {
        assert_eq!(parse_rate("10/s").unwrap().default_burst(), 10);
        assert_eq!(parse_rate("600/min").unwrap().default_burst(), 10);
        assert_eq!(parse_rate("5000/h").unwrap().default_burst(), 1);
    }

    #[test]
    fn a_minimal_policy_takes_the_defaults() {
        let p = policy("name: login\nrate: 10/s\nkey: ip\n").unwrap();
        assert_eq!(p.effective_burst(), 10);
        assert_eq!(p.key, KeySpec::Ip);
        assert_eq!(p.scope, Scope::Local);
        assert_eq!(p.on_store_failure, StoreFailure::Local);
        assert_eq!(p.mode, Mode::Reject);
        assert_eq!(p.hybrid, None);
        assert!(p.headers);
    }

    #[test]
    fn every_field_can_be_written() {
        let p = policy(
            "name: payments\nrate: 500/s\nburst: 50\nkey: service\nscope: cluster\n\
             on_store_failure: deny\nmode: {delay: {max_wait: 250ms}}\nhybrid: {batch: 5}\nheaders: false\n",
        )
        .unwrap();
        assert_eq!(p.effective_burst(), 50);
        assert_eq!(p.scope, Scope::Cluster);
        assert_eq!(p.on_store_failure, StoreFailure::Deny);
        assert_eq!(p.mode.max_wait(), Duration::from_millis(250));
        assert_eq!(p.hybrid, Some(Hybrid { batch: 5 }));
        assert!(!p.headers);
    }

    #[test]
    fn keys_with_arguments() {
        let p = policy("name: a\nrate: 1/s\nkey: {subnet: {ipv4_prefix: 16}}\n").unwrap();
        assert_eq!(
            p.key,
            KeySpec::Subnet(SubnetPrefixes {
                ipv4_prefix: 16,
                ipv6_prefix: 64
            })
        );
        let p = policy("name: a\nrate: 1/s\nkey: {header: X-Tenant}\n").unwrap();
        assert_eq!(p.key, KeySpec::Header("X-Tenant".into()));
        let p = policy("name: a\nrate: 1/s\nkey: api_key\n").unwrap();
        assert_eq!(p.key, KeySpec::ApiKey);
        let p = policy("name: a\nrate: 1/s\nmode: {delay: {}}\nkey: user\n").unwrap();
        assert_eq!(p.mode.max_wait(), Duration::from_millis(500));
    }

    #[test]
    fn mistakes_are_errors() {
        let e = policy("name: a\nrate: 10/fortnight\nkey: ip\n").unwrap_err();
        assert!(e.contains("unknown rate unit"), "{e}");
        assert!(policy("name: a\nrate: 1/s\nkey: ip\nbrust: 3\n").is_err());
        assert!(policy("name: a\nrate: 1/s\nkey: cookie\n").is_err());
        assert!(policy("name: a\nrate: 1/s\nkey: ip\nscope: global\n").is_err());
    }

    #[test]
    fn settings_defaults() {
        let s: RateLimitSettings = serde_saphyr::from_str("{}").unwrap();
        assert_eq!(s.redis.timeout.0, Duration::from_millis(10));
        assert_eq!(s.redis.key_prefix, "concierge:rl:");
        assert_eq!(s.local.max_keys, 1_000_000);
        let s: RateLimitSettings =
            serde_saphyr::from_str("redis: {url: 'redis://10.0.0.1:6380', timeout: 25ms}").unwrap();
        assert_eq!(s.redis.effective_url(), "redis://10.0.0.1:6380");
        assert_eq!(s.redis.timeout.0, Duration::from_millis(25));
        let c: ConcurrencyLimit = serde_saphyr::from_str("max_in_flight: 100").unwrap();
        assert_eq!(c.retry_after.0, Duration::from_secs(1));
    }
}
