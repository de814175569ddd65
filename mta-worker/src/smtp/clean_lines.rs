//! The DATA decoder's fast path: checking clean lines 64 bytes at a time.
//!
//! Almost every line of a real body is plain text ending in CRLF. For those the decoder
//! needs nothing but their end and a check that they are clean, so runs of them are
//! checked in bulk here, and the decoder's per-line state machine (`data.rs`) only sees
//! what is left: lines with a leading dot, a bad line ending or an over-long line, and
//! the incomplete line at the end of a read.

/// The length of the run of complete, clean lines at the start of `input` (each ends in
/// CRLF, is within the line limit and has no other CR or LF), up to a line that begins
/// with a dot. `input` starts a line, and the caller has handled a dot there. Clean runs
/// are the bulk of any real body, so they are checked 64 bytes at a time: in clean text
/// the LFs are exactly the CRs shifted by one, so one comparison of two bit masks checks
/// a whole block, and the line ends come out of the LF mask. Per-line searching cost about a third of the session threads' CPU
/// with 100 KiB messages. The line after the run goes through the state machine,
/// which finds the exact violation.
pub fn clean_run(input: &[u8], max_line: usize) -> usize {
    let mut line = 0;
    // 1 when the byte before the current block is a CR.
    let mut carry = 0u64;
    let mut base = 0;
    let mut tail = [0u8; 64];
    while base < input.len() {
        let n = (input.len() - base).min(64);
        let block: &[u8; 64] = match input[base..].first_chunk::<64>() {
            Some(b) => b,
            None => {
                // Zero padding is neither CR nor LF; a CR in the last real byte
                // expects an LF past the end and so ends the run there.
                tail[..n].copy_from_slice(&input[base..]);
                tail[n..].fill(0);
                &tail
            }
        };
        let (lf, cr) = line_end_masks(block);
        let bad = ((cr << 1) | carry) ^ lf;
        // LFs before the first inconsistency end clean lines.
        let mut ends = if bad == 0 {
            lf
        } else {
            lf & ((1u64 << bad.trailing_zeros()) - 1)
        };
        while ends != 0 {
            let p = base + ends.trailing_zeros() as usize;
            ends &= ends - 1;
            if p + 1 - line > max_line {
                return line;
            }
            line = p + 1;
            if input.get(line) == Some(&b'.') {
                return line;
            }
        }
        if bad != 0 || n < 64 {
            return line;
        }
        carry = cr >> 63;
        base += 64;
    }
    line
}

/// Masks of the LF and of the CR bytes of a block (bit i for byte i).
#[cfg(target_arch = "x86_64")]
fn line_end_masks(block: &[u8; 64]) -> (u64, u64) {
    // SAFETY: SSE2 is part of the x86_64 baseline; every x86_64 CPU has it.
    unsafe { line_end_masks_sse2(block) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn line_end_masks_sse2(block: &[u8; 64]) -> (u64, u64) {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let (lf, cr) = (_mm_set1_epi8(b'\n' as i8), _mm_set1_epi8(b'\r' as i8));
    let (mut lf_mask, mut cr_mask) = (0u64, 0u64);
    for k in 0..4 {
        // SAFETY: the unaligned load reads the 16 bytes at 16 * k, inside the block.
        let v = unsafe { _mm_loadu_si128(block.as_ptr().add(16 * k).cast::<__m128i>()) };
        lf_mask |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, lf)) as u16) << (16 * k);
        cr_mask |= u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, cr)) as u16) << (16 * k);
    }
    (lf_mask, cr_mask)
}

/// Masks of the LF and of the CR bytes of a block (bit i for byte i).
#[cfg(not(target_arch = "x86_64"))]
fn line_end_masks(block: &[u8; 64]) -> (u64, u64) {
    line_end_masks_portable(block)
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn line_end_masks_portable(block: &[u8; 64]) -> (u64, u64) {
    let (mut lf, mut cr) = (0u64, 0u64);
    for (i, &b) in block.iter().enumerate() {
        lf |= u64::from(b == b'\n') << i;
        cr |= u64::from(b == b'\r') << i;
    }
    (lf, cr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_masks_agree_with_the_portable_ones() {
        let mut seed = 0x2545_F491_4F6C_DD1D_u64;
        for _ in 0..2000 {
            let mut block = [0u8; 64];
            for b in block.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = [b'a', b'\r', b'\n', 0, 0xff][(seed % 5) as usize];
            }
            assert_eq!(line_end_masks(&block), line_end_masks_portable(&block));
        }
    }

    #[test]
    fn runs_stop_where_the_state_machine_must_take_over() {
        let lines = "ab\r\n".repeat(40);
        let n = lines.len();
        assert_eq!(clean_run(lines.as_bytes(), 1000), n);
        for (tail, run) in [
            ("c", n),            // incomplete line
            ("c\r", n),          // a CR that may yet be a line end
            (".c\r\n", n),       // a dot line
            ("c\rd\r\n", n),     // bare CR
            ("c\nd\r\n", n),     // bare LF
            ("ccccc\r\n", n),    // over the limit of 6
            ("cccc\r\n", n + 6), // exactly the limit
        ] {
            let text = format!("{lines}{tail}");
            assert_eq!(clean_run(text.as_bytes(), 6), run, "{tail:?}");
        }
        assert_eq!(clean_run(b"", 1000), 0);
        assert_eq!(clean_run(b"\r\n", 1000), 2);
    }
}
