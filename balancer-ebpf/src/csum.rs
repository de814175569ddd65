//! Kernel side: Internet checksums (RFC 1071) for the headers the balancer writes: the
//! outer IPv4 header, and the ICMP / ICMPv6 messages it generates.
//!
//! Words are summed as read from the packet (network order in native registers); the
//! one's complement sum is byte-order independent, so the folded result is stored as is.

use crate::parse::{ptr_at, Truncated};
use aya_ebpf::programs::XdpContext;

#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Sums `words` 16-bit words of the frame starting at `off`. `MAX` bounds the loop for
/// the verifier; `words` above it is refused.
#[inline(always)]
pub fn sum_frame<const MAX: usize>(
    ctx: &XdpContext,
    off: usize,
    words: usize,
) -> Result<u64, Truncated> {
    if words > MAX {
        return Err(Truncated);
    }
    let mut s = 0u64;
    let mut i = 0;
    while i < MAX {
        if i >= words {
            break;
        }
        let p: *const u16 = ptr_at(ctx, off + 2 * i)?;
        // SAFETY: `ptr_at` checked that both bytes are inside the frame.
        s += unsafe { *p } as u64;
        i += 1;
    }
    Ok(s)
}
