//! Stable ids for VIPs and backends, keyed by name.
//!
//! An id indexes kernel maps (rings, stats, `BACKENDS`), and flows in the LRU table
//! remember backend ids, so an id must keep meaning the same thing for the whole run: a
//! name keeps its id across reloads, and an id once given is never handed to another
//! name (a stale flow can then never reach the wrong backend).
//!
//! The flow table outlives the daemon (pinned maps), so the allocation is saved to a
//! file after every change and restored on start: a restarted daemon gives every name
//! the id its flows already carry.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdAllocator {
    #[serde(skip, default)]
    what: &'static str,
    max: u32,
    next: u32,
    by_name: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("no {what} id left for {name:?}: ids are never reused within a run and all {max} are taken; restart the daemon")]
pub struct IdsExhausted {
    pub what: &'static str,
    pub name: String,
    pub max: u32,
}

impl IdAllocator {
    pub fn new(what: &'static str, max: u32) -> Self {
        IdAllocator {
            what,
            max,
            next: 0,
            by_name: BTreeMap::new(),
        }
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The id `name` has or would get. Does not change anything: `plan` all names of a
    /// new config first, so a reload that runs out of ids fails before touching a map.
    pub fn plan<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeMap<String, u32>, IdsExhausted> {
        let mut next = self.next;
        let mut out = BTreeMap::new();
        for name in names {
            let id = match self.by_name.get(name) {
                Some(&id) => id,
                None => {
                    if next >= self.max {
                        return Err(IdsExhausted {
                            what: self.what,
                            name: name.to_string(),
                            max: self.max,
                        });
                    }
                    next += 1;
                    next - 1
                }
            };
            out.insert(name.to_string(), id);
        }
        Ok(out)
    }

    /// Records a plan made by `plan`.
    pub fn commit(&mut self, plan: &BTreeMap<String, u32>) {
        for (name, &id) in plan {
            self.by_name.insert(name.clone(), id);
            self.next = self.next.max(id + 1);
        }
    }
}

/// Both allocations, as saved between runs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdState {
    pub vips: IdAllocator,
    pub backends: IdAllocator,
}

#[derive(Debug, thiserror::Error)]
pub enum IdFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a saved id state: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
}

impl IdState {
    pub fn new(max_vips: u32, max_backends: u32) -> Self {
        IdState {
            vips: IdAllocator::new("VIP", max_vips),
            backends: IdAllocator::new("backend", max_backends),
        }
    }

    /// Reads a saved state; `Ok(None)` when the file does not exist (first start).
    pub fn load(
        path: &Path,
        max_vips: u32,
        max_backends: u32,
    ) -> Result<Option<Self>, IdFileError> {
        let p = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IdFileError::Io { path: p, source }),
        };
        let mut s: IdState =
            serde_json::from_str(&text).map_err(|source| IdFileError::Parse { path: p, source })?;
        // Limits come from this build, not from the file.
        s.vips.what = "VIP";
        s.vips.max = max_vips;
        s.backends.what = "backend";
        s.backends.max = max_backends;
        Ok(Some(s))
    }

    /// Writes atomically (temp file + rename) so a crash never leaves half a file.
    pub fn save(&self, path: &Path) -> Result<(), IdFileError> {
        let io = |source| IdFileError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_string_pretty(self).expect("plain data serialises");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_ids_and_ids_are_never_reused() {
        let mut a = IdAllocator::new("backend", 4);
        let p = a.plan(["x", "y"]).unwrap();
        a.commit(&p);
        assert_eq!((a.get("x"), a.get("y")), (Some(0), Some(1)));
        // "x" removed, "z" added: z gets a fresh id, not x's.
        let p = a.plan(["y", "z"]).unwrap();
        a.commit(&p);
        assert_eq!(a.get("z"), Some(2));
        // "x" comes back: its old id.
        let p = a.plan(["x", "w"]).unwrap();
        assert_eq!(p["x"], 0);
        assert_eq!(p["w"], 3);
        a.commit(&p);
        let e = a.plan(["v"]).unwrap_err();
        assert_eq!(e.max, 4);
    }

    #[test]
    fn state_round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ids.json");
        assert!(IdState::load(&path, 64, 4096).unwrap().is_none());
        let mut s = IdState::new(64, 4096);
        let p = s.backends.plan(["a", "b"]).unwrap();
        s.backends.commit(&p);
        let p = s.backends.plan(["c"]).unwrap();
        s.backends.commit(&p);
        s.save(&path).unwrap();
        let back = IdState::load(&path, 64, 4096).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(back.backends.plan(["d"]).unwrap()["d"], 3);
        std::fs::write(&path, "{").unwrap();
        assert!(IdState::load(&path, 64, 4096).is_err());
    }
}
