//! What each command does.

use std::path::Path;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use super::{ApiOpts, Cli, Command};
use crate::api::client::{self, ClientError};
use crate::config::{self, Config, ConfigError, MacSetting};
use crate::control::daemon::{kernel_mac_resolver, Daemon, DaemonError, MacResolver};
use crate::control::{MemoryDataPlane, Status};
use crate::dataplane::DataPlaneOps;

pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// The data-plane entry points the binary supplies (the XDP loader lives outside the
/// daemon's control logic).
pub struct Hooks {
    pub open_dataplane: fn(&Config) -> Result<Box<dyn DataPlaneOps + Send>, HookError>,
    pub detach: fn(&Config) -> Result<(), HookError>,
    /// Attaches the decap program; the returned closure detaches it.
    pub decap: fn(&super::DecapArgs) -> Result<DetachFn, HookError>,
    /// Runs the `nic-time` probe until its input ends.
    pub nic_time: fn(&super::NicTimeArgs) -> Result<(), HookError>,
}

/// Undoes an attachment made by a hook.
pub type DetachFn = Box<dyn FnOnce() -> Result<(), HookError> + Send>;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("{what}: {source}")]
    Hook {
        what: &'static str,
        #[source]
        source: HookError,
    },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("{0}")]
    Other(String),
}

const API_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(cli: Cli, hooks: Hooks) -> Result<(), CliError> {
    match cli.command {
        Command::CheckConfig { file } => {
            let cfg = config::load(&file)?;
            for w in config::validate::warnings(&cfg) {
                println!("warning: {}: {w}", file.display());
            }
            // Only a warning: the file may exist only on the host that runs the daemon.
            if let Some(tf) = &cfg.api.token_file {
                if let Err(e) = std::fs::read_to_string(tf) {
                    println!(
                        "warning: {}: api.token_file {}: {e} (mutating API requests would be refused)",
                        file.display(),
                        tf.display()
                    );
                }
            }
            let backends: usize = cfg.vips.iter().map(|v| v.backends.len()).sum();
            println!(
                "{}: OK ({} VIPs, {backends} backends)",
                file.display(),
                cfg.vips.len()
            );
            Ok(())
        }
        Command::Run { config, dry_run } => run_daemon(&config, dry_run, &hooks).await,
        Command::Decap(args) => {
            let undo = (hooks.decap)(&args).map_err(|source| CliError::Hook {
                what: "decap",
                source,
            })?;
            info!(iface = %args.iface, local = ?args.local, "decap attached; waiting for SIGTERM or SIGINT");
            let mut term = signal(SignalKind::terminate())
                .map_err(|e| CliError::Other(format!("signal handler: {e}")))?;
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            undo().map_err(|source| CliError::Hook {
                what: "decap detach",
                source,
            })?;
            info!(iface = %args.iface, "decap detached");
            Ok(())
        }
        Command::NicTime(args) => {
            tokio::task::block_in_place(|| (hooks.nic_time)(&args)).map_err(|source| {
                CliError::Hook {
                    what: "nic-time",
                    source,
                }
            })
        }
        Command::Detach { config } => {
            let cfg = config::load(&config)?;
            (hooks.detach)(&cfg).map_err(|source| CliError::Hook {
                what: "detach",
                source,
            })
        }
        Command::Status { api, json } => {
            let body = call(&api, "GET", "/status", None).await?;
            if json {
                println!("{body}");
            } else {
                let s: Status = serde_json::from_str(&body)
                    .map_err(|e| CliError::Other(format!("unexpected /status answer: {e}")))?;
                print!("{}", super::table::render(&s));
            }
            Ok(())
        }
        Command::Drain { name, api } => {
            println!(
                "{}",
                call(&api, "POST", &format!("/backends/{name}/drain"), Some("")).await?
            );
            Ok(())
        }
        Command::Undrain { name, api } => {
            println!(
                "{}",
                call(&api, "POST", &format!("/backends/{name}/undrain"), Some("")).await?
            );
            Ok(())
        }
        Command::Weight { name, weight, api } => {
            let body = format!("{{\"weight\": {weight}}}");
            println!(
                "{}",
                call(
                    &api,
                    "POST",
                    &format!("/backends/{name}/weight"),
                    Some(&body)
                )
                .await?
            );
            Ok(())
        }
        Command::Reload { api } => {
            println!("{}", call(&api, "POST", "/reload", Some("")).await?);
            Ok(())
        }
    }
}

