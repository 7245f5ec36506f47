//! TLS termination: certificates from PEM files, chosen by SNI, with HTTP/2
//! offered through ALPN.

use std::sync::Arc;

use rustls::crypto::aws_lc_rs;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_saphyr::Location;

use crate::config::model::Tls;
use crate::router::host::HostPattern;

/// A TLS setting that could not be loaded, with where it was configured.
pub struct TlsError {
    pub location: Location,
    pub message: String,
}

/// Picks a certificate by SNI: exact names, then wildcards, then the first.
#[derive(Debug)]
struct SniResolver {
    entries: Vec<(Vec<HostPattern>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            let sni = sni.to_ascii_lowercase();
            let mut best: Option<(&HostPattern, &Arc<CertifiedKey>)> = None;
            for (patterns, key) in &self.entries {
                for p in patterns {
                    if p.matches(&sni) && best.is_none_or(|(b, _)| p.rank() < b.rank()) {
                        best = Some((p, key));
                    }
                }
            }
            if let Some((_, key)) = best {
                return Some(key.clone());
            }
        }
        self.entries.first().map(|(_, key)| key.clone())
    }
}

pub fn server_config(tls: &Tls) -> Result<rustls::ServerConfig, TlsError> {
    let provider = Arc::new(aws_lc_rs::default_provider());
    let mut entries = Vec::new();
    for cert in &tls.certificates {
        let fail = |location: &Location, message: String| TlsError {
            location: *location,
            message,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert.value)
            .and_then(|iter| iter.collect())
            .map_err(|e| {
                fail(
                    &cert.cert.referenced,
                    format!("cannot read certificate {}: {e}", cert.cert.value.display()),
                )
            })?;
        if chain.is_empty() {
            return Err(fail(
                &cert.cert.referenced,
                format!("{} holds no PEM certificate", cert.cert.value.display()),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(&cert.key.value).map_err(|e| {
            fail(
                &cert.key.referenced,
                format!("cannot read private key {}: {e}", cert.key.value.display()),
            )
        })?;
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
            fail(
                &cert.key.referenced,
                format!("certificate and key do not form a usable pair: {e}"),
            )
        })?;
        let names = cert
            .server_names
            .iter()
            .filter_map(|n| HostPattern::parse(n).ok())
            .collect();
        entries.push((names, Arc::new(certified)));
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError {
            location: Location::UNKNOWN,
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { entries }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
