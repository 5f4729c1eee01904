//! Findings: one trait, one module per kind. Detectors read the model and
//! its wait-for graph (pure: no root, replayable) and say what is wrong.

mod await_cycle;
mod deadlock;
mod event_loop_blocked;
mod exit_holding_lock;
mod lock_order;
mod long_wait;
mod orphaned_lock;
mod pi_deadlock;
mod stuck_thread;
mod thread_churn;
mod thread_leak;
mod unjoined_thread;

use std::collections::HashSet;

use serde::Serialize;

pub use await_cycle::TaskInfo;

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
    StuckThread,
    UnjoinedThread,
    ThreadLeak,
    ThreadChurn,
    LockOrderInversion,
    ExitHoldingLock,
    EventLoopBlocked,
}

impl FindingKind {
    /// The target will never make progress on its own.
    pub fn is_hang(self) -> bool {
        matches!(
            self,
            FindingKind::Deadlock | FindingKind::PiDeadlock | FindingKind::OrphanedLock
        )
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
    /// What it is blocked in, when known beyond a futex ("syscall read").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_in: Option<String>,
    /// Where it was created (the pthread_create call), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Its creation stack (site first), for findings about thread lifecycle.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub creation_stack: Vec<String>,
    /// Native stack at detection (innermost first), and the Python stack
    /// for CPython threads.
    pub frames: Vec<crate::symbol::Frame>,
    pub python_frames: Vec<crate::symbol::PyFrame>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub owns_gil: bool,
    /// CPython: the lock it waits for, the locks it holds, a join, a label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<crate::python::PyThreadInfo>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Edge {
    pub waiter_tid: Tid,
    pub holder_tid: Tid,
    pub lock: LockInfo,
    /// Lock-order inversions: the lock held when `lock` was taken, where,
    /// and the stack it was first seen with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<LockInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<crate::symbol::Frame>,
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
    /// asyncio findings: the tasks, in cycle order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskInfo>,
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
    pub limits: &'a Limits,
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
        let t = self.process.threads.iter().rev().find(|t| t.tid == tid);
        ThreadInfo {
            tid,
            name: self.name(tid),
            waits_for: w.map(|w| self.lock(w.target.kind, w.target.lock)),
            waited_ns: w.map(|w| self.now_ns.saturating_sub(w.start_ns)),
            waited_since_before_observation: w.is_some_and(|w| w.before_observation),
            blocked_in: None,
            created_at: t.and_then(|t| self.site(t.create_site)),
            creation_stack: Vec::new(),
            frames: t
                .and_then(|t| t.stack.as_ref())
                .map(|s| s.frames.clone())
                .unwrap_or_default(),
            python_frames: t
                .and_then(|t| t.stack.as_ref())
                .map(|s| s.python.clone())
                .filter(|f| !f.is_empty())
                .or_else(|| Some(self.process.python.as_ref()?.thread(tid)?.frames.clone()))
                .unwrap_or_default(),
            python: self.process.python.as_ref().and_then(|v| v.info(tid)),
            owns_gil: t.and_then(|t| t.stack.as_ref()).is_some_and(|s| s.owns_gil),
        }
    }

    /// The thread is joining another (pthread_join, or Python's
    /// `Thread.join`, which waits on the joined thread's lock): normal
    /// while that thread works.
    pub fn joining(&self, tid: Tid) -> bool {
        if self
            .graph
            .waits
            .get(&tid)
            .is_some_and(|w| w.target.kind == LockKind::Join)
        {
            return true;
        }
        let t = self.process.thread(tid);
        let py = t
            .and_then(|t| t.stack.as_ref())
            .and_then(|s| s.python.first());
        py.is_some_and(|f| {
            f.function.ends_with("_wait_for_tstate_lock") || f.function.ends_with("Thread.join")
        })
    }

