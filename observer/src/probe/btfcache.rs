//! A minimized kernel BTF for the object's CO-RE relocations (the BTFGen
//! approach: `bpftool gen min_core_btf`), cached per kernel build and
//! object. Relocating against the full kernel BTF (~150 000 types, a linear
//! candidate search per relocated type) was most of the observer's start;
//! against the minimized one (a few dozen types) it is nothing. The full BTF
//! is still parsed, on another thread, for what needs the kernel's own type
//! IDs (tp_btf and fentry attach).
//!
//! The first run on a kernel (or after the object changed) uses the full
//! BTF and starts `bpftool` in the background to write the cache; no
//! bpftool, an unwritable cache or a file that fails to load: the full BTF,
//! as before. `OBSERVER_BTF_CACHE=0` turns the cache off.

use std::{
    hash::{Hash, Hasher},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    process::{Command, Stdio},
};

use aya::Btf;

const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// The cache directory: $XDG_CACHE_HOME/observer, else /var/cache/observer
/// as root, else ~/.cache/observer.
fn dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("observer"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Some(PathBuf::from("/var/cache/observer"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/observer"))
}

/// The GNU build-id in an ELF notes section (/sys/kernel/notes), hex.
fn build_id(n: &[u8]) -> Option<String> {
    let u32_at = |i: usize| -> Option<usize> {
        Some(u32::from_ne_bytes(n.get(i..i + 4)?.try_into().ok()?) as usize)
    };
    let mut i = 0;
    while let (Some(namesz), Some(descsz), Some(ty)) = (u32_at(i), u32_at(i + 4), u32_at(i + 8)) {
        let name_at = i + 12;
        let desc_at = name_at.checked_add(namesz.div_ceil(4) * 4)?;
        let next = desc_at.checked_add(descsz.div_ceil(4) * 4)?;
        if ty == 3
            && n.get(name_at..name_at + namesz) == Some(b"GNU\0")
            && let Some(d) = n.get(desc_at..desc_at + descsz)
        {
            return Some(d.iter().map(|b| format!("{b:02x}")).collect());
        }
        i = next;
    }
    None
}

/// The running kernel's build-id; else a hash of /proc/version (release,
/// build number and date).
fn kernel_id() -> String {
    if let Some(id) = std::fs::read("/sys/kernel/notes")
        .ok()
        .and_then(|n| build_id(&n))
    {
        return id;
    }
    let v = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    format!("v{:016x}", h.finish())
}

/// Where the minimized BTF of `obj` for this kernel lives.
fn path_for(obj: &[u8]) -> Option<PathBuf> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    obj.hash(&mut h);
    let vm = std::fs::metadata(VMLINUX).ok()?;
    vm.len().hash(&mut h);
    Some(dir()?.join(format!("min-core-{}-{:016x}.btf", kernel_id(), h.finish())))
}

/// The cached minimized BTF for `obj`, if there is one we trust (ours,
/// not writable by others). Without one, starts writing it (background
/// `bpftool`, outliving us if need be) and returns None.
pub fn min_core_btf(obj: &[u8]) -> Option<Btf> {
    if std::env::var_os("OBSERVER_BTF_CACHE").is_some_and(|v| v == "0") {
        return None;
    }
    let path = path_for(obj)?;
    match std::fs::metadata(&path) {
        // SAFETY: geteuid has no preconditions.
        Ok(md) if md.uid() == unsafe { libc::geteuid() } && md.mode() & 0o022 == 0 => {
            match Btf::parse_file(&path, aya::Endianness::default()) {
                Ok(b) => return Some(b),
                Err(e) => {
                    tracing::debug!("{}: {e}; writing it again", path.display());
                }
            }
        }
        Ok(_) => {
            tracing::debug!("{}: not ours or writable by others: unused", path.display());
            return None;
        }
        Err(_) => {}
    }
    generate(&path, obj);
    None
}

/// Starts `bpftool gen min_core_btf` writing `path` (through a temporary
/// name, renamed when complete).
fn generate(path: &std::path::Path, obj: &[u8]) {
    let Some(d) = path.parent() else { return };
    if std::fs::create_dir_all(d).is_err() {
        return;
    }
    let me = std::process::id();
    let o = d.join(format!(".obj-{me}.o"));
    if std::fs::write(&o, obj).is_err() {
        return;
    }
    let spawned = Command::new("sh")
        .args([
            "-c",
            "bpftool gen min_core_btf \"$0\" \"$1.$$.tmp\" \"$2\" && mv \"$1.$$.tmp\" \"$1\"; \
             rm -f \"$2\" \"$1.$$.tmp\"",
            VMLINUX,
        ])
        .arg(path)
        .arg(&o)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match spawned {
        Ok(_) => tracing::debug!("writing {} in the background", path.display()),
        Err(e) => {
            tracing::debug!("cannot run sh for bpftool: {e}");
            let _ = std::fs::remove_file(&o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::build_id;

    #[test]
    fn build_id_from_kernel_notes() {
        // As in /sys/kernel/notes: the GNU build-id note, then a Linux one.
        let mut n = Vec::new();
        for w in [4u32, 20, 3] {
            n.extend(w.to_ne_bytes());
        }
        n.extend(b"GNU\0");
        n.extend((1..=20u8).collect::<Vec<_>>());
        for w in [6u32, 4, 0x101] {
            n.extend(w.to_ne_bytes());
        }
        n.extend(b"Linux\0\0\0");
        n.extend([0u8; 4]);
        assert_eq!(
            build_id(&n).as_deref(),
            Some("0102030405060708090a0b0c0d0e0f1011121314")
        );
        // Another note first, a truncated one, nothing.
        let mut other = Vec::new();
        for w in [6u32, 4, 0x101] {
            other.extend(w.to_ne_bytes());
        }
        other.extend(b"Linux\0\0\0");
        other.extend([0u8; 4]);
        other.extend(&n);
        assert_eq!(build_id(&other), build_id(&n));
        assert_eq!(build_id(&n[..30]), None);
        assert_eq!(build_id(&[]), None);
    }
}
