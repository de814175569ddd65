//! The two kernel-side meters of `cargo xtask bench lb`: the XDP program's run time and
//! run count from the kernel's BPF statistics, and the balancer NIC's softirq time from
//! the `balancer nic-time` probe (which charges every front door by the same rule).

use anyhow::{bail, Context, Result};
use e2e::{netns::Netns, xdp_tier::XdpTier};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Totals of the balancer NIC's NAPI polls since the probe started.
#[derive(Clone, Copy, Debug, Default)]
pub struct NicTime {
    pub ns: u64,
    pub packets: u64,
}

/// A running `balancer nic-time` child: one JSON line per request on its stdin.
pub struct NicProbe {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl NicProbe {
    /// Starts timing `ifname` in `ns` (every lab host calls its NIC `eth0`, so the
    /// namespace is part of the match).
    pub fn start(bin: &Path, ns: &Netns, ifname: &str) -> Result<Self> {
        let mut child = Command::new(bin.join("balancer"))
            .args(["nic-time", "--iface", ifname, "--netns", ns.name()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start `balancer nic-time`")?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut p = NicProbe {
            child,
            stdin,
            stdout,
        };
        // The first line comes once the probe is attached.
        p.line().context("`balancer nic-time` did not attach")?;
        Ok(p)
    }

    fn line(&mut self) -> Result<NicTime> {
        let mut l = String::new();
        if self.stdout.read_line(&mut l)? == 0 {
            bail!("`balancer nic-time` exited");
        }
        let v: serde_json::Value = serde_json::from_str(&l).context("nic-time output")?;
        Ok(NicTime {
            ns: v["ns"].as_u64().unwrap_or(0),
            packets: v["packets"].as_u64().unwrap_or(0),
        })
    }

    pub fn read(&mut self) -> Result<NicTime> {
        writeln!(self.stdin)?;
        self.stdin.flush()?;
        self.line()
    }
}

impl Drop for NicProbe {
    fn drop(&mut self) {
        // End of input detaches; the kill covers a probe that hangs.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run time (ns) and run count of the balancer's XDP program, from the kernel's BPF
/// statistics.
pub fn prog_stats(xdp: &XdpTier) -> Result<(u64, u64)> {
    let pinned = xdp.balancers[0].pin_dir.join("prog");
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show", "pinned"])
        .arg(&pinned)
        .output()
        .context("bpftool")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "bpftool prog show pinned {}: {}",
            pinned.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((
        v["run_time_ns"].as_u64().unwrap_or(0),
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}

/// Turns on the kernel's per-program run-time accounting for the bench, and restores the
/// previous setting afterwards.
pub struct BpfStats(String);

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let path = "/proc/sys/kernel/bpf_stats_enabled";
        let old = std::fs::read_to_string(path)?.trim().to_string();
        std::fs::write(path, "1")?;
        Ok(BpfStats(old))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", &self.0);
    }
}

/// What `bpf_stats` charges the balancer program for a run that does almost nothing: a
/// frame of an ethertype the program passes at its first check, run a million times
/// through `BPF_PROG_TEST_RUN` on the very program the lab uses, divided by the runs.
/// The accounting reads the clock around every run; on this VM's paravirtual clock that
/// is tens of ns, which a per-packet figure from `run_time_ns` includes.
pub fn stats_floor_ns(xdp: &XdpTier, scratch: &Path) -> Result<f64> {
    let frame = scratch.join("floor-frame.bin");
    let mut f = vec![0u8; 60];
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // IEEE local experimental
    std::fs::write(&frame, &f)?;
    let pinned = xdp.balancers[0].pin_dir.join("prog");
    let runs: u64 = 1_000_000;
    let before = prog_stats(xdp)?;
    let out = Command::new("bpftool")
        .args(["prog", "run", "pinned"])
        .arg(&pinned)
        .arg("data_in")
        .arg(&frame)
        .args(["repeat", &runs.to_string()])
        .output()
        .context("bpftool prog run")?;
    anyhow::ensure!(
        out.status.success(),
        "bpftool prog run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = prog_stats(xdp)?;
    let counted = after.1 - before.1;
    anyhow::ensure!(
        counted >= runs,
        "bpf_stats counted {counted} of {runs} runs"
    );
    Ok((after.0 - before.0) as f64 / counted as f64)
}
