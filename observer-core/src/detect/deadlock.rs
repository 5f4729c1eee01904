//! A cycle in the wait-for graph: every thread in it waits for the next.

use super::Detail;
use super::{Ctx, Detector, Finding, FindingKind};
use crate::graph::Holder;

pub struct Deadlock;

impl Detector for Deadlock {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let mut out = Vec::new();
        for cycle in cx.graph.cycles() {
            let edges: Vec<_> = cycle
                .iter()
                .filter_map(|w| match w.target.holder {
                    Holder::Thread(h) => Some(cx.edge(w, h)),
                    _ => None,
                })
                .collect();
            if edges.is_empty() {
                continue;
            }
            let mut key_parts: Vec<String> = edges
                .iter()
                .map(|e| format!("{}>{}@{:x}", e.waiter_tid, e.holder_tid, e.lock.addr))
                .collect();
            key_parts.sort();
            let threads: Vec<_> = edges.iter().map(|e| cx.thread(e.waiter_tid)).collect();
            let mut locks: Vec<_> = edges.iter().map(|e| e.lock.clone()).collect();
            locks.dedup();
            out.push(Finding {
                kind: FindingKind::Deadlock,
                tgid: cx.process.tgid,
                detected_ns: cx.now_ns,
                detail: Detail::Deadlock,
                threads,
                locks,
                cycle: edges,
                tasks: Vec::new(),
                key: format!("deadlock:{}:{}", cx.process.tgid, key_parts.join(",")),
            });
        }
        out
    }
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    match &f.detail {
        Detail::Deadlock if f.cycle.len() == 1 => {
            let e = &f.cycle[0];
            let holds = if e.lock.kind == crate::vocab::locks::LockKind::Future {
                "whose work item it runs itself"
            } else {
                "it already holds"
            };
            format!(
                "thread {} \"{}\" waits for {} {holds} (self-deadlock)",
                e.waiter_tid,
                name(f, e.waiter_tid),
                describe_lock(&e.lock)
            )
        }
        Detail::Deadlock => {
            let names: Vec<String> = f
                .threads
                .iter()
                .map(|t| format!("{} \"{}\"", t.tid, escape(&t.name)))
                .collect();
            format!(
                "{} threads wait for each other in a cycle: {}",
                f.cycle.len(),
                names.join(" -> ")
            )
        }
        _ => String::new(),
    }
}
