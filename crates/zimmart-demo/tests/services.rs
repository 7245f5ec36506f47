//! Starts the five services on ephemeral ports and talks to them over real
//! sockets, over HTTP/1.1 and h2c.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use zimmart_demo::{AUDIENCE, Claims, DemoAddrs, ISSUER, TOKEN_TTL_SECS, start};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Reply {
    status: StatusCode,
    headers: hyper::HeaderMap,
    json: Value,
}

fn http1() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn h2c() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

async fn call(
    client: &HttpClient,
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).unwrap();
    let resp = client.request(req).await.expect("request failed");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("response is JSON")
    };
    Reply {
        status: parts.status,
        headers: parts.headers,
        json,
    }
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    call(&http1(), Method::GET, addr, path, headers, "").await
}

const TENDAI: &[(&str, &str)] = &[("x-user-id", "u-1001")];

#[tokio::test]
async fn every_service_is_healthy_and_says_who_it_is() {
    let demo = start(DemoAddrs::ephemeral()).await.unwrap();
    let a = demo.addrs;
    for (name, addr) in [
        ("auth", a.auth),
        ("product", a.product),
        ("order", a.order),
        ("payment", a.payment),
        ("notification", a.notification),
    ] {
        assert_ne!(addr.port(), 0);
        let r = get(addr, "/health", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["x-served-by"], name);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.json["status"], "ok");
        assert_eq!(r.json["service"], name);

        let r = get(addr, "/no/such/path", &[]).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.headers["x-served-by"], name);
        assert_eq!(r.json["status"], 404);
    }
    demo.shutdown().await;
    assert!(tokio::net::TcpStream::connect(a.auth).await.is_err());
}

#[tokio::test]
async fn identity_comes_from_the_gateway_headers() {
    let demo = start(DemoAddrs::ephemeral()).await.unwrap();
    let a = demo.addrs;

    let me = get(a.auth, "/users/me", TENDAI).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json["name"], "Tendai Moyo");
    assert!(me.json.get("password").is_none());
    assert_eq!(
        get(a.auth, "/users/me", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(a.auth, "/users/u-0001", &[]).await.json["role"],
        "admin"
    );
    assert_eq!(
        get(a.auth, "/users/u-9999", &[]).await.status,
        StatusCode::NOT_FOUND
    );

    let orders = get(a.order, "/orders", TENDAI).await;
    assert_eq!(orders.json["orders"].as_array().unwrap().len(), 3);
    let methods = get(a.payment, "/payment-methods", TENDAI).await;
    assert_eq!(methods.json["payment_methods"][0]["type"], "ecocash");
    let unread = get(a.notification, "/notifications?unread=true", TENDAI).await;
    assert_eq!(unread.json["count"], 3);
    let count = get(a.notification, "/notifications/unread-count", TENDAI).await;
    assert_eq!(count.json, serde_json::json!({ "unread": 3 }));
}

async fn login(addr: SocketAddr, body: &str) -> Reply {
    call(&http1(), Method::POST, addr, "/login", &[], body).await
}

/// Verifies `token` the way the gateway will: key from the served JWKS,
/// chosen by the token's `kid`, with issuer and audience checked.
async fn verify(auth: SocketAddr, token: &str) -> Claims {
    let jwks: JwkSet = serde_json::from_value(get(auth, "/.well-known/jwks.json", &[]).await.json)
        .expect("JWKS parses");
    let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
    let jwk = jwks.find(&kid).expect("token's kid is in the JWKS");
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    let key = DecodingKey::from_jwk(jwk).unwrap();
    jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .expect("token verifies")
        .claims
}

