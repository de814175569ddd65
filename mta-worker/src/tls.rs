//! TLS server setup from the configured PEM files (rustls with the ring provider, which
//! needs no C toolchain beyond what the workspace already uses).

use crate::config::TlsConfig;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no certificate found in PEM file")]
    NoCert { path: PathBuf },
    #[error("{path}: no private key found in PEM file")]
    NoKey { path: PathBuf },
    #[error("certificate/key rejected: {source}")]
    Rustls {
        #[from]
        source: rustls::Error,
    },
}

/// Builds the acceptor used for STARTTLS and implicit TLS.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.clone(),
            source,
        })
    };
    let cert_pem = read(&cfg.cert)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            path: cfg.cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            path: cfg.cert.clone(),
        });
    }
    let key_pem = read(&cfg.key)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Read {
            path: cfg.key.clone(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: cfg.key.clone(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
