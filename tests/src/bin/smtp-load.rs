//! `smtp-load`: runs `e2e::loadgen` from the command line (inside a lab namespace) and
//! prints its report as JSON on stdout.

use anyhow::Result;
use clap::Parser;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Parser)]
struct Args {
    /// Server address, e.g. 198.18.0.25:25 or [fd00:198:18::25]:25; comma-separated
    /// addresses are used round robin per session.
    #[arg(long, value_delimiter = ',', required = true)]
    server: Vec<SocketAddr>,
    #[arg(long, default_value_t = 100)]
    sessions: usize,
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    #[arg(long, default_value_t = 1)]
    messages: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 2048)]
    size: usize,
    #[arg(long, default_value = "sender@client.test")]
    from: String,
    /// Comma-separated recipients, used round robin.
    #[arg(long, value_delimiter = ',', default_value = "user@gmail.test")]
    to: Vec<String>,
    /// Comma-separated local addresses to bind, round robin per session.
    #[arg(long, value_delimiter = ',')]
    source: Vec<IpAddr>,
    #[arg(long, default_value = "client.test")]
    helo: String,
    /// Per-reply timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Stop starting new sessions after this many seconds.
    #[arg(long, default_value_t = 120.0)]
    max_duration: f64,
    /// Unique prefix of the Message-IDs.
    #[arg(long, default_value = "run")]
    run_id: String,
    /// Milliseconds to wait between two messages of a session.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Leave the per-message outcomes out of the report.
    #[arg(long)]
    summary_only: bool,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let plan = e2e::loadgen::Plan {
        servers: a.server,
        sessions: a.sessions,
        concurrency: a.concurrency,
        messages_per_session: a.messages,
        size: a.size,
        from: a.from,
        recipients: a.to,
        sources: a.source,
        helo: a.helo,
        timeout: Duration::from_secs_f64(a.timeout),
        max_duration: Duration::from_secs_f64(a.max_duration),
        run_id: a.run_id,
        pause: Duration::from_millis(a.pause_ms),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut report = rt.block_on(e2e::loadgen::run(plan));
    if a.summary_only {
        report.messages.clear();
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
