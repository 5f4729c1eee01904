//! The walk: threads, frames, value stacks, then locks, holders, joins,
//! labels and names. Pure given a `Mem`, so it is tested on fake memory too.

use std::{
    collections::{HashMap, HashSet},
    rc::Rc,
};

use super::{
    How, PyHeld, PyLockInfo, PyLockKind, PyThreadView, PyView, PyWait,
    layout::Layout,
    reader::{Mem, Reader, exception_table, i32_at, line_of, u64_at, with_start},
};
use crate::symbol::PyFrame;

const MAX_THREADS: usize = 4096;
const MAX_FRAMES: usize = 1024;
const MAX_SLOTS: i32 = 4096;
/// A live object's refcount; freed memory holds a free-list pointer or 0.
pub(super) const MAX_REFCNT: u64 = 1 << 31;

pub(super) struct RawFrame {
    pub(super) frame: PyFrame,
    pub(super) globals: u64,
    /// Local variables: (name, value), plus the value stack.
    pub(super) locals: Vec<(String, u64)>,
    pub(super) stack: Vec<u64>,
    /// The stack depth was saved (`stacktop`): `stack` is exactly live.
    #[allow(dead_code)]
    exact: bool,
    /// The opcode the frame is executing.
    pub(super) opcode: Option<u8>,
    /// Code object, and the instruction's code unit in it.
    code: u64,
    unit: Option<u64>,
    /// Exception table (bytes object).
    exctable: u64,
    first_line: i32,
}

struct CodeInfo {
    file: String,
    function: String,
    first: i32,
    nlocals: i32,
    stacksize: i32,
    /// `co_localsplusnames`, as strings.
    names: Vec<Option<String>>,
    linetable: Option<Vec<u8>>,
    exctable: u64,
    /// `co_code_adaptive`.
    bytecode: Option<Vec<u8>>,
}

/// Bytecode longer than this is not read (a torn or foreign object).
const MAX_CODE_UNITS: u64 = 1 << 20;
/// Frame slots read with the frame itself (one read for most frames).
const SLOTS_WITH_FRAME: usize = 32;

pub(super) struct RawThread {
    pub(super) tid: u32,
    pub(super) ident: u64,
    pub(super) frames: Vec<RawFrame>,
}

/// What a value-stack slot says about a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// The lock object itself (a call such as `lock.acquire()`).
    Lock,
    /// A builtin method bound to the lock (`__exit__` of a `with`, ...).
    Exit,
    Other,
}

/// Reads the Python view of the interpreter at `interp`. `waits` maps each
/// thread blocked in a futex wait to its futex address.
pub fn inspect<M: Mem>(
    mem: &M,
    layout: &Layout,
    version: String,
    interp: u64,
    waits: &HashMap<u32, u64>,
) -> PyView {
    let r = Reader::new(mem, layout);
    let mut w = Walk {
        r: &r,
        attrs: HashMap::new(),
        codes: HashMap::new(),
    };
    let threads = w.threads(interp);
    let tasks = super::asyncio::read(&mut w, interp, &threads);
    let futures = super::futures::read(&mut w, &threads, waits, tasks.as_ref());
    let mut view = w.analyze(version, threads, waits);
    view.asyncio = tasks;
    super::futures::apply(&mut view, futures);
    view
}

pub(super) struct Walk<'r, 'm, M: Mem> {
    pub(super) r: &'r Reader<'m, M>,
    attrs: HashMap<u64, Option<Vec<(String, u64)>>>,
    codes: HashMap<u64, Option<Rc<CodeInfo>>>,
}

impl<M: Mem> Walk<'_, '_, M> {
    pub(super) fn attrs(&mut self, obj: u64) -> Option<Vec<(String, u64)>> {
        if let Some(a) = self.attrs.get(&obj) {
            return a.clone();
        }
        let a = self.r.attrs(obj);
        self.attrs.insert(obj, a.clone());
        a
    }

