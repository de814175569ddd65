//! `mta-worker`: run the worker, or check a config file.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mta_worker::config::Config;
use mta_worker::server::{self, Listeners};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "mta-worker", about = "SMTP worker: durable inbound spool")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGINT/SIGTERM.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a config file and exit (non-zero with file:line: field: message on error).
    CheckConfig { file: PathBuf },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::CheckConfig { file } => {
            Config::load(&file)?;
            println!("{}: ok", file.display());
            Ok(())
        }
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            mta_worker::log::init_tracing(cfg.log.level.as_deref());
            tokio::runtime::Runtime::new()?.block_on(run(cfg))
        }
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&cfg).await?;
    let shared = server::build_shared(cfg).context("starting")?;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    server::run(shared, listeners, shutdown, Duration::from_secs(30)).await;
    Ok(())
}
