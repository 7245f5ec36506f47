//! Load-balancing decisions. Each balancer only reads shared atomics: picking
//! a target never takes a lock.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the balancer knows of each target.
pub struct TargetLoad {
    pub weight: u32,
    pub in_flight: AtomicUsize,
}

pub enum Balancer {
    /// A precomputed smooth weighted order, walked by a shared counter.
    RoundRobin {
        order: Vec<usize>,
        next: AtomicUsize,
    },
    /// Fewest in-flight requests; ties rotate so idle pools still spread.
    LeastRequest { next: AtomicUsize },
    /// Weighted rendezvous hashing of the request's key.
    ConsistentHash,
}

impl Balancer {
    pub fn round_robin(weights: &[u32]) -> Self {
        Self::RoundRobin {
            order: smooth_weighted_order(weights),
            next: AtomicUsize::new(0),
        }
    }

    /// Picks a target index. `key` is the hash key for consistent hashing.
    pub fn pick(&self, targets: &[TargetLoad], key: Option<&[u8]>) -> usize {
        match self {
            Self::RoundRobin { order, next } => {
                order[next.fetch_add(1, Ordering::Relaxed) % order.len()]
            }
            Self::LeastRequest { next } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                let n = targets.len();
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|&i| {
                        // Compare load per unit of weight, scaled to stay integral.
                        targets[i].in_flight.load(Ordering::Relaxed) * 1024
                            / targets[i].weight.max(1) as usize
                    })
                    .unwrap_or(0)
            }
            Self::ConsistentHash => rendezvous(targets, key.unwrap_or_default()),
        }
    }
}

/// The interleaved order of nginx's smooth weighted round robin: weights
/// 5,1,1 give a a b a c a a rather than a a a a a b c.
fn smooth_weighted_order(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let best = (0..weights.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .unwrap_or(0);
        current[best] -= total;
        order.push(best);
    }
    if order.is_empty() {
        order.push(0);
    }
    order
}

/// Weighted rendezvous (highest random weight) hashing: when a target leaves,
/// only its keys move.
fn rendezvous(targets: &[TargetLoad], key: &[u8]) -> usize {
    let mut best = (f64::MIN, 0);
    for (i, target) in targets.iter().enumerate() {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        i.hash(&mut hasher);
        // Map the hash into (0, 1) and apply the weighted score -w / ln(u).
        let unit = ((hasher.finish() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = -f64::from(target.weight.max(1)) / unit.ln();
        if score > best.0 {
            best = (score, i);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(weights: &[u32]) -> Vec<TargetLoad> {
        weights
            .iter()
            .map(|&weight| TargetLoad {
                weight,
                in_flight: AtomicUsize::new(0),
            })
            .collect()
    }

    #[test]
    fn round_robin_follows_weights_smoothly() {
        assert_eq!(smooth_weighted_order(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        let b = Balancer::round_robin(&[1, 1, 1]);
        let t = loads(&[1, 1, 1]);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(&t, None)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_request_avoids_busy_targets() {
        let b = Balancer::LeastRequest {
            next: AtomicUsize::new(0),
        };
        let t = loads(&[1, 1, 1]);
        t[0].in_flight.store(5, Ordering::Relaxed);
        t[2].in_flight.store(2, Ordering::Relaxed);
        for _ in 0..5 {
            assert_eq!(b.pick(&t, None), 1);
        }
    }

    #[test]
    fn consistent_hash_is_stable_and_spreads() {
        let t = loads(&[1, 1, 1]);
        let b = Balancer::ConsistentHash;
        let first = b.pick(&t, Some(b"user-42"));
        assert!((0..10).all(|_| b.pick(&t, Some(b"user-42")) == first));
        let mut seen = [0; 3];
        for i in 0..300 {
            seen[b.pick(&t, Some(format!("user-{i}").as_bytes()))] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
