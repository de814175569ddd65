//! The disk side of `bench mta-ingest`. With 100 KiB messages a durable server moves
//! hundreds of MB/s, so the question "is the worker slow, or is the disk full?" needs an
//! answer measured in the same run: the ceiling probe writes the way the worker's group
//! commit does (sequential positional writes of one record each, the writeback of each
//! new 64 KiB or more of whole pages started at once with `sync_file_range`, one
//! `fdatasync` per batch) on the file system that holds both spools, and reports what the
//! disk gave.
//! The device's own counters (`/proc/diskstats`) tell what reached the disk in total,
//! journal included, but also whatever else the machine was writing.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The probe stops at whichever comes first.
const PROBE_BYTES: u64 = 512 << 20;
const PROBE_TIME: Duration = Duration::from_secs(5);

/// One probe run.
#[derive(Clone, Copy, Debug)]
pub struct ProbeResult {
    pub bytes: u64,
    pub flushes: u64,
    pub secs: f64,
    /// Sectors the device reported written meanwhile, in bytes (journal and other
    /// writers on the machine included).
    pub device_bytes: u64,
}

impl ProbeResult {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.secs / 1e6
    }
}

/// The `/proc/diskstats` line of the device holding a directory.
pub struct Device {
    major: u64,
    minor: u64,
    pub name: String,
}

impl Device {
    pub fn of(dir: &Path) -> Result<Self> {
        let dev = std::fs::metadata(dir)?.dev();
        let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
        let d = Self {
            major,
            minor,
            name: String::new(),
        };
        let name =
            d.line()?.get(2).cloned().with_context(|| {
                format!("device {major}:{minor} of {} has no name", dir.display())
            })?;
        Ok(Self { name, ..d })
    }

    fn line(&self) -> Result<Vec<String>> {
        let s = std::fs::read_to_string("/proc/diskstats")?;
        for l in s.lines() {
            let f: Vec<String> = l.split_whitespace().map(String::from).collect();
            if f.len() > 9
                && f[0].parse::<u64>().ok() == Some(self.major)
                && f[1].parse::<u64>().ok() == Some(self.minor)
            {
                return Ok(f);
            }
        }
        bail!(
            "device {}:{} not in /proc/diskstats (a file system without a block device?)",
            self.major,
            self.minor
        )
    }

    /// Bytes written to the device since boot (diskstats sectors are always 512 bytes).
    pub fn written(&self) -> u64 {
        self.line()
            .ok()
            .and_then(|f| f[9].parse::<u64>().ok())
            .map_or(0, |s| s * 512)
    }
}

/// Removes the probe file however the probe ends.
struct ProbeFile(PathBuf);

impl Drop for ProbeFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Appends `batch` records of `record` bytes with one positional write each, starting
/// their writeback as the worker does, then `fdatasync`s, again and again into a fresh
/// file in `dir`, like the worker's group commit into a new segment. Non-zero data, so no
/// layer can cheat on zero pages.
pub fn probe(dir: &Path, dev: &Device, record: usize, batch: usize) -> Result<ProbeResult> {
    let path = dir.join("disk-probe.bin");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let _guard = ProbeFile(path);
    let buf: Vec<u8> = (0..record).map(|i| (i * 131 % 251) as u8 + 1).collect();
    let batch = batch.max(1) as u64;
    let dev0 = dev.written();
    let t0 = Instant::now();
    let (mut off, mut flushes) = (0u64, 0u64);
    while off < PROBE_BYTES && t0.elapsed() < PROBE_TIME {
        let mut from = off / 4096 * 4096;
        for _ in 0..batch {
            file.write_all_at(&buf, off)?;
            off += record as u64;
            from = start_writeback(&file, from, off)?;
        }
        file.sync_data()?;
        flushes += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let device_bytes = dev.written().saturating_sub(dev0);
    drop(file);
    Ok(ProbeResult {
        bytes: off,
        flushes,
        secs,
        device_bytes,
    })
}

/// After a record that ends at `end`: `sync_file_range(SYNC_FILE_RANGE_WRITE)` over the
/// whole pages from `from` (the first page not yet started) when they make 64 KiB or
/// more, as the worker's commit thread does; returns the new `from`.
fn start_writeback(file: &std::fs::File, from: u64, end: u64) -> Result<u64> {
    let to = end / 4096 * 4096;
    if to < from + 64 * 1024 {
        return Ok(from);
    }
    // SAFETY: plain syscall on an fd we own; it only reads its arguments.
    let rc = unsafe {
        libc::sync_file_range(
            std::os::fd::AsRawFd::as_raw_fd(file),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sync_file_range");
    }
    Ok(to)
}

/// Flushes the whole file system holding `dir` before a timed step, so that what the
/// previous step left behind (Postfix's purged queue files, the probe's deleted file: with
/// the `discard` mount option their blocks are discarded at the next journal commit, and
/// any dirty pages) is paid for outside the timing, not by whoever runs next. No idle
/// wait follows: on this VM, 5 s of idleness right before a run cost the worker's 100 KiB
/// run about 10% (9.9-11.3k against 11.3-12.9k msg/s, same binary, interleaved), a cold
/// start that the short runs of the faster server pay most; waiting for a quiet disk was
/// tried for that reason and dropped.
pub fn settle(dir: &Path) -> Result<()> {
    let d = std::fs::File::open(dir)?;
    // SAFETY: plain syscall on an fd we own.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&d)) } != 0 {
        return Err(std::io::Error::last_os_error()).context("syncfs");
    }
    Ok(())
}
