//! Start-up recovery: rebuild the index from the segment files, skipping removed ids;
//! cut the newest segment back to its last complete record (a crash can tear the batch
//! being appended, whose clients never got a 250); quarantine damaged older segments;
//! compact the log of removals.

use super::committer::Location;
use super::envelope::{Frame, MAX_FIRST_LINE};
use super::index::Index;
use super::{io, QueueId, RecordError, SpoolError};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub const REMOVED_LOG: &str = "removed.log";

pub struct Recovered {
    pub segments: PathBuf,
    pub index: Index,
    pub newest: u64,
    pub removed_log: File,
}

pub fn recover(dir: &Path) -> Result<Recovered, SpoolError> {
    let segments = dir.join("segments");
    let quarantine = dir.join("quarantine");
    std::fs::create_dir_all(&segments).map_err(io(&segments))?;
    let log_path = segments.join(REMOVED_LOG);
    let removed: HashSet<QueueId> = std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut index = Index::default();
    let mut newest = 0;
    // Removals that must stay logged: their segment still holds live records.
    let mut keep = String::new();
    let mut names: Vec<_> = std::fs::read_dir(&segments)
        .map_err(io(&segments))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    // Only the newest segment can have been appended to when the process died; older
    // ones were complete (and flushed) before a newer one was started.
    let newest_segment = names
        .iter()
        .filter_map(|p| p.file_name()?.to_str()?.parse::<QueueId>().ok())
        .max();
    for p in names {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if name == REMOVED_LOG
            || name == format!("{REMOVED_LOG}.new")
            || name == super::defer::DEFER_LOG
            || name == format!("{}.new", super::defer::DEFER_LOG)
        {
            continue;
        }
        let Ok(seg) = name.parse::<QueueId>() else {
            tracing::warn!(file = %p.display(), "spool recovery: ignoring unknown file");
            continue;
        };
        newest = newest.max(seg.0);
        let is_newest = Some(seg) == newest_segment;
        match scan(&p, seg, is_newest) {
            Ok((records, torn_at)) => {
                if let Some(at) = torn_at {
                    tracing::warn!(file = %p.display(), offset = at, "spool recovery: cutting a batch torn by a crash");
                    let f = OpenOptions::new().write(true).open(&p).map_err(io(&p))?;
                    f.set_len(at).map_err(io(&p))?;
                    f.sync_all().map_err(io(&p))?;
                }
                let mut live = 0;
                let mut gone = Vec::new();
                for (loc, id, env, size) in records {
                    newest = newest.max(id.0);
                    if removed.contains(&id) {
                        gone.push(id);
                    } else {
                        index.insert(id, env, size, loc);
                        live += 1;
                    }
                }
                if live == 0 {
                    std::fs::remove_file(&p).map_err(io(&p))?;
                } else {
                    for id in gone {
                        keep.push_str(&format!("{id}\n"));
                    }
                }
            }
            Err(err) => {
                tracing::error!(file = %p.display(), %err, "spool recovery: damaged segment moved to quarantine");
                std::fs::create_dir_all(&quarantine).map_err(io(&quarantine))?;
                std::fs::rename(&p, quarantine.join(&name)).map_err(io(&p))?;
            }
        }
    }
    let tmp = segments.join(format!("{REMOVED_LOG}.new"));
    std::fs::write(&tmp, keep).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &log_path).map_err(io(&log_path))?;
    let removed_log = OpenOptions::new()
        .append(true)
        .open(&log_path)
        .map_err(io(&log_path))?;
    Ok(Recovered {
        segments,
        index,
        newest,
        removed_log,
    })
}

type Scanned = (Vec<(Location, QueueId, super::Envelope, u64)>, Option<u64>);

/// Reads the records of a segment. Older segments must tile their file exactly (header
/// checks only, bodies are skipped). The newest is read in full with CRC checks, and the
/// offset of its first bad record is returned as the torn tail instead of an error.
fn scan(p: &Path, seg: QueueId, newest: bool) -> Result<Scanned, SpoolError> {
    if newest {
        return scan_verified(p, seg);
    }
    let f = File::open(p).map_err(io(p))?;
    let len = f.metadata().map_err(io(p))?.len();
    let mut r = BufReader::with_capacity(64 * 1024, f);
    let mut out = Vec::new();
    let mut offset = 0u64;
    let damaged = |source| SpoolError::Record {
        path: p.to_path_buf(),
        source,
    };
    while offset < len {
        let mut head = vec![0u8; MAX_FIRST_LINE.min((len - offset) as usize)];
        r.read_exact(&mut head).map_err(io(p))?;
        let frame = Frame::parse(&head).map_err(damaged)?;
        let total = frame.len() as u64;
        if offset + total > len {
            return Err(damaged(RecordError::Truncated {
                expected: (offset + total) as usize,
                actual: len as usize,
            }));
        }
        let want = frame.first_len + frame.header_len + 1;
        if head.len() < want {
            let have = head.len();
            head.resize(want, 0);
            r.read_exact(&mut head[have..]).map_err(io(p))?;
        }
        let env = frame.envelope(&head).map_err(damaged)?;
        out.push((
            Location {
                segment: seg,
                offset,
                len: total,
            },
            frame.id,
            env,
            frame.body_len as u64,
        ));
        offset += total;
        r.seek(SeekFrom::Start(offset)).map_err(io(p))?;
    }
    Ok((out, None))
}

fn scan_verified(p: &Path, seg: QueueId) -> Result<Scanned, SpoolError> {
    let bytes = std::fs::read(p).map_err(io(p))?;
    let mut out = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let parsed = Frame::parse(rest).and_then(|f| {
            f.verify(rest)?;
            Ok((f, f.envelope(rest)?))
        });
        let Ok((frame, env)) = parsed else {
            return Ok((out, Some(offset as u64)));
        };
        out.push((
            Location {
                segment: seg,
                offset: offset as u64,
                len: frame.len() as u64,
            },
            frame.id,
            env,
            frame.body_len as u64,
        ));
        offset += frame.len();
    }
    Ok((out, None))
}
