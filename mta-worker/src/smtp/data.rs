//! DATA body decoding: dot-unstuffing, end-of-data detection and the line checks.
//!
//! Smuggling policy: only `CRLF . CRLF` ends the data. A bare LF or a bare CR anywhere in
//! the body (including sequences such as `LF . LF` or `LF . CRLF` that other servers take
//! as the end) does not end it; the whole message is consumed up to the real terminator
//! and then rejected with 550 5.6.11. Nothing with bare line endings is ever spooled.

use std::ops::Range;

/// What went wrong in a body; the first violation wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyViolation {
    /// Bare CR or bare LF.
    BareLineEnding,
    /// A line longer than the limit (CRLF included).
    LineTooLong,
    /// More bytes than the size limit.
    TooBig,
}

/// Incremental decoder fed with whatever the socket delivered.
#[derive(Debug)]
pub struct DataDecoder {
    max_line: usize,
    max_size: usize,
    line_start: bool,
    /// The current line began with a dot (already removed).
    dot_first: bool,
    cr_pending: bool,
    line_len: usize,
    violation: Option<BodyViolation>,
    /// Body bytes so far, stuffing removed (kept counting past a violation).
    size: usize,
    /// Ranges of the input being scanned that are body, in order (reused).
    spans: Vec<Range<usize>>,
    /// Bytes of the body so far, stuffing removed.
    pub body: Vec<u8>,
}

impl DataDecoder {
    pub fn new(max_line: usize, max_size: usize, body: Vec<u8>) -> Self {
        Self {
            max_line,
            max_size,
            line_start: true,
            dot_first: false,
            cr_pending: false,
            line_len: 0,
            violation: None,
            size: 0,
            spans: Vec::new(),
            body,
        }
    }

    pub fn violation(&self) -> Option<BodyViolation> {
        self.violation
    }

    fn flag(&mut self, v: BodyViolation) {
        if self.violation.is_none() {
            self.violation = Some(v);
        }
    }

    /// Marks `r` of the input as body. The size check happens here, at the same point of
    /// the scan as the line checks, so the first violation in the stream is the one kept.
    fn keep(&mut self, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        self.size += r.len();
        if self.size > self.max_size {
            self.flag(BodyViolation::TooBig);
        }
        self.spans.push(r);
    }

    fn add_len(&mut self, n: usize) {
        self.line_len += n;
        if self.line_len > self.max_line {
            self.flag(BodyViolation::LineTooLong);
        }
    }

    /// Consumes from `input`, copying its body bytes to [`Self::body`]; returns `Some(n)`
    /// when the terminator ended at `input[n-1]` (the rest belongs to the next command),
    /// `None` when all of it was body.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        self.spans.clear();
        let end = self.scan(input);
        // Past a violation the message will be refused, so stop buffering it.
        if self.violation.is_none() {
            for r in &self.spans {
                self.body.extend_from_slice(&input[r.clone()]);
            }
        }
        end
    }

    /// Decodes where it lies the input just read into `self.body[from..]` (see
    /// [`super::conn::Conn::read_into`]): body bytes move down only after a stuffed dot,
    /// so a message without one is never copied. Returns the bytes that followed the
    /// terminator, which belong to the next command, once it is found.
    pub fn feed_in_place(&mut self, from: usize) -> Option<Vec<u8>> {
        self.spans.clear();
        let raw = std::mem::take(&mut self.body);
        let end = self.scan(&raw[from..]);
        self.body = raw;
        let rest = end.map(|n| self.body[from + n..].to_vec());
        let mut w = from;
        for r in &self.spans {
            if w != from + r.start {
                self.body.copy_within(from + r.start..from + r.end, w);
            }
            w += r.len();
        }
        self.body
            .truncate(if self.violation.is_none() { w } else { from });
        rest
    }

    /// The decoding itself, shared by both ways of feeding: records which ranges of
    /// `input` are body in `self.spans` and returns where the terminator ended.
    ///
    /// A span is cut only where a byte must be dropped (a stuffed leading dot), at the
    /// terminator, or at the end of `input`. A CR that ends `input` stays in its span
    /// unless its line is a lone dot so far: then it may be the terminator's, and the
    /// next byte decides.
    fn scan(&mut self, input: &[u8]) -> Option<usize> {
        if input.is_empty() {
            return None;
        }
        let mut i = 0;
        let mut span = 0;
        while i < input.len() {
            if self.cr_pending {
                self.cr_pending = false;
                if input[i] == b'\n' {
                    i += 1;
                    self.add_len(1);
                    if self.dot_first && self.line_len == 3 {
                        // `.` CR LF: the dot was cut off the span, so nothing of this
                        // line is body.
                        return Some(i);
                    }
                    self.line_start = true;
                    self.dot_first = false;
                    self.line_len = 0;
                    continue;
                }
                // A bare CR: the message will be refused, its bytes no longer matter.
                self.flag(BodyViolation::BareLineEnding);
            }
            if self.line_start {
                if input[i] == b'.' {
                    self.line_start = false;
                    self.keep(span..i);
                    span = i + 1;
                    self.dot_first = true;
                    self.add_len(1);
                    i += 1;
                    continue;
                }
                let run = super::clean_lines::clean_run(&input[i..], self.max_line);
                if run > 0 {
                    // Still at the start of a line, maybe the end of the input.
                    i += run;
                    continue;
                }
                self.line_start = false;
            }
            match memchr::memchr2(b'\r', b'\n', &input[i..]) {
                None => {
                    self.add_len(input.len() - i);
                    i = input.len();
                }
                Some(off) => {
                    let p = i + off;
                    self.add_len(off + 1);
                    if input[p] == b'\r' {
                        self.cr_pending = true;
                    } else {
                        // Bare LF: not a line end for us, whatever follows it.
                        self.flag(BodyViolation::BareLineEnding);
                    }
                    i = p + 1;
                }
            }
        }
        let end =
            input.len() - usize::from(self.cr_pending && self.dot_first && self.line_len == 2);
        self.keep(span.min(end)..end);
        None
    }
}

/// The same checks for a BDAT body, which is not dot-stuffed but is relayed with DATA later.
pub fn check_raw(body: &[u8], max_line: usize) -> Option<BodyViolation> {
    let mut start = 0;
    for p in memchr::memchr2_iter(b'\r', b'\n', body) {
        match body[p] {
            b'\r' if body.get(p + 1) == Some(&b'\n') => {}
            b'\n' if p > 0 && body[p - 1] == b'\r' => {
                if p + 1 - start > max_line {
                    return Some(BodyViolation::LineTooLong);
                }
                start = p + 1;
            }
            _ => return Some(BodyViolation::BareLineEnding),
        }
    }
    (body.len() - start > max_line).then_some(BodyViolation::LineTooLong)
}

#[cfg(test)]
mod tests;
