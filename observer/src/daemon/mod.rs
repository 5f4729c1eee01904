//! `observer daemon`: watches the processes the config's rules select,
//! from exec (or from daemon start for processes already running), and
//! leaves a report behind for every finding.
//!
//! The kernel-tier probes are loaded once; selected TGIDs are added to and
//! removed from the kernel's watch map live. Each watched process has its
//! own engine, fed by a `Session` as in `attach`; the daemon is the source
//! (exec notifications, /proc) and the sink (report files, the flight
//! recorder as the engine's event sink, metrics) around it, so a process's
//! state is dropped with it.

mod across;
pub mod config;
pub mod exec;
pub mod metrics;
mod procs;
pub mod select;
pub mod sink;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};

use crate::{
    cli::ObserveOpts,
    detect::Finding,
    engine::Sink as EventSink,
    event::{Drops, Event},
    model::Model,
    probe::HookUse,
    report,
    session::{
        self, Outputs, Session,
        live::{self, Aggregates, HangWatch, Policy, Stop, Watched},
    },
    source::{activity::Activity, live::LiveSource, procfs, progress},
    symbol::SharedFiles,
    sys,
};
use config::Config;
use metrics::Metrics;
use select::{ProcInfo, Selector, Watch};
use sink::{FlightRecorder, ReportFiles, Sink};

/// `observer daemon --help`: every config key.
pub const HELP: &str = "Watch the processes a TOML config selects, from their exec (or from \
daemon start for processes already running), and leave a report behind for every finding: \
<time>-<pid>-<comm>-<kind>.json (schema observer.report/1), a .txt of the same name, and the \
process's last seconds of events as <id>.events.jsonl (replayable with `observer replay`). \
Logs go to stderr, one event per line. SIGHUP reloads the config (a bad one is refused and the \
old one kept); SIGTERM/SIGINT stop, leaving nothing loaded.

