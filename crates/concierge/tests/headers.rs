//! Header handling end to end: hop-by-hop stripping, forwarding headers,
//! request ids, Host, and the operator's header rules.

mod support;

use std::net::SocketAddr;

use support::upstream::{Upstream, full, raw_request};
use support::{GatewayProcess, client, free_addr};

/// A gateway with one catch-all route to `upstream`.
fn gateway_to(upstream: SocketAddr, route_extra: &str) -> (GatewayProcess, SocketAddr) {
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: api
{route_extra}
services:
  api: {{ targets: ["{upstream}"] }}
"#
    );
    (GatewayProcess::start(&yaml, &[listen]), listen)
}

fn headers_of(body: &serde_json::Value) -> &serde_json::Map<String, serde_json::Value> {
    body["headers"].as_object().expect("headers object")
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded_either_way() {
    // The upstream also answers with hop-by-hop headers of its own.
    let upstream = Upstream::start(|req: hyper::Request<hyper::body::Incoming>| async move {
        let mut names: Vec<String> = req.headers().keys().map(|k| k.to_string()).collect();
        names.sort();
        hyper::Response::builder()
            .header("connection", "x-bar")
            .header("x-bar", "hop")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("x-end-to-end", "kept")
            .body(full(names.join(",")))
            .unwrap()
    })
    .await;
    let (_gw, listen) = gateway_to(upstream.addr, "");
    // Raw, so every header reaches the gateway exactly as written.
    let request = "GET /x HTTP/1.1\r\n\
        Host: shop.test\r\n\
        Connection: x-foo, x-other\r\n\
        X-Foo: secret\r\n\
        X-Other: secret\r\n\
        Keep-Alive: timeout=5\r\n\
        TE: trailers\r\n\
        Proxy-Connection: keep-alive\r\n\
        Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
        X-Kept: yes\r\n\
        \r\n";
    let response = raw_request(listen, request.as_bytes()).await;
    assert_eq!(response.status, 200);
    let forwarded = String::from_utf8(response.body.clone()).unwrap();
    let forwarded: Vec<&str> = forwarded.split(',').collect();
    for hop in [
        "connection",
        "x-foo",
        "x-other",
        "keep-alive",
        "te",
        "proxy-connection",
        "proxy-authorization",
    ] {
        assert!(!forwarded.contains(&hop), "{hop} forwarded: {forwarded:?}");
    }
    assert!(forwarded.contains(&"x-kept"), "{forwarded:?}");

    for hop in ["x-bar", "keep-alive", "proxy-connection"] {
        assert_eq!(
            response.header(hop),
            None,
            "{hop} in {:?}",
            response.headers
        );
    }
    // The connection stays open for the client: no Connection header of the
    // upstream's leaks through.
    assert_eq!(
        response.header("connection"),
        None,
        "{:?}",
        response.headers
    );
    assert_eq!(response.header("x-end-to-end"), Some("kept"));
}

#[tokio::test]
async fn forwarding_headers_describe_the_client() {
    let upstream = Upstream::echo("api").await;
    let (_gw, listen) = gateway_to(upstream.addr, "");
    let c = client();

    let body: serde_json::Value = c
        .get(format!("http://{listen}/x"))
        .header("host", "shop.example.com:8443")
        .header("x-forwarded-for", "1.2.3.4")
        // A client cannot claim it used TLS, nor pick the forwarded host.
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.test")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = headers_of(&body);
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example.com:8443");

    // Without a prior value the list starts with the client.
    let body: serde_json::Value = c
        .get(format!("http://{listen}/x"))
        .header("host", "shop.example.com")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = headers_of(&body);
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "shop.example.com");

    // A list split over several header lines is one list (RFC 9110 5.3):
    // every earlier hop is kept, in order.
    let request = "GET /x HTTP/1.1\r\n\
        Host: shop.test\r\n\
        X-Forwarded-For: 1.1.1.1\r\n\
        X-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\
        Connection: close\r\n\
        \r\n";
    let body = raw_request(listen, request.as_bytes()).await.json();
    assert_eq!(
        headers_of(&body)["x-forwarded-for"],
        "1.1.1.1, 2.2.2.2, 3.3.3.3, 127.0.0.1"
    );
}

#[tokio::test]
async fn request_ids_are_generated_kept_or_replaced() {
    let upstream = Upstream::echo("api").await;
    let (_gw, listen) = gateway_to(upstream.addr, "");
    let c = client();
    let send = |id: Option<&'static str>| {
        let c = c.clone();
        async move {
            let mut request = c.get(format!("http://{listen}/x"));
            if let Some(id) = id {
                request = request.header("x-request-id", id);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            let returned = response.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .to_string();
            let body: serde_json::Value = response.json().await.unwrap();
            let upstream = headers_of(&body)["x-request-id"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(returned, upstream, "upstream and client see one id");
            returned
        }
    };
    let is_uuid = |id: &str| {
        id.len() == 36
            && id.char_indices().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    };

    let first = send(None).await;
    let second = send(None).await;
    assert!(is_uuid(&first), "{first}");
    assert_ne!(first, second, "every request gets a fresh id");

    let sane = "trace-42_a.b:c";
    assert_eq!(send(Some(sane)).await, sane);

    let long: &'static str = "a".repeat(129).leak();
    for insane in ["has spaces", "semi;colon", "quote\"", long] {
        let got = send(Some(insane)).await;
        assert_ne!(got, insane);
        assert!(is_uuid(&got), "{insane:?} replaced by {got}");
    }
}

#[tokio::test]
async fn host_is_the_target_unless_preserved() {
    let upstream = Upstream::echo("api").await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: /rewritten }}
        service: api
      - match: {{ path_prefix: /preserved }}
        preserve_host: true
        service: api
