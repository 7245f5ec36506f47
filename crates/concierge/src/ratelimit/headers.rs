//! The rate-limit response headers.
//!
//! Standard fields, per draft-ietf-httpapi-ratelimit-headers-11 (May 2026,
//! sections 3 and 4), both Structured Field Lists with one item per policy
//! that applied; the item is the policy name as an sf-string:
//!
//! ```text
//! RateLimit-Policy: "login";q=10;w=1, "api";q=600;w=60;concierge-burst=10
//! RateLimit: "login";r=0;t=1, "api";r=7;t=2
//! ```
//!
//! - `q` / `w`: the configured rate, `q` requests per `w` seconds. GCRA
//!   also lets `burst` requests through at once; when the burst differs
//!   from `q` it is given as the vendor parameter `concierge-burst`.
//! - `r`: requests that could pass right now (the bucket's remaining tokens).
//! - `t`: seconds, rounded up, until the quota is fully restored; on a
//!   refused request, until the next request may pass, so that it matches
//!   `Retry-After` (the draft asks that `Retry-After` not point before the
//!   end of the effective window).
//! - The partition key (`pk`) is not sent: it would echo client addresses.
//!
//! The widely used legacy fields describe the most restrictive policy:
//! `X-RateLimit-Limit` (its burst), `X-RateLimit-Remaining` and
//! `X-RateLimit-Reset` (seconds until its bucket is full again). A refused
//! request also gets `Retry-After` in whole seconds, rounded up, at least 1.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::gcra::Decision;

pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// What a policy advertises about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub name: Arc<str>,
    /// Requests per window (the rate's count).
    pub quota: u64,
    /// The rate's period in seconds.
    pub window: u64,
    pub burst: u32,
    /// Headers on allowed responses too (the policy's `headers`).
    pub on_allowed: bool,
    /// This policy's `RateLimit-Policy` item and its name as an sf-string:
    /// constant, so built once rather than on every response.
    policy_item: Arc<str>,
    name_item: Arc<str>,
    /// `policy_item` as a header value: a response limited by this policy
    /// alone shares it instead of copying it.
    policy_value: Option<HeaderValue>,
    /// The values for a request that finds its bucket full (see `with_fresh_bucket`).
    fresh: Option<Arc<FreshBucket>>,
}

/// The header values of the decision on a full bucket: the same for every
/// such request, and the most common decision of all (any client that
/// stays under its rate finds its bucket full again), so built once.
#[derive(Debug, PartialEq, Eq)]
struct FreshBucket {
    remaining: u32,
    reset_secs: u64,
    limit: u32,
    ratelimit: HeaderValue,
    x_limit: HeaderValue,
    x_remaining: HeaderValue,
    x_reset: HeaderValue,
}

impl FreshBucket {
    fn matches(&self, decision: &Decision) -> bool {
        decision.allowed
            && decision.remaining == self.remaining
            && decision.limit == self.limit
            && ceil_secs(decision.reset_after) == self.reset_secs
    }
}

impl Advertised {
    pub fn new(name: Arc<str>, quota: u64, window: u64, burst: u32, on_allowed: bool) -> Self {
        let name_item = sf_string(&name);
        let mut policy_item = format!("{name_item};q={quota};w={}", window.max(1));
        if u64::from(burst) != quota {
            let _ = write!(policy_item, ";concierge-burst={burst}");
        }
        let policy_value = HeaderValue::from_str(&policy_item).ok();
        Self {
            name,
            quota,
            window,
            burst,
            on_allowed,
            policy_item: Arc::from(policy_item),
            name_item: Arc::from(name_item),
            policy_value,
            fresh: None,
        }
    }

    /// Precomputes the header values of `decision`, the policy's decision
    /// on a full bucket.
    pub fn with_fresh_bucket(mut self, decision: &Decision) -> Self {
        let mut headers = RateLimitHeaders::new();
        headers.add(&self, decision);
        let mut map = HeaderMap::new();
        headers.write_to(&mut map);
        let value = |name: &HeaderName| map.get(name).cloned();
        self.fresh = match (
            value(&RATELIMIT),
            value(&X_RATELIMIT_LIMIT),
            value(&X_RATELIMIT_REMAINING),
            value(&X_RATELIMIT_RESET),
        ) {
            (Some(ratelimit), Some(x_limit), Some(x_remaining), Some(x_reset))
                if decision.allowed =>
            {
                Some(Arc::new(FreshBucket {
                    remaining: decision.remaining,
                    reset_secs: ceil_secs(decision.reset_after),
                    limit: decision.limit,
                    ratelimit,
                    x_limit,
                    x_remaining,
                    x_reset,
                }))
            }
            _ => None,
        };
        self
    }
}

