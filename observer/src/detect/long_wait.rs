//! A wait longer than the threshold that no other finding explains: a lost
//! wakeup, a semaphore nobody posts, a lock held for too long.

use super::{Ctx, Detail, Detector, Finding, FindingKind, WaitHolder};
use crate::graph::Holder;

pub struct LongWait;

impl Detector for LongWait {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let mut out = Vec::new();
        for w in cx.graph.waits.values() {
            let age = cx.now_ns.saturating_sub(w.start_ns);
            if age < cx.long_wait_ns || cx.covered.contains(&(cx.process.tgid, w.tid)) {
                continue;
            }
            // Joining a thread that is still working is normal; if that
            // thread is stuck, its own wait is the finding.
            if cx.joining(w.tid) {
                continue;
            }
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
            out.push(Finding {
                kind: FindingKind::LongWait,
                tgid: cx.process.tgid,
                detected_ns: cx.now_ns,
                detail: Detail::LongWait {
                    waited_ns: age,
                    before_observation: w.before_observation,
                    holder,
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
