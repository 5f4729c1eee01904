//! Enrichment: what the live run learns about the target besides its
//! events, fed to the engine as events (so a recording keeps it): names of
//! locks and call sites, mappings, unwound stacks, the Python view, lock
//! owners and gates of the deep tier.

use std::collections::HashSet;

use anyhow::Result;

use super::{Session, Sink, target::min_age, uprobes::UprobeSet};
use crate::{
    event::Event,
    model::Model,
    probe::Probes,
    source::{live::LiveSource, procfs},
    symbol::Symbolizer,
};

/// A thread's futex wait as the Python reads remember it: (tid, uaddr, start).
pub(super) type PyWaitKey = (u32, u64, u64);

impl<S: Sink> Session<S> {
    /// Reads the Python view of CPython targets whose threads sit in futex
    /// waits older than the minimum age, when those waits changed since
    /// the last read (or always, with `again`: a second read confirms a
    /// cycle, since reads that do not stop the target can tear).
    pub(super) fn python_view(&mut self, now: u64, again: bool) -> Result<()> {
        self.python_view_of(now, again, false)
    }

    /// `all`: every CPython target still alive, blocked or not (the end of
    /// observation, so every thread's report carries its Python stack).
    pub(super) fn python_view_of(&mut self, now: u64, again: bool, all: bool) -> Result<()> {
        let min = min_age(&self.opts).max(self.python_after_ns);
        let mut evs = Vec::new();
        let procs: Vec<(u32, Vec<PyWaitKey>)> = self
            .engine
            .model
            .processes
            .values()
            .filter(|p| p.observed_to_ns.is_none() && !self.not_python.contains(&p.tgid))
            .filter(|p| !all || procfs::exists(p.tgid))
            .map(|p| {
                let waits = p
                    .live_threads()
                    .filter_map(|t| t.wait.as_ref().map(|w| (t.tid, w.uaddr, w.start_ns)))
                    .filter(|w| now.saturating_sub(w.2) >= min)
                    .collect();
                (p.tgid, waits)
            })
            .collect();
        for (tgid, waits) in procs {
            if !all && (waits.is_empty() || (!again && self.py_read.get(&tgid) == Some(&waits))) {
                continue;
            }
            match python_events(&self.engine.model, &mut self.symbols, tgid, now) {
                Some(got) => evs.extend(got),
                None => {
                    self.not_python.insert(tgid);
                }
            }
            self.py_read.insert(tgid, waits);
        }
        self.feed(&mut evs)
    }

    /// Python thread names for CPython targets (checked about once a
    /// second). Read when the process's threads changed, a few times while
    /// one of them has no name yet (a thread is named a moment after it
    /// starts), not at every tick: a fleet of healthy processes costs no
    /// reads. (A finding's own Python read names its threads again.)
    /// A process observed from now on (a followed holder): its Python
    /// thread names are read now, whatever was tried while it was not
    /// watched (a fork seen unwatched has its parent's names).
    pub(crate) fn python_names_of_new(&mut self, tgid: u32, now: u64) -> Result<()> {
        self.py_named.remove(&tgid);
        self.not_python.remove(&tgid);
        self.python_names(now)
    }

    pub(crate) fn python_names(&mut self, now: u64) -> Result<()> {
        const TRIES: u8 = 3;
        let mut evs = Vec::new();
        let mut tgids = Vec::new();
        for p in self.engine.model.processes.values() {
            if p.observed_to_ns.is_some() || self.not_python.contains(&p.tgid) {
                continue;
            }
            let mut h = std::hash::DefaultHasher::new();
            let mut unnamed = false;
            for t in p.live_threads() {
                std::hash::Hash::hash(&t.tid, &mut h);
                unnamed |= t.py_name.is_none();
            }
            let set = std::hash::Hasher::finish(&h);
            let e = self.py_named.entry(p.tgid).or_insert((set ^ 1, 0));
            if e.0 != set {
                *e = (set, 0);
            }
            if e.1 == 0 || (unnamed && e.1 < TRIES) {
                e.1 += 1;
                tgids.push(p.tgid);
            }
        }
        for tgid in tgids {
            match self.symbols.python_threads(tgid) {
                Ok(Some(threads)) => {
                    evs.extend(py_name_events(&self.engine.model, tgid, &threads, now))
                }
                Ok(None) => {
                    self.not_python.insert(tgid);
                }
                Err(e) => tracing::debug!("python threads of {tgid}: {e:#}"),
            }
        }
        self.feed(&mut evs)
    }

