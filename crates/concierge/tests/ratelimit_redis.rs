//! The cluster rate-limit store against a real Redis: each test starts its
//! own `redis-server` on a spare loopback port, so it can stop, pause and
//! restart it. `scripts/test.sh` installs the Debian package when missing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concierge::ratelimit::{
    Limiter, Outcome, RateLimitPolicy, RateLimitSettings, RequestKeys, Source, StoreFailure, Stores,
};
use http::HeaderMap;
use redis_server::RedisServer;

#[path = "support/redis.rs"]
mod redis_server;

fn settings(server: &RedisServer) -> RateLimitSettings {
    let mut settings = RateLimitSettings::default();
    settings.redis.url = Some(server.url());
    settings.redis.key_prefix = "test:".into();
    settings
}

/// A gateway instance's view: its own stores (own Redis connection, own
/// local buckets), connected.
async fn instance(settings: &RateLimitSettings, yaml: &str) -> (Stores, Arc<Limiter>) {
    let stores = Stores::build(settings, true, None).expect("stores");
    let redis = stores.redis.as_ref().expect("a redis store");
    assert!(
        redis.wait_connected(Duration::from_secs(5)).await,
        "not connected"
    );
    let policy: RateLimitPolicy = serde_saphyr::from_str(yaml).expect("policy");
    let limiter = Limiter::build(&policy, &stores).expect("limiter");
    (stores, Arc::new(limiter))
}

fn request<'a>(headers: &'a HeaderMap, ip: &str) -> RequestKeys<'a> {
    RequestKeys {
        user: None,
        consumer: None,
        ip: ip.parse::<IpAddr>().expect("ip"),
        headers,
        route: "r",
        service: "payment",
    }
}

async fn check(limiter: &Limiter, ip: &str) -> Outcome {
    let headers = HeaderMap::new();
    limiter.check(&request(&headers, ip)).await
}

