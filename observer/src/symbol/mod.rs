//! Symbols, stacks and Python awareness.
//!
//! - [`data_symbol`]: the global a lock lives in (`lock_left`), from the ELF
//!   symbol tables of the executable or shared library that maps it.
//! - [`native_stack`]: the native stack of a thread blocked in a syscall,
//!   without stopping the target: the stack is copied with
//!   `process_vm_readv`, unwound with DWARF CFI (framehop, `.eh_frame` /
//!   `.debug_frame`) and symbolized with blazesym (functions, inlined
//!   frames, file:line where debug info exists — in the file or through
//!   `.gnu_debuglink` / build-id — and module+offset otherwise).
//! - [`proc_syscall`]: what /proc says a blocked thread is doing.
//! - [`python_threads`]: CPython thread names, stacks and the GIL holder
//!   (py-spy as a library, never pausing the target).
//!
//! A [`Symbolizer`] caches per-process state (maps, unwind info, py-spy's
//! interpreter layout) and per-file state (parsed files, blazesym's
//! caches), which symbolizers on one thread may share ([`SharedFiles`]);
//! the free functions use one per calling thread. Strings that come from the target
//! (paths, function and thread names) are data: reports escape them.
//!
//! x86_64 only (register set and unwinder).

mod dwarf;
mod elf;
mod maps;
mod native;
mod python;
mod stack;
#[cfg(test)]
mod tests;

use std::{
    cell::RefCell,
    collections::{HashMap, HashSet},
    ops::Range,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use blazesym::symbolize::{self as bz, Input, Symbolized, source::Source};
use framehop::FrameAddress;
use serde::{Deserialize, Serialize};

use elf::{ElfInfo, FileKey};
pub use maps::MapEntry;
use maps::Module;
#[allow(unused_imports)]
pub use python::{PyFrame, PyThread};
pub use stack::{StackFrame, is_interpreter_frame, merge as merge_stacks, serialize_native};

/// Entry flags (see [`PyThread::entries`]) for `frames`, a Python stack read
/// by the observer's own walk, from py-spy's read of the same thread: only
/// when both show the same frames (a thread that moved between the reads
/// gets none).
pub fn entries_for(frames: &[PyFrame], spy: Option<&PyThread>) -> Vec<bool> {
    match spy {
        Some(t)
            if t.entries.len() == frames.len()
                && t.frames.len() == frames.len()
                && t.frames.iter().zip(frames).all(|(a, b)| a.file == b.file) =>
        {
            t.entries.clone()
        }
        _ => Vec::new(),
    }
}

/// A global/static data symbol for an address in the target (locks that are
/// globals: `lock_a`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSymbol {
    pub name: String,
    /// Bytes from the start of the symbol.
    pub offset: u64,
    /// The mapped file as /proc/PID/maps names it.
    pub module: String,
}

/// One native frame, innermost first. Inlined functions get their own
/// frames (`inlined: true`) before the function they were inlined into,
/// all with the same `addr`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The instruction pointer (first frame) or the return address.
    pub addr: u64,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The mapped file as /proc/PID/maps names it, or "[vdso]".
    pub module: Option<String>,
    /// `addr` as a virtual address of the module's ELF file (what
    /// `addr2line -e MODULE` and `objdump` take); `addr` itself when the
    /// address is in no known module.
    pub module_offset: u64,
    pub inlined: bool,
}

/// User registers of a blocked thread: from BPF at syscall entry (ip, sp,
/// bp) or from /proc/PID/task/TID/syscall (sp and pc only; bp = 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Regs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// How long parsed maps are trusted before they are read again.
const MAPS_TTL: Duration = Duration::from_secs(1);
/// Parsed files kept before the file cache is dropped (they are shared
/// between processes, so this bounds memory, not correctness).
const MAX_FILES: usize = 1024;
/// Recorded mappings kept before those of gone processes are dropped.
const MAX_RECORDED: usize = 4096;
/// Files (path and build-id) blazesym has parsed before its caches are
/// dropped: a long-lived symbolizer sees programs come and go.
const MAX_BLAZE_FILES: usize = 256;

/// What is parsed per file: blazesym's parsed ELF and DWARF (keyed by
/// path, checked against the file's metadata on each use) and our ELF info
/// (keyed by device, inode, size and mtime). The same for every process
/// that maps the file, so symbolizers on one thread may share it: the
/// daemon's per-process sessions parse libc's debug info once, not once per
/// process. Not `Send` (blazesym's symbolizer is not).
#[derive(Clone)]
pub struct SharedFiles(Rc<RefCell<Files>>);

struct Files {
    blaze: Rc<bz::Symbolizer>,
    /// Without the system's debug directories (tests).
    no_debug_dirs: bool,
    /// (path, build-id) of the files blazesym was asked about.
    blaze_files: HashSet<(PathBuf, String)>,
    elf: HashMap<FileKey, Option<Arc<ElfInfo>>>,
    /// DWARF variables per file (mapped path and build-id), parsed when
    /// an address in its data is first named.
    dwarf: HashMap<(String, String), Option<Arc<dwarf::DwarfVars>>>,
}

fn blaze(no_debug_dirs: bool) -> bz::Symbolizer {
    let mut b = bz::Symbolizer::builder();
    if no_debug_dirs {
        b = b.set_debug_dirs(Some::<[&str; 0]>([]));
    }
    b.enable_code_info(true)
        .enable_inlined_fns(true)
        // Names are demangled by [`demangle`]: only mangled ones.
        .enable_demangling(false)
        .build()
}

impl SharedFiles {
    pub fn new() -> SharedFiles {
        Self::with(false)
    }