    fn threads(&mut self, interp: u64) -> Vec<RawThread> {
        let l = self.r.l;
        let mut out = Vec::new();
        let mut ts = self.r.u64(interp + l.interp_threads_head).unwrap_or(0);
        let mut seen = HashSet::new();
        while Reader::<M>::ptr_ok(ts) && out.len() < MAX_THREADS && seen.insert(ts) {
            let Some(b) = self.r.bytes(ts, (l.ts_native_thread_id + 8) as usize) else {
                break;
            };
            let next = u64_at(&b, l.ts_next).unwrap_or(0);
            let tid = u64_at(&b, l.ts_native_thread_id).unwrap_or(0) as u32;
            let ident = u64_at(&b, l.ts_thread_id).unwrap_or(0);
            let frame = match (l.ts_cframe, l.ts_current_frame) {
                (Some(cf), _) => u64_at(&b, cf)
                    .and_then(|c| self.r.u64(c.wrapping_add(l.cframe_current_frame)))
                    .unwrap_or(0),
                (None, Some(cur)) => u64_at(&b, cur).unwrap_or(0),
                (None, None) => 0,
            };
            out.push(RawThread {
                tid,
                ident,
                frames: self.frames(frame),
            });
            ts = next;
        }
        out
    }

    fn frames(&mut self, mut f: u64) -> Vec<RawFrame> {
        let l = self.r.l;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        while Reader::<M>::ptr_ok(f) && out.len() < MAX_FRAMES && seen.insert(f) {
            // The frame and its first slots in one read; the frame alone
            // when that crosses the end of the mapping.
            let Some(b) = self
                .r
                .bytes(f, l.frame_localsplus as usize + SLOTS_WITH_FRAME * 8)
                .or_else(|| self.r.bytes(f, l.frame_localsplus as usize))
            else {
                break;
            };
            let prev = u64_at(&b, l.frame_previous).unwrap_or(0);
            let owner = b.get(l.frame_owner as usize).copied();
            let shim = matches!((owner, l.owned_by_cstack), (Some(o), Some(c)) if o >= c);
            if !shim && let Some(rf) = self.frame(f, &b) {
                out.push(rf);
            }
            f = prev;
        }
        out
    }

    /// What the walk needs of a code object, read once per walk: every
    /// thread runs the same few functions, and code objects do not change
    /// (the quickened bytecode does, but not at the opcodes read here).
    fn code(&mut self, code: u64) -> Option<Rc<CodeInfo>> {
        if let Some(c) = self.codes.get(&code) {
            return c.clone();
        }
        let c = self.read_code(code).map(Rc::new);
        self.codes.insert(code, c.clone());
        c
    }

    fn read_code(&self, code: u64) -> Option<CodeInfo> {
        let l = self.r.l;
        let r = self.r;
        if !r.is_type(code, "code") {
            return None;
        }
        let c = r.bytes(code, l.code_adaptive as usize)?;
        let nlocals = i32_at(&c, l.code_nlocalsplus)?;
        let stacksize = i32_at(&c, l.code_stacksize)?;
        if !(0..MAX_SLOTS).contains(&nlocals) || !(0..MAX_SLOTS).contains(&stacksize) {
            return None;
        }
        let file = r.string(u64_at(&c, l.code_filename)?)?;
        let function = r
            .string(u64_at(&c, l.code_qualname)?)
            .or_else(|| r.string(u64_at(&c, l.code_name)?))?;
        let first = i32_at(&c, l.code_firstlineno)?;
        let linetable = u64_at(&c, l.code_linetable)?;
        let names = r
            .tuple(u64_at(&c, l.code_localsplusnames)?)
            .unwrap_or_default()
            .into_iter()
            .map(|n| r.string(n))
            .collect();
        // Py_SIZE(code): the number of code units.
        let units = u64_at(&c, 16).filter(|&n| n < MAX_CODE_UNITS)?;
        Some(CodeInfo {
            file,
            function,
            first,
            nlocals,
            stacksize,
            names,
            linetable: r.bytes_obj(linetable),
            exctable: u64_at(&c, l.code_exceptiontable).unwrap_or(0),
            bytecode: r.bytes(code + l.code_adaptive, units as usize * 2),
        })
    }

