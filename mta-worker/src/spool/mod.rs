//! The durable spool: "250" is only ever said for a message that is on stable storage.
//!
//! API for the outbound side (see `docs/spool.md` for the on-disk layout):
//! [`Spool::open`] recovers what a previous run left, [`Spool::store`] returns once the
//! message is durable, [`Spool::recover`] lists what is queued, [`Spool::load`] reads a
//! message back, [`Spool::remove`] deletes it after delivery, and [`Spool::subscribe`]
//! streams every newly accepted message to a consumer (the future queue manager).
//! [`Spool::record_defer`] / [`Spool::deferred`] keep the retry state of deferred
//! messages across restarts (`defer.rs`).

mod committer;
mod defer;
mod envelope;
mod index;
mod queue_id;
mod recovery;

pub use defer::DeferRecord;
pub use envelope::{Envelope, RecordError};
pub use queue_id::QueueId;

use crate::append::BatchedAppend;
use crate::config::FlushMode;
use crate::metrics::Metrics;
use committer::CommitRequest;
use defer::DeferLog;
use index::Index;
use queue_id::IdGenerator;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Most segment files [`Spool::load`] keeps open.
const MAX_OPEN_SEGMENTS: usize = 64;

/// Spool failures.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool record {path} is damaged: {source}")]
    Record {
        path: PathBuf,
        #[source]
        source: RecordError,
    },
    #[error("queue id {id} is not in the spool")]
    NotFound { id: QueueId },
    #[error("the spool's commit thread has stopped")]
    CommitterGone,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A message that has just become durable.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: QueueId,
    pub envelope: Envelope,
    pub size: u64,
}

/// Handle to the spool; cheap to clone, shared by all sessions.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

struct Inner {
    segments: PathBuf,
    ids: IdGenerator,
    index: Arc<Mutex<Index>>,
    /// Segment the commit thread appends to; never deleted by `remove`.
    active: Arc<AtomicU64>,
    /// Ids removed since start, appended in batches without fsync (see [`Spool::remove`]).
    removed_log: BatchedAppend,
    /// Open segment files for [`Spool::load`] (an open and a close per delivered message
    /// otherwise); a file leaves when `remove` deletes its segment.
    files: Mutex<HashMap<QueueId, Arc<File>>>,
    /// Retry state of deferred entries (see `defer.rs`).
    defer: Mutex<DeferLog>,
    commit_tx: Mutex<std_mpsc::Sender<CommitRequest>>,
    notify: Mutex<Option<mpsc::UnboundedSender<Accepted>>>,
}

impl Spool {
    /// Opens (creating if needed) the spool at `dir` with default tuning and private metrics.
    pub fn open(dir: &Path) -> Result<Self, SpoolError> {
        Self::open_with(dir, 512, FlushMode::default(), Arc::new(Metrics::default()))
    }