    /// Names the contended futexes and deep-tier locks the kernel has
    /// counted so far (while the process is alive to be read): those of
    /// this session's processes.
    pub(super) fn symbolize_aggregates(&mut self, keys: &[(u32, u64)]) -> Result<()> {
        let mut evs = Vec::new();
        for &(tgid, addr) in keys {
            if self.engine.model.processes.contains_key(&tgid)
                && self.sym_tried.insert((tgid, addr))
                && let Some(name) = self.symbols.data_symbol(tgid, addr).map(symbol_name)
            {
                evs.push(Event::Symbol { tgid, addr, name });
            }
        }
        evs.extend(maps_events(&mut self.symbols));
        self.feed(&mut evs)
    }

    /// Deep tier: the gates of lock-order edges that changed in the kernel
    /// since first seen (a gate only ever clears), before the next scan.
    pub(crate) fn refresh_gates(&mut self, src: &LiveSource) -> Result<()> {
        if !UprobeSet::of(&self.opts).locks
            || !self
                .engine
                .model
                .processes
                .values()
                .any(|p| p.lock_edges.len() >= 2)
        {
            return Ok(());
        }
        let mut evs = gate_events(&self.engine.model, &src.probes, crate::sys::mono_ns());
        self.feed(&mut evs)
    }

    /// Before an event reaches the engine: reads the mappings of a new image
    /// (or of a process just met) while it runs, so its addresses can be
    /// named after it is gone; unwinds the stacks BPF copied.
    pub(super) fn enrich_event(&mut self, ev: &mut Event) {
        // An exec of a relative path: the report names the file absolutely
        // (the process's working directory is the one it exec'd in).
        if let Event::Exec { tgid, filename, .. } = ev
            && !filename.starts_with('/')
            && let Ok(cwd) = std::fs::read_link(format!("/proc/{tgid}/cwd"))
        {
            let rel = filename.trim_start_matches("./").to_string();
            *filename = cwd.join(rel).display().to_string();
        }
        // A new image (or a process we just met): read its mappings now,
        // while it runs, so its addresses can be named after it is gone.
        match &*ev {
            Event::Exec {
                tgid,
                filename,
                image,
                ..
            } => {
                // A new image may be an interpreter (a shell or a launcher
                // such as pyenv's shim execs python): look again.
                self.not_python.remove(tgid);
                self.py_read.remove(tgid);
                self.py_named.remove(tgid);
                self.symbols.exec(*tgid, filename, *image)
            }
            Event::Start {
                tgid,
                attached: true,
                ..
            } => self.symbols.read_maps_now(*tgid),
            Event::ThreadNew {
                tgid, child_tgid, ..
            } if tgid != child_tgid && self.opts.follow_forks => {
                self.symbols.read_maps_now(*child_tgid)
            }
            _ => {}
        }
        // A lock-order edge's stack was copied by BPF: unwind it (from
        // the recorded mappings if the process is gone already).
        if let Event::LockEdge {
            tgid,
            regs,
            stack,
            frames,
            ..
        } = ev
            && !stack.is_empty()
            && frames.is_empty()
        {
            // ip is the lock call's return address: step back into the call.
            let r = crate::symbol::Regs {
                ip: regs[0].saturating_sub(1),
                sp: regs[1],
                bp: regs[2],
            };
            *frames = self
                .symbols
                .stack_from_copy(*tgid, r, std::mem::take(stack))
                .unwrap_or_else(|e| {
                    tracing::debug!("unwinding a lock-order edge's stack: {e:#}");
                    Vec::new()
                });
        }
        // A new thread's creation stack was copied by BPF: unwind it now,
        // while the creator's mappings are there (symbols come later,
        // once per distinct address).
        if let Event::CreationStack {
            tgid,
            regs,
            stack,
            frames,
            sig,
            ..
        } = ev
            && frames.is_empty()
        {
            if *sig != 0 {
                // no copy: the stack matched a signature of an earlier one
                *frames = self.stack_sigs.frames(*tgid, *sig).unwrap_or_default();
                *sig = 0;
            } else if !stack.is_empty() {
                let r = crate::symbol::Regs {
                    ip: regs[0],
                    sp: regs[1],
                    bp: regs[2],
                };
                let u = self.symbols.creation_stack(*tgid, r, std::mem::take(stack));
                self.stack_sigs.learn(*tgid, r, &u);
                *frames = u.frames;
            }
        }
        match ev {
            Event::ThreadExit {
                tgid,
                group_dead: true,
                ..
            } => self.stack_sigs.forget(*tgid),
            Event::Exec { tgid, .. } => self.stack_sigs.forget(*tgid),
            _ => {}
        }
    }
}

