//! Findings: one trait, one module per kind. Detectors read the model and
//! its wait-for graph (pure: no root, replayable) and say what is wrong.

mod await_cycle;
mod cross_process;
mod deadlock;
mod event_loop_blocked;
mod executor_cycle;
mod exit_holding_lock;
mod lock_order;
mod long_wait;
mod orphaned_lock;
mod pi_deadlock;
mod pool_starvation;
mod process_hung;
mod stuck_thread;
mod thread_churn;
mod thread_leak;
mod unjoined_thread;
mod words;

use std::collections::HashSet;

use serde::Serialize;

pub use await_cycle::{TaskInfo, task_name, wait_line};
pub use cross_process::ProcessInfo;
pub use executor_cycle::{Hop, hop_line};
pub use orphaned_lock::Inherited;
pub use pool_starvation::StarvedPool;
pub use words::describe_lock;

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
    ProcessHung,
    PoolStarvation,
}

impl FindingKind {
    /// The target will never make progress on its own.
    pub fn is_hang(self) -> bool {
        matches!(
            self,
            FindingKind::Deadlock
                | FindingKind::PiDeadlock
                | FindingKind::OrphanedLock
                | FindingKind::PoolStarvation
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
    /// Its process (a cycle across processes names threads of several).
    pub pid: u32,
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
    /// The thread that holds what it waits for (process_hung of the hang
    /// watchdog; cycles say it in their edges).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_by: Option<Tid>,
    /// Where it was created (the pthread_create call), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Its creation stack (site first), for findings about thread lifecycle.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub creation_stack: Vec<String>,
    /// Its stack at detection, innermost first, in the order it ran: native
    /// frames and, for a CPython thread, each Python frame where the eval
    /// loop runs it (see `symbol::merge_stacks`); set with `set_stack`.
    pub frames: Vec<crate::vocab::frames::StackFrame>,
    /// The Python stack alone (CPython threads), innermost first.
    pub python_frames: Vec<crate::vocab::frames::PyFrame>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub owns_gil: bool,
    /// CPython: the lock it waits for, the locks it holds, a join, a label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<crate::vocab::python::PyThreadInfo>,
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
    /// The lock's address in the holder's process, when another (a
    /// multiprocessing lock each process unpickled on its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_lock: Option<u64>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "crate::vocab::frames::serialize_native"
    )]
    pub frames: Vec<crate::vocab::frames::Frame>,
}

/// A finding: plain data. report/ writes its text (and its one-line
/// summary, in text and JSON) from these fields and its `detail`.
#[derive(Clone, Debug)]
pub struct Finding {
    pub kind: FindingKind,
    pub tgid: u32,
    pub detected_ns: u64,
    /// What the finding says beyond its threads, locks and cycle.
    pub detail: Detail,
    pub threads: Vec<ThreadInfo>,
    pub locks: Vec<LockInfo>,
    /// For cycles: the edges in order, each waiter waiting for the next.
    pub cycle: Vec<Edge>,
    /// asyncio findings: the tasks, in cycle order.
    pub tasks: Vec<TaskInfo>,
    /// Reported once per key.
    pub key: String,
}