    pub(super) fn frame(&mut self, f: u64, b: &[u8]) -> Option<RawFrame> {
        let l = self.r.l;
        let r = self.r;
        let code = self.r.stackref(u64_at(b, l.frame_code)?);
        let ci = self.code(code)?;
        let (nlocals, stacksize) = (ci.nlocals, ci.stacksize);
        let instr = u64_at(b, l.frame_instr)?;
        let start = code + l.code_adaptive;
        let unit = instr.checked_sub(start).map(|o| o / 2);
        let line = ci
            .linetable
            .as_ref()
            .and_then(|t| line_of(t, ci.first, unit?))
            .unwrap_or(0);
        let total = (nlocals + stacksize) as usize;
        // The frame read already holds the first slots.
        let head = l.frame_localsplus as usize;
        let slots = if b.len() >= head + total * 8 {
            b[head..head + total * 8].to_vec()
        } else {
            r.bytes(f + l.frame_localsplus, total * 8)
                .unwrap_or_default()
        };
        let slot = |i: usize| r.stackref(u64_at(&slots, i as u64 * 8).unwrap_or(0));
        let locals = (0..nlocals as usize)
            .filter_map(|i| Some((ci.names.get(i)?.clone()?, slot(i))))
            .filter(|(_, v)| *v != 0)
            .collect();
        let stacktop = if l.stackref_tag != 0 {
            // 3.14+: `stackpointer`, saved when the frame calls out.
            u64_at(b, l.frame_stacktop)
                .and_then(|sp| sp.checked_sub(f + l.frame_localsplus))
                .filter(|d| d % 8 == 0 && d / 8 <= MAX_SLOTS as u64 * 2)
                .map_or(-1, |d| (d / 8) as i32)
        } else {
            i32_at(b, l.frame_stacktop).unwrap_or(-1)
        };
        let (depth, exact) = if (nlocals..=nlocals + stacksize).contains(&stacktop) {
            ((stacktop - nlocals) as usize, true)
        } else {
            (stacksize as usize, false)
        };
        let stack = (0..depth)
            .map(|i| slot(nlocals as usize + i))
            .collect::<Vec<_>>();
        let opcode = match (&ci.bytecode, unit) {
            (Some(bc), Some(u)) => bc.get(u as usize * 2).copied(),
            _ => r.u8(instr),
        };
        Some(RawFrame {
            frame: PyFrame {
                function: ci.function.clone(),
                file: ci.file.clone(),
                line,
            },
            globals: u64_at(b, l.frame_globals).unwrap_or(0),
            locals,
            stack,
            exact,
            opcode,
            code,
            unit,
            exctable: ci.exctable,
            first_line: ci.first,
        })
    }

    /// The line of the `with` statement whose `__exit__` is at value-stack
    /// slot `k` of frame `f` (not the line the frame is at now).
    fn with_line(&mut self, f: &RawFrame, k: usize) -> Option<i32> {
        let r = self.r;
        let ci = self.code(f.code)?;
        let table = exception_table(&r.bytes_obj(f.exctable)?);
        let bc = ci.bytecode.as_ref()?;
        let unit = with_start(
            &table,
            k as u64,
            if r.l.stackref_tag != 0 { 2 } else { 1 },
            f.unit?,
            |u| Some((*bc.get(u as usize * 2)?, *bc.get(u as usize * 2 + 1)?)),
            r.l.before_with,
        )?;
        line_of(ci.linetable.as_ref()?, f.first_line, unit)
    }

    /// The `threading` locks the active `with` blocks of frame `f` hold,
    /// read without knowing its thread (a suspended coroutine's frame):
    /// each locked one, its kind and the `with` line.
    pub(super) fn with_locks(&mut self, f: &RawFrame) -> Vec<(u64, PyLockKind, Option<i32>)> {
        let mut out: Vec<(u64, PyLockKind, Option<i32>)> = Vec::new();
        for k in 0..f.stack.len() {
            let Some((lock, kind, Slot::Exit)) = self.slot_lock(&f.stack, k) else {
                continue;
            };
            let held = if kind == PyLockKind::RLock {
                self.rlock_owner(lock).is_some_and(|(_, n)| n > 0)
            } else {
                self.locked(lock, kind, 0)
            };
            if held && !out.iter().any(|x| x.0 == lock) {
                out.push((lock, kind, self.with_line(f, k)));
            }
        }
        out
    }