pub(super) fn symbol_name(d: crate::symbol::DataSymbol) -> String {
    if d.offset == 0 {
        d.name
    } else {
        format!("{}+{:#x}", d.name, d.offset)
    }
}

/// Lock owners that are no thread of the waiter's process nor of any
/// observed one: the process each is a thread of, from /proc, once per
/// owner (an orphan is only one when its owner is nowhere).
pub(super) fn foreign_events(
    model: &Model,
    tried: &mut HashSet<(u32, u32)>,
    now: u64,
) -> Vec<Event> {
    use observer_core::graph::{Holder, classify};
    let mut out = Vec::new();
    for p in model
        .processes
        .values()
        .filter(|p| p.observed_to_ns.is_none())
    {
        for w in p.live_threads().filter_map(|t| t.wait.as_ref()) {
            let Holder::Gone(owner) = classify(w, p).holder else {
                continue;
            };
            if model.live_thread(owner).is_some() || !tried.insert((p.tgid, owner)) {
                continue;
            }
            let Some(q) = procfs::tgid_of(owner).filter(|&q| q != p.tgid) else {
                continue;
            };
            out.push(Event::ForeignThread {
                ts_ns: now,
                tgid: p.tgid,
                tid: owner,
                owner_tgid: q,
                name: procfs::thread_comm(q, owner).unwrap_or_default(),
                comm: procfs::thread_comm(q, q).unwrap_or_default(),
                exe: procfs::exe(q),
            });
        }
    }
    out
}

/// A process-shared futex wait (no FUTEX_PRIVATE_FLAG) on a word no
/// recorded mapping covers: the mappings predate the memory, read them
/// again (once per word) so the lock is keyed by its shared object.
pub(super) fn shared_maps_events(
    model: &Model,
    symbols: &mut Symbolizer,
    tried: &mut HashSet<(u32, u64)>,
) -> Vec<Event> {
    for p in model.processes.values() {
        let stale = p
            .live_threads()
            .filter_map(|t| t.wait.as_ref())
            .filter(|w| !observer_core::event::futex::is_private(w.op))
            .filter(|w| p.mapping_of(w.uaddr).is_none())
            .any(|w| tried.insert((p.tgid, w.uaddr)));
        if stale {
            symbols.read_maps_now(p.tgid);
        }
    }
    maps_events(symbols)
}

/// `Mappings` events for the mappings the symbolizer read since last time.
pub(super) fn maps_events(symbols: &mut Symbolizer) -> Vec<Event> {
    let new = symbols.take_new_maps();
    if new.is_empty() {
        return Vec::new();
    }
    let ts_ns = crate::sys::mono_ns();
    new.into_iter()
        .map(|(tgid, maps)| Event::Mappings { ts_ns, tgid, maps })
        .collect()
}

