//! A bounded map from 64-bit key hashes to small values that expire,
//! split into shards so that concurrent requests rarely share a lock.
//!
//! Keys arrive already hashed with a per-process random key (see
//! `LocalStore::key_hash`), so the map stores 8 bytes per key instead of the
//! key itself, and the table hashes them with a pass-through hasher. Bits
//! 32–37 pick the shard; the table uses the low bits for the bucket and the
//! top 7 for its control bytes, so the three never overlap.
//!
//! Each shard holds at most `per_shard` keys. When a new key finds its shard
//! full, the shard first drops expired entries (they hold no state); if
//! every entry is live, it evicts the one nearest to expiry among a small
//! sample, which for a rate limiter only forgives that key's remaining debt.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// A value that stops mattering at some instant (nanoseconds on the store's clock).
pub trait Expiring: Copy {
    fn expires_at(&self) -> u64;
}

/// How many live entries are compared when one must be evicted.
const EVICTION_SAMPLE: usize = 8;

/// The keys are random already: hashing them again would only cost time.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `HashMap<u64, _>`; this keeps the
        // hasher correct for anything else.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Table<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

struct Shard<V> {
    map: Table<V>,
    /// No entry expires before this: a sweep earlier would find nothing.
    next_expiry: u64,
    /// New keys since the last sweep. A full shard sweeps again only after
    /// a share of its budget was inserted, so a flood of new keys with
    /// short-lived buckets costs O(1) per insert, not a scan of the shard.
    inserted_since_sweep: usize,
}

/// A full shard sweeps at most once per `budget / SWEEP_EVERY` new keys.
const SWEEP_EVERY: usize = 8;

pub struct ShardedMap<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    per_shard: AtomicUsize,
    evicted_live: AtomicU64,
}

/// Keys per shard for a total of `max_keys`: an even share plus four
/// standard deviations, because hashing spreads keys unevenly, so that
/// `max_keys` distinct keys fit without evicting live ones.
pub fn per_shard_budget(max_keys: usize, shards: usize) -> usize {
    let share = max_keys.div_ceil(shards.max(1)).max(1);
    if shards <= 1 {
        return share;
    }
    share + 4 * (share as f64).sqrt().ceil() as usize
}

impl<V: Expiring> ShardedMap<V> {
    /// `shards` is rounded up to a power of two.
    pub fn new(max_keys: usize, shards: usize) -> Self {
        let shards = shards.clamp(1, 1 << 6).next_power_of_two();
        let budget = per_shard_budget(max_keys, shards);
        // Tables start empty and grow with use: a store that sees few keys
        // costs little (allocating the bound up front costs its full size
        // at once: mimalloc makes such allocations resident).
        let shards = (0..shards)
            .map(|_| {
                Mutex::new(Shard {
                    map: Table::default(),
                    next_expiry: 0,
                    inserted_since_sweep: 0,
                })
            })
            .collect();
        Self {
            shards,
            per_shard: AtomicUsize::new(budget),
            evicted_live: AtomicU64::new(0),
        }
    }

    /// Changes the bound; shards over it shrink as new keys arrive.
    pub fn set_max_keys(&self, max_keys: usize) {
        let budget = per_shard_budget(max_keys, self.shards.len());
        self.per_shard.store(budget, Ordering::Relaxed);
    }

