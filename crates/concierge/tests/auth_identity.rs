//! The trusted identity headers: set from the verified token, never from the
//! client (in any spelling), `Authorization` hidden unless asked for, and the
//! optional HMAC signature services can check.

mod support;
#[path = "support/tokens.rs"]
mod tokens;

use std::net::SocketAddr;

use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::upstream::{Upstream, raw_request};
use support::{GatewayProcess, client, free_addr};
use tokens::{JwksServer, SigningKey, claims_with, counting_echo, hex, now};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "shop-api";
const SIGNING_SECRET: &str = "identity-signing-secret-0123456789abcdef";

/// The client's attempts at passing itself off as someone else, in every
/// spelling a server might fold into the real header.
const SPOOFED: &[(&str, &str)] = &[
    ("X-User-ID", "spoofed-user"),
    ("x-user-id", "spoofed-user-2"),
    ("X_User_ID", "spoofed-user-3"),
    ("X-Role", "admin"),
    ("x_role", "admin"),
    ("X_ROLE", "superuser"),
    ("X-CONSUMER-ID", "acme"),
    ("x_consumer_id", "acme"),
    ("X-Scopes", "orders:write admin"),
    ("X_Scopes", "everything"),
    ("X-Identity-Signature", "t=1,v1=00"),
    ("x_identity_signature", "t=1,v1=00"),
];

/// Header names the upstream must never see from a client, folded.
fn is_identity_header(name: &str) -> bool {
    matches!(
        fold(name).as_str(),
        "x-user-id" | "x-role" | "x-scopes" | "x-consumer-id"
    )
}

/// How servers that fold `_` into `-` see a header name.
fn fold(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

struct Setup {
    _gw: GatewayProcess,
    _jwks: JwksServer,
    _upstream: Upstream,
    key: SigningKey,
    /// Routes: `/public` (no auth), `/private` (jwt).
    guarded: SocketAddr,
    /// Same routes, `keep_authorization: true` and signed identity headers.
    signed: SocketAddr,
    /// No auth configured anywhere on this frontend.
    open: SocketAddr,
}

async fn setup() -> Setup {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let (guarded, signed, open) = (free_addr(), free_addr(), free_addr());
    let yaml = format!(
        r#"
identity_providers:
  idp:
    issuer: {ISSUER}
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [ES256]
frontends:
  - name: guarded
    listen: {guarded}
    routes:
      - match: {{ path_prefix: /private }}
        auth: {{ require: jwt }}
        service: api
      - match: {{ path_prefix: /public }}
        service: api
  - name: signed
    listen: {signed}
    identity_headers:
      keep_authorization: true
      signature: {{ hmac_secret: "{SIGNING_SECRET}" }}
    routes:
      - match: {{ path_prefix: /private }}
        auth: {{ require: jwt }}
        service: api
      - match: {{ path_prefix: /public }}
        service: api
  - name: open
    listen: {open}
    routes:
      - match: {{ path_prefix: / }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#,
        jwks = jwks.jwks_url(),
        upstream = upstream.addr,
    );
    let gw = GatewayProcess::start(&yaml, &[guarded, signed, open]);
    Setup {
        _gw: gw,
        _jwks: jwks,
        _upstream: upstream,
        key,
        guarded,
        signed,
        open,
    }
}

fn token(key: &SigningKey) -> String {
    key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "user-42",
        json!({"role": ["customer", "beta"], "scope": "orders:read orders:write"}),
    ))
}