/// `Symbol` events for lock addresses, and `CodeSymbol` events for thread
/// creation sites and lock call sites, not looked up yet: from the live
/// process, or from its recorded mappings once it is gone. Ends with the
/// `Mappings` events of what had to be read again.
pub(crate) fn symbol_events(
    model: &Model,
    symbols: &mut Symbolizer,
    tried: &mut HashSet<(u32, u64)>,
) -> Vec<Event> {
    let mut out = Vec::new();
    for p in model.processes.values() {
        // Lock addresses: what threads wait for, lock-order edges, locks held
        // at exit, and the deep tier's per-lock profiles (a program shorter
        // than the aggregate tick has its locks named only here).
        let waits = p.live_threads().filter_map(|t| t.wait.as_ref());
        let mut locks: Vec<u64> = waits
            .chain(p.pi_edeadlk.iter().map(|(_, w, _)| w))
            .flat_map(|w| [crate::graph::classify(w, p).lock, w.uaddr])
            .collect();
        locks.extend(p.lock_edges.keys().flat_map(|e| [e.from, e.to]));
        locks.extend(p.held_at_attach.keys().copied());
        locks.extend(p.lock_profiles.keys().map(|&(lock, _)| lock));
        locks.extend(
            p.exit_held
                .iter()
                .flat_map(|(_, _, l)| l.iter().map(|x| x.lock)),
        );
        for addr in locks {
            if !model.symbols.contains_key(&(p.tgid, addr))
                && tried.insert((p.tgid, addr))
                && let Some(name) = symbols.data_symbol(p.tgid, addr).map(symbol_name)
            {
                out.push(Event::Symbol {
                    tgid: p.tgid,
                    addr,
                    name,
                });
            }
        }
        // Code addresses: thread creation sites and stacks, lock call sites.
        let mut sites: Vec<u64> = p.create_sites().collect();
        sites.extend(p.create_stacks.iter().flatten().copied());
        sites.extend(p.lock_edges.values().flat_map(|e| [e.from_site, e.to_site]));
        sites.extend(
            p.exit_held
                .iter()
                .flat_map(|(_, _, l)| l.iter().map(|x| x.site)),
        );
        for site in sites {
            if site != 0
                && !model.code_symbols.contains_key(&(p.tgid, site))
                && tried.insert((p.tgid, site))
                && let Some(f) = symbols.call_site(p.tgid, site)
            {
                out.push(Event::CodeSymbol {
                    tgid: p.tgid,
                    addr: site,
                    name: site_name(&f),
                });
            }
        }
    }
    out.extend(maps_events(symbols));
    out
}

/// `CodeSymbol` events for the thread creation sites and stacks of processes
/// that have ended (the symbolizer keeps their mappings).
pub(super) fn late_site_events(
    model: &Model,
    symbols: &mut Symbolizer,
    tried: &mut HashSet<(u32, u64)>,
) -> Vec<Event> {
    let mut out = Vec::new();
    for p in model.processes.values() {
        let sites = p.create_sites();
        let stacks = p.create_stacks.iter().flatten().copied();
        for site in sites.chain(stacks) {
            if site != 0
                && tried.insert((p.tgid, site))
                && let Some(f) = symbols.call_site(p.tgid, site)
            {
                out.push(Event::CodeSymbol {
                    tgid: p.tgid,
                    addr: site,
                    name: site_name(&f),
                });
            }
        }
    }
    out
}

/// `LockOwner` events (deep tier) for locks that threads wait for and whose
/// primitive records no owner (semaphores, Python locks), when it changed.
pub(super) fn owner_events(model: &Model, probes: &Probes, now: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for p in model
        .processes
        .values()
        .filter(|p| p.observed_to_ns.is_none())
    {
        for t in p.live_threads() {
            let Some(w) = &t.wait else { continue };
            let kind = crate::graph::classify(w, p).kind;
            if !matches!(
                kind,
                crate::graph::LockKind::Semaphore
                    | crate::graph::LockKind::PyLock
                    | crate::graph::LockKind::Lock
                    | crate::graph::LockKind::Unknown
            ) {
                continue;
            }
            // The waiter's own pending call names the primitive best (a
            // Python lock is a semaphore underneath).
            let waiting_as = probes.pending_kind(t.tid);
            let now_owner = probes.lock_owner(p.tgid, w.uaddr).map(|o| {
                (
                    o.tid,
                    waiting_as.unwrap_or(crate::probe::decode::lock_kind(o.kind)),
                )
            });
            if p.lock_owners.get(&w.uaddr).copied() != now_owner {
                out.push(Event::LockOwner {
                    ts_ns: now,
                    tgid: p.tgid,
                    lock: w.uaddr,
                    owner: now_owner.map(|o| o.0),
                    kind: now_owner
                        .map(|o| o.1)
                        .unwrap_or(crate::event::AcqKind::Unknown),
                });
            }
        }
    }
    out
}

