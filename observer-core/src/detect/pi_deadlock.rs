//! PI mutex deadlock. The kernel detects it and returns EDEADLK to the
//! thread that would close the cycle; glibc then parks that thread forever
//! on a word of its own stack, so the wait-for graph alone shows a chain,
//! not a cycle. Observed live, the EDEADLK result is the evidence; in a
//! snapshot, the parked thread at the end of a PI chain is.

use super::{Ctx, Detail, Detector, Finding, FindingKind};
use crate::{
    event::futex,
    graph::{Holder, LockKind, classify},
};

pub struct PiDeadlock;

/// How long to wait for the rest of a PI cycle to appear in the wait table.
const CHAIN_GRACE_NS: u64 = 250_000_000;

/// A thread parked on its own stack (glibc after EDEADLK): the futex word
/// lies within a page of its stack pointer and nothing can ever change it.
fn parked_on_own_stack(uaddr: u64, sp: u64, val: u32) -> bool {
    sp != 0 && val == 0 && uaddr.abs_diff(sp) < 4096
}

impl Detector for PiDeadlock {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let mut out = Vec::new();
        let p = cx.process;
        // Live: the kernel said EDEADLK.
        for (tid, wait, at) in &p.pi_edeadlk {
            let target = classify(wait, p);
            let lock = cx.lock(LockKind::PiMutex, wait.uaddr);
            let mut threads = vec![cx.thread(*tid)];
            threads[0].waits_for = Some(lock.clone());
            threads[0].waited_ns = None;
            let mut edges = Vec::new();
            let mut closed = false;
            if let Holder::Thread(owner) | Holder::Gone(owner) = target.holder {
                edges.push(super::Edge {
                    waiter_tid: *tid,
                    holder_tid: owner,
                    lock,
                    held: None,
                    site: None,
                    holder_lock: None,
                    frames: Vec::new(),
                });
                // The owner's own wait chain leads back to `tid`.
                for w in cx.graph.chain(owner) {
                    let Holder::Thread(h) = w.target.holder else {
                        break;
                    };
                    edges.push(cx.edge(w, h));
                    threads.push(cx.thread(w.tid));
                    if h == *tid {
                        closed = true;
                        break;
                    }
                }
                if !threads.iter().any(|t| t.tid == owner) {
                    threads.push(cx.thread(owner));
                }
            }
            // The rest of the cycle shows once its waits are old enough to
            // be scanned; report a partial picture only if it never does.
            if !closed && cx.now_ns.saturating_sub(*at) < CHAIN_GRACE_NS {
                continue;
            }
            out.push(finding(cx, *tid, edges, threads, false));
        }
        // Snapshot: a PI waiter whose holder is parked on its own stack.
        for w in cx.graph.waits.values() {
            if w.target.kind != LockKind::PiMutex {
                continue;
            }
            let Holder::Thread(h) = w.target.holder else {
                continue;
            };
            let Some(hw) = p.thread(h).and_then(|t| t.wait.as_ref()) else {
                continue;
            };
            let parked = futex::cmd(hw.op) == observer_abi::bindings::OBS_FUTEX_WAIT_BITSET
                && parked_on_own_stack(hw.uaddr, hw.sp, hw.val);
            if !parked {
                continue;
            }
            let mut chain_threads = Vec::new();
            let mut edges = Vec::new();
            // Everything that waits, through PI locks, on the parked thread.
            for x in cx.graph.waits.values() {
                if let Holder::Thread(hh) = x.target.holder
                    && x.target.kind == LockKind::PiMutex
                    && cx
                        .graph
                        .chain(x.tid)
                        .iter()
                        .any(|c| c.target.holder == Holder::Thread(h))
                {
                    edges.push(cx.edge(x, hh));
                    chain_threads.push(cx.thread(x.tid));
                }
            }
            let mut threads = chain_threads;
            let mut parked_thread = cx.thread(h);
            parked_thread.waits_for = None;
            threads.insert(0, parked_thread);
            out.push(finding(cx, h, edges, threads, true));
        }
        out
    }
}

fn finding(
    cx: &Ctx,
    parked: u32,
    edges: Vec<super::Edge>,
    threads: Vec<super::ThreadInfo>,
    inferred: bool,
) -> Finding {
    let mut locks: Vec<_> = edges.iter().map(|e| e.lock.clone()).collect();
    locks.sort_by_key(|l| l.addr);
    locks.dedup();
    Finding {
        kind: FindingKind::PiDeadlock,
        tgid: cx.process.tgid,
        detected_ns: cx.now_ns,
        detail: Detail::PiDeadlock { parked, inferred },
        threads,
        locks,
        cycle: edges,
        tasks: Vec::new(),
        key: format!("pi:{}:{}", cx.process.tgid, parked),
    }
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    match &f.detail {
        Detail::PiDeadlock { parked, inferred } => {
            let how = if *inferred {
                "is parked forever on its own stack after the kernel refused a PI lock (EDEADLK)"
            } else {
                "got EDEADLK from the kernel on a PI mutex and now sleeps forever"
            };
            format!("thread {parked} \"{}\" {how}", name(f, *parked))
        }
        _ => String::new(),
    }
}
