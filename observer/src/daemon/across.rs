//! One graph across the daemon's sessions (one per watched process): a
//! cycle through shared memory between two watched processes.

use super::*;

impl Daemon {
    /// Cycles across watched processes: each process has its own session,
    /// so the graph through shared memory is built over the sessions whose
    /// lock words name a live thread of another watched process, or whose
    /// threads wait for a multiprocessing lock (few, and none on a host
    /// without such locks).
    pub(super) fn across(&mut self, src: &mut LiveSource, now: u64, kill: &mut Vec<u32>) {
        let linked: Vec<u32> = self
            .procs
            .iter()
            .filter(|&(&pid, p)| {
                p.session.model().process(pid).is_some_and(|m| {
                    let mp_wait = m.python.as_ref().is_some_and(|v| {
                        v.threads
                            .iter()
                            .any(|t| t.wait.as_ref().is_some_and(|w| w.kind.across_processes()))
                    });
                    mp_wait
                        || m.foreign
                            .values()
                            .any(|f| f.pid != pid && self.procs.contains_key(&f.pid))
                })
            })
            .map(|(&pid, _)| pid)
            .collect();
        let pending = std::mem::take(&mut self.across_pending);
        if linked.len() < 2 {
            return;
        }
        let models: Vec<&Model> = linked
            .iter()
            .map(|pid| self.procs[pid].session.model())
            .collect();
        let limits = self.procs[&linked[0]].session.engine.limits().clone();
        let found = crate::detect::Detectors::across_models(&models, now, &limits);
        for mut f in found {
            if self.across_seen.contains(&f.key) {
                continue;
            }
            // Processes are read one at a time: a cycle is reported when
            // two scans in a row see it.
            if !pending.contains(&f.key) {
                self.across_pending.insert(f.key.clone());
                continue;
            }
            // Its waits checked as a scan checks a finding's: what changed
            // goes to the sessions, and it is judged again.
            let tids: Vec<u32> = f.threads.iter().map(|t| t.tid).collect();
            let mut evs = Vec::new();
            if !src.confirm(&tids, now, &mut evs) {
                for ev in evs {
                    if let Some(p) = ev.tgid().and_then(|pid| self.procs.get_mut(&pid))
                        && let Err(e) = p.session.feed(&mut vec![ev])
                    {
                        tracing::warn!("{e:#}");
                    }
                }
                continue;
            }
            self.across_seen.insert(f.key.clone());
            let pids = f.pids();
            for pid in &pids {
                if let Some(p) = self.procs.get_mut(pid)
                    && let Err(e) = p.session.stacks_for(src, &f, now)
                {
                    tracing::warn!("pid {pid}: {e:#}");
                }
            }
            for pid in &pids {
                if let Some(p) = self.procs.get_mut(pid) {
                    p.session.adopt(&mut f);
                }
            }
            // One report, filed under the process of the first wait.
            if let Some(p) = self.procs.get(&f.tgid) {
                let uprobes = src.probes.process_uprobe_count(f.tgid);
                write_report(
                    &mut self.sink,
                    &self.metrics,
                    &self.cfg,
                    (&self.hooks, src.probes.wait_moves(), uprobes),
                    f.tgid,
                    p,
                    &f,
                );
            }
            // Each process whose rule asks for it.
            for pid in pids {
                if self
                    .procs
                    .get(&pid)
                    .is_some_and(|p| p.watch.kill_on_deadlock)
                    && !kill.contains(&pid)
                {
                    kill.push(pid);
                }
            }
        }
    }
}
