//! Compiles the C eBPF programs in `ebpf/` with clang into OUT_DIR, where `kernel::bpf` embeds
//! them, so a plain `cargo build` produces a self-contained faultd.

use std::{env, path::PathBuf, process::Command};

const PROGRAMS: &[&str] = &["faults"];

fn main() {
    let ebpf_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("..")
        .join("ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    // asm/types.h lives under the multiarch include dir on Debian.
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64",
        Ok("aarch64") => "aarch64",
        Ok(other) => panic!("no eBPF include path known for target arch {other}"),
        Err(e) => panic!("CARGO_CFG_TARGET_ARCH: {e}"),
    };
    println!("cargo:rerun-if-env-changed=CLANG");
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("include").display()
    );

    for program in PROGRAMS {
        let source = ebpf_dir.join(format!("{program}.bpf.c"));
        let object = out_dir.join(format!("{program}.bpf.o"));
        println!("cargo:rerun-if-changed={}", source.display());
        let status = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{arch}-linux-gnu"))
            .arg("-I")
            .arg(ebpf_dir.join("include"))
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {clang} ({e}); install it with ./scripts/setup.sh")
            });
        assert!(status.success(), "{clang} failed on {}", source.display());
    }
}
