//! Durable retry state: an append-only `defer.log` next to the segments, one line per
//! transient failure of one queue entry (message × recipient domain × 64-recipient block),
//! and one when an entry finishes while others of its message are still pending.
//!
//! Why a separate log rather than rewriting the message record: a record is immutable
//! once a client got its 250, and the defer write happens only on a 4xx/connection
//! failure, so it must cost the accept path nothing. A line is one `write(2)` on an
//! `O_APPEND` file, without fsync (like `removed.log`): it survives a process crash or
//! SIGKILL; after a power loss the worst case is that a message is retried early with an
//! older (or zero) attempt count, never that it is lost.
//!
//! Line format: `<crc32 of the JSON, 8 hex digits> <JSON>\n`. The last line for an entry
//! wins. A torn or damaged line is skipped with a warning (that entry falls back to its
//! previous line, or to attempt 0). Recovery keeps only the last line of each live entry
//! and rewrites the file; while running, the file is rewritten the same way when it grows
//! well past what is live.

use super::QueueId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const DEFER_LOG: &str = "defer.log";

/// Rewrite the log while running once it is this big and mostly stale.
const COMPACT_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// Retry state of one queue entry after a transient failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeferRecord {
    pub id: QueueId,
    /// Lower-cased recipient domain of the entry.
    pub domain: String,
    /// Index of the first envelope recipient covered by `mask`.
    pub base: u16,
    /// Recipients still pending after this failure (bit i = recipient `base + i`).
    /// 0 marks an entry that finished (delivered or bounced) while other entries of the
    /// message were still pending, so a restart does not send it again.
    pub mask: u64,
    /// Attempts made so far (this failure included).
    pub attempts: u16,
    /// When the next attempt is due, ms since the epoch (the scheduler's clock).
    pub next_ms: u64,
    /// When the entry first failed, ms since the epoch.
    pub first_ms: u64,
    /// The last transient reply: code, enhanced status (may be empty), text.
    pub last_code: u16,
    pub last_enhanced: String,
    pub last_text: String,
}

impl DeferRecord {
    fn same_entry(&self, o: &DeferRecord) -> bool {
        self.domain == o.domain && self.base == o.base
    }
}

/// On-disk form; the id as its usual 16-hex-digit text so the file is greppable.
#[derive(Serialize, Deserialize)]
struct Wire {
    id: String,
    domain: String,
    base: u16,
    mask: u64,
    attempts: u16,
    next_ms: u64,
    first_ms: u64,
    code: u16,
    #[serde(default)]
    enhanced: String,
    #[serde(default)]
    text: String,
}

/// Encodes one line (with its trailing newline).
pub fn encode(r: &DeferRecord) -> Vec<u8> {
    let json = serde_json::to_vec(&Wire {
        id: r.id.to_string(),
        domain: r.domain.clone(),
        base: r.base,
        mask: r.mask,
        attempts: r.attempts,
        next_ms: r.next_ms,
        first_ms: r.first_ms,
        code: r.last_code,
        enhanced: r.last_enhanced.clone(),
        text: r.last_text.clone(),
    })
    .expect("defer record serialises");
    let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
    line.extend_from_slice(&json);
    line.push(b'\n');
    line
}

/// Why a line was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("no checksum field")]
    NoChecksum,
    #[error("checksum mismatch (torn or damaged line)")]
    Checksum,
    #[error("bad JSON: {0}")]
    Json(String),
    #[error("bad queue id {0:?}")]
    Id(String),
}

/// Decodes one line (without its newline).
pub fn decode(line: &[u8]) -> Result<DeferRecord, LineError> {
    let (crc, json) = match line.iter().position(|&b| b == b' ') {
        Some(8) => (&line[..8], &line[9..]),
        _ => return Err(LineError::NoChecksum),
    };
    let crc = std::str::from_utf8(crc)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or(LineError::NoChecksum)?;
    if crc32fast::hash(json) != crc {
        return Err(LineError::Checksum);
    }
    let w: Wire = serde_json::from_slice(json).map_err(|e| LineError::Json(e.to_string()))?;
    let id = w.id.parse().map_err(|_| LineError::Id(w.id.clone()))?;
    Ok(DeferRecord {
        id,
        domain: w.domain,
        base: w.base,
        mask: w.mask,
        attempts: w.attempts,
        next_ms: w.next_ms,
        first_ms: w.first_ms,
        last_code: w.code,
        last_enhanced: w.enhanced,
        last_text: w.text,
    })
}

