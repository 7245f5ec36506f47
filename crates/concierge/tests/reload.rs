//! Configuration reload: by file change, SIGHUP and `POST /reload`; under
//! load without a failed request; refused atomically when the new file is
//! wrong; listeners come and go; requests in flight finish on their snapshot.

mod support;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;
use support::upstream::{Upstream, full};
use support::{GatewayProcess, client, eventually, free_addr};
use tokio::sync::mpsc;

/// One frontend on `listen` sending everything to service `shop` at `target`.
fn config(admin: SocketAddr, listen: SocketAddr, target: SocketAddr, watch: bool) -> String {
    format!(
        r#"
server:
  watch_config: {watch}
admin:
  listen: {admin}
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: shop
services:
  shop: {{ targets: ["{target}"] }}
"#
    )
}

async fn admin_config(admin: SocketAddr) -> Value {
    let response = client()
        .get(format!("http://{admin}/config"))
        .send()
        .await
        .expect("GET /config");
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn post_reload(admin: SocketAddr) -> (u16, Value) {
    let response = client()
        .post(format!("http://{admin}/reload"))
        .send()
        .await
        .expect("POST /reload");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The name of the upstream that answered `GET /` on `listen`.
async fn served_by(listen: SocketAddr) -> String {
    let response = client()
        .get(format!("http://{listen}/"))
        .send()
        .await
        .expect("GET through the gateway");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["name"].as_str().unwrap().to_string()
}

fn shop_target(config: &Value) -> String {
    config["services"][0]["targets"][0]["address"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_reloads_under_load_without_a_failed_request() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let (admin, listen) = (free_addr(), free_addr());
    let gw = GatewayProcess::start(&config(admin, listen, a.addr, true), &[listen, admin]);

    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let c = client();
                let mut seen: HashMap<String, u64> = HashMap::new();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match c.get(format!("http://{listen}/load")).send().await {
                        Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                            Ok(body) => {
                                let name = body["name"].as_str().unwrap_or("?").to_string();
                                *seen.entry(name).or_default() += 1;
                            }
                            Err(e) => failures.push(format!("body: {e}")),
                        },
                        Ok(r) => failures.push(format!("status {}", r.status())),
                        Err(e) => failures.push(format!("request: {e:?}")),
                    }
                }
                (seen, failures)
            })
        })
        .collect();

    // Five saves, alternating the target; each must be picked up by the
    // file watcher before the next.
    for i in 1..=5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let target = if i % 2 == 1 { b.addr } else { a.addr };
        gw.rewrite_config(&config(admin, listen, target, true));
        let want = target.to_string();
        let applied = eventually(Duration::from_secs(10), async || {
            shop_target(&admin_config(admin).await) == want
        })
        .await;
        assert!(applied, "save {i} was not reloaded:\n{}", gw.log_text());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut failures = Vec::new();
    for worker in workers {
        let (s, f) = worker.await.unwrap();
        for (name, n) in s {
            *seen.entry(name).or_default() += n;
        }
        failures.extend(f);
    }
    let total: u64 = seen.values().sum();
    eprintln!("{total} requests during 5 reloads: {seen:?}");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        total as usize + failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(seen.get("a").copied().unwrap_or(0) > 0, "a never answered");
    assert!(seen.get("b").copied().unwrap_or(0) > 0, "b never answered");
    assert_eq!(seen.len(), 2, "only a and b answer: {seen:?}");
    assert!(total >= 100, "the load loop barely ran: {total}");
    let generation = admin_config(admin).await["generation"].as_u64().unwrap();
    assert!(generation >= 6, "five reloads, generation {generation}");
    assert_eq!(served_by(listen).await, "b");
}

