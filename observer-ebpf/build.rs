//! Compiles the C BPF programs with clang and generates the Rust record
//! types from the one shared header (src/bpf/observer.h).
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

const SOURCES: &[&str] = &["observer", "bench"];

fn target_arch_define() -> &'static str {
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "-D__TARGET_ARCH_x86",
        Ok("aarch64") => "-D__TARGET_ARCH_arm64",
        Ok(other) => panic!("observer-ebpf: unsupported target arch {other}"),
        Err(_) => panic!("observer-ebpf: CARGO_CFG_TARGET_ARCH unset"),
    }
}

fn clang() -> String {
    env::var("BPF_CLANG").unwrap_or_else(|_| "clang-19".into())
}

fn multiarch_include() -> Option<String> {
    let out = Command::new("gcc").arg("-print-multiarch").output().ok()?;
    let triple = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!triple.is_empty()).then(|| format!("-I/usr/include/{triple}"))
}

fn compile(src_dir: &Path, out: &Path, name: &str) {
    let src = src_dir.join(format!("{name}.bpf.c"));
    let obj = out.join(format!("{name}.bpf.full.o"));
    let mut cmd = Command::new(clang());
    cmd.args([
        "-target",
        "bpf",
        target_arch_define(),
        "-O2",
        "-g",
        "-Wall",
        "-Werror",
    ])
    .arg(format!("-I{}", src_dir.display()));
    if let Some(inc) = multiarch_include() {
        cmd.arg(inc);
    }
    cmd.arg("-c").arg(&src).arg("-o").arg(&obj);
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}): install clang-19 and libbpf-dev (`./x setup` does it)",
            clang()
        )
    });
    assert!(status.success(), "clang failed on {}", src.display());
    // Drop DWARF, keep .BTF/.BTF.ext (CO-RE needs them): ~10x smaller.
    let stripped = out.join(format!("{name}.bpf.o"));
    let strip = env::var("BPF_STRIP").unwrap_or_else(|_| "llvm-strip-19".into());
    let ok = Command::new(&strip)
        .arg("-g")
        .arg(&obj)
        .arg("-o")
        .arg(&stripped)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        std::fs::copy(&obj, &stripped).expect("copy BPF object");
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let src_dir = manifest.join("src/bpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=BPF_CLANG");
    println!("cargo:rerun-if-env-changed=BPF_STRIP");
    for f in ["observer.h", "vmlinux.h"] {
        println!("cargo:rerun-if-changed={}", src_dir.join(f).display());
    }
    for name in SOURCES {
        println!(
            "cargo:rerun-if-changed={}",
            src_dir.join(format!("{name}.bpf.c")).display()
        );
        compile(&src_dir, &out, name);
    }

    bindgen::Builder::default()
        .header(src_dir.join("observer.h").to_str().unwrap())
        .allowlist_type("obs_.*")
        .allowlist_var("OBS_.*")
        .rustified_enum("obs_rec_kind")
        .rustified_enum("obs_stat")
        .rustified_enum("obs_pthread_op")
        .rustified_enum("obs_lock_kind")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate()
        .expect("bindgen on observer.h")
        .write_to_file(out.join("observer_h.rs"))
        .expect("write bindings");
}
