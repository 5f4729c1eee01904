//! The session's GIL sampler: finds CPython targets' GIL, samples it and
//! each Python thread's futex wait at jittered instants, hands cumulative
//! tallies to the model every second, and prints `--python-top`.

use std::{collections::HashMap, io::IsTerminal, time::Duration};

use anyhow::Result;

use super::Session;
use crate::{
    event::{Wait, WaitOrigin},
    probe::decode,
    python::gil::{GilTally, Sampler},
    source::{live::LiveSource, procfs},
};

/// Tallies go to the model this often.
const EMIT_NS: u64 = 1_000_000_000;
/// A process whose interpreter could not be read yet is tried again after this.
const RETRY_NS: u64 = 500_000_000;
/// Without a GIL to sample, look for new CPython targets this often.
const IDLE_MS: u64 = 250;

#[derive(Default)]
pub(crate) struct GilState {
    sampler: Sampler,
    emitted_ns: u64,
    top_ns: u64,
    /// The tally each process had at the last `--python-top` table.
    top_prev: HashMap<u32, GilTally>,
}

impl Session {
    /// One GIL sample; returns when to sample next.
    pub(crate) fn gil_tick(&mut self, src: &LiveSource) -> Result<Duration> {
        let now = procfs::mono_ns();
        let live: Vec<(u32, Option<u64>)> = self
            .model
            .processes
            .values()
            .filter(|p| p.observed_to_ns.is_none() && !self.not_python.contains(&p.tgid))
            .map(|p| (p.tgid, p.exec_ns))
            .collect();
        for (tgid, image) in live {
            if !self.gil.sampler.wants(tgid, now, image) {
                continue;
            }
            match self.symbols.python_interp(tgid) {
                Ok(Some(i)) => self.gil.sampler.add(tgid, i),
                Ok(None) => self.gil.sampler.defer(tgid, u64::MAX),
                Err(e) => {
                    tracing::debug!("python interpreter of {tgid}: {e:#}");
                    self.gil.sampler.defer(tgid, now + RETRY_NS);
                }
            }
        }
        // Waits that began before we attached are not in the wait table:
        // the /proc snapshot found them.
        let before: HashMap<u32, Wait> = self
            .model
            .processes
            .values()
            .flat_map(|p| p.live_threads())
            .filter_map(|t| {
                let w = t.wait.as_ref()?;
                (w.origin == WaitOrigin::Snapshot).then(|| (t.tid, w.clone()))
            })
            .collect();
        let probes = &src.probes;
        self.gil.sampler.sample(now, &|tid| {
            probes
                .wait(tid)
                .map(|w| decode::wait_from_raw(&w, WaitOrigin::Kernel))
                .or_else(|| before.get(&tid).cloned())
        });
        if now.saturating_sub(self.gil.emitted_ns) >= EMIT_NS {
            self.gil_emit(now)?;
        }
        if let Some(every) = self.opts.python_top
            && now.saturating_sub(self.gil.top_ns) >= (every * 1e9) as u64
        {
            if self.gil.top_ns != 0 {
                self.python_top(now)?;
            }
            self.gil.top_ns = now;
        }
        Ok(if self.gil.sampler.is_empty() {
            Duration::from_millis(IDLE_MS)
        } else {
            self.gil.sampler.next_delay()
        })
    }

    /// Hands the current tallies to the model (also at the end).
    pub(crate) fn gil_emit(&mut self, now: u64) -> Result<()> {
        self.gil.emitted_ns = now;
        let mut evs = self.gil.sampler.events(now);
        self.feed(&mut evs)
    }

    /// Prints the `--python-top` table of every CPython target.
    fn python_top(&mut self, now: u64) -> Result<()> {
        self.gil_emit(now)?;
        let tty = std::io::stdout().is_terminal();
        let mut out = String::new();
        for p in self.model.processes.values() {
            let Some(cur) = &p.gil else { continue };
            let prev = self.gil.top_prev.get(&p.tgid);
            out.push_str(&crate::report::gil::top(&self.model, p, prev, cur, tty));
            self.gil.top_prev.insert(p.tgid, cur.clone());
        }
        if !out.is_empty() {
            if tty {
                // Like top: the table replaces the last one.
                print!("\x1b[H\x1b[2J");
            }
            println!("{out}");
        }
        Ok(())
    }
}
