//! `cargo xtask bench xdp`: ns/packet of the balancer XDP program under
//! `BPF_PROG_TEST_RUN`, next to its peer (`tx_peer`, a minimal IPIP forwarder) in the
//! same run. The measuring code is the ignored test `balancer/tests/priv_bench.rs`
//! (release build, root); this collects its `BENCH` lines, prints a table and writes
//! `docs/benchmarks-xdp.md`.

use crate::cmd;
use anyhow::{bail, Context, Result};
use std::{collections::BTreeMap, fmt::Write as _, process::Command};

pub struct Options {
    pub rounds: u32,
    pub repeat: u32,
}

/// (key printed by the bench, row label, what it measures)
const ROWS: &[(&str, &str, &str)] = &[
    (
        "established_net",
        "established-flow packet",
        "flow-table hit, 118-byte frame, encapsulated, XDP_TX; single-run minus floor",
    ),
    (
        "syn_net",
        "SYN to a VIP (tuple recorded)",
        "SYN retransmit: allowlist/guard off, ring pick, no LRU write, XDP_TX; single-run minus floor",
    ),
    (
        "syn_new_net",
        "SYN of a new flow",
        "new tuple every run: ring pick and LRU insert, XDP_TX; single-run minus floor",
    ),
    (
        "established_cold_net",
        "established-flow packet, caches cold",
        "the same after 32 MiB written between runs (as SMTP processes do between two packets of a flow in the lab); minus the floor measured the same way",
    ),
    (
        "pass_net",
        "non-VIP pass, single run",
        "the non-VIP pass above by the single-run method (tuple seen before): single-run minus floor",
    ),
    (
        "new_tuple_pass_net",
        "non-VIP pass, new tuple every run",
        "the same, but a tuple never seen: the FLOWS lookup starts at a cache-cold bucket; single-run minus floor",
    ),
    (
        "non_vip_pass",
        "non-VIP pass",
        "TCP to a non-VIP address (FLOWS and VIPS misses), XDP_PASS; repeat method, floor not subtracted",
    ),
    (
        "other_port_pass",
        "pass, port no VIP uses",
        "TCP to port 22: the port bitmap passes it before any hash lookup; repeat method",
    ),
    (
        "runt_drop",
        "floor, repeat method",
        "runt dropped at the first header",
    ),
    (
        "established_single",
        "established, raw single run",
        "as measured, kernel timer overhead included",
    ),
    (
        "tx_peer_single",
        "peer: minimal IPIP forwarder, raw single run",
        "tx_peer on the same frame: head grow, fixed header, XDP_TX",
    ),
    (
        "single_floor",
        "floor, single-run method",
        "runt dropped at the first header by the balancer; subtracted from the net rows",
    ),
    (
        "mem_latency_1mib",
        "reference: dependent load, 1 MiB",
        "user-space pointer chase over 1 MiB (one pointer per cache line, random cycle)",
    ),
    (
        "mem_latency_16mib",
        "reference: dependent load, 16 MiB",
        "the same over 16 MiB: the size of FLOWS' bucket array at the default 1M entries",
    ),
    (
        "mem_latency_256mib",
        "reference: dependent load, 256 MiB",
        "the same over 256 MiB: beyond every cache and the TLB's reach",
    ),
];

