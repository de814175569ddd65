//! Shared fixture of the privileged data-plane tests: a loaded balancer program whose
//! maps are filled through the real map writer (`XdpDataPlane`), known VIPs and backends,
//! and a checker for encapsulated output frames.
#![allow(dead_code)]

pub mod packet;

use balancer::{
    dataplane::{DataPlaneOps, LoadOptions, XdpDataPlane},
    maglev::{build_table, MaglevBackend},
};
use balancer_ebpf::{
    hash::{client_hash, FLOW_HASH_SEED},
    Addr, BackendInfo, GlobalCounter, LbConfig, VipKey, VipMeta, AF_INET, AF_INET6,
    BACKEND_F_VALID, CONFIG_F_READY, VIP_F_STICKY,
};
use packet::{csum, LB_MAC};
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub const NEXTHOP_MAC: [u8; 6] = [0x02, 0x0e, 0, 0, 0, 0x01];
pub const VIP4: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 1, 0, 0, 0, 1);
pub const PORT: u16 = 25;
pub const ENCAP_SRC4: [u8; 4] = [198, 18, 255, 0];
pub const ENCAP_SRC6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0xff, 0, 0, 0, 0);
pub const SRC_VARY_BITS: u8 = 8;
pub const MTU: u16 = 1500;
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0xc, 0, 0, 0, 10);
/// A small prime ring keeps the fixture fast; the weights test uses 65537.
pub const RING: u32 = 251;

