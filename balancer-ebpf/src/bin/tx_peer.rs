//! Benchmark peer of the balancer: the least an IPIP XDP forwarder can do (grow the
//! head by an outer IPv4 header, write fixed MACs and header, `XDP_TX`), with no parsing,
//! no maps and no checksum work. `cargo xtask bench xdp` runs it beside the balancer in
//! the same harness, so the difference is the balancer's own cost.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_xdp_adjust_head, macros::xdp, programs::XdpContext,
};

#[xdp]
pub fn tx_peer(ctx: XdpContext) -> u32 {
    // SAFETY: the helper validates the delta; the bounds check below covers every write.
    unsafe {
        if bpf_xdp_adjust_head(ctx.ctx, -20) != 0 {
            return xdp_action::XDP_ABORTED;
        }
        let start = core::ptr::read_volatile(&(*ctx.ctx).data) as usize;
        let end = core::ptr::read_volatile(&(*ctx.ctx).data_end) as usize;
        if start + 34 > end {
            return xdp_action::XDP_ABORTED;
        }
        let w = start as *mut [u16; 17];
        *w = [
            0x0e02, 0, 0x0100, 0x1b02, 0, 0x0100, 0x0008, // MACs, IPv4
            0x0045, 0x4a00, 0, 0, 0x0440, 0, 0x12c6, 0x00ff, 0x12c6, 0x0a02,
        ];
    }
    xdp_action::XDP_TX
}

balancer_ebpf::program_boilerplate!();
