//! Pool starvation: every worker of a ThreadPoolExecutor waits for a future
//! whose work item is queued behind it in the same pool. No worker is left
//! to take those items, so none of them ever finishes, though no lock is
//! involved and the wait-for graph has no cycle (the queued items have no
//! holder).

use serde::Serialize;

use super::{Ctx, Detail, Detector, Finding, FindingKind};
use crate::{
    event::Tid,
    graph::{Holder, LockKind},
    vocab::python::FutureSource,
};

/// The pool a starvation finding is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StarvedPool {
    /// Its `thread_name_prefix`, else its address (data, not escaped).
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executor: Option<u64>,
    /// Its work queue.
    pub queue: u64,
    pub workers: Vec<Tid>,
    /// Qualnames of the queued callables the workers wait for, in worker
    /// order ("?" when not read).
    pub waited: Vec<String>,
    /// Every callable queued in the pool, oldest first.
    pub queued: Vec<String>,
}

pub struct PoolStarvation;

impl Detector for PoolStarvation {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let Some(v) = cx
            .process
            .python
            .as_ref()
            .filter(|v| v.unsupported.is_none())
        else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for pool in &v.pools {
            // A worker whose stack was not read would be missed: every
            // thread the executor started must be seen.
            if pool.started.is_some_and(|n| pool.workers.len() < n) {
                continue;
            }
            // Each worker alive, in a futex wait, for an item queued here.
            let waited: Option<Vec<(u64, Option<String>)>> = pool
                .workers
                .iter()
                .map(|&w| {
                    cx.process.thread(w).filter(|t| t.alive())?;
                    cx.graph.waits.get(&w)?;
                    let f = v.thread(w)?.future.as_ref().filter(|f| !f.timeout)?;
                    match &f.source {
                        Some(FutureSource::Pool {
                            pool: p,
                            callable,
                            queued: true,
                        }) if *p == pool.queue => Some((f.addr, callable.clone())),
                        _ => None,
                    }
                })
                .collect();
            let Some(waited) = waited.filter(|w| !w.is_empty()) else {
                continue;
            };
            let mut threads: Vec<_> = pool.workers.iter().map(|&w| cx.thread(w)).collect();
            // Threads waiting for the workers (a future they run, a lock
            // they hold) are held up with them.
            let mut by: Vec<Tid> = cx
                .graph
                .waits
                .values()
                .filter(|w| {
                    matches!(w.target.holder, Holder::Thread(h) if pool.workers.contains(&h))
                        && !pool.workers.contains(&w.tid)
                })
                .map(|w| w.tid)
                .collect();
            by.sort_unstable();
            threads.extend(by.iter().map(|&t| cx.thread(t)));
            let locks = waited
                .iter()
                .map(|(fut, _)| cx.lock(LockKind::Future, *fut))
                .collect();
            let mut workers = pool.workers.clone();
            workers.sort_unstable();
            out.push(Finding {
                kind: FindingKind::PoolStarvation,
                tgid: cx.process.tgid,
                detected_ns: cx.now_ns,
                detail: Detail::PoolStarvation(StarvedPool {
                    name: pool.label(),
                    executor: pool.executor,
                    queue: pool.queue,
                    workers: pool.workers.clone(),
                    waited: waited
                        .into_iter()
                        .map(|(_, c)| c.unwrap_or_else(|| "?".into()))
                        .collect(),
                    queued: pool
                        .queued
                        .iter()
                        .map(|q| q.callable.clone().unwrap_or_else(|| "?".into()))
                        .collect(),
                }),
                threads,
                locks,
                cycle: Vec::new(),
                tasks: Vec::new(),
                key: format!("starve:{}:{:x}:{workers:?}", cx.process.tgid, pool.queue),
            });
        }
        out
    }
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    let Detail::PoolStarvation(p) = &f.detail else {
        return String::new();
    };
    let workers: Vec<String> = p
        .workers
        .iter()
        .map(|&t| format!("{t} \"{}\"", name(f, t)))
        .collect();
    let waited: Vec<String> = p.waited.iter().map(|c| escape(c)).collect();
    format!(
        "thread pool \"{}\" is starved: all {} of its workers ({}) wait for work queued behind them in the same pool ({}), which no worker is left to run",
        escape(&p.name),
        p.workers.len(),
        workers.join(", "),
        waited.join(", ")
    )
}
