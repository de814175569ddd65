//! `cargo xtask bench mta-relay`: end-to-end relay throughput and latency of mta-worker
//! (smtp-source → worker → smtp-sink) beside a private stock Postfix relaying to the same
//! kind of sink, in the same run; then recovery time and RSS of a large queue held for a
//! suspended domain. The measurements live in `mta-worker/tests/outbound_bench.rs`
//! (ignored tests, each run here in its own release process); this file drives them and
//! writes the section between markers in `docs/benchmarks-mta.md`.

use crate::cmd;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::process::Command;

pub struct Options {
    pub messages: u64,
    pub sessions: u64,
    pub rounds: u32,
    pub queued: u64,
}

const BEGIN: &str = "<!-- mta-relay:begin -->";
/// The two load shapes, by index.
const SHAPES: [&str; 2] = ["a connection per message", "sessions kept open (-d)"];
const END: &str = "<!-- mta-relay:end -->";

/// Runs one ignored benchmark test and returns its `BENCH` line.
fn run_bench(test: &str, env: &[(&str, String)]) -> Result<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(cmd::root())
        .env("PATH", cmd::path_env())
        .args([
            "test",
            "--release",
            "-q",
            "-p",
            "mta-worker",
            "--test",
            "outbound_bench",
            "--",
            "--ignored",
            "--exact",
            test,
            "--nocapture",
        ]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().with_context(|| format!("running {test}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{test} failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH ").map(str::to_string))
        .with_context(|| format!("{test} printed no BENCH line"))
}

