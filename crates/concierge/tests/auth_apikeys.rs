//! API keys: accepted from the header or the query, turned into the consumer
//! header upstream, refused with an `ApiKey` challenge, and read from a key
//! file that a reload re-reads.

mod support;
#[path = "support/tokens.rs"]
mod tokens;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;

use serde_json::Value;
use support::{GatewayProcess, client, free_addr};
use tokens::{counting_echo, sha256_hex};

const ACME_KEY: &str = "acme-live-key-7c1f5b0e";
const GLOBEX_KEY: &str = "globex-live-key-22d9aa41";
const INITECH_KEY: &str = "initech-live-key-0b8e77c3";

fn api_key_config(listen: SocketAddr, keys: &str, upstream: SocketAddr, admin: &str) -> String {
    format!(
        r#"
server:
  watch_config: false
{admin}
frontends:
  - name: partners
    listen: {listen}
    auth: {{ require: api_key }}
    api_keys:
      header: x-api-key
      query: api_key
{keys}
    routes:
      - match: {{ path_prefix: /v1 }}
        service: api
      - match: {{ path_prefix: /status }}
        auth: {{ require: none }}
        service: api
services:
  api: {{ targets: ["{upstream}"] }}
"#
    )
}

async fn assert_api_key_challenge(response: reqwest::Response, case: &str) {
    assert_eq!(response.status(), 401, "{case}");
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"ApiKey realm="concierge""#,
        "{case}"
    );
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{case}"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 401, "{case}");
}

async fn with_header(listen: SocketAddr, key: &str) -> reqwest::Response {
    client()
        .get(format!("http://{listen}/v1/products"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
}

/// Asserts a 200 for `consumer` and returns what the upstream saw.
async fn assert_consumer(response: reqwest::Response, consumer: &str) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{consumer}: {body}");
    assert_eq!(body["headers"]["x-consumer-id"], consumer, "{body}");
    assert!(
        body["headers"].get("x-api-key").is_none(),
        "the key reached the upstream: {body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_keys_from_header_or_query_identify_the_consumer() {
    let (upstream, hits) = counting_echo().await;
    let listen = free_addr();
    let keys = format!(
        "      keys:\n        - {{ consumer: acme, sha256: {} }}\n        - {{ consumer: globex, sha256: {} }}",
        sha256_hex(ACME_KEY.as_bytes()),
        sha256_hex(GLOBEX_KEY.as_bytes())
    );
    let _gw = GatewayProcess::start(&api_key_config(listen, &keys, upstream.addr, ""), &[listen]);

    assert_consumer(with_header(listen, ACME_KEY).await, "acme").await;
    assert_consumer(with_header(listen, GLOBEX_KEY).await, "globex").await;
    // A client-supplied consumer header is replaced, not believed.
    let response = client()
        .get(format!("http://{listen}/v1/products"))
        .header("x-api-key", ACME_KEY)
        .header("x-consumer-id", "globex")
        .send()
        .await
        .unwrap();
    assert_consumer(response, "acme").await;

    // From the query, wherever the parameter stands: the upstream sees the
    // rest of the query exactly, and no trace of the key.
    for (query, forwarded) in [
        (format!("page=2&api_key={ACME_KEY}"), "/v1/products?page=2"),
        (format!("api_key={ACME_KEY}&page=2"), "/v1/products?page=2"),
        (
            format!("sort=name&api_key={ACME_KEY}&page=2"),
            "/v1/products?sort=name&page=2",
        ),
        (format!("api_key={ACME_KEY}"), "/v1/products"),
    ] {
        let response = client()
            .get(format!("http://{listen}/v1/products?{query}"))
            .send()
            .await
            .unwrap();
        let body = assert_consumer(response, "acme").await;
        assert_eq!(body["path"], forwarded, "{query}");
        assert!(!body.to_string().contains(ACME_KEY), "{query}: {body}");
    }
    // With the key in the header, a query without the parameter is untouched.
    let response = client()
        .get(format!("http://{listen}/v1/products?page=2&api_keys=x"))
        .header("x-api-key", GLOBEX_KEY)
        .send()
        .await
        .unwrap();
    let body = assert_consumer(response, "globex").await;
    assert_eq!(body["path"], "/v1/products?page=2&api_keys=x");
    assert_eq!(hits.load(Ordering::SeqCst), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_missing_keys_get_an_api_key_challenge() {
    let (upstream, hits) = counting_echo().await;
    let listen = free_addr();
    let keys = format!(
        "      keys:\n        - {{ consumer: acme, sha256: {} }}",
        sha256_hex(ACME_KEY.as_bytes())
    );
    let _gw = GatewayProcess::start(&api_key_config(listen, &keys, upstream.addr, ""), &[listen]);

    assert_api_key_challenge(with_header(listen, "not-a-key").await, "unknown").await;
    // The digest itself is not a key.
    let digest = sha256_hex(ACME_KEY.as_bytes());
    assert_api_key_challenge(with_header(listen, &digest).await, "digest").await;
    assert_api_key_challenge(with_header(listen, &ACME_KEY.to_uppercase()).await, "case").await;
    let response = client()
        .get(format!("http://{listen}/v1/products?api_key=wrong"))
        .send()
        .await
        .unwrap();
    assert_api_key_challenge(response, "unknown in query").await;
    let response = client()
        .get(format!("http://{listen}/v1/products"))
        .send()
        .await
        .unwrap();
    assert_api_key_challenge(response, "missing").await;
    // A bearer token is no API key.
    let response = client()
        .get(format!("http://{listen}/v1/products"))
        .bearer_auth(ACME_KEY)
        .send()
        .await
        .unwrap();
    assert_api_key_challenge(response, "bearer").await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // Routes that need no key still work without one.
    let response = client()
        .get(format!("http://{listen}/status"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn write_key_file(path: &Path, entries: &[(&str, &str)]) {
    let mut text = String::from("# consumer sha256\n");
    for (consumer, key) in entries {
        text.push_str(&format!("{consumer} {}\n", sha256_hex(key.as_bytes())));
    }
    std::fs::write(path, text).expect("write key file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_file_is_reread_on_reload() {
    let (upstream, _) = counting_echo().await;
    let (listen, admin) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("api-keys.txt");
    write_key_file(&key_file, &[("acme", ACME_KEY), ("globex", GLOBEX_KEY)]);
    let keys = format!("      file: {}", key_file.display());
    let config = dir.path().join("concierge.yaml");
    let admin_yaml = format!("admin:\n  listen: {admin}");
    std::fs::write(
        &config,
        api_key_config(listen, &keys, upstream.addr, &admin_yaml),
    )
    .unwrap();
    let gw = GatewayProcess::start_in(dir, config, &[listen, admin]);

    assert_consumer(with_header(listen, ACME_KEY).await, "acme").await;
    assert_consumer(with_header(listen, GLOBEX_KEY).await, "globex").await;
    assert_api_key_challenge(with_header(listen, INITECH_KEY).await, "not yet issued").await;

    // Globex is revoked, Initech is onboarded; the config file is unchanged.
    write_key_file(&key_file, &[("acme", ACME_KEY), ("initech", INITECH_KEY)]);
    let response = client()
        .post(format!("http://{admin}/reload"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}\n{}", gw.log_text());
    assert_eq!(body["reloaded"], true);

    assert_consumer(with_header(listen, ACME_KEY).await, "acme").await;
    assert_consumer(with_header(listen, INITECH_KEY).await, "initech").await;
    assert_api_key_challenge(with_header(listen, GLOBEX_KEY).await, "revoked").await;
}