    fn with(no_debug_dirs: bool) -> SharedFiles {
        SharedFiles(Rc::new(RefCell::new(Files {
            blaze: Rc::new(blaze(no_debug_dirs)),
            no_debug_dirs,
            blaze_files: HashSet::new(),
            elf: HashMap::new(),
            dwarf: HashMap::new(),
        })))
    }

    /// blazesym's symbolizer, to symbolize in `m`'s file: dropped for a
    /// fresh one once it has parsed too many files.
    fn blaze_for(&self, m: &Module) -> Rc<bz::Symbolizer> {
        let mut f = self.0.borrow_mut();
        if let Some(path) = &m.open_path {
            let key = (path.clone(), m.elf.build_id.clone());
            if !f.blaze_files.contains(&key) {
                if f.blaze_files.len() >= MAX_BLAZE_FILES {
                    f.blaze = Rc::new(blaze(f.no_debug_dirs));
                    f.blaze_files.clear();
                }
                f.blaze_files.insert(key);
            }
        }
        f.blaze.clone()
    }

    /// The DWARF variables of `m`'s file, parsed once.
    fn dwarf_for(&self, m: &Module) -> Option<Arc<dwarf::DwarfVars>> {
        let path = m.open_path.as_ref()?;
        let key = (m.name.clone(), m.elf.build_id.clone());
        if let Some(d) = self.0.borrow().dwarf.get(&key) {
            return d.clone();
        }
        let dirs: &[&str] = if self.0.borrow().no_debug_dirs {
            &[]
        } else {
            &["/usr/lib/debug"]
        };
        let d = dwarf::DwarfVars::load(path, &m.elf.build_id, dirs).map(Arc::new);
        let mut f = self.0.borrow_mut();
        if f.dwarf.len() >= MAX_BLAZE_FILES {
            f.dwarf.clear();
        }
        f.dwarf.insert(key, d.clone());
        d
    }
}

/// A symbol name as the source spells it: mangled C++ (`_Z...`) and Rust
/// (`_R...`, legacy `_ZN...E`) names are demangled, every other name is
/// kept as it is (a C global `c` is not the C++ type `char`).
pub fn demangle(name: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    if !(name.starts_with("_Z") || name.starts_with("_R")) {
        return Cow::Borrowed(name);
    }
    // Suffixes the compiler adds to clones (`.cold`, `.isra.0`) stay.
    let (base, suffix) = match name.find('.') {
        Some(i) => name.split_at(i),
        None => (name, ""),
    };
    if let Ok(d) = rustc_demangle::try_demangle(base) {
        return Cow::Owned(format!("{d:#}{suffix}"));
    }
    if base.starts_with("_Z")
        && let Ok(sym) = cpp_demangle::Symbol::new(base)
        && let Ok(d) = sym.demangle()
    {
        return Cow::Owned(format!("{d}{suffix}"));
    }
    Cow::Borrowed(name)
}

impl Default for SharedFiles {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-process state.
struct Proc {
    start_time: u64,
    /// Built from recorded mappings: the process is gone (or its PID now
    /// names another process), so its files are opened by path.
    gone: bool,
    read_at: Instant,
    maps: Vec<MapEntry>,
    modules: Vec<Module>,
    unwinder: native::Unwinder64,
    cache: framehop::x86_64::CacheX86_64,
    creation: native::CreationCache,
}

impl Proc {
    fn module_of_code(&self, addr: u64) -> Option<&Module> {
        self.modules.iter().find(|m| m.code.contains(&addr))
    }

    fn module_of_data(&self, addr: u64) -> Option<&Module> {
        self.modules.iter().find(|m| m.extent.contains(&addr))
    }

    fn mapping_of(&self, addr: u64) -> Option<&MapEntry> {
        self.maps.iter().find(|e| e.start <= addr && addr < e.end)
    }
}

/// The file mappings of a process as last read (or as recorded).
struct Recorded {
    /// 0: unknown (loaded from a recording).
    start_time: u64,
    maps: Vec<MapEntry>,
}

/// Caches what symbolizing a process needs. Not `Send` (blazesym's
/// symbolizer is not): keep one per thread.
pub struct Symbolizer {
    /// Never read /proc: symbolize only from recorded mappings (replay).
    offline: bool,
    recorded: HashMap<u32, Recorded>,
    /// Mappings read since the last [`Symbolizer::take_new_maps`].
    new_maps: Vec<(u32, Vec<MapEntry>)>,
    shared: SharedFiles,
    procs: HashMap<u32, Proc>,
    pythons: HashMap<u32, (u64, py_spy::PythonSpy)>,
    /// CPython interpreters found from their symbols, per process.
    located: HashMap<u32, (u64, crate::python::Located)>,
    /// Real return addresses hidden behind uretprobe trampolines, per
    /// thread, innermost first (see `set_return_fixups`).
    ret_fixups: HashMap<u32, Vec<u64>>,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

/// The start time (clock ticks since boot) of process `pid`, which tells a
/// reused PID from the process we cached. A value read in the last 50 ms is
/// reused: reading a many-threaded process's stat sums all its threads, and
/// a stack walk asks once per thread and symbol. A PID cannot be reused that
/// fast (the PID space would have to wrap); a death in that window makes
/// the reads that follow fail, as they would anyway.
fn start_time(pid: u32) -> Option<u64> {
    const FRESH: std::time::Duration = std::time::Duration::from_millis(50);
    thread_local! {
        static SEEN: std::cell::RefCell<HashMap<u32, (Instant, u64)>> = Default::default();
    }
    if let Some(st) = SEEN.with_borrow(|m| {
        m.get(&pid)
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, st)| *st)
    }) {
        return Some(st);
    }
    let s = crate::sys::read_proc(&format!("/proc/{pid}/stat"))?;
    // The comm field may hold spaces and parentheses: fields follow the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let st: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    SEEN.with_borrow_mut(|m| {
        if m.len() > 4096 {
            m.clear();
        }
        m.insert(pid, (Instant::now(), st));
    });
    Some(st)
}