    fn analyze(
        &mut self,
        version: String,
        raw: Vec<RawThread>,
        waits: &HashMap<u32, u64>,
    ) -> PyView {
        let mut locks: HashMap<u64, PyLockKind> = HashMap::new();
        let mut threads = Vec::new();
        let mut label_objs: Vec<(usize, usize, u64)> = Vec::new();
        for t in &raw {
            let mut view = PyThreadView {
                tid: t.tid,
                ident: t.ident,
                name: None,
                frames: t.frames.iter().map(|f| f.frame.clone()).collect(),
                wait: None,
                held: Vec::new(),
                joins: None,
                label: None,
                future: None,
            };
            let uaddr = waits.get(&t.tid).copied();
            // The waited lock: a lock on the innermost frame's stack whose
            // futex word is the one the thread sleeps on (3.13's parking lot
            // keeps the lock's address just below the word it sleeps on).
            let mut cut = None;
            if let (Some(u), Some(f0)) = (uaddr, t.frames.first()) {
                let parked = self.r.u64(u.wrapping_sub(8)).unwrap_or(0);
                for k in (0..f0.stack.len()).rev() {
                    let Some((lock, kind, slot)) = self.slot_lock(&f0.stack, k) else {
                        continue;
                    };
                    let word = self.lock_word(lock, kind);
                    if word != 0 && (word == u || word == parked) {
                        view.wait = Some(PyWait {
                            lock,
                            kind,
                            // 3.12+ keep the manager on the stack while
                            // BEFORE_WITH calls `__enter__`; 3.11 its `__exit__`.
                            how: if slot == Slot::Exit
                                || f0.opcode == Some(self.r.l.before_with)
                                || self.exit_below(&f0.stack, k, lock)
                            {
                                How::With
                            } else {
                                How::Acquire
                            },
                            frame: 0,
                            name: None,
                        });
                        if kind.across_processes() {
                            self.mp_wait_frame(t, view.wait.as_mut().expect("set"));
                        }
                        locks.insert(lock, kind);
                        cut = Some(k);
                        break;
                    }
                }
            }
            // Held: the `__exit__` of each active `with` block.
            for (fi, f) in t.frames.iter().enumerate() {
                let live = if fi == 0 {
                    cut.unwrap_or(f.stack.len())
                } else {
                    f.stack.len()
                };
                for k in 0..live {
                    let Some((lock, kind, Slot::Exit)) = self.slot_lock(&f.stack[..live], k) else {
                        continue;
                    };
                    if view.held.iter().any(|h| h.lock == lock)
                        || view.wait.as_ref().is_some_and(|w| w.lock == lock)
                        || !self.locked(lock, kind, t.ident)
                    {
                        continue;
                    }
                    view.held.push(PyHeld {
                        lock,
                        kind,
                        frame: Some(fi),
                        name: None,
                        line: self.with_line(f, k),
                    });
                    locks.insert(lock, kind);
                }
                // RLocks seen anywhere in the frame record their owner.
                for &(_, v) in &f.locals {
                    if self.lock_kind(v) == Some(PyLockKind::RLock) {
                        locks.insert(v, PyLockKind::RLock);
                    }
                }
            }
            if uaddr.is_some() {
                view.joins = self.join_target(t);
                if view.joins.is_some() {
                    // Joining waits on the joined thread's own lock (3.11,
                    // 3.12 `_tstate_lock`): the join is the edge.
                    view.wait = None;
                }
                if view.joins.is_none()
                    && let Some((fi, what)) = label_frame(&t.frames)
                {
                    let this = t.frames[fi]
                        .locals
                        .first()
                        .filter(|(n, _)| n == "self")
                        .map(|x| x.1);
                    view.label = Some(what.to_string());
                    if let Some(o) = this {
                        label_objs.push((threads.len(), fi, o));
                    }
                }
            }
            threads.push(view);
        }
        // A multiprocessing lock records its holder in this process too:
        // when one is in play here, those the frames reach (locals,
        // module globals, one attribute deep) are looked at, so one taken
        // by `acquire()` outside a `with` has its holder as well.
        if locks.values().any(|k| k.across_processes()) {
            for (lock, kind) in self.mp_locks_in_reach(&raw) {
                locks.entry(lock).or_insert(kind);
            }
        }
        // RLock owners are recorded in the lock itself.
        let by_ident: HashMap<u64, u32> = raw.iter().map(|t| (t.ident, t.tid)).collect();
        let mut infos: Vec<PyLockInfo> = locks
            .iter()
            .map(|(&addr, &kind)| PyLockInfo {
                addr,
                kind,
                name: None,
                word: self.lock_word(addr, kind),
                owner: match kind {
                    PyLockKind::RLock => self.rlock_owner(addr),
                    PyLockKind::MpLock | PyLockKind::MpRLock => self.semlock_owner(addr),
                    PyLockKind::Lock => None,
                }
                .filter(|&(_, n)| n > 0)
                .and_then(|(o, n)| Some((*by_ident.get(&o)?, n))),
            })
            .collect();
        infos.sort_by_key(|l| l.addr);
        // A SemLock's fields are read after every thread's frames: a thread
        // they name as the holder that was waiting for it then took it
        // since (no `with` of its frames holds it). A true self-deadlock
        // keeps its `with` in an outer frame.
        for li in &mut infos {
            if li.kind.across_processes()
                && let Some((tid, _)) = li.owner
                && let Some(t) = threads.iter().find(|t| t.tid == tid)
                && t.wait.as_ref().is_some_and(|w| w.lock == li.addr)
                && !t.held.iter().any(|h| h.lock == li.addr)
            {
                li.owner = None;
            }
        }
        for li in &infos {
            if let Some((tid, _)) = li.owner
                && let Some(t) = threads.iter_mut().find(|t| t.tid == tid)
                && !t.held.iter().any(|h| h.lock == li.addr)
            {
                t.held.push(PyHeld {
                    lock: li.addr,
                    kind: li.kind,
                    frame: None,
                    name: None,
                    line: None,
                });
            }
        }
        // Names as the program spells them.
        let mut wanted: HashSet<u64> = infos.iter().map(|l| l.addr).collect();
        wanted.extend(label_objs.iter().map(|x| x.2));
        // After module globals, the frame that waits for or holds a lock
        // names it: the program's own spelling at that line (`src.lock`).
        let mut prefer: Vec<(usize, usize, u64)> = Vec::new();
        for (ti, t) in threads.iter().enumerate() {
            if let Some(w) = &t.wait {
                prefer.push((ti, w.frame, w.lock));
            }
            for h in &t.held {
                if let Some(f) = h.frame {
                    prefer.push((ti, f, h.lock));
                }
            }
        }
        // A library wait's object as its caller spells it (`ready`), not
        // as the library method does (`self`).
        for &(ti, fi, obj) in &label_objs {
            prefer.push((ti, fi + 1, obj));
        }
        let names = self.names(&raw, &wanted, &prefer);
        for li in &mut infos {
            li.name = names.get(&li.addr).map(|n| wrapper_name(n, li.kind));
        }
        // Each reference as its own frame spells it: the same lock is
        // `dst.lock` where one thread waits and `src.lock` where another holds it.
        for (t, rt) in threads.iter_mut().zip(&raw) {
            if let Some(w) = &mut t.wait {
                w.name = rt
                    .frames
                    .get(w.frame)
                    .and_then(|f| self.local_name(f, w.lock))
                    .map(|n| wrapper_name(&n, w.kind));
            }
            for h in &mut t.held {
                h.name = h
                    .frame
                    .and_then(|i| rt.frames.get(i))
                    .and_then(|f| self.local_name(f, h.lock))
                    .map(|n| wrapper_name(&n, h.kind));
            }
        }
        for (ti, _, obj) in label_objs {
            let n = names
                .get(&obj)
                .cloned()
                .unwrap_or_else(|| format!("{obj:#x}"));
            if let Some(l) = &mut threads[ti].label {
                *l = format!("{l} on {n}");
            }
        }
        let tnames = self.thread_names(&raw);
        for t in &mut threads {
            t.name = tnames.get(&t.ident).cloned();
        }
        PyView {
            version,
            unsupported: None,
            limited: None,
            threads,
            locks: infos,
            asyncio: None,
            pools: Vec::new(),
        }
    }

