//! Config → kernel map values. Kept apart from the controller so that the mapping from
//! config fields to `balancer_ebpf` structs reads in one place.

use std::net::IpAddr;

use balancer_ebpf::{
    addr4, Addr, BackendInfo, LbConfig, VipKey, VipMeta, AF_INET, AF_INET6, BACKEND_F_VALID,
    CONFIG_F_READY, VIP_F_ACL, VIP_F_STICKY, VIP_F_SYN_GUARD,
};

use crate::config::{DataplaneCfg, HashMode, VipCfg};
use crate::dataplane::AclPrefix;

pub fn addr_of(ip: IpAddr) -> (Addr, u8) {
    match ip {
        IpAddr::V4(v4) => (addr4(v4.octets()), AF_INET),
        IpAddr::V6(v6) => (v6.octets(), AF_INET6),
    }
}

pub fn lb_config(dp: &DataplaneCfg, own_mac: [u8; 6], nexthop_mac: [u8; 6]) -> LbConfig {
    LbConfig {
        own_mac,
        nexthop_mac,
        mtu: dp.mtu,
        src_vary_bits: dp.src_vary_bits,
        flags: CONFIG_F_READY,
        encap_src4: dp.encap_src4.map_or([0; 4], |a| a.octets()),
        encap_src6: dp.encap_src6.map_or([0; 16], |a| a.octets()),
    }
}

pub fn vip_keys(v: &VipCfg) -> Vec<VipKey> {
    let (addr, family) = addr_of(v.addr);
    v.ports
        .iter()
        .map(|&port| VipKey {
            addr,
            port,
            proto: 6,
            family,
        })
        .collect()
}

pub fn vip_meta(v: &VipCfg, vip_id: u32) -> VipMeta {
    let mut flags = 0;
    if v.hash == HashMode::StickySource {
        flags |= VIP_F_STICKY;
    }
    if !v.acl.is_empty() {
        flags |= VIP_F_ACL;
    }
    let (syn_rate, syn_burst, p4, p6) = match &v.syn_guard {
        Some(g) => {
            flags |= VIP_F_SYN_GUARD;
            (g.rate, g.burst, g.prefix4, g.prefix6)
        }
        None => (0, 0, 0, 0),
    };
    VipMeta {
        vip_id,
        flags,
        ring_size: v.ring_size,
        syn_rate,
        syn_burst,
        syn_prefix4: p4,
        syn_prefix6: p6,
        _pad: [0; 2],
    }
}

pub fn acl(v: &VipCfg) -> Vec<AclPrefix> {
    v.acl
        .iter()
        .map(|p| {
            let (addr, family) = addr_of(p.addr);
            AclPrefix {
                addr,
                family,
                prefix_len: p.len,
            }
        })
        .collect()
}

pub fn backend_info(ip: IpAddr, valid: bool) -> BackendInfo {
    let (addr, family) = addr_of(ip);
    BackendInfo {
        addr,
        family,
        flags: if valid { BACKEND_F_VALID } else { 0 },
        _pad: [0; 2],
    }
}