/// The headers for one response, gathered over the policies that applied.
///
/// This runs on every response of a limited route, so it avoids the
/// formatting machinery and copies: the `RateLimit-Policy` value of a single
/// policy is shared, and the other values are written into one buffer.
#[derive(Debug, Default, Clone)]
pub struct RateLimitHeaders {
    /// The first policy's `RateLimit-Policy` item.
    first_policy: Option<HeaderValue>,
    /// The whole `RateLimit-Policy` value once a second policy applied.
    policies: String,
    /// The `RateLimit` value.
    limits: Vec<u8>,
    /// Set instead of `limits` while the only decision is a full bucket's.
    fresh: Option<Arc<FreshBucket>>,
    /// The most restrictive decision so far, for the `X-RateLimit-*` fields.
    tightest: Option<Decision>,
    /// The longest wait among refusing policies.
    retry_after: Option<Duration>,
    violated: Vec<Arc<str>>,
}

/// Room for one policy's `RateLimit` item without growing.
const LIMIT_ITEM_BYTES: usize = 64;

impl RateLimitHeaders {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a policy's decision. Allowed decisions of a policy with
    /// `headers: false` add nothing; refusals always do.
    pub fn add(&mut self, policy: &Advertised, decision: &Decision) {
        if decision.allowed && !policy.on_allowed {
            return;
        }
        if self.tightest.is_none() {
            self.first_policy = policy.policy_value.clone();
            if let Some(fresh) = policy.fresh.as_ref().filter(|f| f.matches(decision)) {
                self.fresh = Some(fresh.clone());
                self.tightest = Some(*decision);
                return;
            }
            self.limits.reserve(LIMIT_ITEM_BYTES);
        } else {
            if let Some(fresh) = self.fresh.take() {
                self.limits.extend_from_slice(fresh.ratelimit.as_bytes());
            }
            if self.policies.is_empty() {
                self.policies
                    .push_str(self.first_policy.as_ref().map_or("", |v| {
                        std::str::from_utf8(v.as_bytes()).unwrap_or_default()
                    }));
            }
            self.policies.push_str(", ");
            self.policies.push_str(&policy.policy_item);
            self.limits.extend_from_slice(b", ");
        }
        let t = if decision.allowed {
            ceil_secs(decision.reset_after)
        } else {
            retry_after_secs(decision.retry_after)
        };
        let mut digits = itoa::Buffer::new();
        self.limits.extend_from_slice(policy.name_item.as_bytes());
        self.limits.extend_from_slice(b";r=");
        self.limits
            .extend_from_slice(digits.format(decision.remaining).as_bytes());
        self.limits.extend_from_slice(b";t=");
        self.limits.extend_from_slice(digits.format(t).as_bytes());
        if !decision.allowed {
            self.violated.push(policy.name.clone());
            let wait = self
                .retry_after
                .unwrap_or_default()
                .max(decision.retry_after);
            self.retry_after = Some(wait);
        }
        if self.tightest.is_none_or(|t| tighter(decision, &t)) {
            self.tightest = Some(*decision);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tightest.is_none()
    }

    /// Names of the policies that refused the request, for the problem body
    /// (`violated-policies` of the draft's quota-exceeded problem type).
    pub fn violated(&self) -> &[Arc<str>] {
        &self.violated
    }

    /// The `Retry-After` in seconds when a policy refused the request.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after.map(retry_after_secs)
    }

