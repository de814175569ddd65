//! An append-only file written in batches: callers add whole lines to a memory buffer and
//! a background thread writes what accumulated every few milliseconds with one `write(2)`.
//! Used for files where one `write` per line was a measurable share of the per-message
//! cost (the delivery log: two lines per relayed message; the reception log: one per
//! message, at tens of thousands of messages per second) and where losing the last few
//! milliseconds on a process crash is acceptable. Lines are never torn or interleaved,
//! and everything added before [`BatchedAppend::flush`] or drop is on the file after it.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long added lines may wait in memory.
pub const FLUSH_DELAY: Duration = Duration::from_millis(5);
/// A buffer this large is written by the caller right away (bounds memory under bursts).
const MAX_PENDING: usize = 256 * 1024;

struct Shared {
    /// Lines not yet handed to the file, and whether the owner is gone.
    pending: Mutex<(Vec<u8>, bool)>,
    /// Signalled when the buffer becomes non-empty or on close.
    ready: Condvar,
    /// Held while a batch is written, so batches reach the file in order.
    file: Mutex<File>,
}

impl Shared {
    /// Writes whatever is pending. The file lock is taken before the buffer is, so two
    /// flushers cannot swap their batches' order.
    fn flush(&self) -> std::io::Result<()> {
        let mut file = self.file.lock().expect("append file lock");
        self.write_pending(&mut file)
    }

    /// Moves what is pending to `file`, which the caller holds locked.
    fn write_pending(&self, file: &mut File) -> std::io::Result<()> {
        let batch = std::mem::take(&mut self.pending.lock().expect("append buffer lock").0);
        if batch.is_empty() {
            return Ok(());
        }
        file.write_all(&batch)
    }
}

/// See the module documentation.
pub struct BatchedAppend {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    name: &'static str,
}

impl std::fmt::Debug for BatchedAppend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchedAppend")
            .field("name", &self.name)
            .finish()
    }
}

impl BatchedAppend {
    /// Takes over `file` (opened for appending); `name` labels the flush thread and errors.
    pub fn new(file: File, name: &'static str) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new((Vec::new(), false)),
            ready: Condvar::new(),
            file: Mutex::new(file),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-flush"))
            .spawn(move || flusher(&s, name))?;
        Ok(Self {
            shared,
            thread: Some(thread),
            name,
        })
    }

    /// Adds one or more complete lines.
    pub fn append(&self, line: &[u8]) {
        let big = {
            let mut p = self.shared.pending.lock().expect("append buffer lock");
            if p.0.is_empty() {
                self.shared.ready.notify_one();
            }
            p.0.extend_from_slice(line);
            p.0.len() >= MAX_PENDING
        };
        if big {
            self.flush_logged();
        }
    }

    /// Adds a line built in place (avoids a temporary buffer per line).
    pub fn append_with(&self, build: impl FnOnce(&mut Vec<u8>)) {
        let big = {
            let mut p = self.shared.pending.lock().expect("append buffer lock");
            if p.0.is_empty() {
                self.shared.ready.notify_one();
            }
            build(&mut p.0);
            p.0.len() >= MAX_PENDING
        };
        if big {
            self.flush_logged();
        }
    }

    /// Writes everything added so far (returns once it is in the file).
    pub fn flush(&self) -> std::io::Result<()> {
        self.shared.flush()
    }

    /// Writes what is pending to the current file, then goes on in `file`. For log
    /// rotation: the old file gets every line added before the call, the new one every
    /// line after it.
    pub fn replace_file(&self, file: File) -> std::io::Result<()> {
        let mut current = self.shared.file.lock().expect("append file lock");
        let written = self.shared.write_pending(&mut current);
        *current = file;
        written
    }

    fn flush_logged(&self) {
        if let Err(err) = self.shared.flush() {
            tracing::error!(file = self.name, %err, "cannot append");
        }
    }
}

impl Drop for BatchedAppend {
    fn drop(&mut self) {
        self.shared.pending.lock().expect("append buffer lock").1 = true;
        self.shared.ready.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.flush_logged();
    }
}

fn flusher(s: &Shared, name: &'static str) {
    loop {
        {
            let mut p = s.pending.lock().expect("append buffer lock");
            while p.0.is_empty() && !p.1 {
                p = s.ready.wait(p).expect("append buffer lock");
            }
            if p.1 {
                return;
            }
            // Let more lines gather; a close cuts the wait short.
            p = s
                .ready
                .wait_timeout(p, FLUSH_DELAY)
                .expect("append buffer lock")
                .0;
            if p.1 {
                return;
            }
        }
        if let Err(err) = s.flush() {
            tracing::error!(file = name, %err, "cannot append");
        }
    }
}

/// A JSON-lines log on a [`BatchedAppend`] (the reception and delivery logs), or nothing
/// when no file is configured.
#[derive(Debug, Default)]
pub struct JsonLines(Option<(BatchedAppend, PathBuf)>);

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl JsonLines {
    /// Opens `path` for appending, creating it; `None` logs nothing. `name` labels the
    /// flush thread and errors.
    pub fn open(path: Option<&Path>, name: &'static str) -> std::io::Result<Self> {
        let Some(p) = path else {
            return Ok(Self(None));
        };
        let log = BatchedAppend::new(open_append(p)?, name)?;
        Ok(Self(Some((log, p.to_path_buf()))))
    }

    /// Opens the configured path again and goes on there (after `logrotate` renamed the
    /// file); lines added before go to the old file. A failure keeps the old file.
    pub fn reopen(&self) -> std::io::Result<()> {
        match &self.0 {
            Some((log, path)) => log.replace_file(open_append(path)?),
            None => Ok(()),
        }
    }

    /// Adds `record` as one line.
    pub fn write(&self, record: &impl Serialize) {
        if let Some((f, _)) = &self.0 {
            f.append_with(|buf| {
                serde_json::to_writer(&mut *buf, record).expect("record serialises");
                buf.push(b'\n');
            });
        }
    }

    /// Writes every line added so far to the file; a failure is logged.
    pub fn flush(&self) {
        if let Some((f, _)) = &self.0 {
            f.flush_logged();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_reach_the_file_in_order_and_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap()
        };
        let a = BatchedAppend::new(open(), "test").unwrap();
        a.append(b"one\n");
        std::thread::sleep(FLUSH_DELAY * 10);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\n");
        a.append(b"two\n");
        a.append_with(|b| b.extend_from_slice(b"three\n"));
        a.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\nthree\n");
        a.append(b"four\n");
        drop(a);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "one\ntwo\nthree\nfour\n"
        );
    }

    #[test]
    fn reopen_after_a_rename_splits_the_lines_at_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let rotated = dir.path().join("log.jsonl.1");
        let log = JsonLines::open(Some(&path), "test").unwrap();
        log.write(&1);
        log.write(&2);
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen().unwrap();
        log.write(&3);
        log.flush();
        assert_eq!(std::fs::read_to_string(&rotated).unwrap(), "1\n2\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "3\n");
        // A log with no file configured has nothing to reopen.
        JsonLines::open(None, "test").unwrap().reopen().unwrap();
    }
}
