//! Load balancing end to end over real upstreams: round robin, weights,
//! least request and consistent hashing.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::upstream::{Upstream, full};
use support::{GatewayProcess, client, free_addr};
use tokio::sync::Semaphore;

/// A gateway whose only route sends everything to service `pool`, written
/// as the YAML body given.
fn gateway(pool: &str) -> (GatewayProcess, SocketAddr) {
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: pool
services:
  pool:
{pool}
"#
    );
    (GatewayProcess::start(&yaml, &[listen]), listen)
}

/// Sends `total` GETs from `workers` concurrent tasks and counts which
/// upstream (by its `x-upstream` header) answered each.
async fn tally(listen: SocketAddr, total: usize, workers: usize) -> HashMap<String, usize> {
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let c = c.clone();
        tasks.spawn(async move {
            let mut names = Vec::new();
            for _ in 0..total / workers {
                let response = c.get(format!("http://{listen}/x")).send().await.unwrap();
                assert_eq!(response.status(), 200);
                names.push(
                    response.headers()["x-upstream"]
                        .to_str()
                        .unwrap()
                        .to_string(),
                );
            }
            names
        });
    }
    let mut counts = HashMap::new();
    while let Some(names) = tasks.join_next().await {
        for name in names.unwrap() {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test]
async fn round_robin_spreads_exactly_evenly() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let c = Upstream::echo("c").await;
    let (_gw, listen) = gateway(&format!(
        "    targets: [\"{}\", \"{}\", \"{}\"]",
        a.addr, b.addr, c.addr
    ));
    let counts = tally(listen, 300, 10).await;
    let expected: HashMap<String, usize> = [("a", 100), ("b", 100), ("c", 100)]
        .map(|(n, c)| (n.to_string(), c))
        .into();
    assert_eq!(counts, expected);
}

#[tokio::test]
async fn weighted_round_robin_follows_the_weights() {
    let heavy = Upstream::echo("heavy").await;
    let light = Upstream::echo("light").await;
    let (_gw, listen) = gateway(&format!(
        "    targets:\n      - {{ address: \"{}\", weight: 3 }}\n      - {{ address: \"{}\", weight: 1 }}",
        heavy.addr, light.addr
    ));
    let counts = tally(listen, 400, 8).await;
    assert_eq!(counts["heavy"], 300, "{counts:?}");
    assert_eq!(counts["light"], 100, "{counts:?}");

    // The order is smooth: one at a time, light never waits more than three.
    let c = client();
    let mut run = 0;
    for _ in 0..40 {
        let response = c.get(format!("http://{listen}/x")).send().await.unwrap();
        if response.headers()["x-upstream"] == "heavy" {
            run += 1;
            assert!(run <= 3, "heavy answered {run} times in a row");
        } else {
            run = 0;
        }
    }
}

#[tokio::test]
async fn least_request_avoids_the_busy_target() {
    // `slow` holds every request until the gate opens; `fast` answers at once.
    let gate = Arc::new(Semaphore::new(0));
    let held = Arc::new(AtomicUsize::new(0));
    let slow = {
        let (gate, held) = (gate.clone(), held.clone());
        Upstream::start(move |_req| {
            let (gate, held) = (gate.clone(), held.clone());
            async move {
                held.fetch_add(1, Ordering::SeqCst);
                let _permit = gate.acquire().await.unwrap();
                hyper::Response::builder()
                    .header("x-upstream", "slow")
                    .body(full("slow"))
                    .unwrap()
            }
        })
        .await
    };
    let fast = Upstream::echo("fast").await;
    let (_gw, listen) = gateway(&format!(
        "    load_balancing: least_request\n    targets: [\"{}\", \"{}\"]",
        slow.addr, fast.addr
    ));
    let c = client();

    // Both idle: ties rotate, so sequential requests soon put one on `slow`,
    // where it stays in flight. Requests answered by `fast` in the meantime
    // complete and leave it idle again.
    let mut parked = Vec::new();
    for _ in 0..10 {
        let c = c.clone();
        parked.push(tokio::spawn(async move {
            let response = c.get(format!("http://{listen}/park")).send().await.unwrap();
            response.headers()["x-upstream"]
                .to_str()
                .unwrap()
                .to_string()
        }));
        // Wait until this request is either held by `slow` or answered by `fast`.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while held.load(Ordering::SeqCst) == 0 && !parked.last().unwrap().is_finished() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "request went nowhere"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if held.load(Ordering::SeqCst) == 1 {
            break;
        }
    }
    assert_eq!(held.load(Ordering::SeqCst), 1, "no request reached `slow`");

    // `slow` has one request in flight, `fast` none: every request now goes
    // to `fast`, however many we send.
    for i in 0..50 {
        let response = c.get(format!("http://{listen}/x")).send().await.unwrap();
        assert_eq!(response.headers()["x-upstream"], "fast", "request {i}");
    }
    assert_eq!(held.load(Ordering::SeqCst), 1);

    gate.add_permits(1000);
    let mut answered_by_slow = 0;
    for task in parked {
        if task.await.unwrap() == "slow" {
            answered_by_slow += 1;
        }
    }
    assert_eq!(answered_by_slow, 1);
}

#[tokio::test]
async fn consistent_hash_keeps_a_key_on_one_target_and_spreads_keys() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let c = Upstream::echo("c").await;
    let (_gw, listen) = gateway(&format!(
        "    load_balancing: {{ consistent_hash: {{ header: x-user }} }}\n    targets: [\"{}\", \"{}\", \"{}\"]",
        a.addr, b.addr, c.addr
    ));
    let http = client();
    let send = |user: Option<String>| {
        let http = http.clone();
        async move {
            let mut request = http.get(format!("http://{listen}/x"));
            if let Some(user) = user {
                request = request.header("x-user", user);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.headers()["x-upstream"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    let mut owner: HashMap<String, String> = HashMap::new();
    // Three rounds over 100 keys: a key always lands where it first did.
    for round in 0..3 {
        for i in 0..100 {
            let user = format!("user-{i}");
            let got = send(Some(user.clone())).await;
            let first = owner.entry(user.clone()).or_insert_with(|| got.clone());
            assert_eq!(*first, got, "{user} moved in round {round}");
        }
    }
    let mut per_target: HashMap<&str, usize> = HashMap::new();
    for target in owner.values() {
        *per_target.entry(target.as_str()).or_insert(0) += 1;
    }
    assert_eq!(per_target.len(), 3, "{per_target:?}");
    assert!(per_target.values().all(|&n| n >= 15), "{per_target:?}");

    // Without the header the client IP is the key: one target for all.
    let first = send(None).await;
    for _ in 0..20 {
        assert_eq!(send(None).await, first);
    }
}
