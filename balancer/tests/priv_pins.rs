//! Life cycle of the real attachment: load pinned, attach to an interface, lose the
//! process's handles (as a kill -9 would), adopt the pinned set and find the program
//! still attached with its maps intact, then detach and find every pin gone.
//!
//! Runs in a network namespace private to one thread (its `lo`), with a bpffs mounted
//! on a temporary directory; both are removed by guards, also on failure.
#![cfg(feature = "privileged")]

mod common;

use balancer::dataplane::{AttachMode, DataPlaneOps, LoadOptions, XdpDataPlane};
use balancer_ebpf::{
    stats_backend_slot, stats_vip_slot, FlowKey, GlobalCounter as G, ObjectCounter,
};
use common::{packet::*, *};
use std::{net::IpAddr, path::Path, process::Command};

fn xdp_on_lo() -> String {
    let out = Command::new("ip")
        .args(["-d", "link", "show", "lo"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pinned_files(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn pinned_program_survives_its_process_handles_and_is_adopted() {
    let fs = BpfFs::new("pins");
    let pins = fs.0.join("lb");
    let pins2 = pins.clone();
    // The thread's own network namespace: attaching there touches no real interface,
    // and the namespace dies with the thread.
    std::thread::spawn(move || {
        // SAFETY: unshare(2) on this thread only.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        run_life_cycle(&pins2);
    })
    .join()
    .expect("life cycle thread");
    assert!(pinned_files(&pins).is_empty(), "every pin removed");
    drop(fs);
}

fn run_life_cycle(pins: &Path) {
    let mut lab = Lab::with_opts(
        0,
        0,
        MTU,
        LoadOptions {
            pin_dir: Some(pins.to_path_buf()),
            ..Lab::small()
        },
    );
    lab.dp.attach("lo", AttachMode::Generic).unwrap();
    assert!(
        xdp_on_lo().contains("xdpgeneric"),
        "attached: {}",
        xdp_on_lo()
    );
    let c: IpAddr = CLIENT4.into();
    assert_eq!(
        lab.run(&Tcp::new(c, VIP4.into(), 40000, PORT, SYN).frame())
            .0,
        XDP_TX
    );
    let expected = lab.expected(0, &c, 40000);
    let files = pinned_files(pins);
    for f in ["prog", "link", "VIPS", "FLOWS", "RINGS", "CONFIG", "STATS"] {
        assert!(files.iter().any(|x| x == f), "{f} pinned ({files:?})");
    }

    // The daemon goes away without detaching (as kill -9 would): handles dropped.
    let Lab { dp, .. } = lab;
    drop(dp);
    assert!(
        xdp_on_lo().contains("xdpgeneric"),
        "still attached after the handles went"
    );

    // A restarted daemon adopts: same flows, same counters, still attached.
    let mut dp = XdpDataPlane::adopt(pins).expect("adopt the pinned set");
    let key = FlowKey {
        src: addr(&c),
        dst: addr(&VIP4.into()),
        sport: 40000,
        dport: PORT,
        proto: 6,
        family: family(&c),
        _pad: [0; 2],
    };
    assert_eq!(dp.flow(&key).expect("flow survived").backend_id, expected);
    let stats = dp.read_stats().unwrap();
    assert_eq!(stats[G::NewFlow as usize].packets, 1);
    // Per-VIP and per-backend counters are read for what the maps hold, before the
    // restarted daemon configures anything.
    let vip_new = stats_vip_slot(0, ObjectCounter::NewFlows) as usize;
    let backend_new = stats_backend_slot(expected, ObjectCounter::NewFlows) as usize;
    assert_eq!(stats[vip_new].packets, 1);
    assert_eq!(stats[backend_new].packets, 1);
    let r = dp
        .test_run(&Tcp::new(c, VIP4.into(), 40000, PORT, ACK).frame(), 1)
        .unwrap();
    assert_eq!(r.verdict, XDP_TX);
    assert_eq!(
        backend_of(&check_encap(&r.data, &[], true).outer_dst),
        expected
    );
    // The adopted plane writes the same maps: a new ring goes live.
    dp.swap_ring(0, &vec![2; RING as usize]).unwrap();
    let r = dp
        .test_run(&Tcp::new(c, VIP4.into(), 40001, PORT, SYN).frame(), 1)
        .unwrap();
    assert_eq!(backend_of(&check_encap(&r.data, &[], true).outer_dst), 2);

    dp.detach().unwrap();
    assert!(!xdp_on_lo().contains("xdp"), "detached: {}", xdp_on_lo());
    assert!(
        pinned_files(pins).is_empty(),
        "pins removed: {:?}",
        pinned_files(pins)
    );
}

#[test]
fn pinning_outside_a_bpffs_is_refused_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("smtp-lb-not-bpffs-{}", std::process::id()));
    let r = XdpDataPlane::load(&LoadOptions {
        pin_dir: Some(dir.clone()),
        ..Lab::small()
    });
    let _ = std::fs::remove_dir(&dir);
    match r {
        Err(balancer::dataplane::DataPlaneError::NotBpffs { path }) => assert_eq!(path, dir),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("pinning on a non-bpffs directory was accepted"),
    }
}

fn xdp_on(iface: &str) -> String {
    let out = Command::new("ip")
        .args(["-d", "link", "show", iface])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn one_program_attaches_to_several_interfaces_and_adopt_detaches_them_all() {
    let fs = BpfFs::new("multi");
    let pins = fs.0.join("lb");
    let pins2 = pins.clone();
    std::thread::spawn(move || {
        // SAFETY: unshare(2) on this thread only; `ip` children inherit its namespace.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        let ok = Command::new("ip")
            .args(["link", "add", "d0", "type", "veth", "peer", "name", "d1"])
            .status()
            .unwrap();
        assert!(ok.success());
        let mut lab = Lab::with_opts(
            0,
            0,
            MTU,
            LoadOptions {
                pin_dir: Some(pins2.clone()),
                ..Lab::small()
            },
        );
        lab.dp.attach("lo", AttachMode::Generic).unwrap();
        lab.dp.attach("d0", AttachMode::Generic).unwrap();
        for i in ["lo", "d0"] {
            assert!(xdp_on(i).contains("xdpgeneric"), "{i}: {}", xdp_on(i));
        }
        let files = pinned_files(&pins2);
        assert!(
            files.iter().any(|f| f == "link") && files.iter().any(|f| f == "link_1"),
            "{files:?}"
        );
        // Handles dropped (kill -9), then a restarted daemon adopts both links.
        let Lab { dp, .. } = lab;
        drop(dp);
        let dp = XdpDataPlane::adopt(&pins2).expect("adopt");
        assert!(
            xdp_on("d0").contains("xdpgeneric"),
            "still attached after the handles went"
        );
        dp.detach().unwrap();
        for i in ["lo", "d0"] {
            assert!(!xdp_on(i).contains("xdp"), "{i} detached: {}", xdp_on(i));
        }
    })
    .join()
    .expect("multi-interface thread");
    assert!(
        pinned_files(&pins).is_empty(),
        "every pin removed: {:?}",
        pinned_files(&pins)
    );
    drop(fs);
}
