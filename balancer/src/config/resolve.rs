//! Resolution of `auto` MACs at daemon start: the own MAC from sysfs, the next hop from
//! the default route (`/proc/net/route`) and the neighbour table (`/proc/net/arp`).
//! Done at run time, not at load, so `check-config` works on any machine.

use std::net::Ipv4Addr;

use super::values::{parse_mac, MacSetting};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("interface {iface}: {message}")]
    Interface { iface: String, message: String },
    #[error("no IPv4 default route via {iface} in /proc/net/route; set dataplane.nexthop_mac explicitly")]
    NoDefaultRoute { iface: String },
    #[error("gateway {gateway} has no complete entry in the neighbour table (/proc/net/arp); ping it once or set dataplane.nexthop_mac explicitly")]
    NoNeighbour { gateway: Ipv4Addr },
}

fn read(path: &str) -> Result<String, ResolveError> {
    std::fs::read_to_string(path).map_err(|source| ResolveError::Read {
        path: path.to_string(),
        source,
    })
}

/// The IPv4 default gateway on `iface`, from the text of `/proc/net/route`.
pub fn default_gateway(route_text: &str, iface: &str) -> Option<Ipv4Addr> {
    route_text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 3 || cols[0] != iface || cols[1] != "00000000" {
            return None;
        }
        // The kernel prints the address as a host-order (little-endian here) u32.
        let raw = u32::from_str_radix(cols[2], 16).ok()?;
        (raw != 0).then(|| Ipv4Addr::from(raw.to_le_bytes()))
    })
}

/// The MAC of `ip` from the text of `/proc/net/arp`, if the entry is complete.
pub fn neighbour_mac(arp_text: &str, ip: Ipv4Addr) -> Option<[u8; 6]> {
    arp_text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 4 || cols[0].parse::<Ipv4Addr>().ok()? != ip {
            return None;
        }
        let flags = u32::from_str_radix(cols[2].trim_start_matches("0x"), 16).ok()?;
        // ATF_COM: the entry is resolved.
        if flags & 0x2 == 0 {
            return None;
        }
        parse_mac(cols[3]).ok()
    })
}

/// Resolves (own MAC, next-hop MAC) for the first interface of the config.
pub fn resolve_macs(
    iface: &str,
    own: MacSetting,
    nexthop: MacSetting,
) -> Result<([u8; 6], [u8; 6]), ResolveError> {
    let own = match own {
        MacSetting::Fixed(m) => m,
        MacSetting::Auto => {
            let text = read(&format!("/sys/class/net/{iface}/address"))?;
            parse_mac(text.trim()).map_err(|message| ResolveError::Interface {
                iface: iface.to_string(),
                message,
            })?
        }
    };
    let nexthop = match nexthop {
        MacSetting::Fixed(m) => m,
        MacSetting::Auto => {
            let gw = default_gateway(&read("/proc/net/route")?, iface).ok_or_else(|| {
                ResolveError::NoDefaultRoute {
                    iface: iface.to_string(),
                }
            })?;
            neighbour_mac(&read("/proc/net/arp")?, gw)
                .ok_or(ResolveError::NoNeighbour { gateway: gw })?
        }
    };
    Ok((own, nexthop))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
    const ARP: &str =
        "IP address       HW type     Flags       HW address            Mask     Device
198.18.0.1       0x1         0x2         02:00:c6:12:00:01     *        eth0
198.18.0.9       0x1         0x0         00:00:00:00:00:00     *        eth0
";

    #[test]
    fn finds_gateway_and_its_mac() {
        let gw = default_gateway(ROUTE, "eth0").unwrap();
        assert_eq!(gw, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(default_gateway(ROUTE, "eth1"), None);
        assert_eq!(neighbour_mac(ARP, gw), Some([0x02, 0, 0xc6, 0x12, 0, 1]));
        // Incomplete entries do not count.
        assert_eq!(neighbour_mac(ARP, Ipv4Addr::new(198, 18, 0, 9)), None);
    }

    #[test]
    fn fixed_macs_need_no_kernel() {
        let (o, n) = resolve_macs(
            "does-not-exist",
            MacSetting::Fixed([2, 0, 0, 0, 0, 1]),
            MacSetting::Fixed([2, 0, 0, 0, 0, 2]),
        )
        .unwrap();
        assert_eq!((o[5], n[5]), (1, 2));
    }
}