/// Reads /proc/PID/task/TID/syscall: `(nr, args, sp, pc)` for a thread in a
/// syscall. `nr` is -1 (args zero) for a thread that is stopped outside a
/// syscall; None when the thread is running, gone or unreadable.
pub fn proc_syscall(pid: u32, tid: u32) -> Option<(i64, [u64; 6], u64, u64)> {
    let s = crate::sys::read_proc(&format!("/proc/{pid}/task/{tid}/syscall"))?;
    parse_syscall(&s)
}

fn parse_syscall(s: &str) -> Option<(i64, [u64; 6], u64, u64)> {
    let hex = |f: &str| u64::from_str_radix(f.strip_prefix("0x").unwrap_or(f), 16).ok();
    let f: Vec<&str> = s.split_whitespace().collect();
    let nr: i64 = f.first()?.parse().ok()?;
    match f.len() {
        9 if nr >= 0 => {
            let mut args = [0u64; 6];
            for (a, v) in args.iter_mut().zip(&f[1..7]) {
                *a = hex(v)?;
            }
            Some((nr, args, hex(f[7])?, hex(f[8])?))
        }
        3 if nr == -1 => Some((-1, [0; 6], hex(f[1])?, hex(f[2])?)),
        _ => None,
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        Self::sharing(SharedFiles::new())
    }

    /// Without the system's debug directories (/usr/lib/debug): what a
    /// machine without -dbg packages sees.
    #[cfg(test)]
    fn without_debug_dirs() -> Self {
        Self::sharing(SharedFiles::with(true))
    }

    /// A symbolizer of its own processes that shares what is parsed per
    /// file with every other made from `files`.
    pub fn sharing(files: SharedFiles) -> Self {
        Symbolizer {
            offline: false,
            recorded: HashMap::new(),
            new_maps: Vec::new(),
            shared: files,
            procs: HashMap::new(),
            pythons: HashMap::new(),
            located: HashMap::new(),
            ret_fixups: HashMap::new(),
        }
    }

    /// With uretprobes on a thread's pending calls (observer --uprobes),
    /// the return addresses on its stack point into the kernel's [uprobes]
    /// trampoline page. `sites` are the real ones, innermost call first:
    /// the next unwinding of `tid` puts them back in place.
    pub fn set_return_fixups(&mut self, tid: u32, sites: Vec<u64>) {
        self.ret_fixups.insert(tid, sites);
    }

    /// A symbolizer that never reads /proc (replay: the PIDs of a
    /// recording may name other processes now): it symbolizes from the
    /// mappings given to [`Symbolizer::add_recorded`] and the files they name.
    pub fn offline() -> Self {
        Symbolizer {
            offline: true,
            ..Self::new()
        }
    }

    /// Drops what is cached about `pid` (call on exec: a new image).
    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
        self.pythons.remove(&pid);
        self.recorded.remove(&pid);
    }

    /// Reads the mappings of `pid` now (at exec, at attach), so that its
    /// addresses can be symbolized after it is gone.
    pub fn read_maps_now(&mut self, pid: u32) {
        if let Err(e) = self.proc(pid, true) {
            tracing::debug!("mappings of {pid}: {e:#}");
        }
    }

    /// A new image in `pid` (exec): reads its mappings now; if the process
    /// is gone already, records its executable's mapping from what the
    /// kernel said at exec (`image`), the file found at `filename` (or
    /// relative to our directory) if it is the same inode.
    pub fn exec(&mut self, pid: u32, filename: &str, image: Option<crate::event::ExeImage>) {
        self.forget(pid);
        self.read_maps_now(pid);
        let Some(img) = image else { return };
        if self
            .recorded
            .get(&pid)
            .is_some_and(|r| r.maps.iter().any(|e| e.inode == img.inode))
        {
            return;
        }
        let path = match std::path::absolute(filename) {
            Ok(p) => p,
            Err(_) => return,
        };
        let entry = MapEntry {
            start: img.start_code,
            end: img.end_code,
            read: true,
            write: false,
            exec: true,
            offset: 0,
            dev: img.dev,
            inode: img.inode,
            path: path.to_string_lossy().into_owned(),
            build_id: String::new(),
        };
        let Some((p, key)) = maps::open_recorded(&entry, |_, _| None) else {
            tracing::debug!("exec of {pid}: {filename} is not the file it ran");
            return;
        };
        let Some(info) = Self::elf_info(&mut self.shared.0.borrow_mut().elf, &p, key) else {
            return;
        };
        let Some((offset, _)) = info.first_exec_load() else {
            return;
        };
        let entry = MapEntry {
            offset,
            build_id: info.build_id.clone(),
            ..entry
        };
        self.procs.remove(&pid);
        self.new_maps.push((pid, vec![entry.clone()]));
        self.recorded.insert(
            pid,
            Recorded {
                start_time: 0,
                maps: vec![entry],
            },
        );
    }

    /// The file mappings read since the last call, per process, for the
    /// recorded stream (`mappings` events).
    pub fn take_new_maps(&mut self) -> Vec<(u32, Vec<MapEntry>)> {
        std::mem::take(&mut self.new_maps)
    }

    /// Mappings of `pid` recorded earlier (a `mappings` event).
    pub fn add_recorded(&mut self, pid: u32, maps: Vec<MapEntry>) {
        let start_time = if self.offline {
            0
        } else {
            self.recorded.get(&pid).map_or(0, |r| r.start_time)
        };
        self.procs.remove(&pid);
        self.recorded.insert(pid, Recorded { start_time, maps });
    }

    fn elf_info(
        files: &mut HashMap<FileKey, Option<Arc<ElfInfo>>>,
        path: &Path,
        key: FileKey,
    ) -> Option<Arc<ElfInfo>> {
        files
            .entry(key)
            .or_insert_with(|| ElfInfo::from_file(path).map(Arc::new))
            .clone()
    }

    /// Bounds the caches of a long-lived symbolizer: forgets processes that
    /// are gone, and parsed files once there are many.
    fn prune(&mut self) {
        if self.procs.len() >= 16 {
            self.procs
                .retain(|pid, p| start_time(*pid) == Some(p.start_time));
            self.pythons.retain(|pid, p| start_time(*pid) == Some(p.0));
            self.located.retain(|pid, p| start_time(*pid) == Some(p.0));
        }
        let mut sh = self.shared.0.borrow_mut();
        if sh.elf.len() > MAX_FILES {
            sh.elf.clear();
        }
        if self.recorded.len() > MAX_RECORDED && !self.offline {
            self.recorded
                .retain(|pid, r| start_time(*pid) == Some(r.start_time));
        }
    }

    /// State of a process that is gone, from its recorded mappings.
    fn gone_proc(&mut self, pid: u32) -> anyhow::Result<&mut Proc> {
        if !self.procs.get(&pid).is_some_and(|p| p.gone) {
            let Some(rec) = self.recorded.get(&pid) else {
                bail!("process {pid} is gone and its mappings were not recorded");
            };
            let mut sh = self.shared.0.borrow_mut();
            let files = &mut sh.elf;
            let mut opened = HashMap::new();
            for e in rec.maps.iter().filter(|e| e.is_file()) {
                let f = maps::open_recorded(e, |path, key| {
                    Self::elf_info(files, path, key).map(|i| i.build_id.clone())
                });
                opened.insert(e.start, f);
            }
            let modules = maps::modules(
                &rec.maps,
                |e| opened.get(&e.start).cloned().flatten(),
                |path, key| Self::elf_info(files, path, key),
                |_| None,
            );
            let unwinder = native::unwinder_for(&modules);
            let p = Proc {
                start_time: rec.start_time,
                gone: true,
                read_at: Instant::now(),
                maps: rec.maps.clone(),
                modules,
                unwinder,
                cache: framehop::x86_64::CacheX86_64::new(),
                creation: native::CreationCache::default(),
            };
            self.procs.insert(pid, p);
        }
        Ok(self.procs.get_mut(&pid).expect("inserted above"))
    }

    /// The cached state of `pid`, read again when stale or when `force`.
    fn proc(&mut self, pid: u32, force: bool) -> anyhow::Result<&mut Proc> {
        let recorded_st = self.recorded.get(&pid).map(|r| r.start_time);
        // A live PID that is not the process recorded under it was reused.
        let live = (!self.offline)
            .then(|| start_time(pid))
            .flatten()
            .filter(|st| recorded_st.is_none_or(|r| r == *st));
        let Some(st) = live else {
            return self.gone_proc(pid);
        };
        let fresh = self.procs.get(&pid).is_some_and(|p| {
            p.start_time == st && !p.gone && !force && p.read_at.elapsed() < MAPS_TTL
        });
        if !fresh {
            let text = std::fs::read_to_string(format!("/proc/{pid}/maps"))
                .with_context(|| format!("reading /proc/{pid}/maps"))?;
            if text.is_empty() {
                // A zombie: its memory is gone already.
                return self.gone_proc(pid);
            }
            let entries = maps::parse_maps(&text);
            self.record(pid, st, &entries);
            let mut sh = self.shared.0.borrow_mut();
            let files = &mut sh.elf;
            let modules = maps::modules(
                &entries,
                maps::live_opener(pid),
                |path, key| Self::elf_info(files, path, key),
                |r: Range<u64>| {
                    let bytes =
                        native::read_mem(pid, r.start, (r.end - r.start).min(1 << 20) as usize);
                    ElfInfo::from_bytes(&bytes).map(Arc::new)
                },
            );
            drop(sh);
            let unwinder = native::unwinder_for(&modules);
            self.prune();
            self.procs.insert(
                pid,
                Proc {
                    start_time: st,
                    gone: false,
                    read_at: Instant::now(),
                    maps: entries,
                    modules,
                    unwinder,
                    cache: framehop::x86_64::CacheX86_64::new(),
                    creation: native::CreationCache::default(),
                },
            );
        }
        Ok(self.procs.get_mut(&pid).expect("inserted above"))
    }

    /// Keeps the file mappings just read for after `pid` is gone, and
    /// queues them for the recorded stream when they changed.
    fn record(&mut self, pid: u32, st: u64, entries: &[MapEntry]) {
        let mut open = maps::live_opener(pid);
        let mut ids: HashMap<(u32, u32, u64), String> = HashMap::new();
        let mut files = Vec::new();
        for e in entries.iter().filter(|e| e.is_file()) {
            let key = (e.dev.0, e.dev.1, e.inode);
            if let std::collections::hash_map::Entry::Vacant(v) = ids.entry(key) {
                let id = open(e)
                    .and_then(|(path, k)| {
                        Self::elf_info(&mut self.shared.0.borrow_mut().elf, &path, k)
                    })
                    .map(|i| i.build_id.clone())
                    .unwrap_or_default();
                v.insert(id);
            }
            files.push(MapEntry {
                build_id: ids[&key].clone(),
                ..e.clone()
            });
        }
        let same = self
            .recorded
            .get(&pid)
            .is_some_and(|r| r.start_time == st && r.maps == files);
        if !same {
            self.new_maps.push((pid, files.clone()));
            self.recorded.insert(
                pid,
                Recorded {
                    start_time: st,
                    maps: files,
                },
            );
        }
    }

    /// See [`data_symbol`].
    pub fn data_symbol(&mut self, pid: u32, addr: u64) -> Option<DataSymbol> {
        let mut p = self.proc(pid, false).ok()?;
        if p.module_of_data(addr).is_none() {
            // Heap, stacks, anonymous memory: no symbol of its own (and no
            // reason to read the maps again for each such lock); perhaps a
            // global pointer of the program points to it.
            if p.mapping_of(addr).is_some_and(|e| !e.is_file()) {
                return self.heap_symbol(pid, addr);
            }
            // Perhaps mapped since we read the maps (dlopen), or read while
            // the process was exiting (its files could not be opened).
            p = self.proc(pid, true).ok()?;
        }
        let m = p.module_of_data(addr)?.clone();
        let svma = m.svma(addr);
        let path = m.open_path.clone()?;
        let src = Source::Elf(bz::source::Elf::new(path));
        let blaze = self.shared.blaze_for(&m);
        let sym = match blaze.symbolize_single(&src, Input::VirtOffset(svma)) {
            Ok(Symbolized::Sym(s)) => Some(s),
            _ => None,
        };
        // DWARF names the variable and the element or member in it; a
        // mangled symbol at the same address names the variable with its
        // namespace (`ns::table`).
        if let Some(n) = self.shared.dwarf_for(&m).and_then(|d| d.name(svma)) {
            let var = match &sym {
                Some(s) if s.addr == n.start && s.name.starts_with("_Z") => {
                    demangle(&s.name).into_owned()
                }
                _ => n.var,
            };
            return Some(DataSymbol {
                name: var + &n.path,
                offset: n.rest,
                module: m.name,
            });
        }
        sym.map(|s| DataSymbol {
            name: demangle(&s.name).into_owned(),
            offset: s.offset as u64,
            module: m.name,
        })
    }

    /// A heap object that a global pointer of the executable (or an array
    /// of them) points to, named through it: `acct->lock`. Needs the
    /// executable's DWARF; CPython processes are skipped (their locks are
    /// named by the Python view, and the interpreter's pointers are not
    /// the program's).
    fn heap_symbol(&mut self, pid: u32, addr: u64) -> Option<DataSymbol> {
        if self.offline {
            return None;
        }
        let p = self.proc(pid, false).ok()?;
        if python::looks_like_python(&p.maps) {
            return None;
        }
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        let exe = exe.to_string_lossy();
        let m = p.modules.iter().find(|m| m.name == *exe)?.clone();
        let d = self.shared.dwarf_for(&m)?;
        let slots = d.slots();
        let (lo, hi) = (
            slots.iter().map(|s| s.svma).min()?,
            slots.iter().map(|s| s.svma + 8).max()?,
        );
        // One read of the span the pointers are in (their .data/.bss).
        if hi - lo > native::MAX_STACK_COPY {
            return None;
        }
        let bytes = native::read_mem(pid, m.bias.wrapping_add(lo), (hi - lo) as usize);
        slots.iter().find_map(|s| {
            let at = (s.svma - lo) as usize;
            let v = u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
            let off = addr.checked_sub(v).filter(|&o| v != 0 && o < s.size)?;
            let (name, offset) = d.through(s, off);
            Some(DataSymbol {
                name,
                offset,
                module: m.name.clone(),
            })
        })
    }

    /// See [`native_stack`].
    pub fn native_stack(&mut self, pid: u32, tid: u32, regs: Regs) -> anyhow::Result<Vec<Frame>> {
        self.native_stacks(pid, &[(tid, regs)])
            .pop()
            .expect("one result per thread")
            .1
    }

    /// Unwinds and symbolizes several threads of one process at once (one
    /// maps read, one symbolization batch per module). A thread whose
    /// `regs.sp` is 0 gets its registers from /proc/PID/task/TID/syscall.
    pub fn native_stacks(
        &mut self,
        pid: u32,
        threads: &[(u32, Regs)],
    ) -> Vec<(u32, anyhow::Result<Vec<Frame>>)> {
        // 1. Registers and stack copies.
        let mut copies = Vec::with_capacity(threads.len());
        for &(tid, regs) in threads {
            let regs = if regs.sp == 0 {
                match proc_syscall(pid, tid) {
                    Some((_, _, sp, pc)) => Regs { ip: pc, sp, bp: 0 },
                    None => {
                        copies.push((
                            tid,
                            Err(anyhow::anyhow!("thread {tid} of {pid} is running or gone")),
                            None,
                        ));
                        continue;
                    }
                }
            } else {
                regs
            };
            copies.push((tid, Ok(regs), None));
        }
        self.unwind_and_symbolize(pid, copies)
    }

    /// Native stack from a copy of the thread's stack taken earlier (by BPF,
    /// at a lock call): `regs` as they were then, `bytes` read from `regs.sp`.
    pub fn stack_from_copy(
        &mut self,
        pid: u32,
        regs: Regs,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Vec<Frame>> {
        let mut r = self.unwind_and_symbolize(pid, vec![(0, Ok(regs), Some(bytes))]);
        r.pop().map(|x| x.1).unwrap_or_else(|| Ok(Vec::new()))
    }

    /// A thread's creation stack, from its creator's registers at the clone
    /// and a copy of the top of its stack taken then (by BPF): return
    /// addresses from the creation site outwards (see
    /// [`native::creation_frames`]). Unwinding only, no symbols: it runs for
    /// every thread created; [`Symbolizer::call_site`] names the addresses.
    /// A process that has exited is unwound with the mappings last read.
    pub fn creation_stack(&mut self, pid: u32, regs: Regs, bytes: Vec<u8>) -> Vec<u64> {
        // Cached mappings that cover the clone are used as they are: a
        // churning process creates thousands of threads a second, and by the
        // time they are unwound it may be gone (or a zombie, with no maps).
        let known = self
            .procs
            .get(&pid)
            .is_some_and(|p| p.module_of_code(regs.ip).is_some());
        if !known {
            let alive = self
                .proc(pid, false)
                .is_ok_and(|p| p.module_of_code(regs.ip).is_some())
                || self
                    .proc(pid, true)
                    .is_ok_and(|p| p.module_of_code(regs.ip).is_some());
            if !alive {
                return Vec::new();
            }
        }
        let Some(p) = self.procs.get_mut(&pid) else {
            return Vec::new();
        };
        let stack = native::StackCopy {
            base: regs.sp,
            bytes,
        };
        p.creation
            .stack(&p.unwinder, &mut p.cache, &p.modules, regs, &stack)
    }

    #[allow(clippy::type_complexity)]
    fn unwind_and_symbolize(
        &mut self,
        pid: u32,
        copies: Vec<(u32, anyhow::Result<Regs>, Option<Vec<u8>>)>,
    ) -> Vec<(u32, anyhow::Result<Vec<Frame>>)> {
        let mut fixups = std::mem::take(&mut self.ret_fixups);
        // 2. Unwind each thread; refresh the maps once if a stack or the ip
        //    is outside what we know (a new thread stack, a dlopen).
        let mut unwound: Vec<(u32, anyhow::Result<Vec<FrameAddress>>)> =
            Vec::with_capacity(copies.len());
        let mut refreshed = false;
        for (tid, regs, mut given) in copies {
            let regs = match regs {
                Ok(r) => r,
                Err(e) => {
                    unwound.push((tid, Err(e)));
                    continue;
                }
            };
            let r = (|| {
                let mut p = self.proc(pid, false)?;
                if !refreshed
                    && (p.mapping_of(regs.sp).is_none() || p.module_of_code(regs.ip).is_none())
                {
                    refreshed = true;
                    p = self.proc(pid, true)?;
                }
                let mut stack = match given.take() {
                    Some(bytes) => native::StackCopy {
                        base: regs.sp,
                        bytes,
                    },
                    None => {
                        let Some(stack_map) = p.mapping_of(regs.sp) else {
                            bail!(
                                "sp {:#x} of thread {tid} is in no mapping of {pid}",
                                regs.sp
                            )
                        };
                        let len = (stack_map.end - regs.sp).min(native::MAX_STACK_COPY) as usize;
                        native::StackCopy {
                            base: regs.sp,
                            bytes: native::read_mem(pid, regs.sp, len),
                        }
                    }
                };
                // Put back return addresses hidden by uretprobe trampolines.
                if let (Some(sites), Some(tramp)) = (
                    fixups.remove(&tid),
                    p.maps.iter().find(|e| e.path == "[uprobes]"),
                ) {
                    let mut sites = sites.into_iter();
                    for w in stack.bytes.chunks_exact_mut(8) {
                        let v = u64::from_ne_bytes(w.try_into().expect("8 bytes"));
                        if (tramp.start..tramp.end).contains(&v) {
                            match sites.next() {
                                Some(real) => w.copy_from_slice(&real.to_ne_bytes()),
                                None => break,
                            }
                        }
                    }
                }
                Ok(native::unwind(&p.unwinder, &mut p.cache, regs, &stack))
            })();
            unwound.push((tid, r));
        }
        // 3. Symbolize, batched per module.
        let Some(p) = self.procs.get(&pid) else {
            return unwound
                .into_iter()
                .map(|(t, r)| (t, r.map(|_| Vec::new())))
                .collect();
        };
        let mut wanted: HashMap<usize, Vec<u64>> = HashMap::new();
        for (_, r) in &unwound {
            for f in r.iter().flatten() {
                if let Some(i) = p
                    .modules
                    .iter()
                    .position(|m| m.code.contains(&f.address_for_lookup()))
                {
                    wanted
                        .entry(i)
                        .or_default()
                        .push(p.modules[i].svma(f.address_for_lookup()));
                }
            }
        }
        // (module, svma) → frames for that lookup address.
        let mut symbolized: HashMap<(usize, u64), Vec<Frame>> = HashMap::new();
        for (i, mut svmas) in wanted {
            svmas.sort_unstable();
            svmas.dedup();
            let m = &p.modules[i];
            let blaze = self.shared.blaze_for(m);
            let syms: Vec<Option<bz::Sym<'_>>> = match &m.open_path {
                Some(path) => {
                    let src = Source::Elf(bz::source::Elf::new(path.clone()));
                    match blaze.symbolize(&src, Input::VirtOffset(&svmas)) {
                        Ok(v) => v.into_iter().map(|s| s.into_sym()).collect(),
                        Err(e) => {
                            tracing::debug!("symbolizing in {}: {e}", m.name);
                            vec![None; svmas.len()]
                        }
                    }
                }
                None => vec![None; svmas.len()],
            };
            for (svma, sym) in svmas.iter().zip(syms) {
                let avma = svma.wrapping_add(m.bias);
                let mut frames = Vec::new();
                match sym {
                    Some(s) => native::frames_from_sym(avma, m, &s, &mut frames),
                    None => {
                        let function = m.elf.func_at(*svma).map(|(n, _)| demangle(n).into_owned());
                        frames.push(Frame {
                            addr: avma,
                            function,
                            file: None,
                            line: None,
                            module: Some(m.name.clone()),
                            module_offset: *svma,
                            inlined: false,
                        });
                    }
                }
                symbolized.insert((i, *svma), frames);
            }
        }
        unwound
            .into_iter()
            .map(|(tid, r)| {
                let r = r.map(|addrs| {
                    let mut out = Vec::with_capacity(addrs.len());
                    for f in addrs {
                        let (addr, lookup) = (f.address(), f.address_for_lookup());
                        let module = p.modules.iter().position(|m| m.code.contains(&lookup));
                        match module.and_then(|i| {
                            symbolized
                                .get(&(i, p.modules[i].svma(lookup)))
                                .map(|fr| (i, fr))
                        }) {
                            Some((i, frames)) => out.extend(frames.iter().map(|fr| Frame {
                                addr,
                                module_offset: p.modules[i].svma(addr),
                                ..fr.clone()
                            })),
                            None => out.push(Frame {
                                addr,
                                function: None,
                                file: None,
                                line: None,
                                module: None,
                                module_offset: addr,
                                inlined: false,
                            }),
                        }
                    }
                    out
                });
                (tid, r)
            })
            .collect()
    }

    /// Where a call was made, from its return address (e.g. the
    /// `pthread_create` call that made a thread): the innermost frame at
    /// the call, with file:line when debug info exists.
    pub fn call_site(&mut self, pid: u32, ret_addr: u64) -> Option<Frame> {
        let lookup = ret_addr.checked_sub(1)?;
        for force in [false, true] {
            let alive = start_time(pid).is_some();
            let m = if alive {
                let p = self.proc(pid, force).ok()?;
                p.modules.iter().find(|m| m.code.contains(&lookup)).cloned()
            } else {
                // gone: the mappings read while it lived
                let p = self.procs.get(&pid)?;
                p.modules.iter().find(|m| m.code.contains(&lookup)).cloned()
            };
            let Some(m) = m else {
                continue;
            };
            let svma = m.svma(lookup);
            let blaze = self.shared.blaze_for(&m);
            let sym = m.open_path.as_ref().and_then(|path| {
                let src = Source::Elf(bz::source::Elf::new(path.clone()));
                blaze
                    .symbolize_single(&src, Input::VirtOffset(svma))
                    .ok()?
                    .into_sym()
            });
            let mut frames = Vec::new();
            match sym {
                Some(s) => native::frames_from_sym(lookup, &m, &s, &mut frames),
                None => frames.push(Frame {
                    addr: lookup,
                    function: m.elf.func_at(svma).map(|(n, _)| demangle(n).into_owned()),
                    file: None,
                    line: None,
                    module: Some(m.name.clone()),
                    module_offset: svma,
                    inlined: false,
                }),
            }
            return frames.into_iter().next().map(|f| Frame {
                addr: ret_addr,
                ..f
            });
        }
        None
    }

    /// The stacks of every thread of `pid` that is blocked in a syscall (or
    /// stopped), from /proc registers. Running threads are skipped.
    #[allow(dead_code)]
    pub fn blocked_stacks(
        &mut self,
        pid: u32,
    ) -> anyhow::Result<Vec<(u32, anyhow::Result<Vec<Frame>>)>> {
        let mut threads = Vec::new();
        let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
            .with_context(|| format!("listing threads of {pid}"))?;
        for e in dir.flatten() {
            let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((_, _, sp, pc)) = proc_syscall(pid, tid) {
                threads.push((tid, Regs { ip: pc, sp, bp: 0 }));
            }
        }
        threads.sort_by_key(|t| t.0);
        Ok(self.native_stacks(pid, &threads))
    }

    /// The cached py-spy handle of a CPython process (None: not Python).
    fn spy(&mut self, pid: u32) -> anyhow::Result<Option<&mut py_spy::PythonSpy>> {
        let st = start_time(pid).with_context(|| format!("process {pid} is gone"))?;
        if self.pythons.get(&pid).is_none_or(|(s, _)| *s != st) {
            self.pythons.remove(&pid);
            let p = self.proc(pid, false)?;
            if !python::looks_like_python(&p.maps) {
                return Ok(None);
            }
            let spy = python::new_spy(pid)?;
            self.pythons.insert(pid, (st, spy));
        }
        Ok(self.pythons.get_mut(&pid).map(|(_, s)| s))
    }

    /// The Python view of a CPython process (threads, stacks, lock waits,
    /// holders, names; see `crate::python`). `waits`: TID -> futex address
    /// of the threads blocked in a futex wait. Ok(None): not Python.
    pub fn python_view(
        &mut self,
        pid: u32,
        waits: &HashMap<u32, u64>,
    ) -> anyhow::Result<Option<crate::python::PyView>> {
        let free = self
            .proc(pid, false)
            .map(|p| python::free_threaded(&p.maps))
            .unwrap_or(false);
        // Found from its symbols (cached per process): py-spy's own lookup
        // walks every thread's stack once more to validate it.
        let st = start_time(pid).with_context(|| format!("process {pid} is gone"))?;
        if self.located.get(&pid).is_none_or(|(s, _)| *s != st) {
            self.located.remove(&pid);
            if python::looks_like_python(&self.proc(pid, false)?.maps) {
                match crate::python::locate(pid) {
                    Ok(l) => {
                        self.located.insert(pid, (st, l));
                    }
                    Err(e) => tracing::debug!("python lookup of {pid}: {e:#}; asking py-spy"),
                }
            }
        }
        if let Some((_, loc)) = self.located.get(&pid) {
            let v = crate::python::view(pid, loc, free, waits);
            if !v.threads.is_empty() || v.unsupported.is_some() {
                return Ok(Some(v));
            }
            self.located.remove(&pid);
        }
        let Some(spy) = self.spy(pid)? else {
            return Ok(None);
        };
        let loc = crate::python::Located::of_spy(spy);
        Ok(Some(crate::python::view(pid, &loc, free, waits)))
    }

    /// The interpreter of a CPython process (for GIL accounting).
    /// Ok(None): not Python.
    pub fn python_interp(
        &mut self,
        pid: u32,
    ) -> anyhow::Result<Option<crate::python::gil::PyInterp>> {
        let free = self
            .proc(pid, false)
            .map(|p| python::free_threaded(&p.maps))
            .unwrap_or(false);
        let Some(spy) = self.spy(pid)? else {
            return Ok(None);
        };
        let v = &spy.version;
        Ok(Some(crate::python::gil::PyInterp {
            major: v.major,
            minor: v.minor,
            version: v.to_string(),
            interp: spy.addresses.interpreter_address as u64,
            free_threaded: free,
        }))
    }

    /// See [`python_threads`].
    pub fn python_threads(&mut self, pid: u32) -> anyhow::Result<Option<Vec<PyThread>>> {
        let Some(spy) = self.spy(pid)? else {
            return Ok(None);
        };
        match python::threads(spy) {
            Ok(t) => Ok(Some(t)),
            Err(e) => {
                // The layout may be stale (exec, interpreter re-init): start over next time.
                self.pythons.remove(&pid);
                Err(e)
            }
        }
    }
}

