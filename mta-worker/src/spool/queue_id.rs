//! Queue ids: unique and sortable by arrival, so a directory listing is in FIFO order and
//! the id alone tells an operator when a message arrived.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, made strictly increasing within the process (and
/// above every id already in the spool), printed as 16 upper-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueueId(pub u64);

impl QueueId {
    /// Arrival time in microseconds since the epoch.
    pub fn micros(self) -> u64 {
        self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl FromStr for QueueId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 16
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
        {
            return Err(());
        }
        u64::from_str_radix(s, 16).map(QueueId).map_err(|_| ())
    }
}

/// Hands out ids; one per spool.
#[derive(Debug, Default)]
pub struct IdGenerator {
    last: AtomicU64,
}

impl IdGenerator {
    /// Never hands out an id at or below `floor` (the newest id found on disk), so a clock
    /// that went backwards across a restart cannot produce a duplicate.
    pub fn new(floor: u64) -> Self {
        Self {
            last: AtomicU64::new(floor),
        }
    }

    pub fn next(&self) -> QueueId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let candidate = now.max(prev + 1);
            match self.last.compare_exchange_weak(
                prev,
                candidate,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return QueueId(candidate),
                Err(p) => prev = p,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sortable_and_roundtrip() {
        let g = IdGenerator::new(0);
        let ids: Vec<QueueId> = (0..1000).map(|_| g.next()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1]);
            assert!(w[0].to_string() < w[1].to_string());
        }
        assert_eq!(ids[5].to_string().parse::<QueueId>().unwrap(), ids[5]);
        assert!("xyz".parse::<QueueId>().is_err());
        let g = IdGenerator::new(u64::MAX / 2);
        assert!(g.next().0 > u64::MAX / 2);
    }
}