/// The facts of a finding that its threads, locks and cycle do not carry.
#[derive(Clone, Debug, PartialEq)]
pub enum Detail {
    /// `cycle[i].waiter_tid` waits for `cycle[i].lock`, held by the next.
    Deadlock,
    /// `parked` got EDEADLK (or, `inferred` from a snapshot, is parked on
    /// its own stack after it).
    PiDeadlock { parked: Tid, inferred: bool },
    /// `threads[0]` waits for `locks[0]`, whose owner is not a live thread:
    /// `owner_exited` names it when it was seen to exit; `inherited` when
    /// it is a thread of another process (the lock was copied at fork);
    /// no `owner`: a Python lock no thread holds, `alone`: no other thread.
    OrphanedLock {
        owner: Option<Tid>,
        owner_exited: Option<String>,
        inherited: Option<Inherited>,
        alone: bool,
    },
    /// A deadlock whose cycle spans `processes` (threads carry their pid);
    /// `objects[i]`: the shared memory `cycle[i].lock` lives in, when known.
    ProcessesDeadlock {
        processes: Vec<ProcessInfo>,
        objects: Vec<Option<String>>,
    },
    /// `threads[0]` has waited `waited_ns` for `locks[0]`; `held_up` wait
    /// for it (join it, or wait for a lock it holds); none: a lock wait.
    LongWait {
        waited_ns: u64,
        before_observation: bool,
        holder: WaitHolder,
        held_up: Vec<Tid>,
    },
    /// `threads[0]` has not run for `idle_ns`; `blocked_in` says where;
    /// `held_up` wait for it.
    StuckThread {
        idle_ns: u64,
        wchan: String,
        held_up: Vec<Tid>,
    },
    /// No thread of the process ran for `blocked_ns` (at least the window):
    /// every live thread is in a futex wait that began that long ago
    /// (`threads`); `before_observation`: some began before observation.
    /// `watchdog`: the hang watchdog (`--hang-after`) saw no thread of the
    /// watched tree run on a CPU for `blocked_ns`, whatever each waits in.
    ProcessHung {
        blocked_ns: u64,
        before_observation: bool,
        watchdog: bool,
    },
    /// `threads` exited and were never joined or detached.
    UnjoinedThread,
    /// The live thread count grew along a line.
    ThreadLeak {
        from: f64,
        to: f64,
        span_ns: u64,
        slope_per_s: f64,
        r2: f64,
        survivors: usize,
        /// (creation site, survivors from it), most first.
        sites: Vec<(String, usize)>,
    },
    /// `in_window` threads created within one second.
    ThreadChurn {
        in_window: usize,
        total: usize,
        threshold_per_s: u64,
        /// (creation site, threads from it in the window), most first.
        sites: Vec<(String, usize)>,
    },
    /// `cycle[i]`: `lock` taken while `held` was held, by `waiter_tid` at `site`.
    LockOrderInversion,
    /// `threads[0]` exited holding `locks`; `held[i]` is about `locks[i]`.
    ExitHoldingLock { held: Vec<HeldAtExit> },
    /// `tasks` await each other in a cycle (one task: it awaits itself).
    AwaitCycle,
    /// A cycle through `loop.run_in_executor`: a task awaits the worker
    /// running its callable, which waits (maybe through other threads and
    /// tasks) for that task; `hops` in order.
    ExecutorDeadlock { hops: Vec<executor_cycle::Hop> },
    /// The event loop of `threads[0]` stayed out of its selector for
    /// `blocked_ns` (`runq_ns` of it waiting for a CPU), `ongoing` if it
    /// still is; `task` ran (else a callback), at `at`, the innermost frame
    /// outside asyncio.
    EventLoopBlocked {
        blocked_ns: u64,
        runq_ns: u64,
        ongoing: bool,
        task: Option<String>,
        at: Option<crate::vocab::frames::PyFrame>,
    },
    /// Every worker of a thread pool (`threads`, first) waits for work
    /// queued behind it in the same pool (`locks`: the futures); the
    /// threads after them wait for the workers.
    PoolStarvation(StarvedPool),
}

impl Finding {
    /// Every process the finding names: its own, then those of its threads.
    pub fn pids(&self) -> Vec<u32> {
        let mut out = vec![self.tgid];
        for t in &self.threads {
            if !out.contains(&t.pid) {
                out.push(t.pid);
            }
        }
        out
    }

    /// The finding in one line (the text report's headline, the JSON
    /// report's `summary`), in the words of the detector that found it.
    pub fn summary(&self) -> String {
        match &self.detail {
            Detail::Deadlock => deadlock::describe(self),
            Detail::ProcessesDeadlock { .. } => cross_process::describe(self),
            Detail::PiDeadlock { .. } => pi_deadlock::describe(self),
            Detail::OrphanedLock { .. } => orphaned_lock::describe(self),
            Detail::LongWait { .. } => long_wait::describe(self),
            Detail::ProcessHung { .. } => process_hung::describe(self),
            Detail::StuckThread { .. } => stuck_thread::describe(self),
            Detail::UnjoinedThread => unjoined_thread::describe(self),
            Detail::ThreadLeak { .. } => thread_leak::describe(self),
            Detail::ThreadChurn { .. } => thread_churn::describe(self),
            Detail::LockOrderInversion => lock_order::describe(self),
            Detail::ExitHoldingLock { .. } => exit_holding_lock::describe(self),
            Detail::AwaitCycle => await_cycle::describe(self),
            Detail::ExecutorDeadlock { .. } => executor_cycle::describe(self),
            Detail::EventLoopBlocked { .. } => event_loop_blocked::describe(self),
            Detail::PoolStarvation(_) => pool_starvation::describe(self),
        }
    }
}

