//! GCRA, the generic cell rate algorithm: a token bucket held as a single
//! number per key, the theoretical arrival time (TAT).
//!
//! With `rate` requests per `period` the emission interval is
//! `T = period / rate`. A key's *debt* is how far its TAT lies ahead of now
//! (`max(0, tat − now)`): every admitted request adds `T`, and time pays it
//! back. A request is admitted when, after adding its `T`, the debt is at
//! most `burst × T` (plus `max_wait` in delay mode). So `burst` requests pass
//! at once, then one every `T`; over any interval `d`, at most
//! `burst + d / T` requests pass, which is exactly the configured rate.
//!
//! Everything here is integer nanoseconds and pure: the stores decide where
//! the TAT lives (a local map, or Redis running the same arithmetic in Lua)
//! and which clock says "now".

use std::time::Duration;

use super::config::Rate;

/// The largest debt a key may hold: 2^53 ns, so that Lua's doubles stay exact.
const MAX_DEBT: u64 = 1 << 53;

/// The compiled arithmetic of one policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// `T`: nanoseconds between requests at the sustained rate.
    emission: u64,
    burst: u32,
    /// `burst × T`: the debt a full burst leaves.
    burst_offset: u64,
    /// Extra debt accepted in delay mode; the request then waits it out.
    max_delay: u64,
}

/// What a policy said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The request may proceed (after `delay`).
    pub allowed: bool,
    /// Bucket capacity: the most requests that may pass at once (the burst).
    pub limit: u32,
    /// Requests that could pass right now, after this one.
    pub remaining: u32,
    /// Until the bucket is full again (the key then holds no state).
    pub reset_after: Duration,
    /// Until another request would be admitted without waiting; zero while
    /// `remaining > 0`. For a refused request: when to retry.
    pub retry_after: Duration,
    /// Delay mode: how long this admitted request must wait before it proceeds.
    pub delay: Duration,
}

/// The result of taking units from a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    /// Units granted: 0 (refused) up to the number asked for.
    pub granted: u32,
    /// The debt to store (unchanged when nothing was granted).
    pub debt: u64,
    pub decision: Decision,
}

impl Take {
    /// The TAT to store for a take made at `now`.
    pub fn tat(&self, now: u64) -> u64 {
        now.saturating_add(self.debt)
    }
}

impl Gcra {
    /// `max_delay` is zero for reject mode.
    pub fn new(rate: Rate, burst: u32, max_delay: Duration) -> Result<Self, String> {
        let period = u64::try_from(rate.period.as_nanos()).map_err(|_| "period too long")?;
        let emission = period / rate.count.max(1);
        if emission == 0 {
            return Err(format!(
                "{rate} is too fast: at most one request per nanosecond"
            ));
        }
        if burst == 0 {
            return Err("burst must be at least 1".to_string());
        }
        let max_delay = u64::try_from(max_delay.as_nanos()).map_err(|_| "max_wait too long")?;
        let burst_offset = emission
            .checked_mul(u64::from(burst))
            .filter(|offset| {
                // The largest debt ever held, with room for one more T, must
                // stay exact in the doubles of the Redis script (about 104 days).
                offset
                    .checked_add(max_delay)
                    .and_then(|d| d.checked_add(emission.saturating_mul(2)))
                    .is_some_and(|d| d <= MAX_DEBT)
            })
            .ok_or_else(|| {
                format!("burst {burst} at {rate} spans more than 100 days: lower the burst")
            })?;
        Ok(Self {
            emission,
            burst,
            burst_offset,
            max_delay,
        })
    }

