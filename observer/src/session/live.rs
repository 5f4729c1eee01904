//! The one live loop of `run`, `attach`, `record` and the daemon: drain the
//! ring buffer, scan the wait table and judge every scan period, sample
//! thread activity, name what the kernel aggregated, sample the GIL, until
//! the watched set says stop, a signal or the duration ends it.
//!
//! What differs between the modes is written down twice, and only there:
//! as data in a [`Policy`] (periods, what is sampled), and in the
//! [`Watched`] set (one session for `run`/`attach`, one per selected
//! process for the daemon: where events go, what a finding leaves behind,
//! what ends it). Every step a process goes through is a `Session` method
//! below, called by both sets, so the modes cannot drift apart.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{SignalKind, signal};

use super::{
    Session,
    enrich::{gate_events, late_site_events, profile_events, symbol_events},
};
use crate::{
    detect::Finding,
    engine::Sink,
    event::Event,
    source::{activity::Activity, live::LiveSource, progress::Watchdog},
};

/// The per-mode differences of the loop, as one value.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    /// How often the wait table is scanned and findings judged.
    pub(crate) scan: Duration,
    /// A futex wait younger than this is not an event (transient).
    pub(crate) wait_age: Duration,
    /// How often stuck threads and Python thread names are sampled.
    pub(crate) sample: Duration,
    /// How often kernel aggregates are named, lock-order gates refreshed
    /// and newly mapped libraries given their uprobes.
    pub(crate) aggregate: Duration,
    /// The GIL of CPython targets is sampled (GIL verdicts, `--python-top`).
    pub(crate) gil: bool,
    /// Scan a process whose state cannot have moved since the last scan
    /// (no event, no wait, no event loop due, nothing to judge again).
    pub(crate) scan_unmoved: bool,
    /// A process's Python view is read for futex waits at least this old
    /// (and for candidate findings, blocked event loops, the end): a
    /// healthy worker polling a queue every 50 ms costs no reads.
    pub(crate) python_after: Duration,
    /// SIGHUP reloads the set's configuration (else it ends the observer,
    /// as it would any program).
    pub(crate) reload_on_hup: bool,
    /// Observation ends after this long (`attach --duration`).
    pub(crate) duration: Option<Duration>,
}

/// The daemon's scan period (its recordings' header says so too).
pub(crate) const DAEMON_SCAN_MS: u64 = 100;

/// Per-event-batch pace shared by every mode: the ring buffer is drained
/// this often between scans so it never fills.
const DRAIN: Duration = Duration::from_millis(20);

impl Policy {
    /// `run`, `attach`, `record`: one target (and its followed forks),
    /// looked at closely: every scan judges, the GIL is sampled.
    pub(crate) fn observe(scan_ms: u64, stuck_ns: u64, duration_ns: Option<u64>) -> Policy {
        Policy {
            scan: Duration::from_millis(scan_ms),
            wait_age: Policy::observe_wait_age(scan_ms),
            // A quarter of --stuck, so a stuck thread is seen in time.
            sample: Duration::from_millis((stuck_ns / 4_000_000).clamp(100, 1000)),
            aggregate: Duration::from_millis(500),
            gil: true,
            scan_unmoved: true,
            // As young as a scan can see (`wait_age`).
            python_after: Duration::ZERO,
            reload_on_hup: false,
            duration: duration_ns.map(Duration::from_nanos),
        }
    }

    /// The age at which `run`/`attach` look at a futex wait: a wait younger
    /// than one scan period (at most 10 ms) is transient contention.
    pub(crate) fn observe_wait_age(scan_ms: u64) -> Duration {
        Duration::from_millis(scan_ms.min(10))
    }

    /// The daemon: many processes, most of them healthy, for days. A
    /// process is judged only when it may have moved; a futex wait is
    /// looked at once it is 100 ms old (a worker polling a queue every
    /// 50 ms makes no event); the GIL is not sampled (its cost is per
    /// process per tick); names once a second.
    pub(crate) fn daemon() -> Policy {
        Policy {
            scan: Duration::from_millis(DAEMON_SCAN_MS),
            wait_age: Duration::from_millis(100),
            sample: Duration::from_secs(1),
            aggregate: Duration::from_millis(500),
            gil: false,
            scan_unmoved: false,
            python_after: Duration::from_secs(1),
            reload_on_hup: true,
            duration: None,
        }
    }
}

