//! The watched set of `run` and `attach`: one session (the target and the
//! forks it follows), findings echoed on stderr, the report and pictures
//! written at the end, observation ending with the target.

use std::{os::fd::OwnedFd, time::Duration};

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

pub(super) struct One<'a> {
    s: &'a mut LiveSession,
    target: Target,
    pidfd: AsyncFd<OwnedFd>,
    mode: &'static str,
    activity: Activity,
    hang: Option<HangWatch>,
    /// Events were fed since the last scan.
    fed: bool,
    /// The target's raw wait status, when we reaped it.
    pub(super) status: Option<i32>,
    pub(super) hang_found: bool,
    pub(super) killed: bool,
}

impl<'a> One<'a> {
    pub(super) fn new(
        s: &'a mut LiveSession,
        target: Target,
        pidfd: OwnedFd,
        mode: &'static str,
    ) -> Result<One<'a>> {
        // SAFETY: the AsyncFd owns the pidfd and keeps it open while registered.
        let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
            .context("watching the target")?;
        let hang = s
            .opts
            .hang_after
            .map(|d| crate::cli::secs_to_ns(d, "--hang-after"))
            .transpose()?
            .map(|ns| HangWatch::new(ns, procfs::mono_ns()));
        Ok(One {
            s,
            target,
            pidfd,
            mode,
            activity: Activity::default(),
            hang,
            fed: true,
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

    fn write_outputs(&mut self, src: &LiveSource) -> Result<()> {
        let hooks = src.probes.hooks.clone();
        self.s
            .write_outputs(self.mode, &hooks, src.probes.uprobe_count())
    }
}

impl Watched for One<'_> {
    type Note = ();

    fn route(&mut self, src: &mut LiveSource, evs: &mut Vec<Event>) -> Result<()> {
        if !evs.is_empty() {
            self.fed = true;
            self.s.feed(evs)?;
        }
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
        if p.scan_unmoved || self.s.moved(fed, &src.probes.epoll_threads()) {
            let r = self.s.scan_step(src, now, p, None)?;
            if !r.hung.is_empty() {
                self.hang_found = true;
                if self.s.opts.kill_on_deadlock {
                    // The hung processes (maybe followed forks) and the target.
                    for pid in r.hung {
                        sys::kill(pid, libc::SIGKILL);
                    }
                    sys::kill(self.target.pid(), libc::SIGKILL);
                    self.killed = true;
                    return Ok(Some(Stop::Killed));
                }
            }
        }
        let Some(since) = self
            .hang
            .as_mut()
            .and_then(|h| h.due(self.target.pid(), now))
        else {
            return Ok(None);
        };
        src.drain(evs);
        self.s.feed(evs)?;
        self.s.hang_step(src, now, since)?;
        self.hang_found = true;
        if self.s.opts.kill_on_hang {
            // The whole tree, as it is now.
            for pid in tree(self.target.pid()) {
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

    async fn note(&mut self) -> Result<()> {
        let _ = self.pidfd.readable().await?;
        Ok(())
    }

    fn noted(&mut self, _: (), _: &mut LiveSource, _: &mut Vec<Event>) -> Result<Option<Stop>> {
        Ok(Some(Stop::Exited))
    }

    fn reload(&mut self, _: &mut LiveSource) {}

    async fn settle(&mut self, why: Stop) -> Result<()> {
        match why {
            Stop::Killed => {
                let _ = self.pidfd.readable().await;
            }
            Stop::Signal(sig) => {
                // Every thread's Python state as it is now, before the
                // signal reaches a child (Python unwinds on SIGINT).
                self.s.python_view_of(procfs::mono_ns(), true, true)?;
                if let Target::Child { pid } = self.target {
                    // Pass the signal on and give the child a moment to exit.
                    sys::kill(pid, sig);
                    let grace =
                        tokio::time::timeout(Duration::from_secs(3), self.pidfd.readable()).await;
                    if grace.is_err() {
                        tracing::warn!("child {pid} ignored signal {sig}; killing it");
                        sys::kill(pid, libc::SIGKILL);
                        let _ = self.pidfd.readable().await;
                    }
                }
            }
            Stop::Exited | Stop::Duration => {}
        }
        Ok(())
    }

    fn finish(&mut self, src: &mut LiveSource, why: Stop, evs: &mut Vec<Event>) -> Result<()> {
        let now = procfs::mono_ns();
        if matches!(why, Stop::Exited | Stop::Duration) {
            self.s.python_view_of(now, true, true)?;
        }
        self.s.gil_emit(now)?;
        src.finish(now, evs);
        self.status = match self.target {
            Target::Child { pid } => Some(sys::waitpid(pid).context("reaping the child")?),
            Target::Attached { .. } => None,
        };
        let ends = [(self.target.pid(), self.status)];
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
