//! The worker binary as a child process, for what only a real process shows: a kill -9,
//! a signal. The child is killed by its own PID however the test ends.

use anyhow::Result;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Our worker child; killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Sends `signal` to the child.
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: signalling our own child process by PID.
        unsafe { libc::kill(self.0.id() as i32, signal) };
    }
}

/// A relay for 127.0.0.0/8 on free loopback ports, spool in `dir/spool`, with `extra`
/// appended to its config (`dir/worker.toml`).
pub struct Setup {
    pub config: PathBuf,
    pub spool: PathBuf,
    pub smtp: SocketAddr,
    pub admin: SocketAddr,
}

impl Setup {
    pub fn new(dir: &Path, extra: &str) -> Result<Self> {
        let smtp: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let spool = dir.join("spool");
        let config = dir.join("worker.toml");
        std::fs::write(
            &config,
            format!(
                "hostname = \"mx.test\"\n[spool]\ndir = \"{}\"\n[relay]\nnetworks = [\"127.0.0.0/8\"]\n[[listener]]\nrole = \"relay\"\naddresses = [\"{smtp}\"]\n[admin]\nlisten = \"{admin}\"\n{extra}",
                spool.display()
            ),
        )?;
        Ok(Self {
            config,
            spool,
            smtp,
            admin,
        })
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `mta-worker run --config CONFIG`, once it accepts connections on `smtp`.
pub fn start(config: &Path, smtp: SocketAddr) -> Result<Proc> {
    let child = Command::new(env!("CARGO_BIN_EXE_mta-worker"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()?;
    let p = Proc(child);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(smtp).is_err() {
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(20),
            "worker did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(p)
}
