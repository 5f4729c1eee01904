//! What a command will map before its first instruction: the executable
//! (through `#!` interpreters) and its ELF dependencies, resolved the way
//! the dynamic loader resolves them (DT_RPATH, LD_LIBRARY_PATH, DT_RUNPATH,
//! /etc/ld.so.cache, default directories). `run` puts the uprobes on these
//! before it lets the child exec.

use std::{
    collections::{HashSet, VecDeque},
    path::{Path, PathBuf},
};

use object::{
    Endianness,
    elf::{DT_NEEDED, DT_RPATH, DT_RUNPATH, PT_DYNAMIC, PT_INTERP},
    read::elf::{Dyn, ElfFile64, ProgramHeader},
};

/// The files a command maps at start: `exe` (the ELF that really runs,
/// after `#!`), whether it is dynamic, and its resolved dependencies.
#[derive(Debug, Default)]
pub struct Planned {
    pub exe: Option<PathBuf>,
    pub dynamic: bool,
    pub libs: Vec<PathBuf>,
}

impl Planned {
    /// The exe and every library, exe first.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.exe.iter().chain(self.libs.iter())
    }
}

/// Dependencies beyond this many are not followed (a sanity bound).
const MAX_LIBS: usize = 512;

/// Resolves what running `prog` will map (`#!/usr/bin/env NAME` looks
/// NAME up in the PATH the child inherits: ours).
pub fn planned(prog: &Path) -> Planned {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let Some(exe) = real_exe(prog, &path, 4) else {
        return Planned::default();
    };
    let exe = std::fs::canonicalize(&exe).unwrap_or(exe);
    let mut out = Planned {
        exe: Some(exe.clone()),
        ..Planned::default()
    };
    let Ok(data) = std::fs::read(&exe) else {
        return out;
    };
    let Ok(elf) = ElfFile64::<Endianness>::parse(&*data) else {
        return out;
    };
    let machine = elf.elf_header().e_machine.get(elf.endian());
    out.dynamic = has_interp(&elf);
    if !out.dynamic {
        return out;
    }
    let cache = LdCache::load();
    let ld_library_path: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| {
            std::env::split_paths(&v)
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    // (file, the RPATHs of the objects that loaded it: DT_RPATH is inherited)
    let mut queue: VecDeque<(PathBuf, Vec<PathBuf>)> = VecDeque::new();
    queue.push_back((exe, Vec::new()));
    while let Some((file, inherited)) = queue.pop_front() {
        let Some(dy) = read_dynamic(&file) else {
            continue;
        };
        let origin = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let expand = |s: &str| -> Vec<PathBuf> {
            s.split(':')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let o = origin.to_string_lossy();
                    PathBuf::from(p.replace("${ORIGIN}", &o).replace("$ORIGIN", &o))
                })
                .collect()
        };
        let runpath = dy.runpath.as_deref().map(expand).unwrap_or_default();
        // DT_RPATH counts only without DT_RUNPATH, and is searched for the
        // object's own needs and those of everything it loads.
        let mut rpath = inherited;
        if dy.runpath.is_none()
            && let Some(r) = dy.rpath.as_deref()
        {
            rpath.extend(expand(r));
        }
        for name in &dy.needed {
            let found = if name.contains('/') {
                Some(PathBuf::from(name))
            } else {
                let rp: &[PathBuf] = if dy.runpath.is_none() { &rpath } else { &[] };
                rp.iter()
                    .chain(ld_library_path.iter())
                    .chain(runpath.iter())
                    .map(|d| d.join(name))
                    .find(|p| elf_of(p, machine))
                    .or_else(|| cache.find(name, machine))
                    .or_else(|| {
                        DEFAULT_DIRS
                            .iter()
                            .map(|d| Path::new(d).join(name))
                            .find(|p| elf_of(p, machine))
                    })
            };
            let Some(p) = found else {
                tracing::debug!("{}: needed {name} not found", file.display());
                continue;
            };
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            if seen.len() < MAX_LIBS && seen.insert(p.clone()) {
                out.libs.push(p.clone());
                queue.push_back((p, rpath.clone()));
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
const DEFAULT_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];
#[cfg(target_arch = "aarch64")]
const DEFAULT_DIRS: &[&str] = &[
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const DEFAULT_DIRS: &[&str] = &["/lib64", "/usr/lib64", "/lib", "/usr/lib"];

/// Follows `#!` lines (`#!/usr/bin/env NAME` through PATH) to the ELF file
/// the kernel will really run.
fn real_exe(prog: &Path, path: &std::ffi::OsStr, depth: u32) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(prog).ok()?.read(&mut head).ok()?;
    let head = &head[..n];
    if !head.starts_with(b"#!") {
        return Some(prog.to_path_buf());
    }
    if depth == 0 {
        return None;
    }
    let line = head[2..].split(|&b| b == b'\n').next()?;
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let interp = PathBuf::from(words.next()?);
    if interp.file_name().is_some_and(|f| f == "env") {
        // `env [-S] NAME` (the kernel passes everything after the
        // interpreter as one argument; `-S` splits it).
        let rest: Vec<&str> = line.split_whitespace().skip(1).collect();
        let name = rest
            .iter()
            .find(|w| !w.starts_with('-') && !w.contains('='))?;
        let found = if name.contains('/') {
            PathBuf::from(name)
        } else {
            std::env::split_paths(path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())?
        };
        return real_exe(&found, path, depth - 1);
    }
    real_exe(&interp, path, depth - 1)
}

fn has_interp(elf: &ElfFile64<Endianness>) -> bool {
    let e = elf.endian();
    elf.elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(e) == PT_INTERP)
}

/// Whether `p` is an ELF object for `machine` (the loader skips others).
fn elf_of(p: &Path, machine: u16) -> bool {
    use std::io::Read;
    let mut h = [0u8; 20];
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    if f.read_exact(&mut h).is_err() || &h[..4] != b"\x7fELF" || h[4] != 2 {
        return false;
    }
    let m = if h[5] == 1 {
        u16::from_le_bytes([h[18], h[19]])
    } else {
        u16::from_be_bytes([h[18], h[19]])
    };
    m == machine
}

#[derive(Default)]
struct Dynamic {
    needed: Vec<String>,
    rpath: Option<String>,
    runpath: Option<String>,
}

/// DT_NEEDED, DT_RPATH and DT_RUNPATH of an ELF file, read through its
/// program headers (as the loader does; section headers may be stripped).
fn read_dynamic(file: &Path) -> Option<Dynamic> {
    let data = std::fs::read(file).ok()?;
    let elf = ElfFile64::<Endianness>::parse(&*data).ok()?;
    let e = elf.endian();
    let phs = elf.elf_program_headers();
    let dynph = phs.iter().find(|ph| ph.p_type(e) == PT_DYNAMIC)?;
    let dyns = dynph.dynamic(e, &*data).ok()??;
    // DT_STRTAB holds a virtual address: map it to a file offset.
    let vaddr_to_off = |va: u64| {
        phs.iter()
            .filter(|ph| ph.p_type(e) == object::elf::PT_LOAD)
            .find(|ph| {
                let (start, fsz) = (ph.p_vaddr(e), ph.p_filesz(e));
                va >= start && va < start + fsz
            })
            .map(|ph| va - ph.p_vaddr(e) + ph.p_offset(e))
    };
    let mut strtab = None;
    for d in dyns {
        if d.d_tag(e) == object::elf::DT_STRTAB {
            strtab = vaddr_to_off(d.d_val(e));
        }
    }
    let strtab = strtab? as usize;
    let str_at = |off: u64| -> Option<String> {
        let s = data.get(strtab.checked_add(off as usize)?..)?;
        let end = s.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    let mut out = Dynamic::default();
    for d in dyns {
        let tag = d.d_tag(e);
        if tag == DT_NEEDED {
            out.needed.extend(str_at(d.d_val(e)));
        } else if tag == DT_RPATH {
            out.rpath = str_at(d.d_val(e));
        } else if tag == DT_RUNPATH {
            out.runpath = str_at(d.d_val(e));
        }
    }
    Some(out)
}

/// /etc/ld.so.cache (the "glibc-ld.so.cache1.1" format): soname -> path.
struct LdCache {
    entries: Vec<(String, PathBuf)>,
}

impl LdCache {
    fn load() -> LdCache {
        let entries = std::fs::read("/etc/ld.so.cache")
            .ok()
            .map(|d| parse_ld_cache(&d))
            .unwrap_or_default();
        LdCache { entries }
    }

    fn find(&self, name: &str, machine: u16) -> Option<PathBuf> {
        self.entries
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, p)| p)
            .find(|p| elf_of(p, machine))
            .cloned()
    }
}

