//! `run` and `attach`: load probes, start or find the target, feed events
//! from the live source into the model until the target exits or we are
//! told to stop, then print the summary and write the reports.

use std::{
    collections::HashSet,
    fs::File,
    io::{BufWriter, Write},
    os::fd::OwnedFd,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

mod gil;

use crate::{
    cli::ObserveOpts,
    detect::Engine,
    event::Event,
    model::Model,
    probe::{HookUse, ProbeConfig, Probes, Rung},
    report,
    source::{live::LiveSource, procfs},
    symbol::Symbolizer,
    sys,
};

/// Output files, opened (so checked) before any BPF is loaded.
pub(crate) struct Outputs {
    report: Option<(PathBuf, File)>,
    record: Option<BufWriter<File>>,
    pictures: crate::recording::Pictures,
}

fn create(p: &PathBuf, what: &str) -> Result<File> {
    File::create(p).with_context(|| format!("cannot write {what} {}", p.display()))
}

impl Outputs {
    pub(crate) fn open(opts: &ObserveOpts) -> Result<Outputs> {
        Ok(Outputs {
            report: match &opts.report {
                Some(p) => Some((p.clone(), create(p, "report")?)),
                None => None,
            },
            record: match &opts.record {
                Some(p) => Some(BufWriter::new(create(p, "recording")?)),
                None => None,
            },
            pictures: crate::recording::Pictures::open(&opts.pictures)?,
        })
    }
}

enum Target {
    /// Started by us: reaped for its exit status.
    Child {
        pid: u32,
    },
    Attached {
        pid: u32,
    },
}

impl Target {
    fn pid(&self) -> u32 {
        match self {
            Target::Child { pid } | Target::Attached { pid } => *pid,
        }
    }
}

pub(crate) struct Session {
    pub(crate) opts: ObserveOpts,
    long_wait_ns: u64,
    pub(crate) model: Model,
    out: Outputs,
    pub(crate) engine: Engine,
    symbols: Symbolizer,
    sym_tried: HashSet<(u32, u64)>,
    fed_since_scan: bool,
    /// Time of the last `Scan` event recorded.
    scan_recorded_ns: u64,
    /// Processes whose libc may not be mapped yet (just exec'd or forked):
    /// tgid -> give up at (ns).
    pending_uprobes: std::collections::HashMap<u32, u64>,
    /// Processes known not to be CPython (until they exec).
    not_python: HashSet<u32>,
    /// The kernel stops watched processes at exec (deep tier in `run`).
    stop_on_exec: bool,
    /// Processes stopped at exec, to continue once their uprobes are in.
    exec_stopped: Vec<u32>,
    /// The futex waits each CPython process had at its last Python read.
    py_read: std::collections::HashMap<u32, Vec<PyWaitKey>>,
    /// GIL accounting of CPython targets (session/gil.rs).
    gil: gil::GilState,
}

impl Session {
    pub(crate) fn new(opts: ObserveOpts, mut out: Outputs) -> Result<Session> {
        let long_wait_ns = opts.long_wait_ns()?;
        let limits = crate::detect::Limits {
            long_wait_ns,
            stuck_ns: crate::cli::secs_to_ns(opts.stuck, "--stuck")?,
            churn_per_s: opts.churn,
        };
        if let Some(rec) = &mut out.record {
            crate::recording::Header::new(&limits, opts.scan_interval).write(rec)?;
        }
        Ok(Session {
            opts,
            long_wait_ns,
            model: Model::new(),
            out,
            engine: Engine::new(limits),
            symbols: Symbolizer::new(),
            sym_tried: HashSet::new(),
            fed_since_scan: false,
            scan_recorded_ns: 0,
            pending_uprobes: std::collections::HashMap::new(),
            not_python: HashSet::new(),
            stop_on_exec: false,
            exec_stopped: Vec::new(),
            py_read: std::collections::HashMap::new(),
            gil: gil::GilState::default(),
        })
    }

    /// Reads the Python view of CPython targets whose threads sit in futex
    /// waits older than the minimum age, when those waits changed since
    /// the last read (or always, with `again`: a second read confirms a
    /// cycle, since reads that do not stop the target can tear).
    fn python_view(&mut self, now: u64, again: bool) -> Result<()> {
        self.python_view_of(now, again, false)
    }

    /// `all`: every CPython target still alive, blocked or not (the end of
    /// observation, so every thread's report carries its Python stack).
    fn python_view_of(&mut self, now: u64, again: bool, all: bool) -> Result<()> {
        let min = min_age(&self.opts);
        let mut evs = Vec::new();
        let procs: Vec<(u32, Vec<PyWaitKey>)> = self
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
            match python_events(&self.model, &mut self.symbols, tgid, now) {
                Some(got) => evs.extend(got),
                None => {
                    self.not_python.insert(tgid);
                }
            }
            self.py_read.insert(tgid, waits);
        }
        if !evs.is_empty() && !all {
            // Replay judges at scans: judge again with what Python showed.
            evs.push(Event::Scan { ts_ns: now });
        }
        self.feed(&mut evs)
    }

    /// Attaches the thread uprobes to processes whose libc just appeared.
    pub(crate) fn pending_thread_uprobes(&mut self, src: &mut LiveSource, now: u64) {
        let pending: Vec<(u32, u64)> = self.pending_uprobes.iter().map(|(a, b)| (*a, *b)).collect();
        for (tgid, give_up) in pending {
            if attach_uprobes(&mut src.probes, tgid, tgid, UprobeSet::of(&self.opts))
                || now > give_up
                || !procfs::exists(tgid)
            {
                self.pending_uprobes.remove(&tgid);
            }
        }
    }

    /// Deep tier: puts the lock uprobes on libraries mapped since the last
    /// look (dlopen of libpython, ...); already probed ones are skipped.
    fn recheck_libs(&mut self, src: &mut LiveSource) {
        let set = UprobeSet::of(&self.opts);
        if !set.locks {
            return;
        }
        let live: Vec<u32> = self
            .model
            .processes
            .values()
            .filter(|p| p.observed_to_ns.is_none())
            .map(|p| p.tgid)
            .collect();
        for tgid in live {
            attach_uprobes(&mut src.probes, tgid, tgid, set);
        }
    }

    /// Continues the processes the kernel stopped at exec, once the uprobes
    /// are on the executable and the libraries it will map (its ELF
    /// dependencies: the loader has not mapped them yet).
    fn resume_execs(&mut self, probes: &mut Probes) {
        let set = UprobeSet::of(&self.opts);
        for tgid in std::mem::take(&mut self.exec_stopped) {
            if let Ok(exe) = std::fs::read_link(format!("/proc/{tgid}/exe")) {
                let (libs, py) = planned_uprobe_targets(&exe);
                attach_uprobes_to(probes, tgid, &libs, &py, set);
            }
            sys::kill(tgid, libc::SIGCONT);
        }
    }

    /// Names the contended futexes the kernel has counted so far (while the
    /// process is alive to be read).
    /// Python thread names for CPython targets (checked about once a second).
    pub(crate) fn python_names(&mut self, now: u64) -> Result<()> {
        let mut evs = Vec::new();
        let tgids: Vec<u32> = self
            .model
            .processes
            .values()
            .filter(|p| p.observed_to_ns.is_none() && !self.not_python.contains(&p.tgid))
            .map(|p| p.tgid)
            .collect();
        for tgid in tgids {
            match self.symbols.python_threads(tgid) {
                Ok(Some(threads)) => evs.extend(py_name_events(&self.model, tgid, &threads, now)),
                Ok(None) => {
                    self.not_python.insert(tgid);
                }
                Err(e) => tracing::debug!("python threads of {tgid}: {e:#}"),
            }
        }
        self.feed(&mut evs)
    }

    fn symbolize_aggregates(&mut self, src: &LiveSource) -> Result<()> {
        let mut evs = Vec::new();
        let deep: Vec<(u32, u64)> = if self.opts.uprobes {
            src.probes
                .lock_stats()
                .0
                .into_iter()
                .map(|(k, _)| (k.tgid, k.lock))
                .collect()
        } else {
            Vec::new()
        };
        for (tgid, addr) in deep {
            if self.sym_tried.insert((tgid, addr))
                && let Some(name) = self.symbols.data_symbol(tgid, addr).map(symbol_name)
            {
                evs.push(Event::Symbol { tgid, addr, name });
            }
        }
        for (k, _) in src.probes.aggregates() {
            if self.sym_tried.insert((k.tgid, k.uaddr))
                && let Some(name) = self.symbols.data_symbol(k.tgid, k.uaddr).map(symbol_name)
            {
                evs.push(Event::Symbol {
                    tgid: k.tgid,
                    addr: k.uaddr,
                    name,
                });
            }
        }
        evs.extend(maps_events(&mut self.symbols));
        self.feed(&mut evs)
    }

    /// Runs the detectors; confirms candidate findings against the target
    /// before reporting them. Returns the processes found hung.
    pub(crate) fn detect(&mut self, src: &mut LiveSource, now: u64) -> Result<Vec<u32>> {
        let mut evs = symbol_events(&self.model, &mut self.symbols, &mut self.sym_tried);
        if self.opts.uprobes {
            evs.extend(owner_events(&self.model, &src.probes, now));
        }
        self.feed(&mut evs)?;
        self.python_view(now, false)?;
        let mut cands = self.engine.candidates(&self.model, now);
        if cands.iter().any(|f| {
            f.kind == crate::detect::FindingKind::Deadlock
                && f.threads.iter().any(|t| t.python.is_some())
        }) {
            self.python_view(now, true)?;
            cands = self.engine.candidates(&self.model, now);
        }
        if cands
            .iter()
            .any(|f| f.kind == crate::detect::FindingKind::LockOrderInversion)
        {
            // Gates change after an edge is first seen: judge on the current ones.
            let mut g = gate_events(&self.model, &src.probes, now);
            if !g.is_empty() {
                self.feed(&mut g)?;
                cands = self.engine.candidates(&self.model, now);
            }
        }
        if cands.is_empty() {
            self.mark_scan(now, false)?;
            return Ok(Vec::new());
        }
        let tids: Vec<u32> = cands
            .iter()
            .flat_map(|f| f.threads.iter().map(|t| t.tid))
            .collect();
        if !src.confirm(&tids, now, &mut evs) {
            // Something moved since the scan: judge again on fresh data.
            // (No scan recorded: replay must not judge this state either.)
            self.feed(&mut evs)?;
            return Ok(Vec::new());
        }
        // The stacks of the threads named, taken now, without stopping them.
        let mut evs = stack_events(
            &self.model,
            &mut self.symbols,
            Some(&src.probes),
            &cands,
            now,
        );
        if !evs.is_empty() {
            self.feed(&mut evs)?;
            cands = self.engine.candidates(&self.model, now);
        }
        self.mark_scan(now, true)?;
        let mut hung = Vec::new();
        for f in self.engine.accept(cands) {
            if f.kind.is_hang() {
                hung.push(f.tgid);
            }
            if !self.opts.quiet {
                eprint!("{}", report::findings::finding(&f));
            }
        }
        Ok(hung)
    }

    /// Records a `Scan` event where the detectors judged, after the events
    /// fed for that judgement (names, owners, stacks), so that replay judges
    /// the same state: always when something is reported (time alone may
    /// have made it: a wait grew long), else when events came since the
    /// last one.
    fn mark_scan(&mut self, now: u64, reporting: bool) -> Result<()> {
        if (reporting || self.fed_since_scan) && self.scan_recorded_ns != now {
            self.apply(&Event::Scan { ts_ns: now })?;
            self.scan_recorded_ns = now;
            self.fed_since_scan = false;
        }
        Ok(())
    }

    pub(crate) fn feed(&mut self, evs: &mut Vec<Event>) -> Result<()> {
        self.fed_since_scan |= !evs.is_empty();
        for mut ev in evs.drain(..) {
            // A new image (or a process we just met): read its mappings now,
            // while it runs, so its addresses can be named after it is gone.
            match &ev {
                Event::Exec {
                    tgid,
                    filename,
                    image,
                    ..
                } => self.symbols.exec(*tgid, filename, *image),
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
            } = &mut ev
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
                ..
            } = &mut ev
                && !stack.is_empty()
                && frames.is_empty()
            {
                let r = crate::symbol::Regs {
                    ip: regs[0],
                    sp: regs[1],
                    bp: regs[2],
                };
                *frames = self.symbols.creation_stack(*tgid, r, std::mem::take(stack));
            }
            if UprobeSet::of(&self.opts).any() {
                match &ev {
                    Event::Exec { ts_ns, tgid, .. } => {
                        if self.stop_on_exec && !self.exec_stopped.contains(tgid) {
                            self.exec_stopped.push(*tgid);
                        }
                        self.pending_uprobes.insert(*tgid, ts_ns + UPROBE_RETRY_NS);
                        self.not_python.remove(tgid);
                    }
                    Event::ThreadNew {
                        ts_ns,
                        tgid,
                        child_tgid,
                        ..
                    } if tgid != child_tgid && self.opts.follow_forks => {
                        self.pending_uprobes
                            .insert(*child_tgid, ts_ns + UPROBE_RETRY_NS);
                    }
                    _ => {}
                }
            }
            self.apply(&ev)?;
            for m in maps_events(&mut self.symbols) {
                self.apply(&m)?;
            }
        }
        Ok(())
    }

    fn apply(&mut self, ev: &Event) -> Result<()> {
        self.model.apply(ev);
        if let Some(rec) = &mut self.out.record {
            serde_json::to_writer(&mut *rec, ev).context("writing the recording")?;
            rec.write_all(b"\n").context("writing the recording")?;
        }
        if !self.opts.quiet
            && let Some(line) = report::live::line(&self.model, ev)
        {
            eprintln!("{line}");
        }
        Ok(())
    }

    fn finish(&mut self, mode: &str, hooks: &[HookUse], uprobes: usize) -> Result<()> {
        print!("{}", report::findings::all(&self.engine.findings));
        println!();
        print!("{}", report::text::summary(&self.model, self.long_wait_ns));
        if let Some(rec) = &mut self.out.record {
            rec.flush().context("writing the recording")?;
        }
        if let Some((path, f)) = self.out.report.take() {
            let mut r = report::json::build(&self.model, mode, hooks, &self.engine.findings);
            r.uprobes_attached = uprobes;
            let mut w = BufWriter::new(f);
            serde_json::to_writer_pretty(&mut w, &r)
                .map_err(anyhow::Error::from)
                .and_then(|_| Ok(w.flush()?))
                .with_context(|| format!("cannot write report {}", path.display()))?;
        }
        self.out
            .pictures
            .write(&self.model, &self.engine.findings)?;
        Ok(())
    }
}