/// Why observation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The target exited.
    Exited,
    /// A hang was found and its processes killed (`--kill-on-deadlock`,
    /// `--kill-on-hang`).
    Killed,
    /// SIGINT or SIGTERM.
    Signal(i32),
    /// `--duration` ran out.
    Duration,
}

/// The watched set: where the loop's events and findings go.
pub(crate) trait Watched {
    /// What `note` waits for besides the kernel (the target's exit, exec
    /// notifications).
    type Note;
    /// Hands events to their sessions.
    fn route(&mut self, src: &mut LiveSource, evs: &mut Vec<Event>) -> Result<()>;
    /// One scan of every session that may have moved (`Policy::scan_unmoved`
    /// says which), the hang watchdogs that are due, and what the findings
    /// leave behind. `Some` ends observation.
    fn scan(
        &mut self,
        src: &mut LiveSource,
        now: u64,
        p: &Policy,
        evs: &mut Vec<Event>,
    ) -> Result<Option<Stop>>;
    /// `Session::aggregate` of every session.
    fn aggregate(&mut self, src: &mut LiveSource) -> Result<()>;
    /// `Session::sample` of every session, and the set's own bookkeeping.
    fn sample(&mut self, src: &mut LiveSource, now: u64, evs: &mut Vec<Event>) -> Result<()>;
    /// `Session::gil_tick`; returns when to run it next.
    fn gil(&mut self, src: &LiveSource) -> Result<Duration>;
    /// Waits for the set's own news.
    async fn note(&mut self) -> Result<Self::Note>;
    /// Takes the news in. `Some` ends observation.
    fn noted(
        &mut self,
        n: Self::Note,
        src: &mut LiveSource,
        evs: &mut Vec<Event>,
    ) -> Result<Option<Stop>>;
    /// SIGHUP (with `Policy::reload_on_hup`).
    fn reload(&mut self, src: &mut LiveSource);
    /// Observation is ending: let what must end do so (a killed target, a
    /// child sent the signal).
    async fn settle(&mut self, why: Stop) -> Result<()>;
    /// The last look, after the loop.
    fn finish(&mut self, src: &mut LiveSource, why: Stop, evs: &mut Vec<Event>) -> Result<()>;
}