    /// Opens the spool: deletes half-written segments, indexes every complete record not
    /// yet removed, moves damaged segments to `quarantine/`, starts the commit thread.
    pub fn open_with(
        dir: &Path,
        max_batch: usize,
        flush: FlushMode,
        metrics: Arc<Metrics>,
    ) -> Result<Self, SpoolError> {
        let rec = recovery::recover(dir)?;
        let defer = DeferLog::open(&rec.segments, |id| rec.index.location(id).is_some())
            .map_err(io(&rec.segments.join(defer::DEFER_LOG)))?;
        tracing::info!(
            messages = rec.index.len(),
            bytes = rec.index.bytes(),
            "spool opened"
        );
        let (tx, rx) = std_mpsc::channel();
        let index = Arc::new(Mutex::new(rec.index));
        let active = Arc::new(AtomicU64::new(u64::MAX));
        let shared = committer::Shared {
            dir: rec.segments.clone(),
            index: index.clone(),
            active: active.clone(),
        };
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || committer::run(rx, shared, max_batch, flush, metrics))
            .map_err(io(dir))?;
        Ok(Self {
            inner: Arc::new(Inner {
                segments: rec.segments,
                ids: IdGenerator::new(rec.newest),
                index,
                active,
                removed_log: BatchedAppend::new(rec.removed_log, "removed-log").map_err(io(dir))?,
                files: Mutex::new(HashMap::new()),
                defer: Mutex::new(defer),
                commit_tx: Mutex::new(tx),
                notify: Mutex::new(None),
            }),
        })
    }

    /// Hands out the next queue id (the session needs it for `Received:` before storing).
    pub fn next_id(&self) -> QueueId {
        self.inner.ids.next()
    }

    /// Stores a message under a fresh id; durable when this returns `Ok`.
    pub async fn store(&self, env: Envelope, message: &[u8]) -> Result<QueueId, SpoolError> {
        let id = self.next_id();
        self.store_as(id, env, &[message]).await?;
        Ok(id)
    }

    /// Stores the concatenation of `parts` under `id` (from [`Spool::next_id`]); durable
    /// when this returns `Ok`. Parts avoid a separate copy to prepend a header.
    pub async fn store_as(
        &self,
        id: QueueId,
        env: Envelope,
        parts: &[&[u8]],
    ) -> Result<(), SpoolError> {
        self.store_owned(id, env, parts, Vec::new()).await.0
    }

    /// Stores `parts` followed by `body` under `id`; durable when the result is `Ok`.
    /// The body is written to disk straight from this buffer (no copy into a record),
    /// and the buffer is handed back (empty if the commit thread is gone) for reuse.
    pub async fn store_owned(
        &self,
        id: QueueId,
        env: Envelope,
        parts: &[&[u8]],
        body: Vec<u8>,
    ) -> (Result<(), SpoolError>, Vec<u8>) {
        let size = parts.iter().map(|p| p.len()).sum::<usize>() + body.len();
        let head = envelope::encode_head(id, &env, parts, &body);
        let (reply, done) = oneshot::channel();
        let accepted = Accepted {
            id,
            envelope: env.clone(),
            size: size as u64,
        };
        let sent = self
            .inner
            .commit_tx
            .lock()
            .expect("commit sender lock")
            .send(CommitRequest {
                id,
                env,
                size: size as u64,
                head,
                body,
                reply,
            });
        if let Err(e) = sent {
            return (Err(SpoolError::CommitterGone), e.0.body);
        }
        // The commit thread indexes the record, and flushes it, before it answers.
        let Ok(done) = done.await else {
            return (Err(SpoolError::CommitterGone), Vec::new());
        };
        if let Err(e) = done.result {
            return (Err(io(&self.inner.segments)(e)), done.body);
        }
        if let Some(tx) = self.inner.notify.lock().expect("notify lock").as_ref() {
            let _ = tx.send(accepted);
        }
        (Ok(()), done.body)
    }

    /// Every queued message (id order = arrival order) with its envelope.
    pub fn recover(&self) -> impl Iterator<Item = (QueueId, Envelope)> {
        self.inner
            .index
            .lock()
            .expect("index lock")
            .list()
            .into_iter()
    }

    /// Reads a message back: its envelope and the bytes as accepted (with `Received:`).
    pub fn load(&self, id: QueueId) -> Result<(Envelope, Vec<u8>), SpoolError> {
        let loc = self
            .inner
            .index
            .lock()
            .expect("index lock")
            .location(id)
            .ok_or(SpoolError::NotFound { id })?;
        let path = self.inner.segments.join(loc.segment.to_string());
        let file = self.segment_file(loc.segment, &path)?;
        let mut buf = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut buf, loc.offset)
            .map_err(io(&path))?;
        let (rid, env, msg) = envelope::decode(&buf).map_err(|source| SpoolError::Record {
            path: path.clone(),
            source,
        })?;
        if rid != id {
            return Err(SpoolError::Record {
                path,
                source: RecordError::BadMagic,
            });
        }
        Ok((env, msg.to_vec()))
    }

    /// The open segment file `seg` (opened on first use). The cache is bounded: past
    /// [`MAX_OPEN_SEGMENTS`] it is emptied, as a spool that large is mostly idle mail.
    fn segment_file(&self, seg: QueueId, path: &Path) -> Result<Arc<File>, SpoolError> {
        if let Some(f) = self.inner.files.lock().expect("files lock").get(&seg) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(path).map_err(io(path))?);
        let mut files = self.inner.files.lock().expect("files lock");
        if files.len() >= MAX_OPEN_SEGMENTS {
            files.clear();
        }
        files.insert(seg, f.clone());
        Ok(f)
    }

    /// Deletes a delivered (or bounced) message. The removal is logged without fsync and
    /// batched in memory for a few milliseconds ([`crate::append`]), so after a crash a
    /// removed message may come back: delivery is at-least-once for messages that were in
    /// flight, and an accepted message is never lost. Dropping the spool writes them all.
    pub fn remove(&self, id: QueueId) -> Result<(), SpoolError> {
        let emptied = self
            .inner
            .index
            .lock()
            .expect("index lock")
            .remove(id)
            .ok_or(SpoolError::NotFound { id })?;
        self.inner.defer.lock().expect("defer lock").forget(id);
        self.inner.removed_log.append_with(|b| {
            use std::io::Write as _;
            let _ = writeln!(b, "{id}");
        });
        if let Some(seg) = emptied.filter(|s| s.0 != self.inner.active.load(Ordering::SeqCst)) {
            self.inner.files.lock().expect("files lock").remove(&seg);
            let p = self.inner.segments.join(seg.to_string());
            std::fs::remove_file(&p).map_err(io(&p))?;
        }
        Ok(())
    }

    /// Records the retry state of a deferred entry; survives a process crash (not
    /// fsynced: after a power loss the entry may restart at an older attempt count).
    /// Ignored for a message no longer in the spool.
    pub fn record_defer(&self, r: DeferRecord) -> Result<(), SpoolError> {
        if self
            .inner
            .index
            .lock()
            .expect("index lock")
            .location(r.id)
            .is_none()
        {
            return Ok(());
        }
        let path = self.inner.segments.join(defer::DEFER_LOG);
        self.inner
            .defer
            .lock()
            .expect("defer lock")
            .record(r)
            .map_err(io(&path))
    }

    /// Retry state recorded for the deferred entries of `id` (empty if none).
    pub fn deferred(&self, id: QueueId) -> Vec<DeferRecord> {
        self.inner.defer.lock().expect("defer lock").get(id)
    }

    /// Stream of messages accepted from now on. A new call replaces the previous
    /// subscriber; without one, nothing is buffered.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Accepted> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.inner.notify.lock().expect("notify lock") = Some(tx);
        rx
    }

    /// Messages in the spool.
    pub fn queue_depth(&self) -> u64 {
        self.inner.index.lock().expect("index lock").len() as u64
    }

    /// Messages per recipient domain (a message to two domains counts in both).
    pub fn depth_by_domain(&self) -> BTreeMap<String, u64> {
        self.inner.index.lock().expect("index lock").by_domain()
    }

    /// Bytes of message data in the spool (envelopes excluded).
    pub fn bytes(&self) -> u64 {
        self.inner.index.lock().expect("index lock").bytes()
    }
}
