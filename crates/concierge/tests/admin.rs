//! The admin API: health, the running configuration, metrics and reload.

mod support;

use support::upstream::Upstream;
use support::{GatewayProcess, client, free_addr};

#[tokio::test]
async fn admin_reports_health_config_and_metrics() {
    let upstream = Upstream::echo("svc").await;
    let listen = free_addr();
    let admin = free_addr();
    let yaml = format!(
        r#"
admin: {{ listen: "{admin}" }}
frontends:
  - name: web
    listen: {listen}
    routes:
      - match: {{ path_prefix: / }}
        service: svc
services:
  svc:
    targets: ["{}"]
    concurrency: {{ max_in_flight: 8 }}
"#,
        upstream.addr
    );
    let _gw = GatewayProcess::start(&yaml, &[listen, admin]);
    let c = client();

    let health = c
        .get(format!("http://{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    let config: serde_json::Value = c
        .get(format!("http://{admin}/config"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(config["generation"], 1);
    assert_eq!(config["frontends"][0]["name"], "web");
    assert_eq!(
        config["services"][0]["targets"][0]["address"],
        upstream.addr.to_string()
    );

    assert_eq!(
        c.get(format!("http://{listen}/x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let reload: serde_json::Value = c
        .post(format!("http://{admin}/reload"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reload["generation"], 2);

    let metrics = c
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(text.contains("concierge_config_generation 2"), "{text}");
    let target = format!(
        "concierge_upstream_in_flight{{service=\"svc\",target=\"{}\"}} 0",
        upstream.addr
    );
    assert!(text.contains(&target), "{text}");
    assert!(
        text.contains("concierge_concurrency_shed_total{service=\"svc\"} 0"),
        "{text}"
    );

    let wrong = c
        .delete(format!("http://{admin}/config"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 405);
    let missing = c.get(format!("http://{admin}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
}
