//! Bearer JWT verification end to end: every supported algorithm, every way a
//! token can be bad, missing tokens, and scope and role rules.

mod support;
#[path = "support/tokens.rs"]
mod tokens;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::upstream::Upstream;
use support::{GatewayProcess, client, free_addr};
use tokens::{
    JwksServer, SigningKey, assert_invalid_token, challenge, claims, claims_with, counting_echo,
    now, sign_hs256_with, unsigned_token, with_payload,
};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "shop-api";
const HS_ISSUER: &str = "https://hs.test";
const HS_SECRET: &str = "hs-secret-0123456789-0123456789-0123456789";

async fn get(listen: SocketAddr, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client().get(format!("http://{listen}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

/// Asserts a 200 from the upstream and returns the headers it received.
async fn assert_ok(response: reqwest::Response, case: &str) -> Value {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "{case}: {text}");
    let body: Value = serde_json::from_str(&text).expect("json");
    body["headers"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_algorithm_is_accepted() {
    let rsa = SigningKey::rsa(Algorithm::RS256, "rs256");
    let rsa_keys: Vec<SigningKey> = [
        (Algorithm::RS256, "rs256"),
        (Algorithm::RS384, "rs384"),
        (Algorithm::RS512, "rs512"),
        (Algorithm::PS256, "ps256"),
        (Algorithm::PS384, "ps384"),
        (Algorithm::PS512, "ps512"),
    ]
    .iter()
    .map(|(alg, kid)| rsa.with_alg(*alg, kid))
    .collect();
    let es256 = SigningKey::ec(Algorithm::ES256, "es256");
    let es384 = SigningKey::ec(Algorithm::ES384, "es384");
    let eddsa = SigningKey::ed25519("ed");
    let mut published: Vec<&SigningKey> = rsa_keys.iter().collect();
    published.extend([&es256, &es384, &eddsa]);
    let jwks = JwksServer::start(&published).await;
    let (upstream, _) = counting_echo().await;
    let listen = free_addr();
    let yaml = format!(
        r#"
identity_providers:
  idp:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA]
  hs:
    issuer: {HS_ISSUER}
    audiences: [{AUDIENCE}]
    keys: {{ hs_secret: "{HS_SECRET}" }}
    algorithms: [HS256, HS384, HS512]
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
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);

    let mut signers: Vec<(&SigningKey, &str)> = published.iter().map(|k| (*k, ISSUER)).collect();
    let hs: Vec<SigningKey> = [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
        .iter()
        .map(|alg| SigningKey::hmac(*alg, HS_SECRET.as_bytes()))
        .collect();
    signers.extend(hs.iter().map(|k| (k, HS_ISSUER)));
    assert_eq!(signers.len(), 12);
    for (key, issuer) in signers {
        let case = format!("{:?}", key.alg);
        let subject = format!("user-{case}");
        let token = key.sign(&claims(issuer, AUDIENCE, &subject));
        let headers = assert_ok(get(listen, "/api/x", Some(&token)).await, &case).await;
        assert_eq!(headers["x-user-id"], subject.as_str(), "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_401_invalid_token_without_leaking_keys() {
    let key = SigningKey::rsa(Algorithm::RS256, "main");
    let stranger = SigningKey::rsa(Algorithm::RS256, "stranger");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, upstream_hits) = counting_echo().await;
    let listen = free_addr();
    // `mixed` accepts RS256 and HS256 (with its own secret) from the same
    // issuer: the classic setup for algorithm confusion. `strict` takes RS256
    // only, from the same key set.
    let yaml = format!(
        r#"
identity_providers:
  mixed:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}", hs_secret: "{HS_SECRET}" }}
    algorithms: [RS256, HS256]
    max_token_bytes: 2KiB
  strict:
    issuer: https://strict.test
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [RS256]
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
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);

    // The same setup accepts a good token from each provider.
    let good = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    assert_ok(get(listen, "/api/x", Some(&good)).await, "valid mixed").await;
    let good_strict = key.sign(&claims("https://strict.test", AUDIENCE, "alice"));
    assert_ok(
        get(listen, "/api/x", Some(&good_strict)).await,
        "valid strict",
    )
    .await;
    let served = upstream_hits.load(Ordering::SeqCst);
    assert_eq!(served, 2);

    let now = now();
    let pem = key.public_pem();
    let jwk = key.jwk();
    let modulus = jwk["n"].as_str().expect("n").to_string();
    let pem_body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    // Nothing about the keys may appear in an answer.
    let secrets = [HS_SECRET, &modulus, &pem_body[..40]];

    let mut cases: Vec<(String, String)> = vec![
        (
            "alg none".into(),
            unsigned_token(&claims(ISSUER, AUDIENCE, "mallory")),
        ),
        (
            "alg none with kid".into(),
            format!(
                "{}.{}.",
                tokens::b64url(br#"{"alg":"none","typ":"JWT","kid":"main"}"#),
                tokens::b64url(claims(ISSUER, AUDIENCE, "mallory").to_string().as_bytes())
            ),
        ),
        (
            "expired".into(),
            key.sign(&claims_with(
                ISSUER,
                AUDIENCE,
                "alice",
                json!({"iat": now - 1200, "nbf": now - 1200, "exp": now - 300}),
            )),
        ),
        (
            "not yet valid".into(),
            key.sign(&claims_with(
                ISSUER,
                AUDIENCE,
                "alice",
                json!({"nbf": now + 300}),
            )),
        ),
        (
            "issued in the future".into(),
            key.sign(&claims_with(
                ISSUER,
                AUDIENCE,
                "alice",
                json!({"iat": now + 300}),
            )),
        ),
        (
            "no exp".into(),
            key.sign(&json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now})),
        ),
        (
            "wrong issuer".into(),
            key.sign(&claims("https://evil.test", AUDIENCE, "alice")),
        ),
        (
            "no issuer".into(),
            key.sign(&json!({"aud": AUDIENCE, "sub": "alice", "exp": now + 600})),
        ),
        (
            "wrong audience".into(),
            key.sign(&claims(ISSUER, "other-api", "alice")),
        ),
        (
            "tampered payload".into(),
            with_payload(
                &good,
                &claims_with(ISSUER, AUDIENCE, "alice", json!({"role": "admin"})),
            ),
        ),
        (
            "unknown kid".into(),
            stranger.sign(&claims(ISSUER, AUDIENCE, "alice")),
        ),
        (
            "known kid, other key".into(),
            stranger.sign_with_kid(&claims(ISSUER, AUDIENCE, "alice"), Some("main")),
        ),
        (
            "oversized".into(),
            key.sign(&claims_with(
                ISSUER,
                AUDIENCE,
                "alice",
                json!({"padding": "x".repeat(3000)}),
            )),
        ),
        ("malformed".into(), "abc".into()),
        ("two parts".into(), "abc.def".into()),
    ];
    // Algorithm confusion: HS256 "signed" with the RSA public key, in every
    // form an attacker could pick it up in, against both providers.
    for (form, secret) in [
        ("PEM", pem.as_bytes().to_vec()),
        ("SPKI DER", key.public_spki.clone()),
        ("PKCS#1 DER", key.public_raw.clone()),
        ("JWK n", modulus.as_bytes().to_vec()),
    ] {
        for (provider, issuer) in [("mixed", ISSUER), ("strict", "https://strict.test")] {
            for kid in [Some("main"), None] {
                cases.push((
                    format!("HS256 confusion with the {form} vs {provider}, kid {kid:?}"),
                    sign_hs256_with(&secret, &claims(issuer, AUDIENCE, "mallory"), kid),
                ));
            }
        }
    }
    for (case, token) in &cases {
        let response = client()
            .get(format!("http://{listen}/api/x"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .expect("request");
        assert_invalid_token(response, case, &secrets).await;
    }
    assert_eq!(
        upstream_hits.load(Ordering::SeqCst),
        served,
        "a refused token reached the upstream"
    );
    // The oversized token is refused for its size, not for something else.
    let oversized = &cases.iter().find(|(c, _)| c == "oversized").unwrap().1;
    assert!(oversized.len() > 2048);
    let body = assert_invalid_token(
        get(listen, "/api/x", Some(oversized)).await,
        "size",
        &secrets,
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("too large"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_a_bare_bearer_challenge() {
    let key = SigningKey::ec(Algorithm::ES256, "k");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, upstream_hits) = counting_echo().await;
    let listen = free_addr();
    let yaml = format!(
        r#"
identity_providers:
  idp:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [ES256]
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: /private }}
        auth: {{ require: jwt }}
        service: api
      - match: {{ path_prefix: /public }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#,
        jwks = jwks.jwks_url(),
        upstream = upstream.addr,
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);

    let no_header = get(listen, "/private/x", None).await;
    let basic = client()
        .get(format!("http://{listen}/private/x"))
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .send()
        .await
        .unwrap();
    for (case, response) in [("no header", no_header), ("Basic", basic)] {
        assert_eq!(response.status(), 401, "{case}");
        assert_eq!(
            challenge(&response).as_deref(),
            Some(r#"Bearer realm="concierge""#),
            "{case}"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], 401);
    }
    assert_eq!(upstream_hits.load(Ordering::SeqCst), 0);
    // The public route on the same frontend needs nothing; a valid token
    // there still identifies the caller.
    assert_ok(get(listen, "/public/x", None).await, "anonymous public").await;
    let token = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    let headers = assert_ok(get(listen, "/public/x", Some(&token)).await, "public").await;
    assert_eq!(headers["x-user-id"], "alice");
    assert!(headers.get("authorization").is_none());
    // There, a bad token is treated as absent (docs/security.md): anonymous.
    let expired = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "alice",
        json!({"exp": now() - 3600}),
    ));
    for bad in ["abc", expired.as_str()] {
        let headers = assert_ok(get(listen, "/public/x", Some(bad)).await, "bad token").await;
        assert!(headers.get("x-user-id").is_none(), "{headers}");
    }
    // The auth scheme is case-insensitive (RFC 9110 section 11.1).
    let response = client()
        .get(format!("http://{listen}/private/x"))
        .header("authorization", format!("bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_ok(response, "lower-case scheme").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leeway_tolerates_skew_and_cached_tokens_still_expire() {
    let key = SigningKey::ec(Algorithm::ES256, "k");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let listen = free_addr();
    let yaml = format!(
        r#"
identity_providers:
  idp:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [ES256]
    leeway: 5s
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
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let now = now();
    // An issuer whose clock runs 3s ahead: within the 5s leeway.
    let ahead = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "alice",
        json!({"iat": now + 3, "nbf": now + 3}),
    ));
    assert_ok(get(listen, "/api", Some(&ahead)).await, "clock ahead").await;
    // Expired 2s ago: within the leeway too.
    let just_expired = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "alice",
        json!({"exp": now - 2}),
    ));
    assert_ok(
        get(listen, "/api", Some(&just_expired)).await,
        "just expired",
    )
    .await;
    // Beyond it, refused.
    let ahead_too_far = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "alice",
        json!({"nbf": now + 20}),
    ));
    assert_invalid_token(get(listen, "/api", Some(&ahead_too_far)).await, "nbf", &[]).await;

    // A token verified (and cached) shortly before it expires stops working
    // once exp plus the leeway has passed: here after 2 to 3 seconds.
    let signed_at = tokens::now();
    let short = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "bob",
        json!({"exp": signed_at - 3}),
    ));
    // RFC 7519 NumericDates may have fractions; they expire all the same.
    let fractional = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "bob",
        json!({"exp": signed_at as f64 - 3.0 + 0.25, "iat": signed_at as f64 - 60.5}),
    ));
    for token in [&short, &fractional] {
        assert_ok(get(listen, "/api", Some(token)).await, "short-lived").await;
        assert_ok(
            get(listen, "/api", Some(token)).await,
            "short-lived, cached",
        )
        .await;
    }
    while tokens::now() < signed_at + 3 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let body = assert_invalid_token(
        get(listen, "/api", Some(&fractional)).await,
        "fractional exp",
        &[],
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    // A fractional iat in the future is refused like an integer one.
    let fractional_iat = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "bob",
        json!({"iat": tokens::now() as f64 + 60.5}),
    ));
    assert_invalid_token(
        get(listen, "/api", Some(&fractional_iat)).await,
        "fractional iat",
        &[],
    )
    .await;
    let body = assert_invalid_token(get(listen, "/api", Some(&short)).await, "expired", &[]).await;
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