    /// `ft` with the creation stack of `t`, symbolized while the process was alive.
    pub fn with_creation_stack(&self, mut ft: ThreadInfo, t: &crate::model::Thread) -> ThreadInfo {
        if let Some(st) = t
            .create_stack
            .and_then(|i| self.process.create_stacks.get(i))
        {
            ft.creation_stack = st.iter().filter_map(|&a| self.site(a)).collect();
        }
        ft
    }

    /// A creation site, as symbolized while the process was alive.
    pub fn site(&self, addr: u64) -> Option<String> {
        (addr != 0).then(|| {
            self.model
                .code_symbols
                .get(&(self.process.tgid, addr))
                .cloned()
                .unwrap_or_else(|| format!("{addr:#x}"))
        })
    }

    pub fn edge(&self, w: &WaitNode, holder: Tid) -> Edge {
        Edge {
            waiter_tid: w.tid,
            holder_tid: holder,
            lock: self.lock(w.target.kind, w.target.lock),
            held: None,
            site: None,
            frames: Vec::new(),
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
    /// Findings that can only be judged when observation ends.
    fn at_end(&self, _cx: &Ctx) -> Vec<Finding> {
        Vec::new()
    }
}

/// Thresholds of the lifecycle findings.
#[derive(Clone, Debug)]
pub struct Limits {
    pub long_wait_ns: u64,
    /// A thread that has not run this long while others did is stuck.
    pub stuck_ns: u64,
    /// Thread creations per second that count as churn.
    pub churn_per_s: u64,
    /// An event loop out of its selector this long is blocked.
    pub loop_blocked_ns: u64,
}

impl Limits {
    pub fn new(long_wait_ns: u64) -> Limits {
        Limits {
            long_wait_ns,
            stuck_ns: 10_000_000_000,
            churn_per_s: 200,
            loop_blocked_ns: 100_000_000,
        }
    }
}

/// Runs every detector and remembers what was reported.
pub struct Engine {
    detectors: Vec<Box<dyn Detector>>,
    reported: HashSet<String>,
    covered: HashSet<(u32, Tid)>,
    pub findings: Vec<Finding>,
    pub limits: Limits,
}

impl Engine {
    pub fn new(limits: Limits) -> Engine {
        Engine {
            // Order matters: stuck_thread and long_wait report only threads
            // no earlier finding explains.
            detectors: vec![
                Box::new(deadlock::Deadlock),
                Box::new(pi_deadlock::PiDeadlock),
                Box::new(orphaned_lock::OrphanedLock),
                Box::new(stuck_thread::StuckThread),
                Box::new(long_wait::LongWait),
                Box::new(thread_leak::ThreadLeak),
                Box::new(thread_churn::ThreadChurn),
                Box::new(unjoined_thread::UnjoinedThread),
                Box::new(lock_order::LockOrder),
                Box::new(exit_holding_lock::ExitHoldingLock),
                Box::new(await_cycle::AwaitCycle),
                Box::new(event_loop_blocked::EventLoopBlocked),
            ],
            reported: HashSet::new(),
            covered: HashSet::new(),
            findings: Vec::new(),
            limits,
        }
    }

    /// Candidate findings not reported yet (nothing is recorded).
    pub fn candidates(&self, model: &Model, now_ns: u64) -> Vec<Finding> {
        self.run(model, now_ns, false)
    }

    /// Detect, accept and also judge what needs the end of observation.
    pub fn finish(&mut self, model: &Model, now_ns: u64) -> Vec<Finding> {
        let c = self.run(model, now_ns, true);
        self.accept(c)
    }

    fn run(&self, model: &Model, now_ns: u64, end: bool) -> Vec<Finding> {
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
                    long_wait_ns: self.limits.long_wait_ns,
                    limits: &self.limits,
                    covered: &covered,
                };
                let mut found = d.check(&cx);
                if end {
                    found.extend(d.at_end(&cx));
                }
                let new: Vec<Finding> = found
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
