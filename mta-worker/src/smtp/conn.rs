//! Buffered SMTP connection I/O with the session's timeouts. Replies accumulate in an
//! output buffer and are flushed only when the session is about to wait for input, which
//! is exactly what PIPELINING needs: a pipelined batch gets one write back.

use super::stream::Stream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a session has to end (or stop waiting).
#[derive(Debug)]
pub enum Interrupt {
    /// The client closed the connection.
    Closed,
    /// A deadline passed (command, DATA or idle).
    Timeout,
    /// The server is shutting down.
    Shutdown,
    Io(std::io::Error),
}

/// A command line, or the fact that it was too long (already discarded).
pub enum Line {
    Ok(Vec<u8>),
    TooLong,
}

pub struct Conn {
    pub stream: Stream,
    buf: Vec<u8>,
    pos: usize,
    pub out: Vec<u8>,
    idle: Duration,
    shutdown: watch::Receiver<bool>,
    /// Inside an over-long line: drop bytes until its LF.
    discarding: bool,
}

impl Conn {
    pub fn new(stream: Stream, idle: Duration, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            pos: 0,
            out: Vec::with_capacity(1024),
            idle,
            shutdown,
            discarding: false,
        }
    }

    /// Unconsumed input.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Drops buffered input; used after STARTTLS so that plaintext pipelined behind it
    /// can never be interpreted as if it had arrived over TLS (CVE-2011-0411 class).
    pub fn discard_input(&mut self) {
        self.buf.clear();
        self.pos = 0;
    }

    pub async fn flush(&mut self) -> Result<(), Interrupt> {
        if !self.out.is_empty() {
            self.stream
                .write_all(&self.out)
                .await
                .map_err(Interrupt::Io)?;
            self.out.clear();
        }
        self.stream.flush().await.map_err(Interrupt::Io)
    }

    /// Flushes replies, then reads more input; waits at most until `deadline` and at most
    /// the idle timeout. `interruptible` lets a shutdown end the wait.
    pub async fn fill(&mut self, deadline: Instant, interruptible: bool) -> Result<(), Interrupt> {
        self.flush().await?;
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 8192 {
            self.buf.reserve(16 * 1024);
        }
        let until = deadline.min(Instant::now() + self.idle);
        read_more(
            &mut self.stream,
            &mut self.buf,
            until,
            self.shutdown.clone(),
            interruptible,
        )
        .await
    }

    /// Like [`Conn::fill`], but appends what arrives to `dst` (which must have spare
    /// capacity) instead of the input buffer, which must be empty: a DATA body is read
    /// straight into the message buffer and decoded there, with no copy out of ours.
    /// Input that turns out to follow the body goes back with [`Conn::unread`].
    pub async fn read_into(
        &mut self,
        dst: &mut Vec<u8>,
        deadline: Instant,
    ) -> Result<(), Interrupt> {
        debug_assert!(self.pending().is_empty(), "read_into with input pending");
        self.flush().await?;
        let until = deadline.min(Instant::now() + self.idle);
        read_more(&mut self.stream, dst, until, self.shutdown.clone(), false).await
    }

    /// Puts input read by [`Conn::read_into`] past the end of a body back in front of
    /// whatever comes next.
    pub fn unread(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.buf.splice(0..0, bytes.iter().copied());
    }

    /// Next command line (LF-terminated, LF included), enforcing `max` bytes per line.
    pub async fn read_line(&mut self, max: usize, timeout: Duration) -> Result<Line, Interrupt> {
        let deadline = Instant::now() + timeout;
        loop {
            let pending = &self.buf[self.pos..];
            if let Some(i) = memchr::memchr(b'\n', pending) {
                let line = pending[..=i].to_vec();
                self.consume(i + 1);
                if std::mem::take(&mut self.discarding) || line.len() > max {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Ok(line));
            }
            if pending.len() > max {
                self.discarding = true;
                let n = pending.len();
                self.consume(n);
            }
            if *self.shutdown.borrow() {
                return Err(Interrupt::Shutdown);
            }
            self.fill(deadline, true).await?;
        }
    }
}

/// One read from `stream`, appended to `dst`; waits at most until `until`. With
/// `interruptible`, a shutdown ends the wait.
async fn read_more(
    stream: &mut Stream,
    dst: &mut Vec<u8>,
    until: Instant,
    mut shutdown: watch::Receiver<bool>,
    interruptible: bool,
) -> Result<(), Interrupt> {
    let read = stream.read_buf(dst);
    tokio::select! {
        r = tokio::time::timeout_at(until, read) => match r {
            Err(_) => Err(Interrupt::Timeout),
            Ok(Ok(0)) => Err(Interrupt::Closed),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Interrupt::Io(e)),
        },
        _ = crate::state::stopped(&mut shutdown), if interruptible => Err(Interrupt::Shutdown),
    }
}
