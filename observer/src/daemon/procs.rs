//! Which processes the daemon watches: considering a new program against
//! the rules, starting and ending a watch, the caps, rescans and reloads.

use super::*;

impl Daemon {
    /// A process that exec'd or was found in /proc: watch it if selected.
    pub(super) fn consider(&mut self, src: &mut LiveSource, pid: u32) {
        if self.procs.contains_key(&pid) || pid == std::process::id() {
            return;
        }
        let Some(info) = ProcInfo::read(pid) else {
            return;
        };
        // Kernel threads have no executable and no futexes of interest.
        if info.exe.is_none() {
            return;
        }
        // Caught mid-exec (a rename note): its command line is not there
        // yet. The exec note follows; the next sample looks again too.
        if procfs::mid_exec(pid) {
            if self.pending_forks.len() < MAX_PENDING_FORKS {
                self.pending_forks.push(pid);
            }
            return;
        }
        let Some(w) = self.selector.select(&info) else {
            return;
        };
        if self.procs.len() >= self.cfg.max_processes {
            // Seen again (another notification, a rescan): one skip.
            if self.skipped.insert(pid) {
                self.metrics.cap_hit("processes");
                tracing::warn!(
                    "not watching pid {pid} {:?}: max_processes ({}) reached",
                    report::escape(&info.comm),
                    self.cfg.max_processes
                );
            }
            return;
        }
        self.skipped.remove(&pid);
        self.start(src, info, w);
    }

    pub(super) fn start(&mut self, src: &mut LiveSource, info: ProcInfo, w: Watch) {
        let pid = info.pid;
        // Before the watch: waits that begin after it are seen by the
        // hooks, those already in progress by the snapshot below.
        if !self.wait_hooks(src, true) {
            return;
        }
        if let Err(e) = src.probes.watch(pid) {
            self.metrics.cap_hit("kernel_watch");
            tracing::warn!("cannot watch pid {pid}: {e}");
            return;
        }
        let start = procfs::start_event(pid, crate::sys::mono_ns(), true);
        let seed = match procfs::seed_threads(pid) {
            Ok(s) if procfs::exists(pid) => s,
            _ => {
                src.probes.unwatch(pid);
                return;
            }
        };
        let opts = opts_for(&self.cfg, w, self.deep);
        let limits = match session::limits_of(&opts) {
            Ok(l) => l,
            Err(e) => {
                src.probes.unwatch(pid);
                tracing::warn!("cannot watch pid {pid}: {e:#}");
                return;
            }
        };
        let now = crate::sys::mono_ns();
        let mut evs = vec![start];
        let tids = session::seeded_tids(&seed);
        evs.extend(seed);
        // Waits already in progress: a deadlock older than the daemon.
        src.add_snapshot(pid, &tids, now, &mut evs);
        let recorder = (self.cfg.flight_recorder_secs > 0.0).then(|| {
            FlightRecorder::new(
                (self.cfg.flight_recorder_secs * 1e9) as u64,
                self.cfg.flight_recorder_events,
                self.cfg.flight_recorder_bytes,
            )
        });
        let mut session = Session::new(opts.clone(), limits, recorder, Outputs::default());
        session.loops_of(pid);
        session.share_files(self.files.clone());
        self.metrics.events.inc_by(evs.len() as u64);
        if let Err(e) = session.feed(&mut evs) {
            tracing::warn!("pid {pid}: {e:#}");
        }
        session.uprobes_at_watch(&mut src.probes, pid, now);
        tracing::info!(
            "watching pid {pid} {:?} exe {:?} (rule {}{}{})",
            report::escape(&info.comm),
            report::escape(info.exe.as_deref().unwrap_or("?")),
            w.rule,
            if opts.uprobes { ", uprobes" } else { "" },
            match w.hang_after_ns {
                Some(ns) => format!(", hang_after {}s", ns as f64 / 1e9),
                None => String::new(),
            }
        );
        self.procs.insert(
            pid,
            Proc {
                session,
                watch: w,
                comm: info.comm,
                activity: Activity::default(),
                pending: Vec::new(),
                fed: true,
                recorder_evicted: 0,
                recorder_evicted_bytes: 0,
                hang: w.hang_after_ns.map(|ns| HangWatch::new(ns, now)),
            },
        );
    }

    /// Stops watching a process (exited, or no longer selected).
    pub(super) fn drop_proc(&mut self, src: &mut LiveSource, pid: u32, why: &str) -> Option<Proc> {
        let p = self.procs.remove(&pid)?;
        src.probes.unwatch(pid);
        // Its uprobe links go now, not at daemon stop (released off this
        // thread): a long-running daemon does not pile them up.
        src.probes.release_process_uprobes(pid);
        self.sink.forget(pid);
        tracing::info!("pid {pid} {:?}: {why}", report::escape(&p.comm));
        // Once on the syscall hooks for an event loop, waits stay there until
        // nothing is watched: a wait the syscall hooks began is ended by them.
        if self.procs.is_empty() {
            self.loop_procs.clear();
            self.wait_hooks(src, false);
        }
        Some(p)
    }