/// `stop_on_exec`: `run` holds each exec of the deep tier's targets until
/// its uprobes are in place (see `Session::resume_execs`).
fn probe_config(opts: &ObserveOpts, stop_on_exec: bool) -> Result<(ProbeConfig, Option<Rung>)> {
    let rung = match opts.hooks.as_str() {
        "auto" => None,
        s => Some(Rung::parse(s).with_context(|| format!("unknown --hooks {s}"))?),
    };
    let cfg = ProbeConfig {
        long_wait_ns: opts.long_wait_ns()?,
        follow_forks: opts.follow_forks,
        ringbuf_bytes: opts.ringbuf_kib.saturating_mul(1024),
        deep: opts.uprobes || opts.uprobes_bare,
        stop_on_exec: stop_on_exec && UprobeSet::of(opts).locks,
    };
    Ok((cfg, rung))
}

/// Fails in one line when this binary was built without BPF programs.
pub fn require_bpf() -> Result<()> {
    if !observer_ebpf::has_programs() {
        bail!(
            "this observer was built without its BPF programs (clang-19 was missing at build \
             time): only `replay` works; install clang-19 and libbpf-dev (`./x setup`) and rebuild"
        );
    }
    Ok(())
}

pub(crate) fn load_probes(opts: &ObserveOpts, verbose: u8, stop_on_exec: bool) -> Result<Probes> {
    require_bpf()?;
    let (cfg, rung) = probe_config(opts, stop_on_exec)?;
    let mut probes = Probes::load(&cfg)?;
    probes.attach(rung)?;
    if probes.mounted_tracefs {
        tracing::info!("mounted tracefs at /sys/kernel/tracing");
    }
    for h in &probes.hooks {
        if verbose > 0 {
            eprintln!("observer: hook {h}");
        }
    }
    if UprobeSet::of(opts).any() {
        probes.prepare_uprobe_multi(UprobeSet::of(opts).locks);
        if verbose > 0 {
            eprintln!("observer: uprobes: {}", probes.uprobe_mode());
        }
    }
    Ok(probes)
}

