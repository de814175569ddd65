//! The lab topology: a router joining a client network, two balancer hosts (sharing the
//! VIP behind an ECMP route), three MTA backends, three "ISP" hosts and a DNS host, each
//! in its own network namespace. Used by `cargo xtask lab`, the demo and the e2e tests.
//!
//! This module builds only the network (links, addresses, routes, sysctls). Loading XDP
//! programs and starting daemons is the caller's job, because that needs the binaries.
//!
//! Addressing (all inside namespaces we create; never the host's networks):
//! - VIP: 198.18.0.25 and fd00:198:18::25 (on the backends' loopback, routed to balancers)
//! - link n is 198.18.n.0/24 and fd00:198:18:n::/64, the router is .1 / ::1 on each
//!   - 1: client (.10, plus .11-.19 for more client addresses); 8: an outsider client
//!   - 2, 3: balancers lb1, lb2 (.2); 11-13: backends mta1-3 (.2, egress sources .3 .4)
//!   - 21-23: ISPs gmail.test, outlook.test, yahoo.test (.2); 30: DNS (.2)

use crate::netns::{self, veth, Netns};
use anyhow::Result;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 25);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, 0x25);
pub const CLIENT_LINK: u8 = 1;
pub const OUTSIDER_LINK: u8 = 8;
pub const ISP_NAMES: [&str; 3] = ["gmail", "outlook", "yahoo"];

pub fn v4(link: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, link, host)
}

/// The IPv6 address of `host` on `link`. The link number is written with the same
/// digits as in IPv4 (link 11 is fd00:198:18:11::/64), so the two read alike.
pub fn v6(link: u8, host: u16) -> Ipv6Addr {
    let seg = u16::from_str_radix(&link.to_string(), 16).expect("decimal digits are hex digits");
    Ipv6Addr::new(0xfd00, 0x198, 0x18, seg, 0, 0, 0, host)
}

/// One host namespace on its own link to the router.
pub struct Host {
    pub ns: Netns,
    /// Link number (third octet).
    pub link: u8,
    /// Interface name of this host's link on the router side.
    pub router_if: String,
    /// The host's interface name.
    pub ifname: &'static str,
}

impl Host {
    pub fn addr4(&self) -> Ipv4Addr {
        v4(
            self.link,
            if self.link == CLIENT_LINK || self.link == OUTSIDER_LINK {
                10
            } else {
                2
            },
        )
    }
    pub fn addr6(&self) -> Ipv6Addr {
        v6(
            self.link,
            if self.link == CLIENT_LINK || self.link == OUTSIDER_LINK {
                0x10
            } else {
                2
            },
        )
    }
}

pub struct Lab {
    pub prefix: String,
    pub router: Netns,
    pub client: Host,
    pub outsider: Host,
    pub lbs: Vec<Host>,
    pub mtas: Vec<Host>,
    pub isps: Vec<Host>,
    pub dns: Host,
}

/// How many of each host to build.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub balancers: u8,
    pub backends: u8,
    pub isps: u8,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            balancers: 2,
            backends: 3,
            isps: 3,
        }
    }
}

