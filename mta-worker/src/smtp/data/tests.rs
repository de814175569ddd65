//! The DATA decoder against hand-picked cases, every split of them into reads, and a
//! reference decoder on random bodies; both ways of feeding it must agree.

use super::*;

type Decoded = (Vec<u8>, Option<BodyViolation>, Vec<u8>);

/// Decodes `chunks` both ways (copied out of an input buffer, and in place as read
/// into the message buffer) with the default limits, asserts that they agree, returns
/// (body, violation, rest).
fn run(chunks: &[&[u8]]) -> Decoded {
    let copied = copied(chunks, 1000, 1 << 20);
    assert_eq!(in_place(chunks, 1000, 1 << 20), copied, "in place");
    copied
}

/// Feeds each chunk as if it had just been read into `body`.
fn in_place(chunks: &[&[u8]], max_line: usize, max_size: usize) -> Decoded {
    let mut d = DataDecoder::new(max_line, max_size, Vec::new());
    for (k, c) in chunks.iter().enumerate() {
        let from = d.body.len();
        d.body.extend_from_slice(c);
        if let Some(rest) = d.feed_in_place(from) {
            return (d.body, d.violation, rest_after(&rest, &chunks[k + 1..]));
        }
    }
    panic!("no terminator");
}

/// Feeds each chunk from an input buffer, the body copied out of it.
fn copied(chunks: &[&[u8]], max_line: usize, max_size: usize) -> Decoded {
    let mut d = DataDecoder::new(max_line, max_size, Vec::new());
    for (k, c) in chunks.iter().enumerate() {
        if let Some(n) = d.feed(c) {
            return (d.body, d.violation, rest_after(&c[n..], &chunks[k + 1..]));
        }
    }
    panic!("no terminator");
}

/// What follows the terminator: the rest of its chunk, then the chunks after it.
fn rest_after(first: &[u8], later: &[&[u8]]) -> Vec<u8> {
    [first, &later.concat()].concat()
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

#[test]
fn line_ends_and_faults_at_block_edges() {
    // Lines placed so that the interesting byte sits at 62, 63, 64 or 65: the CR and
    // LF of one line end split over two blocks, a bare CR or LF at either side of
    // the edge, a dot line starting right at the edge.
    for at in [62usize, 63, 64, 65, 126, 127, 128] {
        let lead = format!("{}\r\n", "a".repeat(at - 2));
        for (tail, want) in [
            ("b\r\n", None),
            (".dot\r\n", None),
            ("\rb\r\n", Some(BodyViolation::BareLineEnding)),
            ("\nb\r\n", Some(BodyViolation::BareLineEnding)),
            ("b\rc\r\n", Some(BodyViolation::BareLineEnding)),
        ] {
            let msg = format!("{lead}{tail}x\r\n.\r\n");
            let (body, v, rest) = run(&[msg.as_bytes()]);
            assert_eq!((v, rest.as_slice()), (want, &b""[..]), "{at} {tail:?}");
            if want.is_none() {
                let expected = format!("{lead}{tail}x\r\n").replace("\n.dot", "\ndot");
                assert_eq!(body, expected.as_bytes(), "{at} {tail:?}");
            }
        }
        // A line of exactly the limit ending across the edge, and one byte over.
        let d = |len: usize| {
            let msg = format!("{}\r\n.\r\n", "y".repeat(len - 2));
            let mut d = DataDecoder::new(at, 1 << 20, Vec::new());
            assert!(d.feed(msg.as_bytes()).is_some());
            d.violation()
        };
        assert_eq!(d(at), None, "{at}");
        assert_eq!(d(at + 1), Some(BodyViolation::LineTooLong), "{at}");
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
        let msg_text = String::from_utf8_lossy(&msg);
        assert_eq!(
            got,
            copied(&chunks, max_line, max_size),
            "{msg_text:?} {chunks:?}"
        );
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
