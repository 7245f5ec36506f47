//! CORS at the edge: preflights answered by the gateway, allow headers only
//! for allowed origins, `Vary: Origin` always, gateway errors included.

mod support;
#[path = "support/tokens.rs"]
mod tokens;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use jsonwebtoken::Algorithm;
use reqwest::Method;
use reqwest::header::HeaderMap;
use support::upstream::Upstream;
use support::{GatewayProcess, client, free_addr};
use tokens::{JwksServer, SigningKey, counting_echo};

const EXACT: &str = "https://shop.example.org";
const WILDCARD_MATCH: &str = "https://api.example.com";

struct Setup {
    _gw: GatewayProcess,
    _jwks: JwksServer,
    _upstream: Upstream,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    listen: SocketAddr,
}

async fn setup() -> Setup {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, hits) = counting_echo().await;
    let listen = free_addr();
    let yaml = format!(
        r#"
identity_providers:
  idp:
    issuer: https://idp.test
    audiences: [shop-api]
    keys: {{ jwks_url: "{jwks}" }}
    algorithms: [ES256]
frontends:
  - name: web
    listen: {listen}
    cors:
      allow_origins: ["{EXACT}", "https://*.example.com"]
      allow_methods: [GET, POST, PUT]
      allow_headers: [Authorization, content-type, x-request-id]
      expose_headers: [x-request-id]
      allow_credentials: true
      max_age: 10m
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
    let gw = GatewayProcess::start(&yaml, &[listen]);
    Setup {
        _gw: gw,
        _jwks: jwks,
        _upstream: upstream,
        hits,
        listen,
    }
}

