//! Hybrid mode for cluster policies (`hybrid: {batch: N}`, off by default):
//! one Redis call takes up to N tokens for a key, this instance spends the
//! first at once and keeps the rest as a *lease* spent without Redis.
//!
//! Accuracy: tokens are debited in Redis when they are taken, so Redis
//! still admits at most `burst + d / T` tokens over any interval `d`. What
//! changes is *when* they are spent: an instance holds at most `batch − 1`
//! unspent tokens (deposits are capped), so over any interval the requests
//! admitted cluster-wide exceed the limit by at most
//! **instances × (batch − 1)**. Leases expire after `batch × T` (the time
//! the tokens stand for), and tokens left unspent are lost, so an instance
//! whose traffic stops undershoots rather than overshoots.
//!
//! Round trips: at saturation one Redis call per `batch` requests per key,
//! instead of one per request.

use std::time::Duration;

use super::gcra::Decision;
use super::shard_map::{Expiring, ShardedMap};

#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Tokens held, already debited in Redis.
    tokens: u32,
    /// What Redis said remained when the tokens were taken.
    redis_remaining: u32,
    /// When the Redis bucket would be full again (store clock, ns).
    reset_at: u64,
    /// Unspent tokens are dropped at this instant.
    expires: u64,
}

impl Expiring for Lease {
    fn expires_at(&self) -> u64 {
        self.expires
    }
}

/// Leased tokens per key, bounded like the local store.
pub struct LeaseStore {
    leases: ShardedMap<Lease>,
}

impl LeaseStore {
    pub fn new(max_keys: usize) -> Self {
        Self {
            leases: ShardedMap::new(max_keys, super::local::SHARDS),
        }
    }

    /// Spends one held token, if any; the decision is this instance's best
    /// estimate of the shared bucket (held tokens plus what Redis had left).
    pub fn spend(&self, key: u64, now: u64, limit: u32) -> Option<Decision> {
        self.leases.update(key, now, |current| match current {
            Some(lease) if lease.tokens > 0 && lease.expires > now => {
                let left = lease.tokens - 1;
                let remaining = left.saturating_add(lease.redis_remaining);
                let decision = Decision {
                    allowed: true,
                    limit,
                    remaining,
                    reset_after: Duration::from_nanos(lease.reset_at.saturating_sub(now)),
                    retry_after: Duration::ZERO,
                    delay: Duration::ZERO,
                };
                let kept = (left > 0).then_some(Lease {
                    tokens: left,
                    ..lease
                });
                (kept, Some(decision))
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
        let reset_at =
            now.saturating_add(u64::try_from(redis.reset_after.as_nanos()).unwrap_or(u64::MAX));
        self.leases.update(key, now, |current| {
            let held = current
                .filter(|lease| lease.expires > now)
                .map_or(0, |lease| lease.tokens);
            let lease = Lease {
                tokens: held.saturating_add(tokens).min(cap),
                redis_remaining: redis.remaining,
                reset_at,
                expires: now.saturating_add(hold),
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

    fn redis_said(remaining: u32) -> Decision {
        Decision {
            allowed: true,
            limit: 10,
            remaining,
            reset_after: Duration::from_millis(500),
            retry_after: Duration::ZERO,
            delay: Duration::ZERO,
        }
    }

    #[test]
    fn deposited_tokens_are_spent_once_each() {
        let store = LeaseStore::new(100);
        assert!(store.spend(1, 0, 10).is_none());
        store.deposit(1, 0, 3, 4, 1_000, &redis_said(2));
        let remaining: Vec<u32> = (0..4)
            .filter_map(|_| store.spend(1, 10, 10))
            .map(|d| d.remaining)
            .collect();
        assert_eq!(remaining, [4, 3, 2]);
        assert!(store.is_empty(), "an empty lease is dropped");
    }

    #[test]
    fn holdings_are_capped_and_expire() {
        let store = LeaseStore::new(100);
        store.deposit(1, 0, 3, 4, 1_000, &redis_said(0));
        store.deposit(1, 0, 3, 4, 1_000, &redis_said(0));
        assert_eq!((0..10).filter_map(|_| store.spend(1, 0, 10)).count(), 4);
        store.deposit(2, 0, 3, 4, 1_000, &redis_said(0));
        assert!(
            store.spend(2, 1_000, 10).is_none(),
            "expired tokens are not spent"
        );
    }
}
