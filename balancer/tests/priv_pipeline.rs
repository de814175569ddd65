//! Proves the build pipeline end to end: the object that `build.rs` compiled with
//! aya-build loads into this kernel, and `TestRun` executes it on crafted frames.
//! Needs root (CAP_BPF); compiled only with the `privileged` feature.
#![cfg(feature = "privileged")]

use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use balancer::programs::{BALANCER_OBJ, DECAP_OBJ};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn run(obj: &[u8], name: &str, frame: &[u8]) -> u32 {
    let mut ebpf = Ebpf::load(obj).expect("object loads");
    let prog: &mut Xdp = ebpf
        .program_mut(name)
        .expect("program")
        .try_into()
        .expect("xdp");
    prog.load().expect("verifier accepts the program");
    let mut out = vec![0u8; frame.len() + 256];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_TEST_RUN");
    res.return_value
}

fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend([0x02, 0, 0, 0, 0, 1]);
    f.extend([0x08, 0x06]);
    f.resize(60, 0);
    f
}

#[test]
fn balancer_object_loads_and_passes_non_ip() {
    assert_eq!(run(BALANCER_OBJ, "balancer", &arp_frame()), XDP_PASS);
}

#[test]
fn decap_object_loads_and_passes_non_ip() {
    assert_eq!(run(DECAP_OBJ, "decap", &arp_frame()), XDP_PASS);
}

#[test]
fn truncated_ipv4_is_dropped() {
    // The kernel refuses test frames shorter than an Ethernet header, so the shortest
    // runt we can craft is an Ethernet header announcing IPv4 with nothing after it.
    let mut f = arp_frame();
    f.truncate(14);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(run(BALANCER_OBJ, "balancer", &f), XDP_DROP);
}
