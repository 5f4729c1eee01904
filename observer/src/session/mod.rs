//! The live driver around the engine (`run`, `attach`, and each process the
//! daemon watches): events from the live source are enriched (mappings,
//! unwound stacks, names, the Python view) and fed to the engine, which
//! judges once per scan.
//!
//! - `target`: setting up the target (spawn held at a gate, attach) and
//!   loading the probes;
//! - `uprobes`: which uprobes go on which process, and when;
//! - `live`: the one live loop (run, attach, the daemon), its policy, and
//!   the steps every watched process goes through;
//! - `one`: the watched set of `run`/`attach`: one session, one target;
//! - `enrich`: names, stacks and the Python view, as events;
//! - `gil`: GIL accounting of CPython targets and `--python-top`;
//! - `dump`: `observer dump`, one look through /proc without BPF.

mod dump;
mod enrich;
mod gil;
pub(crate) mod live;
mod one;
mod stack_sig;
mod target;
mod uprobes;

pub use dump::dump;
pub use target::{attach, require_bpf, run};
pub(crate) use target::{load_probes, runtime, seeded_tids};

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
};

use anyhow::{Context, Result};

use crate::{
    cli::ObserveOpts,
    detect::{Finding, FindingKind, Limits},
    engine::{Engine, Sink},
    event::Event,
    model::Model,
    probe::Probes,
    report,
    source::live::LiveSource,
    symbol::Symbolizer,
};
pub(crate) use enrich::symbol_events;
use enrich::{
    PyWaitKey, foreign_events, maps_events, owner_events, python_events, shared_maps_events,
    stack_events,
};

/// Output files of `run`/`attach`, opened (so checked) before any BPF is
/// loaded; the recording is handed to the `LiveSink`.
#[derive(Default)]
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

/// Where `run`/`attach` send the engine's events: the recording
/// (`--record`, its header first) and the live echo on stderr.
pub(crate) struct LiveSink {
    record: Option<BufWriter<File>>,
    /// The live lines on stderr (none with --quiet).
    echo: Option<report::live::LiveLines>,
}

impl LiveSink {
    fn new(
        opts: &ObserveOpts,
        limits: &Limits,
        mut record: Option<BufWriter<File>>,
    ) -> Result<LiveSink> {
        if let Some(rec) = &mut record {
            crate::recording::Header::new(limits, opts.scan_interval).write(rec)?;
        }
        Ok(LiveSink {
            record,
            echo: (!opts.quiet).then(report::live::LiveLines::default),
        })
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(live) = &mut self.echo {
            echo(live.finish());
        }
        if let Some(rec) = &mut self.record {
            rec.flush().context("writing the recording")?;
        }
        Ok(())
    }
}

impl Sink for LiveSink {
    fn event(&mut self, model: &Model, ev: &Event) -> Result<()> {
        if let Some(rec) = &mut self.record {
            serde_json::to_writer(&mut *rec, ev).context("writing the recording")?;
            rec.write_all(b"\n").context("writing the recording")?;
            // Out at every scan: an observer killed mid-run leaves all but
            // the last scan period's events (and at worst a cut last line,
            // which replay drops).
            if matches!(ev, Event::Scan { .. }) {
                rec.flush().context("writing the recording")?;
            }
        }
        if let Some(live) = &mut self.echo {
            echo(live.lines(model, ev));
        }
        Ok(())
    }

    fn tick(&mut self, now_ns: u64) -> Result<()> {
        if let Some(live) = &mut self.echo {
            echo(live.tick(now_ns));
        }
        Ok(())
    }
}

/// Live lines go to stderr.
fn echo(lines: Vec<String>) {
    for line in lines {
        eprintln!("{line}");
    }
}

/// The judgement limits the options ask for.
pub(crate) fn limits_of(opts: &ObserveOpts) -> Result<Limits> {
    Ok(Limits {
        long_wait_ns: opts.long_wait_ns()?,
        stuck_ns: crate::cli::secs_to_ns(opts.stuck, "--stuck")?,
        churn_per_s: opts.churn,
        loop_blocked_ns: crate::cli::secs_to_ns(opts.loop_blocked, "--loop-blocked")?,
    })
}