/// `EdgeGates` events for lock-order edges whose gate changed in the kernel.
pub(super) fn gate_events(model: &Model, probes: &Probes, now: u64) -> Vec<Event> {
    use std::collections::BTreeMap;
    let mut by: BTreeMap<u32, Vec<(crate::event::EdgeId, u64)>> = BTreeMap::new();
    for (k, e) in probes.lock_edges() {
        let id = crate::event::EdgeId {
            from: k.from,
            from_gen: k.from_gen,
            to: k.to,
            to_gen: k.to_gen,
        };
        let known = model
            .process(k.tgid)
            .and_then(|p| p.lock_edges.get(&id))
            .map(|x| x.gate);
        if known.is_some_and(|g| g != e.gate) {
            by.entry(k.tgid).or_default().push((id, e.gate));
        }
    }
    by.into_iter()
        .map(|(tgid, gates)| Event::EdgeGates {
            ts_ns: now,
            tgid,
            gates,
        })
        .collect()
}

/// `LockProfile` events from the deep tier's per-lock tables (at the end).
pub(super) fn profile_events(probes: &Probes) -> Vec<Event> {
    let (stats, holders) = probes.lock_stats();
    stats
        .into_iter()
        .map(|(k, st)| {
            let mut top: Vec<(u32, u64, u64)> = holders
                .iter()
                .filter(|(h, _)| h.lock == k.lock && h.tgid == k.tgid)
                .map(|(h, v)| (h.tid, v.count, v.hold_total_ns))
                .collect();
            top.sort_by_key(|t| std::cmp::Reverse(t.2));
            top.truncate(5);
            Event::LockProfile {
                tgid: k.tgid,
                lock: k.lock,
                generation: k.gen_,
                kind: crate::probe::decode::lock_kind(st.kind),
                profile: crate::event::LockProfile {
                    acquired: st.acquired,
                    contended: st.contended,
                    wait_total_ns: st.wait_total_ns,
                    wait_max_ns: st.wait_max_ns,
                    hold_total_ns: st.hold_total_ns,
                    hold_max_ns: st.hold_max_ns,
                    hold_hist: st.hold_hist.to_vec(),
                    top_holders: top,
                },
            }
        })
        .collect()
}

/// `PyThreadName` events for Python threads whose name the model lacks.
pub(super) fn py_name_events(
    model: &Model,
    tgid: u32,
    threads: &[crate::symbol::PyThread],
    now: u64,
) -> Vec<Event> {
    let p = model.process(tgid);
    threads
        .iter()
        .filter(|t| t.tid != 0)
        .filter_map(|t| {
            let name = t.name.clone()?;
            let known = p
                .and_then(|p| p.thread(t.tid))
                .and_then(|x| x.py_name.as_deref())
                == Some(name.as_str());
            (!known).then_some(Event::PyThreadName {
                ts_ns: now,
                tgid,
                tid: t.tid,
                name,
            })
        })
        .collect()
}

