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