Config keys (all optional except at least one [[rule]]):
  report_dir = \"/var/lib/observer/reports\"  where reports go; created 0750 if missing
  metrics_listen = \"127.0.0.1:9464\"         Prometheus endpoint; \"\" disables it
  max_reports = 1000                 keep at most this many reports (oldest removed); 0: no limit
  max_report_age_days = 30           remove reports older than this; 0: keep
  flight_recorder_secs = 30          seconds of events kept per process and written with reports; 0: off
  flight_recorder_events = 100000    at most this many events per process in the recorder
  flight_recorder_bytes = 2097152    at most this many bytes of recording per process
  max_processes = 1024               processes watched at once; more matches are skipped
  max_threads = 8192                 threads remembered per process; past it its model is rebuilt
  max_locks = 4096                   contended futexes remembered per process
  max_waits = 1024                   ended long waits remembered per process
  long_wait = 5.0                    seconds: a futex wait this long is a long_wait finding
  stuck = 10.0                       seconds: a thread idle this long while others ran is stuck
  waits = \"auto\"                     where waits are learnt: \"auto\" (sched_switch; the syscall
                                     hooks while a Python event loop is watched), \"sched\", \"syscalls\"
  [[rule]]                           a process is watched if a rule matches and no exclude does
  comm = \"pytest\"                    exact comm: at exec, or now (15 bytes at most)
  exe = \"/opt/ci/**/bin/*\"           glob on the executable path (* within a component, ** across)
  cgroup = \"/system.slice/ci-\"       cgroup v2 path prefix
  user = \"ci\"                        user name or uid (real uid); all keys of a rule must match
  uprobes = false                    deep tier (lock uprobes) for matching processes
  kill_on_deadlock = false           SIGKILL a matching process once a hang is reported
  hang_after = \"10m\"                 no thread of the process (or its descendants) ran on a CPU
                                     this long: one process_hung report (seconds, or \"30s\", \"2h\")
  kill_on_hang = false               with hang_after: then SIGKILL the process and its descendants
  [[exclude]]                        comm, exe, cgroup, user as in a rule";

/// `observer daemon --check-config FILE`: 0, or one line per error and 2.
pub fn check_config(path: &Path) -> u8 {
    match Config::load(path) {
        Ok(c) => {
            println!(
                "{}: ok ({} rules, {} excludes)",
                path.display(),
                c.rules.len(),
                c.excludes.len()
            );
            0
        }
        Err(errs) => {
            for e in errs {
                eprintln!("{}: {e}", path.display());
            }
            2
        }
    }
}

/// The flight recorder is the engine's event sink: it keeps what a
/// `--record` of the process would have, for its last seconds.
impl EventSink for FlightRecorder {
    fn event(&mut self, _: &Model, ev: &Event) -> Result<()> {
        self.push(ev);
        Ok(())
    }
}

/// One watched process.
struct Proc {
    session: Session<Option<FlightRecorder>>,
    watch: Watch,
    comm: String,
    activity: Activity,
    pending: Vec<Event>,
    /// Events were fed since the last scan.
    fed: bool,
    recorder_evicted: u64,
    recorder_evicted_bytes: u64,
    /// The rule's `hang_after`: on-CPU time of the process's tree.
    hang: Option<HangWatch>,
}

struct Daemon {
    cfg: Config,
    path: PathBuf,
    selector: Selector,
    procs: BTreeMap<u32, Proc>,
    sink: Sink,
    metrics: Arc<Metrics>,
    hooks: Vec<HookUse>,
    last_drops: Drops,
    /// The probes were loaded with the deep tier.
    deep: bool,
    /// Forks of watched processes, and execs caught before their arguments
    /// were set up, looked at on the next sample if they still live: a fork
    /// storm of short-lived children costs nothing more.
    pending_forks: Vec<u32>,
    /// Selected but skipped at max_processes: counted and logged once, and
    /// watched if a slot frees while they live (forgotten when they exit).
    skipped: HashSet<u32>,
    /// The kernel dropped notifications: read /proc on the next sample
    /// (at most once a second, however often it overruns).
    rescan_due: bool,
    /// What symbolizing has parsed per file (libc's debug info...), shared
    /// by every process's session.
    files: SharedFiles,
    /// Exec and fork notifications from the kernel; None: /proc is read
    /// every second instead.
    execs: Option<exec::Notes>,
    last_spawns: crate::probe::spawn::SpawnCounts,
    /// Samples since the last retention pass (once a minute).
    samples: u32,
    /// Cycles across watched processes: those reported (keys), and those
    /// seen at the last scan only, reported if the next sees them again.
    across_seen: HashSet<String>,
    across_pending: HashSet<String>,
    /// The scheduler hook loaded, so waits may be learnt there.
    sched_ok: bool,
    /// Watched Python processes seen in epoll_wait (event loops): once
    /// there is one, waits are learnt at the syscall hooks (`wait_hooks`)
    /// until no process is watched.
    loop_procs: HashSet<u32>,
}

/// Time one sample may spend reading Python thread names.
const NAMES_BUDGET: Duration = Duration::from_millis(25);

/// Forks remembered between samples at most (more are dropped, counted).
const MAX_PENDING_FORKS: usize = 4096;

fn opts_for(cfg: &Config, w: Watch, deep: bool) -> ObserveOpts {
    ObserveOpts {
        quiet: true,
        report: None,
        record: None,
        long_wait: cfg.long_wait,
        stuck: cfg.stuck,
        churn: 200,
        loop_blocked: 0.1,
        kill_on_deadlock: w.kill_on_deadlock,
        // The daemon samples the watchdog itself (`Daemon::watchdogs`).
        hang_after: w.hang_after_ns.map(|ns| ns as f64 / 1e9),
        kill_on_hang: w.kill_on_hang,
        // Per-process uprobes cost a teardown at exit: only where asked for.
        thread_uprobes: w.uprobes,
        no_thread_uprobes: false,
        uprobes: w.uprobes && deep,
        uprobes_bare: false,
        follow_forks: false,
        hooks: "auto".into(),
        scan_interval: session::live::DAEMON_SCAN_MS,
        ringbuf_kib: 16384,
        pictures: Default::default(),
        python_top: None,
    }
}

impl Daemon {
    /// Hands events to their processes' sessions.
    fn route(&mut self, src: &mut LiveSource, evs: &mut Vec<Event>) {
        if evs.is_empty() {
            return;
        }
        self.metrics.events.inc_by(evs.len() as u64);
        let mut ended = Vec::new();
        let mut execd = Vec::new();
        for ev in evs.drain(..) {
            let Some(tgid) = ev.tgid() else {
                continue;
            };
            let Some(p) = self.procs.get_mut(&tgid) else {
                continue;
            };
            match &ev {
                Event::ThreadExit {
                    group_dead: true, ..
                } => ended.push(tgid),
                Event::Exec { .. } => execd.push(tgid),
                _ => {}
            }
            p.pending.push(ev);
        }
        for (pid, p) in self.procs.iter_mut() {
            if !p.pending.is_empty() {
                p.fed = true;
                if let Err(e) = p.session.feed(&mut p.pending) {
                    tracing::warn!("pid {pid}: {e:#}");
                }
                p.session.stack_sigs.push(&mut src.probes);
            }
        }
        // A watched process ran another program: the rules decide again.
        for pid in execd {
            match ProcInfo::read(pid) {
                Some(info) if self.selector.select(&info).is_some() => {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.comm = info.comm;
                    }
                }
                Some(_) => {
                    self.drop_proc(src, pid, "exec'd a program no rule selects");
                }
                None => {}
            }
        }
        for pid in ended {
            self.end(src, pid);
        }
    }

    /// One scan: detection for every process that may have moved.
    fn scan_all(&mut self, src: &mut LiveSource, now: u64, policy: &Policy) {
        let t0 = Instant::now();
        // Event loop threads of every watched process, in one map walk: a
        // loop blocked in a synchronous call makes no event and no futex
        // wait, only its time out of epoll_wait shows it.
        let mut loops: HashMap<u32, Vec<_>> = HashMap::new();
        for t in src.probes.epoll_threads() {
            loops.entry(t.1.tgid).or_default().push(t);
        }
        let mut kill = Vec::new();
        for (&pid, p) in self.procs.iter_mut() {
            if p.watch.uprobes {
                // It exec'd: its new libc may not be mapped yet.
                p.session.pending_thread_uprobes(src, now);
            }
            let fed = std::mem::take(&mut p.fed);
            let mine = loops.get(&pid).map(Vec::as_slice).unwrap_or_default();
            if !policy.scan_unmoved && !p.session.moved(fed, mine) {
                continue;
            }
            let r = match p.session.scan_step(src, now, policy, Some(mine)) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("pid {pid}: {e:#}");
                    continue;
                }
            };
            let uprobes = src.probes.process_uprobe_count(pid);
            for f in &r.found {
                write_report(
                    &mut self.sink,
                    &self.metrics,
                    &self.cfg,
                    (&self.hooks, src.probes.wait_moves(), uprobes),
                    pid,
                    p,
                    f,
                );
            }
            if !r.hung.is_empty() && p.watch.kill_on_deadlock {
                kill.push(pid);
            }
        }
        self.learn_loops(src);
        self.across(src, now, &mut kill);
        for pid in kill {
            tracing::warn!("pid {pid}: killed (kill_on_deadlock)");
            sys::kill(pid, libc::SIGKILL);
        }
        let took = t0.elapsed();
        self.metrics.scan_duration.observe(took.as_secs_f64());
        // Half a scan period or more: processes that start and end meanwhile
        // are seen only from the ring buffer's backlog.
        if took >= Duration::from_millis(session::live::DAEMON_SCAN_MS / 2) {
            tracing::debug!(
                "slow scan: {} ms ({} processes watched)",
                took.as_millis(),
                self.procs.len()
            );
        }
    }

    /// The `hang_after` watchdogs that are due: a process whose tree has not
    /// run on a CPU for its duration gets one `process_hung` report (every
    /// thread, what it waits for, its stacks), and with `kill_on_hang` the
    /// tree is killed.
    fn watchdogs(&mut self, src: &mut LiveSource, evs: &mut Vec<Event>) {
        let now = crate::sys::mono_ns();
        let mut fired = Vec::new();
        for (&pid, p) in self.procs.iter_mut() {
            let Some(h) = &mut p.hang else {
                continue;
            };
            if let Some(since) = h.due(pid, now) {
                fired.push((pid, since, h.after_ns));
            }
        }
        if fired.is_empty() {
            return;
        }
        // What the kernel has not handed over yet goes in first.
        src.drain(evs);
        self.route(src, evs);
        let mut kill = Vec::new();
        for (pid, since, after_ns) in fired {
            // It may have ended in what was just routed.
            let Some(p) = self.procs.get_mut(&pid) else {
                continue;
            };
            tracing::warn!(
                "pid {pid} {:?}: no thread ran for {:.1}s (hang_after {}s)",
                report::escape(&p.comm),
                now.saturating_sub(since) as f64 / 1e9,
                after_ns as f64 / 1e9
            );
            let found = match p.session.hang_step(src, now, since) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!("pid {pid}: {e:#}");
                    continue;
                }
            };
            let uprobes = src.probes.process_uprobe_count(pid);
            for f in &found {
                write_report(
                    &mut self.sink,
                    &self.metrics,
                    &self.cfg,
                    (&self.hooks, src.probes.wait_moves(), uprobes),
                    pid,
                    p,
                    f,
                );
            }
            if p.watch.kill_on_hang {
                kill.push(pid);
            }
        }
        for pid in kill {
            // The whole tree, as the watchdog measured it.
            let tree = progress::tree(pid);
            tracing::warn!(
                "pid {pid}: killed with {} descendants (kill_on_hang)",
                tree.len() - 1
            );
            for t in tree {
                sys::kill(t, libc::SIGKILL);
            }
        }
    }

    /// About once a second: stuck threads, Python names, caps, exits that
    /// were missed, metrics.
    fn sample_all(&mut self, src: &mut LiveSource, now: u64) {
        // Python names (the first read of an interpreter is slow) within a
        // budget; the rest at the next samples. Processes already named
        // cost nothing, so the budget reaches everyone.
        let budget = Instant::now() + NAMES_BUDGET;
        for (pid, p) in self.procs.iter_mut() {
            let mut evs = Vec::new();
            let names = Instant::now() < budget;
            if let Err(e) = p.session.sample(&mut p.activity, now, &mut evs, names) {
                tracing::warn!("pid {pid}: {e:#}");
            }
        }
        let gone: Vec<u32> = self
            .procs
            .keys()
            .copied()
            .filter(|&p| !procfs::exists(p))
            .collect();
        for pid in gone {
            self.end(src, pid);
        }
        self.skipped.retain(|&p| procfs::exists(p));
        for pid in std::mem::take(&mut self.pending_forks) {
            if procfs::exists(pid) {
                self.consider(src, pid);
            }
        }
        let threads: usize = self
            .procs
            .values()
            .flat_map(|p| p.session.model().processes.values())
            .map(|p| p.live_threads().count())
            .sum();
        let idle: Vec<(u32, String, usize)> = self
            .procs
            .values()
            .flat_map(|p| {
                let m = p.session.model();
                m.processes.values().map(move |pr| {
                    let g = crate::graph::WaitForGraph::build(pr);
                    let n = crate::graph::idle::idle_threads(m, pr, &g).len();
                    (pr.tgid, p.comm.clone(), n)
                })
            })
            .collect();
        self.metrics.idle_now(&idle);
        self.metrics.watched_processes.set(self.procs.len() as i64);
        self.metrics.watched_threads.set(threads as i64);
        self.metrics
            .kernel_drops_now(&mut self.last_drops, src.probes.drops());
        self.metrics.sample_self();
        let (mut events, mut bytes) = (0, 0);
        for r in self
            .procs
            .values()
            .filter_map(|p| p.session.engine.sink.as_ref())
        {
            events += r.len();
            bytes += r.bytes();
        }
        self.metrics.recorded_events.set(events as i64);
        self.metrics.recorded_bytes.set(bytes as i64);
    }
}

