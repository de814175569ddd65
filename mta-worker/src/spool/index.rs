//! In-memory view of what is in the spool (so `/status` never scans the disk), and where
//! each record lives.

use super::committer::Location;
use super::{Envelope, QueueId};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<QueueId, Entry>,
    by_domain: HashMap<String, u64>,
    /// Live records per segment; a segment is deleted when its count reaches 0.
    segments: HashMap<QueueId, usize>,
    bytes: u64,
}

#[derive(Debug)]
struct Entry {
    env: Envelope,
    size: u64,
    loc: Location,
}

impl Index {
    pub fn insert(&mut self, id: QueueId, env: Envelope, size: u64, loc: Location) {
        if self.entries.contains_key(&id) {
            return;
        }
        for d in env.recipient_domains() {
            *self.by_domain.entry(d).or_default() += 1;
        }
        self.bytes += size;
        *self.segments.entry(loc.segment).or_default() += 1;
        self.entries.insert(id, Entry { env, size, loc });
    }

    /// Forgets `id` (`None` if unknown); the inner value is its segment when that segment
    /// has no live record left.
    pub fn remove(&mut self, id: QueueId) -> Option<Option<QueueId>> {
        let e = self.entries.remove(&id)?;
        self.bytes -= e.size;
        for d in e.env.recipient_domains() {
            if let Some(c) = self.by_domain.get_mut(&d) {
                *c -= 1;
                if *c == 0 {
                    self.by_domain.remove(&d);
                }
            }
        }
        let seg = e.loc.segment;
        let empty = self.segments.get_mut(&seg).is_some_and(|c| {
            *c -= 1;
            *c == 0
        });
        if empty {
            self.segments.remove(&seg);
            return Some(Some(seg));
        }
        Some(None)
    }

    pub fn location(&self, id: QueueId) -> Option<Location> {
        self.entries.get(&id).map(|e| e.loc)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn by_domain(&self) -> BTreeMap<String, u64> {
        self.by_domain
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    pub fn list(&self) -> Vec<(QueueId, Envelope)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .map(|(id, e)| (*id, e.env.clone()))
            .collect();
        v.sort_by_key(|(id, _)| *id);
        v
    }
}