    /// A watched Python process seen in epoll_wait runs an event loop. One
    /// under load may never sleep there, and only the syscall hooks see a
    /// call that does not sleep: from now on they learn the waits. What the
    /// scheduler hook wrote of its loops goes (a stretch between its last
    /// sleep there and now would read as blocked).
    pub(super) fn learn_loops(&mut self, src: &mut LiveSource) {
        let new: Vec<u32> = self
            .procs
            .iter()
            .filter(|(pid, p)| !self.loop_procs.contains(pid) && p.session.python_loop(**pid))
            .map(|(pid, _)| *pid)
            .collect();
        if new.is_empty() {
            return;
        }
        self.loop_procs.extend(&new);
        use crate::probe::Waits;
        let before = src.probes.wait_hooks();
        self.wait_hooks(src, true);
        if before == Some(Waits::Sched) && src.probes.wait_hooks() == Some(Waits::Syscalls) {
            for pid in &self.loop_procs {
                src.probes.forget_epoll(*pid);
            }
        }
    }

    /// Puts the hooks that learn futex and epoll waits where they cost
    /// least (`Config::waits`): none while no process is watched (`watching`
    /// false); at the scheduler, where no syscall of the host pays; at the
    /// syscall hooks while a watched Python process runs an event loop, or
    /// where the scheduler hook is refused. False when none could be put on.
    pub(super) fn wait_hooks(&mut self, src: &mut LiveSource, watching: bool) -> bool {
        use crate::probe::Waits;
        let want = watching.then_some(match self.cfg.waits.as_str() {
            "syscalls" => Waits::Syscalls,
            // (fentry hooks see no epoll_wait: loops stay at the scheduler)
            "auto" if !self.loop_procs.is_empty() && src.probes.syscall_hooks_see_epoll() => {
                Waits::Syscalls
            }
            _ if !self.sched_ok => Waits::Syscalls,
            _ => Waits::Sched,
        });
        let before = src.probes.wait_hooks();
        // Never from the syscall hooks to the scheduler while watching: a
        // wait the syscall hooks began would have no end (SIGHUP to "sched").
        let want = match (before, want) {
            (Some(Waits::Syscalls), Some(Waits::Sched)) => before,
            _ => want,
        };
        let r = match src.probes.set_waits(want) {
            Err(e) if want == Some(Waits::Sched) => {
                tracing::warn!("scheduler hook: {e}; waits are learnt at the syscall hooks");
                self.sched_ok = false;
                src.probes.set_waits(Some(Waits::Syscalls))
            }
            r => r,
        };
        if let Err(e) = &r {
            tracing::warn!("wait hooks: {e}");
        }
        let now = src.probes.wait_hooks();
        if now != before {
            tracing::info!(
                "waits learnt {}",
                match now {
                    None => "nowhere: no process is watched".to_string(),
                    Some(Waits::Sched) => "at sched_switch: no syscall pays".to_string(),
                    Some(Waits::Syscalls) if self.loop_procs.is_empty() =>
                        "at the syscall hooks (every syscall on the host pays)".to_string(),
                    Some(Waits::Syscalls) => format!(
                        "at the syscall hooks (every syscall on the host pays): pid {} runs an event loop",
                        self.loop_procs.iter().min().copied().unwrap_or_default()
                    ),
                }
            );
        }
        self.metrics
            .syscall_hooks
            .set(i64::from(now == Some(Waits::Syscalls)));
        self.metrics
            .sched_hook
            .set(i64::from(now == Some(Waits::Sched)));
        now.is_some() || !watching
    }

    /// The process is gone: judge what only the end can tell, then forget it.
    pub(super) fn end(&mut self, src: &mut LiveSource, pid: u32) {
        let Some(p) = self.procs.get_mut(&pid) else {
            return;
        };
        let now = crate::sys::mono_ns();
        let mut evs = std::mem::take(&mut p.pending);
        let found = p
            .session
            .finish_step(src, now, &mut evs, &[(pid, None)])
            .unwrap_or_else(|e| {
                tracing::warn!("pid {pid}: {e:#}");
                Vec::new()
            });
        let uprobes = src.probes.process_uprobe_count(pid);
        for f in found {
            write_report(
                &mut self.sink,
                &self.metrics,
                &self.cfg,
                (&self.hooks, src.probes.wait_moves(), uprobes),
                pid,
                p,
                &f,
            );
        }
        self.drop_proc(src, pid, "exited");
    }