/// The model's lock and call-site names as events, so that a recording
/// replays with them.
fn names_of(model: &crate::model::Model, pid: u32) -> Vec<Event> {
    let mut v: Vec<Event> = model
        .symbols
        .iter()
        .filter(|((t, _), _)| *t == pid)
        .map(|((tgid, addr), name)| Event::Symbol {
            tgid: *tgid,
            addr: *addr,
            name: name.clone(),
        })
        .collect();
    v.extend(
        model
            .code_symbols
            .iter()
            .filter(|((t, _), _)| *t == pid)
            .map(|((tgid, addr), name)| Event::CodeSymbol {
                tgid: *tgid,
                addr: *addr,
                name: name.clone(),
            }),
    );
    v
}

/// Writes one finding's report files; counts it.
fn write_report(
    sink: &mut Sink,
    metrics: &Metrics,
    cfg: &Config,
    (hooks, moves, uprobes): (&[HookUse], &[crate::probe::WaitMove], usize),
    pid: u32,
    p: &Proc,
    f: &Finding,
) {
    let kind = serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    if sink.seen(pid, f) {
        return;
    }
    metrics.finding(&kind);
    let model = p.session.model();
    // One line: shippers that tail files read one report per line.
    let mut r = report::json::build(model, "daemon", hooks, std::slice::from_ref(f));
    r.wait_hooks = moves;
    r.uprobes_attached = uprobes;
    let json = match serde_json::to_vec(&r) {
        Ok(mut j) => {
            j.push(b'\n');
            j
        }
        Err(e) => {
            metrics.report_errors.inc();
            tracing::error!("pid {pid}: cannot encode the report: {e}");
            return;
        }
    };
    let text = format!(
        "{}\n{}",
        report::findings::finding(f),
        report::text::summary(model, cfg.long_wait_ns())
    );
    match sink.write(ReportFiles {
        pid,
        comm: &p.comm,
        finding: f,
        json,
        text,
        recording: p.session.engine.sink.as_ref().map(|r| {
            // The header first: replay judges with the daemon's limits.
            let mut out = Vec::new();
            let h = crate::recording::Header::new(
                p.session.engine.limits(),
                p.session.opts.scan_interval,
            );
            let _ = h.write(&mut out);
            out.extend(r.to_jsonl(&names_of(model, pid)));
            out
        }),
    }) {
        Ok(Some(id)) => {
            metrics.reports_written.inc();
            tracing::warn!("report {id}: {}", report::escape(&f.summary()));
        }
        Ok(None) => {}
        Err(e) => {
            metrics.report_errors.inc();
            tracing::error!("pid {pid}: {e:#}");
        }
    }
}