/// How long to keep looking for the libc of a process that just exec'd.
const UPROBE_RETRY_NS: u64 = 5_000_000_000;

/// Which uprobes to put on a process.
#[derive(Clone, Copy)]
pub(crate) struct UprobeSet {
    thread: bool,
    locks: bool,
    bare: bool,
}

impl UprobeSet {
    pub(crate) fn of(opts: &ObserveOpts) -> UprobeSet {
        UprobeSet {
            thread: opts.thread_uprobes && !opts.no_thread_uprobes,
            locks: opts.uprobes || opts.uprobes_bare,
            bare: opts.uprobes_bare,
        }
    }

    pub(crate) fn any(self) -> bool {
        self.thread || self.locks
    }
}

fn report_uprobes(
    pid: u32,
    lib: &std::path::Path,
    what: &str,
    used: &crate::probe::UprobeUse,
    essential: &[&str],
) {
    tracing::info!(
        "pid {pid}: {what} uprobes on {}: {}",
        lib.display(),
        used.attached.join(", ")
    );
    let missing: Vec<&(&str, String)> = used
        .missing
        .iter()
        .filter(|(s, _)| essential.contains(s))
        .collect();
    if let Some((_, why)) = missing.first() {
        let names: Vec<&str> = missing.iter().map(|(s, _)| *s).collect();
        tracing::warn!(
            "pid {pid}: cannot probe {} in {}: {why}: {what} tracking is incomplete",
            names.join(", "),
            lib.display()
        );
    }
}