    pub(super) fn enforce_caps(&mut self, src: &mut LiveSource) {
        let mut rebuild = Vec::new();
        for (&pid, p) in self.procs.iter_mut() {
            if let Some(r) = &p.session.engine.sink {
                // Evictions since the last look, per bound.
                for (cap, now, seen) in [
                    ("flight_recorder_events", r.evicted, &mut p.recorder_evicted),
                    (
                        "flight_recorder_bytes",
                        r.evicted_bytes,
                        &mut p.recorder_evicted_bytes,
                    ),
                ] {
                    if now > *seen {
                        self.metrics.cap_hits_by(cap, now - *seen);
                        *seen = now;
                    }
                }
            }
            let Some(m) = p.session.engine.model.processes.get_mut(&pid) else {
                continue;
            };
            if m.locks.len() > self.cfg.max_locks {
                // Keep the most waited-on addresses.
                let mut v: Vec<(u64, u64)> =
                    m.locks.iter().map(|(a, s)| (s.total_ns, *a)).collect();
                v.sort_unstable();
                let extra = m.locks.len() - self.cfg.max_locks;
                for (_, a) in &v[..extra] {
                    m.locks.remove(a);
                }
                self.metrics.cap_hit("locks");
            }
            if m.long_waits.len() > self.cfg.max_waits {
                let extra = m.long_waits.len() - self.cfg.max_waits;
                m.long_waits.drain(..extra);
                self.metrics.cap_hit("waits");
            }
            if m.threads.len() > self.cfg.max_threads {
                rebuild.push(pid);
            }
        }
        // Too many threads remembered (a churning process): start its model
        // again from /proc. Findings already written are not written again.
        for pid in rebuild {
            self.metrics.cap_hit("threads");
            let Some(p) = self.drop_proc(src, pid, "max_threads reached: rebuilding its model")
            else {
                continue;
            };
            let written: Vec<Finding> = p.session.engine.findings().to_vec();
            match ProcInfo::read(pid) {
                Some(info) => {
                    self.start(src, info, p.watch);
                    for f in written {
                        self.sink.mark(pid, &f);
                    }
                }
                None => continue,
            }
        }
    }

    /// Every process in /proc against the rules.
    pub(super) fn rescan(&mut self, src: &mut LiveSource) {
        for pid in select::all_pids() {
            self.consider(src, pid);
        }
    }

    /// SIGHUP: a bad config is refused and the old one kept.
    pub(super) fn reload(&mut self, src: &mut LiveSource) {
        let new = Config::load_for_reload(&self.path, &self.cfg)
            .and_then(|c| Selector::new(&c).map(|s| (c, s)).map_err(|e| vec![e]));
        let (new, selector) = match new {
            Ok(x) => x,
            Err(errs) => {
                self.metrics
                    .config_reloads
                    .get_or_create(&vec![("result", "error".into())])
                    .inc();
                tracing::error!(
                    "config reload refused, keeping the old config: {}: {}",
                    self.path.display(),
                    errs.join("; ")
                );
                return;
            }
        };
        if new.metrics_listen != self.cfg.metrics_listen {
            tracing::warn!("metrics_listen changes take effect at restart");
        }
        if new.rules.iter().any(|r| r.uprobes) && !self.deep {
            tracing::warn!(
                "uprobes = true takes effect at restart (the probes were loaded without the deep tier)"
            );
        }
        if let Err(e) = sink::ensure_dir(&new.report_dir) {
            tracing::error!("config reload refused, keeping the old config: {e:#}");
            return;
        }
        self.sink.dir = new.report_dir.clone();
        self.sink.max_reports = new.max_reports;
        self.sink.max_age = (new.max_report_age_days > 0.0)
            .then(|| Duration::from_secs_f64(new.max_report_age_days * 86_400.0));
        self.selector = selector;
        let waits_changed = self.cfg.waits != new.waits;
        self.cfg = new;
        if waits_changed {
            // To the syscall hooks at once; to the scheduler once nothing is
            // watched (`wait_hooks`).
            let watching = !self.procs.is_empty();
            self.wait_hooks(src, watching);
        }
        self.metrics
            .config_reloads
            .get_or_create(&vec![("result", "ok".into())])
            .inc();
        tracing::info!(
            "config reloaded: {} rules, {} excludes",
            self.cfg.rules.len(),
            self.cfg.excludes.len()
        );
        let watched: Vec<u32> = self.procs.keys().copied().collect();
        for pid in watched {
            let keep = ProcInfo::read(pid).and_then(|i| self.selector.select(&i));
            match keep {
                Some(w) => {
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.watch.kill_on_deadlock = w.kill_on_deadlock;
                        p.session.opts.kill_on_deadlock = w.kill_on_deadlock;
                        p.watch.kill_on_hang = w.kill_on_hang;
                        // A new duration starts a new watchdog; the same
                        // one keeps its state (a hang is reported once).
                        if p.hang.as_ref().map(|h| h.after_ns) != w.hang_after_ns {
                            let now = crate::sys::mono_ns();
                            p.hang = w.hang_after_ns.map(|ns| HangWatch::new(ns, now));
                        }
                        p.watch.hang_after_ns = w.hang_after_ns;
                        p.session.opts.hang_after = w.hang_after_ns.map(|ns| ns as f64 / 1e9);
                        p.session.opts.kill_on_hang = w.kill_on_hang;
                    }
                }
                None => {
                    self.drop_proc(src, pid, "no longer selected by the config");
                }
            }
        }
        self.rescan(src);
    }
}
