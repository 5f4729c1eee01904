//! /proc/PID/maps, grouped into modules (one per mapped ELF file), with the
//! load bias and address extents each module needs for unwinding and for
//! symbolizing code and data addresses.
//!
//! Everything read here comes from the target: paths are kept as data, never
//! interpreted beyond opening the file they name.

use std::{
    collections::HashMap,
    ops::Range,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::MapEntry;
use super::elf::{ElfInfo, FileKey};
pub(super) use observer_core::vocab::frames::parse_maps;

/// A mapped ELF file (or the vDSO) in one process.
#[derive(Clone, Debug)]
pub(super) struct Module {
    /// The name to show: the path from maps, or "[vdso]".
    pub name: String,
    /// The file to open (None for the vDSO, whose image lives only in memory).
    pub open_path: Option<PathBuf>,
    /// avma = svma + bias.
    pub bias: u64,
    /// Addresses covered by the module's PT_LOAD segments (includes .bss).
    pub extent: Range<u64>,
    /// Executable mappings (min start .. max end).
    pub code: Range<u64>,
    pub elf: Arc<ElfInfo>,
}

impl Module {
    pub fn svma(&self, avma: u64) -> u64 {
        avma.wrapping_sub(self.bias)
    }
}

/// What the target's mount namespace looks like from here.
pub(super) fn same_root(pid: u32) -> bool {
    let ns = |p: &str| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let root_is_slash =
        std::fs::read_link(format!("/proc/{pid}/root")).is_ok_and(|p| p.as_os_str() == "/");
    root_is_slash
        && ns(&format!("/proc/{pid}/ns/mnt")).is_some()
        && ns(&format!("/proc/{pid}/ns/mnt")) == ns("/proc/self/ns/mnt")
}

/// Finds the files a live process's mappings name (see [`open_path`]).
pub(super) fn live_opener(pid: u32) -> impl FnMut(&MapEntry) -> Option<(PathBuf, FileKey)> {
    let same_root = same_root(pid);
    move |e| open_path(pid, e, same_root)
}

/// The path through which we can open the file a mapping names, checked
/// against the mapping's device and inode; falls back to map_files (which
/// also covers deleted and replaced files).
fn open_path(pid: u32, e: &MapEntry, same_root: bool) -> Option<(PathBuf, FileKey)> {
    let key_of = |p: &PathBuf| -> Option<FileKey> {
        let m = std::fs::metadata(p).ok()?;
        Some(FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
        })
    };
    let matches = |k: &FileKey| {
        k.ino == e.inode && libc::major(k.dev) == e.dev.0 && libc::minor(k.dev) == e.dev.1
    };
    if !e.path.ends_with(" (deleted)") {
        let p = if same_root {
            PathBuf::from(&e.path)
        } else {
            PathBuf::from(format!("/proc/{pid}/root{}", e.path))
        };
        if let Some(k) = key_of(&p).filter(matches) {
            return Some((p, k));
        }
    }
    let p = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", e.start, e.end));
    if let Some(k) = key_of(&p) {
        return Some((p, k));
    }
    // An exiting process has no root or map_files any more: the same file
    // (device and inode) at the same path here will do.
    let p = PathBuf::from(&e.path);
    key_of(&p).filter(matches).map(|k| (p, k))
}

/// The file a recorded mapping named, for a process that is gone: its
/// path, if the file there is still the one that was mapped (same build-id,
/// or same device and inode when the file has none).
pub(super) fn open_recorded(
    e: &MapEntry,
    build_id_of: impl FnOnce(&Path, FileKey) -> Option<String>,
) -> Option<(PathBuf, FileKey)> {
    let p = PathBuf::from(e.path.strip_suffix(" (deleted)").unwrap_or(&e.path));
    let m = std::fs::metadata(&p).ok()?;
    let k = FileKey {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: m.mtime(),
        mtime_ns: m.mtime_nsec(),
    };
    let same_inode =
        k.ino == e.inode && libc::major(k.dev) == e.dev.0 && libc::minor(k.dev) == e.dev.1;
    let ok = if e.build_id.is_empty() {
        same_inode
    } else {
        build_id_of(&p, k).is_some_and(|b| b == e.build_id)
    };
    ok.then_some((p, k))
}

