//! The inbound part of `docs/benchmarks-mta.md`: medians per load shape, the disk ceiling
//! measured in the same rounds, bytes written per message, a reading of the numbers
//! written from the numbers, and every raw round. The page is shared with `bench
//! mta-relay`, whose section (between its markers) is carried over untouched.

use super::{ProbeSample, Sample, Target, CASES};
use crate::cmd;
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;

/// A worker run counts as quiet when other jobs used fewer CPUs than this meanwhile.
const QUIET_OTHERS: f64 = 0.25;

/// Start of the section `bench mta-relay` owns; everything from here on is kept.
const RELAY_BEGIN: &str = "<!-- mta-relay:begin -->";

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Per-round values of `f` over one server's samples of one case.
fn pick(samples: &[Sample], t: Target, c: usize, f: fn(&Sample) -> f64) -> Vec<f64> {
    samples
        .iter()
        .filter(|s| s.target == t && s.case == c)
        .map(f)
        .collect()
}

/// Per-round `f(worker, postfix, probe)` for one case, for rounds that have all three.
fn per_round(
    samples: &[Sample],
    probes: &[ProbeSample],
    rounds: usize,
    c: usize,
    f: impl Fn(&Sample, &Sample, &ProbeSample) -> f64,
) -> Vec<f64> {
    let get = |t: Target, r: usize| {
        samples
            .iter()
            .find(|s| s.target == t && s.case == c && s.round == r)
    };
    (0..rounds)
        .filter_map(|r| {
            let p = probes.iter().find(|p| p.case == c && p.round == r)?;
            Some(f(get(Target::Worker, r)?, get(Target::Postfix, r)?, p))
        })
        .collect()
}

/// Per-round worker / Postfix ratio of `f` for one case.
fn ratios(samples: &[Sample], rounds: usize, c: usize, f: fn(&Sample) -> f64) -> Vec<f64> {
    let get = |t: Target, r: usize| {
        samples
            .iter()
            .find(|s| s.target == t && s.case == c && s.round == r)
            .map(f)
    };
    (0..rounds)
        .filter_map(|r| Some(get(Target::Worker, r)? / get(Target::Postfix, r)?))
        .collect()
}

fn label(c: usize) -> String {
    let (size, sessions, _) = CASES[c];
    format!("{} KiB | {sessions}", size / 1024)
}