fn allowed(outcomes: &[Outcome]) -> usize {
    outcomes.iter().filter(|o| !o.is_limited()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_allow_count_remaining_and_retry_after() {
    let redis = RedisServer::start();
    let (_stores, limiter) = instance(
        &settings(&redis),
        "{name: exact, rate: 10/min, burst: 5, key: ip, scope: cluster}",
    )
    .await;
    let mut outcomes = Vec::new();
    for _ in 0..12 {
        outcomes.push(check(&limiter, "192.0.2.1").await);
    }
    assert_eq!(allowed(&outcomes), 5);
    let remaining: Vec<u32> = outcomes[..5]
        .iter()
        .map(|o| o.decision().remaining)
        .collect();
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    assert!(outcomes[..6].iter().all(|o| o.source() == Source::Redis));
    // The 6th asked Redis; the rest were refused from the cached refusal.
    assert!(outcomes[6..].iter().all(|o| o.source() == Source::Cached));
    // One token every 6s: the next one is 6s after the burst.
    for refused in &outcomes[5..] {
        let retry = refused.decision().retry_after;
        assert!(
            retry > Duration::from_millis(5_500) && retry <= Duration::from_secs(6),
            "{retry:?}"
        );
    }
    // Another client has its own bucket.
    assert!(!check(&limiter, "192.0.2.2").await.is_limited());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_script_is_loaded_again_without_a_fallback() {
    let redis = RedisServer::start();
    let (stores, limiter) = instance(
        &settings(&redis),
        "{name: flushed, rate: 10/min, burst: 6, key: ip, scope: cluster}",
    )
    .await;
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        outcomes.push(check(&limiter, "192.0.2.9").await);
    }
    // Redis forgets every script (as after a restart without persistence).
    let flushed = redis.command("SCRIPT FLUSH");
    assert!(
        flushed.as_deref().is_some_and(|r| r.starts_with("+OK")),
        "{flushed:?}"
    );
    for _ in 0..5 {
        outcomes.push(check(&limiter, "192.0.2.9").await);
    }
    assert_eq!(allowed(&outcomes), 6, "the bucket carried over the flush");
    assert!(
        outcomes[..7].iter().all(|o| o.source() == Source::Redis),
        "{:?}",
        outcomes.iter().map(Outcome::source).collect::<Vec<_>>()
    );
    let stats = stores.redis.as_ref().expect("redis").stats();
    assert_eq!(stats.errors + stats.timeouts, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decisions_are_atomic() {
    let redis = RedisServer::start();
    let mut settings = settings(&redis);
    // This test is about atomicity: give a busy machine time to answer all.
    settings.redis.timeout.0 = Duration::from_secs(2);
    let yaml = "{name: atomic, rate: 1/min, burst: 50, key: service, scope: cluster}";
    // Four instances (four connections), 50 concurrent requests each.
    let mut instances = Vec::new();
    for _ in 0..4 {
        instances.push(instance(&settings, yaml).await);
    }
    let mut tasks = Vec::new();
    for (_, limiter) in &instances {
        for _ in 0..50 {
            let limiter = limiter.clone();
            tasks.push(tokio::spawn(
                async move { check(&limiter, "192.0.2.1").await },
            ));
        }
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    assert_eq!(outcomes.len(), 200);
    assert_eq!(allowed(&outcomes), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_carry_a_ttl_and_vanish_when_idle() {
    let redis = RedisServer::start();
    let (_stores, limiter) = instance(
        &settings(&redis),
        "{name: ttl, rate: 10/s, burst: 5, key: ip, scope: cluster}",
    )
    .await;
    for _ in 0..3 {
        assert!(!check(&limiter, "192.0.2.7").await.is_limited());
    }
    let headers = HeaderMap::new();
    let key = limiter
        .redis_key(&limiter.key(&request(&headers, "192.0.2.7")))
        .expect("a cluster key");
    assert!(
        key.starts_with("test:ttl:") && key.ends_with(":ip:192.0.2.7"),
        "{key}"
    );
    // Three requests owe 300ms: the key lives that long, plus a millisecond.
    let pttl = redis.command(&format!("PTTL {key}")).expect("PTTL");
    let pttl: i64 = pttl
        .trim_start_matches(':')
        .trim()
        .parse()
        .expect("integer");
    assert!(pttl > 0 && pttl <= 302, "PTTL {pttl}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let exists = redis.command(&format!("EXISTS {key}")).expect("EXISTS");
    assert_eq!(exists.trim(), ":0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_each_failure_mode_behaves_as_configured() {
    let mut redis = RedisServer::start();
    let settings = settings(&redis);
    let stores = Stores::build(&settings, true, None).expect("stores");
    let connected = stores.redis.as_ref().expect("redis store");
    assert!(connected.wait_connected(Duration::from_secs(5)).await);
    let build = |mode: &str| {
        let yaml = format!(
            "{{name: {mode}, rate: 1/min, burst: 3, key: ip, scope: cluster, on_store_failure: {mode}}}"
        );
        let policy: RateLimitPolicy = serde_saphyr::from_str(&yaml).expect("policy");
        Limiter::build(&policy, &stores).expect("limiter")
    };
    let (local, allow, deny) = (build("local"), build("allow"), build("deny"));
    for limiter in [&local, &allow, &deny] {
        assert_eq!(check(limiter, "192.0.2.1").await.source(), Source::Redis);
    }

    redis.stop();
    let timeout = settings.redis.timeout.0;
    let mut slowest = Duration::ZERO;
    let mut results = Vec::new();
    for limiter in [&local, &allow, &deny] {
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            let started = Instant::now();
            outcomes.push(check(limiter, "192.0.2.50").await);
            slowest = slowest.max(started.elapsed());
        }
        results.push(outcomes);
    }
    // Never longer than the per-call timeout (plus scheduling slack).
    assert!(
        slowest < timeout + Duration::from_millis(100),
        "slowest {slowest:?}"
    );

    let [local_out, allow_out, deny_out] = &results[..] else {
        unreachable!()
    };
    // local: the in-process limiter, with the policy's burst of 3.
    assert_eq!(allowed(local_out), 3);
    assert!(
        local_out
            .iter()
            .all(|o| o.source() == Source::Fallback(StoreFailure::Local))
    );
    // allow: everything passes; deny: nothing does.
    assert_eq!(allowed(allow_out), 6);
    assert!(
        allow_out
            .iter()
            .all(|o| o.source() == Source::Fallback(StoreFailure::Allow))
    );
    assert_eq!(allowed(deny_out), 0);
    assert!(
        deny_out
            .iter()
            .all(|o| o.source() == Source::Fallback(StoreFailure::Deny))
    );

    let stats = stores.redis.as_ref().expect("redis store").stats();
    assert_eq!(
        (
            stats.fallback_local,
            stats.fallback_allow,
            stats.fallback_deny
        ),
        (6, 6, 6)
    );
    assert!(stats.errors + stats.timeouts >= 3, "{stats:?}");
    assert!(stats.breaker_trips >= 1 && !stats.healthy, "{stats:?}");
    assert!(
        stats.short_circuited > 0,
        "an open breaker skips Redis: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_at_most_the_timeout() {
    let redis = RedisServer::start();
    let settings = settings(&redis);
    let (stores, limiter) = instance(
        &settings,
        "{name: frozen, rate: 1/min, burst: 2, key: ip, scope: cluster, on_store_failure: deny}",
    )
    .await;
    assert_eq!(check(&limiter, "192.0.2.1").await.source(), Source::Redis);
    redis.pause();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let outcome = check(&limiter, "192.0.2.1").await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(outcome.source(), Source::Fallback(StoreFailure::Deny));
    }
    redis.resume();
    let stats = stores.redis.as_ref().expect("redis store").stats();
    assert!(stats.timeouts >= 3, "{stats:?}");
    assert!(
        slowest < settings.redis.timeout.0 + Duration::from_millis(100),
        "{slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_recovers_when_redis_returns() {
    let mut redis = RedisServer::start();
    let (stores, limiter) = instance(
        &settings(&redis),
        "{name: recover, rate: 100/s, key: ip, scope: cluster}",
    )
    .await;
    assert_eq!(check(&limiter, "192.0.2.1").await.source(), Source::Redis);
    redis.stop();
    for _ in 0..5 {
        let outcome = check(&limiter, "192.0.2.1").await;
        assert_eq!(outcome.source(), Source::Fallback(StoreFailure::Local));
    }
    let store = stores.redis.as_ref().expect("redis store");
    assert!(!store.is_healthy());

    // Same port, a brand-new (empty) Redis: no script loaded, no keys.
    redis.launch();
    let started = Instant::now();
    loop {
        let outcome = check(&limiter, "192.0.2.1").await;
        if outcome.source() == Source::Redis {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no recovery after 10s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(store.is_healthy());
    eprintln!("recovered {:?} after Redis came back", started.elapsed());
}

/// Three instances hammer one shared limit; returns (allowed, expected, elapsed, redis calls).
async fn shared_limit_run(yaml: &str, run_for: Duration) -> (usize, f64, Duration, u64) {
    let redis = RedisServer::start();
    let mut settings = settings(&redis);
    // Accuracy of the shared bucket is measured here, not timeouts: a
    // machine busy with other tests must not push decisions to fallback.
    settings.redis.timeout.0 = Duration::from_millis(500);
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(instance(&settings, yaml).await);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (_, limiter) in &instances {
        let limiter = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            let mut allowed = 0usize;
            let mut last = Instant::now();
            while started.elapsed() < run_for {
                tick.tick().await;
                last = Instant::now();
                if !check(&limiter, "192.0.2.1").await.is_limited() {
                    allowed += 1;
                }
            }
            (allowed, last)
        }));
    }
    let mut total = 0;
    let mut end = started;
    for task in tasks {
        let (allowed, last) = task.await.expect("task");
        total += allowed;
        end = end.max(last);
    }
    let elapsed = end - started;
    let stats: Vec<_> = instances
        .iter()
        .filter_map(|(stores, _)| stores.redis.as_ref().map(|r| r.stats()))
        .collect();
    let calls = stats.iter().map(|s| s.calls).sum();
    let fallbacks: u64 = stats.iter().map(|s| s.fallback_local).sum();
    assert_eq!(fallbacks, 0, "every decision came from Redis: {stats:?}");
    // GCRA: the burst at once, then one per T over the run.
    let expected = 10.0 + 100.0 * elapsed.as_secs_f64();
    (total, expected, elapsed, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_limit_within_two_percent() {
    let (allowed, expected, elapsed, calls) = shared_limit_run(
        "{name: shared, rate: 100/s, burst: 10, key: service, scope: cluster}",
        Duration::from_secs(3),
    )
    .await;
    let error = (allowed as f64 - expected) / expected;
    eprintln!(
        "3 instances, 100/s, {elapsed:?}: allowed {allowed}, expected {expected:.1} \
         ({:+.2}%), {calls} redis calls",
        error * 100.0
    );
    assert!(
        error.abs() <= 0.02,
        "allowed {allowed}, expected {expected:.1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_mode_stays_within_its_overshoot_bound() {
    let (allowed, expected, elapsed, calls) = shared_limit_run(
        "{name: hybrid, rate: 100/s, burst: 10, key: service, scope: cluster, hybrid: {batch: 5}}",
        Duration::from_secs(3),
    )
    .await;
    // At most instances × (batch − 1) over; never more than 2% under.
    let bound = expected + 3.0 * 4.0;
    eprintln!(
        "hybrid, 3 instances, {elapsed:?}: allowed {allowed}, expected {expected:.1}, \
         bound {bound:.1}, {calls} redis calls"
    );
    assert!(
        allowed as f64 <= bound + 1.0,
        "allowed {allowed} > bound {bound:.1}"
    );
    assert!(
        allowed as f64 >= expected * 0.98,
        "allowed {allowed}, expected {expected:.1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_mode_takes_batches_when_tokens_are_plenty() {
    let redis = RedisServer::start();
    let (stores, limiter) = instance(
        &settings(&redis),
        "{name: plenty, rate: 100000/s, burst: 1000, key: service, scope: cluster, hybrid: {batch: 10}}",
    ).await;
    for _ in 0..1000 {
        assert!(!check(&limiter, "192.0.2.1").await.is_limited());
    }
    let calls = stores.redis.as_ref().expect("redis store").stats().calls;
    assert_eq!(calls, 100, "one round trip per batch of 10");
}
