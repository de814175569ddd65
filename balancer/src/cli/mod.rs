//! The command line: argument definitions (clap) and what each command does. The
//! binary only parses arguments, sets up logging and supplies the data-plane hooks.

mod commands;
pub mod table;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use commands::{run, CliError, DetachFn, HookError, Hooks};

/// Default config location.
pub const DEFAULT_CONFIG: &str = "/etc/balancer/balancer.toml";

#[derive(Debug, Parser)]
#[command(name = "balancer", version, about = "XDP SMTP connection balancer")]
pub struct Cli {
    /// Log as JSON lines (one object per event, fields included) instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// How client commands find the daemon.
#[derive(Debug, clap::Args)]
pub struct ApiOpts {
    /// Config file whose `[api]` section names the API address and token file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// API base URL (overrides the config), e.g. http://127.0.0.1:9110
    #[arg(long)]
    pub api: Option<String>,
    /// Token file (overrides the config).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: attach (or adopt) the data plane, health-check, serve the API.
    Run {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Use an in-memory data plane: everything but XDP, no root needed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show VIPs and backends as a table.
    Status {
        #[command(flatten)]
        api: ApiOpts,
        /// Print the raw JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Stop sending new flows to a backend (existing flows continue).
    Drain {
        name: String,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Undo `drain`.
    Undrain {
        name: String,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Set a backend's weight (until the config file changes it).
    Weight {
        name: String,
        weight: u32,
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Ask the daemon to re-read its config (same as SIGHUP).
    Reload {
        #[command(flatten)]
        api: ApiOpts,
    },
    /// Validate a config file; exits non-zero and prints every problem if it is bad.
    CheckConfig { file: PathBuf },
    /// Remove the XDP programs, links and pinned maps.
    Detach {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// On a backend: attach the decap program to an interface and keep it there until
    /// SIGTERM/SIGINT. Encapsulated packets whose outer destination is one of `--local`
    /// lose their outer header and reach the stack; everything else passes untouched
    /// (with no `--local`, it is a pure pass-through program).
    Decap(DecapArgs),
    /// Diagnostics: time the kernel's NAPI polls of one interface (on a veth with XDP,
    /// every received packet: the XDP program, `XDP_TX`, and the stack for passed ones).
    /// Prints the totals as one JSON line now and after every line read on stdin;
    /// detaches at end of input. `cargo xtask bench lb` drives it.
    NicTime(NicTimeArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct NicTimeArgs {
    /// Interface name to time.
    #[arg(long)]
    pub iface: String,
    /// Its network namespace, by name (`/run/netns/NAME`); without it, every interface
    /// of that name is timed.
    #[arg(long)]
    pub netns: Option<String>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DecapArgs {
    /// Interface the balancer's encapsulated packets arrive on.
    #[arg(long)]
    pub iface: String,
    /// This host's addresses that the balancer encapsulates to (repeatable).
    #[arg(long)]
    pub local: Vec<std::net::IpAddr>,
    /// Attach in generic (skb) mode instead of native.
    #[arg(long)]
    pub generic: bool,
}
