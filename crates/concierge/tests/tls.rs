//! TLS termination: the certificate is chosen by SNI, HTTP/2 is offered by
//! ALPN, and a certificate that cannot be read is reported with its place in
//! the file.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::upstream::Upstream;
use support::{GatewayProcess, free_addr};

/// A self-signed certificate for `name`, written as `<stem>.crt`/`<stem>.key`.
struct TestCert {
    der: Vec<u8>,
    pem: String,
}

fn write_cert(dir: &Path, stem: &str, name: &str) -> TestCert {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_string()]).expect("rcgen");
    let pem = certified.cert.pem();
    std::fs::write(dir.join(format!("{stem}.crt")), &pem).expect("write cert");
    std::fs::write(
        dir.join(format!("{stem}.key")),
        certified.signing_key.serialize_pem(),
    )
    .expect("write key");
    TestCert {
        der: certified.cert.der().to_vec(),
        pem,
    }
}

fn client_trusting(cert: &TestCert, resolve: &[(&str, SocketAddr)]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_info(true)
        .tls_certs_only([reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap()]);
    for (name, addr) in resolve {
        builder = builder.resolve(name, *addr);
    }
    builder.build().expect("client")
}

/// A client that accepts any certificate, to look at which one is served.
fn inspecting_client(resolve: &[(&str, SocketAddr)], sni: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .tls_info(true)
        .tls_sni(sni)
        .tls_danger_accept_invalid_certs(true);
    for (name, addr) in resolve {
        builder = builder.resolve(name, *addr);
    }
    builder.build().expect("client")
}

fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info with the peer certificate")
        .to_vec()
}

#[tokio::test]
async fn each_server_name_gets_its_own_certificate_and_h2_by_alpn() {
    let shop_upstream = Upstream::echo("shop").await;
    let api_upstream = Upstream::echo("api").await;
    let dir = tempfile::tempdir().unwrap();
    let shop = write_cert(dir.path(), "shop", "shop.zimmart.test");
    let api = write_cert(dir.path(), "api", "api.zimmart.test");
    let listen = free_addr();
    let d = dir.path().display();
    let yaml = format!(
        r#"
frontends:
  - name: edge
    listen: {listen}
    tls:
      certificates:
        - cert: {d}/shop.crt
          key: {d}/shop.key
          server_names: [shop.zimmart.test]
        - cert: {d}/api.crt
          key: {d}/api.key
          server_names: [api.zimmart.test]
    routes:
      - match: {{ hosts: [shop.zimmart.test] }}
        service: shop
      - match: {{ hosts: [api.zimmart.test] }}
        service: api
services:
  shop: {{ targets: ["{}"] }}
  api: {{ targets: ["{}"] }}
"#,
        shop_upstream.addr, api_upstream.addr
    );
    let config = dir.path().join("concierge.yaml");
    std::fs::write(&config, yaml).unwrap();
    let _gw = GatewayProcess::start_in(dir, config, &[listen]);
    let port = listen.port();
    let names = [("shop.zimmart.test", listen), ("api.zimmart.test", listen)];

    // A client that trusts only one certificate reaches its name over h2,
    // and is served exactly that certificate.
    for (name, cert, service) in [
        ("shop.zimmart.test", &shop, "shop"),
        ("api.zimmart.test", &api, "api"),
    ] {
        let response = client_trusting(cert, &names)
            .get(format!("https://{name}:{port}/whoami"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("https to {name}: {e:?}"));
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(
            response.version(),
            reqwest::Version::HTTP_2,
            "{name}: ALPN picks h2"
        );
        assert_eq!(peer_certificate(&response), cert.der, "{name}: certificate");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["name"], service);
        assert_eq!(body["version"], "HTTP/1.1", "upstreams speak HTTP/1.1");
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    }

    // Trusting the shop certificate is not enough for the api name: the
    // gateway really presents a different certificate there.
    let error = client_trusting(&shop, &names)
        .get(format!("https://api.zimmart.test:{port}/"))
        .send()
        .await
        .expect_err("the api name must not be served the shop certificate");
    assert!(error.is_connect(), "{error:?}");

    // An unknown name, or no SNI at all, gets the first certificate.
    let response = inspecting_client(&[("other.zimmart.test", listen)], true)
        .get(format!("https://other.zimmart.test:{port}/"))
        .send()
        .await
        .expect("unknown SNI");
    assert_eq!(peer_certificate(&response), shop.der, "unknown SNI");
    let response = inspecting_client(&[("api.zimmart.test", listen)], false)
        .get(format!("https://api.zimmart.test:{port}/"))
        .send()
        .await
        .expect("no SNI");
    assert_eq!(peer_certificate(&response), shop.der, "no SNI");
    // Routing still goes by the Host header, whatever the handshake.
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["name"], "api");

    // A client that only speaks HTTP/1.1 gets HTTP/1.1 over the same port.
    let response = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tls_certs_only([reqwest::Certificate::from_pem(shop.pem.as_bytes()).unwrap()])
        .resolve("shop.zimmart.test", listen)
        .build()
        .unwrap()
        .get(format!("https://shop.zimmart.test:{port}/"))
        .send()
        .await
        .expect("HTTP/1.1 over TLS");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
}

#[test]
fn unreadable_certificate_is_reported_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path(), "shop", "shop.zimmart.test");
    let d = dir.path().display();
    let missing = dir.path().join("missing.crt");
    let listen = free_addr();
    // The `cert:` value of the second certificate is on line 10, column 17.
    let yaml = format!(
        r#"frontends:
  - name: edge
    listen: {listen}
    tls:
      certificates:
        - cert: {d}/shop.crt
          key: {d}/shop.key
          server_names: [shop.zimmart.test]
        - server_names: [api.zimmart.test]
          cert: {}
          key: {d}/shop.key
    routes:
      - match: {{ path_prefix: / }}
        service: shop
services:
  shop: {{ targets: ["127.0.0.1:9"] }}
"#,
        missing.display()
    );
    let config = dir.path().join("concierge.yaml");
    std::fs::write(&config, yaml).unwrap();
    let expected = format!(
        "{}:10:17: cannot read certificate {}",
        config.display(),
        missing.display()
    );

    let output = Command::new(env!("CARGO_BIN_EXE_concierge"))
        .arg("validate")
        .arg(&config)
        .output()
        .expect("run concierge validate");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "validate fails: {stderr}");
    assert!(
        stderr.contains(&expected),
        "want `{expected}` in:\n{stderr}"
    );

    // `run` refuses to start with the same message (and must not hang
    // serving, so it is given a deadline).
    let log = dir.path().join("run.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_concierge"))
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run concierge run");
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`concierge run` started with an unreadable certificate");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "run fails: {stderr}");
    assert!(
        stderr.contains(&expected),
        "want `{expected}` in:\n{stderr}"
    );
}