    /// `T` in nanoseconds.
    pub fn emission_nanos(&self) -> u64 {
        self.emission
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// `burst × T` in nanoseconds.
    pub fn burst_offset_nanos(&self) -> u64 {
        self.burst_offset
    }

    pub fn max_delay_nanos(&self) -> u64 {
        self.max_delay
    }

    /// Takes one unit for a key whose stored TAT is `tat` (0 or any past
    /// value means a fresh key), at `now`.
    pub fn check(&self, tat: u64, now: u64) -> Take {
        self.take(tat.saturating_sub(now), 1)
    }

    /// Takes as many of `want` units as fit, given the key's current debt.
    /// Hybrid mode asks for a batch; everything else asks for one.
    pub fn take(&self, debt: u64, want: u32) -> Take {
        let room = (self.burst_offset + self.max_delay).saturating_sub(debt);
        let fits = room / self.emission;
        let granted = u32::try_from(fits.min(u64::from(want))).unwrap_or(want);
        self.outcome(debt, granted)
    }

    /// The decision once `granted` units were taken from a key holding
    /// `debt`; the Redis store gets both numbers from its script.
    pub fn outcome(&self, debt: u64, granted: u32) -> Take {
        let t = self.emission;
        if granted == 0 {
            // room < T, so this is positive: the moment one unit fits.
            let retry = (debt + t).saturating_sub(self.burst_offset + self.max_delay);
            return Take {
                granted,
                debt,
                decision: Decision {
                    allowed: false,
                    limit: self.burst,
                    remaining: 0,
                    reset_after: nanos(debt),
                    retry_after: nanos(retry.max(1)),
                    delay: Duration::ZERO,
                },
            };
        }
        let debt = debt.saturating_add(u64::from(granted).saturating_mul(t));
        let remaining = self.burst_offset.saturating_sub(debt) / t;
        Take {
            granted,
            debt,
            decision: Decision {
                allowed: true,
                limit: self.burst,
                remaining: u32::try_from(remaining).unwrap_or(self.burst),
                reset_after: nanos(debt),
                retry_after: nanos((debt + t).saturating_sub(self.burst_offset)),
                delay: nanos(debt.saturating_sub(self.burst_offset)),
            },
        }
    }
}

fn nanos(n: u64) -> Duration {
    Duration::from_nanos(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::config::parse_rate;

    const SEC: u64 = 1_000_000_000;
    const MS: u64 = 1_000_000;

    fn gcra(rate: &str, burst: u32) -> Gcra {
        Gcra::new(parse_rate(rate).unwrap(), burst, Duration::ZERO).unwrap()
    }

    /// Runs requests at the given instants against one key; returns the decisions.
    fn run(g: &Gcra, instants: impl IntoIterator<Item = u64>) -> Vec<Decision> {
        let mut tat = 0;
        instants
            .into_iter()
            .map(|now| {
                let take = g.check(tat, now);
                if take.granted > 0 {
                    tat = take.tat(now);
                }
                take.decision
            })
            .collect()
    }

    fn allowed(decisions: &[Decision]) -> usize {
        decisions.iter().filter(|d| d.allowed).count()
    }

    #[test]
    fn exactly_burst_requests_pass_at_once() {
        for (rate, burst) in [
            ("10/s", 10),
            ("10/s", 1),
            ("600/min", 25),
            ("5000/h", 3),
            ("3/s", 7),
        ] {
            let g = gcra(rate, burst);
            let decisions = run(&g, std::iter::repeat_n(5 * SEC, 100));
            assert_eq!(allowed(&decisions), burst as usize, "{rate} burst {burst}");
            assert!(decisions[..burst as usize].iter().all(|d| d.allowed));
        }
    }

    #[test]
    fn after_the_burst_one_request_per_emission_interval() {
        let g = gcra("10/s", 5); // T = 100ms
        let mut instants = vec![0; 5];
        // 1ms before each new slot, then exactly at it.
        for k in 1..=10 {
            instants.push(k * 100 * MS - MS);
            instants.push(k * 100 * MS);
        }
        let decisions = run(&g, instants);
        for k in 0..10 {
            assert!(!decisions[5 + 2 * k].allowed, "1ms early at slot {k}");
            assert!(decisions[5 + 2 * k + 1].allowed, "on time at slot {k}");
        }
    }

    #[test]
    fn sustained_traffic_gets_burst_plus_rate_times_time() {
        // One request per ms for 10s at 10/s with burst 5: 5 + 100 pass.
        let g = gcra("10/s", 5);
        let decisions = run(&g, (0..10_000).map(|ms| ms * MS));
        assert_eq!(allowed(&decisions), 5 + 100 - 1); // the 100th slot is at exactly 10s
        let g = gcra("600/min", 10);
        let decisions = run(&g, (0..60_000).map(|ms| ms * MS));
        assert_eq!(allowed(&decisions), 10 + 600 - 1);
    }

    #[test]
    fn remaining_counts_down_and_reset_grows() {
        let g = gcra("10/s", 4);
        let decisions = run(&g, [0, 0, 0, 0, 0]);
        let remaining: Vec<u32> = decisions.iter().map(|d| d.remaining).collect();
        assert_eq!(remaining, [3, 2, 1, 0, 0]);
        let reset: Vec<Duration> = decisions.iter().map(|d| d.reset_after).collect();
        let ms = Duration::from_millis;
        assert_eq!(reset, [ms(100), ms(200), ms(300), ms(400), ms(400)]);
        assert!(decisions.iter().all(|d| d.limit == 4));
        assert_eq!(decisions[0].retry_after, Duration::ZERO);
        // The last allowed one used the bucket up: the next unit is T away.
        assert_eq!(decisions[3].retry_after, ms(100));
    }

    #[test]
    fn retry_after_is_exactly_when_the_next_request_passes() {
        let g = gcra("2/s", 2); // T = 500ms
        let decisions = run(&g, [0, 0, 0, 120 * MS]);
        assert_eq!(decisions[2].retry_after, Duration::from_millis(500));
        assert_eq!(decisions[3].retry_after, Duration::from_millis(380));
        // Retrying exactly then succeeds; a nanosecond earlier does not.
        let mut tat = 0;
        for now in [0, 0] {
            tat = g.check(tat, now).tat(now);
        }
        assert!(!g.check(tat, 500 * MS - 1).decision.allowed);
        assert!(g.check(tat, 500 * MS).decision.allowed);
    }

    #[test]
    fn an_idle_key_is_fresh_again() {
        let g = gcra("1/s", 3);
        let mut tat = 0;
        for _ in 0..3 {
            tat = g.check(tat, 0).tat(0);
        }
        assert!(!g.check(tat, 0).decision.allowed);
        // After burst × T the key holds nothing: a full burst passes again.
        assert_eq!(tat, 3 * SEC);
        let decisions = run(&g, std::iter::repeat_n(3 * SEC, 5));
        assert_eq!(allowed(&decisions), 3);
        let later = g.check(tat, 100 * SEC);
        assert_eq!(later.decision.remaining, 2);
    }

    #[test]
    fn delay_mode_admits_up_to_max_wait_and_spaces_requests() {
        // 10/s, burst 2, wait up to 300ms: 2 at once, then 3 delayed by
        // 100, 200 and 300ms, then refused.
        let g = Gcra::new(parse_rate("10/s").unwrap(), 2, Duration::from_millis(300)).unwrap();
        let decisions = run(&g, std::iter::repeat_n(0, 7));
        let delays: Vec<u64> = decisions
            .iter()
            .map(|d| d.delay.as_millis() as u64)
            .collect();
        assert_eq!(delays, [0, 0, 100, 200, 300, 0, 0]);
        assert_eq!(allowed(&decisions), 5);
        assert!(!decisions[5].allowed);
        // The refused one could be admitted (with the full wait) 100ms later.
        assert_eq!(decisions[5].retry_after, Duration::from_millis(100));
    }

    #[test]
    fn batches_take_what_fits() {
        let g = gcra("10/s", 10);
        let first = g.take(0, 4);
        assert_eq!((first.granted, first.decision.remaining), (4, 6));
        let second = g.take(first.debt, 8);
        assert_eq!((second.granted, second.decision.remaining), (6, 0));
        let third = g.take(second.debt, 8);
        assert_eq!(third.granted, 0);
        assert_eq!(third.decision.retry_after, Duration::from_millis(100));
    }

    #[test]
    fn fractional_emission_intervals_stay_exact_over_a_period() {
        // 3/s: T = 333_333_333ns. With burst 2 a saturated key never lets
        // time go unused: 2 at once, then slot k at k × T, for k × T < 60s.
        let g = gcra("3/s", 2);
        let decisions = run(&g, (0..60_000).map(|ms| ms * MS));
        assert_eq!(allowed(&decisions), 2 + 179);
        // With burst 1 each slot starts at the first request after it frees
        // (every 334ms here), so a little time is lost per slot.
        let g = gcra("3/s", 1);
        let decisions = run(&g, (0..60_000).map(|ms| ms * MS));
        assert_eq!(allowed(&decisions), 180);
    }

    #[test]
    fn impossible_parameters_are_refused() {
        let rate = parse_rate("1/d").unwrap();
        assert!(Gcra::new(rate, 0, Duration::ZERO).is_err());
        assert!(Gcra::new(rate, u32::MAX, Duration::ZERO).is_err());
        assert!(Gcra::new(rate, 50, Duration::ZERO).is_ok());
        assert!(Gcra::new(rate, 1000, Duration::ZERO).is_err());
    }
}
