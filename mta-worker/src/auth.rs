//! SMTP AUTH credentials: a file of `user:hash` lines with argon2 PHC hashes, and the
//! SASL PLAIN / LOGIN message decoding. Verification is CPU-heavy by design, so callers
//! run it on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use base64::Engine;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// Users and their password hashes.
#[derive(Debug, Default)]
pub struct Users {
    hashes: HashMap<String, String>,
    /// Verified against for unknown users so both paths cost the same.
    dummy: String,
}

impl Users {
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut hashes = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |message: &str| AuthError::Syntax {
                path: path.to_path_buf(),
                line: n + 1,
                message: message.to_string(),
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| syntax("expected user:hash"))?;
            PasswordHash::new(hash).map_err(|_| syntax("hash is not an argon2 PHC string"))?;
            hashes.insert(user.to_string(), hash.to_string());
        }
        let salt = argon2::password_hash::SaltString::encode_b64(b"mta-worker-dummy")
            .expect("static salt is valid");
        let dummy = argon2::password_hash::PasswordHasher::hash_password(
            &argon2::Argon2::default(),
            b"no such user",
            &salt,
        )
        .expect("argon2 hashes a static password")
        .to_string();
        Ok(Self { hashes, dummy })
    }

    /// Constant work whether or not the user exists, so timing does not reveal users.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.hashes.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let ok = argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && known
    }
}

/// Decodes one base64 SASL line; `None` for invalid base64.
pub fn b64(line: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()
}

pub fn b64_encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Splits a PLAIN message `authzid NUL authcid NUL passwd` into (user, password).
pub fn parse_plain(msg: &[u8]) -> Option<(String, String)> {
    let mut parts = msg.split(|&b| b == 0);
    let _authz = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let pass = std::str::from_utf8(parts.next()?).ok()?;
    if parts.next().is_some() || user.is_empty() {
        return None;
    }
    Some((user.to_string(), pass.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_parsing() {
        assert_eq!(parse_plain(b"\0bob\0pw"), Some(("bob".into(), "pw".into())));
        assert_eq!(parse_plain(b"bob\0pw"), None);
    }
}