/// `observer daemon --config FILE`.
pub fn run(path: &Path, verbose: u8) -> Result<u8> {
    // A bad file is a usage error (exit 2, as --check-config), checked first.
    let cfg = Config::load(path).map_err(|errs| {
        crate::exit::Usage(format!(
            "{}: {} (see observer daemon --check-config)",
            path.display(),
            errs.join("; ")
        ))
    })?;
    let selector =
        Selector::new(&cfg).map_err(|e| crate::exit::Usage(format!("{}: {e}", path.display())))?;
    sys::check_privileges()?;
    sink::ensure_dir(&cfg.report_dir)?;
    let rt = session::runtime()?;
    rt.block_on(async move {
        let deep = cfg.rules.iter().any(|r| r.uprobes);
        let base = opts_for(
            &cfg,
            Watch {
                uprobes: deep,
                ..Watch::default()
            },
            deep,
        );
        let base = ObserveOpts {
            hooks: if cfg.waits == "syscalls" {
                "syscalls".into()
            } else {
                "sched".into()
            },
            ..base
        };
        let probes = session::load_probes(&base, verbose, false)?;
        let sched_ok = probes.wait_hooks() == Some(crate::probe::Waits::Sched);
        let hooks = probes.hooks.clone();
        let policy = Policy::daemon();
        let mut src = LiveSource::new(probes, policy.wait_age.as_nanos() as u64)?;
        let metrics = Arc::new(Metrics::new());
        let server = match cfg.metrics_addr().map_err(|e| anyhow!(e))? {
            Some(addr) => {
                let l = metrics::bind(addr)
                    .await
                    .with_context(|| format!("metrics_listen: cannot listen on {addr}"))?;
                tracing::info!("metrics on http://{addr}/metrics");
                Some(tokio::spawn(metrics::serve(l, metrics.clone())))
            }
            None => None,
        };
        let execs = exec::Notes::open(&mut src.probes, &cfg);
        let mut d = Daemon {
            sink: Sink::new(
                cfg.report_dir.clone(),
                cfg.max_reports,
                cfg.max_report_age_days,
            ),
            cfg,
            path: path.to_path_buf(),
            selector,
            procs: BTreeMap::new(),
            metrics,
            hooks,
            last_drops: Drops::default(),
            deep,
            pending_forks: Vec::new(),
            skipped: HashSet::new(),
            rescan_due: false,
            files: SharedFiles::new(),
            execs,
            last_spawns: Default::default(),
            samples: 0,
            across_seen: HashSet::new(),
            across_pending: HashSet::new(),
            sched_ok,
            loop_procs: HashSet::new(),
        };
        d.sink.retain();
        tracing::info!(
            "observer daemon started: {} rules, {} excludes, reports in {}",
            d.cfg.rules.len(),
            d.cfg.excludes.len(),
            d.cfg.report_dir.display()
        );
        // Processes already running (exec notifications are live first, so
        // nothing falls between the two).
        d.rescan(&mut src);
        d.wait_hooks(&mut src, !d.procs.is_empty());
        let stop = live::observe(&mut d, &mut src, &policy).await?;
        tracing::info!(
            "{}: stopping; {} processes were watched",
            match stop {
                Stop::Signal(libc::SIGINT) => "SIGINT",
                _ => "SIGTERM",
            },
            d.procs.len()
        );
        if let Some(s) = server {
            s.abort();
        }
        let n = src.probes.perf_uprobe_count();
        if n > 0 {
            tracing::info!("releasing {n} uprobes (the kernel takes ~0.1-0.2 s for each)");
        }
        drop(d);
        src.probes.release_uprobes();
        drop(src);
        Ok(0)
    })
}

