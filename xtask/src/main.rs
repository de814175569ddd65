//! `cargo xtask`: the project's automation, so that a fresh Debian 12 machine needs only
//! `cargo xtask demo` and `cargo xtask test`.

mod cmd;
mod lab;
mod setup;
#[allow(dead_code)] // used by the benchmarks as they land
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
    /// Bring the lab topology (network namespaces on this host) up or down, or show it.
    Lab {
        #[command(subcommand)]
        action: LabAction,
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
        Command::Lab { action } => match action {
            LabAction::Up => lab::up(),
            LabAction::Down => lab::down(),
            LabAction::Status => lab::status(),
        },
    }
}
