//! The message body buffer, kept by a session from one message to the next.
//!
//! A fresh buffer per message grew in steps (8 KiB, 16 KiB, ... 128 KiB for a 100 KiB
//! body), copying the body each time, and every new large buffer was fresh memory the
//! kernel had to fault in page by page. Reusing one buffer per session makes the second
//! message of a session allocation-free. A buffer that grew past [`KEEP`] is dropped
//! after its message, so one huge message does not pin its memory for the rest of a
//! long-lived session.

/// Capacity kept between messages. Larger buffers are freed once their message is done.
pub const KEEP: usize = 256 * 1024;

/// Capacity to start from when the client did not declare `SIZE=`.
const DEFAULT: usize = 16 * 1024;

/// Most the declared `SIZE=` may make us reserve up front: it is only the client's
/// claim, and growing by doubling from here costs little compared with such a body.
const MAX_PRESIZE: usize = 4 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct BodyBuf {
    spare: Vec<u8>,
}

impl BodyBuf {
    /// An empty buffer for the next body, with room for `declared` bytes (the `SIZE=`
    /// of MAIL FROM, 0 when absent), never more than `max` (the size limit).
    pub fn take(&mut self, declared: usize, max: usize) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.spare);
        b.clear();
        let want = if declared > 0 {
            declared.min(max).min(MAX_PRESIZE)
        } else {
            DEFAULT
        };
        b.reserve(want);
        b
    }

    /// Returns a buffer once its message is finished (spooled or refused).
    pub fn give_back(&mut self, mut b: Vec<u8>) {
        if b.capacity() > KEEP || b.capacity() <= self.spare.capacity() {
            return;
        }
        b.clear();
        self.spare = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_and_bounds() {
        let mut p = BodyBuf::default();
        let mut b = p.take(0, 1 << 20);
        assert!(b.capacity() >= DEFAULT);
        b.resize(100 * 1024, b'x');
        let ptr = b.as_ptr();
        p.give_back(b);
        let b = p.take(0, 1 << 20);
        assert_eq!((b.as_ptr(), b.len()), (ptr, 0));
        p.give_back(b);
        // Declared sizes pre-size the buffer, bounded by the limit and MAX_PRESIZE.
        assert!(p.take(300 * 1024, 1 << 30).capacity() >= 300 * 1024);
        assert!(p.take(1 << 30, 1 << 20).capacity() < 2 << 20);
        // A huge buffer is not kept.
        p.give_back(vec![0; KEEP + 1]);
        assert!(p.take(0, 1 << 20).capacity() <= KEEP);
    }
}
