//! A waiter on a lock whose recorded owner is not a live thread of the
//! process: the owner exited holding it, or the lock was inherited across
//! fork from another process's thread. Nobody will ever unlock it.

use super::{Ctx, Detail, Detector, Finding, FindingKind};
use crate::graph::Holder;

pub struct OrphanedLock;

impl Detector for OrphanedLock {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let mut out = Vec::new();
        for w in cx.graph.waits.values() {
            let Holder::Gone(owner) = w.target.holder else {
                continue;
            };
            if !w.target.kind.has_owner() {
                continue;
            }
            let lock = cx.lock(w.target.kind, w.target.lock);
            let exited = cx
                .process
                .threads
                .iter()
                .rev()
                .find(|t| t.tid == owner && t.exit_ns.is_some());
            let owner_exited = exited.map(|t| t.name().to_string());
            let t = cx.thread(w.tid);
            out.push(Finding {
                kind: FindingKind::OrphanedLock,
                tgid: cx.process.tgid,
                detected_ns: cx.now_ns,
                detail: Detail::OrphanedLock {
                    owner,
                    owner_exited,
                },
                threads: vec![t],
                locks: vec![lock],
                cycle: Vec::new(),
                tasks: Vec::new(),
                key: format!(
                    "orphan:{}:{}:{:x}:{}",
                    cx.process.tgid, w.tid, w.target.lock, owner
                ),
            });
        }
        out
    }
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    let (tid, tname) = first(f);
    match &f.detail {
        Detail::OrphanedLock {
            owner,
            owner_exited,
        } => {
            let why = match owner_exited {
                Some(n) => format!("owner thread {owner} \"{}\" exited holding it", escape(n)),
                None => format!(
                    "owner thread {owner} is not a thread of this process (exited before observation, or the lock was inherited across fork)"
                ),
            };
            format!(
                "thread {tid} \"{tname}\" waits for {}: {why}",
                first_lock(f)
            )
        }
        _ => String::new(),
    }
}
