//! Load shedding: at most `max_in_flight` requests to a service at once.
//! A request over the limit is answered `503` with `Retry-After` at once,
//! so a struggling service is protected even when the request rate looks
//! fine (slow answers pile up in flight).
//!
//! One atomic counter per service; a guard holds a slot and gives it back
//! when dropped, however the request ends (answered, failed, cancelled).
//! The guard is `'static`, so it can travel with the response body and
//! count a streaming response until its last byte.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::config::ConcurrencyLimit;

#[derive(Debug)]
pub struct ConcurrencyLimiter {
    in_flight: Arc<AtomicU32>,
    max: u32,
    retry_after: Duration,
    shed: AtomicU64,
}

/// A slot held by one request.
#[derive(Debug)]
#[must_use = "the slot is released when the guard is dropped"]
pub struct InFlightGuard {
    in_flight: Arc<AtomicU32>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencyLimiter {
    /// `previous` is the same service's limiter in the snapshot being
    /// replaced: the count of requests in flight carries over a reload, so
    /// a reload never lets a burst past the limit.
    pub fn build(cfg: &ConcurrencyLimit, previous: Option<&Self>) -> Result<Self, String> {
        if cfg.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".to_string());
        }
        Ok(Self {
            in_flight: previous.map_or_else(Default::default, |p| p.in_flight.clone()),
            max: cfg.max_in_flight,
            retry_after: cfg.retry_after.0,
            shed: AtomicU64::new(0),
        })
    }

    /// A slot, or `None` when the service is at its limit (answer 503 with
    /// [`Self::retry_after`]).
    pub fn try_acquire(&self) -> Option<InFlightGuard> {
        let taken = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if taken {
            Some(InFlightGuard {
                in_flight: self.in_flight.clone(),
            })
        } else {
            self.shed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn max_in_flight(&self) -> u32 {
        self.max
    }

    /// The `Retry-After` to send with a 503.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Requests refused since this limiter was built.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::DurationStr;

    fn limit(max: u32) -> ConcurrencyLimit {
        ConcurrencyLimit {
            max_in_flight: max,
            retry_after: DurationStr::from_secs(2),
        }
    }

    #[test]
    fn slots_are_bounded_and_returned_on_drop() {
        let limiter = ConcurrencyLimiter::build(&limit(2), None).unwrap();
        let a = limiter.try_acquire().unwrap();
        let b = limiter.try_acquire().unwrap();
        assert!(limiter.try_acquire().is_none());
        assert_eq!((limiter.in_flight(), limiter.shed()), (2, 1));
        drop(a);
        let c = limiter.try_acquire().unwrap();
        drop((b, c));
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.retry_after(), Duration::from_secs(2));
    }

    #[test]
    fn the_count_survives_a_reload() {
        let old = ConcurrencyLimiter::build(&limit(3), None).unwrap();
        let held = old.try_acquire().unwrap();
        let new = ConcurrencyLimiter::build(&limit(1), Some(&old)).unwrap();
        assert!(new.try_acquire().is_none(), "the old request still counts");
        drop(held);
        assert!(new.try_acquire().is_some());
    }

    #[test]
    fn concurrent_acquires_never_exceed_the_limit() {
        let limiter = Arc::new(ConcurrencyLimiter::build(&limit(3), None).unwrap());
        let peak = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (limiter, peak) = (limiter.clone(), peak.clone());
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        if let Some(guard) = limiter.try_acquire() {
                            peak.fetch_max(limiter.in_flight(), Ordering::Relaxed);
                            drop(guard);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(peak.load(Ordering::Relaxed) <= 3);
        assert_eq!(limiter.in_flight(), 0);
        assert!(ConcurrencyLimiter::build(&limit(0), None).is_err());
    }
}