/// Who holds the lock of a long wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitHolder {
    Thread(Tid),
    Readers,
    Unknown,
}

/// A lock a thread held when it exited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldAtExit {
    pub held_ns: u64,
    /// Where it was taken.
    pub site: Option<String>,
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
        let mut info = ThreadInfo {
            tid,
            pid: self.process.tgid,
            name: self.name(tid),
            waits_for: w.map(|w| self.lock(w.target.kind, w.target.lock)),
            waited_ns: w.map(|w| self.now_ns.saturating_sub(w.start_ns)),
            waited_since_before_observation: w.is_some_and(|w| w.before_observation),
            blocked_in: None,
            held_by: None,
            created_at: t.and_then(|t| self.site(t.create_site)),
            creation_stack: Vec::new(),
            frames: Vec::new(),
            python_frames: Vec::new(),
            python: None,
            owns_gil: false,
        };
        fill_thread(self.process, &mut info);
        info
    }

    /// The thread is joining another (pthread_join, or Python's
    /// `Thread.join`, which waits on the joined thread's lock), or waits
    /// for a future another thread runs: normal while that thread works.
    pub fn joining(&self, tid: Tid) -> bool {
        if self
            .graph
            .waits
            .get(&tid)
            .is_some_and(|w| w.target.kind.for_work())
        {
            return true;
        }
        // The Python stack taken for this wait, else the interpreter's view
        // (read before judging; the stack is taken after).
        let t = self.process.thread(tid);
        let since = t.and_then(|t| t.wait.as_ref()).map_or(0, |w| w.start_ns);
        let py = t
            .and_then(|t| t.stack.as_ref())
            .filter(|s| s.ts_ns >= since && !s.python.is_empty())
            .and_then(|s| s.python.first())
            .or_else(|| self.process.python.as_ref()?.thread(tid)?.frames.first())
            .or_else(|| t?.stack.as_ref()?.python.first());
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
            holder_lock: None,
            frames: Vec::new(),
        }
    }
}