    /// `Thread.join()` in progress: the joined thread's TID.
    fn join_target(&mut self, t: &RawThread) -> Option<u32> {
        let f = t.frames.iter().take(2).find(|f| {
            f.frame.file.ends_with("threading.py")
                && matches!(
                    f.frame.function.as_str(),
                    "Thread._wait_for_tstate_lock" | "Thread.join"
                )
        })?;
        let this = f.locals.first().filter(|(n, _)| n == "self")?.1;
        let attrs = self.attrs(this)?;
        let id = attrs.iter().find(|(n, _)| n == "_native_id")?.1;
        self.r.long(id).and_then(|v| u32::try_from(v).ok())
    }

    /// A name for `obj` among the locals of one frame (and their attributes).
    pub(super) fn local_name(&mut self, f: &RawFrame, obj: u64) -> Option<String> {
        if let Some((k, _)) = f.locals.iter().find(|(_, v)| *v == obj) {
            return Some(k.clone());
        }
        for (k, v) in &f.locals {
            if let Some(attrs) = self.attrs(*v)
                && let Some((a, _)) = attrs.iter().find(|(_, av)| *av == obj)
            {
                return Some(format!("{k}.{a}"));
            }
        }
        None
    }

    fn names(
        &mut self,
        raw: &[RawThread],
        wanted: &HashSet<u64>,
        prefer: &[(usize, usize, u64)],
    ) -> HashMap<u64, String> {
        let mut out: HashMap<u64, String> = HashMap::new();
        if wanted.is_empty() {
            return out;
        }
        // Module globals first: the most stable name.
        let mut dicts: Vec<u64> = Vec::new();
        for f in raw.iter().flat_map(|t| &t.frames) {
            if f.globals != 0 && !dicts.contains(&f.globals) && dicts.len() < 64 {
                dicts.push(f.globals);
            }
        }
        for d in dicts {
            let Some(items) = self.r.str_dict(d) else {
                continue;
            };
            let module = items
                .iter()
                .find(|(k, _)| k == "__name__")
                .and_then(|(_, v)| self.r.string(*v))
                .unwrap_or_default();
            let qual = |k: &str| {
                if module == "__main__" || module.is_empty() {
                    k.to_string()
                } else {
                    format!("{module}.{k}")
                }
            };
            for (k, v) in &items {
                if k.starts_with("__") {
                    continue;
                }
                if wanted.contains(v) {
                    out.entry(*v).or_insert_with(|| qual(k));
                } else if let Some(attrs) = self.attrs(*v) {
                    for (a, av) in attrs {
                        if wanted.contains(&av) {
                            out.entry(av).or_insert_with(|| format!("{}.{a}", qual(k)));
                        }
                    }
                }
            }
        }
        // Then the frames that wait for or hold it.
        for &(ti, fi, obj) in prefer {
            if out.contains_key(&obj) {
                continue;
            }
            if let Some(f) = raw.get(ti).and_then(|t| t.frames.get(fi))
                && let Some(n) = self.local_name(f, obj)
            {
                out.insert(obj, n);
            }
        }
        // Then locals and their attributes, innermost frames first; a bare
        // `self` is the callee's word for it, no name.
        for f in raw.iter().flat_map(|t| &t.frames) {
            for (k, v) in &f.locals {
                if wanted.contains(v) && k != "self" {
                    out.entry(*v).or_insert_with(|| k.clone());
                } else if let Some(attrs) = self.attrs(*v) {
                    for (a, av) in attrs {
                        if wanted.contains(&av) {
                            out.entry(av).or_insert_with(|| format!("{k}.{a}"));
                        }
                    }
                }
            }
        }
        out
    }