/// Where the API is and which token to send, from flags or the config file.
fn api_target(opts: &ApiOpts) -> Result<(String, Option<String>), CliError> {
    let cfg = if opts.api.is_none() || opts.token_file.is_none() {
        match config::load(&opts.config) {
            Ok(c) => Some(c),
            Err(e) if opts.api.is_some() => {
                warn!(error = %e, "config unreadable; continuing without a token");
                None
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    let base = match (&opts.api, &cfg) {
        (Some(a), _) => a.trim_end_matches('/').to_string(),
        (None, Some(c)) => format!("http://{}", c.api.listen),
        (None, None) => unreachable!("config loaded when --api is absent"),
    };
    let token_file = opts
        .token_file
        .clone()
        .or_else(|| cfg.as_ref().and_then(|c| c.api.token_file.clone()));
    let token = match token_file {
        Some(p) => Some(
            std::fs::read_to_string(&p)
                .map_err(|e| CliError::Other(format!("{}: {e}", p.display())))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    Ok((base, token))
}

async fn call(
    opts: &ApiOpts,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<String, CliError> {
    let (base, token) = api_target(opts)?;
    let token = if method == "GET" { None } else { token };
    let r = client::request(
        method,
        &format!("{base}{path}"),
        token.as_deref(),
        body,
        API_TIMEOUT,
    )
    .await?;
    if r.status / 100 != 2 {
        let message = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(r.body);
        return Err(CliError::Api {
            status: r.status,
            message,
        });
    }
    Ok(r.body)
}

/// In `--dry-run`, `auto` MACs that cannot be resolved become zeros instead of an error:
/// nothing is sent anywhere.
fn dry_run_resolver() -> MacResolver {
    let kernel = kernel_mac_resolver();
    Box::new(move |dp| {
        kernel(dp).or_else(|e| {
            warn!(error = %e, "dry run: using 00:00:00:00:00:00 for unresolved MACs");
            let fixed = |m: MacSetting| match m {
                MacSetting::Fixed(m) => m,
                MacSetting::Auto => [0; 6],
            };
            Ok((fixed(dp.own_mac), fixed(dp.nexthop_mac)))
        })
    })
}

async fn run_daemon(path: &Path, dry_run: bool, hooks: &Hooks) -> Result<(), CliError> {
    let cfg = config::load(path)?;
    let (dp, resolver): (Box<dyn DataPlaneOps + Send>, MacResolver) = if dry_run {
        warn!("dry run: in-memory data plane, no packet is forwarded");
        (Box::new(MemoryDataPlane::new()), dry_run_resolver())
    } else {
        let dp = (hooks.open_dataplane)(&cfg).map_err(|source| CliError::Hook {
            what: "opening the XDP data plane",
            source,
        })?;
        (dp, kernel_mac_resolver())
    };
    // A dry run keeps no state between runs: nothing outlives it.
    let id_file = (!dry_run).then(|| cfg.dataplane.id_file.clone());
    let handle = Daemon::start(path.to_path_buf(), cfg, dp, resolver, id_file).await?;
    let io = |e: std::io::Error| CliError::Other(format!("installing signal handlers: {e}"));
    let mut hup = signal(SignalKind::hangup()).map_err(io)?;
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading config");
                // Failures are logged inside and change nothing.
                let _ = handle.daemon.reload().await;
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("stopping; the data plane keeps forwarding with the last tables (detach to remove it)");
    drop(handle);
    Ok(())
}
