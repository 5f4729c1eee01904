//! A wait longer than the threshold that no other finding explains and
//! that matters: a lock wait (contention, a lock held too long), or a wait
//! that holds someone up (a lost wakeup or a semaphore nobody posts, whose
//! waiter another thread joins). A worker waiting for work that nobody
//! waits for is idle, not a finding (graph/idle.rs).

use super::{Ctx, Detail, Detector, Finding, FindingKind, WaitHolder};
use crate::graph::{
    Holder,
    idle::{Standing, standing},
};

pub struct LongWait;

impl Detector for LongWait {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let mut out: Vec<Finding> = Vec::new();
        for w in cx.graph.waits.values() {
            let age = cx.now_ns.saturating_sub(w.start_ns);
            // A thread an earlier finding names (here too: the holder, or
            // the thread held up) is told there.
            if age < cx.long_wait_ns
                || cx.covered.contains(&(cx.process.tgid, w.tid))
                || out.iter().any(|f| f.threads.iter().any(|t| t.tid == w.tid))
            {
                continue;
            }
            // Joining a thread that is still working is normal; if that
            // thread is stuck, its own wait is the finding.
            if cx.joining(w.tid) {
                continue;
            }
            let held_up = match standing(cx.model, cx.process, cx.graph, w.tid) {
                Some(Standing::HeldUp(by)) => by,
                Some(Standing::LockWait) => Vec::new(),
                _ => continue,
            };
            let lock = cx.lock(w.target.kind, w.target.lock);
            let t = cx.thread(w.tid);
            let holder = match w.target.holder {
                Holder::Thread(h) => WaitHolder::Thread(h),
                Holder::Readers => WaitHolder::Readers,
                _ => WaitHolder::Unknown,
            };
            let mut threads = vec![t.clone()];
            if let Holder::Thread(h) = w.target.holder {
                threads.push(cx.thread(h));
            }
            for &b in &held_up {
                if !threads.iter().any(|t| t.tid == b) {
                    threads.push(cx.thread(b));
                }
            }
            out.push(Finding {
                kind: FindingKind::LongWait,
                tgid: cx.process.tgid,
                detected_ns: cx.now_ns,
                detail: Detail::LongWait {
                    waited_ns: age,
                    before_observation: w.before_observation,
                    holder,
                    held_up,
                },
                threads,
                locks: vec![lock],
                cycle: Vec::new(),
                tasks: Vec::new(),
                key: format!("long:{}:{}:{}", cx.process.tgid, w.tid, w.start_ns),
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
        Detail::LongWait {
            waited_ns,
            before_observation,
            holder,
            held_up,
        } => {
            let held = match holder {
                WaitHolder::Thread(h) => format!(", held by thread {h} \"{}\"", name(f, *h)),
                WaitHolder::Readers => ", held by readers".into(),
                WaitHolder::Unknown => String::new(),
            };
            let since = if *before_observation { "at least " } else { "" };
            format!(
                "thread {tid} \"{tname}\" has waited {since}{} for {}{held}{}",
                dur(*waited_ns),
                first_lock(f),
                held_up_by(f, held_up)
            )
        }
        _ => String::new(),
    }
}
