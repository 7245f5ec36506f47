//! The pooled HTTP client of one service: keep-alive HTTP/1.1, h2c, or TLS
//! with ALPN, with the service's connect and idle timeouts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;
use crate::config::model::{Service, UpstreamProtocol};

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS settings: {0}")]
    Tls(String),
}

pub fn build(service: &Service) -> Result<HttpClient, ClientError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(service.timeouts.connect.0));
    http.set_keepalive(Some(Duration::from_secs(60)));

    let tls = tls_config(service)?;
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let connector = match service.protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(http),
        UpstreamProtocol::H2c | UpstreamProtocol::Https => {
            builder.enable_all_versions().wrap_connector(http)
        }
    };

    let mut client = Client::builder(TokioExecutor::new());
    client
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(service.timeouts.idle.0)
        .pool_max_idle_per_host(service.max_idle_per_target)
        .http2_adaptive_window(true);
    if service.protocol == UpstreamProtocol::H2c {
        client.http2_only(true);
    }
    Ok(client.build(connector))
}

fn tls_config(service: &Service) -> Result<rustls::ClientConfig, ClientError> {
    let roots = root_store(service.ca_file.as_deref())?;
    // ALPN is set by the connector builder from the enabled HTTP versions.
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
    .map_err(|e| ClientError::Tls(e.to_string()))
}

/// The CA certificates in a PEM bundle, or the public web roots.
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, ClientError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let Some(path) = ca_file else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        return Ok(roots);
    };
    let fail = |reason: String| ClientError::CaFile {
        path: path.display().to_string(),
        reason,
    };
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))? {
        roots
            .add(cert.map_err(|e| fail(e.to_string()))?)
            .map_err(|e| fail(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(fail("no certificates in the file".into()));
    }
    Ok(roots)
}
