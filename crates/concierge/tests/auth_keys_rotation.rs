//! An identity provider's keys over time: fetched before the listener
//! serves, refreshed, rotated, refetched (throttled) for unknown key ids,
//! kept while the provider is down and given up after `max_staleness`, and
//! found through OpenID Connect discovery.

mod support;
#[path = "support/tokens.rs"]
mod tokens;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use serde_json::Value;
use support::upstream::Upstream;
use support::{GatewayProcess, client, eventually, free_addr};
use tokens::{JwksServer, SigningKey, assert_invalid_token, claims, counting_echo};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "shop-api";

/// A gateway with one provider named `idp` (extra provider settings in
/// `provider`, e.g. `refresh_interval: 1s`) in front of `upstream` on `/api`,
/// which requires a token.
fn start_gateway(
    issuer: &str,
    keys: &str,
    provider: &str,
    upstream: &Upstream,
) -> (GatewayProcess, SocketAddr) {
    let listen = free_addr();
    let yaml = format!(
        r#"
identity_providers:
  idp:
    issuer: "{issuer}"
    audiences: [{AUDIENCE}]
    keys: {keys}
    algorithms: [RS256, ES256]
{provider}
frontends:
  - name: web
    listen: {listen}
    auth: {{ require: jwt }}
    routes:
      - match: {{ path_prefix: /api }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#,
        upstream = upstream.addr,
    );
    (GatewayProcess::start(&yaml, &[listen]), listen)
}

fn jwks_keys(jwks: &JwksServer) -> String {
    format!(r#"{{ jwks_url: "{}" }}"#, jwks.jwks_url())
}

async fn status(listen: SocketAddr, token: &str) -> u16 {
    client()
        .get(format!("http://{listen}/api/x"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

async fn get(listen: SocketAddr, token: &str) -> reqwest::Response {
    client()
        .get(format!("http://{listen}/api/x"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

async fn wait_for_hits(jwks: &JwksServer, at_least: usize, within: Duration) {
    let reached = eventually(within, async || jwks.hits() >= at_least).await;
    assert!(
        reached,
        "the JWKS was fetched {} times, expected {at_least}",
        jwks.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_fetched_before_the_listener_serves() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let (_gw, listen) = start_gateway(ISSUER, &jwks_keys(&jwks), "", &upstream);
    // The listener accepting connections means the keys are already in.
    assert_eq!(jwks.hits(), 1);
    let token = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    assert_eq!(status(listen, &token).await, 200);
    assert_eq!(status(listen, &token).await, 200);
    assert_eq!(jwks.hits(), 1, "a known key needs no fetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_adds_new_keys_and_drops_rotated_out_ones_even_when_cached() {
    let old = SigningKey::rsa(Algorithm::RS256, "old");
    let new = SigningKey::ec(Algorithm::ES256, "new");
    let jwks = JwksServer::start(&[&old]).await;
    let (upstream, _) = counting_echo().await;
    // Unknown-kid refetches are throttled to once an hour here, so only the
    // periodic refresh can bring keys in after the first such refetch.
    let (gw, listen) = start_gateway(
        ISSUER,
        &jwks_keys(&jwks),
        "    refresh_interval: 1s\n    min_refetch_interval: 1h",
        &upstream,
    );
    let old_token = old.sign(&claims(ISSUER, AUDIENCE, "alice"));
    let new_token = new.sign(&claims(ISSUER, AUDIENCE, "bob"));
    // The old token is verified, then served from the cache.
    assert_eq!(status(listen, &old_token).await, 200);
    assert_eq!(status(listen, &old_token).await, 200);
    // Spend the one unthrottled unknown-kid refetch before the new key exists.
    assert_invalid_token(get(listen, &new_token).await, "not yet published", &[]).await;

    // The provider publishes the new key next to the old one.
    jwks.set_keys(&[&old, &new]);
    let published = jwks.hits();
    wait_for_hits(&jwks, published + 1, Duration::from_secs(5)).await;
    let accepted = eventually(Duration::from_secs(3), async || {
        status(listen, &new_token).await == 200
    })
    .await;
    assert!(accepted, "the refresh did not bring the new key in");
    assert_eq!(status(listen, &old_token).await, 200, "both keys are live");

    // The old key is rotated out: even the cached verdict must go.
    jwks.set_keys(&[&new]);
    let rotated = jwks.hits();
    wait_for_hits(&jwks, rotated + 1, Duration::from_secs(5)).await;
    let refused = eventually(Duration::from_secs(3), async || {
        status(listen, &old_token).await == 401
    })
    .await;
    assert!(
        refused,
        "a rotated-out key still verifies:\n{}",
        gw.log_text()
    );
    assert_invalid_token(get(listen, &old_token).await, "rotated out", &[]).await;
    // A fresh token from the old key is refused too; the new key still works.
    let fresh_old = old.sign(&claims(ISSUER, AUDIENCE, "carol"));
    assert_invalid_token(get(listen, &fresh_old).await, "fresh, rotated out", &[]).await;
    assert_eq!(status(listen, &new_token).await, 200);
}

/// A JWKS document with `keys`, their `kid`s removed.
fn anonymous_jwks(keys: &[&SigningKey]) -> Value {
    let mut document = tokens::jwks(keys);
    for key in document["keys"].as_array_mut().unwrap() {
        key.as_object_mut().unwrap().remove("kid");
    }
    document
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tokens_without_kid_are_dropped_when_their_key_rotates_out() {
    // Providers with a single key often issue tokens without `kid`; the
    // gateway then uses the one key of the token's family. Both shapes of
    // such a key set: one key with a kid, and keys published without kids.
    for anonymous in [false, true] {
        let old = SigningKey::ec(Algorithm::ES256, "old");
        let new = SigningKey::ec(Algorithm::ES256, "new");
        let publish = |keys: &[&SigningKey]| {
            if anonymous {
                anonymous_jwks(keys)
            } else {
                tokens::jwks(keys)
            }
        };
        let jwks = JwksServer::start(&[]).await;
        jwks.set_document(publish(&[&old]));
        let (upstream, _) = counting_echo().await;
        let (gw, listen) = start_gateway(
            ISSUER,
            &jwks_keys(&jwks),
            "    refresh_interval: 1s\n    min_refetch_interval: 1h",
            &upstream,
        );
        let case = if anonymous {
            "anonymous key"
        } else {
            "single kid"
        };
        let token = old.sign_with_kid(&claims(ISSUER, AUDIENCE, "alice"), None);
        assert_eq!(status(listen, &token).await, 200, "{case}");
        assert_eq!(status(listen, &token).await, 200, "{case}: cached");

        jwks.set_document(publish(&[&new]));
        let rotated = jwks.hits();
        wait_for_hits(&jwks, rotated + 2, Duration::from_secs(5)).await;
        assert_invalid_token(get(listen, &token).await, case, &[]).await;
        // The new key verifies kid-less tokens, so the set did load.
        let fresh = new.sign_with_kid(&claims(ISSUER, AUDIENCE, "bob"), None);
        assert_eq!(
            status(listen, &fresh).await,
            200,
            "{case}:\n{}",
            gw.log_text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_tokens_are_dropped_when_their_kid_is_reused_for_another_key() {
    let first = SigningKey::ec(Algorithm::ES256, "signing");
    let second = SigningKey::ec(Algorithm::ES256, "signing");
    let jwks = JwksServer::start(&[&first]).await;
    let (upstream, _) = counting_echo().await;
    let (_gw, listen) = start_gateway(
        ISSUER,
        &jwks_keys(&jwks),
        "    refresh_interval: 1s\n    min_refetch_interval: 1h",
        &upstream,
    );
    let token = first.sign(&claims(ISSUER, AUDIENCE, "alice"));
    assert_eq!(status(listen, &token).await, 200);
    assert_eq!(status(listen, &token).await, 200, "cached");
    // Same kid, different key: the old verdict says nothing about the new key.
    jwks.set_keys(&[&second]);
    let replaced = jwks.hits();
    wait_for_hits(&jwks, replaced + 2, Duration::from_secs(5)).await;
    assert_invalid_token(get(listen, &token).await, "kid reused", &[]).await;
    let fresh = second.sign(&claims(ISSUER, AUDIENCE, "bob"));
    assert_eq!(status(listen, &fresh).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_refetches_are_throttled() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, upstream_hits) = counting_echo().await;
    let (_gw, listen) = start_gateway(
        ISSUER,
        &jwks_keys(&jwks),
        "    min_refetch_interval: 2s",
        &upstream,
    );
    assert_eq!(jwks.hits(), 1);
    let started = Instant::now();
    let requests = (0..50).map(|i| {
        let kid = format!("random-{i}-{:016x}", rand::random::<u64>());
        let token = key.sign_with_kid(&claims(ISSUER, AUDIENCE, "mallory"), Some(&kid));
        async move { (kid, get(listen, &token).await) }
    });
    let responses = futures_util::future::join_all(requests).await;
    let elapsed = started.elapsed();
    for (kid, response) in responses {
        assert_invalid_token(response, &kid, &[]).await;
    }
    let extra = jwks.hits() - 1;
    // One refetch per started 2s window at most.
    let windows = elapsed.as_secs() / 2 + 1;
    assert!(
        extra <= 2 && extra as u64 <= windows,
        "50 unknown kids in {elapsed:?} caused {extra} JWKS fetches"
    );
    assert!(extra >= 1, "an unknown kid should trigger one refetch");
    assert_eq!(upstream_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // Valid tokens are unaffected.
    let token = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    assert_eq!(status(listen, &token).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_just_published_kid_is_accepted_through_the_refetch() {
    let first = SigningKey::ec(Algorithm::ES256, "first");
    let second = SigningKey::rsa(Algorithm::RS256, "second");
    let jwks = JwksServer::start(&[&first]).await;
    let (upstream, _) = counting_echo().await;
    // No periodic refresh for an hour: only the unknown-kid refetch can help.
    let (_gw, listen) = start_gateway(
        ISSUER,
        &jwks_keys(&jwks),
        "    refresh_interval: 1h\n    min_refetch_interval: 2s",
        &upstream,
    );
    jwks.set_keys(&[&first, &second]);
    let token = second.sign(&claims(ISSUER, AUDIENCE, "alice"));
    let response = get(listen, &token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["headers"]["x-user-id"], "alice");
    assert_eq!(jwks.hits(), 2, "one start-up fetch and one refetch");
    // A key published later still gets in once the throttle window passed.
    let third = SigningKey::ec(Algorithm::ES256, "third");
    jwks.set_keys(&[&first, &second, &third]);
    let token = third.sign(&claims(ISSUER, AUDIENCE, "bob"));
    let accepted = eventually(Duration::from_secs(4), async || {
        status(listen, &token).await == 200
    })
    .await;
    assert!(accepted, "the third key was never refetched");
    assert!(jwks.hits() <= 4, "{} fetches", jwks.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_good_keys_serve_while_the_provider_is_down() {
    let key = SigningKey::rsa(Algorithm::RS256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let (gw, listen) = start_gateway(
        ISSUER,
        &jwks_keys(&jwks),
        "    refresh_interval: 300ms",
        &upstream,
    );
    let cached = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    assert_eq!(status(listen, &cached).await, 200);
    jwks.set_failing(true);
    let down_at = jwks.hits();
    // Several refreshes fail...
    wait_for_hits(&jwks, down_at + 3, Duration::from_secs(5)).await;
    // ...and both a cached and a never-seen token still verify.
    assert_eq!(status(listen, &cached).await, 200);
    let fresh = key.sign(&claims(ISSUER, AUDIENCE, "bob"));
    assert_eq!(status(listen, &fresh).await, 200);
    // Unknown kids are still refused as such, not as an outage.
    let unknown = key.sign_with_kid(&claims(ISSUER, AUDIENCE, "eve"), Some("nope"));
    assert_invalid_token(get(listen, &unknown).await, "unknown kid", &[]).await;
    assert!(gw.log_text().contains("keeping the last good key set"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_older_than_max_staleness_answer_503_not_401() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let (_gw, listen) = start_gateway(
        ISSUER,
        &jwks_keys(&jwks),
        "    refresh_interval: 300ms\n    max_staleness: 1s",
        &upstream,
    );
    let cached = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    assert_eq!(status(listen, &cached).await, 200);
    jwks.set_failing(true);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let fresh = key.sign(&claims(ISSUER, AUDIENCE, "bob"));
    for (case, token) in [("cached", &cached), ("fresh", &fresh)] {
        let response = get(listen, token).await;
        assert_eq!(response.status(), 503, "{case}");
        assert_eq!(response.headers()["retry-after"], "1", "{case}");
        assert!(
            response.headers().get("www-authenticate").is_none(),
            "{case}: the token is not at fault"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
    // The provider comes back: so does service.
    jwks.set_failing(false);
    let recovered = eventually(Duration::from_secs(3), async || {
        status(listen, &cached).await == 200
    })
    .await;
    assert!(recovered, "still refusing after the provider recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_at_start_up_answers_503_until_it_recovers() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    jwks.set_failing(true);
    let (upstream, upstream_hits) = counting_echo().await;
    // Default refresh interval (5m): recovery must not wait for it.
    let (gw, listen) = start_gateway(
        ISSUER,
        &jwks_keys(&jwks),
        "    min_refetch_interval: 1s",
        &upstream,
    );
    assert!(jwks.hits() >= 1, "the start-up fetch was not even tried");
    let token = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    let response = get(listen, &token).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    // Without a token it is still a plain 401: nothing to verify.
    let response = client()
        .get(format!("http://{listen}/api/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(upstream_hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(gw.log_text().contains("cannot fetch signing keys"));

    // Failed fetches are retried at most 10s apart, whatever the refresh
    // interval, so the provider's return is noticed within seconds.
    jwks.set_failing(false);
    let recovered = eventually(Duration::from_secs(15), async || {
        status(listen, &token).await == 200
    })
    .await;
    assert!(
        recovered,
        "still 503 after the provider came back ({} fetches):\n{}",
        jwks.hits(),
        gw.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openid_connect_discovery_finds_the_keys() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let issuer = jwks.base();
    let (_gw, listen) = start_gateway(&issuer, "{ discovery: true }", "", &upstream);
    assert_eq!(jwks.discovery_hits(), 1);
    assert_eq!(jwks.hits(), 1);
    let token = key.sign(&claims(&issuer, AUDIENCE, "alice"));
    let response = get(listen, &token).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["headers"]["x-user-id"], "alice");
    // Rotation through discovery: an unknown kid re-reads the document.
    let next = SigningKey::rsa(Algorithm::RS256, "k2");
    jwks.set_keys(&[&key, &next]);
    let token = next.sign(&claims(&issuer, AUDIENCE, "bob"));
    assert_eq!(status(listen, &token).await, 200);
    assert_eq!(jwks.discovery_hits(), 2);
    assert_eq!(jwks.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_unchanged_providers_and_loads_new_ones_before_serving() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let other_key = SigningKey::rsa(Algorithm::RS256, "o1");
    let jwks = JwksServer::start(&[&key]).await;
    let other = JwksServer::start(&[&other_key]).await;
    let (upstream, _) = counting_echo().await;
    let (listen, admin) = (free_addr(), free_addr());
    let config = |with_other: bool| {
        let second = if with_other {
            format!(
                "  other:\n    issuer: https://other.test\n    audiences: [{AUDIENCE}]\n    keys: {{ jwks_url: \"{}\" }}\n    algorithms: [RS256]\n",
                other.jwks_url()
            )
        } else {
            String::new()
        };
        format!(
            r#"
server:
  watch_config: false
admin:
  listen: {admin}
identity_providers:
  idp:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [ES256]
{second}
frontends:
  - name: web
    listen: {listen}
    auth: {{ require: jwt }}
    routes:
      - match: {{ path_prefix: /api }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#,
            jwks = jwks.jwks_url(),
            upstream = upstream.addr,
        )
    };
    let gw = GatewayProcess::start(&config(false), &[listen, admin]);
    let token = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    let other_token = other_key.sign(&claims("https://other.test", AUDIENCE, "olga"));
    assert_eq!(status(listen, &token).await, 200);
    assert_invalid_token(get(listen, &other_token).await, "not configured yet", &[]).await;
    assert_eq!((jwks.hits(), other.hits()), (1, 0));

    gw.rewrite_config(&config(true));
    let response = client()
        .post(format!("http://{admin}/reload"))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reloaded"], true, "{body}\n{}", gw.log_text());
    // The new provider's keys were fetched before the reload answered; the
    // unchanged provider kept its keys without a fetch.
    assert_eq!((jwks.hits(), other.hits()), (1, 1));
    assert_eq!(status(listen, &other_token).await, 200);
    assert_eq!(status(listen, &token).await, 200);
    assert_eq!((jwks.hits(), other.hits()), (1, 1));
}

/// A gateway whose frontend does not require a token (`require` is
/// `frontend_require`, or unset), with role and scope routes that need one
/// anyway and an open route.
fn authorization_gateway(
    jwks: &JwksServer,
    provider: &str,
    frontend_require: Option<&str>,
    upstream: &Upstream,
) -> (GatewayProcess, SocketAddr) {
    let listen = free_addr();
    let auth =
        frontend_require.map_or(String::new(), |r| format!("    auth: {{ require: {r} }}\n"));
    let yaml = format!(
        r#"
identity_providers:
  idp:
    issuer: "{ISSUER}"
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [ES256]
{provider}
frontends:
  - name: web
    listen: {listen}
{auth}    routes:
      - match: {{ path_prefix: /admin }}
        auth: {{ roles: [admin] }}
        service: api
      - match: {{ path_prefix: /orders }}
        auth: {{ scopes: ["orders:read"] }}
        service: api
      - match: {{ path_prefix: /open }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#,
        jwks = jwks.jwks_url(),
        upstream = upstream.addr,
    );
    (GatewayProcess::start(&yaml, &[listen]), listen)
}

async fn get_path(listen: SocketAddr, path: &str, token: &str) -> reqwest::Response {
    client()
        .get(format!("http://{listen}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// A token that passes both the role and the scope route.
fn privileged_token(key: &SigningKey, subject: &str) -> String {
    key.sign(&tokens::claims_with(
        ISSUER,
        AUDIENCE,
        subject,
        serde_json::json!({"role": "admin", "scope": "orders:read"}),
    ))
}

/// Asserts the 503 of an unavailable provider: problem+json, `Retry-After`,
/// no challenge (the token is not at fault).
async fn assert_unavailable(response: reqwest::Response, case: &str) {
    assert_eq!(response.status(), 503, "{case}");
    assert_eq!(response.headers()["retry-after"], "1", "{case}");
    assert!(
        response.headers().get("www-authenticate").is_none(),
        "{case}: the token is not at fault"
    );
    support::assert_problem(response, 503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_scope_routes_answer_503_when_the_provider_is_down_from_the_start() {
    for frontend_require in [None, Some("none")] {
        let key = SigningKey::ec(Algorithm::ES256, "k1");
        let jwks = JwksServer::start(&[&key]).await;
        jwks.set_failing(true);
        let (upstream, upstream_hits) = counting_echo().await;
        let (gw, listen) = authorization_gateway(
            &jwks,
            "    refresh_interval: 1s\n    min_refetch_interval: 1s",
            frontend_require,
            &upstream,
        );
        assert!(jwks.hits() >= 1, "the start-up fetch was not even tried");
        let token = privileged_token(&key, "alice");
        for path in ["/admin/x", "/orders/x"] {
            let case = format!("require {frontend_require:?}, {path}");
            assert_unavailable(get_path(listen, path, &token).await, &case).await;
            // Without a token there is nothing to verify: still a 401.
            let response = client()
                .get(format!("http://{listen}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{case}, no token");
        }
        assert_eq!(upstream_hits.load(Ordering::SeqCst), 0);
        // On the open route the unverifiable token just means anonymous.
        let response = get_path(listen, "/open/x", &token).await;
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert!(body["headers"].get("x-user-id").is_none(), "{body}");

        // The provider comes back: the same token is let in.
        jwks.set_failing(false);
        let recovered = eventually(Duration::from_secs(5), async || {
            get_path(listen, "/admin/x", &token).await.status() == 200
        })
        .await;
        assert!(recovered, "still refusing:\n{}", gw.log_text());
        assert_eq!(get_path(listen, "/orders/x", &token).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_scope_routes_answer_503_when_the_keys_are_stale() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let (_gw, listen) = authorization_gateway(
        &jwks,
        "    refresh_interval: 300ms\n    max_staleness: 1s",
        Some("none"),
        &upstream,
    );
    let cached = privileged_token(&key, "alice");
    for path in ["/admin/x", "/orders/x"] {
        assert_eq!(
            get_path(listen, path, &cached).await.status(),
            200,
            "{path}"
        );
    }
    jwks.set_failing(true);
    let stale = eventually(Duration::from_secs(5), async || {
        get_path(listen, "/admin/x", &cached).await.status() == 503
    })
    .await;
    assert!(stale, "the keys never went stale");
    let fresh = privileged_token(&key, "bob");
    for path in ["/admin/x", "/orders/x"] {
        for (case, token) in [("cached", &cached), ("fresh", &fresh)] {
            let case = format!("{case} {path}");
            assert_unavailable(get_path(listen, path, token).await, &case).await;
        }
    }
    // A token without the role is no better off: the key set decides first.
    let customer = key.sign(&tokens::claims_with(
        ISSUER,
        AUDIENCE,
        "carol",
        serde_json::json!({"role": "customer"}),
    ));
    assert_unavailable(get_path(listen, "/admin/x", &customer).await, "customer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_unusable_key_set_keeps_the_last_good_keys() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let (gw, listen) = start_gateway(
        ISSUER,
        &jwks_keys(&jwks),
        "    refresh_interval: 300ms\n    min_refetch_interval: 1h",
        &upstream,
    );
    let cached = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    assert_eq!(status(listen, &cached).await, 200);

    // Nothing published, then only keys the gateway cannot use (a
    // symmetric key, an encryption key, garbage).
    let mut encryption = key.jwk();
    encryption["use"] = "enc".into();
    encryption["kid"] = "k1".into();
    let unusable = serde_json::json!({"keys": [
        {"kty": "oct", "kid": "k1", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
        encryption,
        {"kty": "EC", "kid": "k1", "crv": "P-256"},
    ]});
    for (case, document) in [
        ("empty", serde_json::json!({"keys": []})),
        ("unusable", unusable),
    ] {
        jwks.set_document(document);
        let published = jwks.hits();
        wait_for_hits(&jwks, published + 3, Duration::from_secs(5)).await;
        // Both the cached token and one never seen still verify.
        assert_eq!(status(listen, &cached).await, 200, "{case}: cached");
        let fresh = key.sign(&claims(ISSUER, AUDIENCE, &format!("bob-{case}")));
        assert_eq!(
            status(listen, &fresh).await,
            200,
            "{case}: fresh\n{}",
            gw.log_text()
        );
    }
    assert!(gw.log_text().contains("holds no usable key"));

    // A real rotation still goes through.
    let next = SigningKey::ec(Algorithm::ES256, "k2");
    jwks.set_keys(&[&next]);
    let rotated = jwks.hits();
    wait_for_hits(&jwks, rotated + 2, Duration::from_secs(5)).await;
    assert_invalid_token(get(listen, &cached).await, "rotated out", &[]).await;
    let token = next.sign(&claims(ISSUER, AUDIENCE, "carol"));
    assert_eq!(status(listen, &token).await, 200);
}
