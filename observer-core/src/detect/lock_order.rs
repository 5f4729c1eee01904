//! Lock-order inversions (potential deadlocks, lockdep-style, deep tier):
//! an edge A -> B means B was acquired while A was held; a cycle means two
//! (or more) code paths take the same locks in opposite orders, and would
//! deadlock if they ran at the same time, even if they did not this time.
//!
//! Rules that keep it free of false positives:
//! - trylocks add no edge into the tried lock (they cannot block), and a
//!   recursive relock adds none at all (the kernel side never records them);
//! - a lock destroyed and initialised again is a new identity (address,
//!   generation), so edges of the old one do not combine with the new one;
//! - a cycle whose locks are all rwlocks taken for reading on both ends of
//!   every edge is ignored: readers do not block readers;
//! - gate locks: an edge's gate is the outermost lock held at *every*
//!   observation of the edge. If every edge of a cycle has the same gate G,
//!   the paths can only run under G, one at a time: no deadlock, no report.

use std::collections::{BTreeSet, HashMap, VecDeque};

use petgraph::{algo::tarjan_scc, graphmap::DiGraphMap};

use super::{Ctx, Detail, Detector, Edge, Finding, FindingKind, LockInfo};
use crate::{
    event::{AcqKind, EdgeId},
    graph::LockKind,
    model::LockEdgeInfo,
};

pub struct LockOrder;

type Node = (u64, u32);

fn kind_of(k: AcqKind) -> LockKind {
    match k {
        AcqKind::Mutex => LockKind::Mutex,
        AcqKind::RwRead | AcqKind::RwWrite => LockKind::Rwlock,
        AcqKind::Semaphore => LockKind::Semaphore,
        AcqKind::PyLock => LockKind::PyLock,
        AcqKind::Unknown => LockKind::Unknown,
    }
}

/// The shortest cycle through `start` inside `scc` (BFS), as nodes.
fn shortest_cycle(
    g: &DiGraphMap<Node, ()>,
    scc: &BTreeSet<Node>,
    start: Node,
) -> Option<Vec<Node>> {
    let mut prev: HashMap<Node, Node> = HashMap::new();
    let mut q = VecDeque::from([start]);
    while let Some(n) = q.pop_front() {
        for m in g.neighbors(n) {
            if !scc.contains(&m) {
                continue;
            }
            if m == start {
                let mut path = vec![n];
                let mut cur = n;
                while cur != start {
                    cur = prev[&cur];
                    path.push(cur);
                }
                path.reverse();
                return Some(path);
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(m) {
                e.insert(n);
                q.push_back(m);
            }
        }
    }
    None
}

impl Detector for LockOrder {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let p = cx.process;
        if p.lock_edges.is_empty() {
            return Vec::new();
        }
        let mut g: DiGraphMap<Node, ()> = DiGraphMap::new();
        let mut info: HashMap<(Node, Node), (&EdgeId, &LockEdgeInfo)> = HashMap::new();
        for (e, i) in &p.lock_edges {
            let (a, b) = ((e.from, e.from_gen), (e.to, e.to_gen));
            if a != b {
                g.add_edge(a, b, ());
                info.insert((a, b), (e, i));
            }
        }
        let mut cycles: Vec<Vec<Node>> = Vec::new();
        for scc in tarjan_scc(&g) {
            if scc.len() < 2 {
                continue;
            }
            let set: BTreeSet<Node> = scc.iter().copied().collect();
            let best = scc
                .iter()
                .filter_map(|&n| shortest_cycle(&g, &set, n))
                .min_by_key(|c| c.len());
            if let Some(c) = best {
                cycles.push(c);
            }
        }
        cycles.sort_by_key(|c| c.len()); // smallest cycle first
        let mut out = Vec::new();
        for c in cycles {
            let edges: Vec<(&EdgeId, &LockEdgeInfo)> = (0..c.len())
                .map(|i| info[&(c[i], c[(i + 1) % c.len()])])
                .collect();
            let readers_only = edges
                .iter()
                .all(|(_, i)| i.from_kind == AcqKind::RwRead && i.to_kind == AcqKind::RwRead);
            let gate = edges[0].1.gate;
            let gated = gate != 0 && edges.iter().all(|(_, i)| i.gate == gate);
            if readers_only || gated {
                continue;
            }
            let lock = |addr: u64, k: AcqKind| -> LockInfo { cx.lock(kind_of(k), addr) };
            let locks: Vec<LockInfo> = edges
                .iter()
                .map(|(e, i)| lock(e.from, i.from_kind))
                .collect();
            let cycle: Vec<Edge> = edges
                .iter()
                .map(|(e, i)| Edge {
                    waiter_tid: i.tid,
                    holder_tid: i.tid,
                    lock: lock(e.to, i.to_kind),
                    held: Some(lock(e.from, i.from_kind)),
                    site: cx.site(i.to_site),
                    holder_lock: None,
                    frames: i.frames.clone(),
                })
                .collect();
            let mut tids: Vec<u32> = edges.iter().map(|(_, i)| i.tid).collect();
            tids.sort();
            tids.dedup();
            let threads: Vec<_> = tids.iter().map(|&t| cx.thread(t)).collect();
            let mut key_locks: Vec<String> = c.iter().map(|(a, g)| format!("{a:x}.{g}")).collect();
            key_locks.sort();
            out.push(Finding {
                kind: FindingKind::LockOrderInversion,
                tgid: p.tgid,
                detected_ns: cx.now_ns,
                detail: Detail::LockOrderInversion,
                threads,
                locks,
                cycle,
                tasks: Vec::new(),
                key: format!("order:{}:{}", p.tgid, key_locks.join(",")),
            });
        }
        out
    }
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    match &f.detail {
        Detail::LockOrderInversion => {
            let names: Vec<String> = f.locks.iter().map(sym_or_addr).collect();
            let order: Vec<String> = f
                .cycle
                .iter()
                .map(|e| {
                    format!(
                        "{} -> {} (thread {} \"{}\" at {})",
                        e.held.as_ref().map(sym_or_addr).unwrap_or_default(),
                        sym_or_addr(&e.lock),
                        e.waiter_tid,
                        name(f, e.waiter_tid),
                        e.site.as_deref().map(escape).unwrap_or_else(|| "?".into())
                    )
                })
                .collect();
            format!(
                "locks {} are taken in an order that can deadlock: {}",
                names.join(", "),
                order.join("; ")
            )
        }
        _ => String::new(),
    }
}
