//! The wait-for graph of a process: one node per thread, one edge per
//! wait whose holder is known.

pub mod gil;
pub mod idle;
pub mod python;

use std::collections::{BTreeMap, HashMap};

use petgraph::{algo::tarjan_scc, graphmap::DiGraphMap};
use serde::Serialize;

pub use crate::model::classify::{self, Holder, LockKind, Target, classify};
use crate::{event::Tid, model::Process};

/// A thread's current wait, classified.
#[derive(Clone, Debug, Serialize)]
pub struct WaitNode {
    pub tid: Tid,
    pub target: Target,
    pub uaddr: u64,
    pub op: u32,
    pub start_ns: u64,
    /// The wait began before observation (seen in a /proc snapshot).
    pub before_observation: bool,
}

#[derive(Debug, Default)]
pub struct WaitForGraph {
    /// Every waiting thread, by TID.
    pub waits: BTreeMap<Tid, WaitNode>,
    graph: DiGraphMap<Tid, ()>,
}

impl WaitForGraph {
    pub fn build(p: &Process) -> WaitForGraph {
        let mut g = WaitForGraph::default();
        for t in p.live_threads() {
            let Some(w) = &t.wait else { continue };
            let mut target = classify(w, p);
            if let Some(view) = &p.python {
                target = python::refine(view, p, t.tid, w, target);
            }
            // Semaphores and Python Locks have no owner: the deep tier's
            // "holder" is the last thread that took one. A thread waiting on
            // one it took itself waits for another's release (Condition.wait
            // parks so on its waiter lock), unless its own `with` holds it.
            if target.holder == Holder::Thread(t.tid)
                && matches!(
                    target.kind,
                    LockKind::Semaphore | LockKind::PyLock | LockKind::Lock | LockKind::Unknown
                )
                && p.python.as_ref().and_then(|v| v.holder(target.lock)) != Some(t.tid)
            {
                target.holder = Holder::Unknown;
            }
            if let Holder::Thread(h) = target.holder {
                g.graph.add_edge(t.tid, h, ());
            }
            g.waits.insert(
                t.tid,
                WaitNode {
                    tid: t.tid,
                    target,
                    uaddr: w.uaddr,
                    op: w.op,
                    start_ns: w.start_ns,
                    before_observation: w.origin == crate::event::WaitOrigin::Snapshot,
                },
            );
        }
        g
    }

    /// Every cycle (a strongly connected set of waiting threads, or a thread
    /// waiting for itself), as the list of waits in edge order.
    pub fn cycles(&self) -> Vec<Vec<&WaitNode>> {
        let mut out = Vec::new();
        for scc in tarjan_scc(&self.graph) {
            let self_loop = scc.len() == 1 && self.graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            // Walk the edges from the smallest TID so the order is stable.
            let start = *scc.iter().min().unwrap();
            let mut cycle = Vec::new();
            let mut cur = start;
            let mut seen: HashMap<Tid, ()> = HashMap::new();
            while seen.insert(cur, ()).is_none() {
                let Some(w) = self.waits.get(&cur) else { break };
                cycle.push(w);
                let Holder::Thread(next) = w.target.holder else {
                    break;
                };
                if !scc.contains(&next) {
                    break;
                }
                cur = next;
            }
            out.push(cycle);
        }
        out
    }

    /// The threads held up by `tid`: they join it, or wait for a lock it
    /// holds. Owner-less primitives (condvars, semaphores, unknown futex
    /// words) name no one a waiter waits for: the deep tier's "holder" of a
    /// semaphore is only the last thread that took it.
    pub fn waiters_of(&self, tid: Tid) -> Vec<Tid> {
        self.waits
            .values()
            .filter(|w| {
                w.tid != tid
                    && w.target.holder == Holder::Thread(tid)
                    && !matches!(
                        w.target.kind,
                        LockKind::Condvar | LockKind::Semaphore | LockKind::Unknown
                    )
            })
            .map(|w| w.tid)
            .collect()
    }

    /// The chain of waits starting at `tid` (stops at a repeat or a thread
    /// that is not waiting for another thread).
    pub fn chain(&self, tid: Tid) -> Vec<&WaitNode> {
        let mut out = Vec::new();
        let mut cur = tid;
        while let Some(w) = self.waits.get(&cur) {
            if out.iter().any(|x: &&WaitNode| x.tid == cur) {
                break;
            }
            out.push(w);
            match w.target.holder {
                Holder::Thread(n) => cur = n,
                _ => break,
            }
        }
        out
    }
}
