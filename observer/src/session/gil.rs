//! The session's GIL accounting: finds CPython targets' GIL (on the event
//! loop, where the symbolizer lives), samples it and each Python thread's
//! futex wait on a thread of its own (so a busy event loop, e.g. while it
//! symbolizes, does not thin the samples), hands cumulative tallies to the
//! model every second, and prints `--python-top`.

use std::{
    collections::HashMap,
    io::IsTerminal,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;

use super::Session;
use crate::engine::Sink;
use crate::{
    event::{Wait, WaitOrigin},
    python::gil::{GilTally, Sampler},
    source::live::LiveSource,
};

/// Tallies go to the model this often.
const EMIT_NS: u64 = 1_000_000_000;
/// A process whose interpreter could not be read yet is tried again after this.
const RETRY_NS: u64 = 500_000_000;
/// The event loop's part (discovery, tallies, tables) runs this often.
const TICK_MS: u64 = 100;

#[derive(Default)]
struct Shared {
    sampler: Sampler,
    /// Waits that began before we attached (not in the wait table: the
    /// /proc snapshot found them).
    before: HashMap<u32, Wait>,
    stop: bool,
}

#[derive(Default)]
pub(crate) struct GilState {
    shared: Arc<Mutex<Shared>>,
    thread: Option<std::thread::JoinHandle<()>>,
    emitted_ns: u64,
    top_ns: u64,
    /// The tally each process had at the last `--python-top` table.
    top_prev: HashMap<u32, GilTally>,
}

impl Drop for GilState {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.lock() {
            s.stop = true;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<S: Sink> Session<S> {
    /// The event loop's part of GIL accounting; returns when to run it next.
    pub(crate) fn gil_tick(&mut self, src: &LiveSource) -> Result<Duration> {
        let now = crate::sys::mono_ns();
        let live: Vec<(u32, Option<u64>)> = self
            .engine
            .model
            .processes
            .values()
            .filter(|p| p.observed_to_ns.is_none() && !self.not_python.contains(&p.tgid))
            .map(|p| (p.tgid, p.exec_ns))
            .collect();
        let before: HashMap<u32, Wait> = self
            .engine
            .model
            .processes
            .values()
            .flat_map(|p| p.live_threads())
            .filter_map(|t| {
                let w = t.wait.as_ref()?;
                (w.origin == WaitOrigin::Snapshot).then(|| (t.tid, w.clone()))
            })
            .collect();
        let shared = self.gil.shared.clone();
        let wanted: Vec<u32> = {
            let mut sh = shared.lock().expect("GIL sampler lock");
            sh.before = before;
            live.into_iter()
                .filter(|&(tgid, image)| sh.sampler.wants(tgid, now, image))
                .map(|x| x.0)
                .collect()
        };
        // Finding an interpreter can take a while: not under the lock the
        // sampling thread needs.
        for tgid in wanted {
            let found = self.symbols.python_interp(tgid);
            let mut sh = shared.lock().expect("GIL sampler lock");
            match found {
                Ok(Some(i)) => sh.sampler.add(tgid, i),
                Ok(None) => sh.sampler.defer(tgid, u64::MAX),
                Err(e) => {
                    tracing::debug!("python interpreter of {tgid}: {e:#}");
                    sh.sampler.defer(tgid, now + RETRY_NS);
                }
            }
        }
        let located = !shared.lock().expect("GIL sampler lock").sampler.is_empty();
        if located && self.gil.thread.is_none() {
            self.gil.thread = start_sampling(self.gil.shared.clone(), src);
        }
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
        Ok(Duration::from_millis(TICK_MS))
    }

    /// Hands the current tallies to the model (also at the end).
    pub(crate) fn gil_emit(&mut self, now: u64) -> Result<()> {
        self.gil.emitted_ns = now;
        let mut evs = self
            .gil
            .shared
            .lock()
            .expect("GIL sampler lock")
            .sampler
            .events(now);
        self.feed(&mut evs)
    }

    /// Prints the `--python-top` table of every CPython target.
    fn python_top(&mut self, now: u64) -> Result<()> {
        self.gil_emit(now)?;
        let tty = std::io::stdout().is_terminal();
        let mut out = String::new();
        for p in self.engine.model.processes.values() {
            let Some(cur) = &p.gil else { continue };
            let prev = self.gil.top_prev.get(&p.tgid);
            out.push_str(&crate::report::gil::top(
                &self.engine.model,
                p,
                prev,
                cur,
                tty,
            ));
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

/// The sampling thread: a sample at jittered instants until stopped.
fn start_sampling(
    shared: Arc<Mutex<Shared>>,
    src: &LiveSource,
) -> Option<std::thread::JoinHandle<()>> {
    let Some(table) = src.probes.wait_table() else {
        tracing::warn!("no handle on the wait table: GIL and lock waits are not sampled");
        return None;
    };
    std::thread::Builder::new()
        .name("gil-sampler".into())
        .spawn(move || {
            loop {
                let next = {
                    let Ok(mut s) = shared.lock() else { return };
                    if s.stop {
                        return;
                    }
                    let s = &mut *s;
                    let before = &s.before;
                    s.sampler.sample(crate::sys::mono_ns(), &|tid| {
                        table.get(tid).or_else(|| before.get(&tid).cloned())
                    });
                    s.sampler.next_delay()
                };
                std::thread::sleep(next);
            }
        })
        .map_err(|e| tracing::warn!("cannot start the GIL sampler: {e}"))
        .ok()
}
