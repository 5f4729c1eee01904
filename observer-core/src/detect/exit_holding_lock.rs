//! A thread exited while holding locks (deep tier): whoever needs them next
//! waits forever, unless they are robust mutexes. Threads killed by the
//! process's own exit are not counted.

use super::{Ctx, Detail, Detector, Finding, FindingKind, HeldAtExit};
use crate::{event::AcqKind, graph::LockKind};

pub struct ExitHoldingLock;

impl Detector for ExitHoldingLock {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let p = cx.process;
        let mut out = Vec::new();
        for (tid, ts, locks) in &p.exit_held {
            if locks.is_empty() {
                continue;
            }
            let t = p.threads.iter().rev().find(|t| t.tid == *tid);
            if t.is_some_and(|t| t.ended_by_group_exit) {
                continue;
            }
            let infos: Vec<_> = locks
                .iter()
                .map(|l| {
                    let k = match l.kind {
                        AcqKind::RwRead | AcqKind::RwWrite => LockKind::Rwlock,
                        AcqKind::Semaphore => LockKind::Semaphore,
                        AcqKind::PyLock => LockKind::PyLock,
                        _ => LockKind::Mutex,
                    };
                    cx.lock(k, l.lock)
                })
                .collect();
            let held: Vec<HeldAtExit> = locks
                .iter()
                .map(|l| HeldAtExit {
                    held_ns: ts.saturating_sub(l.acquired_ns),
                    site: cx.site(l.site),
                })
                .collect();
            let mut info = cx.thread(*tid);
            info.waits_for = None;
            out.push(Finding {
                kind: FindingKind::ExitHoldingLock,
                tgid: p.tgid,
                detected_ns: cx.now_ns,
                detail: Detail::ExitHoldingLock { held },
                threads: vec![info],
                locks: infos,
                cycle: Vec::new(),
                tasks: Vec::new(),
                key: format!("exitheld:{}:{tid}:{ts}", p.tgid),
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
        Detail::ExitHoldingLock { held } => {
            let v: Vec<String> = f
                .locks
                .iter()
                .zip(held)
                .map(|(l, h)| {
                    format!(
                        "{} (held {}, taken at {})",
                        describe_lock(l),
                        dur(h.held_ns),
                        h.site.as_deref().map(escape).unwrap_or_else(|| "?".into())
                    )
                })
                .collect();
            format!(
                "thread {tid} \"{tname}\" exited holding {} lock(s): {}",
                f.locks.len(),
                v.join(", ")
            )
        }
        _ => String::new(),
    }
}
