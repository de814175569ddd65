//! `mta-worker`: run the worker, check a config file, or look at and steer the outbound
//! queues of a running worker through its admin API (`queues`).

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
    /// Show the outbound queues of a running worker (per site, source and domain), or
    /// suspend/resume/flush a domain or site, or bounce a message.
    Queues {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the API's JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<QueueAction>,
    },
}

/// How to reach the admin API: `--admin`, else the config's `[outbound] admin_listen`,
/// else the default 127.0.0.1:8026. The token comes from `--token-file`, else the
/// config's `token_file`.
#[derive(clap::Args)]
struct AdminArgs {
    /// Worker config file (reads `[outbound] admin_listen` and `token_file`).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Admin API address, e.g. 127.0.0.1:8026 (overrides the config).
    #[arg(long, global = true)]
    admin: Option<std::net::SocketAddr>,
    /// File holding the bearer token for suspend/resume/flush/bounce.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum QueueAction {
    /// Stop delivery to a domain or site until `resume`.
    Suspend(TargetArgs),
    /// Lift an operator suspension (for a site, also any adaptive suspension).
    Resume(TargetArgs),
    /// Make every scheduled message of a domain or site due now.
    Flush(TargetArgs),
    /// Bounce a queued message now (DSN to its sender) and remove it.
    Bounce {
        /// Queue id (16 hex digits).
        queue_id: String,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct TargetArgs {
    #[arg(long)]
    domain: Option<String>,
    #[arg(long)]
    site: Option<String>,
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
        Command::Queues {
            admin,
            json,
            action,
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(queues(admin, json, action))
        }
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            mta_worker::log::init_tracing(cfg.log.level.as_deref());
            tokio::runtime::Runtime::new()?.block_on(run(cfg))
        }
    }
}

async fn queues(args: AdminArgs, json: bool, action: Option<QueueAction>) -> anyhow::Result<()> {
    use mta_worker::delivery::admin_client::{AdminClient, TargetRef};
    let ob = match &args.config {
        Some(p) => Some(Config::load(p)?.outbound.with_context(|| {
            format!(
                "{}: no [outbound] table, so the worker serves no queue admin API",
                p.display()
            )
        })?),
        None => None,
    };
    let addr = args
        .admin
        .or(ob.as_ref().map(AdminClient::address_of))
        .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 8026)));
    let token_file = args
        .token_file
        .or(ob.and_then(|o| o.token_file))
        .filter(|_| action.is_some());
    let token = match token_file {
        Some(p) => Some(
            mta_worker::delivery::admin::load_token(&p)
                .with_context(|| format!("token file {}", p.display()))?
                .to_string(),
        ),
        None => None,
    };
    let client = AdminClient::new(addr, token);
    let target = |t: TargetArgs| {
        t.domain
            .map(TargetRef::Domain)
            .or(t.site.map(TargetRef::Site))
            .context("give --domain or --site")
    };
    let answer = match action {
        None => {
            let report = client.queues().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", mta_worker::delivery::admin_view::render(&report));
            }
            return Ok(());
        }
        Some(QueueAction::Suspend(t)) => client.suspend(&target(t)?).await?,
        Some(QueueAction::Resume(t)) => client.resume(&target(t)?).await?,
        Some(QueueAction::Flush(t)) => client.flush(&target(t)?).await?,
        Some(QueueAction::Bounce { queue_id }) => client.bounce(&queue_id).await?,
    };
    print!("{answer}");
    Ok(())
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&cfg).await?;
    let outbound = cfg.outbound.clone();
    let hostname = cfg.hostname.clone();
    let shared = server::build_shared(cfg).context("starting")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let outbound_cfg = match outbound {
        Some(ob) => Some(start_outbound(&shared, &ob, hostname, stop_rx).await?),
        None => None,
    };
    on_hangup(shared.clone(), outbound_cfg)?;
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
    shared.reception.flush();
    Ok(())
}

/// Starts the delivery side on the spool: subscribe to new messages first, then queue what
/// the spool already holds (a message accepted in between is reported twice and
/// de-duplicated by id); serve the queue admin API. Returns the outbound file and its
/// live configuration, for reloads on SIGHUP.
async fn start_outbound(
    shared: &std::sync::Arc<mta_worker::state::Shared>,
    ob: &mta_worker::config::OutboundConfig,
    hostname: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(std::path::PathBuf, mta_worker::shaping::ShapingHandle)> {
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
    let _ = shared.delivery.set(handle);
    Ok((ob.file.clone(), handle_cfg))
}

/// SIGHUP, as operators send it after `logrotate`: the reception and delivery logs go on
/// in new files at their configured paths, and the outbound file is read again (a bad one
/// is refused and the old configuration kept). Installed whether or not there is an
/// outbound side, so that a HUP never kills the worker.
fn on_hangup(
    shared: std::sync::Arc<mta_worker::state::Shared>,
    outbound: Option<(std::path::PathBuf, mta_worker::shaping::ShapingHandle)>,
) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if let Err(e) = shared.reception.reopen() {
                tracing::error!(error = %e, "reception log not reopened; still writing the old file");
            }
            if let Some(d) = shared.delivery.get() {
                if let Err(e) = d.shared.log.reopen() {
                    tracing::error!(error = %e, "delivery log not reopened; still writing the old file");
                }
            }
            if let Some((path, cfg)) = &outbound {
                match cfg.reload(path) {
                    Ok(()) => tracing::info!(file = %path.display(), "outbound config reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "outbound config reload refused; keeping the old one")
                    }
                }
            }
        }
    });
    Ok(())
}