#[tokio::test]
async fn sighup_reloads() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let (admin, listen) = (free_addr(), free_addr());
    // The watcher is off so that only the signal can cause the reload.
    let gw = GatewayProcess::start(&config(admin, listen, a.addr, false), &[listen, admin]);
    assert_eq!(served_by(listen).await, "a");

    gw.rewrite_config(&config(admin, listen, b.addr, false));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(served_by(listen).await, "a", "watch_config: false");

    gw.signal("HUP");
    let switched = eventually(Duration::from_secs(10), async || {
        served_by(listen).await == "b"
    })
    .await;
    assert!(switched, "SIGHUP did not reload:\n{}", gw.log_text());
    assert_eq!(admin_config(admin).await["generation"], 2);
    assert!(gw.log_text().contains("configuration reloaded"));
}

#[tokio::test]
async fn admin_reload_returns_the_new_generation() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let (admin, listen) = (free_addr(), free_addr());
    let gw = GatewayProcess::start(&config(admin, listen, a.addr, false), &[listen, admin]);
    let before = admin_config(admin).await;
    assert_eq!(before["generation"], 1);
    assert_eq!(shop_target(&before), a.addr.to_string());

    gw.rewrite_config(&config(admin, listen, b.addr, false));
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({"reloaded": true, "generation": 2}));
    // Published before the answer: the very next request sees it.
    assert_eq!(served_by(listen).await, "b");
    assert_eq!(shop_target(&admin_config(admin).await), b.addr.to_string());

    // Reloading an unchanged file still publishes a new generation.
    let (status, body) = post_reload(admin).await;
    assert_eq!((status, body["generation"].as_u64()), (200, Some(3)));
    assert_eq!(admin_config(admin).await["generation"], 3);
}

/// Asserts `errors` holds exactly one entry, `<file>:<line>:<column>: <message…>`.
fn assert_positioned(body: &Value, file: &std::path::Path, at: (u32, u32), message: &str) {
    let errors = body["errors"].as_array().expect("errors array");
    assert_eq!(errors.len(), 1, "{body}");
    let error = errors[0].as_str().unwrap();
    let prefix = format!("{}:{}:{}: ", file.display(), at.0, at.1);
    assert!(error.starts_with(&prefix), "`{error}` is not at `{prefix}`");
    assert!(error.contains(message), "`{error}` lacks `{message}`");
}

#[tokio::test]
async fn bad_reload_is_rejected_and_the_old_config_keeps_serving() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let (admin, listen) = (free_addr(), free_addr());
    let gw = GatewayProcess::start(&config(admin, listen, a.addr, false), &[listen, admin]);

    // A YAML syntax error: the flow mapping opened on line 6, column 3, is
    // never closed.
    let broken = format!(
        "server:\n  watch_config: false\nadmin:\n  listen: {admin}\nfrontends: [\n  {{ name: web, listen: \"{listen}\"\n"
    );
    gw.rewrite_config(&broken);
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reloaded"], false);
    assert_positioned(&body, &gw.config, (6, 3), "unclosed bracket");
    assert_eq!(served_by(listen).await, "a");
    assert_eq!(admin_config(admin).await["generation"], 1);

    // A route naming a service that does not exist (line 12, column 18).
    let missing = format!(
        r#"server:
  watch_config: false
admin:
  listen: {admin}
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: shop
      - match: {{ path_prefix: /new }}
        service: nowhere
services:
  shop: {{ targets: ["{}"] }}
"#,
        b.addr
    );
    gw.rewrite_config(&missing);
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reloaded"], false);
    assert_positioned(
        &body,
        &gw.config,
        (12, 18),
        "route names service `nowhere`, which does not exist (services: shop)",
    );
    // Nothing of the rejected file was applied, not even the valid parts.
    assert_eq!(served_by(listen).await, "a");
    assert_eq!(admin_config(admin).await["generation"], 1);

    let log = gw.log_text();
    assert!(
        log.contains("reload rejected") && log.contains("`nowhere`"),
        "the log does not mention the rejection:\n{log}"
    );

    // Once the file is fixed, the next reload goes through.
    gw.rewrite_config(&config(admin, listen, b.addr, false));
    let (status, body) = post_reload(admin).await;
    assert_eq!(
        (status, body["generation"].as_u64()),
        (200, Some(2)),
        "{body}"
    );
    assert_eq!(served_by(listen).await, "b");
}