/// A number field of the flat JSON object the benchmarks print.
fn num(json: &str, key: &str) -> f64 {
    json.split(&format!("\"{key}\":"))
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub fn run(o: Options) -> Result<()> {
    println!("building the benchmark (release)...");
    cmd::cargo(&[
        "test",
        "--release",
        "-p",
        "mta-worker",
        "--test",
        "outbound_bench",
        "--no-run",
    ])?;
    let root = cmd::is_root();
    // Two load shapes, interleaved: a connection per message (smtp-source's default)
    // and sessions kept open for their messages (`-d`, as the ingest bench runs).
    let mut worker: [Vec<String>; 2] = Default::default();
    let mut postfix: [Vec<String>; 2] = Default::default();
    for r in 1..=o.rounds {
        for (shape, reuse) in ["0", "1"].into_iter().enumerate() {
            let env = vec![
                ("BENCH_MESSAGES", o.messages.to_string()),
                ("BENCH_SESSIONS", o.sessions.to_string()),
                ("BENCH_REUSE", reuse.to_string()),
            ];
            let w = run_bench("bench_worker_relay", &env)?;
            println!("round {r} {} mta-worker: {w}", SHAPES[shape]);
            worker[shape].push(w);
            if root {
                let p = run_bench("bench_postfix_relay", &env)?;
                println!("round {r} {} postfix:    {p}", SHAPES[shape]);
                postfix[shape].push(p);
            } else {
                println!("not root: the Postfix peer is skipped");
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("mta-relay-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let denv = vec![
        ("BENCH_DIR", dir.display().to_string()),
        ("BENCH_QUEUED", o.queued.to_string()),
    ];
    let fill = run_bench("bench_fill_spool", &denv);
    let rss = fill
        .as_ref()
        .ok()
        .map(|_| run_bench("bench_queued_rss", &denv));
    let _ = std::fs::remove_dir_all(&dir);
    let fill = fill?;
    let rss = rss.expect("ran after fill")?;
    println!("fill: {fill}\nrss:  {rss}");

    let col = |v: &[String], k: &str| median(v.iter().map(|j| num(j, k)).collect());
    let mut md = String::new();
    let _ = writeln!(
        md,
        "{BEGIN}\n## Outbound relay (`cargo xtask bench mta-relay`)\n"
    );
    let _ = writeln!(
        md,
        "Machine: {} CPUs, kernel {}. Same run, {} round(s), median per cell. Load: `smtp-source -s {} -m {} -l 2048`, with and without `-d`,\n\
         into the relay on loopback; both relays deliver to their own `smtp-sink` on 127.0.0.x (no TLS).\n\
         mta-worker: inbound server + durable spool + outbound dispatcher in one process, transport map to the sink,\n\
         20 connections, 1000 messages per connection. Postfix: a private instance with Debian's master.cf and\n\
         default tuning, `relayhost` = the sink. Latency = reception (250 after the durable write) to the sink's 250:\n\
         mta-worker from its delivery log, Postfix from its `delay=` log field.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        cmd::output("uname", &["-r"]).unwrap_or_default().trim(),
        o.rounds,
        o.sessions,
        o.messages
    );
    let _ = writeln!(md, "| load | relay | delivered msg/s | p50 250→delivery ms | p99 ms | peak RSS MiB |\n|---|---|---:|---:|---:|---:|");
    for (shape, name) in SHAPES.iter().enumerate() {
        let (w, p) = (&worker[shape], &postfix[shape]);
        let _ = writeln!(
            md,
            "| {name} | mta-worker | {:.0} | {:.0} | {:.0} | {:.1} |",
            col(w, "msgs_per_s"),
            col(w, "p50_ms"),
            col(w, "p99_ms"),
            col(w, "peak_rss_kb") / 1024.0
        );
        if p.is_empty() {
            let _ = writeln!(md, "| {name} | Postfix | not run (needs root) | | | |");
        } else {
            let _ = writeln!(
                md,
                "| {name} | Postfix | {:.0} | {:.0} | {:.0} | |",
                col(p, "msgs_per_s"),
                col(p, "p50_ms"),
                col(p, "p99_ms")
            );
        }
    }
    if !postfix[0].is_empty() {
        // Per-round pairs, then the median, like the other benches.
        let ratios = |shape: usize| {
            let r: Vec<f64> = worker[shape]
                .iter()
                .zip(&postfix[shape])
                .map(|(w, p)| num(w, "msgs_per_s") / num(p, "msgs_per_s"))
                .collect();
            let (lo, hi) = r
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
            format!("{:.1}x [{lo:.1}, {hi:.1}]", median(r))
        };
        let _ = writeln!(
            md,
            "\nRatio mta-worker / Postfix delivered msg/s (median of the per-round ratios [min, max]): {}: {}; {}: {}.",
            SHAPES[0],
            ratios(0),
            SHAPES[1],
            ratios(1)
        );
        let _ = writeln!(
            md,
            "\nReading the numbers: Postfix delivers at about the same rate in both shapes (its queue manager\n\
             and per-message queue files set it). With a connection per message the worker is bound by the\n\
             inbound side: each of the 20 concurrent sessions spends about seven round trips (connect, greeting,\n\
             EHLO, MAIL, RCPT, DATA, QUIT) plus the wait for its group commit on every message, with the CPUs\n\
             not full; the outbound side reuses its 20 connections in both shapes."
        );
    }
    let _ = writeln!(
        md,
        "\nQueued for a suspended domain: {} messages (1 KiB each) stored in {:.1} s, then in a fresh process\n\
         the spool is opened ({:.2} s) and every message queued ({:.2} s): recovery {:.2} s.\n\
         RSS: {:.1} MiB at start, {:.1} MiB after opening the spool (its index), {:.1} MiB with everything queued,\n\
         peak {:.1} MiB. Per message: spool index {:.0} B, outbound queue {:.0} B.\n",
        num(&rss, "messages"),
        num(&fill, "seconds"),
        num(&rss, "spool_open_s"),
        num(&rss, "enqueue_s"),
        num(&rss, "recovery_s"),
        num(&rss, "rss_start_kb") / 1024.0,
        num(&rss, "rss_after_spool_open_kb") / 1024.0,
        num(&rss, "rss_after_enqueue_kb") / 1024.0,
        num(&rss, "peak_rss_kb") / 1024.0,
        (num(&rss, "rss_after_spool_open_kb") - num(&rss, "rss_start_kb")) * 1024.0 / num(&rss, "messages"),
        (num(&rss, "rss_after_enqueue_kb") - num(&rss, "rss_after_spool_open_kb")) * 1024.0 / num(&rss, "messages"),
    );
    let _ = writeln!(md, "Raw lines:\n\n```");
    for l in worker.iter().chain(&postfix).flatten().chain([&fill, &rss]) {
        let _ = writeln!(md, "{l}");
    }
    let _ = writeln!(md, "```\n{END}");
    print!("{md}");
    let path = cmd::root().join("docs/benchmarks-mta.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{}{}", &old[..a], md.trim_end(), &old[b + END.len()..])
        }
        _ => format!("{}\n\n{}", old.trim_end(), md.trim_end()),
    };
    std::fs::write(&path, new.trim_start().to_string() + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}
