//! The whole process is blocked: every live thread has sat in a futex wait
//! for at least the long-wait window, so no thread made progress in it and
//! none can wake another. One finding names every blocked thread, unless a
//! finding already explains one of them (a deadlock, a wait that holds
//! someone up): then that finding is the story. A thread in any other
//! syscall (a selector, a read, a sleep) can be woken from outside: its
//! process is not hung.

use super::{Ctx, Detail, Detector, Finding, FindingKind};
use crate::graph::LockKind;

pub struct ProcessHung;

impl Detector for ProcessHung {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let p = cx.process;
        let window = cx.long_wait_ns;
        if p.observed_to_ns.is_some() {
            return Vec::new();
        }
        let live: Vec<_> = p.live_threads().collect();
        if live.is_empty() {
            return Vec::new();
        }
        let mut waits = Vec::new();
        for t in &live {
            let Some(w) = cx.graph.waits.get(&t.tid) else {
                return Vec::new();
            };
            if cx.now_ns.saturating_sub(w.start_ns) < window {
                return Vec::new();
            }
            if cx.covered.contains(&(p.tgid, t.tid)) {
                return Vec::new();
            }
            waits.push(w);
        }
        // The threads others wait on first (the root of the hang), joins last.
        waits.sort_by_key(|w| (w.target.kind == LockKind::Join, w.start_ns, w.tid));
        let threads = waits.iter().map(|w| cx.thread(w.tid)).collect();
        let mut locks = Vec::new();
        for w in &waits {
            let l = cx.lock(w.target.kind, w.target.lock);
            if w.target.kind != LockKind::Join && !locks.contains(&l) {
                locks.push(l);
            }
        }
        let last = waits.iter().map(|w| w.start_ns).max().unwrap_or(0);
        vec![Finding {
            kind: FindingKind::ProcessHung,
            tgid: p.tgid,
            detected_ns: cx.now_ns,
            detail: Detail::ProcessHung { window_ns: window },
            threads,
            locks,
            cycle: Vec::new(),
            tasks: Vec::new(),
            key: format!("hung:{}:{last}", p.tgid),
        }]
    }
}