/// Builds the module list of process `pid` from its maps. `open` finds the
/// file a mapping names (live: [`live_opener`]; gone: [`open_recorded`]);
/// `elf_of` parses (or returns the cached) ELF info for a file; `vdso` does
/// the same for the vDSO image in the target's memory.
pub(super) fn modules(
    entries: &[MapEntry],
    mut open: impl FnMut(&MapEntry) -> Option<(PathBuf, FileKey)>,
    mut elf_of: impl FnMut(&Path, FileKey) -> Option<Arc<ElfInfo>>,
    mut vdso: impl FnMut(Range<u64>) -> Option<Arc<ElfInfo>>,
) -> Vec<Module> {
    // Group file mappings by (dev, inode, path), keeping the order of first appearance.
    let mut groups: Vec<Vec<&MapEntry>> = Vec::new();
    let mut index: HashMap<(u32, u32, u64, &str), usize> = HashMap::new();
    for e in entries.iter().filter(|e| e.is_file()) {
        let k = (e.dev.0, e.dev.1, e.inode, e.path.as_str());
        let i = *index.entry(k).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[i].push(e);
    }
    let mut out = Vec::new();
    for g in groups {
        // Only files with an executable mapping or that look like ELF
        // objects matter; data files (locale archives, fonts) fail to
        // parse and are skipped by elf_of.
        let first = g.iter().min_by_key(|e| e.start).expect("non-empty group");
        let Some((path, key)) = open(first) else {
            continue;
        };
        let Some(elf) = elf_of(&path, key) else {
            continue;
        };
        let Some(bias) = elf.bias_for(first.start, first.offset) else {
            continue;
        };
        let code = g
            .iter()
            .filter(|e| e.exec)
            .fold(None::<Range<u64>>, |acc, e| match acc {
                None => Some(e.start..e.end),
                Some(r) => Some(r.start.min(e.start)..r.end.max(e.end)),
            })
            .unwrap_or(0..0);
        let extent = elf.vaddr_extent();
        out.push(Module {
            name: first.path.clone(),
            open_path: Some(path),
            bias,
            extent: extent.start.wrapping_add(bias)..extent.end.wrapping_add(bias),
            code,
            elf,
        });
    }
    if let Some(v) = entries.iter().find(|e| e.path == "[vdso]")
        && let Some(elf) = vdso(v.start..v.end)
        && let Some(bias) = elf.bias_for(v.start, 0)
    {
        out.push(Module {
            name: "[vdso]".into(),
            open_path: None,
            bias,
            extent: v.start..v.end,
            code: v.start..v.end,
            elf,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let text = "\
55d0c8a00000-55d0c8a01000 r--p 00000000 fe:00 1234                       /tmp/a b/prog
55d0c8a01000-55d0c8a02000 r-xp 00001000 fe:00 1234                       /tmp/a b/prog
7ffd1a2b3000-7ffd1a2d4000 rw-p 00000000 00:00 0                          [stack]
7f0000000000-7f0000001000 rw-p 00000000 00:00 0 
garbage line
7f0000001000-7f0000002000 r-xp 00000000 fe:00 99                         /usr/lib/libx.so (deleted)
";
        let m = parse_maps(text);
        assert_eq!(m.len(), 5);
        assert_eq!(m[0].path, "/tmp/a b/prog");
        assert!(m[1].exec && !m[1].write);
        assert_eq!(m[1].offset, 0x1000);
        assert_eq!(m[1].dev, (0xfe, 0));
        assert_eq!(m[2].path, "[stack]");
        assert_eq!(m[3].path, "");
        assert_eq!(m[4].path, "/usr/lib/libx.so (deleted)");
        assert!(!m[3].is_file() && m[4].is_file());
    }
}
