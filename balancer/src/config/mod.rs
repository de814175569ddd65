//! The balancer's TOML config: schema, loading, validation and error locations.
//!
//! Loading is all-or-nothing: a file either parses and validates completely, or the
//! caller gets every problem with file, line, column and field, and nothing changes.

pub mod duration;
pub mod locate;
pub mod resolve;
pub mod schema;
pub mod validate;
pub mod values;

use std::fmt;
use std::path::Path;

pub use duration::HumanDuration;
pub use schema::*;
pub use values::{IpPrefix, MacSetting};

use locate::{line_col, path_at, span_of, FieldPath};

/// One problem in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted path of the field, e.g. `vip[0].backend[1].weight`; empty when the text
    /// could not be parsed far enough to tell.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// Reads, parses and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    parse(&text, &file)
}

/// Parses and validates `text`; `file` only names it in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let doc = toml_edit::ImDocument::parse(text);
    let problem = |offset: usize, field: String, message: String| {
        let (line, column) = line_col(text, offset);
        Problem {
            file: file.to_string(),
            line,
            column,
            field,
            message,
        }
    };
    let cfg: Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let field = doc
                .as_ref()
                .ok()
                .and_then(|d| path_at(d, offset))
                .map(|p| p.to_string())
                .unwrap_or_default();
            let message = e.message().trim().replace('\n', "; ");
            return Err(ConfigError::Invalid {
                problems: vec![problem(offset, field, message)],
            });
        }
    };
    let found = validate::validate(&cfg);
    if found.is_empty() {
        return Ok(cfg);
    }
    let doc = doc.ok();
    let problems = found
        .into_iter()
        .map(|(path, message): (FieldPath, String)| {
            let offset = doc
                .as_ref()
                .and_then(|d| span_of(d, &path))
                .map_or(0, |s| s.start);
            problem(offset, path.to_string(), message)
        })
        .collect();
    Err(ConfigError::Invalid { problems })
}

#[cfg(test)]
mod tests;
