//! Per-process state of the symbolizer: the mappings read from /proc
//! (or recorded), and how a live PID is told from a reused one.
use super::*;

/// Per-process state.
pub(super) struct Proc {
    pub(super) start_time: u64,
    /// Built from recorded mappings: the process is gone (or its PID now
    /// names another process), so its files are opened by path.
    pub(super) gone: bool,
    pub(super) read_at: Instant,
    pub(super) maps: Vec<MapEntry>,
    pub(super) modules: Vec<Module>,
    pub(super) unwinder: native::Unwinder64,
    pub(super) cache: framehop::x86_64::CacheX86_64,
    pub(super) creation: native::CreationCache,
}

impl Proc {
    pub(super) fn module_of_code(&self, addr: u64) -> Option<&Module> {
        self.modules.iter().find(|m| m.code.contains(&addr))
    }

    pub(super) fn module_of_data(&self, addr: u64) -> Option<&Module> {
        self.modules.iter().find(|m| m.extent.contains(&addr))
    }

    pub(super) fn mapping_of(&self, addr: u64) -> Option<&MapEntry> {
        self.maps.iter().find(|e| e.start <= addr && addr < e.end)
    }
}

/// The file mappings of a process as last read (or as recorded).
pub(super) struct Recorded {
    /// 0: unknown (loaded from a recording).
    pub(super) start_time: u64,
    pub(super) maps: Vec<MapEntry>,
}

/// The start time (clock ticks since boot) of process `pid`, which tells a
/// reused PID from the process we cached. A value read in the last 50 ms is
/// reused: reading a many-threaded process's stat sums all its threads, and
/// a stack walk asks once per thread and symbol. A PID cannot be reused that
/// fast (the PID space would have to wrap); a death in that window makes
/// the reads that follow fail, as they would anyway.
pub(super) fn start_time(pid: u32) -> Option<u64> {
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

pub(crate) fn parse_syscall(s: &str) -> Option<(i64, [u64; 6], u64, u64)> {
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
    pub(super) fn elf_info(
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
    pub(super) fn prune(&mut self) {
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
    pub(super) fn gone_proc(&mut self, pid: u32) -> anyhow::Result<&mut Proc> {
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
    pub(super) fn proc(&mut self, pid: u32, force: bool) -> anyhow::Result<&mut Proc> {
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
            // Unreadable or empty: it died since its start time was read (a
            // zombie's memory is gone too): the mappings recorded while it
            // lived name its addresses.
            let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            if text.is_empty() {
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
    pub(super) fn record(&mut self, pid: u32, st: u64, entries: &[MapEntry]) {
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
}
