//! The async runtime around the controller: health-check tasks, the report loop, the
//! stats sampler, the feedback poller, config reloads and the API token.
//!
//! The controller sits behind one async mutex: health results, API calls, feedback and
//! reloads are applied one at a time, each as a complete step.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Mutex};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{error, info, warn};

use super::feedback::Load;
use super::ids::{IdFileError, IdState};
use super::{ControlError, Controller, ReloadSummary};
use crate::api::client;
use crate::config::resolve::ResolveError;
use crate::config::{self, Config, ConfigError, DataplaneCfg};
use crate::dataplane::DataPlaneOps;
use crate::health::{spawn_checker, CheckSpec, HealthReport};

/// Turns `auto` MACs into addresses (the kernel's tables in production).
pub type MacResolver =
    Box<dyn Fn(&DataplaneCfg) -> Result<([u8; 6], [u8; 6]), ResolveError> + Send + Sync>;

/// The production resolver: the first interface's MAC and its default gateway's.
pub fn kernel_mac_resolver() -> MacResolver {
    Box::new(|dp: &DataplaneCfg| {
        let iface = dp.interfaces.first().map(String::as_str).unwrap_or("");
        config::resolve::resolve_macs(iface, dp.own_mac, dp.nexthop_mac)
    })
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("resolving MAC addresses: {0}")]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("id file: {0}")]
    Ids(#[from] IdFileError),
    #[error("API listen address {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

struct Checker {
    spec: CheckSpec,
    generation: u64,
    handle: JoinHandle<()>,
}

/// Shared by the API handlers and the background tasks.
pub struct Daemon {
    pub ctl: Mutex<Controller>,
    config_path: PathBuf,
    resolver: MacResolver,
    health_tx: mpsc::Sender<HealthReport>,
    checkers: StdMutex<BTreeMap<String, Checker>>,
    generation: AtomicU64,
    token: RwLock<Option<String>>,
    id_file: Option<PathBuf>,
}

/// A running daemon; dropping it stops every task it started.
pub struct DaemonHandle {
    pub daemon: Arc<Daemon>,
    pub api_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Ok(mut c) = self.daemon.checkers.lock() {
            for (_, ch) in std::mem::take(&mut *c) {
                ch.handle.abort();
            }
        }
    }
}

fn check_specs(cfg: &Config) -> BTreeMap<String, CheckSpec> {
    let h = &cfg.health;
    cfg.vips
        .iter()
        .flat_map(|v| v.backends.iter())
        .map(|b| {
            let spec = CheckSpec {
                backend: b.name.clone(),
                target: SocketAddr::new(b.addr, b.health_port.unwrap_or(h.port)),
                mode: h.mode,
                ehlo_name: h.ehlo_name.clone(),
                interval: h.interval.0,
                timeout: h.timeout.0,
                fast_interval: h.fast_interval.0,
                fall: h.fall,
            };
            (b.name.clone(), spec)
        })
        .collect()
}

fn read_token(path: Option<&Path>) -> Option<String> {
    let path = path?;
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        Ok(_) => {
            error!(file = %path.display(), "API token file is empty: every mutating request will be refused");
            None
        }
        Err(e) => {
            error!(file = %path.display(), error = %e, "cannot read API token file: every mutating request will be refused");
            None
        }
    }
}

