//! Per-policy counters for `/metrics`: how often each policy refused or
//! held a request.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// What a policy did that an operator wants to see: counted only for the
/// rare outcomes, so an allowed request touches no shared counter.
#[derive(Debug, Default)]
pub struct PolicyStats {
    pub limited: AtomicU64,
    pub delayed: AtomicU64,
}

/// The counters of each policy identity, shared by the limiters of every
/// snapshot that has it, so an unchanged policy keeps counting across
/// reloads. Only compiling a snapshot and scraping take the lock.
#[derive(Debug, Default)]
pub struct PolicyStatsRegistry {
    by_id: Mutex<HashMap<u64, Entry>>,
}

#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    stats: Weak<PolicyStats>,
}

impl PolicyStatsRegistry {
    /// The counters of policy `id`, shared with any live limiter of it.
    pub(super) fn get(&self, id: u64, name: &str) -> Arc<PolicyStats> {
        let mut by_id = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        by_id.retain(|_, entry| entry.stats.strong_count() > 0);
        if let Some(stats) = by_id.get(&id).and_then(|e| e.stats.upgrade()) {
            return stats;
        }
        let stats = Arc::new(PolicyStats::default());
        let entry = Entry {
            name: Arc::from(name),
            stats: Arc::downgrade(&stats),
        };
        by_id.insert(id, entry);
        stats
    }

    /// `(policy name, limited, delayed)` summed by name, sorted by name.
    pub fn totals(&self) -> Vec<(Arc<str>, u64, u64)> {
        let by_id = self.by_id.lock().unwrap_or_else(PoisonError::into_inner);
        let mut totals: BTreeMap<Arc<str>, (u64, u64)> = BTreeMap::new();
        for entry in by_id.values() {
            if let Some(stats) = entry.stats.upgrade() {
                let entry = totals.entry(entry.name.clone()).or_default();
                entry.0 += stats.limited.load(Ordering::Relaxed);
                entry.1 += stats.delayed.load(Ordering::Relaxed);
            }
        }
        totals
            .into_iter()
            .map(|(name, (limited, delayed))| (name, limited, delayed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_identity_shares_counters_and_names_are_summed() {
        let registry = PolicyStatsRegistry::default();
        let a = registry.get(1, "login");
        let same = registry.get(1, "login");
        assert!(Arc::ptr_eq(&a, &same));
        let changed = registry.get(2, "login");
        a.limited.fetch_add(2, Ordering::Relaxed);
        changed.limited.fetch_add(1, Ordering::Relaxed);
        changed.delayed.fetch_add(5, Ordering::Relaxed);
        let other = registry.get(3, "api");
        other.limited.fetch_add(7, Ordering::Relaxed);
        assert_eq!(
            registry.totals(),
            vec![(Arc::from("api"), 7, 0), (Arc::from("login"), 3, 5)]
        );
        // A policy no snapshot holds any more drops out.
        drop((a, same));
        assert_eq!(
            registry.totals(),
            vec![(Arc::from("api"), 7, 0), (Arc::from("login"), 1, 5)]
        );
    }
}