pub fn page(samples: &[Sample], probes: &[ProbeSample], rounds: usize, device: &str) -> String {
    let mut o = String::new();
    let kernel = cmd::output("uname", &["-r"]).unwrap_or_default();
    let pf = cmd::output("postconf", &["-d", "mail_version"]).unwrap_or_default();
    let _ = writeln!(
        o,
        "# mta-worker inbound benchmark (`cargo xtask bench mta-ingest`)\n"
    );
    let _ = writeln!(
        o,
        "Machine: {} CPUs, kernel {}, {}. Same machine, same run, {rounds} interleaved rounds;\n\
median per cell, ratio = median of the per-round ratios. Both sides durable (the worker's\n\
group commit, Postfix's fsync of each queue file) and both keep the mail queued (Postfix\n\
puts it on hold). Driver: `smtp-source -d -s SESSIONS -m MESSAGES -l SIZE` over loopback.\n\
CPU = the server's own CPU time (Postfix: master and all its children) per accepted message.\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        kernel.trim(),
        pf.trim()
    );
    let _ = writeln!(o, "| payload | sessions | messages | mta-worker msg/s | Postfix msg/s | ratio | worker CPU ms/msg | Postfix CPU ms/msg |");
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (ci, &(_, _, messages)) in CASES.iter().enumerate() {
        let _ = writeln!(
            o,
            "| {} | {messages} | {:.0} | {:.0} | {:.1}x | {:.3} | {:.3} |",
            label(ci),
            median(pick(samples, Target::Worker, ci, |s| s.msgs_per_s)),
            median(pick(samples, Target::Postfix, ci, |s| s.msgs_per_s)),
            median(ratios(samples, rounds, ci, |s| s.msgs_per_s)),
            median(pick(samples, Target::Worker, ci, |s| s.cpu_ms_per_msg)),
            median(pick(samples, Target::Postfix, ci, |s| s.cpu_ms_per_msg)),
        );
    }

    let _ = writeln!(
        o,
        "\n## Disk ceiling, measured in the same rounds\n\n\
Right after the worker's run of a 100 KiB load shape, a probe writes a fresh file on the\n\
file system that holds both spools ({device}) the way the worker's group commit just did:\n\
records of payload + 512 B, one positional write each with its writeback started at once\n\
(`sync_file_range`, once 64 KiB of whole pages are pending), then one `fdatasync`, with as many\n\
records per flush as the worker's mean batch in that run (`mta_spool_commit_batch_size`\n\
in `/metrics`), until 512 MiB or 5 s. Ceiling msg/s = records/s the probe got. Worker\n\
share = MB/s the worker wrote (next section) / probe MB/s, median of the per-round shares;\n\
it can pass 100% when the disk slowed down between the run and the probe. The last\n\
column is what 10x Postfix asks of the disk, in messages and in MB/s at the worker's\n\
bytes per message.\n"
    );
    let _ = writeln!(o, "| payload | sessions | worker msgs/flush | worker ms/flush | probe MB/s | ceiling msg/s | worker msg/s | worker MB/s written | worker / ceiling | CPU idle in worker runs | 10x Postfix needs |");
    let _ = writeln!(
        o,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for ci in (0..CASES.len()).filter(|&c| probes.iter().any(|p| p.case == c)) {
        let need = median(per_round(samples, probes, rounds, ci, |_, p, _| {
            10.0 * p.msgs_per_s
        }));
        let need_mb = median(per_round(samples, probes, rounds, ci, |w, p, _| {
            10.0 * p.msgs_per_s * w.written_per_msg / 1e6
        }));
        let _ = writeln!(
            o,
            "| {} | {:.1} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0}% | {:.0}% | {:.0} msg/s = {:.0} MB/s |",
            label(ci),
            median(pick(samples, Target::Worker, ci, |s| s.commit.map_or(f64::NAN, |c| c.0))),
            median(pick(samples, Target::Worker, ci, |s| s.commit.map_or(f64::NAN, |c| c.1))),
            median(probes.iter().filter(|p| p.case == ci).map(|p| p.r.mb_per_s()).collect()),
            median(probes.iter().filter(|p| p.case == ci).map(|p| p.msgs_per_s()).collect()),
            median(pick(samples, Target::Worker, ci, |s| s.msgs_per_s)),
            median(pick(samples, Target::Worker, ci, |s| s.written_mb_per_s())),
            100.0
                * median(per_round(samples, probes, rounds, ci, |w, _, p| {
                    w.written_mb_per_s() / p.r.mb_per_s()
                })),
            100.0 * median(pick(samples, Target::Worker, ci, |s| s.idle)),
            need,
            need_mb,
        );
    }

    let _ = writeln!(
        o,
        "\n## Bytes written per message\n\n\
*Written* = `write_bytes` of `/proc/<pid>/io` summed over the server's process tree\n\
(Postfix: master, its live children and the children it reaped), per accepted message:\n\
page-cache pages the server dirtied, so a partial page written again after a flush counts\n\
twice; file-system journal blocks (written by the kernel's jbd2 thread) are not included.\n\
*Device* = sectors written to `{device}` (`/proc/diskstats`) during the run per message:\n\
journal and metadata included, but so is everything else the machine wrote meanwhile\n\
(this machine is shared), so it is an upper bound.\n"
    );
    let _ = writeln!(o, "| payload | sessions | worker written B/msg | worker device B/msg | Postfix written B/msg | Postfix device B/msg |");
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|");
    for (ci, &(size, _, _)) in CASES.iter().enumerate() {
        let x = |v: f64| format!("{v:.0} ({:.2}x)", v / size as f64);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            label(ci),
            x(median(
                pick(samples, Target::Worker, ci, |s| s.written_per_msg)
            )),
            x(median(
                pick(samples, Target::Worker, ci, |s| s.device_per_msg)
            )),
            x(median(
                pick(samples, Target::Postfix, ci, |s| s.written_per_msg)
            )),
            x(median(
                pick(samples, Target::Postfix, ci, |s| s.device_per_msg)
            )),
        );
    }

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let _ = writeln!(
        o,
        "\nLoad average when the run ended: {} (other jobs share this machine; see every round below).\n",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    reading(&mut o, samples, probes, rounds);

    let _ = writeln!(o, "\n## Every round\n\nClient = smtp-source's CPU per message; idle = share of the machine's CPU time idle\nduring the run; others = CPUs used by neither the server nor smtp-source (other jobs).\n\n| round | payload | sessions | server | msg/s | CPU ms/msg | client ms/msg | idle | others CPUs | written B/msg | written MB/s | msgs/flush |\n|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for s in samples {
        let _ = writeln!(
            o,
            "| {} | {} | {:?} | {:.0} | {:.3} | {:.3} | {:.0}% | {:.2} | {:.0} | {:.0} | {} |",
            s.round + 1,
            label(s.case),
            s.target,
            s.msgs_per_s,
            s.cpu_ms_per_msg,
            s.client_cpu_ms_per_msg,
            100.0 * s.idle,
            s.others_cpus,
            s.written_per_msg,
            s.written_mb_per_s(),
            s.commit.map_or(String::new(), |c| format!("{:.1}", c.0)),
        );
    }
    let _ = writeln!(o, "\nDisk probe right after each worker run at 100 KiB:\n\n| round | payload | sessions | records/flush | MB/s | flushes/s | ceiling msg/s |\n|---:|---:|---:|---:|---:|---:|---:|");
    for p in probes {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} |",
            p.round + 1,
            label(p.case),
            p.batch,
            p.r.mb_per_s(),
            p.r.flushes as f64 / p.r.secs,
            p.msgs_per_s(),
        );
    }
    o
}