/// Puts the uprobes on the libraries that `libs_of` maps (libc; libpython
/// for the deep tier), for process `pid`. Returns whether libc was found.
pub(crate) fn attach_uprobes(probes: &mut Probes, pid: u32, libs_of: u32, set: UprobeSet) -> bool {
    let libs = procfs::thread_libs(libs_of);
    let py = if set.locks {
        procfs::python_libs(libs_of)
    } else {
        Vec::new()
    };
    attach_uprobes_to(probes, pid, &libs, &py, set);
    !libs.is_empty()
}

/// The files a command will map that want uprobes, before it runs: the
/// libraries with libc's thread and lock functions (the executable itself
/// when static), and Python interpreters or libpython.
fn planned_uprobe_targets(prog: &std::path::Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let plan = crate::probe::deps::planned(prog);
    let name = |f: &PathBuf| {
        f.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut libs: Vec<PathBuf> = plan
        .libs
        .iter()
        .filter(|l| procfs::is_thread_lib(&name(l)))
        .cloned()
        .collect();
    if !plan.dynamic {
        libs.extend(plan.exe.clone());
    }
    let py = plan
        .files()
        .filter(|f| procfs::is_python(&name(f)))
        .cloned()
        .collect();
    (libs, py)
}

/// Puts the uprobes of `set` on `libs` (libc) and `py` (Python) for `pid`.
fn attach_uprobes_to(
    probes: &mut Probes,
    pid: u32,
    libs: &[PathBuf],
    py: &[PathBuf],
    set: UprobeSet,
) {
    for lib in libs {
        if set.thread
            && let Some(used) = probes.attach_thread_uprobes(pid, lib)
        {
            report_uprobes(
                pid,
                lib,
                "thread",
                &used,
                &["pthread_create", "pthread_join"],
            );
        }
        if set.locks
            && let Some(used) = probes.attach_lock_uprobes(pid, lib, false, set.bare)
        {
            report_uprobes(
                pid,
                lib,
                "lock",
                &used,
                &["pthread_mutex_lock", "pthread_mutex_unlock"],
            );
        }
    }
    if set.locks {
        // The interpreter executable has the lock functions when it is
        // static; a shared build has them in libpython: one is enough.
        let mut tried = Vec::new();
        let mut found = false;
        for lib in py {
            if let Some(used) = probes.attach_lock_uprobes(pid, lib, true, set.bare) {
                found |= !used.attached.is_empty();
                if !used.attached.is_empty() {
                    tracing::info!("pid {pid}: Python lock uprobes on {}", lib.display());
                }
                tried.push((lib, used));
            }
        }
        if !found && let Some((lib, used)) = tried.first() {
            report_uprobes(
                pid,
                lib,
                "Python lock",
                used,
                &["PyThread_acquire_lock_timed"],
            );
        }
    }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// `observer run -- CMD`: returns CMD's exit code.
pub fn run(opts: ObserveOpts, cmd: Vec<String>, verbose: u8) -> Result<u8> {
    require_bpf()?;
    sys::check_privileges()?;
    let prog = sys::resolve_command(&cmd[0])?;
    let out = Outputs::open(&opts)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut probes = load_probes(&opts, verbose, true)?;
        let stop_on_exec = probes.stops_on_exec();
        let mut child = sys::GatedChild::spawn(&prog, &cmd)?;
        let pid = child.pid;
        probes.watch(pid)?;
        let pidfd = sys::pidfd_open(pid).context("pidfd_open on the child")?;
        let mut src = LiveSource::new(probes, min_age(&opts))?;
        let mut s = Session::new(opts, out)?;
        s.stop_on_exec = stop_on_exec;
        let now = procfs::mono_ns();
        let mut evs = vec![Event::Start {
            ts_ns: now,
            tgid: pid,
            cmdline: cmd.clone(),
            attached: false,
        }];
        evs.extend(procfs::seed_threads(pid).unwrap_or_default());
        s.feed(&mut evs)?;
        let set = UprobeSet::of(&s.opts);
        if set.any() {
            // In place before the first instruction: on the files the
            // command will map (filtered to the held child's PID, which
            // survives exec); checked again in /proc after exec.
            let (libs, py) = planned_uprobe_targets(&prog);
            attach_uprobes_to(&mut src.probes, pid, &libs, &py, set);
        }
        child.release()?;
        tracing::info!("observing pid {pid}");
        let end = observe(&mut s, src, Target::Child { pid }, pidfd, None, "run").await?;
        if end.killed_on_hang {
            return Ok(EXIT_HANG);
        }
        Ok(end.status.map(sys::exit_code_of).unwrap_or(1))
    })
}