thread_local! {
    static SYMBOLIZER: RefCell<Symbolizer> = RefCell::new(Symbolizer::new());
}

fn with_symbolizer<T>(f: impl FnOnce(&mut Symbolizer) -> T) -> T {
    SYMBOLIZER.with(|s| f(&mut s.borrow_mut()))
}

/// Symbolizes a data address in process `pid` (a global or static in the
/// executable's or a shared library's .data/.bss). None for heap, stack and
/// anonymous memory, and for files without a symbol there.
#[allow(dead_code)]
pub fn data_symbol(pid: u32, addr: u64) -> Option<DataSymbol> {
    with_symbolizer(|s| s.data_symbol(pid, addr))
}

/// Native stack of a thread blocked in a syscall, without stopping the
/// target. `regs` from BPF at syscall entry or [`proc_syscall`] (sp = 0:
/// read them from /proc). Unreadable memory or missing unwind info give a
/// shorter stack; stripped code gives module+offset frames.
#[allow(dead_code)]
pub fn native_stack(pid: u32, tid: u32, regs: Regs) -> anyhow::Result<Vec<Frame>> {
    with_symbolizer(|s| s.native_stack(pid, tid, regs))
}

/// For a CPython target (3.11–3.13 tested): Python thread names, stacks and
/// the GIL holder. Ok(None) when the process is not Python.
#[allow(dead_code)]
pub fn python_threads(pid: u32) -> anyhow::Result<Option<Vec<PyThread>>> {
    with_symbolizer(|s| s.python_threads(pid))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_proc_syscall() {
        let s = "202 0x55d0c8a04040 0x80 0x2 0x0 0x0 0x0 0x7f3a1b2fed58 0x7f3a1b3a2d7e\n";
        let (nr, args, sp, pc) = parse_syscall(s).unwrap();
        assert_eq!(nr, 202);
        assert_eq!(args, [0x55d0c8a04040, 0x80, 2, 0, 0, 0]);
        assert_eq!((sp, pc), (0x7f3a1b2fed58, 0x7f3a1b3a2d7e));
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(
            parse_syscall("-1 0x7ffc 0x401000\n"),
            Some((-1, [0; 6], 0x7ffc, 0x401000))
        );
        assert_eq!(parse_syscall(""), None);
        assert_eq!(parse_syscall("202 0xzz 0 0 0 0 0 0 0"), None);
    }

    #[test]
    fn demangles_only_mangled_names() {
        // One-letter C names are names, not C++ types.
        for n in [
            "a",
            "b",
            "c",
            "v",
            "lock_a",
            "table_locks",
            "main",
            "_start",
            "__libc_start_main",
        ] {
            assert_eq!(demangle(n), n);
        }
        assert_eq!(demangle("_ZN2ns5tableE"), "ns::table");
        assert_eq!(demangle("_Z3fooi"), "foo(int)");
        assert_eq!(demangle("_Z3fooi.cold"), "foo(int).cold");
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
        // Not a valid mangling: kept as it is.
        assert_eq!(demangle("_Zzz"), "_Zzz");
    }

    #[test]
    fn start_time_of_self() {
        assert!(start_time(std::process::id()).is_some());
        assert!(start_time(u32::MAX).is_none());
    }

    #[test]
    fn unknown_pid_is_an_error_not_a_panic() {
        let mut s = Symbolizer::new();
        assert!(
            s.native_stack(
                u32::MAX,
                1,
                Regs {
                    ip: 1,
                    sp: 1,
                    bp: 0
                }
            )
            .is_err()
        );
        assert!(s.data_symbol(u32::MAX, 0x1000).is_none());
        assert!(s.python_threads(u32::MAX).is_err());
    }
}
