//! Routing end to end: precedence, hosts, methods, rewrites.

mod support;

use support::upstream::Upstream;
use support::{GatewayProcess, client, free_addr};

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
