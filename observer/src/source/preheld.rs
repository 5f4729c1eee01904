//! `attach`: locks that were already held when observation began. Their
//! acquisition was never seen, so the deep tier has no owner, no hold time
//! and no lock-order edges for them; the report lists them with the holder
//! the lock's own memory names, when it names one.

use crate::{
    event::{Event, HeldEvidence},
    graph::{Holder, LockKind, WaitForGraph},
    model::Model,
    probe::Probes,
};

/// Primitives that are held by someone while a thread waits for them
/// (a semaphore, a condvar or a join is not held).
fn is_held_kind(k: LockKind) -> bool {
    matches!(
        k,
        LockKind::Mutex
            | LockKind::RobustMutex
            | LockKind::PiMutex
            | LockKind::Rwlock
            | LockKind::PyLock
            | LockKind::PyRLock
            | LockKind::Lock
    )
}

/// Primitives whose acquisitions the deep tier's uprobes record (a bare
/// futex lock, e.g. Rust's std Mutex, calls no probed function).
fn is_probed_kind(k: LockKind) -> bool {
    is_held_kind(k) && k != LockKind::Lock
}

/// `HeldAtAttach` events for locks threads of attached processes wait for
/// that were held before observation began: the wait itself began before
/// (the /proc snapshot), or, with the lock uprobes in place (`deep`), no
/// acquisition of the lock was recorded. New (lock, waiter) pairs only.
pub fn events(model: &Model, probes: &Probes, deep: bool, now: u64) -> Vec<Event> {
    let mut out = Vec::new();
    for p in model
        .processes
        .values()
        .filter(|p| p.attached && p.observed_to_ns.is_none())
    {
        if !p.live_threads().any(|t| t.wait.is_some()) {
            continue;
        }
        let g = WaitForGraph::build(p);
        // Mutexes and rwlocks have no owner entry: their holders' held sets say.
        let held = if deep {
            probes.held_locks(p.tgid)
        } else {
            Default::default()
        };
        for n in g.waits.values() {
            let t = &n.target;
            // The waiter lock a Condition, Event or Queue parks on is
            // "held" by design: an idle wait, not a lock held before attach.
            if !is_held_kind(t.kind)
                || !crate::graph::idle::is_lock_wait(p, n)
                || p.held_at_attach
                    .get(&t.lock)
                    .is_some_and(|h| h.waiters.contains(&n.tid))
            {
                continue;
            }
            let evidence = if n.before_observation {
                HeldEvidence::WaitingAtAttach
            } else if deep
                && is_probed_kind(t.kind)
                // The owner table is keyed by the address the lock call
                // got: the object (mutex, rwlock) or the futex word (the
                // semaphore under a Python lock).
                && probes.lock_owner(p.tgid, t.lock).is_none()
                && probes.lock_owner(p.tgid, n.uaddr).is_none()
                && !held.contains(&t.lock)
                && !held.contains(&n.uaddr)
            {
                HeldEvidence::NoAcquisitionSeen
            } else {
                continue;
            };
            let holder = match t.holder {
                Holder::Thread(h) | Holder::Gone(h) => Some(h),
                Holder::Readers | Holder::Unknown => None,
            };
            out.push(Event::HeldAtAttach {
                ts_ns: now,
                tgid: p.tgid,
                lock: t.lock,
                kind: t.kind,
                holder,
                waiter: n.tid,
                evidence,
            });
        }
    }
    out
}