    /// `threading._active`: ident -> `Thread._name`.
    fn thread_names(&mut self, raw: &[RawThread]) -> HashMap<u64, String> {
        let mut out = HashMap::new();
        let Some(g) = self.threading_globals(raw) else {
            return out;
        };
        let Some(items) = self.r.str_dict(g) else {
            return out;
        };
        for key in ["_active", "_limbo"] {
            let Some(active) = items.iter().find(|(k, _)| k == key).map(|x| x.1) else {
                continue;
            };
            for (k, t) in self.r.dict(active).unwrap_or_default() {
                let Some(ident) = self.r.long(k) else {
                    continue;
                };
                let name = self
                    .attrs(t)
                    .and_then(|a| a.into_iter().find(|(n, _)| n == "_name"))
                    .and_then(|(_, v)| self.r.string(v));
                if let Some(n) = name {
                    out.insert(ident, n);
                }
            }
        }
        out
    }

    /// The `threading` module's globals: from a frame running its code, or
    /// the `threading` name in a frame's globals.
    fn threading_globals(&mut self, raw: &[RawThread]) -> Option<u64> {
        let frames = || raw.iter().flat_map(|t| &t.frames);
        if let Some(f) = frames().find(|f| f.frame.file.ends_with("/threading.py")) {
            return Some(f.globals);
        }
        let mut tried = HashSet::new();
        for f in frames() {
            if !tried.insert(f.globals) {
                continue;
            }
            let items = self.r.str_dict(f.globals)?;
            if let Some((_, m)) = items.iter().find(|(k, _)| k == "threading")
                && self.r.is_type(*m, "module")
            {
                return self.r.u64(m + 16);
            }
        }
        None
    }
}

