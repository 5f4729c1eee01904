//! The watched set of `run` and `attach`: one session (the targets and the
//! forks they follow), findings echoed on stderr, the report and pictures
//! written at the end, observation ending with the last target.

use std::{os::fd::OwnedFd, task::Poll, time::Duration};

use anyhow::{Context, Result};
use tokio::io::{Interest, unix::AsyncFd};

use super::{
    LiveSession,
    live::{Aggregates, HangWatch, Policy, Stop, Watched},
    target::Target,
};
use crate::{
    event::Event,
    report,
    source::{activity::Activity, live::LiveSource, procfs, progress::tree},
    sys,
};

/// How often `run`/`attach` look for processes holding what theirs wait for,
/// and how many they follow at most.
const FOLLOW_EVERY_NS: u64 = 500_000_000;
const MAX_FOLLOWED: usize = 8;

pub(super) struct One<'a> {
    s: &'a mut LiveSession,
    /// The processes started or attached to that still live (`run`: one;
    /// `attach`: each -p), and those that ended.
    targets: Vec<(Target, AsyncFd<OwnedFd>)>,
    ended: Vec<Target>,
    /// Processes observed because they hold what an observed thread waits
    /// for (`follow_holders`), and when to look for more.
    followed: Vec<u32>,
    follow_due_ns: u64,
    mode: &'static str,
    activity: Activity,
    hang: Option<HangWatch>,
    /// Events were fed since the last scan.
    fed: bool,
    /// `learn_loops` moved the waits (or failed to): never again.
    waits_settled: bool,
    /// The target's raw wait status, when we reaped it.
    pub(super) status: Option<i32>,
    pub(super) hang_found: bool,
    pub(super) killed: bool,
}

impl<'a> One<'a> {
    pub(super) fn new(
        s: &'a mut LiveSession,
        targets: Vec<(Target, OwnedFd)>,
        mode: &'static str,
    ) -> Result<One<'a>> {
        let targets = targets
            .into_iter()
            .map(|(t, fd)| {
                // SAFETY: the AsyncFd owns the pidfd and keeps it open while registered.
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map(|fd| (t, fd))
                    .context("watching the target")
            })
            .collect::<Result<Vec<_>>>()?;
        let hang = s
            .opts
            .hang_after
            .map(|d| crate::cli::secs_to_ns(d, "--hang-after"))
            .transpose()?
            .map(|ns| HangWatch::new(ns, crate::sys::mono_ns()));
        Ok(One {
            s,
            targets,
            ended: Vec::new(),
            followed: Vec::new(),
            follow_due_ns: 0,
            mode,
            activity: Activity::default(),
            hang,
            fed: true,
            waits_settled: false,
            status: None,
            hang_found: false,
            killed: false,
        })
    }

    /// The policy of `run`/`attach` with these options.
    pub(super) fn policy(&self, duration_ns: Option<u64>) -> Policy {
        Policy::observe(
            self.s.opts.scan_interval,
            self.s.engine.limits().stuck_ns,
            duration_ns,
        )
    }

    /// `--hooks auto` on the scheduler hook: once a watched process is
    /// seen to be Python (its names were read) or to run a Python event
    /// loop, the syscall hooks learn the waits for the rest of the run. An
    /// asyncio loop under load may never sleep in epoll_wait, and only the
    /// syscall hooks see a call that does not: without them its stalls
    /// would go unseen. What the scheduler hook wrote of a loop thread out
    /// of its selector goes (`forget_epoll`). Tried once.
    fn learn_loops(&mut self, src: &mut LiveSource) {
        use crate::probe::Waits;
        if self.waits_settled
            || self.s.opts.hooks != "auto"
            || src.probes.wait_hooks() != Some(Waits::Sched)
        {
            return;
        }
        let py: Vec<u32> = (self.s.engine.model.processes.keys())
            .copied()
            .filter(|&tgid| self.s.python_loop(tgid) || self.s.python_known(tgid))
            .collect();
        let Some(first) = py.first() else {
            return;
        };
        self.waits_settled = true;
        if !src.probes.syscall_hooks_see_epoll() {
            tracing::info!("waits stay at sched_switch: the fentry hooks do not see epoll_wait");
            return;
        }
        match src.probes.set_waits(Some(Waits::Syscalls)) {
            Ok(_) => {
                tracing::info!(
                    "waits learnt at the syscall hooks (every syscall on the host pays): pid \
                     {first} runs Python"
                );
                for tgid in &py {
                    src.probes.forget_epoll(*tgid);
                }
            }
            Err(e) => tracing::warn!("waits stay at sched_switch: the syscall hooks: {e}"),
        }
    }

    /// Processes that hold what an observed thread waits for (the owner of
    /// a lock in shared memory, those mapping the semaphore of a
    /// multiprocessing lock, the parent that held a lock a fork copied) are
    /// observed too, as `dump` follows them: a cycle through them is whole
    /// even when only one of its processes was named.
    fn follow_holders(&mut self, src: &mut LiveSource, now: u64) -> Result<()> {
        let me = std::process::id();
        // Observed: the targets, those followed, and with --follow-forks
        // every process of the model (the kernel follows their forks).
        let forks = self.s.opts.follow_forks;
        let model = self.s.model();
        let seen = |q: u32| {
            q == me
                || self.targets.iter().any(|t| t.0.pid() == q)
                || self.followed.contains(&q)
                || (forks && model.process(q).is_some())
        };
        let todo: Vec<u32> = super::dump::follow(model, seen);
        for q in todo {
            if self.followed.len() >= MAX_FOLLOWED {
                break;
            }
            self.followed.push(q);
            let Ok(seed) = procfs::seed_threads(q) else {
                continue;
            };
            if let Err(e) = src.probes.watch(q) {
                tracing::warn!("cannot observe pid {q}: {e}");
                continue;
            }
            let mut evs = vec![procfs::start_event(q, now, true)];
            let tids = super::seeded_tids(&seed);
            evs.extend(seed);
            // A fork seen unwatched keeps its parent's thread names: the
            // names it has now (a Python name read meanwhile stays).
            let known = |tid: u32| {
                self.s
                    .model()
                    .process(q)
                    .and_then(|p| p.thread(tid))
                    .is_some_and(|t| t.py_name.is_some())
            };
            for &tid in &tids {
                if known(tid) {
                    continue;
                }
                if let Some(name) = procfs::thread_comm(q, tid) {
                    evs.push(Event::ThreadRename {
                        ts_ns: now,
                        tgid: q,
                        tid,
                        name,
                    });
                }
            }
            src.add_snapshot(q, &tids, now, &mut evs);
            self.s.feed(&mut evs)?;
            self.s.python_names_of_new(q, now)?;
            let set = super::uprobes::UprobeSet::of(&self.s.opts);
            if set.any() {
                super::uprobes::attach_uprobes(&mut src.probes, q, q, set);
            }
            if !self.s.opts.quiet {
                let comm = procfs::thread_comm(q, q).unwrap_or_default();
                eprintln!(
                    "observer: also observing pid {q} \"{}\": it holds what an observed thread waits for",
                    crate::report::escape(&comm)
                );
            }
        }
        Ok(())
    }

    fn write_outputs(&mut self, src: &LiveSource) -> Result<()> {
        self.s.write_outputs(self.mode, &src.probes)
    }
}