/// Stacks of the threads the findings name, unless already taken for
/// their current wait; Python stacks and names for CPython targets.
pub(super) fn stack_events(
    model: &Model,
    symbols: &mut Symbolizer,
    probes: Option<&Probes>,
    found: &[crate::detect::Finding],
    now: u64,
    python_native: bool,
) -> Vec<Event> {
    use crate::detect::FindingKind as K;
    use std::collections::BTreeMap;
    let mut want: BTreeMap<u32, Vec<(u32, crate::symbol::Regs)>> = BTreeMap::new();
    // Findings about the past (inversions, leaks) carry their own evidence.
    let now_findings = found.iter().filter(|f| {
        matches!(
            f.kind,
            K::Deadlock | K::PiDeadlock | K::OrphanedLock | K::LongWait | K::StuckThread
        ) || matches!(
            f.detail,
            crate::detect::Detail::ProcessHung { watchdog: true, .. }
        )
    });
    for f in now_findings {
        // A cycle across processes names threads of several.
        for ti in &f.threads {
            let Some(p) = model.process(ti.pid) else {
                continue;
            };
            let Some(t) = p.thread(ti.tid).filter(|t| t.alive()) else {
                continue;
            };
            let since = t
                .wait
                .as_ref()
                .map(|w| w.start_ns)
                .or(t.stuck.as_ref().map(|s| s.since_ns))
                .unwrap_or(0);
            if t.stack.as_ref().is_some_and(|s| s.ts_ns >= since) {
                continue;
            }
            // The thread is still in the syscall: /proc has its registers
            // (sp 0 asks the symbolizer to read them there).
            let regs = crate::symbol::Regs::default();
            if let Some(pr) = probes {
                let sites = pr.pending_sites(ti.tid);
                if !sites.is_empty() {
                    symbols.set_return_fixups(ti.tid, sites);
                }
            }
            let v = want.entry(ti.pid).or_default();
            if !v.iter().any(|(x, _)| *x == ti.tid) {
                v.push((ti.tid, regs));
            }
        }
    }
    let mut out = Vec::new();
    for (tgid, mut threads) in want {
        let view = model
            .process(tgid)
            .and_then(|p| p.python.as_ref())
            .filter(|v| v.unsupported.is_none());
        // CPython threads the Python view already shows: without
        // `python_native` their Python stack is the answer (unwinding them
        // costs more than the whole Python read).
        if let Some(view) = view
            && !python_native
        {
            threads.retain(|(tid, _)| {
                let Some(t) = view.thread(*tid).filter(|t| !t.frames.is_empty()) else {
                    return true;
                };
                out.push(Event::Stack {
                    ts_ns: now,
                    tgid,
                    tid: *tid,
                    frames: Vec::new(),
                    python: t.frames.clone(),
                    python_entry: Vec::new(),
                    owns_gil: false,
                });
                false
            });
            if threads.is_empty() {
                continue;
            }
        }
        let py = match view {
            Some(v) => v
                .threads
                .iter()
                .map(|t| crate::symbol::PyThread {
                    tid: t.tid,
                    name: t.name.clone(),
                    owns_gil: false,
                    frames: t.frames.clone(),
                    entries: Vec::new(),
                })
                .collect(),
            None => symbols
                .python_threads(tgid)
                .ok()
                .flatten()
                .unwrap_or_default(),
        };
        out.extend(py_name_events(model, tgid, &py, now));
        let stacks = symbols.native_stacks(tgid, &threads);
        // Where each Python frame sits in the native stack: py-spy's read
        // of the same threads, right after the unwinding.
        let spy = py_entries(symbols, tgid, &py);
        for (tid, frames) in stacks {
            let pt = py.iter().find(|x| x.tid == tid);
            let python = pt.map(|x| x.frames.clone()).unwrap_or_default();
            out.push(Event::Stack {
                ts_ns: now,
                tgid,
                tid,
                frames: frames.unwrap_or_default(),
                python_entry: crate::symbol::entries_for(
                    &python,
                    spy.iter().find(|x| x.tid == tid),
                ),
                python,
                owns_gil: pt.is_some_and(|x| x.owns_gil),
            });
        }
    }
    out
}

/// "spawn_worker (pool.c:21)", or the function, or module+offset.
pub(super) fn site_name(f: &crate::symbol::Frame) -> String {
    match (&f.function, &f.file, f.line) {
        (Some(func), Some(file), Some(line)) => {
            format!(
                "{func} ({}:{line})",
                file.rsplit('/').next().unwrap_or(file)
            )
        }
        (Some(func), _, _) => func.clone(),
        (None, _, _) => format!(
            "{}+{:#x}",
            f.module.as_deref().unwrap_or("?"),
            f.module_offset
        ),
    }
}