#[tokio::test]
async fn bad_file_save_is_rejected_by_the_watcher() {
    let a = Upstream::echo("a").await;
    let (admin, listen) = (free_addr(), free_addr());
    let gw = GatewayProcess::start(&config(admin, listen, a.addr, true), &[listen, admin]);
    gw.rewrite_config(
        &config(admin, listen, a.addr, true).replace("service: shop", "service: gone"),
    );
    let logged = eventually(Duration::from_secs(10), async || {
        gw.log_text().contains("reload rejected")
    })
    .await;
    let log = gw.log_text();
    assert!(logged, "the watcher did not log the rejection:\n{log}");
    assert!(log.contains("`gone`"), "{log}");
    assert!(log.contains("file change"), "{log}");
    assert_eq!(served_by(listen).await, "a");
    assert_eq!(admin_config(admin).await["generation"], 1);
}

#[tokio::test]
async fn reload_adds_and_removes_listeners() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let (admin, listen, extra) = (free_addr(), free_addr(), free_addr());
    let gw = GatewayProcess::start(&config(admin, listen, a.addr, false), &[listen, admin]);
    assert!(
        TcpStream::connect(extra).is_err(),
        "{extra} is not ours yet"
    );

    let with_extra = |extra: SocketAddr| {
        format!(
            r#"
server:
  watch_config: false
admin:
  listen: {admin}
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: shop
  - name: partner
    listen: {extra}
    routes:
      - match: {{ path_prefix: / }}
        service: partner
services:
  shop: {{ targets: ["{}"] }}
  partner: {{ targets: ["{}"] }}
"#,
            a.addr, b.addr
        )
    };
    gw.rewrite_config(&with_extra(extra));
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by(extra).await, "b", "the new frontend serves");
    assert_eq!(
        served_by(listen).await,
        "a",
        "the old frontend still serves"
    );
    let frontends = admin_config(admin).await["frontends"].clone();
    assert_eq!(frontends.as_array().unwrap().len(), 2, "{frontends}");

    // A frontend on an address someone else holds is refused as a whole.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    gw.rewrite_config(&with_extra(taken));
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 400, "{body}");
    let error = body["errors"][0].as_str().unwrap();
    assert!(
        error.contains(&format!("cannot listen on {taken}")),
        "{error}"
    );
    assert_eq!(
        served_by(extra).await,
        "b",
        "the rejected reload changed nothing"
    );
    drop(squatter);

    // Removing the frontend closes its listener.
    gw.rewrite_config(&config(admin, listen, a.addr, false));
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    let closed = eventually(Duration::from_secs(5), async || {
        TcpStream::connect(extra).is_err()
    })
    .await;
    assert!(
        closed,
        "{extra} still accepts after its frontend was removed"
    );
    assert_eq!(served_by(listen).await, "a");
    assert!(gw.log_text().contains("listener retired by reload"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_finishes_on_its_snapshot() {
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let slow = Upstream::start(move |req: Request<Incoming>| {
        let started_tx = started_tx.clone();
        async move {
            let _ = started_tx.send(());
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Response::new(full(format!("slow answer to {}", req.uri().path())))
        }
    })
    .await;
    let fast = Upstream::echo("fast").await;
    let (admin, listen) = (free_addr(), free_addr());
    let gw = GatewayProcess::start(&config(admin, listen, slow.addr, false), &[listen, admin]);

    let in_flight = tokio::spawn(async move {
        let response = client()
            .get(format!("http://{listen}/checkout"))
            .send()
            .await
            .expect("in-flight request");
        (response.status().as_u16(), response.text().await.unwrap())
    });
    tokio::time::timeout(Duration::from_secs(10), started.recv())
        .await
        .expect("the slow upstream never got the request");

    // Swap the service's target: the old pool leaves the snapshot while the
    // request still uses it.
    gw.rewrite_config(&config(admin, listen, fast.addr, false));
    let (status, body) = post_reload(admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(served_by(listen).await, "fast");
    assert!(!in_flight.is_finished(), "the slow request ended too early");

    let (status, text) = in_flight.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(text, "slow answer to /checkout");
}
