//! Builds the XDP programs of `balancer-ebpf` for `bpfel-unknown-none` with aya-build and
//! leaves the objects in `OUT_DIR`, where `balancer::programs` embeds them.
//!
//! Before handing over to aya-build it checks the eBPF toolchain itself, so that a machine
//! without it fails with one sentence that names `cargo xtask setup`, not a linker dump.

use std::{path::PathBuf, process::Command};

const SETUP_HINT: &str = "run `cargo xtask setup` to install the eBPF toolchain";

fn fail(what: &str) -> ! {
    // A panic in a build script prints the message once, without a backtrace dump.
    panic!("\n\nbalancer: {what}.\nbalancer: {SETUP_HINT}.\n\n");
}

fn check_toolchain() {
    let has_linker = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("bpf-linker").is_file()))
        .unwrap_or(false);
    if !has_linker {
        fail("bpf-linker (0.13, built against LLVM 22) is not on PATH");
    }
    let sysroot = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output();
    let sysroot = match sysroot {
        Ok(out) if out.status.success() => {
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        _ => fail("the nightly Rust toolchain is not installed"),
    };
    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        fail("the nightly toolchain lacks the rust-src component");
    }
}

fn main() {
    println!("cargo:rerun-if-env-changed=PATH");
    check_toolchain();
    let ebpf_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../balancer-ebpf")
        .canonicalize()
        .expect("balancer-ebpf next to balancer");
    let ebpf_dir = ebpf_dir.to_str().expect("utf-8 path");
    let package = aya_build::Package {
        name: "balancer-ebpf",
        root_dir: ebpf_dir,
        ..Default::default()
    };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::default()) {
        fail(&format!("building the eBPF programs failed: {e:#}"));
    }
}