    /// The most keys the map can hold.
    pub fn capacity_bound(&self) -> usize {
        self.per_shard.load(Ordering::Relaxed) * self.shards.len()
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard<V>> {
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        // A panic while holding the lock cannot leave a map of plain numbers
        // half-updated in a harmful way: keep serving.
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the key's value (`None` when absent) and stores what it
    /// returns (`None` removes). One lock, held only for `f`.
    pub fn update<R>(&self, hash: u64, now: u64, f: impl FnOnce(Option<V>) -> (Option<V>, R)) -> R {
        let budget = self.per_shard.load(Ordering::Relaxed);
        let mut shard = self.shard(hash);
        let current = shard.map.get(&hash).copied();
        let (next, result) = f(current);
        match (current, next) {
            (_, Some(value)) => {
                if current.is_none() {
                    if shard.make_room(now, budget) {
                        self.evicted_live.fetch_add(1, Ordering::Relaxed);
                    }
                    shard.inserted_since_sweep += 1;
                }
                shard.next_expiry = shard.next_expiry.min(value.expires_at());
                shard.map.insert(hash, value);
            }
            (Some(_), None) => {
                shard.map.remove(&hash);
            }
            (None, None) => {}
        }
        result
    }

    /// Drops every expired entry; returns how many. Run on a timer.
    pub fn sweep(&self, now: u64) -> usize {
        let budget = self.per_shard.load(Ordering::Relaxed);
        let mut removed = 0;
        for index in 0..self.shards.len() {
            let mut shard = self.shards[index]
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if now >= shard.next_expiry {
                removed += shard.sweep(now);
            }
            // `max_keys` was lowered by a reload: give the memory back.
            if shard.map.capacity() > 2 * budget && shard.map.len() <= budget {
                shard.map.shrink_to(budget);
            }
        }
        removed
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the tables' slots and control bytes, from their capacity
    /// (what the store itself holds, whatever the allocator keeps beside).
    pub fn table_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(u64, V)>();
        self.shards
            .iter()
            .map(|s| {
                let capacity = s
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .map
                    .capacity();
                if capacity == 0 {
                    return 0;
                }
                // The table keeps at most 7/8 of its buckets full.
                let buckets = (capacity * 8 / 7).next_power_of_two();
                buckets * (slot + 1) + 16
            })
            .sum()
    }

    /// Live entries evicted because their shard was full.
    pub fn evicted_live(&self) -> u64 {
        self.evicted_live.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn get(&self, hash: u64) -> Option<V> {
        self.shard(hash).map.get(&hash).copied()
    }
}

impl<V: Expiring> Shard<V> {
    /// Frees a slot for a new key; true when a live entry had to go.
    fn make_room(&mut self, now: u64, budget: usize) -> bool {
        if self.map.len() < budget {
            return false;
        }
        if now >= self.next_expiry && self.inserted_since_sweep >= budget / SWEEP_EVERY {
            self.sweep(now);
        }
        let mut evicted_live = false;
        while self.map.len() >= budget {
            let victim = self
                .map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, value)| value.expires_at())
                .map(|(key, value)| (*key, value.expires_at()));
            let Some((victim, expires_at)) = victim else {
                break;
            };
            self.map.remove(&victim);
            // Between sweeps the sample often finds an expired entry, which
            // held no state.
            evicted_live |= expires_at > now;
        }
        evicted_live
    }

    fn sweep(&mut self, now: u64) -> usize {
        let before = self.map.len();
        let mut next = u64::MAX;
        self.map.retain(|_, value| {
            let expires = value.expires_at();
            let live = expires > now;
            if live {
                next = next.min(expires);
            }
            live
        });
        self.next_expiry = next;
        self.inserted_since_sweep = 0;
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    struct Until(u64);
    impl Expiring for Until {
        fn expires_at(&self) -> u64 {
            self.0
        }
    }

    fn put(map: &ShardedMap<Until>, key: u64, until: u64, now: u64) {
        map.update(key, now, |_| (Some(Until(until)), ()));
    }

    #[test]
    fn the_budget_leaves_room_for_uneven_hashing() {
        assert_eq!(per_shard_budget(100, 1), 100);
        assert_eq!(per_shard_budget(1_000_000, 64), 15_625 + 4 * 125);
    }

    #[test]
    fn expired_entries_make_room_before_live_ones_go() {
        let map = ShardedMap::new(4, 1);
        for key in 0..4 {
            put(&map, key, 10 + key, 0);
        }
        // At 12, keys 0..=2 have expired: a new key sweeps them out.
        put(&map, 100, 50, 12);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(3), Some(Until(13)));
        assert_eq!(map.evicted_live(), 0);
    }

    #[test]
    fn a_full_shard_of_live_keys_evicts_the_nearest_to_expiry() {
        let map = ShardedMap::new(4, 1);
        for (key, until) in [(1, 500), (2, 100), (3, 900), (4, 700)] {
            put(&map, key, until, 0);
        }
        put(&map, 5, 1000, 50);
        assert_eq!(map.len(), 4);
        assert_eq!(map.get(2), None, "the key closest to expiry went");
        assert_eq!(map.evicted_live(), 1);
        // Updating an existing key never evicts.
        put(&map, 1, 800, 60);
        assert_eq!(map.len(), 4);
        assert_eq!(map.evicted_live(), 1);
    }

    #[test]
    fn the_bound_holds_under_a_flood_of_keys() {
        let map = ShardedMap::new(1000, 16);
        let mut key: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            key = key
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            put(&map, key, u64::MAX, 0);
        }
        assert!(map.len() <= map.capacity_bound());
        assert!(map.len() >= 1000);
    }

    #[test]
    fn a_flood_of_short_lived_keys_sweeps_a_full_shard_only_now_and_then() {
        let map = ShardedMap::new(800, 1);
        for key in 0..800 {
            put(&map, key, 10 + key, 0);
        }
        // Everything has expired, but the shard swept a moment ago: new
        // keys evict expired entries one at a time instead of scanning.
        put(&map, 10_000, 5_000, 15);
        let after_sweep = map.len();
        assert!(after_sweep < 800, "the first new key swept: {after_sweep}");
        for key in 1..50 {
            put(&map, 10_000 + key, 5_000, 4_000);
        }
        assert_eq!(map.len(), 800, "no sweep yet: still full");
        assert_eq!(map.evicted_live(), 0, "the evicted entries had expired");
        // Once budget / 8 new keys arrived, a full shard sweeps again.
        for key in 50..400 {
            put(&map, 10_000 + key, 5_000, 4_000);
        }
        assert_eq!(map.len(), 400, "only the new keys are left");
        assert_eq!(map.sweep(4_000), 0, "the inserts swept the expired keys");
        assert_eq!(map.evicted_live(), 0);
    }

    #[test]
    fn sweep_removes_only_expired_entries() {
        let map = ShardedMap::new(100, 4);
        for key in 0..50u64 {
            put(&map, key << 32, key, 0);
        }
        assert_eq!(map.sweep(25), 26); // expiry 0..=25
        assert_eq!(map.len(), 24);
        assert_eq!(map.sweep(25), 0);
        assert_eq!(map.sweep(1000), 24);
        assert!(map.is_empty());
    }

    #[test]
    fn removing_through_update() {
        let map = ShardedMap::new(10, 1);
        put(&map, 7, 100, 0);
        map.update(7, 0, |current| {
            assert_eq!(current, Some(Until(100)));
            (None, ())
        });
        assert_eq!(map.get(7), None);
    }
}
