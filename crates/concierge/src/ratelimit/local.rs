//! The in-process store: one TAT (8 bytes) per key, in 64 shards.
//!
//! A key whose TAT has passed holds no state (a fresh key behaves the same),
//! so idle keys are simply dropped: by a sweep on a timer, and by any new key
//! that finds its shard full. The number of keys is bounded by
//! `rate_limit.local.max_keys` (see `super::shard_map` for the exact
//! bound and what happens beyond it).
//!
//! Memory (`cargo run --release -p concierge --example ratelimit_memory`,
//! one million distinct IPv4 or IPv6 addresses; keys are hashed, never
//! stored, so every key kind costs the same):
//!
//! - the tables: a 16-byte slot (hash, TAT) plus a control byte per
//!   bucket, 7/16 to 7/8 full: **36 bytes per key, 34 MiB** for 1M keys
//!   (the example prints it from the tables' capacity);
//! - the gateway's RSS under mimalloc: **+66 MiB** for 1M keys, because
//!   mimalloc keeps the outgrown half-size tables for reuse; at most twice
//!   the tables.
//!
//! The default `max_keys` (1M) holds at most 1,032,000 keys, so that is the
//! bound; a flood of 3M distinct addresses stays there (the example's
//! `flood` phase), evicting the keys nearest to expiry.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Instant;

use super::gcra::{Gcra, Take};
use super::key::LimitKey;
use super::shard_map::{Expiring, ShardedMap};

/// Shards: enough that two cores (or sixty-four) rarely wait on each other.
pub const SHARDS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Tat(u64);

impl Expiring for Tat {
    fn expires_at(&self) -> u64 {
        self.0
    }
}

pub struct LocalStore {
    tats: ShardedMap<Tat>,
    /// Keys the 64-bit key hashes, so clients cannot aim at one bucket.
    hasher: RandomState,
    epoch: Instant,
}

impl LocalStore {
    pub fn new(max_keys: usize) -> Self {
        Self::with_shards(max_keys, SHARDS)
    }

    pub fn with_shards(max_keys: usize, shards: usize) -> Self {
        Self {
            tats: ShardedMap::new(max_keys, shards),
            hasher: RandomState::new(),
            epoch: Instant::now(),
        }
    }

    /// Nanoseconds on this store's monotonic clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The hash under which `key` of the policy `policy_id` is stored.
    pub fn key_hash(&self, policy_id: u64, key: &LimitKey<'_>) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        hasher.write_u64(policy_id);
        key.hash_into(&mut hasher);
        hasher.finish()
    }

    /// Takes up to `want` units from the key's bucket now.
    pub fn take(&self, key: u64, gcra: &Gcra, want: u32) -> Take {
        self.take_at(key, gcra, want, self.now())
    }

    /// `take` at a given instant (tests drive the clock).
    pub fn take_at(&self, key: u64, gcra: &Gcra, want: u32, now: u64) -> Take {
        self.tats.update(key, now, |current| {
            let debt = current.map_or(0, |tat| tat.0.saturating_sub(now));
            let take = gcra.take(debt, want);
            let stored = if take.granted > 0 {
                Some(Tat(take.tat(now)))
            } else {
                current
            };
            (stored, take)
        })
    }

    /// Changes the bound on keys (a reload changed `max_keys`).
    pub fn set_max_keys(&self, max_keys: usize) {
        self.tats.set_max_keys(max_keys);
    }

    /// Drops idle keys; returns how many. `Stores` runs it on a timer.
    pub fn sweep(&self) -> usize {
        self.tats.sweep(self.now())
    }

    pub fn len(&self) -> usize {
        self.tats.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
    }

    /// The most keys this store holds.
    pub fn capacity_bound(&self) -> usize {
        self.tats.capacity_bound()
    }

    /// Bytes of the key tables (see `ShardedMap::table_bytes`).
    pub fn table_bytes(&self) -> usize {
        self.tats.table_bytes()
    }

    /// Live keys evicted because their shard was full (a sign `max_keys` is too small).
    pub fn evicted_live(&self) -> u64 {
        self.tats.evicted_live()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ratelimit::config::parse_rate;

    const MS: u64 = 1_000_000;

    fn gcra(rate: &str, burst: u32) -> Gcra {
        Gcra::new(parse_rate(rate).unwrap(), burst, Duration::ZERO).unwrap()
    }

    #[test]
    fn buckets_are_per_key() {
        let store = LocalStore::new(1000);
        let g = gcra("1/s", 2);
        let a = store.key_hash(1, &LimitKey::Ip("10.0.0.1".parse().unwrap()));
        let b = store.key_hash(1, &LimitKey::Ip("10.0.0.2".parse().unwrap()));
        let a_in_other_policy = store.key_hash(2, &LimitKey::Ip("10.0.0.1".parse().unwrap()));
        let allowed = |key| {
            (0..5)
                .filter(|_| store.take_at(key, &g, 1, 0).decision.allowed)
                .count()
        };
        assert_eq!(allowed(a), 2);
        assert_eq!(allowed(b), 2);
        assert_eq!(allowed(a_in_other_policy), 2);
    }

    #[test]
    fn idle_keys_are_swept_and_live_ones_kept() {
        let store = LocalStore::new(1000);
        let g = gcra("10/s", 1); // each key holds state for 100ms
        for n in 0..100u64 {
            store.take_at(n.wrapping_mul(0x9e37_79b9_7f4a_7c15), &g, 1, n * MS);
        }
        assert_eq!(store.len(), 100);
        // At 150ms, keys taken before 50ms are idle.
        assert_eq!(store.tats.sweep(150 * MS), 51);
        assert_eq!(store.len(), 49);
        assert_eq!(store.tats.sweep(10_000 * MS), 49);
        assert!(store.is_empty());
    }

    #[test]
    fn a_full_store_evicts_idle_keys_first() {
        let store = LocalStore::with_shards(10, 1);
        let slow = gcra("1/h", 1); // state for an hour
        let fast = gcra("1000/s", 1); // state for 1ms
        for key in 0..5 {
            store.take_at(key, &slow, 1, 0);
        }
        for key in 100..105 {
            store.take_at(key, &fast, 1, 0);
        }
        assert_eq!(store.len(), 10);
        // Later, a new key arrives: the five idle ones go, the hour-long ones stay.
        store.take_at(999, &slow, 1, 10 * MS);
        assert_eq!(store.len(), 6);
        assert_eq!(store.evicted_live(), 0);
        for key in 0..5 {
            assert!(!store.take_at(key, &slow, 1, 10 * MS).decision.allowed);
        }
    }

    #[test]
    fn the_bound_holds_under_many_distinct_addresses() {
        let store = LocalStore::new(10_000);
        let g = gcra("1/h", 1);
        for n in 0..100_000u32 {
            let key = store.key_hash(7, &LimitKey::Ip(std::net::Ipv4Addr::from(n).into()));
            store.take_at(key, &g, 1, 0);
        }
        assert!(store.len() <= store.capacity_bound());
        // 10,000 keys plus the slack for uneven shards (see shard_map).
        assert_eq!(store.capacity_bound(), 64 * (157 + 4 * 13));
    }
}