/// The Python view of `tgid` if it is CPython (a `PyState` event), and the
/// names of its locks as `Symbol` events. None: not CPython.
pub(super) fn python_events(
    model: &Model,
    symbols: &mut Symbolizer,
    tgid: u32,
    now: u64,
) -> Option<Vec<Event>> {
    let p = model.process(tgid)?;
    let waits: std::collections::HashMap<u32, u64> = p
        .live_threads()
        .filter_map(|t| Some((t.tid, t.wait.as_ref()?.uaddr)))
        .collect();
    let started = std::time::Instant::now();
    let view = match symbols.python_view(tgid, &waits) {
        Ok(Some(v)) => v,
        Ok(None) => return None,
        Err(e) => {
            tracing::info!("cannot read the Python interpreter of {tgid}: {e:#}");
            return Some(Vec::new());
        }
    };
    tracing::debug!(
        "python view of {tgid} in {:?} ({} memory reads so far)",
        started.elapsed(),
        crate::python::reader::READS.load(std::sync::atomic::Ordering::Relaxed)
    );
    let mut out: Vec<Event> = view
        .locks
        .iter()
        .filter_map(|l| Some((l.addr, l.name.clone()?)))
        // Futures waited for, as the waiting code spells them.
        .chain(view.threads.iter().filter_map(|t| {
            let f = t.future.as_ref()?;
            Some((f.addr, f.name.clone()?))
        }))
        .map(|(addr, name)| Event::Symbol { tgid, addr, name })
        .collect();
    out.push(Event::PyState {
        ts_ns: now,
        tgid,
        view,
    });
    Some(out)
}

/// Native stacks of the live threads of `tgid` that have none yet, with
/// their Python stacks when the view shows them.
pub(super) fn all_stacks(
    model: &Model,
    symbols: &mut Symbolizer,
    tgid: u32,
    now: u64,
) -> Vec<Event> {
    let Some(p) = model.process(tgid) else {
        return Vec::new();
    };
    let threads: Vec<(u32, crate::symbol::Regs)> = p
        .live_threads()
        .filter(|t| t.stack.is_none())
        .map(|t| (t.tid, crate::symbol::Regs::default()))
        .collect();
    let stacks = symbols.native_stacks(tgid, &threads);
    let py: Vec<crate::symbol::PyThread> = p
        .python
        .as_ref()
        .map(|v| {
            v.threads
                .iter()
                .map(|t| crate::symbol::PyThread {
                    tid: t.tid,
                    name: t.name.clone(),
                    owns_gil: false,
                    frames: t.frames.clone(),
                    entries: Vec::new(),
                })
                .collect()
        })
        .unwrap_or_default();
    let spy = py_entries(symbols, tgid, &py);
    stacks
        .into_iter()
        .map(|(tid, frames)| {
            let python = py
                .iter()
                .find(|t| t.tid == tid)
                .map(|t| t.frames.clone())
                .unwrap_or_default();
            Event::Stack {
                ts_ns: now,
                tgid,
                tid,
                frames: frames.unwrap_or_default(),
                python_entry: crate::symbol::entries_for(
                    &python,
                    spy.iter().find(|x| x.tid == tid),
                ),
                python,
                owns_gil: false,
            }
        })
        .collect()
}

/// py-spy's read of the Python threads of `tgid`, for the entry frames of
/// their eval-loop calls (see `symbol::entries_for`): `py` itself when it
/// came from py-spy, nothing when no thread has Python frames.
fn py_entries(
    symbols: &mut Symbolizer,
    tgid: u32,
    py: &[crate::symbol::PyThread],
) -> Vec<crate::symbol::PyThread> {
    if py.iter().all(|t| t.frames.is_empty()) {
        return Vec::new();
    }
    if py.iter().any(|t| !t.entries.is_empty()) {
        return py.to_vec();
    }
    symbols
        .python_threads(tgid)
        .unwrap_or_else(|e| {
            tracing::debug!("python threads of {tgid}: {e:#}");
            None
        })
        .unwrap_or_default()
}