impl Daemon {
    /// Applies `cfg` to a controller over `dp`, starts health checks, the stats
    /// sampler, the feedback poller and the API (on `cfg.api.listen`). With `id_file`,
    /// ids continue the allocation saved there and every change is saved back.
    pub async fn start(
        config_path: PathBuf,
        cfg: Config,
        dp: Box<dyn DataPlaneOps + Send>,
        resolver: MacResolver,
        id_file: Option<PathBuf>,
    ) -> Result<DaemonHandle, DaemonError> {
        for w in config::validate::warnings(&cfg) {
            warn!(file = %config_path.display(), "{w}");
        }
        let (own, next) = resolver(&cfg.dataplane)?;
        let saved = match &id_file {
            Some(p) => IdState::load(p, balancer_ebpf::MAX_VIPS, balancer_ebpf::MAX_BACKENDS)?,
            None => None,
        };
        let mut ctl = match saved {
            Some(ids) => {
                info!(file = ?id_file, "continuing the saved id allocation");
                Controller::with_ids(dp, ids)
            }
            None => Controller::new(dp),
        };
        ctl.apply_config(cfg.clone(), own, next)?;
        if let Some(p) = &id_file {
            ctl.ids().save(p)?;
        }
        let listener = tokio::net::TcpListener::bind(cfg.api.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: cfg.api.listen,
                source,
            })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| DaemonError::Listen {
                addr: cfg.api.listen,
                source,
            })?;
        let (tx, rx) = mpsc::channel(1024);
        let daemon = Arc::new(Daemon {
            ctl: Mutex::new(ctl),
            config_path,
            resolver,
            health_tx: tx,
            checkers: StdMutex::new(BTreeMap::new()),
            generation: AtomicU64::new(0),
            token: RwLock::new(read_token(cfg.api.token_file.as_deref())),
            id_file,
        });
        daemon.reconcile_checkers(&cfg);
        let tasks = vec![
            tokio::spawn(daemon.clone().report_loop(rx)),
            tokio::spawn(daemon.clone().stats_loop()),
            tokio::spawn(daemon.clone().feedback_loop()),
            tokio::spawn(crate::api::serve(listener, daemon.clone())),
        ];
        info!(api = %api_addr, "balancer daemon running");
        Ok(DaemonHandle {
            daemon,
            api_addr,
            tasks,
        })
    }

    /// Re-reads the config file. An invalid file (or unresolvable MAC) changes nothing.
    pub async fn reload(&self) -> Result<ReloadSummary, DaemonError> {
        let file = self.config_path.display().to_string();
        let cfg = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                error!(file, error = %e, "reload rejected: the config is invalid; nothing changed");
                return Err(e.into());
            }
        };
        let (own, next) = (self.resolver)(&cfg.dataplane).inspect_err(|e| {
            error!(file, error = %e, "reload rejected: cannot resolve MAC addresses; nothing changed");
        })?;
        for w in config::validate::warnings(&cfg) {
            warn!(file, "{w}");
        }
        let summary = {
            let mut ctl = self.ctl.lock().await;
            let summary = blocking(|| ctl.apply_config(cfg.clone(), own, next))?;
            if let Some(p) = &self.id_file {
                // The maps already changed: failing to save is loud but not a rollback.
                if let Err(e) = ctl.ids().save(p) {
                    error!(error = %e, "cannot save the id allocation: a restart may renumber backends");
                }
            }
            summary
        };
        self.reconcile_checkers(&cfg);
        *self.token.write().unwrap_or_else(|e| e.into_inner()) =
            read_token(cfg.api.token_file.as_deref());
        info!(file, added = ?summary.backends_added, removed = ?summary.backends_removed, rebuilt = ?summary.vips_rebuilt, "config reloaded");
        Ok(summary)
    }

    /// Runs `f` on the controller under its lock. Map writes are syscalls (a ring swap
    /// is one per slot), so the work is marked as blocking: the runtime moves its other
    /// tasks (health checks, API) to another worker meanwhile.
    pub async fn with_ctl<R>(&self, f: impl FnOnce(&mut Controller) -> R) -> R {
        let mut ctl = self.ctl.lock().await;
        blocking(|| f(&mut ctl))
    }

    /// The API token, if one is configured and readable.
    pub fn token(&self) -> Option<String> {
        self.token.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reconcile_checkers(&self, cfg: &Config) {
        let want = check_specs(cfg);
        let mut checkers = self.checkers.lock().unwrap_or_else(|e| e.into_inner());
        checkers.retain(|name, c| {
            let keep = want.get(name) == Some(&c.spec);
            if !keep {
                c.handle.abort();
            }
            keep
        });
        for (name, spec) in want {
            if checkers.contains_key(&name) {
                continue;
            }
            let generation = self.generation.fetch_add(1, Ordering::Relaxed);
            let handle = spawn_checker(spec.clone(), generation, self.health_tx.clone());
            checkers.insert(
                name,
                Checker {
                    spec,
                    generation,
                    handle,
                },
            );
        }
    }

    fn is_current(&self, backend: &str, generation: u64) -> bool {
        let c = self.checkers.lock().unwrap_or_else(|e| e.into_inner());
        c.get(backend).is_some_and(|c| c.generation == generation)
    }

    async fn report_loop(self: Arc<Self>, mut rx: mpsc::Receiver<HealthReport>) {
        while let Some(r) = rx.recv().await {
            if !self.is_current(&r.backend, r.generation) {
                continue;
            }
            if let Err(e) = self
                .with_ctl(|c| c.health_report(&r.backend, &r.result))
                .await
            {
                error!(backend = %r.backend, error = %e, "applying a health change failed");
            }
        }
    }

    async fn stats_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = self.with_ctl(|c| c.sample_stats(Instant::now())).await {
                warn!(error = %e, "reading counters failed");
            }
        }
    }

    async fn feedback_loop(self: Arc<Self>) {
        loop {
            let (fb, targets) = {
                let ctl = self.ctl.lock().await;
                let Some(cfg) = ctl.config() else { return };
                let targets: Vec<(String, String)> = cfg
                    .vips
                    .iter()
                    .flat_map(|v| v.backends.iter())
                    .map(|b| {
                        let url = b.status_url.clone().unwrap_or_else(|| {
                            format!(
                                "http://{}/status",
                                SocketAddr::new(b.addr, cfg.feedback.status_port)
                            )
                        });
                        (b.name.clone(), url)
                    })
                    .collect();
                (cfg.feedback.clone(), targets)
            };
            tokio::time::sleep(fb.interval.0).await;
            if !fb.enabled {
                continue;
            }
            let mut polls = JoinSet::new();
            for (name, url) in targets {
                let timeout = fb.timeout.0;
                polls.spawn(async move {
                    let load = poll_status(&url, timeout).await;
                    (name, load)
                });
            }
            let mut loads = BTreeMap::new();
            while let Some(Ok((name, load))) = polls.join_next().await {
                loads.insert(name, load);
            }
            if let Err(e) = self.with_ctl(|c| c.apply_loads(&loads)).await {
                error!(error = %e, "applying queue feedback failed");
            }
        }
    }
}

/// `block_in_place` where the runtime allows it (multi-threaded), a plain call elsewhere.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// One `GET /status` of an MTA; `None` (logged at debug) when it fails.
pub async fn poll_status(url: &str, timeout: Duration) -> Option<Load> {
    match client::request("GET", url, None, None, timeout).await {
        Ok(r) if r.status == 200 => match serde_json::from_str::<Load>(&r.body) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::debug!(url, error = %e, "status endpoint answered non-JSON");
                None
            }
        },
        Ok(r) => {
            tracing::debug!(url, status = r.status, "status endpoint refused");
            None
        }
        Err(e) => {
            tracing::debug!(url, error = %e, "status poll failed");
            None
        }
    }
}
