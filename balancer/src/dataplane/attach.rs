//! Loading, attaching, pinning and adopting one XDP program with its maps; shared by the
//! balancer plane (`xdp.rs`) and the backend decap plane (`decap.rs`).
//!
//! Pinning keeps program, maps and link alive in bpffs after the daemon exits (even by
//! kill -9), so forwarding never stops; a restarted daemon adopts the pinned set instead
//! of loading a fresh program with empty maps.

use super::DataPlaneError;
use aya::{
    maps::{Map, MapData},
    programs::{
        links::{FdLink, PinnedLink},
        TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use aya_obj::programs::XdpAttachType;
use std::path::{Path, PathBuf};

/// How to attach to the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// In the driver (fast path; `XDP_TX` needs an XDP program on the peer of a veth).
    #[default]
    Native,
    /// Generic / SKB mode: works everywhere, several times slower.
    Generic,
}

/// The outcome of one `BPF_PROG_TEST_RUN`.
#[derive(Debug)]
pub struct RunResult {
    /// The XDP action (`XDP_DROP` 1, `XDP_PASS` 2, `XDP_TX` 3).
    pub verdict: u32,
    /// The frame as the program left it.
    pub data: Vec<u8>,
    /// Kernel-measured time per run.
    pub duration: std::time::Duration,
}

enum Holder {
    Loaded(Ebpf),
    Pinned(Box<Xdp>),
}

enum LinkState {
    Owned(FdLink),
    Pinned(PinnedLink),
    /// Transient, while an owned link is being pinned.
    Detached,
}

/// One XDP program and the state of its attachment and pins.
pub(crate) struct XdpProg {
    object: &'static str,
    program: &'static str,
    holder: Holder,
    /// One link per attached interface, in attach order (pinned as `link`, `link_1`, ...; bpffs refuses dots in names).
    links: Vec<LinkState>,
    pin_dir: Option<PathBuf>,
}

/// Pin name of the `i`-th link (the first keeps the plain name `link`).
fn link_pin_name(i: usize) -> String {
    if i == 0 {
        "link".to_string()
    } else {
        format!("link_{i}")
    }
}

fn prog_err(
    program: &'static str,
    op: &'static str,
    e: aya::programs::ProgramError,
) -> DataPlaneError {
    DataPlaneError::Program {
        program,
        op,
        source: Box::new(e),
    }
}

/// `true` if `dir` lives on a BPF filesystem (pins elsewhere fail or vanish).
fn on_bpffs(dir: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs(2) with a valid C string and a zeroed out-buffer.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

impl XdpProg {
    /// Loads `obj` (shrinking maps per `max_entries`) and verifies the program.
    pub fn load(
        object: &'static str,
        program: &'static str,
        obj: &[u8],
        max_entries: &[(&'static str, u32)],
    ) -> Result<Self, DataPlaneError> {
        let mut loader = EbpfLoader::new();
        for (name, n) in max_entries {
            loader.map_max_entries(name, *n);
        }
        let mut ebpf = loader.load(obj).map_err(|e| DataPlaneError::Load {
            object,
            source: Box::new(e),
        })?;
        let prog: &mut Xdp = ebpf
            .program_mut(program)
            .ok_or(DataPlaneError::MissingProgram { object, program })?
            .try_into()
            .map_err(|e| prog_err(program, "type check", e))?;
        prog.load()
            .map_err(|e| prog_err(program, "load (verifier)", e))?;
        Ok(Self {
            object,
            program,
            holder: Holder::Loaded(ebpf),
            links: Vec::new(),
            pin_dir: None,
        })
    }

    /// Opens a pinned set under `dir` (program, link, maps `names`).
    pub fn adopt(
        object: &'static str,
        program: &'static str,
        dir: &Path,
        names: &[&'static str],
    ) -> Result<(Self, Vec<Map>), DataPlaneError> {
        let prog_path = dir.join("prog");
        let prog = Xdp::from_pin(&prog_path, XdpAttachType::Interface).map_err(|e| {
            DataPlaneError::Adopt {
                what: "program",
                path: prog_path.clone(),
                reason: e.to_string(),
            }
        })?;
        let mut links = Vec::new();
        loop {
            let link_path = dir.join(link_pin_name(links.len()));
            if !link_path.exists() {
                break;
            }
            let l = PinnedLink::from_pin(&link_path).map_err(|e| DataPlaneError::Adopt {
                what: "link",
                path: link_path.clone(),
                reason: e.to_string(),
            })?;
            links.push(LinkState::Pinned(l));
        }
        let mut maps = Vec::new();
        for name in names {
            let path = dir.join(name);
            let adopt_err = |reason: String| DataPlaneError::Adopt {
                what: "map",
                path: path.clone(),
                reason,
            };
            let data = MapData::from_pin(&path).map_err(|e| adopt_err(e.to_string()))?;
            maps.push(Map::from_map_data(data).map_err(|e| adopt_err(e.to_string()))?);
        }
        let me = Self {
            object,
            program,
            holder: Holder::Pinned(Box::new(prog)),
            links,
            pin_dir: Some(dir.to_path_buf()),
        };
        Ok((me, maps))
    }

    /// Takes map `name` out of a freshly loaded object, pinning it if `pin` was called.
    pub fn take_map(&mut self, name: &'static str) -> Result<Map, DataPlaneError> {
        let missing = DataPlaneError::MissingMap {
            object: self.object,
            map: name,
        };
        let map = match &mut self.holder {
            Holder::Loaded(ebpf) => ebpf.take_map(name).ok_or(missing)?,
            Holder::Pinned(_) => return Err(missing),
        };
        if let Some(dir) = &self.pin_dir {
            let path = dir.join(name);
            map.pin(&path)
                .map_err(|source| DataPlaneError::Pin { path, source })?;
        }
        Ok(map)
    }

    fn prog(&mut self) -> Result<&mut Xdp, DataPlaneError> {
        let program = self.program;
        match &mut self.holder {
            Holder::Pinned(p) => Ok(p.as_mut()),
            Holder::Loaded(ebpf) => ebpf
                .program_mut(program)
                .ok_or(DataPlaneError::MissingProgram {
                    object: self.object,
                    program,
                })?
                .try_into()
                .map_err(|e| prog_err(program, "type check", e)),
        }
    }

    pub fn attach(&mut self, iface: &str, mode: AttachMode) -> Result<(), DataPlaneError> {
        let program = self.program;
        let xdp_mode = match mode {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => {
                tracing::warn!(
                    iface,
                    program,
                    "attaching XDP in GENERIC (skb) mode: several times slower than native, \
                     use only where the driver has no XDP support"
                );
                XdpMode::Skb
            }
        };
        let prog = self.prog()?;
        let id = prog
            .attach(iface, xdp_mode)
            .map_err(|e| prog_err(program, "attach", e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| prog_err(program, "take link", e))?;
        let fd = FdLink::try_from(link).map_err(|e| DataPlaneError::LinkNotPinnable {
            program,
            reason: e.to_string(),
        })?;
        self.links.push(LinkState::Owned(fd));
        tracing::info!(iface, program, ?mode, "XDP program attached");
        if let Some(dir) = self.pin_dir.clone() {
            self.pin_link(&dir)?;
        }
        Ok(())
    }

    /// Pins every link not pinned yet.
    fn pin_link(&mut self, dir: &Path) -> Result<(), DataPlaneError> {
        for (i, slot) in self.links.iter_mut().enumerate() {
            if matches!(slot, LinkState::Owned(_)) {
                let path = dir.join(link_pin_name(i));
                // Swap the owned link out to consume it; a pinned one takes its place.
                let LinkState::Owned(fd) = std::mem::replace(slot, LinkState::Detached) else {
                    unreachable!("matched above")
                };
                let pinned = fd
                    .pin(&path)
                    .map_err(|source| DataPlaneError::Pin { path, source })?;
                *slot = LinkState::Pinned(pinned);
            }
        }
        Ok(())
    }

    /// Pins the program under `dir`; maps taken afterwards and the link are pinned there
    /// too. Call right after `load`, before `take_map`.
    pub fn pin(&mut self, dir: &Path) -> Result<(), DataPlaneError> {
        std::fs::create_dir_all(dir).map_err(|source| DataPlaneError::Io {
            op: "create pin directory",
            path: dir.to_path_buf(),
            source,
        })?;
        if !on_bpffs(dir) {
            return Err(DataPlaneError::NotBpffs {
                path: dir.to_path_buf(),
            });
        }
        let path = dir.join("prog");
        self.prog()?
            .pin(&path)
            .map_err(|source| DataPlaneError::Pin { path, source })?;
        self.pin_dir = Some(dir.to_path_buf());
        self.pin_link(dir)
    }

    /// Detaches and removes every pin (program, maps, link, the directory).
    pub fn detach(mut self, map_names: &[&'static str]) -> Result<(), DataPlaneError> {
        let n_links = self.links.len();
        for (i, link) in std::mem::take(&mut self.links).into_iter().enumerate() {
            match link {
                LinkState::Pinned(p) => {
                    // Unpinned and dropped: the last reference goes, the kernel detaches.
                    drop(p.unpin().map_err(|source| DataPlaneError::Io {
                        op: "unpin link",
                        path: PathBuf::from(link_pin_name(i)),
                        source,
                    })?);
                }
                LinkState::Owned(fd) => drop(fd),
                LinkState::Detached => {}
            }
        }
        if let Some(dir) = self.pin_dir.take() {
            let mut files: Vec<PathBuf> = map_names.iter().map(|n| dir.join(n)).collect();
            files.push(dir.join("prog"));
            files.extend((0..n_links.max(1)).map(|i| dir.join(link_pin_name(i))));
            for f in files {
                match std::fs::remove_file(&f) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(DataPlaneError::Io {
                            op: "remove pin",
                            path: f,
                            source,
                        })
                    }
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
        Ok(())
    }

    /// Runs the program once per `repeat` on `frame` (`BPF_PROG_TEST_RUN`).
    pub fn test_run(&mut self, frame: &[u8], repeat: u32) -> Result<RunResult, DataPlaneError> {
        let program = self.program;
        let mut out = vec![0u8; frame.len() + 512];
        let res = self
            .prog()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                repeat,
                ..TestRunOptions::new()
            })
            .map_err(|e| prog_err(program, "test run", e))?;
        out.truncate(res.data_size_out as usize);
        Ok(RunResult {
            verdict: res.return_value,
            data: out,
            duration: res.duration,
        })
    }

    /// Mean time per run over `repeat` runs of `frame`, for benchmarks. Plain runs reuse
    /// one buffer, so a program that rewrites the frame sees its own output from the
    /// second run on; `live` (`BPF_F_TEST_XDP_LIVE_FRAMES`) gives every run a fresh copy
    /// and really transmits `XDP_TX` / passes `XDP_PASS` frames in the caller's network
    /// namespace, so run it inside a private one.
    pub fn bench(
        &mut self,
        frame: &[u8],
        repeat: u32,
        live: bool,
    ) -> Result<std::time::Duration, DataPlaneError> {
        let program = self.program;
        let attrs = if live {
            TestRunAttrs::new().xdp_live_frames(64)
        } else {
            TestRunAttrs::new()
        };
        let res = self
            .prog()?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat,
                attrs,
                ..TestRunOptions::new()
            })
            .map_err(|e| prog_err(program, "benchmark run", e))?;
        Ok(res.duration)
    }
}
