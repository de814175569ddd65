//! Turns the load-balancer benchmark's measurements into `docs/benchmarks.md` and SVG
//! plots: medians per front door and level, and ratios computed pair by pair within each
//! interleaved round (so a slow moment of the machine cancels out of the ratio).

use crate::svg::{self, Series};
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    Xdp,
    Haproxy,
    Nftables,
    /// No balancer: sessions go straight to the backends (the CPU baseline).
    Direct,
}

impl Door {
    pub fn name(self) -> &'static str {
        match self {
            Door::Xdp => "XDP balancer",
            Door::Haproxy => "HAProxy 2.6",
            Door::Nftables => "nftables DNAT",
            Door::Direct => "direct (no balancer)",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Measurement {
    pub door: Door,
    pub concurrency: usize,
    pub size: usize,
    pub sessions_ok: u64,
    pub sessions_failed: u64,
    pub sessions_per_s: f64,
    pub messages_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU of the front door itself per session (XDP: program run time + daemon; HAProxy:
    /// process CPU). NaN where it has no process of its own (nftables).
    pub lb_cpu_us_per_session: f64,
    /// XDP only: the program's own run time per session (the rest is the daemon).
    pub prog_us_per_session: f64,
    /// Busy CPU of the whole host per session.
    pub host_cpu_us_per_session: f64,
    /// XDP only: program runs (packets it saw) per session.
    pub prog_runs_per_session: f64,
    /// Softirq time of the balancer NIC's NAPI polls per session (`balancer nic-time`):
    /// the same rule for every door. NaN for the direct runs.
    pub nic_us_per_session: f64,
    pub nic_packets_per_session: f64,
}

impl Measurement {
    pub fn line(&self) -> String {
        format!(
            "{:<22} {:>8.0} sess/s  p50 {:>7.2} ms  p99 {:>7.2} ms  lb {:>9.2} us/sess  nic {:>7.2} us/sess  host {:>8.1} us/sess  ok {} failed {}",
            self.door.name(),
            self.sessions_per_s,
            self.p50_ms,
            self.p99_ms,
            self.lb_cpu_us_per_session,
            self.nic_us_per_session,
            self.host_cpu_us_per_session,
            self.sessions_ok,
            self.sessions_failed
        )
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn spread(v: &[f64]) -> (f64, f64) {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    (
        f.iter().copied().fold(f64::INFINITY, f64::min),
        f.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    )
}

pub(crate) fn of(ms: &[Measurement], door: Door, conc: usize) -> Vec<&Measurement> {
    ms.iter()
        .filter(|m| m.door == door && m.concurrency == conc)
        .collect()
}

/// Front-door CPU per session by the rule: the door's own measured figure (XDP:
/// program + daemon; HAProxy: its process), or for nftables, which has no process, the
/// balancer NIC's softirq time.
pub(crate) fn door_cpu(ms: &[Measurement], door: Door, conc: usize) -> Vec<f64> {
    of(ms, door, conc)
        .iter()
        .map(|m| {
            if m.lb_cpu_us_per_session.is_finite() {
                m.lb_cpu_us_per_session
            } else {
                m.nic_us_per_session
            }
        })
        .collect()
}

/// One rule for every door: the balancer NIC's softirq time plus the CPU of the door's
/// own processes (XDP: the daemon; HAProxy: haproxy; nftables: none).
pub(crate) fn same_rule_cpu(ms: &[Measurement], door: Door, conc: usize) -> Vec<f64> {
    of(ms, door, conc)
        .iter()
        .map(|m| {
            let own = match door {
                Door::Xdp => m.lb_cpu_us_per_session - m.prog_us_per_session,
                Door::Haproxy => m.lb_cpu_us_per_session,
                Door::Nftables | Door::Direct => 0.0,
            };
            m.nic_us_per_session + own
        })
        .collect()
}

/// nftables by the old rule: the host's busy CPU over the direct run of the same round.
fn host_over_direct(ms: &[Measurement], door: Door, conc: usize) -> Vec<f64> {
    of(ms, door, conc)
        .iter()
        .zip(of(ms, Door::Direct, conc).iter())
        .map(|(m, d)| m.host_cpu_us_per_session - d.host_cpu_us_per_session)
        .collect()
}

/// Ratios `a / b` of per-round pairs.
pub(crate) fn pair_ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| y / x).collect()
}

pub fn write_lb(
    docs: &Path,
    short: &[Measurement],
    large: &[Measurement],
    workload: &str,
    stats_floor_ns: &[f64],
) -> Result<()> {
    let mut levels: Vec<usize> = short.iter().map(|m| m.concurrency).collect();
    levels.sort();
    levels.dedup();
    let doors = [Door::Xdp, Door::Haproxy, Door::Nftables, Door::Direct];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Benchmarks: the XDP front door against HAProxy and nftables\n"
    );
    let _ = writeln!(
        md,
        "Produced by `sudo cargo xtask bench lb` on {}.\n",
        machine()
    );
    let _ = writeln!(md, "Workload: {workload}. Client: the project's `smtp-load` (per-session timings); backends: three Postfix `smtp-sink`s. All front doors run on one balancer host at once, each on its own VIP; the XDP program passes the peers' VIPs to the kernel (a few tens of ns per packet, included in their figures).\n");
    let _ = writeln!(md, "CPU per session, the method (the issue's rule): XDP = the program's own run time from `kernel.bpf_stats_enabled` (run_time_ns) plus the daemon's process CPU; HAProxy = its process CPU (all threads' `schedstat`, ns); nftables, which has no process, = the softirq time of the balancer host's NIC, measured by `balancer nic-time`: raw tracepoints time every NAPI poll of the balancer's `eth0` in its namespace (`irq:softirq_entry` to `napi:napi_poll`; on a veth with XDP every received packet is handled in those polls: the XDP program, `XDP_TX`, and for passed packets conntrack, DNAT and forwarding). The same NIC figure is given for every door, and a same-rule comparison adds to it the door's own process CPU (XDP: the daemon; HAProxy: haproxy, whose TCP receive work is in the NIC figure). The older nftables estimate, host CPU over the direct run, is kept beside it. Ratios are computed pair by pair within each round, then the median and range over rounds are given.\n");
    let _ = writeln!(md, "## Short sessions (one 2 KiB message)\n");
    let _ = writeln!(md, "| concurrency | front door | sessions/s | messages/s | p50 ms | p99 ms | front-door CPU µs/session | NIC softirq µs/session | NIC packets/session | host CPU µs/session | failed |");
    let _ = writeln!(
        md,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for &c in &levels {
        for d in doors {
            let runs = of(short, d, c);
            let med = |f: fn(&Measurement) -> f64| median(runs.iter().map(|m| f(m)).collect());
            let cpu = median(door_cpu(short, d, c));
            let dash = |v: f64, prec: usize| {
                if d == Door::Direct || !v.is_finite() {
                    "-".to_string()
                } else {
                    format!("{v:.prec$}")
                }
            };
            let _ = writeln!(
                md,
                "| {c} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {:.1} | {} |",
                d.name(),
                med(|m| m.sessions_per_s),
                med(|m| m.messages_per_s),
                med(|m| m.p50_ms),
                med(|m| m.p99_ms),
                dash(cpu, 2),
                dash(med(|m| m.nic_us_per_session), 2),
                dash(med(|m| m.nic_packets_per_session), 1),
                med(|m| m.host_cpu_us_per_session),
                runs.iter().map(|m| m.sessions_failed).sum::<u64>()
            );
        }
    }
    let floor = median(stats_floor_ns.to_vec());
    let _ = writeln!(md, "\nOf the XDP figure, the program itself (BPF run time) takes, by concurrency: {}; the rest is the daemon's CPU (health checks of six backends every 250 ms, a constant per second), from its threads' `schedstat` (ns).", levels.iter().map(|&c| {
        let x = of(short, Door::Xdp, c);
        let prog = median(x.iter().map(|m| m.prog_us_per_session).collect());
        let runs = median(x.iter().map(|m| m.prog_runs_per_session).collect());
        format!("{c}: {prog:.2} µs over {runs:.1} packets ({:.0} ns per packet, {:.0} ns net of the accounting floor)", prog * 1e3 / runs, prog * 1e3 / runs - floor)
    }).collect::<Vec<_>>().join(", "));
    let _ = writeln!(md, "\nThe accounting floor: `bpf_stats` itself reads the clock around every run, and charged {} ns per run (median {floor:.0}; measured before and after the short-session runs) to a frame the program passes at its first check, run a million times through `BPF_PROG_TEST_RUN` on the lab's own program. Every per-packet figure above includes it once.", stats_floor_ns.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join(" and "));
    let _ = writeln!(md, "\n## Ratios (per-round pairs; median, [min, max])\n");
    let _ = writeln!(md, "| concurrency | HAProxy CPU / XDP CPU | nftables CPU / XDP CPU | HAProxy / XDP, same rule | nftables / XDP, same rule | nftables host-over-direct / XDP CPU | XDP sessions/s / best peer |");
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- |");
    for &c in &levels {
        let x = door_cpu(short, Door::Xdp, c);
        let h = pair_ratios(&x, &door_cpu(short, Door::Haproxy, c));
        let n = pair_ratios(&x, &door_cpu(short, Door::Nftables, c));
        let xs = same_rule_cpu(short, Door::Xdp, c);
        let hs = pair_ratios(&xs, &same_rule_cpu(short, Door::Haproxy, c));
        let ns = pair_ratios(&xs, &same_rule_cpu(short, Door::Nftables, c));
        let nd = pair_ratios(&x, &host_over_direct(short, Door::Nftables, c));
        let rate = |d| {
            of(short, d, c)
                .iter()
                .map(|m| m.sessions_per_s)
                .collect::<Vec<_>>()
        };
        let (xr, hr, nr) = (rate(Door::Xdp), rate(Door::Haproxy), rate(Door::Nftables));
        let tp: Vec<f64> = xr
            .iter()
            .zip(hr.iter().zip(&nr))
            .map(|(x, (h, n))| x / h.max(*n))
            .collect();
        let f = |v: &[f64]| {
            let (lo, hi) = spread(v);
            format!("{:.1} [{:.1}, {:.1}]", median(v.to_vec()), lo, hi)
        };
        let _ = writeln!(
            md,
            "| {c} | {} | {} | {} | {} | {} | {} |",
            f(&h),
            f(&n),
            f(&hs),
            f(&ns),
            f(&nd),
            f(&tp)
        );
    }
    let mut goals = String::new();
    crate::bench_lb_goals::write(&mut goals, docs, short, &levels, floor);
    md.push('\n');
    md.push_str(&goals);
    let _ = writeln!(md, "## Large messages\n");
    let _ = writeln!(
        md,
        "| front door | messages/s | MB/s | p50 ms | p99 ms | failed |"
    );
    let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- |");
    for d in doors {
        let runs: Vec<&Measurement> = large.iter().filter(|m| m.door == d).collect();
        let mps = median(runs.iter().map(|m| m.messages_per_s).collect());
        let size = runs.first().map(|m| m.size).unwrap_or(0) as f64;
        let _ = writeln!(
            md,
            "| {} | {mps:.1} | {:.1} | {:.1} | {:.1} | {} |",
            d.name(),
            mps * size / 1e6,
            median(runs.iter().map(|m| m.p50_ms).collect()),
            median(runs.iter().map(|m| m.p99_ms).collect()),
            runs.iter().map(|m| m.sessions_failed).sum::<u64>()
        );
    }
    let bench_dir = docs.join("bench");
    std::fs::create_dir_all(&bench_dir)?;
    let series = |f: &dyn Fn(Door, usize) -> f64, ds: &[Door]| -> Vec<Series> {
        ds.iter()
            .map(|&d| Series {
                name: d.name().to_string(),
                points: levels
                    .iter()
                    .map(|&c| (c as f64, f(d, c)))
                    .filter(|p| p.1.is_finite())
                    .collect(),
            })
            .collect()
    };
    let rate =
        |d: Door, c: usize| median(of(short, d, c).iter().map(|m| m.sessions_per_s).collect());
    std::fs::write(
        bench_dir.join("lb-sessions.svg"),
        svg::line_chart(
            "Sessions/s by concurrency",
            "concurrent sessions",
            "sessions/s",
            &series(&rate, &doors),
        ),
    )?;
    let cpu = |d: Door, c: usize| median(door_cpu(short, d, c));
    std::fs::write(
        bench_dir.join("lb-cpu.svg"),
        svg::line_chart(
            "Balancer CPU per 1,000 sessions",
            "concurrent sessions",
            "CPU ms per 1,000 sessions",
            &series(
                &|d, c| cpu(d, c),
                &[Door::Xdp, Door::Haproxy, Door::Nftables],
            ),
        ),
    )?;
    if let Some(&top) = levels.last() {
        let bars: Vec<(String, f64)> = [Door::Xdp, Door::Haproxy, Door::Nftables]
            .iter()
            .map(|&d| (d.name().to_string(), median(door_cpu(short, d, top))))
            .collect();
        std::fs::write(
            bench_dir.join("lb-cpu-bars.svg"),
            svg::bar_chart(
                &format!("Balancer CPU per session at concurrency {top}"),
                "CPU µs per session (= ms per 1,000 sessions)",
                &bars,
            ),
        )?;
    }
    let _ = writeln!(md, "\n![sessions/s](bench/lb-sessions.svg)\n\n![balancer CPU](bench/lb-cpu.svg)\n\n![balancer CPU, top level](bench/lb-cpu-bars.svg)\n");
    let _ = writeln!(
        md,
        "(CPU µs per session equals CPU ms per 1,000 sessions.)\n"
    );
    write_project_overview(docs, &bench_dir, &mut md)?;
    let _ = writeln!(md, "Other figures of the project (XDP ns/packet from `cargo xtask bench xdp`, the MTA's from `cargo xtask bench mta-ingest`) are in [benchmarks-xdp.md](benchmarks-xdp.md) and [benchmarks-mta.md](benchmarks-mta.md).");
    std::fs::write(docs.join("benchmarks.md"), md)?;
    println!("bench lb: wrote {}", docs.join("benchmarks.md").display());
    Ok(())
}

/// Rows `| label | number | ...` of the first markdown table in `text` whose header
/// starts with `first_header`: (label, value of column `col`).
pub(crate) fn table_rows(
    text: &str,
    first_header: &str,
    label_cols: &[usize],
    col: usize,
) -> Vec<(String, f64)> {
    let mut rows = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if !line.trim_start().starts_with('|') {
            if inside {
                break;
            }
            continue;
        }
        if !inside {
            inside = cells.first() == Some(&first_header);
            continue;
        }
        let value = cells
            .get(col)
            .and_then(|v| v.trim_end_matches('x').parse::<f64>().ok());
        if let Some(v) = value {
            let label: Vec<&str> = label_cols
                .iter()
                .filter_map(|&c| cells.get(c).copied())
                .collect();
            rows.push((label.join(", "), v));
        }
    }
    rows
}

/// Charts the other benchmarks' published figures (XDP ns/packet, MTA ingest ratio) so
/// that this page shows where the whole project stands.
fn write_project_overview(docs: &Path, bench_dir: &Path, md: &mut String) -> Result<()> {
    let _ = writeln!(md, "## Where the project stands\n");
    if let Ok(xdp) = std::fs::read_to_string(docs.join("benchmarks-xdp.md")) {
        // The program's own cases; the floors, raw single runs and memory references
        // have their own scales.
        let rows: Vec<(String, f64)> = table_rows(&xdp, "case", &[0], 1)
            .into_iter()
            .filter(|(l, _)| {
                !l.starts_with("reference") && !l.contains("floor") && !l.contains("raw")
            })
            .collect();
        if !rows.is_empty() {
            std::fs::write(
                bench_dir.join("xdp-ns.svg"),
                svg::bar_chart(
                    "XDP program, ns per packet (BPF_PROG_TEST_RUN)",
                    "ns per packet",
                    &rows,
                ),
            )?;
            let _ = writeln!(md, "![XDP ns/packet](bench/xdp-ns.svg)\n");
        }
    }
    if write_mta_ingest_chart(docs, bench_dir)? {
        let _ = writeln!(md, "![MTA ingest ratio](bench/mta-ingest.svg)\n");
    }
    Ok(())
}

/// Draws `bench/mta-ingest.svg` from the ratio column of `benchmarks-mta.md`; `false`
/// when that page has no ingest table yet. `bench mta-ingest` calls it too, so the chart
/// never lags behind its page.
pub fn write_mta_ingest_chart(docs: &Path, bench_dir: &Path) -> Result<bool> {
    let Ok(mta) = std::fs::read_to_string(docs.join("benchmarks-mta.md")) else {
        return Ok(false);
    };
    let rows: Vec<(String, f64)> = table_rows(&mta, "payload", &[0, 1], 5)
        .into_iter()
        .map(|(l, v)| (format!("{l} sessions"), v))
        .collect();
    if rows.is_empty() {
        return Ok(false);
    }
    std::fs::create_dir_all(bench_dir)?;
    std::fs::write(
        bench_dir.join("mta-ingest.svg"),
        svg::bar_chart(
            "mta-worker accepted msg/s, × Postfix (same run)",
            "ratio to Postfix",
            &rows,
        ),
    )?;
    Ok(true)
}

/// One line describing this machine, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cores} × {cpu}, Linux {}", kernel.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ignores_nan_and_averages_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, f64::NAN, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn reads_the_other_benchmarks_tables() {
        let md = "text\n\n| case | ns/packet | what |\n| --- | ---: | --- |\n| established | 46 | x |\n| SYN | 277 | y |\n\nafter\n| case | 1 |\n";
        assert_eq!(
            table_rows(md, "case", &[0], 1),
            vec![
                ("established".to_string(), 46.0),
                ("SYN".to_string(), 277.0)
            ]
        );
        let mta = "| payload | sessions | m | w | p | ratio |\n|---:|---:|\n| 2 KiB | 20 | 1 | 2 | 3 | 13.7x |\n";
        assert_eq!(
            table_rows(mta, "payload", &[0, 1], 5),
            vec![("2 KiB, 20".to_string(), 13.7)]
        );
    }

    #[test]
    fn ratios_pair_rounds() {
        assert_eq!(
            pair_ratios(&[1.0, 2.0], &[100.0, 300.0]),
            vec![100.0, 150.0]
        );
    }
}
