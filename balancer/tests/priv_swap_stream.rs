//! Table swaps under load: while one thread keeps swapping a VIP's ring between two
//! different weighted tables through a second handle on the same pinned maps, a stream of
//! SYNs through `TestRun` must never see a packet without a valid backend.
#![cfg(feature = "privileged")]

mod common;

use balancer::dataplane::{DataPlaneOps, LoadOptions, XdpDataPlane};
use common::{packet::*, *};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[test]
fn swaps_under_a_stream_of_syns_never_leave_a_packet_without_a_backend() {
    let fs = BpfFs::new("swap");
    let pins = fs.0.join("lb");
    let mut lab = Lab::with_opts(
        0,
        0,
        MTU,
        LoadOptions {
            pin_dir: Some(pins.clone()),
            ..Lab::small()
        },
    );
    let a = maglev(&[(0, 1), (1, 1), (2, 1)], RING);
    let b = maglev(&[(0, 5), (1, 1)], RING);
    let mut writer = XdpDataPlane::adopt(&pins).expect("second handle on the pinned maps");
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let (a, b) = (a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) && swaps < 400 {
                writer
                    .swap_ring(0, if swaps.is_multiple_of(2) { &b } else { &a })
                    .unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let mut seen = [0usize; 3];
    for i in 0..20_000u32 {
        let client: IpAddr = IpAddr::from([198, 19, (i >> 8) as u8, i as u8]);
        let (v, out) =
            lab.run(&Tcp::new(client, VIP4.into(), 1024 + (i % 60000) as u16, PORT, SYN).frame());
        assert_eq!(v, XDP_TX, "SYN {i} during swaps");
        let id = backend_of(&check_encap(&out, &[], true).outer_dst);
        assert!(id <= 2, "SYN {i} went to backend {id}");
        seen[id as usize] += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps >= 10, "the swapper ran concurrently ({swaps} swaps)");
    assert!(
        seen.iter().all(|&n| n > 0),
        "both tables were in use: {seen:?}"
    );
    drop(lab);
    let _ = std::fs::remove_dir_all(&pins);
}