    /// Writes the fields into a response's headers.
    pub fn write_to(&self, headers: &mut HeaderMap) {
        let Some(tightest) = self.tightest else {
            return;
        };
        if let Some(fresh) = &self.fresh {
            headers.reserve(5);
            if let Some(policy) = &self.first_policy {
                headers.insert(RATELIMIT_POLICY, policy.clone());
            }
            headers.insert(RATELIMIT, fresh.ratelimit.clone());
            headers.insert(X_RATELIMIT_LIMIT, fresh.x_limit.clone());
            headers.insert(X_RATELIMIT_REMAINING, fresh.x_remaining.clone());
            headers.insert(X_RATELIMIT_RESET, fresh.x_reset.clone());
            return;
        }
        let policy = if self.policies.is_empty() {
            self.first_policy.clone()
        } else {
            HeaderValue::from_str(&self.policies).ok()
        };
        // One buffer holds every other value; the header values share it.
        let mut digits = itoa::Buffer::new();
        let numbers = [
            u64::from(tightest.limit),
            u64::from(tightest.remaining),
            ceil_secs(tightest.reset_after),
            self.retry_after().unwrap_or_default(),
        ];
        let mut buffer = BytesMut::with_capacity(self.limits.len() + numbers.len() * 20);
        buffer.extend_from_slice(&self.limits);
        let mut ends = [0; 5];
        ends[0] = buffer.len();
        for (end, number) in ends[1..].iter_mut().zip(numbers) {
            buffer.extend_from_slice(digits.format(number).as_bytes());
            *end = buffer.len();
        }
        let buffer = buffer.freeze();
        let value = |i: usize| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            HeaderValue::from_maybe_shared(buffer.slice(start..ends[i])).ok()
        };
        let fields = [
            (RATELIMIT_POLICY, policy),
            (RATELIMIT, value(0)),
            (X_RATELIMIT_LIMIT, value(1)),
            (X_RATELIMIT_REMAINING, value(2)),
            (X_RATELIMIT_RESET, value(3)),
            (header::RETRY_AFTER, self.retry_after.and_then(|_| value(4))),
        ];
        headers.reserve(fields.len());
        for (name, value) in fields {
            if let Some(value) = value {
                headers.insert(name, value);
            }
        }
    }
}

/// Refusals beat admissions; then fewer remaining; then a later reset.
fn tighter(a: &Decision, b: &Decision) -> bool {
    match (a.allowed, b.allowed) {
        (false, true) => true,
        (true, false) => false,
        (false, false) => a.retry_after > b.retry_after,
        (true, true) => {
            (a.remaining, std::cmp::Reverse(a.reset_after))
                < (b.remaining, std::cmp::Reverse(b.reset_after))
        }
    }
}

/// Whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `Retry-After` seconds: rounded up, at least 1 (0 would invite an instant retry).
pub fn retry_after_secs(d: Duration) -> u64 {
    ceil_secs(d).max(1)
}

