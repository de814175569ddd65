//! An SMTP load generator for the lab, the e2e tests and the benchmarks.
//!
//! Postfix's smtp-source drives load well but reports no per-session timings and no
//! per-message outcome. This one records, for every session, how long it took and, for
//! every message, the server's final reply, so that tests can check exactly-once delivery
//! (each message carries a unique Message-ID) and benchmarks can report p50/p99.

use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;

/// What to send.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Servers, used round robin per session (one for a VIP; several for a direct baseline).
    pub servers: Vec<SocketAddr>,
    pub sessions: usize,
    pub concurrency: usize,
    pub messages_per_session: usize,
    /// Body size in bytes (approximate: headers come on top).
    pub size: usize,
    pub from: String,
    /// Recipients, used round robin, one per message.
    pub recipients: Vec<String>,
    /// Local addresses to bind, round robin per session (empty: let the kernel choose).
    pub sources: Vec<IpAddr>,
    pub helo: String,
    /// Per-reply timeout.
    pub timeout: Duration,
    /// Stop starting sessions after this long.
    pub max_duration: Duration,
    /// Prefix of Message-IDs, unique per run.
    pub run_id: String,
    /// Idle time between two messages of a session (keeps sessions open for tests that
    /// act while they are in flight).
    pub pause: Duration,
}

/// One message's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct MessageOutcome {
    pub message_id: String,
    pub recipient: String,
    /// The final reply to DATA (e.g. "250 2.0.0 Ok: queued as ..."), or the error.
    pub reply: String,
    pub accepted: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub sessions_ok: usize,
    pub sessions_failed: usize,
    pub messages_accepted: usize,
    pub messages_failed: usize,
    pub elapsed_s: f64,
    pub sessions_per_s: f64,
    pub messages_per_s: f64,
    pub session_ms_p50: f64,
    pub session_ms_p99: f64,
    pub errors: Vec<String>,
    pub messages: Vec<MessageOutcome>,
}

struct SessionResult {
    ok: bool,
    elapsed: Duration,
    messages: Vec<MessageOutcome>,
    error: Option<String>,
}

pub async fn run(plan: Plan) -> Report {
    let plan = Arc::new(plan);
    let sem = Arc::new(Semaphore::new(plan.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(plan.sessions);
    for s in 0..plan.sessions {
        if started.elapsed() > plan.max_duration {
            break;
        }
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            let r = session(&plan, s).await;
            drop(permit);
            r
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(r) = t.await {
            results.push(r);
        }
    }
    summarize(results, started.elapsed())
}

fn summarize(results: Vec<SessionResult>, elapsed: Duration) -> Report {
    let mut times: Vec<f64> = results
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.elapsed.as_secs_f64() * 1e3)
        .collect();
    times.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let pct = |p: f64| -> f64 {
        if times.is_empty() {
            return 0.0;
        }
        let i = ((times.len() as f64 - 1.0) * p).round() as usize;
        times[i]
    };
    let messages: Vec<MessageOutcome> = results.iter().flat_map(|r| r.messages.clone()).collect();
    let accepted = messages.iter().filter(|m| m.accepted).count();
    let sessions_ok = results.iter().filter(|r| r.ok).count();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut errors: Vec<String> = results.iter().filter_map(|r| r.error.clone()).collect();
    errors.truncate(20);
    Report {
        sessions_ok,
        sessions_failed: results.len() - sessions_ok,
        messages_accepted: accepted,
        messages_failed: messages.len() - accepted,
        elapsed_s: secs,
        sessions_per_s: sessions_ok as f64 / secs,
        messages_per_s: accepted as f64 / secs,
        session_ms_p50: pct(0.50),
        session_ms_p99: pct(0.99),
        errors,
        messages,
    }
}

async fn connect(plan: &Plan, s: usize) -> std::io::Result<TcpStream> {
    let server = plan.servers[s % plan.servers.len()];
    let sock = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if !plan.sources.is_empty() {
        let src = plan.sources[s % plan.sources.len()];
        sock.bind(SocketAddr::new(src, 0))?;
    }
    tokio::time::timeout(plan.timeout, sock.connect(server))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?
}

async fn session(plan: &Plan, s: usize) -> SessionResult {
    let started = Instant::now();
    let mut messages = Vec::new();
    let r = dialogue(plan, s, &mut messages).await;
    SessionResult {
        ok: r.is_ok(),
        elapsed: started.elapsed(),
        error: r.err().map(|e| format!("session {s}: {e}")),
        messages,
    }
}

type Lines = BufReader<tokio::net::tcp::OwnedReadHalf>;

/// Reads one (possibly multi-line) reply; returns its last line.
async fn reply(r: &mut Lines, timeout: Duration) -> Result<String, String> {
    let mut line = String::new();
    loop {
        line.clear();
        let n = tokio::time::timeout(timeout, r.read_line(&mut line))
            .await
            .map_err(|_| "reply timed out".to_string())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(line.trim_end().to_string());
        }
    }
}