services:
  api: {{ targets: ["{}"] }}
"#,
        upstream.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let c = client();
    let host_seen = |path: &'static str| {
        let c = c.clone();
        async move {
            let body: serde_json::Value = c
                .get(format!("http://{listen}{path}"))
                .header("host", "Shop.Example.com:8080")
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let h = headers_of(&body);
            assert_eq!(h["x-forwarded-host"], "Shop.Example.com:8080");
            h["host"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(host_seen("/rewritten").await, upstream.addr.to_string());
    assert_eq!(host_seen("/preserved").await, "Shop.Example.com:8080");
}

#[tokio::test]
async fn header_rules_apply_frontend_then_route() {
    let upstream = Upstream::start(|req: hyper::Request<hyper::body::Incoming>| async move {
        // Report the request headers as `name: v1 | v2` lines, in order.
        let mut names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
        names.sort();
        let lines: Vec<String> = names
            .iter()
            .map(|name| {
                let values: Vec<&str> = req
                    .headers()
                    .get_all(*name)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                format!("{name}: {}", values.join(" | "))
            })
            .collect();
        hyper::Response::builder()
            .header("x-internal", "secret")
            .header("x-trail", "upstream")
            .header("x-order", "upstream")
            .header("x-drop-at-route", "upstream")
            .header("server", "upstream/1.0")
            .body(full(lines.join("\n")))
            .unwrap()
    })
    .await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    headers:
      request:
        remove: [x-secret]
        set: {{ x-env: frontend, x-order: frontend, x-temp: frontend }}
        add: {{ x-trail: frontend }}
      response:
        remove: [x-internal, server]
        set: {{ x-order: frontend, x-frontend: web, x-temp: frontend }}
        add: {{ x-trail: frontend }}
    routes:
      - match: {{ path_prefix: /ruled }}
        service: api
        headers:
          request:
            remove: [x-temp]
            set: {{ x-order: route }}
            add: {{ x-trail: route, x-route: ruled }}
          response:
            remove: [x-temp, x-drop-at-route]
            set: {{ x-order: route }}
            add: {{ x-trail: route }}
      - match: {{ path_prefix: /plain }}
        service: api
services:
  api: {{ targets: ["{}"] }}
"#,
        upstream.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let c = client();
    let send = |path: &'static str| {
        let c = c.clone();
        async move {
            let response = c
                .get(format!("http://{listen}{path}"))
                .header("x-secret", "token")
                .header("x-trail", "client")
                .header("x-env", "client")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let headers = response.headers().clone();
            let text = response.text().await.unwrap();
            let request: std::collections::HashMap<String, String> = text
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (headers, request)
        }
    };
    let all = |headers: &reqwest::header::HeaderMap, name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };

    let (response, request) = send("/ruled").await;
    // Request: the frontend's rules first, then the route's.
    assert_eq!(request.get("x-secret"), None);
    assert_eq!(request["x-env"], "frontend");
    assert_eq!(request["x-order"], "route");
    assert_eq!(
        request.get("x-temp"),
        None,
        "route removes what frontend set"
    );
    assert_eq!(request["x-trail"], "client | frontend | route");
    assert_eq!(request["x-route"], "ruled");
    // Response: likewise.
    assert!(response.get("x-internal").is_none());
    assert!(response.get("server").is_none());
    assert!(response.get("x-temp").is_none());
    assert!(response.get("x-drop-at-route").is_none());
    assert_eq!(all(&response, "x-order"), ["route"]);
    assert_eq!(all(&response, "x-frontend"), ["web"]);
    assert_eq!(all(&response, "x-trail"), ["upstream", "frontend", "route"]);

    // A route without rules still gets the frontend's.
    let (response, request) = send("/plain").await;
    assert_eq!(request.get("x-secret"), None);
    assert_eq!(request["x-env"], "frontend");
    assert_eq!(request["x-order"], "frontend");
    assert_eq!(request["x-temp"], "frontend");
    assert_eq!(request["x-trail"], "client | frontend");
    assert_eq!(request.get("x-route"), None);
    assert!(response.get("x-internal").is_none());
    assert_eq!(all(&response, "x-order"), ["frontend"]);
    assert_eq!(all(&response, "x-temp"), ["frontend"]);
    assert_eq!(all(&response, "x-drop-at-route"), ["upstream"]);
    assert_eq!(all(&response, "x-trail"), ["upstream", "frontend"]);
}
