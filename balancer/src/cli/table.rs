//! `balancer status` output: the API's JSON as aligned text tables.

use crate::control::Status;

fn render_rows(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

pub fn render(s: &Status) -> String {
    let mut out = String::new();
    for v in &s.vips {
        out.push_str(&format!(
            "VIP {} ({}) {} ports {} hash {} ring {} swaps {} new flows/s {:.1}{}\n",
            v.name,
            v.id,
            v.addr,
            v.ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
            v.hash,
            v.ring_size,
            v.swaps,
            v.new_flows_per_s,
            if v.table_stale {
                "  ** NO USABLE BACKEND: keeping the last table **"
            } else {
                ""
            }
        ));
        let mut rows = vec![[
            "BACKEND",
            "ADDR",
            "POOL",
            "HEALTH",
            "DRAINED",
            "WEIGHT",
            "EFFECTIVE",
            "SLOTS",
            "SHARE",
            "NEW/S",
            "QUEUE",
            "ACTIVE",
            "DETAIL",
        ]
        .map(String::from)
        .to_vec()];
        for b in &v.backends {
            let opt = |x: Option<u64>| x.map_or("-".to_string(), |x| x.to_string());
            rows.push(vec![
                b.name.clone(),
                b.addr.clone(),
                b.pool.clone().unwrap_or_else(|| "-".into()),
                b.health.clone(),
                if b.drained { "yes" } else { "no" }.into(),
                match b.override_weight {
                    Some(w) => format!("{w} (api; file {})", b.configured_weight),
                    None => b.configured_weight.to_string(),
                },
                b.effective_weight.to_string(),
                b.slots.to_string(),
                format!(
                    "{:.1}%",
                    100.0 * f64::from(b.slots) / f64::from(v.ring_size.max(1))
                ),
                format!("{:.1}", b.new_flows_per_s),
                opt(b.queue_depth),
                opt(b.active_deliveries),
                b.health_detail.clone(),
            ]);
        }
        out.push_str(&render_rows(&rows));
        out.push('\n');
    }
    let drops: Vec<String> = s.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
    out.push_str(&format!("drops: {}\n", drops.join(" ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{BackendStatus, VipStatus};

    #[test]
    fn renders_aligned_rows() {
        let s = Status {
            vips: vec![VipStatus {
                name: "smtp".into(),
                addr: "198.18.100.1".into(),
                ports: vec![25],
                hash: "maglev".into(),
                ring_size: 251,
                backends: vec![BackendStatus {
                    name: "mta-1".into(),
                    addr: "198.18.1.1".into(),
                    health: "up".into(),
                    configured_weight: 100,
                    effective_weight: 100,
                    slots: 251,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let t = render(&s);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("VIP smtp (0) 198.18.100.1 ports 25 hash maglev ring 251"));
        assert!(lines[1].starts_with("BACKEND  ADDR        "));
        assert!(lines[2].starts_with("mta-1    198.18.1.1  -     up      no       100"));
        assert!(lines[2].contains("100.0%"));
    }
}