/// `observer attach -p PID`.
pub fn attach(opts: ObserveOpts, pid: u32, duration: Option<f64>, verbose: u8) -> Result<u8> {
    require_bpf()?;
    sys::check_privileges()?;
    if pid == std::process::id() {
        bail!("refusing to observe the observer itself (pid {pid})");
    }
    if let Some(tgid) = procfs::tgid_of(pid).filter(|&t| t != pid) {
        bail!("{pid} is a thread of process {tgid}: attach to the process");
    }
    let pidfd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => bail!("no such process: {pid}"),
        Err(e) => return Err(e).with_context(|| format!("cannot open process {pid}")),
    };
    let duration = duration
        .map(|d| crate::cli::secs_to_ns(d, "--duration"))
        .transpose()?;
    let out = Outputs::open(&opts)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut probes = load_probes(&opts, verbose, false)?;
        probes.watch(pid)?;
        let cmdline = procfs::cmdline(pid);
        let seed = procfs::seed_threads(pid);
        if !procfs::exists(pid) || seed.is_err() {
            bail!("process {pid} exited while attaching");
        }
        let mut src = LiveSource::new(probes, min_age(&opts))?;
        let mut s = Session::new(opts, out)?;
        let now = procfs::mono_ns();
        let mut evs = vec![Event::Start {
            ts_ns: now,
            tgid: pid,
            cmdline,
            attached: true,
        }];
        let seed = seed.unwrap_or_default();
        let tids = seeded_tids(&seed);
        evs.extend(seed);
        // Waits already in progress: a deadlock that formed before we came.
        src.add_snapshot(pid, &tids, now, &mut evs);
        s.feed(&mut evs)?;
        if UprobeSet::of(&s.opts).any() {
            attach_uprobes(&mut src.probes, pid, pid, UprobeSet::of(&s.opts));
        }
        tracing::info!("observing pid {pid}");
        let end = observe(
            &mut s,
            src,
            Target::Attached { pid },
            pidfd,
            duration,
            "attach",
        )
        .await?;
        Ok(if end.hang_found { EXIT_HANG } else { 0 })
    })
}