pub(crate) struct Session<S: Sink = LiveSink> {
    pub(crate) opts: ObserveOpts,
    pub(crate) engine: Engine<S>,
    out: Outputs,
    symbols: Symbolizer,
    sym_tried: HashSet<(u32, u64)>,
    /// Shared futex words whose mappings were read again (enrich.rs).
    maps_tried: HashSet<(u32, u64)>,
    /// Lock owners looked up in other processes: (waiter's tgid, owner).
    foreign_tried: HashSet<(u32, u32)>,
    /// Processes whose libc may not be mapped yet (just exec'd or forked):
    /// tgid -> give up at (ns).
    pending_uprobes: HashMap<u32, u64>,
    /// Processes known not to be CPython (until they exec).
    not_python: HashSet<u32>,
    /// The kernel stops watched processes at exec (deep tier in `run`).
    stop_on_exec: bool,
    /// Processes stopped at exec, to continue once their uprobes are in.
    exec_stopped: Vec<u32>,
    /// The futex waits each CPython process had at its last Python read.
    py_read: HashMap<u32, Vec<PyWaitKey>>,
    loops: crate::source::event_loop::LoopWatch,
    /// The one process whose event loops are this session's (the daemon's
    /// sessions share one EPOLL map); None: every thread in the map.
    loops_of: Option<u32>,
    /// The last scan had candidates it could not confirm: the next one
    /// judges again (the daemon scans only processes that may have moved).
    rejudge: bool,
    /// GIL accounting of CPython targets (session/gil.rs).
    gil: gil::GilState,
    /// Futex waits younger than this get no Python read (`Policy::python_after`).
    python_after_ns: u64,
    /// Per CPython process: its live threads at the last name read (a
    /// hash of their TIDs) and the reads made of that set.
    py_named: HashMap<u32, (u64, u8)>,
    /// Creation-stack signatures (stack_sig.rs).
    pub(crate) stack_sigs: stack_sig::StackSigs,
}

impl Session<LiveSink> {
    /// `run`/`attach`: the recording and the echo as the options say.
    pub(crate) fn open(opts: ObserveOpts, mut out: Outputs) -> Result<Session<LiveSink>> {
        let limits = limits_of(&opts)?;
        let sink = LiveSink::new(&opts, &limits, out.record.take())?;
        Ok(Session::new(opts, limits, sink, out))
    }

    /// The end of observation: findings and summary on stdout, the report
    /// and pictures written. The hang watchdog writes them once before,
    /// when it fires (the end writes them again).
    fn write_outputs(&mut self, mode: &str, probes: &Probes) -> Result<()> {
        self.engine.sink.flush()?;
        let sigs = &self.stack_sigs;
        tracing::info!(
            "creation stacks: {} copied and unwound, {} known from a signature ({} named a \
             signature no longer kept)",
            sigs.copied,
            sigs.matched,
            sigs.missed
        );
        let m = &self.engine.model;
        let findings = self.engine.findings();
        print!("{}", report::findings::all(findings));
        println!();
        print!(
            "{}",
            report::text::summary(m, self.engine.limits().long_wait_ns)
        );
        let mut loops = String::new();
        report::asyncio::summary(&mut loops, m, self.engine.limits().loop_blocked_ns);
        print!("{loops}");
        std::io::stdout().flush().context("writing the report")?;
        if let Some((path, f)) = &self.out.report {
            let mut r = report::json::build(m, mode, &probes.hooks, findings);
            r.wait_hooks = probes.wait_moves();
            r.uprobes_attached = probes.uprobe_count();
            crate::recording::rewind(f)
                .map_err(anyhow::Error::from)
                .and_then(|_| {
                    let mut w = BufWriter::new(f);
                    serde_json::to_writer_pretty(&mut w, &r)?;
                    Ok(w.flush()?)
                })
                .with_context(|| format!("cannot write report {}", path.display()))?;
        }
        self.out.pictures.write(m, findings)?;
        Ok(())
    }
}

