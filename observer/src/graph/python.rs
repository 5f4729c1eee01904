//! Python-level wait-for edges: what the Python view (read from the
//! interpreter's memory) says a blocked thread waits for, in the same graph
//! as native edges.

use super::classify::{Holder, LockKind, Target};
use crate::{
    event::{Tid, Wait},
    model::Process,
    python::{PyLockKind, PyView},
};

pub fn lock_kind(k: PyLockKind) -> LockKind {
    match k {
        PyLockKind::Lock => LockKind::PyLock,
        PyLockKind::RLock => LockKind::PyRLock,
    }
}

fn live(p: &Process, tid: Tid) -> Holder {
    if p.thread(tid).is_some_and(|t| t.alive()) {
        Holder::Thread(tid)
    } else {
        Holder::Gone(tid)
    }
}

/// The target of `tid`'s futex wait `w` once the Python view is known;
/// `native` is what the futex alone says (kept when Python says nothing).
pub fn refine(view: &PyView, p: &Process, tid: Tid, w: &Wait, native: Target) -> Target {
    if view.unsupported.is_some() {
        return native;
    }
    let t = view.thread(tid);
    if let Some(pw) = t.and_then(|t| t.wait.as_ref()) {
        let holder = match view.holder(pw.lock) {
            Some(h) if h == tid && pw.kind == PyLockKind::RLock => Holder::Unknown,
            Some(h) => live(p, h),
            // The deep tier may know the owner of the semaphore.
            None if native.holder != Holder::Unknown => native.holder,
            None => Holder::Unknown,
        };
        return Target {
            kind: lock_kind(pw.kind),
            lock: pw.lock,
            holder,
            owner_died: false,
        };
    }
    if let Some(j) = t.and_then(|t| t.joins) {
        return Target {
            kind: LockKind::Join,
            lock: w.uaddr,
            holder: live(p, j),
            owner_died: false,
        };
    }
    // A thread (native code too) sleeping on a Python lock's futex word.
    if native.holder == Holder::Unknown
        && let Some(l) = view.lock_by_word(w.uaddr)
    {
        return Target {
            kind: lock_kind(l.kind),
            lock: l.addr,
            holder: view.holder(l.addr).map_or(Holder::Unknown, |h| live(p, h)),
            owner_died: false,
        };
    }
    native
}