/// A lock as a plain label (data, not escaped): "mutex lock_b (0x5600...)".
pub fn plain_lock(l: &LockInfo) -> String {
    match &l.symbol {
        Some(s) => format!("{} {s} ({})", l.kind.as_str(), l.addr_hex),
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

impl ThreadInfo {
    /// Its stacks: `native` and `python` (innermost first) merged into
    /// `frames`; `entries` as `symbol::merge_stacks` takes them.
    pub fn set_stack(
        &mut self,
        native: &[crate::vocab::frames::Frame],
        python: Vec<crate::vocab::frames::PyFrame>,
        entries: &[bool],
    ) {
        self.frames = crate::vocab::frames::merge(native, &python, entries);
        self.python_frames = python;
    }
}

/// The thread's details that change after it is judged (its name, the
/// stacks taken for the finding), as the model has them.
fn fill_thread(p: &Process, info: &mut ThreadInfo) {
    let t = p.threads.iter().rev().find(|t| t.tid == info.tid);
    if let Some(t) = t {
        info.name = t.name().to_string();
    }
    let stack = t.and_then(|t| t.stack.as_ref());
    let native = stack.map(|s| s.frames.as_slice()).unwrap_or_default();
    match stack.filter(|s| !s.python.is_empty()) {
        Some(s) => info.set_stack(native, s.python.clone(), &s.python_entry),
        None => {
            let py = p
                .python
                .as_ref()
                .and_then(|v| v.thread(info.tid))
                .map(|t| t.frames.clone())
                .unwrap_or_default();
            info.set_stack(native, py, &[]);
        }
    }
    info.python = p.python.as_ref().and_then(|v| v.info(info.tid));
    info.owns_gil = stack.is_some_and(|s| s.owns_gil);
}

/// Fills `f`'s threads from the model as it is now.
pub fn refresh_threads(model: &Model, f: &mut Finding) {
    // A blocked loop's stack is the one read while it was blocked.
    let then = matches!(f.detail, Detail::EventLoopBlocked { .. });
    for t in &mut f.threads {
        if let Some(p) = model.process(t.pid) {
            let py = then.then(|| std::mem::take(&mut t.python_frames));
            fill_thread(p, t);
            if let Some(py) = py {
                // (its native stack now is not the one it was blocked in)
                t.set_stack(&[], py, &[]);
            }
        }
    }
}

/// Runs every detector and remembers what was reported.
pub struct Detectors {
    detectors: Vec<Box<dyn Detector>>,
    reported: HashSet<String>,
    covered: HashSet<(u32, Tid)>,
    pub findings: Vec<Finding>,
    pub limits: Limits,
}

impl Detectors {
    pub fn new(limits: Limits) -> Detectors {
        Detectors {
            // Order matters: stuck_thread and long_wait report only threads
            // no earlier finding explains.
            detectors: vec![
                Box::new(deadlock::Deadlock),
                Box::new(executor_cycle::ExecutorCycle),
                Box::new(pi_deadlock::PiDeadlock),
                Box::new(orphaned_lock::OrphanedLock),
                Box::new(pool_starvation::PoolStarvation),
                Box::new(stuck_thread::StuckThread),
                Box::new(long_wait::LongWait),
                // Last of the waits: only a process no finding explains.
                Box::new(process_hung::ProcessHung),
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

    /// Candidates, with what needs the end of observation.
    pub fn candidates_at_end(&self, model: &Model, now_ns: u64) -> Vec<Finding> {
        self.run(model, now_ns, true)
    }
    fn run(&self, model: &Model, now_ns: u64, end: bool) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut covered = self.covered.clone();
        let graphs: std::collections::BTreeMap<u32, WaitForGraph> = model
            .processes
            .values()
            .map(|p| (p.tgid, WaitForGraph::build(p)))
            .collect();
        // Cycles across processes first: their threads are no one's long wait.
        let view = cross_process::View {
            model,
            graphs: &graphs,
        };
        let across = cross_process::check(&[view], now_ns, &self.limits, &covered);
        for f in across
            .into_iter()
            .filter(|f| !self.reported.contains(&f.key))
        {
            for t in &f.threads {
                covered.insert((t.pid, t.tid));
            }
            out.push(f);
        }
        for p in model.processes.values() {
            let graph = &graphs[&p.tgid];
            for d in &self.detectors {
                let cx = Ctx {
                    model,
                    process: p,
                    graph,
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
                        covered.insert((t.pid, t.tid));
                    }
                }
                out.extend(new);
            }
        }
        out
    }

    /// Cycles through shared memory between processes each observed in a
    /// model of its own (the daemon's sessions): what `run --follow-forks`
    /// finds in its one model. Nothing is recorded.
    pub fn across_models(models: &[&Model], now_ns: u64, limits: &Limits) -> Vec<Finding> {
        let graphs: Vec<std::collections::BTreeMap<u32, WaitForGraph>> = models
            .iter()
            .map(|m| {
                m.processes
                    .values()
                    .map(|p| (p.tgid, WaitForGraph::build(p)))
                    .collect()
            })
            .collect();
        let views: Vec<cross_process::View> = models
            .iter()
            .zip(&graphs)
            .map(|(&model, graphs)| cross_process::View { model, graphs })
            .collect();
        cross_process::check(&views, now_ns, limits, &HashSet::new())
    }

    /// Records findings as reported; returns those that are new.
    pub fn accept(&mut self, found: Vec<Finding>) -> Vec<Finding> {
        let mut new = Vec::new();
        for f in found {
            if self.reported.insert(f.key.clone()) {
                for t in &f.threads {
                    self.covered.insert((t.pid, t.tid));
                }
                self.findings.push(f.clone());
                new.push(f);
            }
        }
        new
    }
}

#[cfg(test)]
mod across_tests;
#[cfg(test)]
mod tests;
