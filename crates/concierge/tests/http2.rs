//! HTTP/2 on both sides: clients may speak h2c with prior knowledge on a
//! plain listener; upstreams get HTTP/1.1 unless their service says `h2c`.

mod support;

use support::upstream::Upstream;
use support::{GatewayProcess, client, free_addr};

fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("h2c client")
}

#[tokio::test]
async fn h2c_clients_and_h2c_upstreams() {
    let http1 = Upstream::echo("http1").await;
    let h2c = Upstream::echo("h2c").await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: plain
    listen: {listen}
    routes:
      - match: {{ path_prefix: /legacy }}
        service: legacy
      - match: {{ path_prefix: /modern }}
        service: modern
services:
  legacy: {{ targets: ["{}"] }}
  modern:
    protocol: h2c
    targets: ["{}"]
"#,
        http1.addr, h2c.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);

    for (label, c, version) in [
        ("h2c client", h2c_client(), reqwest::Version::HTTP_2),
        ("HTTP/1.1 client", client(), reqwest::Version::HTTP_11),
    ] {
        // Default upstream protocol: HTTP/1.1, whatever the client spoke.
        let response = c
            .post(format!("http://{listen}/legacy/items?page=2"))
            .body("twelve bytes")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        assert_eq!(response.status(), 200, "{label}");
        assert_eq!(response.version(), version, "{label}");
        assert!(response.headers().contains_key("x-request-id"), "{label}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["name"], "http1", "{label}");
        assert_eq!(body["version"], "HTTP/1.1", "{label}");
        assert_eq!(body["method"], "POST", "{label}");
        assert_eq!(body["path"], "/legacy/items?page=2", "{label}");
        assert_eq!(body["body_len"], 12, "{label}");
        assert_eq!(body["headers"]["x-forwarded-host"], listen.to_string());

        // `protocol: h2c`: the upstream is spoken to over HTTP/2.
        let response = c
            .post(format!("http://{listen}/modern/items"))
            .body("twelve bytes")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{label}: {e:?}"));
        assert_eq!(response.status(), 200, "{label}");
        assert_eq!(response.version(), version, "{label}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["name"], "h2c", "{label}");
        assert_eq!(body["version"], "HTTP/2.0", "{label}");
        assert_eq!(body["path"], "/modern/items", "{label}");
        assert_eq!(body["body_len"], 12, "{label}");
        assert_eq!(body["headers"]["x-forwarded-host"], listen.to_string());
    }
}

#[tokio::test]
async fn many_concurrent_streams_on_one_h2c_connection() {
    let upstream = Upstream::echo("backend").await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: plain
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: backend
services:
  backend:
    protocol: h2c
    targets: ["{}"]
"#,
        upstream.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    // One client: reqwest multiplexes every request on one h2 connection.
    let c = h2c_client();
    let requests = (0..64).map(|i| {
        let c = c.clone();
        async move {
            let response = c
                .get(format!("http://{listen}/item/{i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.version(), reqwest::Version::HTTP_2);
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["path"], format!("/item/{i}"));
            assert_eq!(body["version"], "HTTP/2.0");
        }
    });
    futures_util::future::join_all(requests).await;
}
