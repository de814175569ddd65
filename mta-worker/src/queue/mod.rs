//! The outbound queue: compact per-message state scheduled per destination domain, and
//! ready queues per (egress source, site). Message bodies never live here; they are read
//! from the [`MessageStore`] (the spool) when a connection is about to send them.

pub mod state;

use crate::spool::{DeferRecord, Envelope, QueueId, Spool, SpoolError};
use std::future::Future;
use std::pin::Pin;

/// Why the store could not do what delivery asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("message {id} is no longer in the store")]
    NotFound { id: QueueId },
    #[error("store failure: {reason}")]
    Failed { reason: String },
}

impl From<SpoolError> for StoreError {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::NotFound { id } => StoreError::NotFound { id },
            other => StoreError::Failed {
                reason: other.to_string(),
            },
        }
    }
}

/// Future returned by [`MessageStore::store`].
pub type StoreFuture<'a> = Pin<Box<dyn Future<Output = Result<QueueId, StoreError>> + Send + 'a>>;

/// What delivery needs from the spool. Implemented for [`Spool`]; tests or other
/// backends can provide their own.
pub trait MessageStore: Send + Sync + 'static {
    /// Envelope and message bytes.
    fn load(&self, id: QueueId) -> Result<(Envelope, Vec<u8>), StoreError>;
    /// Drops a message that needs nothing more (delivered or bounced).
    fn remove(&self, id: QueueId) -> Result<(), StoreError>;
    /// Durably stores a new message (a DSN) and returns its id.
    fn store(&self, env: Envelope, data: Vec<u8>) -> StoreFuture<'_>;
    /// Durably notes an entry's retry state after a transient failure, so a restart
    /// carries on with it. A store without persistence may ignore it.
    fn record_defer(&self, _r: DeferRecord) -> Result<(), StoreError> {
        Ok(())
    }
    /// Retry state recorded for the entries of `id` (empty when none or unsupported).
    fn deferred(&self, _id: QueueId) -> Vec<DeferRecord> {
        Vec::new()
    }
}

impl MessageStore for Spool {
    fn load(&self, id: QueueId) -> Result<(Envelope, Vec<u8>), StoreError> {
        Ok(Spool::load(self, id)?)
    }
    fn remove(&self, id: QueueId) -> Result<(), StoreError> {
        Ok(Spool::remove(self, id)?)
    }
    fn store(&self, env: Envelope, data: Vec<u8>) -> StoreFuture<'_> {
        Box::pin(async move { Ok(Spool::store(self, env, &data).await?) })
    }
    fn record_defer(&self, r: DeferRecord) -> Result<(), StoreError> {
        Ok(Spool::record_defer(self, r)?)
    }
    fn deferred(&self, id: QueueId) -> Vec<DeferRecord> {
        Spool::deferred(self, id)
    }
}

/// Recipients per entry: a bit set over 64 consecutive envelope recipients, so a
/// message to many recipients of one domain costs one entry per 64 of them.
pub const RCPTS_PER_ENTRY: usize = 64;

/// One message's pending recipients in one domain: 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub id: QueueId,
    /// Reception time, seconds since the epoch (for max age and "oldest" figures).
    pub received_s: u32,
    /// Attempts made so far.
    pub attempts: u16,
    /// Index of the first envelope recipient covered by `mask`.
    pub base: u16,
    /// Recipients still pending: bit i = envelope recipient `base + i`.
    pub mask: u64,
    /// Index of the egress pool in the config at enqueue time.
    pub pool: u16,
}

impl Entry {
    pub fn rcpt_indices(&self) -> impl Iterator<Item = usize> + '_ {
        (0..RCPTS_PER_ENTRY)
            .filter(|i| self.mask & (1u64 << i) != 0)
            .map(|i| self.base as usize + i)
    }
}

/// Splits an envelope's recipients into (domain, base, mask) groups.
pub fn split_recipients(env: &Envelope) -> Vec<(String, u16, u64)> {
    let mut out: Vec<(String, u16, u64)> = Vec::new();
    for (i, r) in env.recipients.iter().enumerate() {
        let dom = r
            .rsplit_once('@')
            .map(|(_, d)| d)
            .unwrap_or("")
            .trim_end_matches('>')
            .to_ascii_lowercase();
        let base = (i / RCPTS_PER_ENTRY * RCPTS_PER_ENTRY) as u16;
        let bit = 1u64 << (i % RCPTS_PER_ENTRY);
        match out.iter_mut().find(|(d, b, _)| *d == dom && *b == base) {
            Some(g) => g.2 |= bit,
            None => out.push((dom, base, bit)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_compact_and_split_groups_by_domain() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        let env = Envelope {
            sender: "s@x.test".into(),
            recipients: vec!["a@A.test".into(), "b@b.test".into(), "c@a.test".into()],
            peer: String::new(),
            helo: String::new(),
            auth_user: None,
            received_at: 0,
            body_8bit: false,
            smtputf8: false,
        };
        let g = split_recipients(&env);
        assert_eq!(
            g,
            vec![("a.test".into(), 0, 0b101), ("b.test".into(), 0, 0b010)]
        );
        let e = Entry {
            id: QueueId(1),
            received_s: 0,
            attempts: 0,
            base: 64,
            mask: 0b11,
            pool: 0,
        };
        assert_eq!(e.rcpt_indices().collect::<Vec<_>>(), vec![64, 65]);
    }
}