/// A thread's futex wait as the Python reads remember it: (tid, uaddr, start).
type PyWaitKey = (u32, u64, u64);

/// TIDs of the `ThreadSeen` events of a /proc seed.
pub(crate) fn seeded_tids(seed: &[Event]) -> Vec<u32> {
    seed.iter()
        .filter_map(|e| match e {
            Event::ThreadSeen { tid, .. } => Some(*tid),
            _ => None,
        })
        .collect()
}

pub(crate) fn min_age(opts: &ObserveOpts) -> u64 {
    // A wait younger than one scan period is transient contention.
    (opts.scan_interval * 1_000_000).min(10_000_000)
}

struct End {
    /// The target's raw wait status, when we reaped it.
    status: Option<i32>,
    hang_found: bool,
    killed_on_hang: bool,
}

/// The event loop.
async fn observe(
    s: &mut Session,
    mut src: LiveSource,
    target: Target,
    pidfd: OwnedFd,
    duration_ns: Option<u64>,
    mode: &str,
) -> Result<End> {
    // SAFETY: the AsyncFd owns the pidfd and keeps it open while registered.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .context("watching the target")?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut drain = tokio::time::interval(Duration::from_millis(20));
    let mut scan = tokio::time::interval(Duration::from_millis(s.opts.scan_interval));
    let mut agg = tokio::time::interval(Duration::from_millis(500));
    let mut activity = crate::source::activity::Activity::default();
    let sample_ms = (s.engine.limits.stuck_ns / 4_000_000).clamp(100, 1000);
    let mut sample = tokio::time::interval(Duration::from_millis(sample_ms));
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    agg.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = tokio::time::sleep(Duration::from_nanos(duration_ns.unwrap_or(u64::MAX / 4)));
    tokio::pin!(deadline);
    let gil_sample = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(gil_sample);
    let mut evs = Vec::new();
    let mut stop_signal: Option<i32> = None;
    let mut hang_found = false;
    let mut killed_on_hang = false;
    loop {
        tokio::select! {
            r = src.urgent(&mut evs) => {
                r.context("reading the ring buffer")?;
                // An urgent record (EDEADLK, ...): judge it before the next scan.
                scan.reset_immediately();
            }
            _ = drain.tick() => src.drain(&mut evs),
            _ = scan.tick() => {
                src.drain(&mut evs);
                let now = procfs::mono_ns();
                src.scan(now, &mut evs);
                s.feed(&mut evs)?;
                s.resume_execs(&mut src.probes);
                s.pending_thread_uprobes(&mut src, now);
                let hung = s.detect(&mut src, now)?;
                if !hung.is_empty() {
                    hang_found = true;
                    if s.opts.kill_on_deadlock {
                        killed_on_hang = true;
                        // The hung process (maybe a followed fork) and the target.
                        for pid in hung {
                            sys::kill(pid, libc::SIGKILL);
                        }
                        sys::kill(target.pid(), libc::SIGKILL);
                        let _ = pidfd.readable().await;
                        break;
                    }
                }
            }
            _ = agg.tick() => {
                s.symbolize_aggregates(&src)?;
                s.recheck_libs(&mut src);
            }
            _ = sample.tick() => {
                let now = procfs::mono_ns();
                activity.sample(&s.model, now, s.engine.limits.stuck_ns, &mut evs);
                s.python_names(now)?;
            }
            _ = &mut gil_sample => {
                let next = s.gil_tick(&src)?;
                gil_sample.as_mut().reset(tokio::time::Instant::now() + next);
            }
            g = pidfd.readable() => { let _ = g?; break; }
            _ = sigint.recv() => { stop_signal = Some(libc::SIGINT); }
            _ = sigterm.recv() => { stop_signal = Some(libc::SIGTERM); }
            _ = &mut deadline => break,
        }
        s.feed(&mut evs)?;
        s.resume_execs(&mut src.probes);
        if let Some(sig) = stop_signal {
            // Every thread's Python state as it is now, before the signal
            // reaches a child (Python unwinds on SIGINT).
            s.python_view_of(procfs::mono_ns(), true, true)?;
            match target {
                // Pass the signal on and give the child a moment to exit.
                Target::Child { pid } => {
                    sys::kill(pid, sig);
                    let grace =
                        tokio::time::timeout(Duration::from_secs(3), pidfd.readable()).await;
                    if grace.is_err() {
                        tracing::warn!("child {pid} ignored signal {sig}; killing it");
                        sys::kill(pid, libc::SIGKILL);
                        let _ = pidfd.readable().await;
                    }
                }
                Target::Attached { .. } => {}
            }
            break;
        }
    }
    let now = procfs::mono_ns();
    if !killed_on_hang && stop_signal.is_none() {
        s.python_view_of(now, true, true)?;
    }
    s.gil_emit(now)?;
    src.finish(now, &mut evs);
    // Creation sites of a process that already ended: named from the
    // mappings read while it lived.
    s.feed(&mut evs)?;
    evs.extend(late_site_events(&s.model, &mut s.symbols, &mut s.sym_tried));
    if s.opts.uprobes {
        evs.extend(gate_events(&s.model, &src.probes, now));
        evs.extend(profile_events(&src.probes));
    }
    let status = match target {
        Target::Child { pid } => Some(sys::waitpid(pid).context("reaping the child")?),
        Target::Attached { .. } => None,
    };
    evs.push(Event::End {
        ts_ns: now,
        tgid: target.pid(),
        exit_status: status,
    });
    s.feed(&mut evs)?;
    // Never leave a process stopped at exec behind.
    s.resume_execs(&mut src.probes);
    // Names for what arrived since the last scan (a short-lived target may
    // be gone already: its recorded mappings serve).
    let mut evs = symbol_events(&s.model, &mut s.symbols, &mut s.sym_tried);
    s.feed(&mut evs)?;
    // Last look, with what only the end can tell (threads never joined).
    for f in s.engine.finish(&s.model, now) {
        hang_found |= f.kind.is_hang();
        if !s.opts.quiet {
            eprint!("{}", report::findings::finding(&f));
        }
    }
    if src.decode_errors > 0 {
        tracing::warn!(
            "{} ring buffer records could not be decoded",
            src.decode_errors
        );
    }
    let hooks = src.probes.hooks.clone();
    s.finish(mode, &hooks, src.probes.uprobe_count())?;
    src.probes.release_uprobes();
    // The kernel unregisters uprobes one at a time, each after an RCU grace
    // period: say why exiting takes a moment.
    let n = src.probes.perf_uprobe_count();
    if n > 8 && !s.opts.quiet {
        eprintln!("observer: releasing {n} uprobes (the kernel takes ~0.1-0.2 s for each)");
    }
    Ok(End {
        status,
        hang_found,
        killed_on_hang,
    })
}