#[tokio::test]
async fn login_issues_tokens_that_verify_against_the_jwks() {
    let demo = start(DemoAddrs::ephemeral()).await.unwrap();
    let a = demo.addrs.auth;

    let r = login(a, r#"{"username":"tendai","password":"zimmart"}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.json["token_type"], "Bearer");
    assert_eq!(r.json["expires_in"], TOKEN_TTL_SECS);
    let claims = verify(a, r.json["access_token"].as_str().unwrap()).await;
    assert_eq!(claims.iss, ISSUER);
    assert_eq!(claims.aud, AUDIENCE);
    assert_eq!(claims.sub, "u-1001");
    assert_eq!(claims.role, "customer");
    assert_eq!(claims.name, "Tendai Moyo");
    assert!(claims.scope.split(' ').any(|s| s == "orders:write"));
    assert!(!claims.scope.split(' ').any(|s| s == "products:write"));
    assert_eq!(claims.nbf, claims.iat);
    assert_eq!(claims.exp, claims.iat + TOKEN_TTL_SECS);

    let r = login(a, r#"{"username":"admin","password":"zimmart"}"#).await;
    let claims = verify(a, r.json["access_token"].as_str().unwrap()).await;
    assert_eq!(
        (claims.sub.as_str(), claims.role.as_str()),
        ("u-0001", "admin")
    );
    assert!(claims.scope.split(' ').any(|s| s == "products:write"));
}

#[tokio::test]
async fn bad_logins_are_refused() {
    let demo = start(DemoAddrs::ephemeral()).await.unwrap();
    let a = demo.addrs.auth;
    for body in [
        r#"{"username":"tendai","password":"wrong"}"#,
        r#"{"username":"nobody","password":"zimmart"}"#,
    ] {
        let r = login(a, body).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(r.headers["content-type"], "application/problem+json");
        assert!(r.json.get("access_token").is_none());
    }
    for body in ["{not json", r#"{"username":"tendai"}"#, ""] {
        assert_eq!(
            login(a, body).await.status,
            StatusCode::BAD_REQUEST,
            "{body}"
        );
    }
    let r = get(a, "/login", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "POST");
}

#[tokio::test]
async fn jwks_and_discovery_describe_the_signing_key() {
    let demo = start(DemoAddrs::ephemeral()).await.unwrap();
    let a = demo.addrs.auth;

    let jwks = get(a, "/.well-known/jwks.json", &[]).await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.headers["cache-control"], "max-age=300");
    let keys = jwks.json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "EC");
    assert_eq!(keys[0]["crv"], "P-256");
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0].get("d").is_none(), "private key published");

    let r = login(a, r#"{"username":"rudo","password":"zimmart"}"#).await;
    let header = jsonwebtoken::decode_header(r.json["access_token"].as_str().unwrap()).unwrap();
    assert_eq!(header.alg, Algorithm::ES256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    assert_eq!(keys[0]["kid"], header.kid.unwrap());

    let disco = get(a, "/.well-known/openid-configuration", &[]).await;
    assert_eq!(disco.status, StatusCode::OK);
    assert_eq!(disco.json["issuer"], ISSUER);
    assert_eq!(
        disco.json["jwks_uri"],
        format!("http://{a}/.well-known/jwks.json")
    );
    assert_eq!(
        disco.json["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
}

#[tokio::test]
async fn catalogue_changes_are_visible() {
    let demo = start(DemoAddrs::ephemeral()).await.unwrap();
    let p = demo.addrs.product;
    let client = http1();

    let drinks = get(p, "/products?category=beverages", &[]).await;
    assert_eq!(drinks.json["count"], 2);

    let deleted = call(&client, Method::DELETE, p, "/products/1", &[], "").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        get(p, "/products/1", &[]).await.status,
        StatusCode::NOT_FOUND
    );

    let body = r#"{"name":"Lobels Bread","category":"bakery","price_usd_cents":100,"stock":30}"#;
    let created = call(&client, Method::POST, p, "/products", &[], body).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.headers["location"], "/products/7");
    assert_eq!(
        get(p, "/products/7", &[]).await.json["name"],
        "Lobels Bread"
    );

    let wrong = call(&client, Method::PUT, p, "/products/7", &[], "").await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong.headers["allow"], "GET, DELETE");
}

#[tokio::test]
async fn echo_reports_the_request_over_h2c() {
    let demo = start(DemoAddrs::ephemeral()).await.unwrap();
    let r = call(
        &h2c(),
        Method::PATCH,
        demo.addrs.order,
        "/echo/a/b?x=1",
        &[("x-tag", "one"), ("x-tag", "two")],
        "hello",
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["service"], "order");
    assert_eq!(r.json["method"], "PATCH");
    assert_eq!(r.json["path"], "/echo/a/b?x=1");
    assert_eq!(r.json["version"], "HTTP/2.0");
    assert_eq!(r.json["host"], demo.addrs.order.to_string());
    assert_eq!(r.json["headers"]["x-tag"], "one, two");
    assert_eq!(r.json["body_len"], 5);
}

#[tokio::test]
async fn dropping_the_demo_stops_it() {
    let demo = start(DemoAddrs::ephemeral()).await.unwrap();
    let addr = demo.addrs.payment;
    assert_eq!(get(addr, "/health", &[]).await.status, StatusCode::OK);
    drop(demo);
    // Aborted tasks are torn down on the runtime's next turn, not inside drop.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("payment service still accepting after drop");
}
