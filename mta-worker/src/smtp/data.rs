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
                let cr_held = i == 0 && self.dot_first && self.line_len == 2;
                if input[i] == b'\n' {
                    i += 1;
                    self.add_len(1);
                    if self.dot_first && self.line_len == 3 {
                        // `.` CR LF: the dot was cut off the span, so nothing of this
                        // line is body.
                        return Some(i);
                    }
                    debug_assert!(!cr_held, "a held CR is only ever a terminator's");
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
                let run = self.plain_lines(&input[i..]);
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

    /// Fast path, called at the start of a line that does not begin with a dot: the
    /// length of the run of complete, clean lines at the start of `input` (each ends in
    /// CRLF, is within the line limit and has no other CR or LF), up to a line that
    /// begins with a dot. Clean runs are the bulk of any real body, so they are found
    /// with one LF search and one CR count instead of the per-line state machine; the
    /// line after the run goes through that machine, which finds the exact violation.
    fn plain_lines(&self, input: &[u8]) -> usize {
        let (mut start, mut lines) = (0, 0);
        for p in memchr::memchr_iter(b'\n', input) {
            if p == start || input[p - 1] != b'\r' || p + 1 - start > self.max_line {
                break;
            }
            start = p + 1;
            lines += 1;
            if input.get(start) == Some(&b'.') {
                break;
            }
        }
        // Every CR of the run must be one of its line ends. If one is not (a bare CR),
        // the run ends at the start of that CR's line, so a message that fails here is
        // still scanned once, not once per line.
        if count_cr(&input[..start]) != lines {
            let Some(bare) =
                memchr::memchr_iter(b'\r', &input[..start]).find(|&p| input[p + 1] != b'\n')
            else {
                return 0;
            };
            return memchr::memrchr(b'\n', &input[..bare]).map_or(0, |q| q + 1);
        }
        start
    }
}

