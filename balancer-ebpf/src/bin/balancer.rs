//! The balancer XDP program (placeholder until the data plane lands): passes everything.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn balancer(ctx: XdpContext) -> u32 {
    match try_balancer(&ctx) {
        Ok(action) => action,
        Err(()) => xdp_action::XDP_ABORTED,
    }
}

#[inline(always)]
fn try_balancer(ctx: &XdpContext) -> Result<u32, ()> {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + 14 > end {
        return Ok(xdp_action::XDP_DROP);
    }
    // SAFETY: bounds checked above.
    let ethertype = unsafe { u16::from_be(*((data + 12) as *const u16)) };
    if ethertype == 0x0800 && data + 34 > end {
        return Ok(xdp_action::XDP_DROP);
    }
    Ok(xdp_action::XDP_PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
