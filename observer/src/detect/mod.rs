//! Findings: one trait, one module per kind. Detectors read the model and
//! its wait-for graph (pure: no root, replayable) and say what is wrong.

mod deadlock;
mod long_wait;
mod orphaned_lock;
mod pi_deadlock;

use std::collections::HashSet;

use serde::Serialize;

use crate::{
    event::Tid,
    graph::{LockKind, WaitForGraph, WaitNode},
    model::{Model, Process},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Deadlock,
    PiDeadlock,
    OrphanedLock,
    LongWait,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Deadlock => "deadlock",
            FindingKind::PiDeadlock => "pi_deadlock",
            FindingKind::OrphanedLock => "orphaned_lock",
            FindingKind::LongWait => "long_wait",
        }
    }

    /// The target will never make progress on its own.
    pub fn is_hang(self) -> bool {
        !matches!(self, FindingKind::LongWait)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockInfo {
    pub addr: u64,
    pub addr_hex: String,
    pub kind: LockKind,
    pub symbol: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ThreadInfo {
    pub tid: Tid,
    pub name: String,
    /// What it waits for, if it is blocked.
    pub waits_for: Option<LockInfo>,
    /// How long it has waited (at detection), if known.
    pub waited_ns: Option<u64>,
    /// The wait began before observation, so `waited_ns` is a lower bound.
    pub waited_since_before_observation: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Edge {
    pub waiter_tid: Tid,
    pub holder_tid: Tid,
    pub lock: LockInfo,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub tgid: u32,
    pub detected_ns: u64,
    /// One line for people.
    pub summary: String,
    pub threads: Vec<ThreadInfo>,
    pub locks: Vec<LockInfo>,
    /// For cycles: the edges in order, each waiter waiting for the next.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cycle: Vec<Edge>,
    /// Reported once per key.
    #[serde(skip)]
    pub key: String,
}

/// What a detector sees.
pub struct Ctx<'a> {
    pub model: &'a Model,
    pub process: &'a Process,
    pub graph: &'a WaitForGraph,
    pub now_ns: u64,
    pub long_wait_ns: u64,
    /// Threads already named by an earlier finding (long_wait skips them).
    pub covered: &'a HashSet<(u32, Tid)>,
}

impl Ctx<'_> {
    pub fn lock(&self, kind: LockKind, addr: u64) -> LockInfo {
        LockInfo {
            addr,
            addr_hex: format!("{addr:#x}"),
            kind,
            symbol: self.model.symbols.get(&(self.process.tgid, addr)).cloned(),
        }
    }

    pub fn name(&self, tid: Tid) -> String {
        self.process
            .threads
            .iter()
            .rev()
            .find(|t| t.tid == tid)
            .map(|t| t.name().to_string())
            .unwrap_or_else(|| "?".into())
    }

    pub fn thread(&self, tid: Tid) -> ThreadInfo {
        let w = self.graph.waits.get(&tid);
        ThreadInfo {
            tid,
            name: self.name(tid),
            waits_for: w.map(|w| self.lock(w.target.kind, w.target.lock)),
            waited_ns: w.map(|w| self.now_ns.saturating_sub(w.start_ns)),
            waited_since_before_observation: w.is_some_and(|w| w.before_observation),
        }
    }

    pub fn edge(&self, w: &WaitNode, holder: Tid) -> Edge {
        Edge {
            waiter_tid: w.tid,
            holder_tid: holder,
            lock: self.lock(w.target.kind, w.target.lock),
        }
    }
}

/// "mutex lock_b (0x5600...)" or "condvar 0x7ff0...".
pub fn describe_lock(l: &LockInfo) -> String {
    match &l.symbol {
        Some(s) => format!(
            "{} {} ({})",
            l.kind.as_str(),
            crate::report::escape(s),
            l.addr_hex
        ),
        None => format!("{} {}", l.kind.as_str(), l.addr_hex),
    }
}

pub trait Detector {
    fn check(&self, cx: &Ctx) -> Vec<Finding>;
}

/// Runs every detector and remembers what was reported.
pub struct Engine {
    detectors: Vec<Box<dyn Detector>>,
    reported: HashSet<String>,
    covered: HashSet<(u32, Tid)>,
    pub findings: Vec<Finding>,
    pub long_wait_ns: u64,
}

impl Engine {
    pub fn new(long_wait_ns: u64) -> Engine {
        Engine {
            // Order matters: long_wait reports only waits no other finding explains.
            detectors: vec![
                Box::new(deadlock::Deadlock),
                Box::new(pi_deadlock::PiDeadlock),
                Box::new(orphaned_lock::OrphanedLock),
                Box::new(long_wait::LongWait),
            ],
            reported: HashSet::new(),
            covered: HashSet::new(),
            findings: Vec::new(),
            long_wait_ns,
        }
    }

    /// Candidate findings not reported yet (nothing is recorded).
    pub fn candidates(&self, model: &Model, now_ns: u64) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut covered = self.covered.clone();
        for p in model.processes.values() {
            let graph = WaitForGraph::build(p);
            for d in &self.detectors {
                let cx = Ctx {
                    model,
                    process: p,
                    graph: &graph,
                    now_ns,
                    long_wait_ns: self.long_wait_ns,
                    covered: &covered,
                };
                let new: Vec<Finding> = d
                    .check(&cx)
                    .into_iter()
                    .filter(|f| !self.reported.contains(&f.key))
                    .collect();
                for f in &new {
                    for t in &f.threads {
                        covered.insert((f.tgid, t.tid));
                    }
                }
                out.extend(new);
            }
        }
        out
    }

    /// Records findings as reported; returns those that are new.
    pub fn accept(&mut self, found: Vec<Finding>) -> Vec<Finding> {
        let mut new = Vec::new();
        for f in found {
            if self.reported.insert(f.key.clone()) {
                for t in &f.threads {
                    self.covered.insert((f.tgid, t.tid));
                }
                self.findings.push(f.clone());
                new.push(f);
            }
        }
        new
    }

    /// Detect and accept in one step (replay, dump).
    pub fn check(&mut self, model: &Model, now_ns: u64) -> Vec<Finding> {
        let c = self.candidates(model, now_ns);
        self.accept(c)
    }
}

#[cfg(test)]
mod tests;
