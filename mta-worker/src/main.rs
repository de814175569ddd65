//! `mta-worker`: run the worker, or check a config file.

use anyhow::Context;
use clap::{Parser, Subcommand};
use mta_worker::config::Config;
use mta_worker::server::{self, Listeners};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "mta-worker",
    about = "SMTP worker: durable spool, per-ISP delivery"
)]
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
            let cfg = Config::load(&file)?;
            if let Some(ob) = &cfg.outbound {
                mta_worker::shaping::load(&ob.file)?;
                println!("{}: ok", ob.file.display());
            }
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
    let outbound = cfg.outbound.clone();
    let hostname = cfg.hostname.clone();
    let shared = server::build_shared(cfg).context("starting")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(ob) = outbound {
        start_outbound(&shared, &ob, hostname, stop_rx).await?;
    }
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    };
    server::run(shared.clone(), listeners, shutdown, Duration::from_secs(30)).await;
    let _ = stop_tx.send(true);
    if let Some(d) = shared.delivery.get() {
        d.join().await;
    }
    Ok(())
}

/// Starts the delivery side on the spool: subscribe to new messages first, then queue what
/// the spool already holds (a message accepted in between is reported twice and
/// de-duplicated by id); serve the queue admin API; re-read the outbound file on SIGHUP.
async fn start_outbound(
    shared: &std::sync::Arc<mta_worker::state::Shared>,
    ob: &mta_worker::config::OutboundConfig,
    hostname: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    use mta_worker::{delivery, shaping};
    let compiled = shaping::load(&ob.file)?;
    let handle_cfg = shaping::ShapingHandle::new(compiled);
    let handle = delivery::Dispatcher::start(
        delivery::Options {
            hostname,
            clock: std::sync::Arc::new(shaping::SystemClock),
        },
        handle_cfg.clone(),
        std::sync::Arc::new(shared.spool.clone()),
        stop.clone(),
    )?;
    handle.follow(shared.spool.subscribe());
    let recovered = handle.recover(&shared.spool);
    tracing::info!(recovered, file = %ob.file.display(), "outbound delivery started");
    let token = match &ob.token_file {
        Some(p) => Some(
            delivery::admin::load_token(p)
                .with_context(|| format!("outbound.token_file {}", p.display()))?,
        ),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(ob.admin_listen)
        .await
        .with_context(|| format!("outbound.admin_listen {}", ob.admin_listen))?;
    tracing::info!(addr = %ob.admin_listen, "queue admin HTTP listening");
    let app = delivery::admin::router(handle.clone(), token);
    let mut stop_http = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_http.wait_for(|s| *s).await;
            })
            .await;
    });
    let path = ob.file.clone();
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            match handle_cfg.reload(&path) {
                Ok(()) => tracing::info!(file = %path.display(), "outbound config reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "outbound config reload refused; keeping the old one")
                }
            }
        }
    });
    let _ = shared.delivery.set(handle);
    Ok(())
}