impl<S: Sink> Session<S> {
    pub(crate) fn new(opts: ObserveOpts, limits: Limits, sink: S, out: Outputs) -> Session<S> {
        Session {
            opts,
            engine: Engine::new(limits, sink),
            out,
            symbols: Symbolizer::new(),
            sym_tried: HashSet::new(),
            maps_tried: HashSet::new(),
            foreign_tried: HashSet::new(),
            pending_uprobes: HashMap::new(),
            not_python: HashSet::new(),
            stop_on_exec: false,
            exec_stopped: Vec::new(),
            py_read: HashMap::new(),
            loops: Default::default(),
            loops_of: None,
            rejudge: false,
            gil: gil::GilState::default(),
            python_after_ns: 0,
            py_named: HashMap::new(),
            stack_sigs: Default::default(),
        }
    }

    pub(crate) fn model(&self) -> &Model {
        &self.engine.model
    }

    /// The hang watchdog fired: no thread of the watched tree ran since
    /// `since`. Every live thread's Python view, asyncio tasks and stacks
    /// are read now, and one `process_hung` finding per watched process
    /// names them all.
    /// (`run --hang-after`, and the daemon's `hang_after` rules.)
    pub(crate) fn hang_report(&mut self, src: &LiveSource, now: u64, since: u64) -> Result<()> {
        let mut evs: Vec<Event> = self
            .engine
            .model
            .processes
            .values()
            .filter(|p| p.observed_to_ns.is_none())
            .map(|p| Event::NoProgress {
                ts_ns: now,
                tgid: p.tgid,
                since_ns: since,
                blocked: crate::source::progress::blocked_in(p.tgid),
            })
            .collect();
        self.feed(&mut evs)?;
        // Every thread's Python stack, and the asyncio tasks.
        self.python_view_of(now, true, true)?;
        let cands: Vec<Finding> = self
            .engine
            .candidates(now)
            .into_iter()
            .filter(|f| {
                matches!(
                    f.detail,
                    crate::detect::Detail::ProcessHung { watchdog: true, .. }
                )
            })
            .collect();
        let mut evs = stack_events(
            &self.engine.model,
            &mut self.symbols,
            Some(&src.probes),
            &cands,
            now,
            true,
        );
        self.feed(&mut evs)?;
        self.engine.mark_scan(now, true)?;
        for f in self.engine.accept(cands) {
            if !self.opts.quiet {
                eprint!("{}", report::findings::finding(&f));
            }
        }
        Ok(())
    }

    /// Feeds events to the engine, each enriched first (mappings read,
    /// stacks unwound), with the mappings the symbolizer read after it.
    pub(crate) fn feed(&mut self, evs: &mut Vec<Event>) -> Result<()> {
        for mut ev in evs.drain(..) {
            self.enrich_event(&mut ev);
            self.note_uprobe_targets(&ev);
            self.engine.apply(&ev)?;
            for m in maps_events(&mut self.symbols) {
                self.engine.apply(&m)?;
            }
        }
        Ok(())
    }

    /// One scan: names and owners and the Python view fed, the detectors
    /// run once, candidate findings confirmed against the target, the
    /// stacks of the threads they name taken, then reported. Returns the
    /// processes found hung: every process of a cycle across processes, so
    /// that `--kill-on-deadlock` never leaves half a cycle.
    pub(crate) fn scan(
        &mut self,
        src: &mut LiveSource,
        now: u64,
        loops: Option<&crate::source::event_loop::Threads>,
    ) -> Result<Vec<u32>> {
        self.rejudge = false;
        let mut evs = symbol_events(&self.engine.model, &mut self.symbols, &mut self.sym_tried);
        evs.extend(shared_maps_events(
            &self.engine.model,
            &mut self.symbols,
            &mut self.maps_tried,
        ));
        evs.extend(foreign_events(
            &self.engine.model,
            &mut self.foreign_tried,
            now,
        ));
        if self.opts.uprobes {
            evs.extend(owner_events(&self.engine.model, &src.probes, now));
        }
        self.feed(&mut evs)?;
        self.event_loops(src, now, loops)?;
        self.python_view(now, false)?;
        let cands = self.engine.candidates(now);
        if cands.is_empty() {
            self.engine.mark_scan(now, false)?;
            return Ok(Vec::new());
        }
        // Something moved since the scan: judge again on fresh data at the
        // next one. (No scan marked: replay must not judge this state either.)
        if !self.python_confirms(&cands, now)? {
            self.rejudge = true;
            return Ok(Vec::new());
        }
        let tids: Vec<u32> = cands
            .iter()
            .flat_map(|f| f.threads.iter().map(|t| t.tid))
            .collect();
        if !src.confirm(&tids, now, &mut evs) {
            self.rejudge = true;
            self.feed(&mut evs)?;
            return Ok(Vec::new());
        }
        // The stacks of the threads named, taken now, without stopping them.
        let mut evs = stack_events(
            &self.engine.model,
            &mut self.symbols,
            Some(&src.probes),
            &cands,
            now,
            true,
        );
        self.feed(&mut evs)?;
        self.engine.mark_scan(now, true)?;
        let mut hung = Vec::new();
        for f in self.engine.accept(cands) {
            if f.kind.is_hang() {
                for pid in f.pids() {
                    if !hung.contains(&pid) {
                        hung.push(pid);
                    }
                }
            }
            if !self.opts.quiet {
                eprint!("{}", report::findings::finding(&f));
            }
        }
        if self.opts.kill_on_deadlock && !hung.is_empty() {
            // The caller kills exactly these (and its target).
            eprintln!("{}", kill_note(&self.engine.model, &hung));
        }
        Ok(hung)
    }

