//! Local (in-process) rate limits and load shedding through the real
//! gateway: exact allow counts, every key kind in its own buckets, the
//! response fields with their exact values, `Retry-After` honoured, delay
//! mode, per-service concurrency shedding, and reloads that change one
//! limit while keeping the buckets of the others.
//!
//! Rates are mostly `1/min`, so nothing refills while a test runs and every
//! count is exact.

mod support;
#[path = "support/tokens.rs"]
mod tokens;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::upstream::{Upstream, full};
use support::{GatewayProcess, client, free_addr};
use tokens::{SigningKey, claims, claims_with, counting_echo, sha256_hex};

/// The rate-limit fields, in the order [`Reply::limits`] gives them.
const FIELDS: [&str; 6] = [
    "ratelimit-policy",
    "ratelimit",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "retry-after",
];

/// A response, read whole.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
    /// From sending the request to the end of the body.
    elapsed: Duration,
    /// When the body had been read.
    done: Instant,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The six rate-limit fields, `None` where absent.
    fn limits(&self) -> [Option<String>; 6] {
        FIELDS.map(|name| self.header(name).map(str::to_string))
    }

    /// Asserts the rate-limit fields: exactly `want`, except that the
    /// time-valued ones (each `t`, `X-RateLimit-Reset`, `Retry-After`) may
    /// have counted down by the whole seconds gone by since `since`, the
    /// bucket's first request (none, unless the machine is very busy).
    fn assert_limits(&self, want: &[Option<String>; 6], since: Instant, case: &str) {
        let got = self.limits();
        let slack = since.elapsed().as_secs();
        let matches = got
            .iter()
            .zip(want)
            .enumerate()
            .all(|(i, pair)| match pair {
                (Some(got), Some(want)) => match i {
                    1 => ratelimit_matches(got, want, slack),
                    4 | 5 => counts_down(got, want, slack),
                    _ => got == want,
                },
                (None, None) => true,
                _ => false,
            });
        assert!(
            matches,
            "{case}:\n got  {got:?}\n want {want:?} (times less at most {slack}s)"
        );
    }

    /// Asserts the `RateLimit` field alone, like [`Self::assert_limits`].
    fn assert_ratelimit(&self, want: &str, since: Instant, case: &str) {
        let got = self.header("ratelimit").unwrap_or_default();
        let slack = since.elapsed().as_secs();
        assert!(
            ratelimit_matches(got, want, slack),
            "{case}: RateLimit {got:?}, want {want:?} (times less at most {slack}s)"
        );
    }

    /// Asserts a 429 problem+json naming `violated` and returns the body.
    fn assert_too_many(&self, violated: &str, case: &str) -> Value {
        assert_eq!(self.status, 429, "{case}: {}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{case}"
        );
        let body: Value = serde_json::from_str(&self.body).expect("problem JSON");
        assert_eq!(body["status"], 429, "{case}: {body}");
        assert_eq!(body["title"], "Too Many Requests", "{case}: {body}");
        assert_eq!(
            body["detail"],
            format!("rate limit exceeded ({violated})"),
            "{case}: {body}"
        );
        body
    }
}

