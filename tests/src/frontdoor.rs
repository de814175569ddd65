//! The two peer front doors the benchmarks compare the XDP balancer with, run on a lab
//! balancer host: HAProxy in TCP mode (the source article's own example: leastconn,
//! tcp-check) and an nftables DNAT balancer (`numgen` across the backends, with
//! masquerade so that replies come back through it).

use crate::netns::Netns;
use crate::proc::ChildGuard;
use anyhow::{Context, Result};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// HAProxy listening on `vip:port` on the balancer host, spreading over `backends`.
pub fn haproxy(
    ns: &Netns,
    vip: Ipv4Addr,
    port: u16,
    backends: &[IpAddr],
    threads: u32,
    dir: &Path,
) -> Result<ChildGuard> {
    // The VIP must be local for HAProxy to bind it.
    ns.ip(&["addr", "replace", &format!("{vip}/32"), "dev", "lo"])?;
    let mut cfg = format!(
        "global\n  maxconn 8000\n  nbthread {threads}\n\n\
         defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 2m\n  timeout server 2m\n\n\
         frontend smtp_front\n  bind {vip}:{port}\n  default_backend smtp_back\n\n\
         backend smtp_back\n  balance leastconn\n  option tcp-check\n  tcp-check connect\n  tcp-check expect rstring ^220\n"
    );
    for (i, b) in backends.iter().enumerate() {
        cfg.push_str(&format!(
            "  server mta{} {b}:{port} check inter 1s\n",
            i + 1
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).with_context(|| format!("write {}", path.display()))?;
    let mut cmd = ns.command("haproxy");
    cmd.arg("-db").arg("-f").arg(&path);
    ChildGuard::spawn("haproxy", cmd, Some(&dir.join("haproxy.log")))
}

/// Removes what `haproxy` added besides the process.
pub fn haproxy_cleanup(ns: &Netns, vip: Ipv4Addr) {
    let _ = ns.ip(&["addr", "del", &format!("{vip}/32"), "dev", "lo"]);
}

const NFT_TABLE: &str = "smtp_lb_bench";

/// nftables DNAT of `vip:port` to the backends, round robin with `numgen inc`, and
/// masquerade toward them so replies return through this host (it is not on their path).
pub fn nft_dnat(
    ns: &Netns,
    vip: Ipv4Addr,
    port: u16,
    backends: &[Ipv4Addr],
    egress_if: &str,
) -> Result<()> {
    ns.sysctl("net.ipv4.ip_forward", "1")?;
    let map: Vec<String> = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("{i} : {b}"))
        .collect();
    let rules = format!(
        "table ip {NFT_TABLE} {{\n\
           chain pre {{ type nat hook prerouting priority dstnat; policy accept;\n\
             ip daddr {vip} tcp dport {port} dnat to numgen inc mod {} map {{ {} }}\n\
           }}\n\
           chain post {{ type nat hook postrouting priority srcnat; policy accept;\n\
             oifname \"{egress_if}\" ct status dnat masquerade\n\
           }}\n\
         }}\n",
        backends.len(),
        map.join(", ")
    );
    let dir = std::env::temp_dir().join(format!("nft-{}-{}", ns.name(), std::process::id()));
    std::fs::write(&dir, rules)?;
    let r = ns.exec("nft", &["-f", dir.to_str().expect("utf-8 temp path")]);
    let _ = std::fs::remove_file(&dir);
    r
}

pub fn nft_cleanup(ns: &Netns) {
    let _ = ns.exec("nft", &["delete", "table", "ip", NFT_TABLE]);
    let _ = ns.sysctl("net.ipv4.ip_forward", "0");
}
