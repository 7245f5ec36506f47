//! Routing end to end: precedence, hosts, methods, header conditions,
//! rewrites, gateway-generated errors and path normalisation.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::BodyExt;
use support::upstream::{RawResponse, Upstream, full, raw_request};
use support::{GatewayProcess, assert_problem, client, free_addr};

/// GETs `path` with an optional Host header and returns the response.
async fn get_with_host(listen: SocketAddr, path: &str, host: Option<&str>) -> reqwest::Response {
    let mut request = client().get(format!("http://{listen}{path}"));
    if let Some(host) = host {
        request = request.header("host", host);
    }
    request.send().await.expect("request")
}

/// The name of the echo upstream that answered, failing on any non-200.
async fn answered_by(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).expect("json");
    body["name"].as_str().expect("name").to_string()
}

/// A raw GET, so the request target reaches the gateway byte for byte.
async fn raw_get(listen: SocketAddr, target: &str) -> RawResponse {
    let request = format!("GET {target} HTTP/1.1\r\nHost: shop.test\r\nConnection: close\r\n\r\n");
    raw_request(listen, request.as_bytes()).await
}

#[tokio::test]
async fn most_specific_route_wins_and_rewrites_apply() {
    let exact = Upstream::echo("exact").await;
    let template = Upstream::echo("template").await;
    let prefix = Upstream::echo("prefix").await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: /api }}
        rewrite: {{ strip_prefix: /api }}
        service: prefix
      - match: {{ methods: [GET], path: "/api/products/{{id}}" }}
        rewrite: {{ path: "/v2/items/{{id}}" }}
        service: template
      - match: {{ path: /api/products/featured }}
        service: exact
services:
  exact: {{ targets: ["{}"] }}
  template: {{ targets: ["{}"] }}
  prefix: {{ targets: ["{}"] }}
"#,
        exact.addr, template.addr, prefix.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let c = client();
    let get = |path: &'static str| {
        let c = c.clone();
        async move {
            let r = c
                .get(format!("http://{listen}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let body = get("/api/products/featured").await;
    assert_eq!(body["name"], "exact");
    assert_eq!(body["path"], "/api/products/featured");
    let body = get("/api/products/42?x=1").await;
    assert_eq!(body["name"], "template");
    assert_eq!(body["path"], "/v2/items/42?x=1");
    let body = get("/api/orders/7").await;
    assert_eq!(body["name"], "prefix");
    assert_eq!(body["path"], "/orders/7");
}

#[tokio::test]
async fn exact_host_beats_wildcard_beats_any_host() {
    let exact = Upstream::echo("exact").await;
    let long_wild = Upstream::echo("long-wild").await;
    let wild = Upstream::echo("wild").await;
    let any = Upstream::echo("any").await;
    let listen = free_addr();
    // Least specific first: precedence must not depend on file order.
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: any
      - match: {{ hosts: ["*.example.com"], path_prefix: / }}
        service: wild
      - match: {{ hosts: ["*.eu.example.com"], path_prefix: / }}
        service: long-wild
      - match: {{ hosts: ["api.example.com"], path_prefix: / }}
        service: exact
services:
  exact: {{ targets: ["{}"] }}
  long-wild: {{ targets: ["{}"] }}
  wild: {{ targets: ["{}"] }}
  any: {{ targets: ["{}"] }}
"#,
        exact.addr, long_wild.addr, wild.addr, any.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    for (host, expected) in [
        ("api.example.com", "exact"),
        // Case and port do not matter.
        ("API.Example.COM:8080", "exact"),
        ("shop.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("shop.eu.example.com", "long-wild"),
        // A wildcard needs at least one label in front of the suffix.
        ("example.com", "any"),
        ("evilexample.com", "any"),
        ("other.test", "any"),
    ] {
        let response = get_with_host(listen, "/x", Some(host)).await;
        assert_eq!(answered_by(response).await, expected, "Host: {host}");
    }
}

#[tokio::test]
async fn unmatched_request_is_404_problem_json_with_request_id() {
    let api = Upstream::echo("api").await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: /api }}
        service: api
      - match: {{ hosts: [admin.example.com], path_prefix: /admin }}
        service: api
services:
  api: {{ targets: ["{}"] }}
"#,
        api.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    // No route at all, a prefix that is not on a segment boundary, and a
    // path whose only route is for another host.
    for (path, host) in [
        ("/nothing/here", None),
        ("/apix", None),
        ("/admin/users", Some("shop.example.com")),
    ] {
        let response = get_with_host(listen, path, host).await;
        let problem = assert_problem(response, 404).await;
        assert_eq!(problem["title"], "Not Found");
        assert_eq!(problem["instance"], path);
        let id = problem["request_id"].as_str().unwrap();
        assert_eq!(id.len(), 36, "a generated id is a UUID: {id}");
    }
}

#[tokio::test]
async fn wrong_method_is_405_with_allow_header() {
    let api = Upstream::echo("api").await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ methods: [GET, HEAD], path: "/products/{{id}}" }}
        service: api
      - match: {{ methods: [DELETE], path: "/products/{{id}}" }}
        service: api
      - match: {{ methods: [POST], path: /orders }}
        service: api
