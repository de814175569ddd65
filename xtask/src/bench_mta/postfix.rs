//! The Postfix peer of `bench mta-ingest`: a private instance (own config and queue
//! directories under the benchmark's temp dir, `postfix -c DIR`, loopback port) that
//! accepts durably and puts every message on hold, so it stays queued like in the
//! worker's spool. The system Postfix is never touched; `Drop` stops the instance
//! however the run ends.

use super::wait_port;
use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Stops the private Postfix instance however the run ends.
pub struct PostfixInstance {
    config_dir: PathBuf,
    queue_dir: PathBuf,
}

impl Drop for PostfixInstance {
    fn drop(&mut self) {
        let _ = Command::new("postfix")
            .arg("-c")
            .arg(&self.config_dir)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl PostfixInstance {
    pub fn master_pid(&self) -> Result<i32> {
        let s = std::fs::read_to_string(self.queue_dir.join("pid/master.pid"))?;
        Ok(s.trim().parse()?)
    }

    pub fn held(&self) -> usize {
        count_files(&self.queue_dir.join("hold"))
    }

    pub fn purge(&self) -> Result<()> {
        let st = Command::new("postsuper")
            .arg("-c")
            .arg(&self.config_dir)
            .args(["-d", "ALL"])
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("postsuper -d ALL failed");
        }
        Ok(())
    }
}

fn count_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(_) => 1,
            Err(_) => 0,
        })
        .sum()
}

pub fn start_postfix(dir: &Path) -> Result<(PostfixInstance, SocketAddr)> {
    let smtp: SocketAddr = format!("127.0.0.1:{}", super::free_port()?).parse()?;
    let etc = dir.join("postfix-etc");
    let queue = dir.join("postfix-queue");
    let data = dir.join("postfix-data");
    for d in [&etc, &queue, &data] {
        std::fs::create_dir_all(d)?;
    }
    let st = Command::new("chown").arg("postfix").arg(&data).status()?;
    if !st.success() {
        bail!("chown postfix {} failed", data.display());
    }
    // master.cf: the stock services, chroot off (the queue dir is private), SMTP on our port.
    let stock = std::fs::read_to_string("/etc/postfix/master.cf")
        .context("reading /etc/postfix/master.cf")?;
    let mut master = String::new();
    for line in stock.lines() {
        if line.starts_with('#') || line.starts_with(char::is_whitespace) || line.is_empty() {
            continue;
        }
        let mut f: Vec<String> = line.split_whitespace().map(String::from).collect();
        if f.len() < 8 || f[7] == "pipe" {
            continue;
        }
        if f[0] == "smtp" && f[1] == "inet" {
            f[0] = smtp.to_string();
        }
        if f[4] == "y" {
            f[4] = "n".into();
        }
        master.push_str(&f.join(" "));
        master.push('\n');
    }
    std::fs::write(etc.join("master.cf"), master)?;
    let d = dir.display();
    std::fs::write(
        etc.join("main.cf"),
        format!(
            "compatibility_level = 3.6
queue_directory = {q}
data_directory = {dd}
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains =
smtpd_relay_restrictions = permit_mynetworks, reject
# HOLD: accepted durably into the queue, then left there (the worker does not deliver either).
smtpd_recipient_restrictions = check_client_access static:HOLD, permit_mynetworks, reject
default_transport = discard
relay_transport = discard
local_transport = discard
default_process_limit = 400
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
message_size_limit = 10240000
maillog_file = {d}/postfix.log
maillog_file_prefixes = {d}
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtputf8_enable = no
",
            q = queue.display(),
            dd = data.display(),
        ),
    )?;
    let inst = PostfixInstance {
        config_dir: etc.clone(),
        queue_dir: queue,
    };
    for action in ["check", "start"] {
        let out = Command::new("postfix")
            .arg("-c")
            .arg(&etc)
            .arg(action)
            .output()?;
        if !out.status.success() {
            bail!(
                "postfix -c {} {action}: {}",
                etc.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    wait_port(smtp)?;
    Ok((inst, smtp))
}