impl Lab {
    /// Builds the whole topology. Every namespace is named `{prefix}-{role}`; on error
    /// everything built so far is removed by the guards.
    pub fn up(prefix: &str, shape: Shape) -> Result<Lab> {
        let router = Netns::create(&format!("{prefix}-router"))?;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            // Replies come from the VIP on backend links: strict reverse-path filtering
            // would drop them.
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            // Without L4 hashing, ECMP sends every flow of a client to one balancer.
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ] {
            router.sysctl(k, v)?;
        }
        let host = |role: &str, link: u8, router_if: &str| -> Result<Host> {
            let ns = Netns::create(&format!("{prefix}-{role}"))?;
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
            ns.sysctl("net.ipv4.conf.all.rp_filter", "0")?;
            ns.sysctl("net.ipv4.conf.default.rp_filter", "0")?;
            veth(&ns, "eth0", &router, router_if)?;
            let h = Host {
                ns,
                link,
                router_if: router_if.to_string(),
                ifname: "eth0",
            };
            router.ip(&[
                "addr",
                "add",
                &format!("{}/24", v4(link, 1)),
                "dev",
                router_if,
            ])?;
            router.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", v6(link, 1)),
                "dev",
                router_if,
                "nodad",
            ])?;
            h.ns.ip(&["addr", "add", &format!("{}/24", h.addr4()), "dev", "eth0"])?;
            h.ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", h.addr6()),
                "dev",
                "eth0",
                "nodad",
            ])?;
            h.ns.ip(&["route", "add", "default", "via", &v4(link, 1).to_string()])?;
            h.ns.ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &v6(link, 1).to_string(),
            ])?;
            Ok(h)
        };

        let client = host("client", CLIENT_LINK, "c0")?;
        for i in 11..20u8 {
            client.ns.ip(&[
                "addr",
                "add",
                &format!("{}/24", v4(CLIENT_LINK, i)),
                "dev",
                "eth0",
            ])?;
        }
        let outsider = host("outsider", OUTSIDER_LINK, "out0")?;
        let mut lbs = Vec::new();
        for i in 1..=shape.balancers {
            let lb = host(&format!("lb{i}"), 1 + i, &format!("lb{i}"))?;
            // XDP_TX frames from the balancer arrive on this veth end; with tx checksum
            // offload on, the encapsulated SYNs reach backends with bad checksums.
            router.exec("ethtool", &["-K", &lb.router_if, "tx", "off"])?;
            lb.ns.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
            lbs.push(lb);
        }
        let mut mtas = Vec::new();
        for i in 1..=shape.backends {
            let link = 10 + i;
            let m = host(&format!("mta{i}"), link, &format!("mta{i}"))?;
            m.ns.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"])?;
            m.ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{VIP6}/128"),
                "dev",
                "lo",
                "nodad",
            ])?;
            for s in [3u8, 4] {
                m.ns.ip(&["addr", "add", &format!("{}/24", v4(link, s)), "dev", "eth0"])?;
            }
            mtas.push(m);
        }
        let mut isps = Vec::new();
        for i in 1..=shape.isps {
            isps.push(host(&format!("isp{i}"), 20 + i, &format!("isp{i}"))?);
        }
        let dns = host("dns", 30, "dns0")?;

        let lab = Lab {
            prefix: prefix.to_string(),
            router,
            client,
            outsider,
            lbs,
            mtas,
            isps,
            dns,
        };
        lab.route_vip_to(&(0..lab.lbs.len()).collect::<Vec<_>>())?;
        Ok(lab)
    }

    /// Points the router's VIP routes at the given balancers (indexes into `lbs`), as an
    /// ECMP multipath route when there is more than one.
    pub fn route_vip_to(&self, lbs: &[usize]) -> Result<()> {
        let mut r4 = vec!["route".to_string(), "replace".into(), format!("{VIP4}/32")];
        let mut r6 = vec![
            "-6".to_string(),
            "route".into(),
            "replace".into(),
            format!("{VIP6}/128"),
        ];
        for &i in lbs {
            let lb = &self.lbs[i];
            r4.extend([
                "nexthop".into(),
                "via".into(),
                lb.addr4().to_string(),
                "dev".into(),
                lb.router_if.clone(),
            ]);
            r6.extend([
                "nexthop".into(),
                "via".into(),
                lb.addr6().to_string(),
                "dev".into(),
                lb.router_if.clone(),
            ]);
        }
        let a4: Vec<&str> = r4.iter().map(String::as_str).collect();
        let a6: Vec<&str> = r6.iter().map(String::as_str).collect();
        self.router.ip(&a4)?;
        self.router.ip(&a6)
    }

    /// Every namespace of the lab, router first.
    pub fn namespaces(&self) -> Vec<&Netns> {
        let mut v = vec![
            &self.router,
            &self.client.ns,
            &self.outsider.ns,
            &self.dns.ns,
        ];
        v.extend(self.lbs.iter().map(|h| &h.ns));
        v.extend(self.mtas.iter().map(|h| &h.ns));
        v.extend(self.isps.iter().map(|h| &h.ns));
        v
    }

    /// Keeps every namespace after the `Lab` drops (for `xtask lab up`).
    pub fn keep(&mut self) {
        self.router.keep();
        for h in [&mut self.client, &mut self.outsider, &mut self.dns] {
            h.ns.keep();
        }
        for h in self
            .lbs
            .iter_mut()
            .chain(self.mtas.iter_mut())
            .chain(self.isps.iter_mut())
        {
            h.ns.keep();
        }
    }
}

/// Removes every namespace whose name starts with `{prefix}-`, with the processes inside.
/// Safe to call after a failed or interrupted run.
pub fn down(prefix: &str) -> usize {
    let names = netns::list_with_prefix(&format!("{prefix}-"));
    for n in &names {
        netns::delete(n);
    }
    // Pinned XDP programs and maps of the lab's balancers (see `xdp_tier`).
    if let Ok(rd) = std::fs::read_dir(crate::xdp_tier::BPFFS) {
        for e in rd.flatten() {
            if e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    names.len()
}