services:
  api: {{ targets: ["{}"] }}
"#,
        api.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let c = client();
    let response = c
        .put(format!("http://{listen}/products/7"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, HEAD, DELETE");
    let problem = assert_problem(response, 405).await;
    assert_eq!(problem["title"], "Method Not Allowed");

    let response = c
        .get(format!("http://{listen}/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");

    // The allowed methods still route.
    let response = c
        .delete(format!("http://{listen}/products/7"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered_by(response).await, "api");
    let response = c
        .post(format!("http://{listen}/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered_by(response).await, "api");
}

#[tokio::test]
async fn header_conditions_select_the_canary() {
    let stable = Upstream::echo("stable").await;
    let canary = Upstream::echo("canary").await;
    let beta = Upstream::echo("beta").await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: /shop }}
        service: stable
      - match: {{ path_prefix: /shop, headers: {{ x-canary: "1" }} }}
        service: canary
      - match: {{ path_prefix: /shop, headers: {{ x-beta: "*" }} }}
        service: beta
services:
  stable: {{ targets: ["{}"] }}
  canary: {{ targets: ["{}"] }}
  beta: {{ targets: ["{}"] }}
"#,
        stable.addr, canary.addr, beta.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let c = client();
    let send = |headers: &'static [(&'static str, &'static str)]| {
        let c = c.clone();
        async move {
            let mut request = c.get(format!("http://{listen}/shop/cart"));
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            answered_by(request.send().await.unwrap()).await
        }
    };
    assert_eq!(send(&[]).await, "stable");
    assert_eq!(send(&[("x-canary", "1")]).await, "canary");
    assert_eq!(send(&[("x-canary", "0")]).await, "stable");
    assert_eq!(send(&[("x-canary", "true")]).await, "stable");
    assert_eq!(send(&[("x-beta", "anything")]).await, "beta");
    assert_eq!(send(&[("x-beta", "")]).await, "beta");
}

#[tokio::test]
async fn precedence_does_not_depend_on_file_order() {
    let upstreams = [
        Upstream::echo("exact").await,
        Upstream::echo("template").await,
        Upstream::echo("rest").await,
        Upstream::echo("prefix").await,
        Upstream::echo("root").await,
        Upstream::echo("get-only").await,
        Upstream::echo("header").await,
    ];
    let routes = [
        r#"{ match: { path: /items/special }, service: exact }"#,
        r#"{ match: { path: "/items/{id}" }, service: template }"#,
        r#"{ match: { path: "/items/{*rest}" }, service: rest }"#,
        r#"{ match: { path_prefix: /items }, service: prefix }"#,
        r#"{ match: { path_prefix: / }, service: root }"#,
        r#"{ match: { methods: [GET], path_prefix: /other }, service: get-only }"#,
        r#"{ match: { path_prefix: /other }, service: root }"#,
        r#"{ match: { path_prefix: /other, headers: { x-v: "2" } }, service: header }"#,
    ];
    let forward = free_addr();
    let reversed = free_addr();
    let list = |order: Vec<&str>| {
        order
            .iter()
            .map(|r| format!("      - {r}\n"))
            .collect::<String>()
    };
    let services: String = upstreams
        .iter()
        .zip([
            "exact", "template", "rest", "prefix", "root", "get-only", "header",
        ])
        .map(|(u, name)| format!("  {name}: {{ targets: [\"{}\"] }}\n", u.addr))
        .collect();
    let yaml = format!(
        "frontends:\n  - name: forward\n    listen: {forward}\n    routes:\n{}  - name: reversed\n    listen: {reversed}\n    routes:\n{}services:\n{services}",
        list(routes.to_vec()),
        list(routes.iter().rev().copied().collect()),
    );
    let _gw = GatewayProcess::start(&yaml, &[forward, reversed]);
    let c = client();
    for (method, path, header, expected) in [
        ("GET", "/items/special", None, "exact"),
        ("GET", "/items/42", None, "template"),
        ("GET", "/items/42/reviews", None, "rest"),
        ("GET", "/items", None, "prefix"),
        ("GET", "/elsewhere", None, "root"),
        ("GET", "/other/x", None, "get-only"),
        ("POST", "/other/x", None, "root"),
        ("POST", "/other/x", Some(("x-v", "2")), "header"),
        ("GET", "/other/x", Some(("x-v", "2")), "header"),
    ] {
        for listen in [forward, reversed] {
            let mut request = c.request(method.parse().unwrap(), format!("http://{listen}{path}"));
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            let got = answered_by(request.send().await.unwrap()).await;
            assert_eq!(got, expected, "{method} {path} {header:?} on {listen}");
        }
    }
}

#[tokio::test]
async fn rest_template_rewrite_keeps_the_tail_and_query() {
    let files = Upstream::echo("files").await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ methods: [GET], path: "/v1/files/{{*rest}}" }}
        rewrite: {{ path: "/storage/{{rest}}" }}
        service: files
      - match: {{ path: "/v1/users/{{id}}/docs/{{*rest}}" }}
        rewrite: {{ path: "/docs/{{rest}}/owner/{{id}}" }}
        service: files
services:
  files: {{ targets: ["{}"] }}
"#,
        files.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    let c = client();
    for (path, upstream_path) in [
        ("/v1/files/a/b/c.txt?v=2&x=y", "/storage/a/b/c.txt?v=2&x=y"),
        ("/v1/files/report.pdf", "/storage/report.pdf"),
        ("/v1/files/", "/storage/"),
        ("/v1/files/a%20b/%E2%9C%93", "/storage/a%20b/%E2%9C%93"),
        ("/v1/users/7/docs/x/y", "/docs/x/y/owner/7"),
        // An empty tail never produces `//` upstream.
        ("/v1/users/7/docs/", "/docs/owner/7"),
    ] {
        let r = c
            .get(format!("http://{listen}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["path"], upstream_path, "{path}");
    }
    // `{*rest}` needs the slash after the literal part.
    let r = c
        .get(format!("http://{listen}/v1/files"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn dot_segments_route_by_the_normalised_path() {
    let public = Upstream::echo("public").await;
    let admin = Upstream::echo("admin").await;
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: /public }}
        service: public
      - match: {{ path_prefix: /admin }}
        service: admin
services:
  public: {{ targets: ["{}"] }}
  admin: {{ targets: ["{}"] }}
"#,
        public.addr, admin.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2E/admin",
        "//public/./../admin",
        "/public/x/../../admin",
        "/../../admin",
    ] {
        let response = raw_get(listen, target).await;
        assert_eq!(response.status, 200, "{target}");
        let body = response.json();
        assert_eq!(body["name"], "admin", "{target}");
        assert_eq!(body["path"], "/admin", "{target}");
    }
    // Clean-up that stays inside /public reaches public, normalised.
    for (target, expected) in [
        ("/public/./a//b/", "/public/a/b/"),
        ("/public/a/../b?q=../x", "/public/b?q=../x"),
        ("/%70ublic/%7Euser", "/public/~user"),
    ] {
        let response = raw_get(listen, target).await;
        assert_eq!(response.status, 200, "{target}");
        let body = response.json();
        assert_eq!(body["name"], "public", "{target}");
        assert_eq!(body["path"], expected, "{target}");
    }
}

#[tokio::test]
async fn traversal_out_of_the_only_route_never_reaches_the_upstream() {
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let public = {
        let (hits, seen) = (hits.clone(), seen.clone());
        Upstream::start(move |req: hyper::Request<hyper::body::Incoming>| {
            let (hits, seen) = (hits.clone(), seen.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let path = req.uri().path_and_query().unwrap().to_string();
                seen.lock().unwrap().push(path.clone());
                let _ = req.into_body().collect().await;
                hyper::Response::new(full(path))
            }
        })
        .await
    };
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: /public }}
        service: public
services:
  public: {{ targets: ["{}"] }}
"#,
        public.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    for target in [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2E/admin",
        "//public/./../admin",
        "/public/..",
    ] {
        let response = raw_get(listen, target).await;
        assert_eq!(response.status, 404, "{target}");
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "{:?}", seen.lock().unwrap());

    // An encoded slash is data, not a separator: `..%2f` is no dot segment,
    // so the request stays under /public, forwarded with the escape
    // upper-cased (the normalised form) and never decoded.
    let response = raw_get(listen, "/public/..%2fadmin").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"/public/..%2Fadmin");
    let response = raw_get(listen, "/public/a/./b/../c//%2e/d").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"/public/a/c/d");
    assert_eq!(
        *seen.lock().unwrap(),
        ["/public/..%2Fadmin", "/public/a/c/d"]
    );
}

#[tokio::test]
async fn malformed_percent_escape_is_400_problem_json() {
    let hits = Arc::new(AtomicUsize::new(0));
    let api = {
        let hits = hits.clone();
        Upstream::start(move |_req| {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                hyper::Response::new(full("reached"))
            }
        })
        .await
    };
    let listen = free_addr();
    let yaml = format!(
        r#"
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: api
services:
  api: {{ targets: ["{}"] }}
"#,
        api.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    for target in ["/a%zz", "/a%2", "/a%"] {
        let response = raw_get(listen, target).await;
        assert_eq!(response.status, 400, "{target}");
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
        let problem = response.json();
        assert_eq!(problem["status"], 400);
        assert_eq!(problem["title"], "Bad Request");
        assert_eq!(
            problem["request_id"],
            response.header("x-request-id").unwrap()
        );
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}