/// The daemon's watched set: one session per selected process.
impl Watched for Daemon {
    type Note = std::io::Result<exec::Batch>;

    fn route(&mut self, src: &mut LiveSource, evs: &mut Vec<Event>) -> Result<()> {
        Daemon::route(self, src, evs);
        Ok(())
    }

    fn scan(
        &mut self,
        src: &mut LiveSource,
        now: u64,
        p: &Policy,
        evs: &mut Vec<Event>,
    ) -> Result<Option<Stop>> {
        self.scan_all(src, now, p);
        self.watchdogs(src, evs);
        self.enforce_caps(src);
        Ok(None)
    }

    fn aggregate(&mut self, src: &mut LiveSource) -> Result<()> {
        let aggs = Aggregates::read(src, self.deep);
        for (pid, p) in self.procs.iter_mut() {
            if let Err(e) = p.session.aggregate(src, &aggs) {
                tracing::warn!("pid {pid}: {e:#}");
            }
        }
        Ok(())
    }

    fn sample(&mut self, src: &mut LiveSource, now: u64, _: &mut Vec<Event>) -> Result<()> {
        self.sample_all(src, now);
        if let Some(c) = self.execs.as_ref().and_then(exec::Notes::counts) {
            self.metrics.exec_notes_now(&mut self.last_spawns, c);
        }
        if self.execs.is_none() || std::mem::take(&mut self.rescan_due) {
            self.rescan(src);
        }
        self.samples += 1;
        if self.samples >= 60 {
            self.samples = 0;
            let n = self.sink.retain();
            if n > 0 {
                tracing::info!("retention: removed {n} old reports");
            }
        }
        Ok(())
    }