pub fn addr(ip: &IpAddr) -> Addr {
    match ip {
        IpAddr::V4(a) => balancer_ebpf::addr4(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

pub fn family(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

/// A loaded balancer with VIP 0 = `VIP4:PORT` over backends 0..3 (IPv4) and VIP 1 =
/// `VIP6:PORT` over backends 10..13 (IPv6).
pub struct Lab {
    pub dp: XdpDataPlane,
    pub rings: [Vec<u32>; 2],
    pub flags: [u32; 2],
}

pub fn backend_ip(id: u32) -> IpAddr {
    if id < 10 {
        IpAddr::V4(Ipv4Addr::new(198, 18, 2, 10 + id as u8))
    } else {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x198, 0x18, 2, 0, 0, 0, id as u16))
    }
}

pub fn maglev(ids: &[(u32, u32)], size: u32) -> Vec<u32> {
    let bs: Vec<MaglevBackend> = ids
        .iter()
        .map(|&(id, weight)| MaglevBackend {
            name: format!("mta-{id}.test"),
            id,
            weight,
        })
        .collect();
    build_table(&bs, size).expect("a live backend")
}

impl Lab {
    pub fn new() -> Self {
        Self::with(0, 0, MTU)
    }

    pub fn with(flags4: u32, flags6: u32, mtu: u16) -> Self {
        Self::with_opts(flags4, flags6, mtu, Self::small())
    }

    /// Map sizes small enough for many programs loaded in parallel.
    pub fn small() -> LoadOptions {
        LoadOptions {
            flow_table_size: Some(64 * 1024),
            ring_vips: Some(4),
            pin_dir: None,
        }
    }

    pub fn with_opts(flags4: u32, flags6: u32, mtu: u16, opts: LoadOptions) -> Self {
        let dp = XdpDataPlane::load(&opts).expect("balancer program loads and passes the verifier");
        let mut lab = Self {
            dp,
            rings: [Vec::new(), Vec::new()],
            flags: [flags4, flags6],
        };
        lab.dp
            .set_config(&LbConfig {
                own_mac: LB_MAC,
                nexthop_mac: NEXTHOP_MAC,
                mtu,
                src_vary_bits: SRC_VARY_BITS,
                flags: CONFIG_F_READY,
                encap_src4: ENCAP_SRC4,
                encap_src6: ENCAP_SRC6.octets(),
            })
            .unwrap();
        for id in [0, 1, 2, 10, 11, 12] {
            lab.set_backend(id, true);
        }
        lab.set_vip(0, flags4, &maglev(&[(0, 1), (1, 1), (2, 1)], RING));
        lab.set_vip(1, flags6, &maglev(&[(10, 1), (11, 1), (12, 1)], RING));
        lab
    }

    pub fn set_backend(&mut self, id: u32, valid: bool) {
        let ip = backend_ip(id);
        self.dp
            .set_backend(
                id,
                &BackendInfo {
                    addr: addr(&ip),
                    family: family(&ip),
                    flags: if valid { BACKEND_F_VALID } else { 0 },
                    _pad: [0; 2],
                },
            )
            .unwrap();
    }

    pub fn vip_key(vip_id: u32) -> VipKey {
        let ip: IpAddr = if vip_id == 0 {
            VIP4.into()
        } else {
            VIP6.into()
        };
        VipKey {
            addr: addr(&ip),
            port: PORT,
            proto: 6,
            family: family(&ip),
        }
    }

    /// (Re)writes VIP `vip_id` with `flags` and `ring`.
    pub fn set_vip(&mut self, vip_id: u32, flags: u32, ring: &[u32]) {
        self.dp.swap_ring(vip_id, ring).unwrap();
        self.dp
            .upsert_vip(
                &Self::vip_key(vip_id),
                &VipMeta {
                    vip_id,
                    flags,
                    ring_size: ring.len() as u32,
                    syn_rate: 10,
                    syn_burst: 3,
                    syn_prefix4: 24,
                    syn_prefix6: 64,
                    _pad: [0; 2],
                },
            )
            .unwrap();
        self.rings[vip_id as usize] = ring.to_vec();
        self.flags[vip_id as usize] = flags;
    }

    /// The backend the consistent hash gives `client:port` on VIP `vip_id`.
    pub fn expected(&self, vip_id: u32, client: &IpAddr, port: u16) -> u32 {
        let sticky = self.flags[vip_id as usize] & VIP_F_STICKY != 0;
        let h = client_hash(&addr(client), if sticky { 0 } else { port }, FLOW_HASH_SEED);
        let ring = &self.rings[vip_id as usize];
        ring[(h % ring.len() as u32) as usize]
    }

    pub fn stat(&self, c: GlobalCounter) -> u64 {
        self.dp.read_stats().unwrap()[c as usize].packets
    }

    pub fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        let r = self.dp.test_run(frame, 1).expect("BPF_PROG_TEST_RUN");
        (r.verdict, r.data)
    }
}

/// An encapsulated frame, taken apart and checked field by field.
pub struct Encap {
    pub outer_src: IpAddr,
    pub outer_dst: IpAddr,
    pub inner: Vec<u8>,
}

/// Checks the link layer (next-hop MAC, own MAC, `vlans` kept) and the outer header
/// (version, lengths, TTL/hop limit 64, protocol, checksum), and returns the parts.
pub fn check_encap(out: &[u8], vlans: &[u16], inner_v4: bool) -> Encap {
    assert_eq!(&out[0..6], &NEXTHOP_MAC, "destination MAC is the next hop");
    assert_eq!(&out[6..12], &LB_MAC, "source MAC is the balancer's");
    let mut off = 12;
    for v in vlans {
        assert_eq!(&out[off..off + 4], &[0x81, 0x00, (v >> 8) as u8, *v as u8]);
        off += 4;
    }
    let et = u16::from_be_bytes([out[off], out[off + 1]]);
    let l3 = &out[off + 2..];
    let inner_proto = if inner_v4 { 4 } else { 41 };
    match et {
        0x0800 => {
            let h = &l3[..20];
            assert_eq!(h[0], 0x45, "outer IPv4 without options");
            assert_eq!(
                u16::from_be_bytes([h[2], h[3]]) as usize,
                l3.len(),
                "outer total length"
            );
            assert_eq!(h[8], 64, "outer TTL");
            assert_eq!(h[9], inner_proto, "outer protocol");
            assert_eq!(csum(h), 0, "outer IPv4 checksum verifies");
            let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            Encap {
                outer_src: src.into(),
                outer_dst: dst.into(),
                inner: l3[20..].to_vec(),
            }
        }
        0x86dd => {
            let h = &l3[..40];
            assert_eq!(h[0] >> 4, 6);
            assert_eq!(
                u16::from_be_bytes([h[4], h[5]]) as usize,
                l3.len() - 40,
                "outer payload length"
            );
            assert_eq!(h[6], inner_proto, "outer next header");
            assert_eq!(h[7], 64, "outer hop limit");
            let src: [u8; 16] = h[8..24].try_into().unwrap();
            let dst: [u8; 16] = h[24..40].try_into().unwrap();
            Encap {
                outer_src: IpAddr::from(src),
                outer_dst: IpAddr::from(dst),
                inner: l3[40..].to_vec(),
            }
        }
        t => panic!("unexpected outer ethertype {t:#06x}"),
    }
}

/// The backend id a frame was sent to, by its outer destination.
pub fn backend_of(dst: &IpAddr) -> u32 {
    match dst {
        IpAddr::V4(a) => u32::from(a.octets()[3]) - 10,
        IpAddr::V6(a) => u32::from(a.segments()[7]),
    }
}

/// The outer source the balancer must use for a flow with hash `h`.
pub fn expected_src4(h: u32) -> IpAddr {
    let mut s = ENCAP_SRC4;
    s[3] = (h & 0xff) as u8;
    IpAddr::V4(s.into())
}

pub fn expected_src6(h: u32) -> IpAddr {
    let mut s = ENCAP_SRC6.octets();
    s[15] = (h & 0xff) as u8;
    IpAddr::V6(s.into())
}

pub fn flow_hash(client: &IpAddr, port: u16) -> u32 {
    client_hash(&addr(client), port, FLOW_HASH_SEED)
}

/// A bpffs mounted on a fresh temporary directory; unmounted and removed on drop.
pub struct BpfFs(pub PathBuf);

impl BpfFs {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("smtp-lb-bpffs-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = |s: &str| CString::new(s).unwrap();
        let target = c(dir.to_str().unwrap());
        // SAFETY: plain mount(2) with valid C strings.
        let rc = unsafe {
            libc::mount(
                c("bpf").as_ptr(),
                target.as_ptr(),
                c("bpf").as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "mount bpffs: {}", std::io::Error::last_os_error());
        Self(dir)
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let target = CString::new(self.0.to_str().unwrap()).unwrap();
        // SAFETY: unmounting the directory mounted in `new`; MNT_DETACH so that a test
        // failing with pins left behind still cleans up.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.0);
    }
}