/// The loop. Returns why it ended; the set has had its last look.
pub(crate) async fn observe<W: Watched>(
    w: &mut W,
    src: &mut LiveSource,
    p: &Policy,
) -> Result<Stop> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = match p.reload_on_hup {
        true => Some(signal(SignalKind::hangup())?),
        false => None,
    };
    let mut drain = tokio::time::interval(DRAIN);
    let mut scan = tokio::time::interval(p.scan);
    let mut agg = tokio::time::interval(p.aggregate);
    let mut sample = tokio::time::interval(p.sample);
    for t in [&mut drain, &mut scan, &mut agg, &mut sample] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    }
    let deadline = tokio::time::sleep(p.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let gil_sample = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(gil_sample);
    let mut evs = Vec::new();
    let why = loop {
        let hup = async {
            match sighup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let stop = tokio::select! {
            r = src.urgent(&mut evs) => {
                r.context("reading the ring buffer")?;
                // An urgent record (EDEADLK, ...): judge it before the next scan.
                scan.reset_immediately();
                None
            }
            _ = drain.tick() => { src.drain(&mut evs); None }
            _ = scan.tick() => {
                src.drain(&mut evs);
                let now = crate::sys::mono_ns();
                src.scan(now, &mut evs);
                w.route(src, &mut evs)?;
                w.scan(src, now, p, &mut evs)?
            }
            _ = agg.tick() => { w.aggregate(src)?; None }
            _ = sample.tick() => {
                w.sample(src, crate::sys::mono_ns(), &mut evs)?;
                None
            }
            _ = &mut gil_sample, if p.gil => {
                let next = w.gil(src)?;
                gil_sample.as_mut().reset(tokio::time::Instant::now() + next);
                None
            }
            n = w.note() => { let n = n?; w.noted(n, src, &mut evs)? }
            _ = hup => { w.reload(src); None }
            _ = sigint.recv() => Some(Stop::Signal(libc::SIGINT)),
            _ = sigterm.recv() => Some(Stop::Signal(libc::SIGTERM)),
            _ = &mut deadline => Some(Stop::Duration),
        };
        w.route(src, &mut evs)?;
        if let Some(why) = stop {
            break why;
        }
    };
    w.settle(why).await?;
    w.finish(src, why, &mut evs)?;
    Ok(why)
}

/// A hang watchdog (`--hang-after`, the daemon's `hang_after`): on-CPU time
/// of the process's tree, sampled at its own period (a tenth of it).
pub(crate) struct HangWatch {
    dog: Watchdog,
    pub(crate) after_ns: u64,
    period_ns: u64,
    next_ns: u64,
}

impl HangWatch {
    pub(crate) fn new(after_ns: u64, now: u64) -> HangWatch {
        HangWatch {
            dog: Watchdog::new(after_ns, now),
            after_ns,
            period_ns: Watchdog::period_ms(after_ns) * 1_000_000,
            next_ns: now,
        }
    }

    /// When due, samples the tree of `root`: when it last ran, if it has
    /// not run for the duration since (once).
    pub(crate) fn due(&mut self, root: u32, now: u64) -> Option<u64> {
        if now < self.next_ns {
            return None;
        }
        self.next_ns = now + self.period_ns;
        self.dog.sample(root, now)
    }
}

/// Deep-tier and futex aggregates the kernel counted, read once per
/// aggregate tick for every session: (tgid, address).
pub(crate) struct Aggregates {
    keys: Vec<(u32, u64)>,
}

impl Aggregates {
    pub(crate) fn read(src: &LiveSource, deep: bool) -> Aggregates {
        let mut keys: Vec<(u32, u64)> = src
            .probes
            .aggregates()
            .into_iter()
            .map(|(k, _)| (k.tgid, k.uaddr))
            .collect();
        if deep {
            keys.extend(
                src.probes
                    .lock_stats()
                    .0
                    .into_iter()
                    .map(|(k, _)| (k.tgid, k.lock)),
            );
        }
        Aggregates { keys }
    }
}

/// One `Session::scan`'s outcome.
pub(crate) struct Scanned {
    /// Findings accepted in this scan.
    pub(crate) found: Vec<Finding>,
    /// Processes found hung.
    pub(crate) hung: Vec<u32>,
}

/// The steps every watched process goes through, in every mode.
impl<S: Sink> Session<S> {
    /// Whether a scan can find anything new: events were fed since the last
    /// one, a thread waits, an event loop is due, or candidates wait to be
    /// judged again. Cheap: no /proc or target memory read.
    pub(crate) fn moved(&self, fed: bool, loops: &crate::source::event_loop::Threads) -> bool {
        let now = crate::sys::mono_ns();
        fed || self.rejudge()
            || self
                .engine
                .model
                .processes
                .values()
                .any(|m| m.live_threads().any(|t| t.wait.is_some()))
            || self.loops_due(loops, now)
    }

    /// One scan step: locks held since before the attach (judged on the
    /// state just fed), uprobes for processes whose libc appeared, then
    /// detection. `loops`: the event loop threads as the set read them for
    /// this tick (the daemon: one map walk for every process); None: read
    /// when the scan gets to them.
    pub(crate) fn scan_step(
        &mut self,
        src: &mut LiveSource,
        now: u64,
        p: &Policy,
        loops: Option<&crate::source::event_loop::Threads>,
    ) -> Result<Scanned> {
        self.python_after_ns = p.python_after.as_nanos() as u64;
        let deep = self.opts.uprobes && src.probes.uprobe_count() > 0;
        let mut evs = crate::source::preheld::events(&self.engine.model, &src.probes, deep, now);
        self.feed(&mut evs)?;
        self.resume_execs(&mut src.probes);
        self.pending_thread_uprobes(src, now);
        let before = self.engine.findings().len();
        let hung = self.scan(src, now, loops)?;
        Ok(Scanned {
            found: self.engine.findings()[before..].to_vec(),
            hung,
        })
    }

    /// A cycle found over several sessions (the daemon's, one per
    /// process): the stacks of this session's threads in it, taken now.
    pub(crate) fn stacks_for(&mut self, src: &LiveSource, f: &Finding, now: u64) -> Result<()> {
        let mut evs = super::stack_events(
            &self.engine.model,
            &mut self.symbols,
            Some(&src.probes),
            std::slice::from_ref(f),
            now,
            true,
        );
        self.feed(&mut evs)
    }

    /// Takes a finding made over several sessions as this one's: its
    /// threads here are filled from this model, and no later finding of
    /// this session names them again (a long wait).
    pub(crate) fn adopt(&mut self, f: &mut Finding) {
        crate::detect::refresh_threads(&self.engine.model, f);
        self.engine.detectors.accept(vec![f.clone()]);
    }

    /// The aggregate step: the counted futexes and deep-tier locks named
    /// while their processes can be read, lock-order gates that cleared,
    /// uprobes on libraries mapped since (dlopen of libpython, ...).
    pub(crate) fn aggregate(&mut self, src: &mut LiveSource, aggs: &Aggregates) -> Result<()> {
        self.symbolize_aggregates(&aggs.keys)?;
        self.refresh_gates(src)?;
        self.recheck_libs(src);
        Ok(())
    }

    /// The sample step: threads idle while others ran (stuck), and with
    /// `names`, Python thread names (the daemon leaves them to a later
    /// sample when this one has spent its budget: the first look at a
    /// hundred new interpreters must not hold up the scans).
    pub(crate) fn sample(
        &mut self,
        activity: &mut Activity,
        now: u64,
        evs: &mut Vec<Event>,
        names: bool,
    ) -> Result<()> {
        activity.sample(&self.engine.model, now, self.engine.limits().stuck_ns, evs);
        self.feed(evs)?;
        if names {
            self.python_names(now)?;
        }
        Ok(())
    }

    /// The hang watchdog fired: the report of every thread, as findings.
    pub(crate) fn hang_step(
        &mut self,
        src: &mut LiveSource,
        now: u64,
        since: u64,
    ) -> Result<Vec<Finding>> {
        let before = self.engine.findings().len();
        self.hang_report(src, now, since)?;
        Ok(self.engine.findings()[before..].to_vec())
    }

    /// The last look at processes that ended (or at everything, when
    /// observation ends): what the ring buffer still held, names of
    /// creation sites from the mappings read while they lived, the deep
    /// tier's gates and lock profiles, the `End` events, then what only
    /// the end can tell (threads never joined). Returns those findings.
    pub(crate) fn finish_step(
        &mut self,
        src: &mut LiveSource,
        now: u64,
        evs: &mut Vec<Event>,
        ends: &[(u32, Option<i32>)],
    ) -> Result<Vec<Finding>> {
        // The waits still open are checked as a scan checks a finding's.
        let tgids: Vec<u32> = ends.iter().map(|e| e.0).collect();
        src.confirm(&src.waiting_in(&tgids), now, evs);
        self.feed(evs)?;
        let mut evs = late_site_events(&self.engine.model, &mut self.symbols, &mut self.sym_tried);
        if self.opts.uprobes {
            evs.extend(gate_events(&self.engine.model, &src.probes, now));
            let mine = |tgid: u32| self.engine.model.processes.contains_key(&tgid);
            evs.extend(
                profile_events(&src.probes)
                    .into_iter()
                    .filter(|e| matches!(e, Event::LockProfile { tgid, .. } if mine(*tgid))),
            );
        }
        for &(tgid, exit_status) in ends {
            evs.push(Event::End {
                ts_ns: now,
                tgid,
                exit_status,
            });
        }
        self.feed(&mut evs)?;
        // Never leave a process stopped at exec behind.
        self.resume_execs(&mut src.probes);
        // Names for what arrived since the last scan (a short-lived target
        // may be gone already: its recorded mappings serve).
        let mut evs = symbol_events(&self.engine.model, &mut self.symbols, &mut self.sym_tried);
        self.feed(&mut evs)?;
        Ok(self.engine.finish(now))
    }
}

/// Exit code of every subcommand when a hang was found (see `crate::exit`).
pub const EXIT_HANG: u8 = crate::exit::HANG;