/// The live retry state plus the open log.
pub struct DeferLog {
    path: PathBuf,
    /// Open for appending; `None` while nothing is deferred (no file on disk then).
    file: Option<File>,
    /// Latest record per entry, by message; entries per message are few.
    live: HashMap<QueueId, Vec<DeferRecord>>,
    /// Bytes in the file.
    file_bytes: u64,
    /// Records in `live`, kept as a count so a write never walks the map.
    entries: u64,
}

impl DeferLog {
    /// Reads `dir/defer.log`, keeps the last good line of every entry whose message is
    /// still queued (`is_live`), rewrites the file with just those, and opens it for
    /// appending. A damaged line is skipped with a warning, never an error.
    pub fn open(dir: &Path, is_live: impl Fn(QueueId) -> bool) -> std::io::Result<Self> {
        let path = dir.join(DEFER_LOG);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut live: HashMap<QueueId, Vec<DeferRecord>> = HashMap::new();
        let mut bad = 0usize;
        for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match decode(line) {
                Ok(r) if is_live(r.id) => {
                    upsert(&mut live, r);
                }
                Ok(_) => {}
                Err(err) => {
                    bad += 1;
                    tracing::warn!(file = %path.display(), line = n + 1, %err,
                        "defer log: skipping a damaged line; that entry keeps its previous retry state, or starts again at attempt 0");
                }
            }
        }
        let (file, file_bytes) = write_compacted(&path, &live)?;
        let mut log = Self {
            file,
            path,
            live,
            file_bytes,
            entries: 0,
        };
        log.entries = log.live.values().map(|v| v.len() as u64).sum();
        tracing::info!(
            entries = log.live.values().map(Vec::len).sum::<usize>(),
            damaged = bad,
            "defer log recovered"
        );
        Ok(log)
    }

    /// Appends `r` (keeping the first-failure time of an earlier record for the entry).
    pub fn record(&mut self, mut r: DeferRecord) -> std::io::Result<()> {
        if let Some(prev) = self
            .live
            .get(&r.id)
            .and_then(|v| v.iter().find(|p| p.same_entry(&r)))
        {
            r.first_ms = prev.first_ms.min(r.first_ms);
        }
        let line = encode(&r);
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            ),
        };
        // One write on an O_APPEND file: concurrent appends never interleave, and a
        // crash leaves at most a torn last line, which the checksum catches.
        file.write_all(&line)?;
        self.file_bytes += line.len() as u64;
        if upsert(&mut self.live, r) {
            self.entries += 1;
        }
        // ~200 bytes a live line; exact sizes are not worth re-encoding for.
        if self.file_bytes > COMPACT_MIN_BYTES && self.file_bytes > 4 * 200 * self.entries {
            self.rewrite()?;
        }
        Ok(())
    }

    /// Drops the state of a message that left the spool (the next rewrite forgets it).
    pub fn forget(&mut self, id: QueueId) {
        if let Some(v) = self.live.remove(&id) {
            self.entries -= v.len() as u64;
        }
    }

    /// Retry state of every deferred entry of `id`.
    pub fn get(&self, id: QueueId) -> Vec<DeferRecord> {
        self.live.get(&id).cloned().unwrap_or_default()
    }

    fn rewrite(&mut self) -> std::io::Result<()> {
        let (file, bytes) = write_compacted(&self.path, &self.live)?;
        self.file = file;
        self.file_bytes = bytes;
        Ok(())
    }
}

/// Writes the live records to a temp file, renames it over the log and opens the result
/// for appending; returns the file and its length. With nothing live the log is deleted
/// (an idle spool holds no defer file).
fn write_compacted(
    path: &Path,
    live: &HashMap<QueueId, Vec<DeferRecord>>,
) -> std::io::Result<(Option<File>, u64)> {
    if live.is_empty() {
        return match std::fs::remove_file(path) {
            Ok(()) => Ok((None, 0)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, 0)),
            Err(e) => Err(e),
        };
    }
    let tmp = path.with_extension("log.new");
    let mut out = Vec::new();
    let mut ids: Vec<_> = live.keys().copied().collect();
    ids.sort();
    for id in ids {
        for r in &live[&id] {
            out.extend_from_slice(&encode(r));
        }
    }
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        // The rename must never expose a half-written file after a crash.
        f.sync_data()?;
    }
    std::fs::rename(&tmp, path)?;
    let file = OpenOptions::new().append(true).open(path)?;
    Ok((Some(file), out.len() as u64))
}

