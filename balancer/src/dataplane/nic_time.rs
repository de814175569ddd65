//! The `nic_time` diagnostics probe, user side: times the NAPI polls of one interface
//! (raw tracepoints `softirq_entry` and `napi_poll`) and sums the per-CPU totals.
//!
//! Why it exists: the softirq CPU a front door costs the balancer host is what operators
//! compare, and only this charges XDP, HAProxy and nftables DNAT by one rule (see the
//! kernel side, `balancer-ebpf/src/bin/nic_time.rs`). The attachments are file
//! descriptors owned by this value: dropping it, or the process dying, detaches them.

use aya::{
    maps::{Array, PerCpuArray},
    programs::RawTracePoint,
    Ebpf,
};
use balancer_ebpf::{map_names as n, prog_names, NicTime, NicTimeConfig};

use std::{os::unix::fs::MetadataExt, path::Path};

use super::{btf::KernelBtf, DataPlaneError};
use crate::programs::NIC_TIME_OBJ;

const OBJECT: &str = "nic_time";

pub struct NicTimeProbe {
    ebpf: Ebpf,
}

fn program_err(
    program: &'static str,
    op: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> DataPlaneError {
    move |source| DataPlaneError::Program {
        program,
        op,
        source: Box::new(source),
    }
}

fn map_err(
    map: &'static str,
    op: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> DataPlaneError {
    move |source| DataPlaneError::Map { map, op, source }
}

impl NicTimeProbe {
    /// Loads the probe and starts timing the polls of `ifname` in the network namespace
    /// whose file is `netns` (e.g. `/run/netns/lab-lb1`), or of every interface with that
    /// name when `netns` is `None`.
    pub fn attach(ifname: &str, netns: Option<&Path>) -> Result<Self, DataPlaneError> {
        let mut name = [0u8; 16];
        if ifname.is_empty() || ifname.len() > 15 {
            return Err(DataPlaneError::Other(format!(
                "interface name {ifname:?} must be 1 to 15 bytes"
            )));
        }
        name[..ifname.len()].copy_from_slice(ifname.as_bytes());
        let kbtf = KernelBtf::from_sys_fs().map_err(|e| DataPlaneError::Other(e.to_string()))?;
        let offset = |s: &str, m: &str| {
            kbtf.member_offset(s, m)
                .map_err(|e| DataPlaneError::Other(e.to_string()))
        };
        let netns_ino = match netns {
            Some(p) => std::fs::metadata(p)
                .map_err(|source| DataPlaneError::Io {
                    op: "stat",
                    path: p.to_path_buf(),
                    source,
                })?
                .ino() as u32,
            None => 0,
        };
        let cfg = NicTimeConfig {
            ifname: name,
            napi_dev_off: offset("napi_struct", "dev")?,
            dev_name_off: offset("net_device", "name")?,
            dev_net_off: offset("net_device", "nd_net")?,
            net_inum_off: offset("net", "ns")? + offset("ns_common", "inum")?,
            netns_ino,
            _pad: 0,
        };
        let mut ebpf = Ebpf::load(NIC_TIME_OBJ).map_err(|source| DataPlaneError::Load {
            object: OBJECT,
            source: Box::new(source),
        })?;
        let mut cfg_map: Array<_, NicTimeConfig> = Array::try_from(
            ebpf.map_mut(n::NIC_TIME_CFG)
                .ok_or(DataPlaneError::MissingMap {
                    object: OBJECT,
                    map: n::NIC_TIME_CFG,
                })?,
        )
        .map_err(map_err(n::NIC_TIME_CFG, "open"))?;
        cfg_map
            .set(0, cfg, 0)
            .map_err(map_err(n::NIC_TIME_CFG, "write"))?;
        for (prog, tp) in [
            (prog_names::NIC_TIME_SOFTIRQ, prog_names::TP_SOFTIRQ_ENTRY),
            (prog_names::NIC_TIME_POLL, prog_names::TP_NAPI_POLL),
        ] {
            let p: &mut RawTracePoint = program(&mut ebpf, prog)?
                .try_into()
                .map_err(program_err(prog, "open"))?;
            p.load().map_err(program_err(prog, "load"))?;
            p.attach(tp).map_err(program_err(prog, "attach"))?;
        }
        Ok(Self { ebpf })
    }

    /// Totals since `attach`, summed over CPUs.
    pub fn read(&self) -> Result<NicTime, DataPlaneError> {
        let map: PerCpuArray<_, NicTime> =
            PerCpuArray::try_from(self.ebpf.map(n::NIC_TIME).ok_or(
                DataPlaneError::MissingMap {
                    object: OBJECT,
                    map: n::NIC_TIME,
                },
            )?)
            .map_err(map_err(n::NIC_TIME, "open"))?;
        let per_cpu = map.get(&0, 0).map_err(map_err(n::NIC_TIME, "read"))?;
        Ok(per_cpu.iter().fold(NicTime::default(), |a, t| NicTime {
            ns: a.ns + t.ns,
            polls: a.polls + t.polls,
            packets: a.packets + t.packets,
        }))
    }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::programs::Program, DataPlaneError> {
    ebpf.program_mut(name)
        .ok_or(DataPlaneError::MissingProgram {
            object: OBJECT,
            program: name,
        })
}
