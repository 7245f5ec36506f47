//! Client address rules: frontend allow and deny lists checked before
//! anything else, route rules, IPv6 listeners, and the client behind trusted
//! proxies.

mod support;
#[path = "support/tokens.rs"]
mod tokens;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;

use reqwest::Method;
use serde_json::Value;
use support::upstream::raw_request;
use support::{GatewayProcess, client, free_addr};
use tokens::counting_echo;

async fn assert_forbidden(response: reqwest::Response, case: &str) {
    assert_eq!(response.status(), 403, "{case}");
    let h = response.headers();
    assert_eq!(h["content-type"], "application/problem+json", "{case}");
    assert!(h.get("www-authenticate").is_none(), "{case}");
    let found: Vec<&str> = h
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("access-control-"))
        .collect();
    assert!(found.is_empty(), "{case}: {found:?}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 403, "{case}");
}

async fn get(url: String) -> reqwest::Response {
    client().get(url).send().await.expect("request")
}

/// A frontend whose `ip_rules` are `rules`, with CORS, an API-key route and
/// an open route, so that "before anything else" can be checked.
fn frontend(name: &str, listen: SocketAddr, rules: &str, extra: &str) -> String {
    format!(
        r#"
  - name: {name}
    listen: "{listen}"
    ip_rules: {rules}
{extra}
    cors:
      allow_origins: ["https://shop.example.org"]
    api_keys:
      keys: [{{ consumer: acme, sha256: "{digest}" }}]
    routes:
      - match: {{ path_prefix: /keyed }}
        auth: {{ require: api_key }}
        service: api
      - match: {{ path_prefix: /open }}
        service: api
      - match: {{ path_prefix: /blocked }}
        ip_rules: {{ deny: [127.0.0.1/32, "::1/128"] }}
        service: api
"#,
        digest = tokens::sha256_hex(b"key")
    )
}