    /// A cycle through Python threads is read again (reads that do not
    /// stop the target can tear): false when what the interpreter shows of
    /// those threads changed.
    fn python_confirms(&mut self, cands: &[Finding], now: u64) -> Result<bool> {
        let py: Vec<(u32, u32)> = cands
            .iter()
            .filter(|f| matches!(f.kind, FindingKind::Deadlock | FindingKind::PoolStarvation))
            .flat_map(|f| {
                f.threads
                    .iter()
                    .filter(|t| t.python.is_some())
                    .map(|t| (t.pid, t.tid))
            })
            .collect();
        // An await cycle: its tasks, read again.
        let tasks: Vec<(u32, u64)> = cands
            .iter()
            .flat_map(|f| f.tasks.iter().map(move |t| (f.tgid, t.addr)))
            .collect();
        if py.is_empty() && tasks.is_empty() {
            return Ok(true);
        }
        let shown = |m: &Model| -> (Vec<_>, Vec<_>) {
            let py = py
                .iter()
                .map(|&(tgid, tid)| m.process(tgid)?.python.as_ref()?.info(tid))
                .collect();
            let tasks = tasks
                .iter()
                .map(|&(tgid, addr)| {
                    let a = m.process(tgid)?.python.as_ref()?.asyncio.as_ref()?;
                    a.task(addr).map(|(_, t)| t.clone())
                })
                .collect();
            (py, tasks)
        };
        let before = shown(&self.engine.model);
        self.python_view(now, true)?;
        let mut tgids: Vec<u32> = tasks.iter().map(|&(tgid, _)| tgid).collect();
        tgids.dedup();
        let mut evs = Vec::new();
        for tgid in tgids {
            evs.extend(
                python_events(&self.engine.model, &mut self.symbols, tgid, now).unwrap_or_default(),
            );
        }
        self.feed(&mut evs)?;
        Ok(shown(&self.engine.model) == before)
    }

    /// Symbolizes with what `files` has parsed already (the daemon's
    /// sessions: libc's debug info is parsed once, not per process). Call
    /// before the first event is fed.
    pub(crate) fn share_files(&mut self, files: crate::symbol::SharedFiles) {
        self.symbols = Symbolizer::sharing(files);
    }

    /// The last scan left candidates unconfirmed: scan again next time.
    pub(crate) fn rejudge(&self) -> bool {
        self.rejudge
    }

    /// The session looks only at `tgid`'s event loops (one session per
    /// process: another's loop is not this one's finding).
    pub(crate) fn loops_of(&mut self, tgid: u32) {
        self.loops_of = Some(tgid);
    }

    /// `tgid` is a Python process whose threads were seen in epoll_wait
    /// (an asyncio, uvloop or other event loop).
    pub(crate) fn python_loop(&self, tgid: u32) -> bool {
        self.loops.knows(tgid) && !self.not_python.contains(&tgid)
    }

    /// `tgid`'s Python thread names were read (`python_names`): a CPython
    /// process.
    pub(crate) fn python_known(&self, tgid: u32) -> bool {
        self.py_named.contains_key(&tgid) && !self.not_python.contains(&tgid)
    }

