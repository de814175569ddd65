//! The envelope stored with each message, and the record format. A record is
//! `MTAQ2 <queue-id> <header-len> <message-len> <crc32>\n<header JSON>\n<message>`;
//! records are self-delimiting, so a segment file is just records back to back, and the
//! lengths and the CRC-32 (over everything after the first line) let recovery find where a
//! write torn by a crash begins.

use super::QueueId;
use serde::{Deserialize, Serialize};

/// SMTP envelope and reception facts the outbound side needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Reverse path; empty for bounces (`MAIL FROM:<>`).
    pub sender: String,
    /// Forward paths, in RCPT order.
    pub recipients: Vec<String>,
    /// Client address as `ip:port`.
    pub peer: String,
    /// EHLO/HELO argument.
    pub helo: String,
    /// SASL user when the session authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_user: Option<String>,
    /// Reception time, seconds since the epoch.
    pub received_at: u64,
    /// Client declared 8BITMIME.
    #[serde(default)]
    pub body_8bit: bool,
    /// Client declared SMTPUTF8.
    #[serde(default)]
    pub smtputf8: bool,
}

impl Envelope {
    /// Lower-cased domains of the recipients, de-duplicated, for per-domain queue depth.
    pub fn recipient_domains(&self) -> Vec<String> {
        let mut d: Vec<String> = self
            .recipients
            .iter()
            .map(|r| {
                r.rsplit_once('@')
                    .map(|(_, d)| d)
                    .unwrap_or("")
                    .to_lowercase()
            })
            .collect();
        d.sort();
        d.dedup();
        d
    }
}

const MAGIC: &str = "MTAQ2";
/// The first line is never longer than this (magic, 16-digit id, two lengths, CRC).
pub const MAX_FIRST_LINE: usize = 96;

/// Serialises a whole record; `parts` are concatenated as the message.
#[cfg(test)]
pub fn encode(id: QueueId, env: &Envelope, parts: &[&[u8]]) -> Vec<u8> {
    encode_head(id, env, parts, &[])
}

/// Serialises a record whose message is `parts` followed by `tail`, except `tail`
/// itself: the result plus `tail` written right after it is exactly the record of
/// all the parts (`encode` in the tests). The group commit writes the body from the session's buffer that way,
/// so a large body is not copied once more into a record (the CRC still covers it).
pub fn encode_head(id: QueueId, env: &Envelope, parts: &[&[u8]], tail: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(env).expect("envelope serialises");
    let inline_len: usize = parts.iter().map(|p| p.len()).sum();
    let body_len = inline_len + tail.len();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&json);
    crc.update(b"\n");
    for p in parts {
        crc.update(p);
    }
    crc.update(tail);
    let mut out = format!(
        "{MAGIC} {id} {} {body_len} {:08x}\n",
        json.len(),
        crc.finalize()
    )
    .into_bytes();
    out.reserve(json.len() + 1 + inline_len);
    out.extend_from_slice(&json);
    out.push(b'\n');
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// Why bytes are not a complete record.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a spool record (bad first line)")]
    BadMagic,
    #[error("truncated: expected {expected} bytes, have {actual}")]
    Truncated { expected: usize, actual: usize },
    #[error("checksum mismatch")]
    Checksum,
    #[error("envelope is not valid JSON: {source}")]
    BadEnvelope {
        #[source]
        source: serde_json::Error,
    },
}

/// The first line of a record: id, header length, message length, and its own length.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub id: QueueId,
    pub first_len: usize,
    pub header_len: usize,
    pub body_len: usize,
    pub crc: u32,
}

impl Frame {
    /// Total record length.
    pub fn len(&self) -> usize {
        self.first_len + self.header_len + 1 + self.body_len
    }

    /// Parses the first line from the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, RecordError> {
        let nl = memchr::memchr(b'\n', &bytes[..bytes.len().min(MAX_FIRST_LINE)])
            .ok_or(RecordError::BadMagic)?;
        let first = std::str::from_utf8(&bytes[..nl]).map_err(|_| RecordError::BadMagic)?;
        let mut parts = first.split(' ');
        if parts.next() != Some(MAGIC) {
            return Err(RecordError::BadMagic);
        }
        let id = parts
            .next()
            .and_then(|p| p.parse::<QueueId>().ok())
            .ok_or(RecordError::BadMagic)?;
        let mut num = || -> Result<usize, RecordError> {
            parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or(RecordError::BadMagic)
        };
        let (header_len, body_len) = (num()?, num()?);
        let crc = parts
            .next()
            .and_then(|p| u32::from_str_radix(p, 16).ok())
            .ok_or(RecordError::BadMagic)?;
        Ok(Self {
            id,
            first_len: nl + 1,
            header_len,
            body_len,
            crc,
        })
    }

    /// Checks the CRC of a whole record (`bytes` starts at the record, holds all of it).
    pub fn verify(&self, bytes: &[u8]) -> Result<(), RecordError> {
        if bytes.len() < self.len() {
            return Err(RecordError::Truncated {
                expected: self.len(),
                actual: bytes.len(),
            });
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[self.first_len..self.len()]);
        if crc.finalize() != self.crc {
            return Err(RecordError::Checksum);
        }
        Ok(())
    }

    /// The envelope, from bytes that start at the record and hold at least its header.
    pub fn envelope(&self, bytes: &[u8]) -> Result<Envelope, RecordError> {
        let end = self.first_len + self.header_len;
        if bytes.len() < end + 1 {
            return Err(RecordError::Truncated {
                expected: end + 1,
                actual: bytes.len(),
            });
        }
        serde_json::from_slice(&bytes[self.first_len..end])
            .map_err(|source| RecordError::BadEnvelope { source })
    }
}

/// Splits exactly one record into id, envelope and message.
pub fn decode(bytes: &[u8]) -> Result<(QueueId, Envelope, &[u8]), RecordError> {
    let f = Frame::parse(bytes)?;
    if bytes.len() != f.len() {
        return Err(RecordError::Truncated {
            expected: f.len(),
            actual: bytes.len(),
        });
    }
    f.verify(bytes)?;
    let env = f.envelope(bytes)?;
    Ok((f.id, env, &bytes[f.len() - f.body_len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let env = Envelope {
            sender: "a@x.test".into(),
            recipients: vec!["b@Y.test".into(), "c@y.test".into()],
            peer: "127.0.0.1:1".into(),
            helo: "h".into(),
            auth_user: None,
            received_at: 1,
            body_8bit: false,
            smtputf8: false,
        };
        let rec = encode(QueueId(42), &env, &[b"hel", b"lo"]);
        let (id, e, m) = decode(&rec).unwrap();
        assert_eq!(
            (id, e.clone(), m),
            (QueueId(42), env.clone(), &b"hello"[..])
        );
        assert_eq!(Frame::parse(&rec).unwrap().len(), rec.len());
        assert!(matches!(
            decode(&rec[..rec.len() - 1]),
            Err(RecordError::Truncated { .. })
        ));
        assert!(matches!(decode(b"junk\n"), Err(RecordError::BadMagic)));
        let mut bad = rec.clone();
        *bad.last_mut().unwrap() = b'X';
        assert!(matches!(decode(&bad), Err(RecordError::Checksum)));
        assert_eq!(env.recipient_domains(), vec!["y.test".to_string()]);
        let mut split = encode_head(QueueId(42), &env, &[b"he"], b"llo");
        split.extend_from_slice(b"llo");
        assert_eq!(split, rec);
    }
}
