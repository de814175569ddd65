//! Config errors that point at the exact place to fix: file, line and field.

use std::path::PathBuf;

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {field}: {message}")]
    Invalid {
        file: PathBuf,
        /// 1-based line, 0 when the problem is not tied to one line (a missing section).
        line: usize,
        field: String,
        message: String,
    },
}

/// 1-based line of a byte offset in `text`.
pub fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Best-effort line of `key = ...` inside the table `section` ("" for the top level), for
/// errors found after deserialisation, when serde's spans are gone. Array-of-tables
/// entries are addressed by `index`.
pub fn line_of_key(text: &str, section: &str, index: usize, key: &str) -> usize {
    let mut current = String::new();
    let mut seen = 0usize;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            current = name.trim().to_string();
            if current == section {
                seen += 1;
            }
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_string();
            if current == section {
                seen = 1;
            }
            continue;
        }
        let in_section = current == section && (section.is_empty() || seen == index + 1);
        if in_section {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim() == key {
                    return n + 1;
                }
            }
        }
    }
    0
}