/// Exit code of `attach`, `dump` and `run --kill-on-deadlock` when a hang was found.
pub const EXIT_HANG: u8 = 3;

fn symbol_name(d: crate::symbol::DataSymbol) -> String {
    if d.offset == 0 {
        d.name
    } else {
        format!("{}+{:#x}", d.name, d.offset)
    }
}

/// `Mappings` events for the mappings the symbolizer read since last time.
pub(crate) fn maps_events(symbols: &mut Symbolizer) -> Vec<Event> {
    let new = symbols.take_new_maps();
    if new.is_empty() {
        return Vec::new();
    }
    let ts_ns = procfs::mono_ns();
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
        // Lock addresses: what threads wait for, lock-order edges, locks held at exit.
        let waits = p.live_threads().filter_map(|t| t.wait.as_ref());
        let mut locks: Vec<u64> = waits
            .chain(p.pi_edeadlk.iter().map(|(_, w, _)| w))
            .flat_map(|w| [crate::graph::classify(w, p).lock, w.uaddr])
            .collect();
        locks.extend(p.lock_edges.keys().flat_map(|e| [e.from, e.to]));
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
        let mut sites: Vec<u64> = p.threads.iter().map(|t| t.create_site).collect();
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
fn late_site_events(
    model: &Model,
    symbols: &mut Symbolizer,
    tried: &mut HashSet<(u32, u64)>,
) -> Vec<Event> {
    let mut out = Vec::new();
    for p in model.processes.values() {
        let sites = p.threads.iter().map(|t| t.create_site);
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
fn owner_events(model: &Model, probes: &Probes, now: u64) -> Vec<Event> {
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
fn gate_events(model: &Model, probes: &Probes, now: u64) -> Vec<Event> {
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
fn profile_events(probes: &Probes) -> Vec<Event> {
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
fn py_name_events(
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
fn stack_events(
    model: &Model,
    symbols: &mut Symbolizer,
    probes: Option<&Probes>,
    found: &[crate::detect::Finding],
    now: u64,
) -> Vec<Event> {
    use crate::detect::FindingKind as K;
    use std::collections::BTreeMap;
    let mut want: BTreeMap<u32, Vec<(u32, crate::symbol::Regs)>> = BTreeMap::new();
    // Findings about the past (inversions, leaks) carry their own evidence.
    let now_findings = found.iter().filter(|f| {
        matches!(
            f.kind,
            K::Deadlock | K::PiDeadlock | K::OrphanedLock | K::LongWait | K::StuckThread
        )
    });
    for f in now_findings {
        let Some(p) = model.process(f.tgid) else {
            continue;
        };
        for ti in &f.threads {
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
            let v = want.entry(f.tgid).or_default();
            if !v.iter().any(|(x, _)| *x == ti.tid) {
                v.push((ti.tid, regs));
            }
        }
    }
    let mut out = Vec::new();
    for (tgid, mut threads) in want {
        // CPython threads the Python view already shows: their Python stack
        // is the answer (the native frames are the interpreter's own), and
        // unwinding them costs more than the whole Python read.
        if let Some(view) = model
            .process(tgid)
            .and_then(|p| p.python.as_ref())
            .filter(|v| v.unsupported.is_none())
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
                    owns_gil: false,
                });
                false
            });
            if threads.is_empty() {
                continue;
            }
        }
        let py = symbols
            .python_threads(tgid)
            .ok()
            .flatten()
            .unwrap_or_default();
        out.extend(py_name_events(model, tgid, &py, now));
        for (tid, frames) in symbols.native_stacks(tgid, &threads) {
            let pt = py.iter().find(|x| x.tid == tid);
            out.push(Event::Stack {
                ts_ns: now,
                tgid,
                tid,
                frames: frames.unwrap_or_default(),
                python: pt.map(|x| x.frames.clone()).unwrap_or_default(),
                owns_gil: pt.is_some_and(|x| x.owns_gil),
            });
        }
    }
    out
}

/// "spawn_worker (pool.c:21)", or the function, or module+offset.
fn site_name(f: &crate::symbol::Frame) -> String {
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
fn python_events(
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
        .filter_map(|l| {
            Some(Event::Symbol {
                tgid,
                addr: l.addr,
                name: l.name.clone()?,
            })
        })
        .collect();
    out.push(Event::PyState {
        ts_ns: now,
        tgid,
        view,
    });
    Some(out)
}

/// `observer dump -p PID`: one look at a process through /proc, no BPF.
pub fn dump(pid: u32, json: bool) -> Result<u8> {
    if let Some(tgid) = procfs::tgid_of(pid).filter(|&t| t != pid) {
        bail!("{pid} is a thread of process {tgid}: dump the process");
    }
    if !procfs::exists(pid) {
        bail!("no such process: {pid}");
    }
    let now = procfs::mono_ns();
    let seed =
        procfs::seed_threads(pid).with_context(|| format!("cannot read the threads of {pid}"))?;
    let tids = seeded_tids(&seed);
    // Without ptrace rights /proc/PID/task/TID/syscall is unreadable.
    if let Some(&t) = tids.first() {
        std::fs::read_to_string(format!("/proc/{pid}/task/{t}/syscall")).with_context(|| {
            format!("cannot read /proc/{pid}/task/{t}/syscall (needs root or CAP_SYS_PTRACE)")
        })?;
    }
    let mut model = Model::new();
    model.apply(&Event::Start {
        ts_ns: now,
        tgid: pid,
        cmdline: procfs::cmdline(pid),
        attached: true,
    });
    for e in &seed {
        model.apply(e);
    }
    for e in crate::source::snapshot::snapshot_waits(pid, tids, now) {
        model.apply(&e);
    }
    let mut symbols = Symbolizer::new();
    for e in symbol_events(&model, &mut symbols, &mut HashSet::new()) {
        model.apply(&e);
    }
    for e in python_events(&model, &mut symbols, pid, now).unwrap_or_default() {
        model.apply(&e);
    }
    let mut engine = Engine::new(crate::detect::Limits::new(u64::MAX));
    let found = engine.candidates(&model, now);
    for e in stack_events(&model, &mut symbols, None, &found, now) {
        model.apply(&e);
    }
    engine.check(&model, now);
    if json {
        let r = report::dump::json(&model, &engine.findings, now);
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", report::dump::text(&model, &engine.findings, now));
    }
    Ok(if engine.findings.iter().any(|f| f.kind.is_hang()) {
        EXIT_HANG
    } else {
        0
    })
}
