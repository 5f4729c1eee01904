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

mod data;
mod dwarf;
mod elf;
mod maps;
mod native;
mod procs;
mod python;
mod pyview;
#[cfg(test)]
mod tests;
mod unwind;

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
use maps::Module;
pub use observer_core::vocab::frames::{Frame, MapEntry, PyFrame};
pub(crate) use procs::parse_syscall;
pub use procs::proc_syscall;
use procs::{Proc, Recorded, start_time};
#[allow(unused_imports)]
pub use python::PyThread;

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

/// User registers of a blocked thread: from BPF at syscall entry (ip, sp,
/// bp) or from /proc/PID/task/TID/syscall (sp and pc only; bp = 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Regs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

/// A creation stack unwound from a copy (see [`Symbolizer::creation_stack`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreationUnwind {
    /// Return addresses from the creation site outwards; empty: no site found.
    pub frames: Vec<u64>,
    /// The stack words the result depends on (address, value): a copy with
    /// the same registers and these words unwinds to the same frames.
    pub words: Vec<(u64, u64)>,
    /// The result does not depend on the bp register.
    pub any_bp: bool,
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
    /// Where the interpreter is in each CPython file (python, libpython).
    python: HashMap<crate::python::FileId, crate::python::FileFacts>,
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
            python: HashMap::new(),
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
            shared: false,
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
