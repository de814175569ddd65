//! Struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The `nic_time` probe reads two kernel fields (`napi_struct.dev`, `net_device.name`)
//! whose offsets change between kernel builds. aya parses BTF but keeps type lookup
//! private, so this walks the raw type section: a header, then a sequence of
//! `btf_type` records, each followed by data whose size depends on its kind.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("BTF data is malformed: {what}")]
    Malformed { what: &'static str },
    #[error("kernel BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("kernel BTF struct {name} has no member {member}")]
    NoMember { name: String, member: String },
}

const MAGIC: u16 = 0xeb9f;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

/// Kernel BTF, read once.
pub struct KernelBtf {
    data: Vec<u8>,
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
}

fn u32_at(d: &[u8], at: usize) -> Result<u32, BtfError> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
        .ok_or(BtfError::Malformed {
            what: "truncated record",
        })
}

impl KernelBtf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(data)
    }

    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        if data.len() < 24 || u16::from_le_bytes([data[0], data[1]]) != MAGIC {
            return Err(BtfError::Malformed {
                what: "bad magic (only little-endian BTF is read)",
            });
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let (type_off, type_len) = (u32_at(&data, 8)? as usize, u32_at(&data, 12)? as usize);
        let (str_off, str_len) = (u32_at(&data, 16)? as usize, u32_at(&data, 20)? as usize);
        let types = hdr_len + type_off..hdr_len + type_off + type_len;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        if types.end > data.len() || strings.end > data.len() {
            return Err(BtfError::Malformed {
                what: "sections past the end",
            });
        }
        Ok(KernelBtf {
            data,
            types,
            strings,
        })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = &self.data[self.strings.clone()];
        let start = (off as usize).min(s.len());
        let end = s[start..]
            .iter()
            .position(|&b| b == 0)
            .map_or(s.len(), |p| start + p);
        &s[start..end]
    }

    /// Byte offset of `member` in `struct name` (first struct of that name).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let d = &self.data[..self.types.end];
        let mut at = self.types.start;
        while at + 12 <= self.types.end {
            let (name_off, info) = (u32_at(d, at)?, u32_at(d, at + 4)?);
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let body = at + 12;
            if kind == KIND_STRUCT && self.name(name_off) == name.as_bytes() {
                for m in 0..vlen {
                    let rec = body + m * 12;
                    if self.name(u32_at(d, rec)?) == member.as_bytes() {
                        let off = u32_at(d, rec + 8)?;
                        // With kind_flag the top byte holds a bitfield size.
                        let bits = if kind_flag { off & 0x00ff_ffff } else { off };
                        return Ok(bits / 8);
                    }
                }
                return Err(BtfError::NoMember {
                    name: name.into(),
                    member: member.into(),
                });
            }
            at = body + trailing_len(kind, vlen)?;
        }
        Err(BtfError::NoStruct { name: name.into() })
    }
}

/// Bytes that follow a `btf_type` of `kind` (see the kernel's `Documentation/bpf/btf.rst`).
fn trailing_len(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        1 => 4,  // INT
        3 => 12, // ARRAY
        KIND_STRUCT | KIND_UNION => vlen * 12,
        6 => vlen * 8,             // ENUM
        13 => vlen * 8,            // FUNC_PROTO
        14 => 4,                   // VAR
        15 => vlen * 12,           // DATASEC
        17 => 4,                   // DECL_TAG
        19 => vlen * 12,           // ENUM64
        2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, qualifiers, FUNC, FLOAT, TYPE_TAG
        _ => {
            return Err(BtfError::Malformed {
                what: "unknown type kind",
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal BTF blob: `int` and `struct s { int a; int b; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0";
        let mut types = Vec::new();
        let mut push = |v: u32| types.extend_from_slice(&v.to_le_bytes());
        // [1] INT "int" size 4, encoding: 32 bits.
        push(1);
        push(1 << 24);
        push(4);
        push(32);
        // [2] STRUCT "s" size 8, 2 members.
        push(5);
        push((KIND_STRUCT << 24) | 2);
        push(8);
        push(7); // "a"
        push(1);
        push(0);
        push(9); // "b"
        push(1);
        push(32);
        let mut d = Vec::new();
        d.extend_from_slice(&MAGIC.to_le_bytes());
        d.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&types);
        d.extend_from_slice(strings);
        d
    }

    #[test]
    fn finds_member_offsets() {
        let btf = KernelBtf::parse(blob()).unwrap();
        assert_eq!(btf.member_offset("s", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("s", "b").unwrap(), 4);
        assert!(matches!(
            btf.member_offset("s", "c"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("t", "a"),
            Err(BtfError::NoStruct { .. })
        ));
    }

    #[test]
    fn refuses_garbage() {
        assert!(KernelBtf::parse(vec![0; 10]).is_err());
        let mut b = blob();
        b[12] = 0xff; // type_len far past the end
        assert!(KernelBtf::parse(b).is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        // Debian's kernels, and every kernel with XDP worth running, ship BTF.
        let btf = KernelBtf::from_sys_fs().unwrap();
        let dev = btf.member_offset("napi_struct", "dev").unwrap();
        let name = btf.member_offset("net_device", "name").unwrap();
        assert!(dev > 0 && dev < 512, "napi_struct.dev at {dev}");
        assert!(name < 4096, "net_device.name at {name}");
    }
}
