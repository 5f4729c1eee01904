//! ELF sections of the modules a live process maps, located from outside:
//! CPython 3.14+'s `_asyncio` publishes its offsets in `.AsyncioDebug`
//! (`_Py_AsyncioModuleDebugOffsets`), in the `_asyncio` extension module
//! or, when it is built in, in the interpreter or libpython.

use std::{collections::HashMap, os::unix::fs::MetadataExt, path::PathBuf, sync::Mutex};

use object::{Object, ObjectSection, ObjectSegment};

/// (device, inode, size, mtime, section) -> the section's link-time
/// address and the link-time address of the file's first page.
type Cache = HashMap<(u64, u64, u64, i64, String), Option<(u64, u64)>>;
static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// Where section `name` is loaded in process `pid`: in the first mapped
/// file whose name contains `files[0]`, else `files[1]`, ... that has it.
pub fn find(pid: u32, name: &str, files: &[&str]) -> Option<u64> {
    let maps = crate::sys::read_proc(&format!("/proc/{pid}/maps"))?;
    // Each file's mapping of its first page: (start, end, path).
    let heads: Vec<(u64, u64, &str)> = maps
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, _perms, offset) = (f.next()?, f.next()?, f.next()?);
            let path = f.nth(2)?;
            let (s, e) = range.split_once('-')?;
            (u64::from_str_radix(offset, 16).ok()? == 0 && path.starts_with('/')).then_some((
                u64::from_str_radix(s, 16).ok()?,
                u64::from_str_radix(e, 16).ok()?,
                path,
            ))
        })
        .collect();
    for want in files {
        for &(start, end, path) in &heads {
            let file = path.rsplit('/').next().unwrap_or("");
            if !file.contains(want) {
                continue;
            }
            if let Some((addr, first_page)) = in_file(pid, start, end, path, name) {
                return Some(start.wrapping_sub(first_page).wrapping_add(addr));
            }
        }
    }
    None
}

/// The section's address and the first page's, as linked, in the file
/// mapped at `start..end` (read through map_files, else the target's root).
fn in_file(pid: u32, start: u64, end: u64, path: &str, name: &str) -> Option<(u64, u64)> {
    let candidates = [
        PathBuf::from(format!("/proc/{pid}/map_files/{start:x}-{end:x}")),
        PathBuf::from(format!("/proc/{pid}/root{path}")),
    ];
    let (p, m) = candidates
        .into_iter()
        .find_map(|p| Some((std::fs::metadata(&p).ok()?, p)).map(|(m, p)| (p, m)))?;
    let key = (m.dev(), m.ino(), m.size(), m.mtime(), name.to_string());
    if let Some(hit) = CACHE.lock().ok()?.get_or_insert_default().get(&key) {
        return *hit;
    }
    let found = (|| {
        let f = std::fs::File::open(&p).ok()?;
        let data = object::read::ReadCache::new(f);
        let elf = object::File::parse(&data).ok()?;
        let addr = elf.section_by_name(name)?.address();
        let first = elf.segments().find(|s| s.file_range().0 == 0)?.address() & !0xfff;
        Some((addr, first))
    })();
    if let Ok(mut c) = CACHE.lock() {
        c.get_or_insert_default().insert(key, found);
    }
    found
}

/// The bytes of section `name` in the ELF file at `path` (tests: the
/// offsets a build publishes, read from the file on disk).
#[cfg(test)]
pub fn file_section(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let data = std::fs::read(path).ok()?;
    let elf = object::File::parse(&*data).ok()?;
    Some(elf.section_by_name(name)?.data().ok()?.to_vec())
}
