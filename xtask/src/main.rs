//! `cargo xtask`: the project's automation, so that a fresh Debian 12 machine needs only
//! `cargo xtask demo` and `cargo xtask test`.

mod bench_lb;
mod bench_lb_goals;
mod bench_lb_probe;
mod bench_mta;
mod bench_relay;
mod bench_report;
mod bench_xdp;
mod cmd;
mod demo;
mod interrupt;
mod lab;
mod setup;
mod svg;
mod test;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Automation for the SMTP XDP balancer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install every prerequisite (Debian packages, nightly rust-src, bpf-linker); idempotent.
    Setup {
        /// Only report what is missing; install nothing.
        #[arg(long)]
        check: bool,
    },
    /// Build the workspace (and with it the eBPF programs).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Run the whole suite: fmt, clippy, unit tests, BPF TestRun tests, namespace tests.
    Test,
    /// Build, bring up the lab, send mail through the VIP with a live summary, kill a
    /// backend, drain another, report, tear down.
    Demo,
    /// Bring the lab topology (network namespaces on this host) up or down, or show it.
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Benchmarks against a peer in the same run (not timed tests); results go to docs/.
    Bench {
        #[command(subcommand)]
        which: BenchWhich,
    },
}

#[derive(Subcommand)]
enum BenchWhich {
    /// The XDP front door against HAProxy and nftables DNAT in the lab, interleaved rounds.
    Lb {
        /// Interleaved rounds (A B C A B C ...); medians and per-round ratios are reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Sessions per run.
        #[arg(long, default_value_t = 2000)]
        sessions: usize,
        /// Concurrency levels, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,50,200")]
        levels: Vec<usize>,
    },
    /// ns/packet of the balancer XDP program (BPF_PROG_TEST_RUN) beside a minimal peer.
    Xdp {
        /// Rounds per case; the median is reported.
        #[arg(long, default_value_t = 5)]
        rounds: u32,
        /// Program runs per round.
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
    },
    /// mta-worker outbound relay vs a private Postfix relaying to the same smtp-sink.
    MtaRelay {
        /// Messages per run.
        #[arg(long, default_value_t = 20_000)]
        messages: u64,
        /// smtp-source sessions.
        #[arg(long, default_value_t = 20)]
        sessions: u64,
        /// Rounds (median reported).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Messages queued for a suspended domain in the RSS/recovery measurement.
        #[arg(long, default_value_t = 1_000_000)]
        queued: u64,
    },
    /// mta-worker inbound vs a private Postfix instance, both durable (smtp-source).
    MtaIngest {
        /// Interleaved rounds per load shape.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
}

#[derive(Subcommand)]
enum LabAction {
    Up,
    Down,
    Status,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup { check } => setup::run(check),
        Command::Build { release } => {
            setup::ensure()?;
            let mut args = vec!["build", "--workspace"];
            if release {
                args.push("--release");
            }
            cmd::cargo(&args)
        }
        Command::Test => test::run(),
        Command::Demo => demo::run(),
        Command::Lab { action } => match action {
            LabAction::Up => lab::up(),
            LabAction::Down => lab::down(),
            LabAction::Status => lab::status(),
        },
        Command::Bench { which } => match which {
            BenchWhich::Lb {
                rounds,
                sessions,
                levels,
            } => bench_lb::run(bench_lb::Options {
                rounds,
                sessions,
                levels,
                ..bench_lb::Options::default()
            }),
            BenchWhich::MtaRelay {
                messages,
                sessions,
                rounds,
                queued,
            } => bench_relay::run(bench_relay::Options {
                messages,
                sessions,
                rounds,
                queued,
            }),
            BenchWhich::MtaIngest { rounds } => bench_mta::run(bench_mta::Options { rounds }),
            BenchWhich::Xdp { rounds, repeat } => {
                bench_xdp::run(bench_xdp::Options { rounds, repeat })
            }
        },
    }
}
