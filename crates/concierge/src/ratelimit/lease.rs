//! What a cluster policy may decide without asking Redis again.
//!
//! **Refusals.** When Redis refuses a key with "retry after `r`", no
//! instance can get a token for that key before `r` has passed (the shared
//! debt only shrinks with time). So this instance refuses the key locally
//! until then: exact, and a flood over the limit costs Redis about one call
//! per instance per freed token instead of one per request.
//!
//! **Hybrid mode** (`hybrid: {batch: N}`, off by default): one Redis call
//! takes up to N tokens; this instance spends the first at once and keeps
//! the rest as a lease, spent without Redis.
//!
//! Accuracy: tokens are debited in Redis when they are taken, so Redis
//! still hands out at most `burst + d / T` tokens over any interval `d`.
//! What changes is *when* they are spent: an instance holds at most
//! `batch − 1` unspent tokens (deposits are capped), so over any interval
//! the requests admitted cluster-wide exceed the limit by at most
//! **instances × (batch − 1)**. Leases expire after `batch × T` (the time
//! the tokens stand for, at least a second) and unspent tokens are lost, so
//! an instance whose traffic stops undershoots rather than overshoots.
//!
//! Round trips: with tokens to spare, one Redis call per `batch` requests
//! per key instead of one per request; at the limit, batches shrink to
//! what the bucket has (often one token).

use std::time::Duration;

use super::gcra::Decision;
use super::shard_map::{Expiring, ShardedMap};

#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Tokens held, already debited in Redis.
    tokens: u32,
    /// What Redis said remained when it last answered.
    redis_remaining: u32,
    /// When the Redis bucket would be full again (store clock, ns).
    reset_at: u64,
    /// Unspent tokens are dropped at this instant.
    tokens_expire: u64,
    /// Redis refused: nothing can pass before this instant.
    blocked_until: u64,
}

impl Expiring for Lease {
    fn expires_at(&self) -> u64 {
        let tokens = if self.tokens > 0 {
            self.tokens_expire
        } else {
            0
        };
        tokens.max(self.blocked_until)
    }
}

/// Per key: leased tokens and cached refusals, bounded like the local store.
pub struct LeaseStore {
    leases: ShardedMap<Lease>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl LeaseStore {
    pub fn new(max_keys: usize) -> Self {
        Self {
            leases: ShardedMap::new(max_keys, super::local::SHARDS),
        }
    }

    /// A decision made here, if one can be: a refusal Redis gave that
    /// still holds, or a held token spent. `None`: ask Redis.
    pub fn decide(&self, key: u64, now: u64, limit: u32) -> Option<Decision> {
        self.leases.update(key, now, |current| match current {
            Some(lease) if now < lease.blocked_until => {
                let refusal = Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_after: Duration::from_nanos(lease.reset_at.saturating_sub(now)),
                    retry_after: Duration::from_nanos(lease.blocked_until - now),
                    delay: Duration::ZERO,
                };
                (Some(lease), Some(refusal))
            }
            Some(lease) if lease.tokens > 0 && now < lease.tokens_expire => {
                let left = lease.tokens - 1;
                let spent = Decision {
                    allowed: true,
                    limit,
                    remaining: left.saturating_add(lease.redis_remaining),
                    reset_after: Duration::from_nanos(lease.reset_at.saturating_sub(now)),
                    retry_after: Duration::ZERO,
                    delay: Duration::ZERO,
                };
                let kept = (left > 0).then_some(Lease {
                    tokens: left,
                    ..lease
                });
                (kept, Some(spent))
            }
            _ => (None, None),
        })
    }

    /// Keeps `tokens` just taken from Redis (beyond the one spent now), at
    /// most `cap` in all, for `hold` nanoseconds.
    pub fn deposit(&self, key: u64, now: u64, tokens: u32, cap: u32, hold: u64, redis: &Decision) {
        if tokens == 0 {
            return;
        }
        self.leases.update(key, now, |current| {
            let held = current
                .filter(|lease| now < lease.tokens_expire)
                .map_or(0, |lease| lease.tokens);
            let lease = Lease {
                tokens: held.saturating_add(tokens).min(cap),
                redis_remaining: redis.remaining,
                reset_at: now.saturating_add(nanos(redis.reset_after)),
                tokens_expire: now.saturating_add(hold),
                blocked_until: 0,
            };
            (Some(lease), ())
        });
    }

    /// Remembers a refusal from Redis until its `retry_after` has passed.
    pub fn block(&self, key: u64, now: u64, refusal: &Decision) {
        let until = now.saturating_add(nanos(refusal.retry_after));
        self.leases.update(key, now, |_| {
            let lease = Lease {
                tokens: 0,
                redis_remaining: 0,
                reset_at: now.saturating_add(nanos(refusal.reset_after)),
                tokens_expire: 0,
                blocked_until: until,
            };
            (Some(lease), ())
        });
    }

    pub fn sweep(&self, now: u64) -> usize {
        self.leases.sweep(now)
    }

    pub fn set_max_keys(&self, max_keys: usize) {
        self.leases.set_max_keys(max_keys);
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_said(allowed: bool, remaining: u32, retry_ms: u64) -> Decision {
        Decision {
            allowed,
            limit: 10,
            remaining,
            reset_after: Duration::from_millis(500),
            retry_after: Duration::from_millis(retry_ms),
            delay: Duration::ZERO,
        }
    }

    const MS: u64 = 1_000_000;

    #[test]
    fn deposited_tokens_are_spent_once_each() {
        let store = LeaseStore::new(100);
        assert!(store.decide(1, 0, 10).is_none());
        store.deposit(1, 0, 3, 4, 1_000, &redis_said(true, 2, 0));
        let remaining: Vec<u32> = (0..4)
            .filter_map(|_| store.decide(1, 10, 10))
            .map(|d| d.remaining)
            .collect();
        assert_eq!(remaining, [4, 3, 2]);
        assert!(store.is_empty(), "an empty lease is dropped");
    }

    #[test]
    fn holdings_are_capped_and_expire() {
        let store = LeaseStore::new(100);
        store.deposit(1, 0, 3, 4, 1_000, &redis_said(true, 0, 0));
        store.deposit(1, 0, 3, 4, 1_000, &redis_said(true, 0, 0));
        assert_eq!((0..10).filter_map(|_| store.decide(1, 0, 10)).count(), 4);
        store.deposit(2, 0, 3, 4, 1_000, &redis_said(true, 0, 0));
        assert!(
            store.decide(2, 1_000, 10).is_none(),
            "expired tokens are not spent"
        );
    }

    #[test]
    fn a_refusal_holds_until_its_retry_after() {
        let store = LeaseStore::new(100);
        store.block(1, 0, &redis_said(false, 0, 30));
        let cached = store.decide(1, 10 * MS, 10).unwrap();
        assert!(!cached.allowed);
        assert_eq!(cached.retry_after, Duration::from_millis(20));
        assert!(
            store.decide(1, 30 * MS, 10).is_none(),
            "then Redis is asked again"
        );
        assert!(store.is_empty());
    }
}
