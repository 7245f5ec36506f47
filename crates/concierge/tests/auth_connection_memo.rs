//! One client connection sending bearer tokens one after another. The
//! gateway remembers each connection's last verified token so that it need
//! not digest it again; that memo must never let through what a fresh
//! verification would refuse: another token, a tampered one, an expired one,
//! or one whose key was rotated out.

mod support;
#[path = "support/tokens.rs"]
mod tokens;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use support::upstream::Upstream;
use support::{GatewayProcess, eventually, free_addr};
use tokens::{JwksServer, SigningKey, claims, claims_with, counting_echo, with_payload};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "shop-api";

/// A gateway whose `/api` requires a token from the provider `idp`
/// (`provider`: extra provider settings).
fn start_gateway(
    jwks: &JwksServer,
    provider: &str,
    upstream: &Upstream,
) -> (GatewayProcess, SocketAddr) {
    let listen = free_addr();
    let yaml = gateway_yaml(listen, &jwks.jwks_url(), provider, upstream);
    (GatewayProcess::start(&yaml, &[listen]), listen)
}

fn gateway_yaml(listen: SocketAddr, jwks_url: &str, provider: &str, upstream: &Upstream) -> String {
    format!(
        r#"
identity_providers:
  idp:
    issuer: "{ISSUER}"
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks_url}" }}
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
    )
}

/// Exactly one TCP connection to the gateway, kept for every request.
struct Connection {
    sender: SendRequest<Empty<Bytes>>,
}

impl Connection {
    async fn open(addr: SocketAddr) -> Self {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Self { sender }
    }

    /// GET /api/x with `token`: the status and, on 200, the user id the
    /// upstream received.
    async fn get(&mut self, token: &str) -> (u16, Option<String>) {
        self.sender
            .ready()
            .await
            .expect("the gateway kept the connection open");
        let request = http::Request::get("/api/x")
            .header("host", "gateway.test")
            .header("authorization", format!("Bearer {token}"))
            .body(Empty::new())
            .expect("request");
        let response = self.sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let user = (status == 200)
            .then(|| serde_json::from_slice::<Value>(&body).expect("echo json"))
            .and_then(|echo| echo["headers"]["x-user-id"].as_str().map(str::to_string));
        (status, user)
    }
}

fn ok_as(user: &str) -> (u16, Option<String>) {
    (200, Some(user.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memo_never_answers_for_another_or_a_tampered_token() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let (_gw, listen) = start_gateway(&jwks, "", &upstream);
    let alice = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    let bob = key.sign(&claims(ISSUER, AUDIENCE, "bob"));
    // Alice's signature over a payload that says it is Bob.
    let forged = with_payload(&alice, &claims(ISSUER, AUDIENCE, "bob"));

    let mut connection = Connection::open(listen).await;
    assert_eq!(connection.get(&alice).await, ok_as("alice"));
    assert_eq!(connection.get(&alice).await, ok_as("alice"));
    assert_eq!(
        connection.get(&forged).await.0,
        401,
        "tampered after a good token"
    );
    assert_eq!(connection.get(&alice).await, ok_as("alice"));
    assert_eq!(connection.get(&bob).await, ok_as("bob"));
    assert_eq!(connection.get(&alice).await, ok_as("alice"));
    // Same length as Alice's token, one signature character changed.
    let mut flipped = alice.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).expect("ascii");
    assert_eq!(connection.get(&flipped).await.0, 401, "one byte off");
    assert_eq!(connection.get(&alice).await, ok_as("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_token_still_expires() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let jwks = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let (_gw, listen) = start_gateway(&jwks, "    leeway: 0s", &upstream);
    let expires = tokens::now() + 2;
    let short = key.sign(&claims_with(
        ISSUER,
        AUDIENCE,
        "alice",
        json!({"exp": expires}),
    ));

    let mut connection = Connection::open(listen).await;
    assert_eq!(connection.get(&short).await, ok_as("alice"));
    assert_eq!(connection.get(&short).await, ok_as("alice"));
    while tokens::now() <= expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        connection.get(&short).await.0,
        401,
        "expired on the same connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_token_stops_when_its_key_is_rotated_out() {
    let old = SigningKey::rsa(Algorithm::RS256, "old");
    let new = SigningKey::ec(Algorithm::ES256, "new");
    let jwks = JwksServer::start(&[&old]).await;
    let (upstream, _) = counting_echo().await;
    let (gw, listen) = start_gateway(&jwks, "    refresh_interval: 1s", &upstream);
    let alice = old.sign(&claims(ISSUER, AUDIENCE, "alice"));

    let mut connection = Connection::open(listen).await;
    assert_eq!(connection.get(&alice).await, ok_as("alice"));
    assert_eq!(connection.get(&alice).await, ok_as("alice"));
    jwks.set_keys(&[&new]);
    let refused = eventually(Duration::from_secs(5), async || {
        connection.get(&alice).await.0 == 401
    })
    .await;
    assert!(
        refused,
        "a rotated-out key still verifies on the same connection:\n{}",
        gw.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_connection_keeps_no_retired_provider_alive() {
    let key = SigningKey::ec(Algorithm::ES256, "k1");
    let old_idp = JwksServer::start(&[&key]).await;
    let new_idp = JwksServer::start(&[&key]).await;
    let (upstream, _) = counting_echo().await;
    let refresh = "    refresh_interval: 1s";
    let (gw, listen) = start_gateway(&old_idp, refresh, &upstream);
    let alice = key.sign(&claims(ISSUER, AUDIENCE, "alice"));
    let mut connection = Connection::open(listen).await;
    assert_eq!(connection.get(&alice).await, ok_as("alice"));

    // The provider moves to another key server; the connection stays open,
    // idle, with the old provider's verdict in its memo.
    gw.rewrite_config(&gateway_yaml(
        listen,
        &new_idp.jwks_url(),
        refresh,
        &upstream,
    ));
    let moved = eventually(Duration::from_secs(10), async || new_idp.hits() > 0).await;
    assert!(
        moved,
        "the reload did not load the new provider:\n{}",
        gw.log_text()
    );
    // The retired provider's key refresher stops: its server sees no more
    // fetches once the last reference is gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = old_idp.hits();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        old_idp.hits(),
        settled,
        "the retired provider is still refreshed while the connection is open"
    );
    assert_eq!(connection.get(&alice).await, ok_as("alice"));
}