/// Sends a GET with `headers` byte for byte (names keep their case and
/// underscores) and returns the headers the upstream received.
async fn upstream_headers(
    listen: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> serde_json::Map<String, Value> {
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let response = raw_request(listen, request.as_bytes()).await;
    assert_eq!(
        response.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&response.body)
    );
    response.json()["headers"]
        .as_object()
        .expect("headers")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_reaches_the_upstream_and_authorization_does_not() {
    let s = setup().await;
    let token = token(&s.key);
    let response = client()
        .get(format!("http://{}/private/me", s.guarded))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let headers = &body["headers"];
    assert_eq!(headers["x-user-id"], "user-42");
    assert_eq!(headers["x-role"], "customer,beta");
    assert_eq!(headers["x-scopes"], "orders:read orders:write");
    assert!(headers.get("x-consumer-id").is_none(), "{headers}");
    assert!(headers.get("authorization").is_none(), "{headers}");
    assert!(headers.get("x-identity-signature").is_none(), "{headers}");

    // `keep_authorization: true` forwards the token as it came.
    let response = client()
        .get(format!("http://{}/private/me", s.signed))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["headers"]["authorization"], format!("Bearer {token}"));
    assert_eq!(body["headers"]["x-user-id"], "user-42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let s = setup().await;
    let token = token(&s.key);
    let bearer = format!("Bearer {token}");

    // Anonymous, on a public route: every spelling is dropped.
    for (listen, path) in [
        (s.guarded, "/public/x"),
        (s.signed, "/public/x"),
        (s.open, "/anything"),
    ] {
        let headers = upstream_headers(listen, path, SPOOFED).await;
        let leaked: Vec<&String> = headers.keys().filter(|k| is_identity_header(k)).collect();
        assert!(leaked.is_empty(), "{listen}{path} leaked {leaked:?}");
    }

    // With a valid token the gateway's values win, and only they arrive:
    // on a protected route, a public one, and a frontend with no auth
    // settings at all (a verified token still identifies the caller there).
    let mut with_token = SPOOFED.to_vec();
    with_token.push(("Authorization", &bearer));
    for (listen, path) in [
        (s.guarded, "/private/x"),
        (s.guarded, "/public/x"),
        (s.open, "/x"),
    ] {
        let headers = upstream_headers(listen, path, &with_token).await;
        assert_eq!(headers["x-user-id"], "user-42", "{path}");
        assert_eq!(headers["x-role"], "customer,beta", "{path}");
        assert_eq!(headers["x-scopes"], "orders:read orders:write", "{path}");
        let mut identity: Vec<&str> = headers
            .keys()
            .map(String::as_str)
            .filter(|k| is_identity_header(k))
            .collect();
        identity.sort_unstable();
        assert_eq!(
            identity,
            ["x-role", "x-scopes", "x-user-id"],
            "{listen}{path}: {headers:?}"
        );
        assert!(headers.get("authorization").is_none(), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_signature_is_an_hmac_over_the_identity() {
    let s = setup().await;
    let token = token(&s.key);
    let mut request: Vec<(&str, &str)> = SPOOFED.to_vec();
    let bearer = format!("Bearer {token}");
    request.push(("Authorization", &bearer));
    let before = now();
    let headers = upstream_headers(s.signed, "/private/x", &request).await;
    let after = now();

    let signature = headers["x-identity-signature"].as_str().expect("signature");
    let (t, v1) = signature
        .strip_prefix("t=")
        .and_then(|rest| rest.split_once(",v1="))
        .unwrap_or_else(|| panic!("malformed signature {signature}"));
    let t: u64 = t.parse().expect("unix seconds");
    assert!(
        before <= t && t <= after,
        "t={t} not in [{before}, {after}]"
    );
    // "t\nsub\nroles\nscopes\nconsumer", as identity_headers.rs documents.
    let message = format!("{t}\nuser-42\ncustomer,beta\norders:read orders:write\n");
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SIGNING_SECRET.as_bytes());
    let expected = hex(aws_lc_rs::hmac::sign(&key, message.as_bytes()).as_ref());
    assert_eq!(v1, expected);
    // And it really covers the identity: another subject would not verify.
    let forged = format!("{t}\nspoofed-user\ncustomer,beta\norders:read orders:write\n");
    assert!(aws_lc_rs::hmac::verify(&key, forged.as_bytes(), &hex_decode(v1)).is_err());
    assert!(aws_lc_rs::hmac::verify(&key, message.as_bytes(), &hex_decode(v1)).is_ok());

    // Anonymous requests carry no signature at all: the client's copies, in
    // any spelling, are dropped where the gateway signs.
    let headers = upstream_headers(s.signed, "/public/x", SPOOFED).await;
    assert!(
        !headers.keys().any(|k| fold(k) == "x-identity-signature"),
        "{headers:?}"
    );
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}
