//! The `nic_time` probe on a real veth: packets received by the traced interface are
//! counted with their poll time, and an interface with another name is not.
//!
//! The receiving end lives in a network namespace private to one thread; the sending end
//! in a named namespace that a guard deletes, also on failure.
#![cfg(feature = "privileged")]

use balancer::dataplane::{decap::DecapPlane, nic_time::NicTimeProbe, AttachMode};
use std::{path::Path, process::Command};

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

/// Deletes the sender's namespace.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn times_the_receive_polls_of_the_named_veth_only() {
    std::thread::spawn(|| {
        // SAFETY: unshare(2) on this thread only; `ip` and `ping` children inherit it.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        let sender = Netns(format!("nicprobe-{}", std::process::id()));
        ip(&["netns", "add", &sender.0]);
        ip(&[
            "link",
            "add",
            "nicprobe0",
            "type",
            "veth",
            "peer",
            "name",
            "nicprobe1",
        ]);
        ip(&["link", "set", "nicprobe0", "netns", &sender.0]);
        let s = |args: &[&str]| {
            let mut v = vec!["-n", sender.0.as_str()];
            v.extend_from_slice(args);
            ip(&v);
        };
        s(&["addr", "add", "198.18.200.1/30", "dev", "nicprobe0"]);
        s(&["link", "set", "nicprobe0", "up"]);
        ip(&["addr", "add", "198.18.200.2/30", "dev", "nicprobe1"]);
        ip(&["link", "set", "nicprobe1", "up"]);
        // An XDP program puts the veth's receive path on NAPI (`veth_poll`); the decap
        // program with no local address passes everything.
        let mut pass = DecapPlane::load(None).unwrap();
        pass.attach("nicprobe1", AttachMode::Native).unwrap();
        let traced = NicTimeProbe::attach("nicprobe1", None).unwrap();
        let other = NicTimeProbe::attach("nicprobe9", None).unwrap();
        // This thread's namespace, named through its nsfs file, as `/run/netns` files are.
        let here =
            NicTimeProbe::attach("nicprobe1", Some(Path::new("/proc/thread-self/ns/net"))).unwrap();
        // The right name in the wrong namespace (the sender's) is not timed either.
        let elsewhere =
            NicTimeProbe::attach("nicprobe1", Some(&Path::new("/run/netns").join(&sender.0)))
                .unwrap();
        let before = traced.read().unwrap();
        let st = Command::new("ip")
            .args([
                "netns", "exec", &sender.0, "ping", "-c", "20", "-i", "0.01", "-W", "1",
            ])
            .args(["-q", "198.18.200.2"])
            .status()
            .unwrap();
        assert!(st.success(), "ping over the veth pair");
        let after = traced.read().unwrap();
        assert!(
            after.packets - before.packets >= 20,
            "{before:?} -> {after:?}"
        );
        assert!(after.polls > before.polls, "{after:?}");
        // Twenty polls take well over a nanosecond each.
        assert!(
            after.ns - before.ns >= after.polls - before.polls,
            "{after:?}"
        );
        assert_eq!(other.read().unwrap().packets, 0);
        assert_eq!(elsewhere.read().unwrap().packets, 0);
        assert!(here.read().unwrap().packets >= 20);
        pass.detach().unwrap();
    })
    .join()
    .expect("probe thread");
}