impl Watched for One<'_> {
    /// Which target ended.
    type Note = usize;

    fn route(&mut self, src: &mut LiveSource, evs: &mut Vec<Event>) -> Result<()> {
        if !evs.is_empty() {
            self.fed = true;
            self.s.feed(evs)?;
        }
        self.s.stack_sigs.push(&mut src.probes);
        self.s.resume_execs(&mut src.probes);
        Ok(())
    }

    fn scan(
        &mut self,
        src: &mut LiveSource,
        now: u64,
        p: &Policy,
        evs: &mut Vec<Event>,
    ) -> Result<Option<Stop>> {
        let fed = std::mem::take(&mut self.fed);
        if now >= self.follow_due_ns {
            self.follow_due_ns = now + FOLLOW_EVERY_NS;
            self.follow_holders(src, now)?;
        }
        if p.scan_unmoved || self.s.moved(fed, &src.probes.epoll_threads()) {
            self.learn_loops(src);
            let r = self.s.scan_step(src, now, p, None)?;
            if !r.hung.is_empty() {
                self.hang_found = true;
                if self.s.opts.kill_on_deadlock {
                    // The hung processes (maybe followed forks) and, when
                    // there is one, the target.
                    for pid in r.hung {
                        sys::kill(pid, libc::SIGKILL);
                    }
                    if let [(t, _)] = self.targets.as_slice() {
                        sys::kill(t.pid(), libc::SIGKILL);
                    }
                    self.killed = true;
                    return Ok(Some(Stop::Killed));
                }
            }
        }
        // The watchdog samples the first target's tree.
        let root = self.targets.first().map(|t| t.0.pid());
        let Some(since) = root.and_then(|root| self.hang.as_mut()?.due(root, now)) else {
            return Ok(None);
        };
        src.drain(evs);
        self.s.feed(evs)?;
        self.s.hang_step(src, now, since)?;
        self.hang_found = true;
        if self.s.opts.kill_on_hang {
            // The whole tree, as it is now.
            for pid in root.into_iter().flat_map(tree) {
                sys::kill(pid, libc::SIGKILL);
            }
            self.killed = true;
            return Ok(Some(Stop::Killed));
        }
        // Keep running: the report and pages are written now, and again
        // at the end.
        self.write_outputs(src)?;
        Ok(None)
    }

    fn aggregate(&mut self, src: &mut LiveSource) -> Result<()> {
        let aggs = Aggregates::read(src, self.s.opts.uprobes);
        self.s.aggregate(src, &aggs)
    }

    fn sample(&mut self, _: &mut LiveSource, now: u64, evs: &mut Vec<Event>) -> Result<()> {
        self.s.sample(&mut self.activity, now, evs, true)
    }

    fn gil(&mut self, src: &LiveSource) -> Result<Duration> {
        self.s.gil_tick(src)
    }

    async fn note(&mut self) -> Result<usize> {
        let targets = &self.targets;
        let i = std::future::poll_fn(|cx| {
            for (i, (_, fd)) in targets.iter().enumerate() {
                if let Poll::Ready(r) = fd.poll_read_ready(cx) {
                    return Poll::Ready(r.map(|_| i));
                }
            }
            Poll::Pending
        })
        .await?;
        Ok(i)
    }

    fn noted(&mut self, i: usize, _: &mut LiveSource, _: &mut Vec<Event>) -> Result<Option<Stop>> {
        if self.targets.len() == 1 {
            return Ok(Some(Stop::Exited));
        }
        // One of several ended: the others are watched on.
        let (t, _) = self.targets.remove(i);
        tracing::info!("pid {} exited", t.pid());
        self.ended.push(t);
        Ok(None)
    }

    fn reload(&mut self, _: &mut LiveSource) {}

    async fn settle(&mut self, why: Stop) -> Result<()> {
        match why {
            Stop::Killed => {
                if let [(_, fd)] = self.targets.as_slice() {
                    let _ = fd.readable().await;
                }
            }
            Stop::Signal(sig) => {
                // Every thread's Python state as it is now, before the
                // signal reaches a child (Python unwinds on SIGINT).
                self.s.python_view_of(crate::sys::mono_ns(), true, true)?;
                if let [(Target::Child { pid }, fd)] = self.targets.as_slice() {
                    // Pass the signal on and give the child a moment to exit.
                    let pid = *pid;
                    sys::kill(pid, sig);
                    let grace = tokio::time::timeout(Duration::from_secs(3), fd.readable()).await;
                    if grace.is_err() {
                        tracing::warn!("child {pid} ignored signal {sig}; killing it");
                        sys::kill(pid, libc::SIGKILL);
                        let _ = fd.readable().await;
                    }
                }
            }
            Stop::Exited | Stop::Duration => {}
        }
        Ok(())
    }

    fn finish(&mut self, src: &mut LiveSource, why: Stop, evs: &mut Vec<Event>) -> Result<()> {
        let now = crate::sys::mono_ns();
        if matches!(why, Stop::Exited | Stop::Duration) {
            self.s.python_view_of(now, true, true)?;
        }
        self.s.gil_emit(now)?;
        src.finish(now, evs);
        let mut ends = Vec::new();
        for t in self.ended.iter().chain(self.targets.iter().map(|t| &t.0)) {
            let status = match *t {
                Target::Child { pid } => Some(sys::waitpid(pid).context("reaping the child")?),
                Target::Attached { .. } => None,
            };
            self.status = self.status.or(status);
            ends.push((t.pid(), status));
        }
        for f in self.s.finish_step(src, now, evs, &ends)? {
            self.hang_found |= f.kind.is_hang();
            if !self.s.opts.quiet {
                eprint!("{}", report::findings::finding(&f));
            }
        }
        if src.decode_errors > 0 {
            tracing::warn!(
                "{} ring buffer records could not be decoded",
                src.decode_errors
            );
        }
        self.write_outputs(src)?;
        src.probes.release_uprobes();
        // The kernel unregisters uprobes one at a time, each after an RCU
        // grace period: say why exiting takes a moment.
        let n = src.probes.perf_uprobe_count();
        if n > 8 && !self.s.opts.quiet {
            eprintln!("observer: releasing {n} uprobes (the kernel takes ~0.1-0.2 s for each)");
        }
        Ok(())
    }
}