/// One provider with the default `role` claim, one reading Keycloak's
/// `realm_access.roles`, and routes with role and scope rules.
async fn authorization_gateway(
    jwks: &JwksServer,
    upstream: &Upstream,
) -> (GatewayProcess, SocketAddr) {
    let listen = free_addr();
    let yaml = format!(
        r#"
identity_providers:
  idp:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [ES256]
  keycloak:
    issuer: https://kc.test/realms/shop
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [ES256]
    role_claim: realm_access.roles
frontends:
  - name: web
    listen: {listen}
    auth: {{ require: jwt }}
    routes:
      - match: {{ path_prefix: /admin }}
        auth: {{ roles: [admin] }}
        service: api
      - match: {{ path_prefix: /orders-any }}
        auth: {{ scopes: ["orders:read", "orders:write"] }}
        service: api
      - match: {{ path_prefix: /orders-all }}
        auth: {{ scopes: ["orders:read", "orders:write"], match: all }}
        service: api
      - match: {{ path_prefix: /kc-admin }}
        auth: {{ providers: [keycloak], roles: [admin] }}
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

async fn assert_insufficient_scope(response: reqwest::Response, case: &str) {
    assert_eq!(response.status(), 403, "{case}");
    assert_eq!(
        challenge(&response).as_deref(),
        Some(r#"Bearer realm="concierge", error="insufficient_scope""#),
        "{case}"
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{case}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 403, "{case}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_rules_refuse_403_insufficient_scope() {
    let key = SigningKey::ec(Algorithm::ES256, "k");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, upstream_hits) = counting_echo().await;
    let (_gw, listen) = authorization_gateway(&jwks, &upstream).await;

    let customer = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "carol",
        json!({"role": "customer"}),
    ));
    let admin = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "ada",
        json!({"role": ["customer", "admin"]}),
    ));
    let no_role = key.sign(&claims(ISSUER, AUDIENCE, "nobody"));
    assert_insufficient_scope(get(listen, "/admin/x", Some(&customer)).await, "customer").await;
    assert_insufficient_scope(get(listen, "/admin/x", Some(&no_role)).await, "no role").await;
    assert_eq!(upstream_hits.load(Ordering::SeqCst), 0);
    let headers = assert_ok(get(listen, "/admin/x", Some(&admin)).await, "admin").await;
    assert_eq!(headers["x-role"], "customer,admin");
    // The customer is fine where no role is needed.
    assert_ok(
        get(listen, "/open", Some(&customer)).await,
        "customer on open",
    )
    .await;
    // A missing token on a role route is still a 401, not a 403.
    let response = get(listen, "/admin/x", None).await;
    assert_eq!(response.status(), 401);
    assert_eq!(
        challenge(&response).as_deref(),
        Some(r#"Bearer realm="concierge""#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_rules_any_and_all() {
    let key = SigningKey::ec(Algorithm::ES256, "k");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let (_gw, listen) = authorization_gateway(&jwks, &upstream).await;

    let token = |extra: Value| key.sign(&claims_with(ISSUER, AUDIENCE, "sam", extra));
    let read = token(json!({"scope": "orders:read"}));
    let write = token(json!({"scope": "profile orders:write"}));
    let both = token(json!({"scope": "orders:read orders:write"}));
    let both_scp = token(json!({"scp": ["orders:write", "orders:read"]}));
    let unrelated = token(json!({"scope": "profile email"}));
    let none = token(json!({}));

    for (name, t) in [("read", &read), ("write", &write), ("both", &both)] {
        assert_ok(get(listen, "/orders-any", Some(t)).await, name).await;
    }
    let headers = assert_ok(get(listen, "/orders-any", Some(&both_scp)).await, "scp").await;
    assert_eq!(headers["x-scopes"], "orders:write orders:read");
    for (name, t) in [("unrelated", &unrelated), ("none", &none)] {
        assert_insufficient_scope(get(listen, "/orders-any", Some(t)).await, name).await;
    }

    for (name, t) in [("both", &both), ("both via scp", &both_scp)] {
        assert_ok(get(listen, "/orders-all", Some(t)).await, name).await;
    }
    for (name, t) in [
        ("read only", &read),
        ("write only", &write),
        ("unrelated", &unrelated),
        ("none", &none),
    ] {
        assert_insufficient_scope(get(listen, "/orders-all", Some(t)).await, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_claim_path_reads_nested_roles() {
    let key = SigningKey::ec(Algorithm::ES256, "k");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let (_gw, listen) = authorization_gateway(&jwks, &upstream).await;
    const KC: &str = "https://kc.test/realms/shop";

    let nested_admin = key.sign(&claims_with(
        KC,
        AUDIENCE,
        "kim",
        json!({"realm_access": {"roles": ["offline_access", "admin"]}}),
    ));
    let headers = assert_ok(
        get(listen, "/kc-admin", Some(&nested_admin)).await,
        "nested admin",
    )
    .await;
    assert_eq!(headers["x-role"], "offline_access,admin");
    // A top-level `role` means nothing to this provider.
    let top_level = key.sign(&claims_with(
        KC,
        AUDIENCE,
        "kim",
        json!({"role": "admin", "realm_access": {"roles": ["customer"]}}),
    ));
    assert_insufficient_scope(
        get(listen, "/kc-admin", Some(&top_level)).await,
        "top level",
    )
    .await;
    // The route accepts only the keycloak provider, whatever the token says,
    // and even once the token is verified and cached on another route.
    let other_idp = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "kim",
        json!({"role": "admin", "realm_access": {"roles": ["admin"]}}),
    ));
    assert_ok(get(listen, "/admin", Some(&other_idp)).await, "idp admin").await;
    assert_invalid_token(
        get(listen, "/kc-admin", Some(&other_idp)).await,
        "other provider",
        &[],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_exp_false_still_enforces_a_present_exp() {
    let key = SigningKey::ec(Algorithm::ES256, "k");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let listen = free_addr();
    let yaml = format!(
        r#"
identity_providers:
  idp:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [ES256]
    require_exp: false
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
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let now = now();
    // `exp` may be left out...
    let no_exp = key.sign(&json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "svc", "iat": now}));
    assert_ok(get(listen, "/api", Some(&no_exp)).await, "no exp").await;
    // ...but one that is there still counts.
    let expired = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "svc",
        json!({"exp": now - 3600}),
    ));
    let body =
        assert_invalid_token(get(listen, "/api", Some(&expired)).await, "expired", &[]).await;
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

/// One provider `idp` with `provider` as its `keys:` and extra settings, in
/// front of `upstream` on `/api` (which requires a token); `extra` goes at
/// the top of the file (e.g. an admin listener).
fn single_provider_config(
    listen: SocketAddr,
    provider: &str,
    extra: &str,
    upstream: &Upstream,
) -> String {
    format!(
        r#"
{extra}
identity_providers:
  idp:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
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
    )
}

async fn reload(admin: SocketAddr) -> (u16, Value) {
    let response = client()
        .post(format!("http://{admin}/reload"))
        .send()
        .await
        .expect("reload");
    let status = response.status().as_u16();
    (status, response.json().await.expect("reload JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pem_key_file_verifies_and_is_reread_on_reload() {
    let first = SigningKey::ec(Algorithm::ES256, "first");
    let second = SigningKey::ec(Algorithm::ES256, "second");
    let (upstream, upstream_hits) = counting_echo().await;
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("idp.pem");
    std::fs::write(&pem, first.public_pem()).unwrap();
    let config = dir.path().join("concierge.yaml");
    std::fs::write(
        &config,
        single_provider_config(
            listen,
            &format!(
                "    keys: {{ file: \"{}\" }}\n    algorithms: [ES256]",
                pem.display()
            ),
            &format!("server:\n  watch_config: false\nadmin:\n  listen: {admin}"),
            &upstream,
        ),
    )
    .unwrap();
    let gw = GatewayProcess::start_in(dir, config, &[listen, admin]);

    // A PEM file holds one key without a kid: tokens name none.
    let old = first.sign_with_kid(&claims(ISSUER, AUDIENCE, "alice"), None);
    let new = second.sign_with_kid(&claims(ISSUER, AUDIENCE, "bob"), None);
    let headers = assert_ok(get(listen, "/api/x", Some(&old)).await, "first key").await;
    assert_eq!(headers["x-user-id"], "alice");
    assert_ok(get(listen, "/api/x", Some(&old)).await, "first key, cached").await;
    assert_invalid_token(get(listen, "/api/x", Some(&new)).await, "not yet", &[]).await;

    // The key file is replaced; the configuration text stays the same.
    std::fs::write(&pem, second.public_pem()).unwrap();
    let (status, body) = reload(admin).await;
    assert_eq!(status, 200, "{body}\n{}", gw.log_text());
    assert_eq!(body["reloaded"], true);
    let headers = assert_ok(get(listen, "/api/x", Some(&new)).await, "second key").await;
    assert_eq!(headers["x-user-id"], "bob");
    // The file's key has no kid, so it also verifies tokens that name one.
    let named = second.sign_with_kid(&claims(ISSUER, AUDIENCE, "dave"), Some("idp-2026"));
    assert_ok(
        get(listen, "/api/x", Some(&named)).await,
        "second key, a kid",
    )
    .await;
    // The old key's tokens are refused, the cached one included.
    assert_invalid_token(get(listen, "/api/x", Some(&old)).await, "old, cached", &[]).await;
    let fresh_old = first.sign_with_kid(&claims(ISSUER, AUDIENCE, "carol"), None);
    assert_invalid_token(
        get(listen, "/api/x", Some(&fresh_old)).await,
        "old, fresh",
        &[],
    )
    .await;

    // A broken file is refused by the reload and changes nothing.
    std::fs::write(
        &pem,
        "-----BEGIN PUBLIC KEY-----\nnonsense\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let (status, body) = reload(admin).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reloaded"], false);
    assert!(body["errors"].to_string().contains("idp"), "{body}");
    assert_ok(get(listen, "/api/x", Some(&new)).await, "after a bad file").await;
    assert_invalid_token(get(listen, "/api/x", Some(&old)).await, "still old", &[]).await;

    // A good file with a config refused for another reason (found after
    // the providers are built) changes nothing either: the running
    // snapshot keeps its keys.
    std::fs::write(&pem, first.public_pem()).unwrap();
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let broken = text.replace(
        "    auth: { require: jwt }\n",
        "    auth: { require: jwt }\n    cors: { allow_origins: [\"*\"], allow_credentials: true }\n",
    );
    assert_ne!(broken, text);
    gw.rewrite_config(&broken);
    let (status, body) = reload(admin).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reloaded"], false);
    assert_ok(
        get(listen, "/api/x", Some(&new)).await,
        "after a refused reload",
    )
    .await;
    assert_invalid_token(
        get(listen, "/api/x", Some(&fresh_old)).await,
        "a refused reload",
        &[],
    )
    .await;
    assert_eq!(upstream_hits.load(Ordering::SeqCst), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs_secret_from_an_environment_variable() {
    const VAR: &str = "CONCIERGE_TEST_IDP_HS256_SIGNING_SECRET";
    let secret = format!("env-secret-{:032x}", rand::random::<u128>());
    let (upstream, upstream_hits) = counting_echo().await;
    let listen = free_addr();
    let yaml = single_provider_config(
        listen,
        &format!("    keys: {{ hs_secret: \"${{{VAR}}}\" }}\n    algorithms: [HS256]"),
        "",
        &upstream,
    );
    assert!(yaml.contains(&format!("\"${{{VAR}}}\"")), "{yaml}");
    let _gw = GatewayProcess::start_with_env(&yaml, &[(VAR, &secret)], &[listen]);

    let token = sign_hs256_with(secret.as_bytes(), &claims(ISSUER, AUDIENCE, "svc"), None);
    let headers = assert_ok(get(listen, "/api/x", Some(&token)).await, "env secret").await;
    assert_eq!(headers["x-user-id"], "svc");
    // The placeholder text is not the secret, and neither is anything else.
    let literal = format!("${{{VAR}}}");
    assert!(literal.len() >= 32);
    for (case, wrong) in [
        ("the placeholder", literal.as_str()),
        ("another secret", HS_SECRET),
    ] {
        let token = sign_hs256_with(wrong.as_bytes(), &claims(ISSUER, AUDIENCE, "eve"), None);
        assert_invalid_token(get(listen, "/api/x", Some(&token)).await, case, &[&secret]).await;
    }
    assert_eq!(upstream_hits.load(Ordering::SeqCst), 1);
}

/// `claims` padded with a `pad` claim so the ES256 token `key` signs comes
/// out as long as possible without exceeding `limit` (`at_most`) or as
/// short as possible beyond it.
fn padded_token(key: &SigningKey, limit: usize, at_most: bool) -> String {
    let base = claims(ISSUER, AUDIENCE, "padded");
    let sign = |n: usize| {
        let mut claims = base.clone();
        claims["pad"] = "x".repeat(n).into();
        key.sign(&claims)
    };
    let mut n = (limit - sign(0).len()) * 3 / 4;
    while sign(n).len() > limit {
        n -= 1;
    }
    while sign(n + 1).len() <= limit {
        n += 1;
    }
    if at_most { sign(n) } else { sign(n + 1) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_leeway_is_30s_and_default_max_token_size_8kib() {
    let key = SigningKey::ec(Algorithm::ES256, "k");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let listen = free_addr();
    // Neither `leeway` nor `max_token_bytes` is set.
    let yaml = single_provider_config(
        listen,
        &format!(
            "    keys: {{ jwks_url: \"{}\" }}\n    algorithms: [ES256]",
            jwks.jwks_url()
        ),
        "",
        &upstream,
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let now = now();
    let token = |extra: Value| key.sign(&claims_with(ISSUER, AUDIENCE, "alice", extra));
    let long_ago = now - 3600;
    for (case, extra) in [
        (
            "expired 20s ago",
            json!({"iat": long_ago, "nbf": long_ago, "exp": now - 20}),
        ),
        ("valid in 20s", json!({"nbf": now + 20})),
        ("issued 20s ahead", json!({"iat": now + 20})),
    ] {
        assert_ok(get(listen, "/api/x", Some(&token(extra))).await, case).await;
    }
    for (case, extra, detail) in [
        (
            "expired 60s ago",
            json!({"iat": long_ago, "nbf": long_ago, "exp": now - 60}),
            "expired",
        ),
        ("valid in 60s", json!({"nbf": now + 60}), "not valid yet"),
        ("issued 60s ahead", json!({"iat": now + 60}), "future"),
    ] {
        let body =
            assert_invalid_token(get(listen, "/api/x", Some(&token(extra))).await, case, &[]).await;
        assert!(
            body["detail"].as_str().unwrap().contains(detail),
            "{case}: {body}"
        );
    }

    let under = padded_token(&key, 8192, true);
    let over = padded_token(&key, 8192, false);
    assert!((8190..=8192).contains(&under.len()), "{}", under.len());
    assert!((8193..=8195).contains(&over.len()), "{}", over.len());
    let headers = assert_ok(get(listen, "/api/x", Some(&under)).await, "under 8KiB").await;
    assert_eq!(headers["x-user-id"], "padded");
    let body =
        assert_invalid_token(get(listen, "/api/x", Some(&over)).await, "over 8KiB", &[]).await;
    assert!(
        body["detail"].as_str().unwrap().contains("too large"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jku_x5u_and_embedded_jwk_headers_are_never_followed() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    // The attacker's own key, also under the provider's kid, published on a
    // server of the attacker's.
    let attacker = SigningKey::ec(Algorithm::ES256, "k1");
    let attacker_jwks = JwksServer::start(&[&attacker]).await;
    let (x5u_server, x5u_hits) = counting_echo().await;
    let (upstream, upstream_hits) = counting_echo().await;
    let listen = free_addr();
    let yaml = single_provider_config(
        listen,
        &format!(
            "    keys: {{ jwks_url: \"{}\" }}\n    algorithms: [ES256]\n    min_refetch_interval: 1h",
            jwks.jwks_url()
        ),
        "",
        &upstream,
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let good = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    assert_ok(get(listen, "/api/x", Some(&good)).await, "the real key").await;

    let embedded: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(attacker.jwk()).expect("attacker JWK");
    let jku = attacker_jwks.jwks_url();
    let x5u = format!("http://{}/cert.pem", x5u_server.addr);
    let header = |kid: Option<&str>, jwk: bool, jku: Option<&str>, x5u: Option<&str>| {
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_string);
        header.jwk = jwk.then(|| embedded.clone());
        header.jku = jku.map(str::to_string);
        header.x5u = x5u.map(str::to_string);
        header
    };
    let cases = [
        ("jwk, provider's kid", header(Some("k1"), true, None, None)),
        ("jwk, no kid", header(None, true, None, None)),
        ("jwk, unknown kid", header(Some("evil"), true, None, None)),
        (
            "jku, provider's kid",
            header(Some("k1"), false, Some(&jku), None),
        ),
        (
            "jku, unknown kid",
            header(Some("evil"), false, Some(&jku), None),
        ),
        ("jku, no kid", header(None, false, Some(&jku), None)),
        (
            "x5u, provider's kid",
            header(Some("k1"), false, None, Some(&x5u)),
        ),
        (
            "x5u, unknown kid",
            header(Some("evil"), false, None, Some(&x5u)),
        ),
        ("all three", header(None, true, Some(&jku), Some(&x5u))),
        (
            "all three, kid",
            header(Some("k1"), true, Some(&jku), Some(&x5u)),
        ),
    ];
    for (case, header) in &cases {
        let token = attacker.sign_with_header(header, &claims(ISSUER, AUDIENCE, "mallory"));
        // The header really carries what the case says.
        let decoded = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(decoded.jku, header.jku, "{case}");
        assert_eq!(decoded.x5u, header.x5u, "{case}");
        assert_eq!(decoded.jwk.is_some(), header.jwk.is_some(), "{case}");
        assert_invalid_token(get(listen, "/api/x", Some(&token)).await, case, &[]).await;
    }
    assert_eq!(
        (attacker_jwks.hits(), attacker_jwks.discovery_hits()),
        (0, 0),
        "the gateway fetched the attacker's key set"
    );
    assert_eq!(
        x5u_hits.load(Ordering::SeqCst),
        0,
        "the gateway followed x5u"
    );
    assert_eq!(upstream_hits.load(Ordering::SeqCst), 1);
    // The provider's own key still works.
    assert_ok(
        get(listen, "/api/x", Some(&good)).await,
        "the real key again",
    )
    .await;
}
