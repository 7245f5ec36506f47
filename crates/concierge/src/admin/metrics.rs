//! `GET /metrics`: Prometheus text exposition, read from the running
//! snapshot at scrape time so the request path only bumps atomics it
//! already keeps.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::snapshot::Snapshot;

struct SnapshotCollector(Arc<Snapshot>);

impl std::fmt::Debug for SnapshotCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SnapshotCollector(generation {})", self.0.generation)
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> std::fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let snapshot = &self.0;
        gauge(
            &mut encoder,
            "concierge_config_generation",
            "Generation of the running configuration (1 at start, +1 per reload).",
            i64::try_from(snapshot.generation).unwrap_or(i64::MAX),
        )?;

        let mut in_flight = encoder.encode_descriptor(
            "concierge_upstream_in_flight",
            "Requests in flight per upstream target.",
            None,
            MetricType::Gauge,
        )?;
        let mut pools: Vec<_> = snapshot.pools.values().collect();
        pools.sort_by(|a, b| a.name.cmp(&b.name));
        for pool in &pools {
            for (target, load) in pool.targets.iter().zip(&pool.load) {
                let labels = vec![
                    ("service", pool.name.clone()),
                    ("target", target.to_string()),
                ];
                let value =
                    i64::try_from(load.in_flight.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(in_flight.encode_family(&labels)?)?;
            }
        }

        let mut services: Vec<_> = snapshot.concurrency.iter().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        let mut shed = encoder.encode_descriptor(
            "concierge_concurrency_shed",
            "Requests answered 503 because the service was at max_in_flight.",
            None,
            MetricType::Counter,
        )?;
        for (service, limiter) in &services {
            let labels = vec![("service", (*service).clone())];
            ConstCounter::new(limiter.shed()).encode(shed.encode_family(&labels)?)?;
        }

        let totals = snapshot.stores.stats.totals();
        let mut limited = encoder.encode_descriptor(
            "concierge_ratelimit_limited",
            "Requests refused 429 by a rate-limit policy.",
            None,
            MetricType::Counter,
        )?;
        for (policy, count, _) in &totals {
            let labels = vec![("policy", policy.to_string())];
            ConstCounter::new(*count).encode(limited.encode_family(&labels)?)?;
        }
        let mut delayed = encoder.encode_descriptor(
            "concierge_ratelimit_delayed",
            "Requests a delay-mode policy held before forwarding.",
            None,
            MetricType::Counter,
        )?;
        for (policy, _, count) in &totals {
            let labels = vec![("policy", policy.to_string())];
            ConstCounter::new(*count).encode(delayed.encode_family(&labels)?)?;
        }

        if let Some(redis) = &snapshot.stores.redis {
            let s = redis.stats();
            counter(
                &mut encoder,
                "concierge_ratelimit_redis_calls",
                "Rate-limit script calls sent to Redis.",
                s.calls,
            )?;
            counter(
                &mut encoder,
                "concierge_ratelimit_redis_errors",
                "Rate-limit calls that failed.",
                s.errors,
            )?;
            counter(
                &mut encoder,
                "concierge_ratelimit_redis_timeouts",
                "Rate-limit calls slower than the timeout.",
                s.timeouts,
            )?;
            counter(
                &mut encoder,
                "concierge_ratelimit_redis_breaker_trips",
                "Times the Redis circuit breaker opened.",
                s.breaker_trips,
            )?;
            gauge(
                &mut encoder,
                "concierge_ratelimit_redis_healthy",
                "1 while Redis answers, 0 while the breaker is open.",
                i64::from(s.healthy),
            )?;
            let mut fallbacks = encoder.encode_descriptor(
                "concierge_ratelimit_fallback",
                "Decisions made by on_store_failure because Redis failed.",
                None,
                MetricType::Counter,
            )?;
            for (mode, value) in [
                ("local", s.fallback_local),
                ("allow", s.fallback_allow),
                ("deny", s.fallback_deny),
            ] {
                let labels = vec![("mode", mode.to_string())];
                ConstCounter::new(value).encode(fallbacks.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The exposition text for the current snapshot.
pub fn render(snapshot: Arc<Snapshot>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}
