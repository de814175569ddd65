//! Client TLS for STARTTLS. Opportunistic mode accepts any certificate (RFC 7435: most
//! MX certificates are self-signed or do not match the MX name, and refusing them would
//! only push the mail to plaintext); required mode verifies the chain against the system
//! roots plus `tls.ca_file` and the MX host name.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::TlsConnector;

const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The two client configurations.
#[derive(Clone)]
pub struct TlsConnectors {
    pub any_cert: TlsConnector,
    pub verified: TlsConnector,
}

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn add_pem(store: &mut RootCertStore, path: &Path) -> Result<usize, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut n = 0;
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
        if store.add(c).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Builds both connectors; `ca_file` adds trust anchors for required mode.
pub fn build(ca_file: Option<&Path>) -> Result<TlsConnectors, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    if Path::new(SYSTEM_ROOTS).exists() {
        add_pem(&mut roots, Path::new(SYSTEM_ROOTS))?;
    }
    if let Some(p) = ca_file {
        if add_pem(&mut roots, p)? == 0 {
            return Err(format!("{}: no certificate found", p.display()));
        }
    }
    let verified = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let any = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Ok(TlsConnectors {
        any_cert: TlsConnector::from(Arc::new(any)),
        verified: TlsConnector::from(Arc::new(verified)),
    })
}