async fn get(listen: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = client().get(format!("http://{listen}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let started = Instant::now();
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.text().await.expect("body");
    Reply {
        status,
        headers,
        body,
        elapsed: started.elapsed(),
        done: Instant::now(),
    }
}

/// `GET path` as the client `ip` (the gateway trusts 127.0.0.0/8 to say so).
async fn get_as(listen: SocketAddr, path: &str, ip: &str) -> Reply {
    get(listen, path, &[("x-forwarded-for", ip)]).await
}

/// The fields a response must carry: the policy list, the `RateLimit` list,
/// `X-RateLimit-Limit/Remaining/Reset` and `Retry-After`.
fn fields(
    policy: &str,
    ratelimit: &str,
    limit: u32,
    remaining: u32,
    reset: u64,
    retry_after: Option<u64>,
) -> [Option<String>; 6] {
    [
        Some(policy.to_string()),
        Some(ratelimit.to_string()),
        Some(limit.to_string()),
        Some(remaining.to_string()),
        Some(reset.to_string()),
        retry_after.map(|s| s.to_string()),
    ]
}

/// Seconds counting down from `want`, at most `slack` of them gone.
fn counts_down(got: &str, want: &str, slack: u64) -> bool {
    match (got.parse::<u64>(), want.parse::<u64>()) {
        (Ok(got), Ok(want)) => got <= want && got + slack >= want,
        _ => false,
    }
}

/// Two `RateLimit` lists: the same items, each `t` counting down.
fn ratelimit_matches(got: &str, want: &str, slack: u64) -> bool {
    let got: Vec<&str> = got.split(", ").collect();
    let want: Vec<&str> = want.split(", ").collect();
    got.len() == want.len()
        && got.iter().zip(&want).all(|(got, want)| {
            match (got.split_once(";t="), want.split_once(";t=")) {
                (Some((got, got_t)), Some((want, want_t))) => {
                    got == want && counts_down(got_t, want_t, slack)
                }
                _ => false,
            }
        })
}

const NONE: [Option<String>; 6] = [None, None, None, None, None, None];

/// A gateway with one frontend whose routes are `routes` (YAML list items,
/// indented six spaces) and whose extra frontend fields are `frontend`.
fn one_frontend(listen: SocketAddr, frontend: &str, routes: &str, services: &str) -> String {
    format!(
        r#"
server:
  watch_config: false
frontends:
  - name: web
    listen: {listen}
    client_address: {{ trusted_proxies: [127.0.0.0/8] }}
{frontend}
    routes:
{routes}
services:
{services}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_limit_allows_exactly_its_burst_with_exact_fields() {
    let (upstream, hits) = counting_echo().await;
    let listen = free_addr();
    let routes = r#"
      - match: { path: /exact }
        rate_limits: [{ name: exact, rate: 1/min, burst: 5, key: ip }]
        service: api
      - match: { path: /quiet }
        rate_limits: [{ name: quiet, rate: 1/min, burst: 2, key: ip, headers: false }]
        service: api
      - match: { path: /even }
        rate_limits: [{ name: even, rate: 3/min, burst: 3, key: ip }]
        service: api
      - match: { path: /fast }
        rate_limits: [{ name: fast, rate: 10/s, key: ip }]
        service: api"#;
    let services = format!("  api: {{ targets: [\"{}\"] }}", upstream.addr);
    let _gw = GatewayProcess::start(&one_frontend(listen, "", routes, &services), &[listen]);

    // 1/min, burst 5: five pass at once, each taking one token and owing a
    // minute more (t and X-RateLimit-Reset: until the bucket is full again).
    let policy = r#""exact";q=1;w=60;concierge-burst=5"#;
    let first = Instant::now();
    for i in 1..=5u32 {
        let reply = get(listen, "/exact", &[]).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
        let left = 5 - i;
        let reset = 60 * u64::from(i);
        reply.assert_limits(
            &fields(
                policy,
                &format!(r#""exact";r={left};t={reset}"#),
                5,
                left,
                reset,
                None,
            ),
            first,
            &format!("request {i}"),
        );
    }
    // Then nothing until the next token, a minute (one emission interval) away.
    for i in 6..=8 {
        let reply = get(listen, "/exact", &[]).await;
        let body = reply.assert_too_many("exact", &format!("request {i}"));
        assert_eq!(body["instance"], "/exact");
        reply.assert_limits(
            &fields(policy, r#""exact";r=0;t=60"#, 5, 0, 300, Some(60)),
            first,
            &format!("request {i}"),
        );
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "refused requests never reach the upstream"
    );

    // `headers: false`: nothing on allowed responses, everything on the 429.
    let first = Instant::now();
    for i in 1..=2 {
        let reply = get(listen, "/quiet", &[]).await;
        assert_eq!(reply.status, 200, "quiet {i}");
        assert_eq!(reply.limits(), NONE, "quiet {i}");
    }
    let reply = get(listen, "/quiet", &[]).await;
    reply.assert_too_many("quiet", "quiet 3");
    reply.assert_limits(
        &fields(
            r#""quiet";q=1;w=60;concierge-burst=2"#,
            r#""quiet";r=0;t=60"#,
            2,
            0,
            120,
            Some(60),
        ),
        first,
        "quiet 3",
    );

    // A burst equal to the quota is not repeated as `concierge-burst`.
    let first = Instant::now();
    let reply = get(listen, "/even", &[]).await;
    assert_eq!(reply.status, 200);
    reply.assert_limits(
        &fields(r#""even";q=3;w=60"#, r#""even";r=2;t=20"#, 3, 2, 20, None),
        first,
        "even",
    );
    // Per second, default burst (the rate per second): `w=1`, t rounded up.
    let first = Instant::now();
    let reply = get(listen, "/fast", &[]).await;
    assert_eq!(reply.status, 200);
    reply.assert_limits(
        &fields(r#""fast";q=10;w=1"#, r#""fast";r=9;t=1"#, 10, 9, 1, None),
        first,
        "fast",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_route_and_service_policies_all_apply() {
    let (upstream, _) = counting_echo().await;
    let listen = free_addr();
    let frontend = "    rate_limits: [{ name: fe, rate: 1/min, burst: 10, key: ip }]";
    let routes = r#"
      - match: { path: /tight }
        rate_limits: [{ name: rt, rate: 1/min, burst: 3, key: ip }]
        service: api
      - match: { path: /loose }
        service: api"#;
    let services = format!(
        "  api:\n    targets: [\"{}\"]\n    rate_limits: [{{ name: svc, rate: 1/min, burst: 100, key: service }}]",
        upstream.addr
    );
    let _gw = GatewayProcess::start(
        &one_frontend(listen, frontend, routes, &services),
        &[listen],
    );
    let all = r#""fe";q=1;w=60;concierge-burst=10, "rt";q=1;w=60;concierge-burst=3, "svc";q=1;w=60;concierge-burst=100"#;
    // One item per policy, in order (frontend, route, service); the X- fields
    // describe the tightest (fewest remaining): the route's.
    let first = Instant::now();
    for i in 1..=3u32 {
        let reply = get(listen, "/tight", &[]).await;
        assert_eq!(reply.status, 200, "tight {i}");
        let t = 60 * i;
        let ratelimit = format!(
            r#""fe";r={};t={t}, "rt";r={};t={t}, "svc";r={};t={t}"#,
            10 - i,
            3 - i,
            100 - i
        );
        reply.assert_limits(
            &fields(all, &ratelimit, 3, 3 - i, u64::from(t), None),
            first,
            &format!("tight {i}"),
        );
    }
    // The route's policy refuses; the frontend's token is spent already (no
    // refunds) and the service's policy is never consulted.
    let reply = get(listen, "/tight", &[]).await;
    reply.assert_too_many("rt", "tight 4");
    reply.assert_limits(
        &fields(
            r#""fe";q=1;w=60;concierge-burst=10, "rt";q=1;w=60;concierge-burst=3"#,
            r#""fe";r=6;t=240, "rt";r=0;t=60"#,
            3,
            0,
            180,
            Some(60),
        ),
        first,
        "tight 4",
    );
    // Another route shares the frontend's and the service's buckets.
    let reply = get(listen, "/loose", &[]).await;
    assert_eq!(reply.status, 200);
    reply.assert_limits(
        &fields(
            r#""fe";q=1;w=60;concierge-burst=10, "svc";q=1;w=60;concierge-burst=100"#,
            r#""fe";r=5;t=300, "svc";r=96;t=240"#,
            10,
            5,
            300,
            None,
        ),
        first,
        "loose",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_subnet_and_header_keys_each_have_their_own_buckets() {
    let (upstream, _) = counting_echo().await;
    let listen = free_addr();
    let routes = r#"
      - match: { path: /ip }
        rate_limits: [{ name: by-ip, rate: 1/min, burst: 1, key: ip }]
        service: api
      - match: { path: /net }
        rate_limits: [{ name: by-net, rate: 1/min, burst: 1, key: { subnet: { ipv4_prefix: 24, ipv6_prefix: 64 } } }]
        service: api
      - match: { path: /net16 }
        rate_limits: [{ name: by-net16, rate: 1/min, burst: 1, key: { subnet: { ipv4_prefix: 16 } } }]
        service: api
      - match: { path: /tenant }
        rate_limits: [{ name: by-tenant, rate: 1/min, burst: 1, key: { header: X-Tenant } }]
        service: api"#;
    let services = format!("  api: {{ targets: [\"{}\"] }}", upstream.addr);
    let _gw = GatewayProcess::start(&one_frontend(listen, "", routes, &services), &[listen]);

    let expect = async |path: &str, ip: &str, status: u16| {
        let reply = get_as(listen, path, ip).await;
        assert_eq!(reply.status, status, "{path} as {ip}: {}", reply.body);
    };

    // ip: one bucket per address, v4 and v6; an IPv4-mapped address is the
    // same client as its IPv4 form.
    expect("/ip", "10.1.1.1", 200).await;
    expect("/ip", "10.1.1.1", 429).await;
    expect("/ip", "::ffff:10.1.1.1", 429).await;
    expect("/ip", "10.1.1.2", 200).await;
    expect("/ip", "2001:db8::1", 200).await;
    expect("/ip", "2001:db8::1", 429).await;
    expect("/ip", "2001:db8::2", 200).await;
    // No X-Forwarded-For: the peer (127.0.0.1) is the client.
    assert_eq!(get(listen, "/ip", &[]).await.status, 200);
    assert_eq!(get(listen, "/ip", &[]).await.status, 429);

    // subnet /24 and /64: neighbours share a bucket, the next network does not.
    expect("/net", "10.1.1.1", 200).await;
    expect("/net", "10.1.1.2", 429).await;
    expect("/net", "10.1.1.254", 429).await;
    expect("/net", "::ffff:10.1.1.3", 429).await;
    expect("/net", "10.1.2.1", 200).await;
    expect("/net", "10.1.2.200", 429).await;
    expect("/net", "2001:db8:0:1::1", 200).await;
    expect("/net", "2001:db8:0:1:ffff:ffff:ffff:fffe", 429).await;
    expect("/net", "2001:db8:0:2::1", 200).await;
    expect("/net", "2001:db8:0:2::99", 429).await;
    expect("/net", "2001:db8:1:1::1", 200).await;

    // subnet /16 for IPv4, the default /64 for IPv6.
    expect("/net16", "10.1.1.1", 200).await;
    expect("/net16", "10.1.200.7", 429).await;
    expect("/net16", "10.2.0.1", 200).await;
    expect("/net16", "2001:db8:0:3::1", 200).await;
    expect("/net16", "2001:db8:0:3:1::1", 429).await;
    expect("/net16", "2001:db8:0:4::1", 200).await;

    // header: one bucket per value, whoever sends it; without the header,
    // the client's IP.
    let tenant = async |value: Option<&str>, ip: &str, status: u16| {
        let mut headers = vec![("x-forwarded-for", ip)];
        headers.extend(value.map(|v| ("x-tenant", v)));
        let reply = get(listen, "/tenant", &headers).await;
        assert_eq!(reply.status, status, "tenant {value:?} from {ip}");
    };
    tenant(Some("acme"), "10.5.5.5", 200).await;
    tenant(Some("acme"), "10.6.6.6", 429).await;
    tenant(Some("globex"), "10.5.5.5", 200).await;
    tenant(Some("globex"), "10.5.5.5", 429).await;
    tenant(None, "10.5.5.5", 200).await;
    tenant(None, "10.5.5.5", 429).await;
    tenant(None, "10.6.6.6", 200).await;
    // An empty value counts as absent.
    tenant(Some(""), "10.6.6.6", 429).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_api_key_consumer_keys() {
    let (upstream, _) = counting_echo().await;
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let keys_dir = tempfile::tempdir().expect("tempdir");
    let jwks_file = keys_dir.path().join("jwks.json");
    std::fs::write(&jwks_file, tokens::jwks(&[&key]).to_string()).expect("write JWKS");
    let (mobile, partners) = (free_addr(), free_addr());
    let (acme_1, acme_2, globex) = (
        "acme-key-one-1f2e3d",
        "acme-key-two-4c5b6a",
        "globex-key-778899",
    );
    let yaml = format!(
        r#"
server:
  watch_config: false
identity_providers:
  idp:
    issuer: https://idp.test
    audiences: [shop]
    keys: {{ file: "{jwks}" }}
    algorithms: [ES256]
frontends:
  - name: mobile
    listen: {mobile}
    auth: {{ require: jwt }}
    rate_limits: [{{ name: per-user, rate: 1/min, burst: 2, key: user }}]
    routes:
      - match: {{ path_prefix: /app }}
        service: api
      - match: {{ path_prefix: /public }}
        auth: {{ require: none }}
        service: api
  - name: partners
    listen: {partners}
    auth: {{ require: api_key }}
    api_keys:
      keys:
        - {{ consumer: acme, sha256: {acme_1_sha} }}
        - {{ consumer: acme, sha256: {acme_2_sha} }}
        - {{ consumer: globex, sha256: {globex_sha} }}
    rate_limits: [{{ name: per-consumer, rate: 1/min, burst: 2, key: api_key }}]
    routes:
      - match: {{ path_prefix: /v1 }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#,
        jwks = jwks_file.display(),
        upstream = upstream.addr,
        acme_1_sha = sha256_hex(acme_1.as_bytes()),
        acme_2_sha = sha256_hex(acme_2.as_bytes()),
        globex_sha = sha256_hex(globex.as_bytes()),
    );
    let _gw = GatewayProcess::start(&yaml, &[mobile, partners]);

    // user: the JWT `sub`, all from one client address.
    let token = |sub: &str, jti: &str| {
        key.sign(&claims_with(
            "https://idp.test",
            "shop",
            sub,
            json!({ "jti": jti }),
        ))
    };
    let as_user = async |token: &str, status: u16, case: &str| {
        let bearer = format!("Bearer {token}");
        let reply = get(mobile, "/app/feed", &[("authorization", &bearer)]).await;
        assert_eq!(reply.status, status, "{case}: {}", reply.body);
        reply
    };
    let alice = key.sign(&claims("https://idp.test", "shop", "alice"));
    let bob = key.sign(&claims("https://idp.test", "shop", "bob"));
    let first = as_user(&alice, 200, "alice 1").await;
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    as_user(&alice, 200, "alice 2").await;
    as_user(&alice, 429, "alice 3").await;
    // A new token for the same user is the same bucket.
    as_user(&token("alice", "another-session"), 429, "alice, new token").await;
    as_user(&bob, 200, "bob 1").await;
    as_user(&bob, 200, "bob 2").await;
    as_user(&bob, 429, "bob 3").await;
    // Anonymous requests (a route without auth) are keyed by client IP.
    for (i, status) in [200, 200, 429].into_iter().enumerate() {
        let reply = get(mobile, "/public/x", &[]).await;
        assert_eq!(reply.status, status, "anonymous {i}");
    }
    as_user(&token("carol", "c1"), 200, "carol 1").await;

    // api_key: the consumer, whichever of its keys is used.
    let with_key = async |key: &str, status: u16, case: &str| {
        let reply = get(partners, "/v1/items", &[("x-api-key", key)]).await;
        assert_eq!(reply.status, status, "{case}: {}", reply.body);
    };
    with_key(acme_1, 200, "acme key 1").await;
    with_key(acme_2, 200, "acme key 2").await;
    with_key(acme_1, 429, "acme key 1 again").await;
    with_key(acme_2, 429, "acme key 2 again").await;
    with_key(globex, 200, "globex 1").await;
    with_key(globex, 200, "globex 2").await;
    with_key(globex, 429, "globex 3").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_and_service_keys() {
    let (upstream, _) = counting_echo().await;
    let listen = free_addr();
    // One frontend policy keyed by route: one bucket per route.
    let frontend = "    rate_limits: [{ name: per-route, rate: 1/min, burst: 2, key: route }]";
    let routes = r#"
      - name: a
        match: { path: /a }
        service: api
      - name: b
        match: { path: /b }
        service: api
      - name: c
        match: { path: /c }
        service: shared
      - name: d
        match: { path: /d }
        service: shared"#;
    // One service policy keyed by service: one bucket for all its routes.
    let services = format!(
        "  api: {{ targets: [\"{up}\"] }}\n  shared:\n    targets: [\"{up}\"]\n    \
         rate_limits: [{{ name: per-service, rate: 1/min, burst: 3, key: service }}]",
        up = upstream.addr
    );
    let _gw = GatewayProcess::start(
        &one_frontend(listen, frontend, routes, &services),
        &[listen],
    );
    let expect = async |path: &str, ip: &str, status: u16, case: &str| {
        let reply = get_as(listen, path, ip).await;
        assert_eq!(reply.status, status, "{case}: {}", reply.body);
        reply
    };
    // route: every client together, per route.
    expect("/a", "10.0.0.1", 200, "a 1").await;
    expect("/a", "10.0.0.2", 200, "a 2").await;
    expect("/a", "10.0.0.3", 429, "a 3").await;
    expect("/b", "10.0.0.3", 200, "b 1").await;
    expect("/b", "10.0.0.4", 200, "b 2").await;
    expect("/b", "10.0.0.1", 429, "b 3").await;
    // service: /c and /d (each also with its own per-route budget of 2)
    // share the service's three.
    let first = Instant::now();
    let reply = expect("/c", "10.0.0.1", 200, "c 1").await;
    reply.assert_ratelimit(
        r#""per-route";r=1;t=60, "per-service";r=2;t=60"#,
        first,
        "c 1",
    );
    expect("/d", "10.0.0.2", 200, "d 1").await;
    let reply = expect("/d", "10.0.0.3", 200, "d 2").await;
    reply.assert_ratelimit(
        r#""per-route";r=0;t=120, "per-service";r=0;t=180"#,
        first,
        "d 2",
    );
    let reply = expect("/c", "10.0.0.4", 429, "c 2").await;
    reply.assert_too_many("per-service", "c 2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_exactly_when_the_next_request_passes() {
    let (upstream, _) = counting_echo().await;
    let listen = free_addr();
    // One token every 2s.
    let routes = r#"
      - match: { path: /slow }
        rate_limits: [{ name: every-2s, rate: 30/min, burst: 1, key: ip }]
        service: api"#;
    let services = format!("  api: {{ targets: [\"{}\"] }}", upstream.addr);
    let _gw = GatewayProcess::start(&one_frontend(listen, "", routes, &services), &[listen]);

    let first = Instant::now();
    assert_eq!(get(listen, "/slow", &[]).await.status, 200);
    let refused = get(listen, "/slow", &[]).await;
    refused.assert_too_many("every-2s", "second request");
    // The token comes 2s after the first request (1s less if the machine
    // took a second to send the two).
    let slack = first.elapsed().as_secs();
    let retry_after = refused.header("retry-after").unwrap_or_default();
    assert!(
        counts_down(retry_after, "2", slack),
        "Retry-After {retry_after}"
    );
    refused.assert_ratelimit(r#""every-2s";r=0;t=2"#, first, "second request");
    let retry = Duration::from_secs(retry_after.parse().expect("whole seconds"));
    let after_refusal = |d: Duration| tokio::time::Instant::from_std(refused.done + d);
    // Half-way there: still refused, and told the rest (rounded up).
    tokio::time::sleep_until(after_refusal(retry / 2)).await;
    let early = get(listen, "/slow", &[]).await;
    early.assert_too_many("every-2s", "retried early");
    assert_eq!(early.header("retry-after"), Some("1"));
    // Retry-After seconds after the refusal: the request passes.
    tokio::time::sleep_until(after_refusal(retry)).await;
    let reply = get(listen, "/slow", &[]).await;
    assert_eq!(reply.status, 200, "after Retry-After: {}", reply.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_mode_queues_within_max_wait_and_refuses_beyond() {
    let (upstream, hits) = counting_echo().await;
    let listen = free_addr();
    let routes = r#"
      - match: { path: /smooth }
        rate_limits: [{ name: smooth, rate: 10/s, burst: 1, key: service, mode: { delay: { max_wait: 1s } } }]
        service: api
      - match: { path: /queue }
        rate_limits: [{ name: queue, rate: 2/s, burst: 1, key: service, mode: { delay: { max_wait: 1s } } }]
        service: api
      - match: { path: /capped }
        rate_limits: [{ name: capped, rate: 2/s, burst: 1, key: service, mode: { delay: { max_wait: 2s, max_queued: 1 } } }]
        service: api"#;
    let services = format!("  api: {{ targets: [\"{}\"] }}", upstream.addr);
    let _gw = GatewayProcess::start(&one_frontend(listen, "", routes, &services), &[listen]);

    // `n` requests at once; each with when it completed, from the moment
    // they were sent, soonest first.
    let burst_of = async |path: &'static str, n: usize| -> Vec<(Duration, Reply)> {
        let sent = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| tokio::spawn(async move { get(listen, path, &[]).await }))
            .collect();
        let mut replies = Vec::new();
        for task in tasks {
            let reply = task.await.expect("task");
            replies.push((reply.done - sent, reply));
        }
        replies.sort_by_key(|(at, _)| *at);
        replies
    };

    // 10/s, burst 1: five at once are all admitted, one every 100ms (waits
    // of 0, 100, 200, 300 and 400ms), none refused. The k-th cannot go on
    // before k × 100ms, and the first and the last are 400ms apart (give
    // or take the machine): not released together, nor after max_wait.
    let replies = burst_of("/smooth", 5).await;
    let times: Vec<Duration> = replies.iter().map(|(at, _)| *at).collect();
    eprintln!("delay mode, 5 concurrent at 10/s: completed after {times:?}");
    for (_, reply) in &replies {
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    for (k, at) in (0u32..).zip(&times) {
        assert!(
            *at >= Duration::from_millis(100) * k,
            "one every 100ms: {times:?}"
        );
    }
    let spread = times[4] - times[0];
    assert!(
        spread >= Duration::from_millis(250) && spread < Duration::from_millis(700),
        "released one by one, 400ms from first to last: {times:?}"
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 5);

    // 2/s, burst 1, max_wait 1s: waits of 0, 500 and 1000ms fit; the rest
    // would wait longer and are refused at once.
    let replies = burst_of("/queue", 5).await;
    let statuses: Vec<u16> = replies.iter().map(|(_, r)| r.status).collect();
    let times: Vec<Duration> = replies.iter().map(|(at, _)| *at).collect();
    eprintln!("delay mode beyond max_wait: {statuses:?} after {times:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    for (_, reply) in replies.iter().filter(|(_, r)| r.status != 200) {
        reply.assert_too_many("queue", "beyond max_wait");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert!(
            reply.elapsed < Duration::from_millis(500),
            "refused without waiting: {:?}",
            reply.elapsed
        );
    }
    let slowest = replies
        .iter()
        .filter(|(_, r)| r.status == 200)
        .map(|(at, _)| *at)
        .max();
    assert!(
        slowest.expect("admitted") >= Duration::from_secs(1),
        "the third waited a full second: {times:?}"
    );

    // max_queued 1: max_wait alone would hold all five (waits up to 2s),
    // but only one may wait at a time. The first passes at once, one waits
    // 500ms, the other three are refused at once, uncharged: their
    // Retry-After is when the bucket has room again without waiting.
    let replies = burst_of("/capped", 5).await;
    let statuses: Vec<u16> = replies.iter().map(|(_, r)| r.status).collect();
    let times: Vec<Duration> = replies.iter().map(|(at, _)| *at).collect();
    eprintln!("delay mode with max_queued 1: {statuses:?} after {times:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    for (_, reply) in replies.iter().filter(|(_, r)| r.status != 200) {
        reply.assert_too_many("capped", "queue full");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert!(
            reply.elapsed < Duration::from_millis(400),
            "refused without waiting: {:?}",
            reply.elapsed
        );
    }
    // Had the refusals been charged, the bucket would owe 2.5s by now.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = get(listen, "/capped", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply.elapsed < Duration::from_millis(400),
        "the bucket was full again: {:?}",
        reply.elapsed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_attached_twice_charges_a_request_once() {
    let (upstream, _) = counting_echo().await;
    let listen = free_addr();
    let shared = "{ name: shared, rate: 1/min, burst: 3, key: ip }";
    let frontend = format!("    rate_limits: [{shared}]");
    let routes = format!(
        r#"
      - match: {{ path: /x }}
        rate_limits: [{shared}]
        service: api"#
    );
    let services = format!(
        "  api:\n    targets: [\"{}\"]\n    rate_limits: [{shared}]",
        upstream.addr
    );
    let _gw = GatewayProcess::start(
        &one_frontend(listen, &frontend, &routes, &services),
        &[listen],
    );
    let first = Instant::now();
    for i in 1..=3u32 {
        let reply = get(listen, "/x", &[]).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.body);
        reply.assert_limits(
            &fields(
                r#""shared";q=1;w=60;concierge-burst=3"#,
                &format!(r#""shared";r={};t={}"#, 3 - i, 60 * i),
                3,
                3 - i,
                u64::from(60 * i),
                None,
            ),
            first,
            &format!("request {i}"),
        );
    }
    get(listen, "/x", &[])
        .await
        .assert_too_many("shared", "request 4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_sheds_with_503_and_retry_after() {
    let slow = Upstream::start(|_req: Request<Incoming>| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        Response::builder()
            .header("content-type", "text/plain")
            .body(full("slow"))
            .expect("response")
    })
    .await;
    let listen = free_addr();
    let routes = r#"
      - match: { path_prefix: /slow }
        service: slow"#;
    let services = format!(
        "  slow:\n    targets: [\"{}\"]\n    concurrency: {{ max_in_flight: 2, retry_after: 2s }}",
        slow.addr
    );
    let admin = free_addr();
    let yaml = one_frontend(listen, "", routes, &services)
        + &format!("admin: {{ listen: \"{admin}\" }}\n");
    let _gw = GatewayProcess::start(&yaml, &[listen, admin]);

    let tasks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(async move { get(listen, "/slow", &[]).await }))
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.expect("task"));
    }
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let shed: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        (ok, shed.len()),
        (2, 3),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in shed {
        assert_eq!(reply.header("retry-after"), Some("2"));
        assert_eq!(
            reply.header("content-type"),
            Some("application/problem+json")
        );
        let body: Value = serde_json::from_str(&reply.body).expect("problem JSON");
        assert_eq!(body["status"], 503);
        assert!(
            reply.elapsed < Duration::from_millis(500),
            "shed at once, not queued: {:?}",
            reply.elapsed
        );
    }
    // The slots come back when the slow answers are done.
    let reply = get(listen, "/slow", &[]).await;
    assert_eq!(reply.status, 200);
    // And the metrics count what was shed.
    let metrics = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"concierge_concurrency_shed_total{service="slow"} 3"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_a_limit_and_keeps_unchanged_buckets() {
    let (upstream, _) = counting_echo().await;
    let (admin, listen) = (free_addr(), free_addr());
    let config = |a_burst: u32, version: &str| {
        format!(
            r#"
server:
  watch_config: false
admin:
  listen: {admin}
frontends:
  - name: web
    listen: {listen}
    headers: {{ response: {{ set: {{ x-version: {version} }} }} }}
    routes:
      - match: {{ path: /a }}
        rate_limits: [{{ name: a, rate: 1/min, burst: {a_burst}, key: ip }}]
        service: api
      - match: {{ path: /b }}
        rate_limits: [{{ name: b, rate: 1/min, burst: 2, key: ip }}]
        service: api
services:
  api: {{ targets: ["{up}"] }}
"#,
            up = upstream.addr
        )
    };
    let gw = GatewayProcess::start(&config(2, "v1"), &[listen, admin]);
    let reload = async |gw: &GatewayProcess, yaml: &str, generation: u64| {
        gw.rewrite_config(yaml);
        let response = client()
            .post(format!("http://{admin}/reload"))
            .send()
            .await
            .expect("POST /reload");
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(body, json!({"reloaded": true, "generation": generation}));
    };
    let statuses = async |path: &str, n: usize| {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(get(listen, path, &[]).await.status);
        }
        out
    };
    assert_eq!(statuses("/a", 3).await, [200, 200, 429]);
    assert_eq!(statuses("/b", 3).await, [200, 200, 429]);

    // /a's burst goes from 2 to 4: a changed policy starts from fresh
    // buckets. /b is unchanged: its bucket is still empty.
    reload(&gw, &config(4, "v2"), 2).await;
    let reply = get(listen, "/a", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("x-version"), Some("v2"));
    assert_eq!(
        reply.header("ratelimit-policy"),
        Some(r#""a";q=1;w=60;concierge-burst=4"#)
    );
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("3"));
    assert_eq!(statuses("/a", 4).await, [200, 200, 200, 429]);
    let reply = get(listen, "/b", &[]).await;
    reply.assert_too_many("b", "b after the reload");
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));

    // Reloading something else (generation 3) keeps every bucket as it is.
    reload(&gw, &config(4, "v3"), 3).await;
    assert_eq!(statuses("/a", 1).await, [429]);
    assert_eq!(statuses("/b", 1).await, [429]);

    // Refusals are counted per policy, and an unchanged policy keeps
    // counting across reloads: /b refused three times, over three configs.
    let metrics = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == r#"concierge_ratelimit_limited_total{policy="b"} 3"#),
        "{metrics}"
    );
    let a_limited: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"concierge_ratelimit_limited_total{policy="a"} "#))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count for a:\n{metrics}"));
    assert!((2..=3).contains(&a_limited), "{metrics}");
}