fn config(frontends: &[String], upstream: SocketAddr) -> String {
    format!(
        "frontends:{}\nservices:\n  api: {{ targets: [\"{upstream}\"] }}\n",
        frontends.concat()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_rules_refuse_before_anything_else() {
    let (upstream, hits) = counting_echo().await;
    let (denied, not_allowed, open) = (free_addr(), free_addr(), free_addr());
    let yaml = config(
        &[
            frontend("denied", denied, "{ deny: [127.0.0.0/8] }", ""),
            frontend(
                "not-allowed",
                not_allowed,
                "{ allow: [10.0.0.0/8, \"2001:db8::/32\"] }",
                "",
            ),
            frontend("open", open, "{ deny: [203.0.113.0/24] }", ""),
        ],
        upstream.addr,
    );
    let _gw = GatewayProcess::start(&yaml, &[denied, not_allowed, open]);

    for listen in [denied, not_allowed] {
        // Routed, unrouted, needing a key: 403 all the same.
        for path in ["/open", "/keyed", "/nowhere"] {
            assert_forbidden(get(format!("http://{listen}{path}")).await, path).await;
        }
        // Even a preflight is not answered.
        let response = client()
            .request(Method::OPTIONS, format!("http://{listen}/open"))
            .header("origin", "https://shop.example.org")
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_forbidden(response, "preflight").await;
        let response = client()
            .get(format!("http://{listen}/open"))
            .header("origin", "https://shop.example.org")
            .send()
            .await
            .unwrap();
        assert_forbidden(response, "with origin").await;
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a refused client reached the upstream"
    );

    // The same setup lets 127.0.0.1 in where it is not listed.
    let response = get(format!("http://{open}/open")).await;
    assert_eq!(response.status(), 200);
    let response = get(format!("http://{open}/keyed")).await;
    assert_eq!(response.status(), 401);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_rules_refuse_on_their_route_only() {
    let (upstream, hits) = counting_echo().await;
    let listen = free_addr();
    let yaml = config(&[frontend("web", listen, "{}", "")], upstream.addr);
    let _gw = GatewayProcess::start(&yaml, &[listen]);
    assert_forbidden(
        get(format!("http://{listen}/blocked/x")).await,
        "route deny",
    )
    .await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert_eq!(get(format!("http://{listen}/open/x")).await.status(), 200);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

fn free_v6_addr() -> SocketAddr {
    TcpListener::bind("[::1]:0")
        .and_then(|l| l.local_addr())
        .expect("no IPv6 loopback")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_are_matched_by_ipv6_rules() {
    let (upstream, hits) = counting_echo().await;
    let (denied, allowed, v4_only) = (free_v6_addr(), free_v6_addr(), free_v6_addr());
    let yaml = config(
        &[
            frontend("denied", denied, "{ deny: [\"::1/128\"] }", ""),
            frontend("allowed", allowed, "{ allow: [\"::1/128\"] }", ""),
            frontend("v4-only", v4_only, "{ allow: [127.0.0.0/8] }", ""),
        ],
        upstream.addr,
    );
    let _gw = GatewayProcess::start(&yaml, &[denied, allowed, v4_only]);

    assert_forbidden(get(format!("http://{denied}/open")).await, "::1 denied").await;
    // ::1 is not 127.0.0.1: an IPv4 allow-list does not let it in.
    assert_forbidden(get(format!("http://{v4_only}/open")).await, "v4 allow-list").await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let response = get(format!("http://{allowed}/open")).await;
    assert_eq!(response.status(), 200);
    // Route rules see IPv6 clients too.
    assert_forbidden(get(format!("http://{allowed}/blocked")).await, "route ::1").await;
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_rules_cover_ipv4_clients_of_a_dual_stack_listener() {
    let (upstream, hits) = counting_echo().await;
    // A wildcard IPv6 listener also takes IPv4 connections, whose peer
    // addresses arrive as ::ffff:127.0.0.1.
    let port = TcpListener::bind("[::]:0")
        .and_then(|l| l.local_addr())
        .expect("no IPv6")
        .port();
    let listen = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    let yaml = config(
        &[frontend("dual", listen, "{ deny: [127.0.0.0/8] }", "")],
        upstream.addr,
    );
    let v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let _gw = GatewayProcess::start(&yaml, &[v4]);
    assert_forbidden(get(format!("http://{v4}/open")).await, "v4 via dual stack").await;
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // ::1 is not in 127.0.0.0/8.
    let response = get(format!("http://[::1]:{port}/open")).await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let (upstream, _) = counting_echo().await;
    let (behind_proxy, direct) = (free_addr(), free_addr());
    let rules = "{ deny: [203.0.113.0/24] }";
    let yaml = config(
        &[
            frontend(
                "behind-proxy",
                behind_proxy,
                rules,
                "    client_address: { trusted_proxies: [127.0.0.0/8, 10.0.0.0/8] }",
            ),
            frontend("direct", direct, rules, ""),
        ],
        upstream.addr,
    );
    let _gw = GatewayProcess::start(&yaml, &[behind_proxy, direct]);
    let with_xff = async |listen: SocketAddr, xff: Option<&str>| {
        let mut request = client().get(format!("http://{listen}/open"));
        if let Some(xff) = xff {
            request = request.header("x-forwarded-for", xff);
        }
        request.send().await.unwrap()
    };

    // The proxy (127.0.0.1, trusted) says the client is in the denied subnet.
    assert_forbidden(
        with_xff(behind_proxy, Some("203.0.113.7")).await,
        "denied client",
    )
    .await;
    // Behind another trusted hop, still the same client.
    assert_forbidden(
        with_xff(behind_proxy, Some("203.0.113.7, 10.1.2.3")).await,
        "denied client behind two proxies",
    )
    .await;
    // The right-most untrusted entry is the client; what is left of it is
    // the client's own claim and cannot get anyone denied or allowed.
    for xff in [
        "203.0.113.7, 198.51.100.2",
        "203.0.113.7, 198.51.100.2, 10.9.9.9",
    ] {
        let response = with_xff(behind_proxy, Some(xff)).await;
        assert_eq!(response.status(), 200, "{xff}");
    }
    assert_forbidden(
        with_xff(behind_proxy, Some("198.51.100.2, 203.0.113.7")).await,
        "denied client right-most",
    )
    .await;
    // No header: the proxy itself is the client.
    assert_eq!(with_xff(behind_proxy, None).await.status(), 200);
    // Several X-Forwarded-For lines form one list, in order.
    for (lines, status) in [
        (["203.0.113.7", "198.51.100.2"], 200),
        (["198.51.100.2", "203.0.113.7"], 403),
    ] {
        let request = format!(
            "GET /open HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: {}\r\nX-Forwarded-For: {}\r\nConnection: close\r\n\r\n",
            lines[0], lines[1]
        );
        let response = raw_request(behind_proxy, request.as_bytes()).await;
        assert_eq!(response.status, status, "{lines:?}");
    }
    // Without trusted proxies the header is just a claim, and ignored.
    for xff in [Some("203.0.113.7"), Some("198.51.100.2, 203.0.113.7"), None] {
        let response = with_xff(direct, xff).await;
        assert_eq!(response.status(), 200, "direct {xff:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_entries_with_ports_are_client_addresses() {
    let (upstream, hits) = counting_echo().await;
    let (denying, allowing) = (free_addr(), free_addr());
    let trusted = "    client_address: { trusted_proxies: [127.0.0.0/8, 10.0.0.0/8] }";
    let yaml = config(
        &[
            frontend(
                "denying",
                denying,
                "{ deny: [203.0.113.0/24, \"2001:db8::/32\"] }",
                trusted,
            ),
            // Only the client subnets get in: the proxy (127.0.0.1) itself
            // does not, so a client mistaken for the proxy is refused.
            frontend(
                "allowing",
                allowing,
                "{ allow: [203.0.113.0/24, \"2001:db8::/32\"] }",
                trusted,
            ),
        ],
        upstream.addr,
    );
    let _gw = GatewayProcess::start(&yaml, &[denying, allowing]);
    let with_xff = async |listen: SocketAddr, xff: Option<&str>| {
        let mut request = client().get(format!("http://{listen}/open"));
        if let Some(xff) = xff {
            request = request.header("x-forwarded-for", xff);
        }
        request.send().await.unwrap()
    };

    let in_subnets = [
        "203.0.113.9:4711",
        "[2001:db8::9]:443",
        "[2001:db8::9]",
        "203.0.113.9:4711, 10.1.2.3:8080",
        "198.51.100.2, [2001:db8::9]:443, 10.1.2.3",
    ];
    for xff in in_subnets {
        assert_forbidden(with_xff(denying, Some(xff)).await, xff).await;
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    for xff in in_subnets {
        let response = with_xff(allowing, Some(xff)).await;
        assert_eq!(response.status(), 200, "allowing {xff}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), in_subnets.len());

    // Other clients written with ports are themselves, not in the subnets.
    for xff in ["198.51.100.2:4711", "[2001:db9::9]:443"] {
        assert_eq!(
            with_xff(denying, Some(xff)).await.status(),
            200,
            "denying {xff}"
        );
        assert_forbidden(with_xff(allowing, Some(xff)).await, xff).await;
    }
    // Without the header the proxy is the client: let in by the deny list,
    // refused by the allow list.
    assert_eq!(with_xff(denying, None).await.status(), 200);
    assert_forbidden(with_xff(allowing, None).await, "no header").await;
}