async fn expect(
    r: &mut Lines,
    timeout: Duration,
    code: char,
    what: &str,
) -> Result<String, String> {
    let l = reply(r, timeout).await?;
    if l.starts_with(code) {
        Ok(l)
    } else {
        Err(format!("{what}: {l}"))
    }
}

async fn dialogue(plan: &Plan, s: usize, out: &mut Vec<MessageOutcome>) -> Result<(), String> {
    let stream = connect(plan, s)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let t = plan.timeout;
    expect(&mut rd, t, '2', "banner").await?;
    send(&mut wr, &format!("EHLO {}\r\n", plan.helo)).await?;
    expect(&mut rd, t, '2', "EHLO").await?;
    for m in 0..plan.messages_per_session {
        let seq = s * plan.messages_per_session + m;
        let rcpt = plan.recipients[seq % plan.recipients.len()].clone();
        let message_id = format!("{}.{seq}@loadgen.test", plan.run_id);
        send(&mut wr, &format!("MAIL FROM:<{}>\r\n", plan.from)).await?;
        expect(&mut rd, t, '2', "MAIL").await?;
        send(&mut wr, &format!("RCPT TO:<{rcpt}>\r\n")).await?;
        expect(&mut rd, t, '2', "RCPT").await?;
        send(&mut wr, "DATA\r\n").await?;
        expect(&mut rd, t, '3', "DATA").await?;
        wr.write_all(&body(plan, &message_id, &rcpt))
            .await
            .map_err(|e| e.to_string())?;
        let final_reply = reply(&mut rd, t).await;
        let (reply_text, accepted) = match &final_reply {
            Ok(l) => (l.clone(), l.starts_with('2')),
            Err(e) => (e.clone(), false),
        };
        out.push(MessageOutcome {
            message_id,
            recipient: rcpt,
            reply: reply_text,
            accepted,
        });
        final_reply?;
        if !plan.pause.is_zero() && m + 1 < plan.messages_per_session {
            tokio::time::sleep(plan.pause).await;
        }
    }
    send(&mut wr, "QUIT\r\n").await?;
    // A server that closes without answering QUIT has still taken every message.
    let _ = reply(&mut rd, t).await;
    Ok(())
}

async fn send(w: &mut tokio::net::tcp::OwnedWriteHalf, s: &str) -> Result<(), String> {
    w.write_all(s.as_bytes()).await.map_err(|e| e.to_string())
}

/// The message: headers, then printable lines up to `size` bytes, then the terminator.
fn body(plan: &Plan, message_id: &str, rcpt: &str) -> Vec<u8> {
    let mut b = format!(
        "From: <{}>\r\nTo: <{rcpt}>\r\nSubject: load {message_id}\r\nMessage-ID: <{message_id}>\r\n\r\n",
        plan.from
    )
    .into_bytes();
    let line =
        b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuvwxyz\r\n";
    let mut left = plan.size;
    while left > 0 {
        let n = left.min(line.len());
        if n < line.len() {
            b.extend_from_slice(&line[..n.saturating_sub(2)]);
            b.extend_from_slice(b"\r\n");
        } else {
            b.extend_from_slice(line);
        }
        left -= n;
    }
    b.extend_from_slice(b".\r\n");
    b
}

/// Runs the `smtp-load` binary (built next to the caller) inside `ns` with `args` and
/// returns its JSON report; fails if it cannot run or exits non-zero.
pub fn run_in(ns: &crate::netns::Netns, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let bin = crate::xdp_tier::bin(&crate::xdp_tier::bin_dir(), "smtp-load")?;
    let out = ns
        .command(bin.to_str().unwrap_or("smtp-load"))
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "smtp-load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_requested_size_and_no_lone_dot_lines() {
        let plan = Plan {
            servers: vec!["127.0.0.1:25".parse().unwrap()],
            sessions: 1,
            concurrency: 1,
            messages_per_session: 1,
            size: 10_000,
            from: "a@x.test".into(),
            recipients: vec!["b@gmail.test".into()],
            sources: vec![],
            helo: "c.test".into(),
            timeout: Duration::from_secs(1),
            max_duration: Duration::from_secs(1),
            run_id: "r".into(),
            pause: Duration::ZERO,
        };
        let b = body(&plan, "r.0@loadgen.test", "b@gmail.test");
        let text = String::from_utf8(b).unwrap();
        let payload = text.split("\r\n\r\n").nth(1).unwrap();
        assert_eq!(payload.len(), 10_000 + 3);
        assert!(text.ends_with("\r\n.\r\n"));
        assert_eq!(text.matches("\r\n.\r\n").count(), 1);
    }
}
