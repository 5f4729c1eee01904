//! A deadlock across processes: the wait-for graph over every observed
//! process, where a lock in shared memory whose word names a thread of
//! another process is an edge to that thread (model/shared.rs). Cycles
//! within one process are deadlock.rs's.
//!
//! The processes may sit in one model (`run --follow-forks`) or each in its
//! own (the daemon's sessions): the graph spans every `View` given.

use std::collections::{BTreeMap, HashMap, HashSet};

use petgraph::{algo::tarjan_scc, graphmap::DiGraphMap};
use serde::Serialize;

use super::{Ctx, Detail, Edge, Finding, FindingKind, Limits};
use crate::{
    event::Tid,
    graph::{Holder, LockKind, WaitForGraph, WaitNode},
    model::{Model, Process, shared::FutexKey},
};

/// A process a finding names.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: Option<String>,
    pub exe: Option<String>,
}

/// One model and the wait-for graphs of its processes.
pub(super) struct View<'a> {
    pub model: &'a Model,
    pub graphs: &'a BTreeMap<u32, WaitForGraph>,
}

/// One wait of the global graph: the view and process of the waiter, its
/// wait, and the thread it waits for.
struct Hop<'a> {
    view: usize,
    tgid: u32,
    wait: &'a WaitNode,
    holder: Tid,
    /// The lock as the holder's process has it, at another address.
    holder_lock: Option<u64>,
}

/// Whether `owner`, named by a word in memory `p` shares, is a live thread
/// of another process, in `p`'s own model or in another view.
fn shared_owner(views: &[View], me: usize, p: &Process, w: &WaitNode, owner: Tid) -> bool {
    if let Some(f) = views[me].model.foreign_owner(p, w.target.lock, w.op, owner) {
        return f.shared;
    }
    p.shareable(w.target.lock, w.op)
        && !p.thread(owner).is_some_and(|t| t.alive())
        && views.iter().enumerate().any(|(i, v)| {
            i != me
                && v.model
                    .live_thread(owner)
                    .is_some_and(|(q, _)| q.tgid != p.tgid)
        })
}

pub(super) fn check(
    views: &[View],
    now_ns: u64,
    limits: &Limits,
    covered: &HashSet<(u32, Tid)>,
) -> Vec<Finding> {
    let mut hops: HashMap<Tid, Hop> = HashMap::new();
    let mut g: DiGraphMap<Tid, ()> = DiGraphMap::new();
    for (i, v) in views.iter().enumerate() {
        for (&tgid, graph) in v.graphs {
            let Some(p) = v.model.process(tgid) else {
                continue;
            };
            for w in graph.waits.values() {
                let mut holder_lock = None;
                let holder = match w.target.holder {
                    Holder::Thread(h) => h,
                    Holder::Gone(o)
                        if w.target.kind.has_owner() && shared_owner(views, i, p, w, o) =>
                    {
                        o
                    }
                    // A multiprocessing lock no thread of `p` holds: the
                    // process whose view holds its semaphore.
                    Holder::Unknown if w.target.kind == LockKind::MpLock => {
                        match views
                            .iter()
                            .find_map(|v| v.model.mp_holder(p, w.uaddr, w.op))
                        {
                            Some((_, h, l)) => {
                                holder_lock = (l != w.target.lock).then_some(l);
                                h
                            }
                            None => continue,
                        }
                    }
                    _ => continue,
                };
                g.add_edge(w.tid, holder, ());
                hops.insert(
                    w.tid,
                    Hop {
                        view: i,
                        tgid,
                        wait: w,
                        holder,
                        holder_lock,
                    },
                );
            }
        }
    }
    let mut out = Vec::new();
    for scc in tarjan_scc(&g) {
        let procs: HashSet<u32> = scc
            .iter()
            .filter_map(|t| hops.get(t).map(|h| h.tgid))
            .collect();
        if scc.len() < 2 || procs.len() < 2 {
            continue;
        }
        let start = *scc.iter().min().expect("non-empty");
        let mut cycle: Vec<&Hop> = Vec::new();
        let mut cur = start;
        while let Some(h) = hops.get(&cur) {
            if cycle.iter().any(|x| x.wait.tid == cur) || !scc.contains(&cur) {
                break;
            }
            cycle.push(h);
            cur = h.holder;
        }
        if let Some(f) = finding(views, &cycle, now_ns, limits, covered) {
            out.push(f);
        }
    }
    out
}

fn finding(
    views: &[View],
    cycle: &[&Hop],
    now_ns: u64,
    limits: &Limits,
    covered: &HashSet<(u32, Tid)>,
) -> Option<Finding> {
    let mut threads = Vec::new();
    let mut edges = Vec::new();
    let mut objects = Vec::new();
    let mut processes: Vec<ProcessInfo> = Vec::new();
    let mut key_parts = Vec::new();
    let mut owners: HashMap<FutexKey, Tid> = HashMap::new();
    for h in cycle {
        let View { model, graphs } = views[h.view];
        let p = model.process(h.tgid)?;
        // One lock, one owner: two waits on it naming different owners are
        // views of different moments (processes are read one at a time).
        // A multiprocessing lock's word is its semaphore (the lock is the
        // SemLock object, private to each process).
        let word = if h.wait.target.kind == LockKind::MpLock {
            h.wait.uaddr
        } else {
            h.wait.target.lock
        };
        let lock = p.futex_key(word, h.wait.op);
        if *owners.entry(lock).or_insert(h.holder) != h.holder {
            return None;
        }
        let cx = Ctx {
            model,
            process: p,
            graph: &graphs[&h.tgid],
            now_ns,
            long_wait_ns: limits.long_wait_ns,
            limits,
            covered,
        };
        threads.push(cx.thread(h.wait.tid));
        let mut e = cx.edge(h.wait, h.holder);
        e.holder_lock = h.holder_lock;
        edges.push(e);
        let key = lock;
        objects.push(match key {
            FutexKey::Shared { .. } => p.object_name(key),
            FutexKey::Private { .. } => None,
        });
        key_parts.push(format!(
            "{}:{}>{}@{:x}",
            h.tgid, h.wait.tid, h.holder, h.wait.target.lock
        ));
        if !processes.iter().any(|x| x.pid == p.tgid) {
            processes.push(ProcessInfo {
                pid: p.tgid,
                comm: p.comm().map(str::to_string),
                exe: p.exe.clone(),
            });
        }
    }
    key_parts.sort();
    let mut locks: Vec<_> = edges.iter().map(|e: &Edge| e.lock.clone()).collect();
    locks.dedup();
    Some(Finding {
        kind: FindingKind::Deadlock,
        tgid: cycle.first()?.tgid,
        detected_ns: now_ns,
        detail: Detail::ProcessesDeadlock { processes, objects },
        threads,
        locks,
        cycle: edges,
        tasks: Vec::new(),
        key: format!("deadlock-across:{}", key_parts.join(",")),
    })
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    let Detail::ProcessesDeadlock { processes, .. } = &f.detail else {
        return String::new();
    };
    let names: Vec<String> = f
        .threads
        .iter()
        .map(|t| {
            let comm = processes
                .iter()
                .find(|p| p.pid == t.pid)
                .and_then(|p| p.comm.as_deref())
                .unwrap_or("?");
            format!(
                "thread {} \"{}\" of process {} \"{}\"",
                t.tid,
                escape(&t.name),
                t.pid,
                escape(comm)
            )
        })
        .collect();
    format!(
        "{} threads in {} processes wait for each other in a cycle through shared memory: {}",
        f.cycle.len(),
        processes.len(),
        names.join(" -> ")
    )
}