/// Replaces the entry's record or adds it; true when added.
fn upsert(live: &mut HashMap<QueueId, Vec<DeferRecord>>, r: DeferRecord) -> bool {
    let v = live.entry(r.id).or_default();
    match v.iter_mut().find(|p| p.same_entry(&r)) {
        Some(p) => {
            *p = r;
            false
        }
        None => {
            v.push(r);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, attempts: u16, next_ms: u64) -> DeferRecord {
        DeferRecord {
            id: QueueId(id),
            domain: "a.test".into(),
            base: 0,
            mask: 0b11,
            attempts,
            next_ms,
            first_ms: 1_000 * attempts as u64,
            last_code: 451,
            last_enhanced: "4.3.0".into(),
            last_text: "busy".into(),
        }
    }

    #[test]
    fn line_round_trips_and_damage_is_detected() {
        let r = rec(0x64C5F7A3B2E01, 2, 99);
        let line = encode(&r);
        assert_eq!(decode(&line[..line.len() - 1]), Ok(r));
        // Torn in the middle: checksum no longer matches.
        assert_eq!(decode(&line[..line.len() / 2]), Err(LineError::Checksum));
        let mut flipped = line.clone();
        flipped[20] ^= 0x01;
        assert_eq!(
            decode(&flipped[..flipped.len() - 1]),
            Err(LineError::Checksum)
        );
        assert_eq!(decode(b"garbage"), Err(LineError::NoChecksum));
        assert_eq!(decode(&[0xff, 0xfe, 0x00]), Err(LineError::NoChecksum));
    }

    #[test]
    fn last_good_line_wins_and_torn_tail_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = DeferLog::open(dir.path(), |_| true).unwrap();
            log.record(rec(1, 1, 100)).unwrap();
            log.record(rec(1, 2, 200)).unwrap();
            log.record(rec(2, 1, 300)).unwrap();
            log.record(rec(1, 3, 400)).unwrap();
        }
        // Tear the last line (message 1, attempt 3) as a crash mid-write would.
        let p = dir.path().join(DEFER_LOG);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 30]).unwrap();
        let log = DeferLog::open(dir.path(), |id| id != QueueId(2)).unwrap();
        let got = log.get(QueueId(1));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].attempts, got[0].next_ms), (2, 200));
        // First failure time is the first record's, not the latest one's.
        assert_eq!(got[0].first_ms, 1_000);
        assert!(log.get(QueueId(2)).is_empty(), "not live: dropped");
        // Compacted: one line left.
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        drop(log);
        // Nothing live: no file left behind.
        DeferLog::open(dir.path(), |_| false).unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn log_is_compacted_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(DEFER_LOG);
        let mut log = DeferLog::open(dir.path(), |_| true).unwrap();
        let mut largest = 0;
        for n in 1..=30_000u16 {
            log.record(rec(7, n, n as u64)).unwrap();
            largest = largest.max(std::fs::metadata(&p).unwrap().len());
        }
        assert!(largest <= COMPACT_MIN_BYTES + 1024, "{largest}");
        assert!(std::fs::metadata(&p).unwrap().len() < COMPACT_MIN_BYTES);
        drop(log);
        let log = DeferLog::open(dir.path(), |_| true).unwrap();
        assert_eq!(log.get(QueueId(7))[0].attempts, 30_000);
    }

    #[test]
    fn garbage_file_recovers_empty_without_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut junk = vec![0u8; 300];
        junk.extend_from_slice(b"\n\xff\xfe not a record\n12345678 {\"id\":1}\n");
        std::fs::write(dir.path().join(DEFER_LOG), junk).unwrap();
        let mut log = DeferLog::open(dir.path(), |_| true).unwrap();
        assert!(log.get(QueueId(1)).is_empty());
        log.record(rec(1, 1, 5)).unwrap();
        drop(log);
        let log = DeferLog::open(dir.path(), |_| true).unwrap();
        assert_eq!(log.get(QueueId(1))[0].attempts, 1);
    }
}
