//! Prometheus text exposition of the daemon's state and the data plane's counters.

use std::fmt::Write;

use crate::control::Status;

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Renders `status` (whose counters were read from the data plane just before).
pub fn render(status: &Status) -> String {
    let mut o = String::new();
    family(
        &mut o,
        "balancer_packets_total",
        "counter",
        "Packets seen by the XDP program, by outcome.",
    );
    for (name, v) in &status.counters {
        let _ = writeln!(o, "balancer_packets_total{{outcome=\"{name}\"}} {v}");
    }
    type VipField = fn(&crate::control::VipStatus) -> u64;
    let per_vip: [(&str, &str, &str, VipField); 5] = [
        (
            "balancer_vip_packets_total",
            "counter",
            "Packets forwarded per VIP.",
            |v| v.packets,
        ),
        (
            "balancer_vip_bytes_total",
            "counter",
            "Bytes forwarded per VIP.",
            |v| v.bytes,
        ),
        (
            "balancer_vip_new_flows_total",
            "counter",
            "New flows (SYNs steered by the ring) per VIP.",
            |v| v.new_flows,
        ),
        (
            "balancer_vip_table_stale",
            "gauge",
            "1 while no backend is usable and the last table is kept.",
            |v| u64::from(v.table_stale),
        ),
        (
            "balancer_vip_table_swaps_total",
            "counter",
            "Table swaps since the daemon started.",
            |v| v.swaps,
        ),
    ];
    for (name, kind, help, f) in per_vip {
        family(&mut o, name, kind, help);
        for v in &status.vips {
            let _ = writeln!(o, "{name}{{vip=\"{}\"}} {}", esc(&v.name), f(v));
        }
    }
    type Field = fn(&crate::control::BackendStatus) -> String;
    let per_backend: [(&str, &str, &str, Field); 8] = [
        (
            "balancer_backend_up",
            "gauge",
            "1 when the backend passes health checks (unknown counts as up).",
            |b| u8::from(b.health != "down").to_string(),
        ),
        (
            "balancer_backend_drained",
            "gauge",
            "1 when drained by the operator.",
            |b| u8::from(b.drained).to_string(),
        ),
        (
            "balancer_backend_configured_weight",
            "gauge",
            "Weight from the config file.",
            |b| b.configured_weight.to_string(),
        ),
        (
            "balancer_backend_effective_weight",
            "gauge",
            "Weight the ring is built from.",
            |b| b.effective_weight.to_string(),
        ),
        (
            "balancer_backend_ring_slots",
            "gauge",
            "Slots held in the VIP's current table.",
            |b| b.slots.to_string(),
        ),
        (
            "balancer_backend_packets_total",
            "counter",
            "Packets forwarded to the backend.",
            |b| b.packets.to_string(),
        ),
        (
            "balancer_backend_bytes_total",
            "counter",
            "Bytes forwarded to the backend.",
            |b| b.bytes.to_string(),
        ),
        (
            "balancer_backend_new_flows_total",
            "counter",
            "New flows steered to the backend.",
            |b| b.new_flows.to_string(),
        ),
    ];
    for (name, kind, help, f) in per_backend {
        family(&mut o, name, kind, help);
        for v in &status.vips {
            for b in &v.backends {
                let _ = writeln!(
                    o,
                    "{name}{{vip=\"{}\",backend=\"{}\"}} {}",
                    esc(&v.name),
                    esc(&b.name),
                    f(b)
                );
            }
        }
    }
    o
}
