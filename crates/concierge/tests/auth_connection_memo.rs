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
    let yaml = format!(
        r#"
identity_providers:
  idp:
    issuer: "{ISSUER}"
    audiences: [{AUDIENCE}]
    keys: {{ jwks_url: "{jwks}" }}
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
        jwks = jwks.jwks_url(),
        upstream = upstream.addr,
    );
    (GatewayProcess::start(&yaml, &[listen]), listen)
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