    fn gil(&mut self, _: &LiveSource) -> Result<Duration> {
        // Not sampled (`Policy::daemon`).
        Ok(Duration::from_secs(3600))
    }

    async fn note(&mut self) -> Result<Self::Note> {
        Ok(match self.execs.as_mut() {
            Some(w) => w.next().await,
            None => std::future::pending().await,
        })
    }

    fn noted(
        &mut self,
        b: Self::Note,
        src: &mut LiveSource,
        evs: &mut Vec<Event>,
    ) -> Result<Option<Stop>> {
        let b = match b {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(
                    "exec notifications failed ({e}): reading /proc every second instead"
                );
                self.execs = None;
                return Ok(None);
            }
        };
        self.route(src, evs);
        for pid in b.execs {
            self.consider(src, pid);
            if let Some(n) = self.execs.as_mut() {
                n.settled(pid);
            }
        }
        // A watched process's forks run the same program: the rules decide
        // (the child may be excluded) on the next sample, if the child
        // still lives.
        for (parent, child) in b.forks {
            if self.procs.contains_key(&parent) {
                if self.pending_forks.len() < MAX_PENDING_FORKS {
                    self.pending_forks.push(child);
                } else {
                    self.metrics.cap_hit("pending_forks");
                }
            }
        }
        if b.overrun {
            self.metrics.cap_hit("exec_notifications");
            if !self.rescan_due {
                tracing::warn!("exec notifications overran: reading /proc");
            }
            self.rescan_due = true;
        }
        Ok(None)
    }

    fn reload(&mut self, src: &mut LiveSource) {
        Daemon::reload(self, src);
        let cfg = &self.cfg;
        if let Some(n) = self.execs.as_mut() {
            n.set_rules(cfg);
        }
    }

    async fn settle(&mut self, _: Stop) -> Result<()> {
        Ok(())
    }

    fn finish(&mut self, src: &mut LiveSource, _: Stop, evs: &mut Vec<Event>) -> Result<()> {
        // One last look at everything watched.
        src.drain(evs);
        let now = crate::sys::mono_ns();
        src.scan(now, evs);
        Daemon::route(self, src, evs);
        self.scan_all(src, now, &Policy::daemon());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_names_every_config_key() {
        let c = Config::parse("[[rule]]\ncomm = \"x\"\n").unwrap();
        let v = serde_json::json!({
            "report_dir": c.report_dir, "metrics_listen": c.metrics_listen,
            "max_reports": 1, "max_report_age_days": 1, "flight_recorder_secs": 1,
            "flight_recorder_events": 1, "max_processes": 1, "max_threads": 1,
            "max_locks": 1, "max_waits": 1, "long_wait": 1, "stuck": 1,
            "flight_recorder_bytes": 1, "waits": 1,
        });
        for k in v.as_object().unwrap().keys() {
            assert!(HELP.contains(&format!("  {k} = ")), "--help lacks {k}");
        }
        for k in [
            "comm",
            "exe",
            "cgroup",
            "user",
            "uprobes",
            "kill_on_deadlock",
            "hang_after",
            "kill_on_hang",
        ] {
            assert!(HELP.contains(&format!("  {k} = ")), "--help lacks {k}");
        }
        // And each is a real key.
        let all: String = v
            .as_object()
            .unwrap()
            .keys()
            .map(|k| {
                format!(
                    "{k} = {}\n",
                    if k.contains("dir") || k.contains("listen") {
                        "\"\""
                    } else if k == "waits" {
                        "\"auto\""
                    } else {
                        "1"
                    }
                )
            })
            .collect();
        assert!(Config::parse(&format!("{all}[[rule]]\ncomm = \"x\"\n")).is_ok());
    }
}
