//! Semantic checks that serde cannot express (cross-field rules, ranges, uniqueness).
//! Each problem names the field by path; `load` turns the path into a line number.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;

use balancer_ebpf::{MAGLEV_RING_MAX, MAX_BACKENDS, MAX_VIPS};

use super::locate::FieldPath;
use super::schema::{Config, XdpMode};

/// Smallest ring a VIP may use per backend: Maglev's balance and disruption bounds
/// need the table to be much larger than the backend count.
pub const RING_SLOTS_PER_BACKEND: u32 = 10;

pub use crate::dataplane::keys::is_prime;

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

const NAME_RULE: &str = "must be 1-64 characters of letters, digits, '-', '_' or '.'";

/// Every problem of `cfg`, in file order.
pub fn validate(cfg: &Config) -> Vec<(FieldPath, String)> {
    let mut out = Vec::new();
    let root = FieldPath::default();
    let mut err = |p: FieldPath, m: String| out.push((p, m));

    let dp = root.key("dataplane");
    if cfg.dataplane.interfaces.is_empty() {
        err(
            dp.key("interfaces"),
            "at least one interface is required".into(),
        );
    }
    for (i, name) in cfg.dataplane.interfaces.iter().enumerate() {
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            err(
                dp.key("interfaces").index(i),
                format!("{name:?} is not a valid interface name"),
            );
        }
    }
    if !(576..=9216).contains(&cfg.dataplane.mtu) {
        err(
            dp.key("mtu"),
            format!("{} is out of range (576..=9216)", cfg.dataplane.mtu),
        );
    }
    if !cfg.dataplane.pin_dir.is_absolute() {
        err(
            dp.key("pin_dir"),
            format!(
                "{} must be an absolute path",
                cfg.dataplane.pin_dir.display()
            ),
        );
    }
    if cfg.dataplane.src_vary_bits > 16 {
        err(
            dp.key("src_vary_bits"),
            format!("{} is out of range (0..=16)", cfg.dataplane.src_vary_bits),
        );
    }

    let h = root.key("health");
    let hc = &cfg.health;
    if hc.interval.0.is_zero() {
        err(h.key("interval"), "must be greater than zero".into());
    }
    if hc.timeout.0.is_zero() {
        err(h.key("timeout"), "must be greater than zero".into());
    } else if hc.timeout.0 >= hc.interval.0 {
        err(
            h.key("timeout"),
            format!(
                "{} must be shorter than interval ({})",
                hc.timeout, hc.interval
            ),
        );
    }
    if hc.fast_interval.0 > hc.interval.0 {
        err(
            h.key("fast_interval"),
            format!(
                "{} must not be longer than interval ({})",
                hc.fast_interval, hc.interval
            ),
        );
    }
    if hc.rise == 0 {
        err(h.key("rise"), "must be at least 1".into());
    }
    if hc.fall == 0 {
        err(h.key("fall"), "must be at least 1".into());
    }
    if hc.port == 0 {
        err(h.key("port"), "must not be 0".into());
    }
    if hc.ehlo_name.is_empty() || hc.ehlo_name.contains(|c: char| c.is_whitespace()) {
        err(
            h.key("ehlo_name"),
            format!("{:?} is not a valid EHLO name", hc.ehlo_name),
        );
    }

    let f = root.key("feedback");
    let fc = &cfg.feedback;
    if fc.interval.0.is_zero() {
        err(f.key("interval"), "must be greater than zero".into());
    }
    // Written so that NaN fails every check.
    if fc.high_ratio.is_nan() || fc.high_ratio <= 1.0 {
        err(
            f.key("high_ratio"),
            format!("{} must be greater than 1", fc.high_ratio),
        );
    }
    if !(1.0..=fc.high_ratio).contains(&fc.low_ratio) {
        err(
            f.key("low_ratio"),
            format!(
                "{} must be between 1 and high_ratio ({})",
                fc.low_ratio, fc.high_ratio
            ),
        );
    }
    if fc.max_step.is_nan() || fc.max_step <= 0.0 || fc.max_step > 1.0 {
        err(
            f.key("max_step"),
            format!("{} must be in (0, 1]", fc.max_step),
        );
    }
    if fc.min_factor.is_nan() || fc.min_factor <= 0.0 || fc.min_factor > 1.0 {
        err(
            f.key("min_factor"),
            format!("{} must be in (0, 1]", fc.min_factor),
        );
    }

    if cfg.vips.is_empty() {
        err(root.key("vip"), "at least one [[vip]] is required".into());
    }
    if cfg.vips.len() > MAX_VIPS as usize {
        err(
            root.key("vip"),
            format!("{} VIPs configured; at most {MAX_VIPS}", cfg.vips.len()),
        );
    }
    let mut vip_names = HashSet::new();
    let mut listeners: HashSet<(IpAddr, u16)> = HashSet::new();
    let mut backend_names = HashSet::new();
    let mut total_backends = 0usize;
    for (vi, vip) in cfg.vips.iter().enumerate() {
        let v = root.key("vip").index(vi);
        if !valid_name(&vip.name) {
            err(v.key("name"), format!("{:?} {NAME_RULE}", vip.name));
        } else if !vip_names.insert(vip.name.as_str()) {
            err(v.key("name"), format!("duplicate VIP name {:?}", vip.name));
        }
        if vip.ports.is_empty() {
            err(v.key("ports"), "at least one port is required".into());
        }
        let mut seen = BTreeSet::new();
        for (pi, &port) in vip.ports.iter().enumerate() {
            if port == 0 {
                err(v.key("ports").index(pi), "port 0 is not valid".into());
            } else if !seen.insert(port) {
                err(
                    v.key("ports").index(pi),
                    format!("port {port} is listed twice"),
                );
            } else if !listeners.insert((vip.addr, port)) {
                err(
                    v.key("ports").index(pi),
                    format!("{}:{port} is already used by another VIP", vip.addr),
                );
            }
        }
        if !is_prime(vip.ring_size) || vip.ring_size > MAGLEV_RING_MAX {
            err(
                v.key("ring_size"),
                format!(
                    "{} is not a prime between 2 and {MAGLEV_RING_MAX} (e.g. 65537, 32771, 16381, 4093)",
                    vip.ring_size
                ),
            );
        } else {
            let need = vip.backends.len() as u32 * RING_SLOTS_PER_BACKEND;
            if vip.ring_size < need {
                err(
                    v.key("ring_size"),
                    format!(
                        "{} is too small for {} backends (at least {need}: {RING_SLOTS_PER_BACKEND} slots per backend)",
                        vip.ring_size,
                        vip.backends.len()
                    ),
                );
            }
        }
        for (ai, p) in vip.acl.iter().enumerate() {
            if p.addr.is_ipv4() != vip.addr.is_ipv4() {
                err(
                    v.key("acl").index(ai),
                    format!(
                        "prefix {p} is not of the VIP's address family ({})",
                        vip.addr
                    ),
                );
            }
        }
        if let Some(sg) = &vip.syn_guard {
            let s = v.key("syn_guard");
            if sg.rate == 0 {
                err(s.key("rate"), "must be at least 1".into());
            }
            if sg.burst == 0 {
                err(s.key("burst"), "must be at least 1".into());
            }
            if sg.prefix4 > 32 {
                err(
                    s.key("prefix4"),
                    format!("{} is out of range (0..=32)", sg.prefix4),
                );
            }
            if sg.prefix6 > 128 {
                err(
                    s.key("prefix6"),
                    format!("{} is out of range (0..=128)", sg.prefix6),
                );
            }
        }
        if vip.backends.is_empty() {
            err(
                v.key("backend"),
                format!("VIP {:?} has no [[vip.backend]]", vip.name),
            );
        }
        total_backends += vip.backends.len();
        for (bi, be) in vip.backends.iter().enumerate() {
            let b = v.key("backend").index(bi);
            if !valid_name(&be.name) {
                err(b.key("name"), format!("{:?} {NAME_RULE}", be.name));
            } else if !backend_names.insert(be.name.as_str()) {
                err(
                    b.key("name"),
                    format!(
                        "duplicate backend name {:?} (names are unique over all VIPs)",
                        be.name
                    ),
                );
            }
            if be.weight > 10_000 {
                err(
                    b.key("weight"),
                    format!("{} is out of range (0..=10000)", be.weight),
                );
            }
            match be.addr {
                IpAddr::V4(_) if cfg.dataplane.encap_src4.is_none() => err(
                    b.key("addr"),
                    format!("IPv4 backend {} needs dataplane.encap_src4", be.addr),
                ),
                IpAddr::V6(_) if cfg.dataplane.encap_src6.is_none() => err(
                    b.key("addr"),
                    format!("IPv6 backend {} needs dataplane.encap_src6", be.addr),
                ),
                _ => {}
            }
            if be.health_port == Some(0) {
                err(b.key("health_port"), "must not be 0".into());
            }
            if let Some(url) = &be.status_url {
                if !url.starts_with("http://") {
                    err(
                        b.key("status_url"),
                        format!("{url:?} must be an http:// URL"),
                    );
                }
            }
        }
    }
    if total_backends > MAX_BACKENDS as usize {
        err(
            root.key("vip"),
            format!("{total_backends} backends configured; at most {MAX_BACKENDS}"),
        );
    }
    out
}

/// Legal but worth a loud line in the log.
pub fn warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if cfg.dataplane.xdp_mode == XdpMode::Generic {
        w.push(
            "dataplane.xdp_mode = \"generic\": XDP runs in the kernel's slow skb path, not in the driver; use only where native mode is impossible"
                .to_string(),
        );
    }
    if !cfg.api.listen.ip().is_loopback() {
        w.push(format!(
            "api.listen = {} is not a loopback address: the API is reachable from the network",
            cfg.api.listen
        ));
    }
    if cfg.api.token_file.is_none() {
        w.push("api.token_file is not set: every mutating API request will be refused".into());
    }
    w
}

#[cfg(test)]
mod tests {
    use super::is_prime;

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(is_prime(2));
        assert!(!is_prime(65536));
        assert!(!is_prime(1));
        assert!(!is_prime(0));
    }
}
