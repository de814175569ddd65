//! DKIM signing per sending domain: the envelope sender's domain picks the key, and the
//! signature header is prepended to the message just before it goes on the wire (the
//! spooled copy stays unsigned, so a key rotation applies to queued mail too).

use crate::shaping::config::DkimConfig;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{DkimSigner, Done};
use rustls::pki_types::PrivateKeyDer;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

const DEFAULT_HEADERS: [&str; 7] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
];

/// Signers by lower-cased domain.
#[derive(Default, Clone)]
pub struct DkimKeys {
    by_domain: HashMap<String, Arc<DkimSigner<DkimKey, Done>>>,
}

fn load_key(c: &DkimConfig, base: &Path) -> Result<DkimKey, String> {
    let path = if c.key_file.is_absolute() {
        c.key_file.clone()
    } else {
        base.join(&c.key_file)
    };
    let pem = std::fs::read(&path).map_err(|e| format!("key_file {}: {e}", path.display()))?;
    let der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| format!("key_file {}: {e}", path.display()))?
        .ok_or_else(|| format!("key_file {}: no private key in PEM", path.display()))?;
    match c.algorithm.as_str() {
        "rsa-sha256" => RsaKey::<Sha256>::from_key_der(der)
            .map(DkimKey::Rsa)
            .map_err(|e| format!("key_file {}: not an RSA key: {e}", path.display())),
        "ed25519-sha256" => match der {
            PrivateKeyDer::Pkcs8(p) => {
                Ed25519Key::from_pkcs8_maybe_unchecked_der(p.secret_pkcs8_der())
                    .map(DkimKey::Ed25519)
                    .map_err(|e| format!("key_file {}: not an Ed25519 key: {e}", path.display()))
            }
            _ => Err(format!(
                "key_file {}: Ed25519 keys must be PKCS#8",
                path.display()
            )),
        },
        other => Err(format!(
            "algorithm {other:?} must be \"rsa-sha256\" or \"ed25519-sha256\""
        )),
    }
}

impl DkimKeys {
    /// Loads every key; the error names the domain whose key is bad.
    pub fn load(cfgs: &[DkimConfig], base: &Path) -> Result<Self, (String, String)> {
        let mut by_domain = HashMap::new();
        for c in cfgs {
            let key = load_key(c, base).map_err(|m| (c.domain.clone(), m))?;
            let headers: Vec<String> = c
                .headers
                .clone()
                .unwrap_or_else(|| DEFAULT_HEADERS.iter().map(|s| s.to_string()).collect());
            let signer = DkimSigner::from_key(key)
                .domain(c.domain.to_ascii_lowercase())
                .selector(c.selector.clone())
                .headers(headers);
            by_domain.insert(c.domain.to_ascii_lowercase(), Arc::new(signer));
        }
        Ok(Self { by_domain })
    }

    /// The `DKIM-Signature:` header line(s) for a message from `sender`, or None when the
    /// sender's domain has no key or signing failed (logged; mail still goes out).
    pub fn sign(&self, sender: &str, message: &[u8]) -> Option<String> {
        let domain = sender.rsplit_once('@')?.1.to_ascii_lowercase();
        let signer = self.by_domain.get(&domain)?;
        match signer.sign(message) {
            Ok(sig) => Some(sig.to_header()),
            Err(err) => {
                tracing::warn!(domain, %err, "DKIM signing failed; sending unsigned");
                None
            }
        }
    }
}