    /// How long a loop may stay out of its selector, and how long one idle
    /// in it waits before its tasks are read.
    fn loop_limits(&self) -> (u64, u64) {
        let limit = self.engine.limits().loop_blocked_ns;
        // Long enough that a busy loop is rarely read; a stuck one sits there for good.
        (limit, limit.max(500_000_000))
    }

    /// Whether a scan has event loop work: `threads` (this session's, from
    /// the EPOLL map) has a loop out of its selector too long or idle in it
    /// long, not looked at yet. Cheap: no /proc or target memory read.
    pub(crate) fn loops_due(&self, threads: &crate::source::event_loop::Threads, now: u64) -> bool {
        let (limit, idle) = self.loop_limits();
        self.loops.due(threads, now, limit, idle)
    }

    /// Event loops out of their selector too long (their Python stack is
    /// read now, while they are), and loops idle in it (their tasks are read
    /// once per idle stretch: an await cycle leaves the loop idle).
    fn event_loops(
        &mut self,
        src: &LiveSource,
        now: u64,
        threads: Option<&crate::source::event_loop::Threads>,
    ) -> Result<()> {
        let (limit, idle) = self.loop_limits();
        // Read now, not earlier: this scan's symbolizing may have taken a while.
        let mut threads = match threads {
            Some(t) => t.to_vec(),
            None => src.probes.epoll_threads(),
        };
        if let Some(only) = self.loops_of {
            threads.retain(|(_, e)| e.tgid == only);
        }
        let mut seen = Vec::new();
        for tgid in self.loops.fresh(&threads) {
            // Its loop is watched from now on (the report says so).
            if let Some((tid, _)) = threads.iter().find(|(_, e)| e.tgid == tgid) {
                seen.push(Event::LoopSeen {
                    ts_ns: now,
                    tgid,
                    tid: *tid,
                });
            }
            // Find the interpreter and read its whole view once now, not
            // while a loop is blocked: the first read (the asyncio layout,
            // ...) is the slow one, and a stack read that outlasts the
            // stretch out of the selector is of later work, so thrown away.
            // The view itself is not fed: taken as the loop starts, before
            // the program's tasks exist, it is not one to report.
            if !self.not_python.contains(&tgid) {
                match self.symbols.python_threads(tgid) {
                    Ok(None) => {
                        self.not_python.insert(tgid);
                    }
                    _ => {
                        python_events(&self.engine.model, &mut self.symbols, tgid, now);
                    }
                }
            }
        }
        self.feed(&mut seen)?;
        let (mut blocked, mut read) = self.loops.poll(&threads, now, limit, idle);
        let attached: Vec<u32> = self
            .engine
            .model
            .processes
            .values()
            .filter(|p| p.attached && p.observed_to_ns.is_none())
            .map(|p| p.tgid)
            .collect();
        for tgid in attached {
            if self.loops.first_look(tgid) && !read.contains(&tgid) {
                read.push(tgid);
            }
        }
        let mut evs = Vec::new();
        for tgid in read {
            if self.not_python.contains(&tgid) {
                continue;
            }
            match python_events(&self.engine.model, &mut self.symbols, tgid, now) {
                Some(got) => evs.extend(got),
                None => {
                    self.not_python.insert(tgid);
                }
            }
        }
        crate::source::event_loop::stacks(&mut blocked, &evs, &src.probes);
        evs.extend(blocked);
        self.feed(&mut evs)
    }
}

/// What `--kill-on-deadlock` ends: every process of the hang, by name.
pub(crate) fn kill_note(model: &Model, pids: &[u32]) -> String {
    let names: Vec<String> = pids
        .iter()
        .map(|&pid| {
            let comm = model.process(pid).and_then(|p| p.comm()).unwrap_or("?");
            format!("{pid} \"{}\"", report::escape(comm))
        })
        .collect();
    format!(
        "observer: --kill-on-deadlock: killing process{} {} (every process of the hang)",
        if pids.len() > 1 { "es" } else { "" },
        names.join(", ")
    )
}

/// The session of `run`/`attach`.
pub(crate) type LiveSession = Session<LiveSink>;