pub fn run(opts: Options) -> Result<()> {
    if !cmd::is_root() {
        bail!("the XDP benchmark loads BPF programs: run it as root");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args = [
        "test",
        "-p",
        "balancer",
        "--release",
        "--features",
        "balancer/privileged",
        "--test",
        "priv_bench",
        "--",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ];
    println!("==> cargo {}", args.join(" "));
    let out = Command::new(&cargo)
        .args(args)
        .current_dir(cmd::root())
        .env("PATH", cmd::path_env())
        .env("BENCH_ROUNDS", opts.rounds.to_string())
        .env("BENCH_REPEAT", opts.repeat.to_string())
        .output()
        .context("could not start cargo")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        bail!("the benchmark failed ({})", out.status);
    }
    let figures: BTreeMap<&str, f64> = stdout
        .lines()
        .filter_map(|l| {
            // The first line shares its start with libtest's `test ... ` prefix.
            let mut w = l[l.find("BENCH ")? + 6..].split_whitespace();
            Some((w.next()?, w.next()?.parse().ok()?))
        })
        .collect();
    if figures.is_empty() {
        bail!("the benchmark printed no figures:\n{stdout}");
    }
    let table = table(&figures);
    println!("\n{table}");
    let doc = report(&opts, &table, &figures);
    let path = cmd::root().join("docs/benchmarks-xdp.md");
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    println!("written to {}", path.display());
    Ok(())
}

fn table(figures: &BTreeMap<&str, f64>) -> String {
    let mut t = String::from("| case | ns/packet | what is measured |\n| --- | ---: | --- |\n");
    for (key, label, what) in ROWS {
        if let Some(v) = figures.get(key) {
            let _ = writeln!(t, "| {label} | {v:.0} | {what} |");
        }
    }
    t
}

fn machine() -> String {
    let cpu = cmd::output("lscpu", &[])
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = cmd::output("uname", &["-r"]).unwrap_or_default();
    let virt = cmd::output("systemd-detect-virt", &[]).unwrap_or_else(|| "none".into());
    // Other work on the machine moves these figures; say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{cpu}, {cores} CPUs, virtualisation: {}, kernel {}, load average at the end {}",
        virt.trim(),
        kernel.trim(),
        load.join(" ")
    )
}

fn report(opts: &Options, table: &str, figures: &BTreeMap<&str, f64>) -> String {
    let f = |k: &str| figures.get(k).copied().unwrap_or(f64::NAN);
    let date = cmd::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    format!(
        "# XDP data plane: ns/packet\n\n\
         Generated by `cargo xtask bench xdp` on {date_t}.\n\n\
         - Machine: {machine}\n\
         - Command: `sudo cargo xtask bench xdp --rounds {rounds} --repeat {repeat}`\n\
         - Method (`balancer/tests/priv_bench.rs`): a `BPF_PROG_TEST_RUN` with a repeat \
         count reuses one buffer, so from its second run an encapsulating program sees its \
         own IPIP output (live-frame mode recycles pages without copying the input again: \
         same effect, checked with the counters). Frames the program leaves untouched are \
         timed with {repeat} runs per syscall, median of {rounds} rounds. Frames it rewrites \
         are timed one run per syscall on a fresh copy (median of 100,000 interleaved runs per \
         case); the kernel's timer overhead is in each such run, so the same method on a runt \
         dropped at the first header (the floor) is subtracted, and `tx_peer`, a minimal \
         IPIP forwarder, is measured the same way as the peer.\n\n\
         {table}\n\
         Goals from the design: under 60 ns for an established flow and under 120 ns for a \
         SYN. The SYN row that compares with Katran's `TestRun` perf mode (one packet \
         repeated) is the recorded-tuple one. A SYN of a new flow costs {syn_extra:.0} ns \
         more: its tuple's FLOWS bucket is not in cache. The same miss alone, on a pass \
         with a never-seen tuple, costs {cold:.0} ns over a known tuple, the order of one \
         dependent load over 16 MiB ({m16:.0} ns; {m1:.0} ns over 1 MiB), which is the size \
         of the bucket array of the default 1M-entry table. No table that holds a \
         production number of flows stays in cache, so on this machine a new flow costs \
         at least one such load whatever the program does. See `docs/dataplane.md` \
         (Performance).\n",
        syn_extra = f("syn_new_net") - f("syn_net"),
        cold = f("new_tuple_pass_net") - f("pass_net"),
        m16 = f("mem_latency_16mib"),
        m1 = f("mem_latency_1mib"),
        date_t = date.trim(),
        machine = machine(),
        rounds = opts.rounds,
        repeat = opts.repeat,
    )
}