/// A multiprocessing lock as the program spells it: the Python object
/// (`lock_a`) around the `_semlock` the view finds (`lock_a._semlock`).
fn wrapper_name(name: &str, kind: PyLockKind) -> String {
    match name.strip_suffix("._semlock") {
        Some(w) if kind.across_processes() => w.to_string(),
        _ => name.to_string(),
    }
}

/// Waits that have no owner to blame, named after the outermost matching
/// frame among the innermost few of `threading`/`queue`.
const LABELS: &[(&str, &str)] = &[
    ("queue.py", "Queue.get"),
    ("queue.py", "Queue.put"),
    ("queue.py", "Queue.join"),
    ("threading.py", "Barrier.wait"),
    ("threading.py", "Event.wait"),
    ("threading.py", "Semaphore.acquire"),
    ("threading.py", "BoundedSemaphore.acquire"),
    ("threading.py", "Condition.wait_for"),
    ("threading.py", "Condition.wait"),
];

fn label_frame(frames: &[RawFrame]) -> Option<(usize, &'static str)> {
    let mut best = None;
    for (i, f) in frames.iter().enumerate().take(8) {
        let file = f.frame.file.rsplit('/').next().unwrap_or("");
        if file != "threading.py" && file != "queue.py" {
            break;
        }
        if let Some(&(_, name)) = LABELS
            .iter()
            .find(|(lf, n)| *lf == file && f.frame.function == *n)
        {
            best = Some((i, name));
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(file: &str, function: &str) -> RawFrame {
        RawFrame {
            frame: PyFrame {
                function: function.into(),
                file: file.into(),
                line: 1,
            },
            globals: 0,
            locals: Vec::new(),
            stack: Vec::new(),
            exact: false,
            opcode: None,
            code: 0,
            unit: None,
            exctable: 0,
            first_line: 0,
        }
    }

    #[test]
    fn labels_name_the_outermost_library_wait() {
        let q = [
            frame("/usr/lib/python3.11/threading.py", "Condition.wait"),
            frame("/usr/lib/python3.11/queue.py", "Queue.get"),
            frame("/app/worker.py", "consume"),
        ];
        assert_eq!(label_frame(&q), Some((1, "Queue.get")));
        let e = [
            frame("/x/threading.py", "Condition.wait"),
            frame("/x/threading.py", "Event.wait"),
            frame("/app/a.py", "main"),
        ];
        assert_eq!(label_frame(&e), Some((1, "Event.wait")));
        // A user's own Queue.get is not the library's.
        assert_eq!(label_frame(&[frame("/app/queue2.py", "Queue.get")]), None);
        assert_eq!(label_frame(&[frame("/app/a.py", "main")]), None);
    }
}