/// "Reading the numbers", with this run's numbers in it.
fn reading(o: &mut String, samples: &[Sample], probes: &[ProbeSample], rounds: usize) {
    let _ = writeln!(o, "## Reading the numbers\n");
    let med = |t: Target, c: usize, f: fn(&Sample) -> f64| median(pick(samples, t, c, f));
    for ci in (0..CASES.len()).filter(|&c| probes.iter().any(|p| p.case == c)) {
        let (size, sessions, _) = CASES[ci];
        let probe_mb: Vec<f64> = probes
            .iter()
            .filter(|p| p.case == ci)
            .map(|p| p.r.mb_per_s())
            .collect();
        let lo = probe_mb.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = probe_mb.iter().copied().fold(0.0, f64::max);
        let share = median(per_round(samples, probes, rounds, ci, |w, _, p| {
            w.written_mb_per_s() / p.r.mb_per_s()
        }));
        let idle = med(Target::Worker, ci, |s| s.idle);
        let verdict = if share > 1.1 {
            "faster than the probe after it: the disk slowed down between the two, so \
             here the probe understates the ceiling the worker saw"
        } else if share >= 0.85 {
            "at the disk's ceiling"
        } else if idle < 0.10 {
            "below the disk's ceiling with the CPUs saturated: in the median round the \
             CPUs, not the disk, were the limit"
        } else {
            "below the disk's ceiling with CPU to spare"
        };
        // Rounds where other jobs left the machine alone: what the worker does then.
        let quiet: Vec<(f64, f64, f64)> = per_round(samples, probes, rounds, ci, |w, pf, _| {
            if w.others_cpus < QUIET_OTHERS {
                w.msgs_per_s / pf.msgs_per_s
            } else {
                f64::NAN
            }
        })
        .into_iter()
        .zip(pick(samples, Target::Worker, ci, |s| s.msgs_per_s))
        .zip(pick(samples, Target::Worker, ci, |s| s.written_mb_per_s()))
        .filter(|((r, _), _)| !r.is_nan())
        .map(|((r, m), mb)| (r, m, mb))
        .collect();
        let quiet = match quiet.iter().copied().max_by(|a, b| a.0.total_cmp(&b.0)) {
            Some((r, m, mb)) => format!(
                " In {} of {rounds} rounds other jobs used under {QUIET_OTHERS} CPUs during \
                 the worker's run; the best of those: {m:.0} msg/s ({mb:.0} MB/s), {r:.1}x \
                 Postfix in the same round.",
                quiet.len()
            ),
            None => format!(
                " In no round did other jobs use under {QUIET_OTHERS} CPUs during the \
                 worker's run."
            ),
        };
        let _ = writeln!(
            o,
            "- {} KiB x {sessions} sessions: the worker wrote {:.0} MB/s ({:.0} msg/s), {:.0}% of\n  \
what the disk gave the probe in the same rounds (probe {lo:.0}-{hi:.0} MB/s across rounds,\n  \
median {:.0} MB/s = {:.0} msg/s at the worker's batch size). That ceiling is {:.1}x\n  \
Postfix's rate (median of per-round ratios) against a measured {:.1}x for the worker:\n  \
no server that writes each message once could show more than the first figure here.\n  \
During the worker's runs the machine's CPUs were {:.0}% idle and other jobs used {:.2}\n  \
CPUs (medians), during Postfix's {:.2} CPUs; the worker ran {verdict}.{quiet}",
            size / 1024,
            med(Target::Worker, ci, |s| s.written_mb_per_s()),
            med(Target::Worker, ci, |s| s.msgs_per_s),
            100.0 * share,
            median(probe_mb.clone()),
            median(probes.iter().filter(|p| p.case == ci).map(|p| p.msgs_per_s()).collect()),
            median(per_round(samples, probes, rounds, ci, |_, pf, p| {
                p.msgs_per_s() / pf.msgs_per_s
            })),
            median(ratios(samples, rounds, ci, |s| s.msgs_per_s)),
            100.0 * idle,
            med(Target::Worker, ci, |s| s.others_cpus),
            med(Target::Postfix, ci, |s| s.others_cpus),
        );
    }
    let x = |t: Target, c: usize, f: fn(&Sample) -> f64| med(t, c, f) / CASES[c].0 as f64;
    let written = |s: &Sample| s.written_per_msg;
    let device = |s: &Sample| s.device_per_msg;
    let (small, large) = (0, CASES.len() - 1);
    let _ = writeln!(
        o,
        "- The worker writes each message once: {:.2}x the payload at 100 KiB (record header,\n  \
envelope and `Received:` included), {:.2}x at 2 KiB, where the partial last page of each\n  \
group commit is written again by the next one. Postfix: {:.2}x and {:.2}x; counting the\n  \
journal and metadata on the device, {:.2}x and {:.2}x for Postfix against {:.2}x and\n  \
{:.2}x for the worker (one inode, directory entries and queue moves per message against\n  \
one journal commit per batch).",
        x(Target::Worker, large, written),
        x(Target::Worker, small, written),
        x(Target::Postfix, large, written),
        x(Target::Postfix, small, written),
        x(Target::Postfix, large, device),
        x(Target::Postfix, small, device),
        x(Target::Worker, large, device),
        x(Target::Worker, small, device),
    );
    let _ = writeln!(
        o,
        "- The group commit issues one positional write per record, starts the writeback of\n  \
the pages written so far once they make 64 KiB (`sync_file_range`), and issues one `fdatasync` per\n  \
batch; with 100 KiB messages a batch is several records (the msgs/flush column), so\n  \
each flush carries hundreds of KB to a few MB. The probe writes the same way and is the\n  \
ceiling for this design on this disk; it moves from minute to minute on this VM.\n\
- With 2 KiB messages the disk's bandwidth is not the limit; the flush rate and CPU are.\n  \
CPU per message is where the designs differ most: the worker does the whole SMTP\n  \
transaction in one process with no queue-manager hand-offs and no per-message inode.\n\
- On this 2-CPU virtual machine smtp-source, the server and the virtual disk share the\n  \
same cores, and other jobs run alongside (the idle and others columns below): when the\n  \
disk is fast, the two CPUs are the limit. Postfix is CPU-bound here too: about 2 ms of\n  \
CPU per 100 KiB message is more than one of the two CPUs at its rate."
    );
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.contains("page_reporting") {
        let _ = writeln!(
            o,
            "- This VM's kernel reports free pages to its host (`page_reporting` on the kernel\n  \
command line), so a page-cache page for new data is usually memory the host must fault\n  \
in again. The worker writes about 1 GB/s at 100 KiB and pays that for every page: it is\n  \
in the kernel's copy into the page cache (`copy_folio_from_iter_atomic`, the largest\n  \
entry of the worker's profile), and it moves with the host's load. Postfix writes a\n  \
tenth as much. The 100 KiB figures therefore vary more from run to run than the 2 KiB\n  \
ones."
        );
    }
}

/// Replaces the inbound part of the page, keeping the relay section as it is.
pub fn write(path: &Path, inbound: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut new = inbound.trim_end().to_string();
    if let Some(at) = old.find(RELAY_BEGIN) {
        new.push_str("\n\n");
        new.push_str(old[at..].trim_end());
    }
    new.push('\n');
    std::fs::write(path, new)?;
    Ok(())
}
