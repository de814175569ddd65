//! The "ISP" side of the lab: Postfix's smtp-sink, dumping every message it accepts with
//! the peer address, EHLO name and envelope, and a reader for those dumps.

use crate::netns::Netns;
use crate::proc::ChildGuard;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// A running smtp-sink and the directory it dumps messages into.
pub struct Sink {
    pub guard: ChildGuard,
    pub dir: PathBuf,
}

/// What one dumped message says about how it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub client_addr: String,
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub body: Vec<u8>,
}

/// Starts smtp-sink in `ns` on `listen` (e.g. "198.18.21.2:25"), dumping into `dir`.
/// `extra` passes smtp-sink options such as `-Q` (421 after QUIT) for scripted failures.
pub fn start(ns: &Netns, listen: &str, dir: &Path, extra: &[&str]) -> Result<Sink> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    // smtp-sink drops root privileges to `nobody` and writes dumps as that user.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let mut cmd = ns.command("smtp-sink");
    cmd.args(["-u", "nobody", "-d"])
        .arg(format!("{}/%M.", dir.display()));
    cmd.args(extra);
    cmd.args([listen, "256"]);
    let guard = ChildGuard::spawn("smtp-sink", cmd, None)?;
    Ok(Sink {
        guard,
        dir: dir.to_path_buf(),
    })
}

/// Starts smtp-sink in `ns` without dumping messages (benchmarks: no disk I/O).
pub fn start_nodump(ns: &Netns, listen: &str) -> Result<ChildGuard> {
    let mut cmd = ns.command("smtp-sink");
    if crate::netns::is_root() {
        cmd.args(["-u", "nobody"]);
    }
    cmd.args([listen, "1024"]);
    ChildGuard::spawn("smtp-sink", cmd, None)
}

/// Starts smtp-sink in the caller's own namespace (loopback tests).
pub fn start_here(listen: &str, dir: &Path, extra: &[&str]) -> Result<Sink> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let mut cmd = std::process::Command::new("smtp-sink");
    args(&mut cmd, listen, dir, extra);
    let guard = ChildGuard::spawn("smtp-sink", cmd, None)?;
    Ok(Sink {
        guard,
        dir: dir.to_path_buf(),
    })
}

fn args(cmd: &mut std::process::Command, listen: &str, dir: &Path, extra: &[&str]) {
    // As root, smtp-sink insists on dropping to another user after binding.
    if crate::netns::is_root() {
        cmd.args(["-u", "nobody"]);
    }
    cmd.arg("-d").arg(format!("{}/%M.", dir.display()));
    cmd.args(extra);
    cmd.args([listen, "256"]);
}

/// One sink per backend of the lab on `listen` (e.g. "0.0.0.0:25"), dumping into
/// `dir/{name}{i}{suffix}`.
pub fn start_per_backend(
    lab: &crate::topo::Lab,
    listen: &str,
    dir: &Path,
    name: &str,
    suffix: &str,
) -> Result<Vec<Sink>> {
    lab.mtas
        .iter()
        .enumerate()
        .map(|(i, m)| {
            start(
                &m.ns,
                listen,
                &dir.join(format!("{name}{}{suffix}", i + 1)),
                &[],
            )
        })
        .collect()
}

/// The Message-ID of a dumped message (the load generator makes each one unique).
pub fn message_id(r: &Received) -> String {
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: <"))
        .map(|l| l.trim_end_matches('>').to_string())
        .unwrap_or_default()
}

/// Reads every message dumped so far.
pub fn read_dumps(dir: &Path) -> Result<Vec<Received>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let path = e?.path();
        if !path.is_file() {
            continue;
        }
        out.push(parse_dump(&std::fs::read(&path)?));
    }
    Ok(out)
}

fn parse_dump(raw: &[u8]) -> Received {
    let mut r = Received {
        client_addr: String::new(),
        helo: String::new(),
        mail_from: String::new(),
        rcpt_to: Vec::new(),
        body: Vec::new(),
    };
    let mut rest = raw;
    // smtp-sink's own X- lines come first, one per line; the message follows.
    while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(&rest[..pos]).trim_end().to_string();
        let value = |p: &str| line.strip_prefix(p).map(|v| v.trim().to_string());
        if let Some(v) = value("X-Client-Addr:") {
            r.client_addr = v;
        } else if let Some(v) = value("X-Helo-Args:") {
            r.helo = v;
        } else if let Some(v) = value("X-Mail-Args:") {
            r.mail_from = v
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_matches(['<', '>'])
                .to_string();
        } else if let Some(v) = value("X-Rcpt-Args:") {
            r.rcpt_to.push(
                v.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_matches(['<', '>'])
                    .to_string(),
            );
        } else if !line.starts_with("X-Client-Proto:") {
            break;
        }
        rest = &rest[pos + 1..];
    }
    r.body = rest.to_vec();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_smtp_sink_dump_headers() {
        let raw = b"X-Client-Addr: 198.18.11.3\nX-Client-Proto: ESMTP\nX-Helo-Args: mta1-a.test\nX-Mail-Args: <b@x.test> SIZE=10\nX-Rcpt-Args: <a@gmail.test>\nX-Rcpt-Args: <c@gmail.test>\nReceived: from x\nSubject: hi\n\nbody\n";
        let r = parse_dump(raw);
        assert_eq!(r.client_addr, "198.18.11.3");
        assert_eq!(r.helo, "mta1-a.test");
        assert_eq!(r.mail_from, "b@x.test");
        assert_eq!(r.rcpt_to, vec!["a@gmail.test", "c@gmail.test"]);
        assert!(r.body.starts_with(b"Received: from x\n"));
    }
}
