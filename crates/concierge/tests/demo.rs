//! The README's walk-through against `concierge demo`: the built-in ZimMart
//! services and `examples/zimmart.yaml`, with every port moved to a free one
//! and a private Redis for the cluster-wide Payment limit.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{client, free_port, redis::RedisServer};

struct Demo {
    child: Child,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
    mobile: SocketAddr,
    web: SocketAddr,
    public: SocketAddr,
    admin: SocketAddr,
}

/// The first of five consecutive free loopback ports.
fn five_free_ports() -> u16 {
    for _ in 0..200 {
        let base = free_port();
        if base > 65_000 {
            continue;
        }
        let held: Vec<_> = (base..base + 5)
            .map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == 5 {
            return base;
        }
    }
    panic!("no five consecutive free loopback ports");
}

impl Demo {
    fn start(redis: &RedisServer) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("demo.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let (mobile, web, public, admin) = (
            loopback(free_port()),
            loopback(free_port()),
            loopback(free_port()),
            loopback(free_port()),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_concierge"))
            .arg("demo")
            .args(["--mobile-port", &mobile.port().to_string()])
            .args(["--web-port", &web.port().to_string()])
            .args(["--public-port", &public.port().to_string()])
            .args(["--admin", &admin.to_string()])
            .args(["--services-port", &five_free_ports().to_string()])
            .env("REDIS_URL", redis.url())
            .env("CONCIERGE_LOG", "info")
            .env_remove("RUST_LOG")
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn concierge demo");
        let mut demo = Self {
            child,
            _dir: dir,
            log,
            mobile,
            web,
            public,
            admin,
        };
        for addr in [mobile, web, public, admin] {
            demo.wait_listening(addr);
        }
        demo
    }

    fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("demo exited early with {status}:\n{}", self.log_text());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("demo never listened on {addr}:\n{}", self.log_text());
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- demo log ---\n{}", self.log_text());
        }
    }
}

async fn login(base: &str, user: &str) -> String {
    let response = client()
        .post(format!("{base}/login"))
        .body(json!({"username": user, "password": "zimmart"}).to_string())
        .send()
        .await
        .expect("login");
    assert_eq!(response.status(), 200, "login as {user}");
    let body: serde_json::Value = response.json().await.expect("login body");
    body["access_token"]
        .as_str()
        .expect("an access_token")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_closes_the_delete_hole_and_limits_logins() {
    let redis = RedisServer::start();
    let demo = Demo::start(&redis);
    let http = client();
    let mobile = format!("http://{}", demo.mobile);
    let web = format!("http://{}", demo.web);

    let catalogue = http.get(format!("{mobile}/products")).send().await.unwrap();
    assert_eq!(catalogue.status(), 200, "GET /products is public");

    let anonymous = http
        .delete(format!("{mobile}/products/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"),
    );

    let tendai = login(&mobile, "tendai").await;
    let customer = http
        .delete(format!("{mobile}/products/1"))
        .bearer_auth(&tendai)
        .send()
        .await
        .unwrap();
    assert_eq!(customer.status(), 403);
    assert!(
        customer.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("insufficient_scope")
    );

    // The web frontend serves the same login at its root too.
    let admin = login(&web, "admin").await;
    let deleted = http
        .delete(format!("{mobile}/products/1"))
        .bearer_auth(&admin)
        .header("X-User-ID", "mallory")
        .header("X_Role", "admin")
        .send()
        .await
        .unwrap();
    assert!(
        deleted.status().is_success(),
        "admin delete: {}",
        deleted.status()
    );
    let seen = "product: DELETE /products/1 x-user-id=u-0001 x-role=admin authorization=absent";
    assert!(
        support::eventually(Duration::from_secs(5), async || demo
            .log_text()
            .contains(seen))
        .await,
        "the Product service logs the trusted identity:\n{}",
        demo.log_text()
    );
    assert!(!demo.log_text().contains("mallory"));

    let orders = http
        .get(format!("{web}/api/orders"))
        .bearer_auth(&tendai)
        .send()
        .await
        .unwrap();
    assert_eq!(
        orders.status(),
        200,
        "tendai's orders through the web frontend"
    );
    let no_token = http.get(format!("{mobile}/orders")).send().await.unwrap();
    assert_eq!(no_token.status(), 401, "/orders needs a token");

    let public = format!("http://{}", demo.public);
    let keyless = http
        .get(format!("{public}/v1/products/2"))
        .send()
        .await
        .unwrap();
    assert_eq!(keyless.status(), 401);
    let keyed = http
        .get(format!("{public}/v1/products/2"))
        .header("X-API-Key", "demo-public-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), 200);

    // A retry loop on /login: 5 per second per address, then 429. The
    // logins above used the web frontend's bucket for the same policy, so
    // wait for the bucket to refill first.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut statuses = Vec::new();
    let mut limited = None;
    for _ in 0..8 {
        let response = http
            .post(format!("{mobile}/login"))
            .body(r#"{"username":"tendai","password":"wrong"}"#)
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            limited = Some(response);
        }
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429, 429]);
    let limited = limited.expect("a 429");
    let headers = limited.headers();
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=1).contains(&retry_after), "Retry-After {retry_after}");
    // The mobile frontend's per-user policy applies too (by address, for
    // an anonymous caller); the login policy is the one that refused.
    let policy = headers["ratelimit-policy"].to_str().unwrap();
    assert!(
        policy.contains("\"login-ip\";q=5;w=1"),
        "RateLimit-Policy {policy}"
    );
    let ratelimit = headers["ratelimit"].to_str().unwrap();
    assert!(
        ratelimit.contains("\"login-ip\";r=0;t=1"),
        "RateLimit {ratelimit}"
    );
    assert_eq!(headers["x-ratelimit-limit"], "5");
    assert_eq!(headers["x-ratelimit-remaining"], "0");

    // The Payment service's global limit goes through this test's Redis.
    let payment = http
        .get(format!("{mobile}/payment-methods"))
        .bearer_auth(&tendai)
        .send()
        .await
        .unwrap();
    assert_eq!(payment.status(), 200);
    assert!(redis.script_calls() > 0, "the Payment limit asked Redis");
    let metrics = http
        .get(format!("http://{}/metrics", demo.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("concierge_"), "admin metrics:\n{metrics}");
}