/// CRs in `b`. Counted in byte-wide sums of at most 255 bytes, which the compiler turns
/// into 16 or 32 comparisons per instruction; a `usize` count per byte (the obvious
/// `filter().count()`) is widened lane by lane and made this scan a quarter of the
/// worker's CPU on 100 KiB messages.
fn count_cr(b: &[u8]) -> usize {
    b.chunks(255)
        .map(|c| usize::from(c.iter().fold(0u8, |n, &x| n + u8::from(x == b'\r'))))
        .sum()
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

    /// Decodes `chunks` both ways (copied out of an input buffer, and in place as read
    /// into the message buffer), asserts that they agree, returns (body, violation, rest).
    fn run(chunks: &[&[u8]]) -> (Vec<u8>, Option<BodyViolation>, Vec<u8>) {
        let copied = run_copied(chunks);
        assert_eq!(in_place(chunks, 1000, 1 << 20), copied, "in place");
        copied
    }

    /// Feeds each chunk as if it had just been read into `body`.
    fn in_place(
        chunks: &[&[u8]],
        max_line: usize,
        max_size: usize,
    ) -> (Vec<u8>, Option<BodyViolation>, Vec<u8>) {
        let mut d = DataDecoder::new(max_line, max_size, Vec::new());
        for (k, c) in chunks.iter().enumerate() {
            let from = d.body.len();
            d.body.extend_from_slice(c);
            if let Some(rest) = d.feed_in_place(from) {
                let rest: Vec<u8> = rest
                    .iter()
                    .chain(chunks[k + 1..].concat().iter())
                    .copied()
                    .collect();
                return (d.body, d.violation, rest);
            }
        }
        panic!("no terminator");
    }

    fn run_copied(chunks: &[&[u8]]) -> (Vec<u8>, Option<BodyViolation>, Vec<u8>) {
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
    fn limits_in_place() {
        let mut long = vec![b'x'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        let (_, v, _) = in_place(&[&long[..500], &long[500..]], 1000, 1 << 20);
        assert_eq!(v, Some(BodyViolation::LineTooLong));
        let (body, v, _) = in_place(&[&long[1..]], 1000, 1 << 20);
        assert_eq!((body.len(), v), (1000, None));
        let (body, v, _) = in_place(&[b"0123456789abc\r\n.\r\n"], 1000, 10);
        assert_eq!(v, Some(BodyViolation::TooBig));
        assert!(body.len() <= 10);
    }

    #[test]
    fn clean_runs_then_the_exact_first_violation() {
        let clean = "0123456789\r\n".repeat(50);
        for (tail, want) in [
            ("ok\r\n..dot\r\n", None),
            ("a\rb\r\n", Some(BodyViolation::BareLineEnding)),
            ("a\nb\r\n", Some(BodyViolation::BareLineEnding)),
            ("\n\r\n", Some(BodyViolation::BareLineEnding)),
            (
                &format!("{}\r\n", "y".repeat(999)),
                Some(BodyViolation::LineTooLong),
            ),
            (&format!("{}\r\n", "y".repeat(998)), None),
            // The first violation in the stream wins, whichever kind it is.
            (
                &format!("{}\r\nb\rc\r\n", "y".repeat(1200)),
                Some(BodyViolation::LineTooLong),
            ),
            (
                &format!("b\rc\r\n{}\r\n", "y".repeat(1200)),
                Some(BodyViolation::BareLineEnding),
            ),
        ] {
            let msg = format!("{clean}{tail}{clean}.\r\nQUIT\r\n");
            let (body, v, rest) = run(&[msg.as_bytes()]);
            assert_eq!(v, want, "{tail:?}");
            assert_eq!(rest, b"QUIT\r\n");
            if want.is_none() {
                let expected = format!("{clean}{tail}{clean}").replace("\r\n..", "\r\n.");
                assert_eq!(body, expected.as_bytes());
            }
            for cut in [1, 11, 12, 13, 600, msg.len() - 7] {
                let b = msg.as_bytes();
                assert_eq!(run(&[&b[..cut], &b[cut..]]).1, want, "{tail:?} cut {cut}");
            }
        }
    }

    /// Straightforward reference: split on CRLF, a lone dot ends, a leading dot goes.
    /// Returns (body, whether any violation, rest).
    fn reference(input: &[u8], max_line: usize, max_size: usize) -> (Vec<u8>, bool, Vec<u8>) {
        let (mut body, mut bad, mut pos) = (Vec::new(), false, 0);
        loop {
            let e = memchr::memmem::find(&input[pos..], b"\r\n").expect("terminated");
            let line = &input[pos..pos + e];
            if line == b"." {
                bad |= body.len() > max_size;
                return (body, bad, input[pos + e + 2..].to_vec());
            }
            bad |= line.len() + 2 > max_line || line.iter().any(|&c| c == b'\r' || c == b'\n');
            body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            body.extend_from_slice(b"\r\n");
            pos += e + 2;
        }
    }

    #[test]
    fn random_bodies_match_the_reference_both_ways() {
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut rnd = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let pieces: [&[u8]; 8] = [b"abc", b"x", b".", b"..", b"\r\n", b"\r\n", b"\r", b"\n"];
        for _ in 0..3000 {
            let mut msg = Vec::new();
            for _ in 0..rnd(40) {
                // Mostly clean lines, so the fast path gets long runs to skip.
                if rnd(3) > 0 {
                    msg.extend(std::iter::repeat_n(b'a', rnd(25)));
                    msg.extend_from_slice(b"\r\n");
                } else {
                    msg.extend_from_slice(pieces[rnd(pieces.len())]);
                }
            }
            msg.extend_from_slice(b"\r\n.\r\nNEXT\r\n");
            let (max_line, max_size) = (20, 150 + rnd(300));
            let (want_body, want_bad, want_rest) = reference(&msg, max_line, max_size);
            let mut cuts: Vec<usize> = (0..rnd(4)).map(|_| rnd(msg.len())).collect();
            cuts.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&msg[at..c]);
                at = c;
            }
            chunks.push(&msg[at..]);
            let got = in_place(&chunks, max_line, max_size);
            let mut d = DataDecoder::new(max_line, max_size, Vec::new());
            let mut copied = None;
            for (k, c) in chunks.iter().enumerate() {
                if let Some(n) = d.feed(c) {
                    let rest = [&c[n..], &chunks[k + 1..].concat()[..]].concat();
                    copied = Some((std::mem::take(&mut d.body), d.violation, rest));
                    break;
                }
            }
            let msg_text = String::from_utf8_lossy(&msg);
            assert_eq!(Some(&got), copied.as_ref(), "{msg_text:?} {chunks:?}");
            assert_eq!(got.1.is_some(), want_bad, "{msg_text:?}");
            assert_eq!(got.2, want_rest, "{msg_text:?}");
            if !want_bad {
                assert_eq!(got.0, want_body, "{msg_text:?}");
            }
        }
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
