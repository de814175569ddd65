//! DATA body decoding: dot-unstuffing, end-of-data detection and the line checks.
//!
//! Smuggling policy: only `CRLF . CRLF` ends the data. A bare LF or a bare CR anywhere in
//! the body (including sequences such as `LF . LF` or `LF . CRLF` that other servers take
//! as the end) does not end it; the whole message is consumed up to the real terminator
//! and then rejected with 550 5.6.11. Nothing with bare line endings is ever spooled.

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

    fn push(&mut self, bytes: &[u8]) {
        if self.body.len() + bytes.len() > self.max_size {
            self.flag(BodyViolation::TooBig);
        }
        // Past a violation the message will be refused, so stop buffering it.
        if self.violation.is_none() {
            self.body.extend_from_slice(bytes);
        }
    }

    fn add_len(&mut self, n: usize) {
        self.line_len += n;
        if self.line_len > self.max_line {
            self.flag(BodyViolation::LineTooLong);
        }
    }

    /// Consumes from `input`; returns `Some(n)` when the terminator ended at `input[n-1]`
    /// (the rest belongs to the next command), `None` when all of it was body.
    ///
    /// Body bytes are copied in spans, not line by line: `input[span..]` is body not yet
    /// copied, and a span is cut only where a byte must be dropped (a stuffed leading
    /// dot), at the terminator, or at the end of `input`. A CR that ends `input` is held
    /// back until the next byte shows whether it ends a line or the data.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        if input.is_empty() {
            return None;
        }
        let mut i = 0;
        let mut span = 0;
        while i < input.len() {
            if self.cr_pending {
                self.cr_pending = false;
                let cr_held = i == 0;
                if input[i] == b'\n' {
                    i += 1;
                    self.add_len(1);
                    if self.dot_first && self.line_len == 3 {
                        // `.` CR LF: the dot was cut off the span, so nothing of this
                        // line is body.
                        return Some(i);
                    }
                    if cr_held {
                        self.push(b"\r");
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
                self.line_start = false;
                if input[i] == b'.' {
                    self.push(&input[span..i]);
                    span = i + 1;
                    self.dot_first = true;
                    self.add_len(1);
                    i += 1;
                    continue;
                }
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
        let end = input.len() - usize::from(self.cr_pending);
        self.push(&input[span.min(end)..end]);
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
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Option<BodyViolation>, Vec<u8>) {
        let mut d = DataDecoder::new(1000, 1 << 20, Vec::new());
        for (k, c) in chunks.iter().enumerate() {
            if let Some(n) = d.feed(c) {
                let rest: Vec<u8> = c[n..]
                    .iter()
                    .chain(chunks[k + 1..].concat().iter())
                    .copied()
                    .collect();
                return (d.body, d.violation, rest);
            }
        }
        panic!("no terminator");
    }

    #[test]
    fn unstuffs_and_finds_end_across_chunk_boundaries() {
        let msg: &[u8] = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n";
        let (body, v, rest) = run(&[msg]);
        assert_eq!(body, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert_eq!(v, None);
        assert_eq!(rest, b"QUIT\r\n");
        for cut in 1..msg.len() - 6 {
            let (b2, v2, r2) = run(&[&msg[..cut], &msg[cut..]]);
            assert_eq!(
                (b2, v2, r2),
                (body.clone(), None, rest.clone()),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn any_three_way_split_gives_the_same_body() {
        let msg: &[u8] = b"A: b\r\n\r\n..\r\n...\r\n.x\r\nplain\r\n\r\n.\r\nNOOP\r\n";
        let whole = run(&[msg]);
        assert_eq!(whole.0, b"A: b\r\n\r\n.\r\n..\r\nx\r\nplain\r\n\r\n");
        assert_eq!(whole.2, b"NOOP\r\n");
        for a in 1..msg.len() {
            for b in a..msg.len() {
                let got = run(&[&msg[..a], &msg[a..b], &msg[b..]]);
                assert_eq!(got, whole, "cuts {a} {b}");
            }
        }
    }

    #[test]
    fn empty_body_and_smuggling() {
        assert_eq!(run(&[b".\r\n"]).0, b"");
        let (_, v, rest) = run(&[b"a\n.\nMAIL FROM:<x@y>\r\n\r\n.\r\n"]);
        assert_eq!(v, Some(BodyViolation::BareLineEnding));
        assert_eq!(rest, b"");
        let (_, v, _) = run(&[b"a\r\n.\rMAIL\r\n.\r\n"]);
        assert_eq!(v, Some(BodyViolation::BareLineEnding));
        let (_, v, _) = run(&[b"a\n.\r\n.\r\n"]);
        assert_eq!(v, Some(BodyViolation::BareLineEnding));
    }

    #[test]
    fn limits() {
        let long = [b'x'; 999];
        let mut d = DataDecoder::new(1000, 1 << 20, Vec::new());
        assert_eq!(d.feed(&long), None);
        assert_eq!(d.feed(b"\r\n.\r\n"), Some(5));
        assert_eq!(d.violation(), Some(BodyViolation::LineTooLong));
        let mut d = DataDecoder::new(1000, 1 << 20, Vec::new());
        d.feed(&long[..998]);
        assert_eq!(d.feed(b"\r\n.\r\n"), Some(5));
        assert_eq!(d.violation(), None);
        let mut d = DataDecoder::new(1000, 10, Vec::new());
        assert_eq!(d.feed(b"0123456789abc\r\n.\r\n"), Some(18));
        assert_eq!(d.violation(), Some(BodyViolation::TooBig));
        assert!(d.body.len() <= 10);
    }

    #[test]
    fn raw_check() {
        assert_eq!(check_raw(b"a\r\nb\r\n", 1000), None);
        assert_eq!(
            check_raw(b"a\nb\r\n", 1000),
            Some(BodyViolation::BareLineEnding)
        );
        assert_eq!(
            check_raw(b"a\rb\r\n", 1000),
            Some(BodyViolation::BareLineEnding)
        );
        assert_eq!(
            check_raw(&[b'x'; 1001], 1000),
            Some(BodyViolation::LineTooLong)
        );
    }
}