/// An RFC 8941 sf-string: printable ASCII in quotes, `"` and `\` escaped.
fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, quota: u64, window: u64, burst: u32) -> Advertised {
        Advertised::new(name.into(), quota, window, burst, true)
    }

    fn allowed(limit: u32, remaining: u32, reset_ms: u64) -> Decision {
        Decision {
            allowed: true,
            limit,
            remaining,
            reset_after: Duration::from_millis(reset_ms),
            retry_after: Duration::ZERO,
            delay: Duration::ZERO,
        }
    }

    fn refused(limit: u32, retry_ms: u64, reset_ms: u64) -> Decision {
        Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_after: Duration::from_millis(reset_ms),
            retry_after: Duration::from_millis(retry_ms),
            delay: Duration::ZERO,
        }
    }

    fn written(h: &RateLimitHeaders) -> Vec<(String, String)> {
        let mut map = HeaderMap::new();
        h.write_to(&mut map);
        let mut out: Vec<_> = map
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn an_allowed_response() {
        let mut h = RateLimitHeaders::new();
        h.add(&policy("login", 10, 1, 10), &allowed(10, 7, 300));
        assert_eq!(
            written(&h),
            [
                ("ratelimit".into(), r#""login";r=7;t=1"#.into()),
                ("ratelimit-policy".into(), r#""login";q=10;w=1"#.into()),
                ("x-ratelimit-limit".into(), "10".into()),
                ("x-ratelimit-remaining".into(), "7".into()),
                ("x-ratelimit-reset".into(), "1".into()),
            ]
        );
        assert_eq!(h.retry_after(), None);
    }

    #[test]
    fn a_refused_response_carries_retry_after() {
        let mut h = RateLimitHeaders::new();
        h.add(&policy("api", 600, 60, 10), &refused(10, 2_100, 61_000));
        let w = written(&h);
        assert!(w.contains(&("ratelimit".into(), r#""api";r=0;t=3"#.into())));
        assert!(w.contains(&(
            "ratelimit-policy".into(),
            r#""api";q=600;w=60;concierge-burst=10"#.into()
        )));
        assert!(w.contains(&("retry-after".into(), "3".into())));
        assert!(w.contains(&("x-ratelimit-reset".into(), "61".into())));
        assert_eq!(h.violated(), [Arc::<str>::from("api")]);
    }

    #[test]
    fn several_policies_list_each_and_the_legacy_fields_show_the_tightest() {
        let mut h = RateLimitHeaders::new();
        h.add(&policy("per-ip", 100, 60, 20), &allowed(20, 15, 10_000));
        h.add(&policy("global", 500, 1, 500), &allowed(500, 3, 400));
        let w = written(&h);
        assert!(w.contains(&(
            "ratelimit-policy".into(),
            r#""per-ip";q=100;w=60;concierge-burst=20, "global";q=500;w=1"#.into()
        )));
        assert!(w.contains(&(
            "ratelimit".into(),
            r#""per-ip";r=15;t=10, "global";r=3;t=1"#.into()
        )));
        assert!(w.contains(&("x-ratelimit-remaining".into(), "3".into())));
        assert!(w.contains(&("x-ratelimit-limit".into(), "500".into())));
        // A refusal wins the legacy fields, and Retry-After is the longest wait.
        h.add(&policy("b", 1, 1, 1), &refused(1, 200, 900));
        h.add(&policy("c", 1, 60, 1), &refused(1, 59_000, 60_000));
        let w = written(&h);
        assert!(w.contains(&("retry-after".into(), "59".into())));
        assert!(w.contains(&("x-ratelimit-limit".into(), "1".into())));
        assert!(w.contains(&("x-ratelimit-remaining".into(), "0".into())));
        assert_eq!(h.violated().len(), 2);
    }

    #[test]
    fn allowed_decisions_of_a_quiet_policy_add_nothing() {
        let mut h = RateLimitHeaders::new();
        let mut quiet = policy("quiet", 10, 1, 10);
        quiet.on_allowed = false;
        h.add(&quiet, &allowed(10, 9, 100));
        assert!(h.is_empty());
        assert!(written(&h).is_empty());
        h.add(&quiet, &refused(10, 100, 1_000));
        assert!(!h.is_empty());
    }

    #[test]
    fn a_full_bucket_shares_precomputed_values_and_they_match() {
        let fresh = allowed(20, 19, 100);
        let plain = policy("api", 100, 60, 20);
        let quick = policy("api", 100, 60, 20).with_fresh_bucket(&fresh);
        assert!(quick.fresh.is_some());
        let mut slow = RateLimitHeaders::new();
        slow.add(&plain, &fresh);
        let mut shared = RateLimitHeaders::new();
        shared.add(&quick, &fresh);
        assert!(shared.fresh.is_some() && shared.limits.is_empty());
        assert_eq!(written(&shared), written(&slow));
        // Any other decision is written the long way.
        for other in [
            allowed(20, 18, 100),
            allowed(20, 19, 1_100),
            refused(20, 500, 900),
        ] {
            let mut a = RateLimitHeaders::new();
            a.add(&quick, &other);
            let mut b = RateLimitHeaders::new();
            b.add(&plain, &other);
            assert!(a.fresh.is_none());
            assert_eq!(written(&a), written(&b));
        }
        // A second policy after a full bucket lists both.
        let mut both = RateLimitHeaders::new();
        both.add(&quick, &fresh);
        both.add(&policy("global", 500, 1, 500), &allowed(500, 3, 400));
        let w = written(&both);
        assert!(w.contains(&(
            "ratelimit".into(),
            r#""api";r=19;t=1, "global";r=3;t=1"#.into()
        )));
        assert!(w.contains(&("x-ratelimit-remaining".into(), "3".into())));
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_secs(Duration::from_secs(60)), 60);
    }

    #[test]
    fn names_are_quoted_structured_field_strings() {
        assert_eq!(sf_string("login"), r#""login""#);
        assert_eq!(sf_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(sf_string("tab\there"), r#""tabhere""#);
    }
}
