//! Fetching small JSON documents (JWKS, OIDC discovery) from an identity
//! provider, with a deadline and a size cap.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Key documents are small; anything bigger is a mistake or an attack.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

pub type FetchClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client for key documents, trusting `roots`.
pub fn client(roots: rustls::RootCertStore) -> Result<FetchClient, rustls::Error> {
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(3)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("invalid URL {0}")]
    Url(String),
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} did not answer within {FETCH_TIMEOUT:?}")]
    Timeout { url: String },
    #[error("{url} returned invalid JSON: {reason}")]
    Json { url: String, reason: String },
}

/// GETs `url` and parses the body as JSON.
pub async fn get_json(client: &FetchClient, url: &str) -> Result<serde_json::Value, FetchError> {
    let request = Request::get(url)
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "concierge")
        .body(Empty::new())
        .map_err(|_| FetchError::Url(url.to_string()))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| FetchError::Transport {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        if !response.status().is_success() {
            return Err(FetchError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        let body = Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Transport {
                url: url.to_string(),
                reason: e.to_string(),
            })?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| FetchError::Json {
            url: url.to_string(),
            reason: e.to_string(),
        })
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| FetchError::Timeout {
            url: url.to_string(),
        })?
}