async fn preflight(
    listen: SocketAddr,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> reqwest::Response {
    let mut request = client()
        .request(Method::OPTIONS, format!("http://{listen}{path}"))
        .header("origin", origin)
        .header("access-control-request-method", method);
    if let Some(headers) = headers {
        request = request.header("access-control-request-headers", headers);
    }
    request.send().await.expect("preflight")
}

fn cors_headers(headers: &HeaderMap) -> Vec<String> {
    headers
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

/// Every `Vary` value, split into field names.
fn vary(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_preflights_are_answered_at_the_edge() {
    let s = setup().await;
    for origin in [EXACT, WILDCARD_MATCH, "https://a.b.example.com"] {
        // Protected or not, a preflight never needs credentials.
        for path in ["/public/items", "/private/items"] {
            let response = preflight(
                s.listen,
                path,
                origin,
                "PUT",
                Some("authorization, Content-Type"),
            )
            .await;
            let case = format!("{origin}{path}");
            assert_eq!(response.status(), 204, "{case}");
            let h = response.headers();
            assert_eq!(h["access-control-allow-origin"], origin, "{case}");
            assert_eq!(
                h["access-control-allow-methods"], "GET, POST, PUT",
                "{case}"
            );
            assert_eq!(
                h["access-control-allow-headers"], "authorization, content-type, x-request-id",
                "{case}"
            );
            assert_eq!(h["access-control-max-age"], "600", "{case}");
            assert_eq!(h["access-control-allow-credentials"], "true", "{case}");
            assert!(vary(h).contains(&"origin".to_string()), "{case}");
            assert!(h.contains_key("x-request-id"), "{case}");
        }
    }
    assert_eq!(
        s.hits.load(Ordering::SeqCst),
        0,
        "a preflight reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_preflights_carry_no_cors_headers() {
    let s = setup().await;
    for (case, origin, method, headers) in [
        ("unknown origin", "https://evil.test", "GET", None),
        (
            "suffix without a dot",
            "https://evilexample.com",
            "GET",
            None,
        ),
        ("bare wildcard domain", "https://example.com", "GET", None),
        (
            "wildcard, wrong scheme",
            "http://api.example.com",
            "GET",
            None,
        ),
        (
            "exact, wrong scheme",
            "http://shop.example.org",
            "GET",
            None,
        ),
        (
            "exact, other port",
            "https://shop.example.org:8443",
            "GET",
            None,
        ),
        ("null origin", "null", "GET", None),
        ("method not allowed", EXACT, "DELETE", None),
        ("header not allowed", EXACT, "GET", Some("x-debug")),
    ] {
        let response = preflight(s.listen, "/public/items", origin, method, headers).await;
        assert_eq!(response.status(), 204, "{case}");
        let found = cors_headers(response.headers());
        assert!(found.is_empty(), "{case}: {found:?}");
        assert!(
            vary(response.headers()).contains(&"origin".to_string()),
            "{case}"
        );
    }
    assert_eq!(s.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actual_requests_get_cors_headers_only_for_allowed_origins() {
    let s = setup().await;
    for origin in [EXACT, WILDCARD_MATCH] {
        let response = client()
            .get(format!("http://{}/public/items", s.listen))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{origin}");
        let h = response.headers();
        assert_eq!(h["x-upstream"], "api");
        assert_eq!(h["access-control-allow-origin"], origin);
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-expose-headers"], "x-request-id");
        assert!(vary(h).contains(&"origin".to_string()), "{origin}");
        // Preflight-only headers do not belong on actual responses.
        assert!(!h.contains_key("access-control-allow-methods"));
        assert!(!h.contains_key("access-control-max-age"));
    }
    for origin in [
        Some("https://evil.test"),
        Some("http://api.example.com"),
        None,
    ] {
        let mut request = client().get(format!("http://{}/public/items", s.listen));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "{origin:?}");
        let found = cors_headers(response.headers());
        assert!(found.is_empty(), "{origin:?}: {found:?}");
        // Caches must still key on Origin: the answer differs per origin.
        assert!(
            vary(response.headers()).contains(&"origin".to_string()),
            "{origin:?}"
        );
    }
    assert_eq!(s.hits.load(Ordering::SeqCst), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_errors_carry_cors_headers_for_allowed_origins() {
    let s = setup().await;
    // 401 from the gateway: the browser app must be able to read it.
    let response = client()
        .get(format!("http://{}/private/items", s.listen))
        .header("origin", EXACT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let h = response.headers();
    assert_eq!(h["www-authenticate"], r#"Bearer realm="concierge""#);
    assert_eq!(h["access-control-allow-origin"], EXACT);
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert!(vary(h).contains(&"origin".to_string()));
    // So does a bad token's 401, and a 404.
    let response = client()
        .get(format!("http://{}/private/items", s.listen))
        .header("origin", WILDCARD_MATCH)
        .bearer_auth("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        WILDCARD_MATCH
    );
    let response = client()
        .get(format!("http://{}/nowhere", s.listen))
        .header("origin", EXACT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["access-control-allow-origin"], EXACT);
    // A disallowed origin's error gets none.
    let response = client()
        .get(format!("http://{}/private/items", s.listen))
        .header("origin", "https://evil.test")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(cors_headers(response.headers()).is_empty());
    assert!(vary(response.headers()).contains(&"origin".to_string()));
    assert_eq!(s.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_ip_rules_refuse_preflights_from_denied_clients() {
    let (upstream, hits) = counting_echo().await;
    let listen = free_addr();
    // The test client is 127.0.0.1: denied on /internal and on DELETE
    // /items, let in everywhere else.
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    cors:
      allow_origins: ["{EXACT}"]
      allow_methods: [GET, POST, DELETE]
    routes:
      - match: {{ path_prefix: /internal }}
        ip_rules: {{ deny: [127.0.0.0/8] }}
        service: api
      - match: {{ path_prefix: /items, methods: [DELETE] }}
        ip_rules: {{ deny: [127.0.0.0/8] }}
        service: api
      - match: {{ path_prefix: /items }}
        service: api
      - match: {{ path_prefix: /public }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#,
        upstream = upstream.addr,
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);

    for (path, method) in [("/internal/x", "GET"), ("/items/7", "DELETE")] {
        let case = format!("{method} {path}");
        let response = preflight(listen, path, EXACT, method, None).await;
        let found = cors_headers(response.headers());
        assert!(found.is_empty(), "{case}: {found:?}");
        let problem = support::assert_problem(response, 403).await;
        assert_eq!(problem["status"], 403, "{case}");
    }
    // The same preflight where the client is let in is answered as usual.
    for (path, method) in [("/public/x", "GET"), ("/items/7", "GET")] {
        let case = format!("{method} {path}");
        let response = preflight(listen, path, EXACT, method, None).await;
        assert_eq!(response.status(), 204, "{case}");
        let h = response.headers();
        assert_eq!(h["access-control-allow-origin"], EXACT, "{case}");
        assert_eq!(
            h["access-control-allow-methods"], "GET, POST, DELETE",
            "{case}"
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "a preflight was forwarded");
    // The actual requests follow the same rules.
    let response = client()
        .get(format!("http://{listen}/internal/x"))
        .header("origin", EXACT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let response = client()
        .get(format!("http://{listen}/items/7"))
        .header("origin", EXACT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

/// An upstream with opinions of its own about CORS.
async fn permissive_upstream() -> Upstream {
    Upstream::start(|_req| async {
        hyper::Response::builder()
            .header("content-type", "text/plain")
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-credentials", "true")
            .header("access-control-expose-headers", "x-internal-secret")
            .header("x-upstream", "permissive")
            .body(support::upstream::full("hello"))
            .expect("response")
    })
    .await
}

async fn get_with_origin(listen: SocketAddr, origin: Option<&str>) -> reqwest::Response {
    let mut request = client().get(format!("http://{listen}/api/x"));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{origin:?}");
    assert_eq!(response.headers()["x-upstream"], "permissive");
    response
}

fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_cors_headers_are_replaced_by_the_gateways() {
    let upstream = permissive_upstream().await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    cors:
      allow_origins: ["{EXACT}"]
      expose_headers: [x-request-id]
    routes:
      - match: {{ path_prefix: /api }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#,
        upstream = upstream.addr,
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);

    // Disallowed origins, and requests without one, get nothing the
    // upstream offered.
    for origin in [Some("https://evil.test"), Some("null"), None] {
        let response = get_with_origin(listen, origin).await;
        let found = cors_headers(response.headers());
        assert!(found.is_empty(), "{origin:?}: {found:?}");
        assert!(vary(response.headers()).contains(&"origin".to_string()));
    }
    // An allowed origin gets the gateway's answer: its origin echoed once,
    // no credentials (the policy does not allow them), the policy's
    // exposed headers.
    let response = get_with_origin(listen, Some(EXACT)).await;
    let h = response.headers();
    assert_eq!(values(h, "access-control-allow-origin"), [EXACT]);
    assert!(!h.contains_key("access-control-allow-credentials"), "{h:?}");
    assert_eq!(values(h, "access-control-expose-headers"), ["x-request-id"]);
    assert!(vary(h).contains(&"origin".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_policy_answers_star_without_vary_origin() {
    let upstream = permissive_upstream().await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    cors:
      allow_origins: ["*"]
    routes:
      - match: {{ path_prefix: /api }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#,
        upstream = upstream.addr,
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);

    for origin in ["https://anyone.test", EXACT] {
        let response = get_with_origin(listen, Some(origin)).await;
        let h = response.headers();
        assert_eq!(values(h, "access-control-allow-origin"), ["*"], "{origin}");
        // Never credentials with `*`, whatever the upstream says.
        assert!(!h.contains_key("access-control-allow-credentials"), "{h:?}");
        assert!(!h.contains_key("access-control-expose-headers"), "{h:?}");
        // The answer is the same for every origin: nothing to vary on.
        assert!(!vary(h).contains(&"origin".to_string()), "{h:?}");
    }
    // The preflight gets `*` too.
    let response = preflight(listen, "/api/x", "https://anyone.test", "POST", None).await;
    assert_eq!(response.status(), 204);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-credentials")
    );
}