fn parse_ld_cache(d: &[u8]) -> Vec<(String, PathBuf)> {
    const MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
    // The old format may come first; the new one follows it, 8-aligned.
    let Some(start) = d.windows(MAGIC.len()).position(|w| w == MAGIC) else {
        return Vec::new();
    };
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?)) };
    let Some(nlibs) = u32_at(start + 20) else {
        return Vec::new();
    };
    // header: magic+version 20, nlibs 4, len_strings 4, flags 1, pad 3,
    // extension_offset 4, unused 12 = 48; entries of 24 bytes follow. String
    // offsets count from the start of the new-format header.
    let str_at = |off: u32| -> Option<String> {
        let s = d.get(start + off as usize..)?;
        let end = s.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    (0..nlibs as usize)
        .filter_map(|i| {
            let e = start + 48 + i * 24;
            let key = str_at(u32_at(e + 4)?)?;
            let val = str_at(u32_at(e + 8)?)?;
            Some((key, PathBuf::from(val)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_cache_of_this_machine_names_libc() {
        let c = LdCache::load();
        if c.entries.is_empty() {
            return; // no cache (static or musl systems)
        }
        assert!(c.entries.iter().any(|(k, _)| k == "libc.so.6"));
    }

    #[test]
    fn a_dynamic_program_plans_its_libc() {
        let sh = Path::new("/bin/sh");
        let p = planned(sh);
        assert!(p.dynamic);
        assert!(
            p.libs
                .iter()
                .any(|l| l.file_name().is_some_and(|f| f == "libc.so.6")),
            "{p:?}"
        );
    }

    #[test]
    fn a_script_plans_its_interpreter() {
        let dir = std::env::temp_dir().join(format!("obs-deps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = dir.join("s");
        std::fs::write(&s, "#!/usr/bin/env sh\necho hi\n").unwrap();
        let p = planned(&s);
        let exe = p.exe.clone().unwrap();
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(exe, sh);
        assert!(!p.libs.is_empty());
    }
}
