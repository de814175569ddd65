//! What a server process tree cost during one run of `bench mta-ingest`, read from
//! `/proc`: CPU time and the bytes it sent to the block layer. Postfix is many processes
//! (master plus its children, some of which exit mid-run), so both are summed over the
//! tree: the root's own counters include its reaped children, live children are added.

/// Counters of a process tree at one instant.
#[derive(Clone, Copy, Default, Debug)]
pub struct TreeCounters {
    /// utime+stime in clock ticks.
    pub ticks: u64,
    /// `write_bytes` of `/proc/<pid>/io`: page-cache pages this tree dirtied, counted when
    /// a page goes from clean to dirty. A partial page rewritten after it was flushed
    /// counts again (it is written again); file-system journal blocks, written by the
    /// kernel's jbd2 thread, are not included.
    pub write_bytes: u64,
}

impl TreeCounters {
    pub fn since(self, before: Self) -> Self {
        Self {
            ticks: self.ticks.saturating_sub(before.ticks),
            write_bytes: self.write_bytes.saturating_sub(before.write_bytes),
        }
    }
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// (ppid, utime+stime, cutime+cstime) in clock ticks from /proc/<pid>/stat.
fn proc_stat(pid: i32) -> Option<(i32, u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces: fields start after the last ')'.
    let f: Vec<&str> = s[s.rfind(')')? + 2..].split(' ').collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((f.get(1)?.parse().ok()?, n(11)? + n(12)?, n(13)? + n(14)?))
}

/// `write_bytes` from /proc/<pid>/io (whole thread group; reaped children included,
/// as the kernel folds them into the parent when it waits for them).
fn proc_write_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("write_bytes: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The tree rooted at `root`: itself (with its reaped children) and its live children.
/// Postfix's daemons are all direct children of master, the worker is one process.
pub fn tree(root: i32) -> TreeCounters {
    let mut c = TreeCounters {
        ticks: proc_stat(root)
            .map(|(_, own, reaped)| own + reaped)
            .unwrap_or(0),
        write_bytes: proc_write_bytes(root),
    };
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some((ppid, own, _)) = proc_stat(pid) {
                if ppid == root {
                    c.ticks += own;
                    c.write_bytes += proc_write_bytes(pid);
                }
            }
        }
    }
    c
}

/// Jiffies of the whole machine from the first line of /proc/stat: (busy, total). Busy
/// includes everything that is not idle or iowait, whoever ran it.
pub fn machine() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// CPU seconds of this process's children that have been waited for (the load generator).
pub fn reaped_children_secs() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid selector.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}
