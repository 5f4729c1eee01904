//! Idle is not a hang. A wait is a finding only when it holds someone up
//! (a thread joins the waiter, waits for a lock the waiter holds, or waits
//! for a future whose work item the waiter runs), when
//! it is a lock wait (contention, a lock held too long), or when the whole
//! process is blocked. A thread waiting on a condvar, a semaphore, a queue,
//! an event or a futex word that records no owner, that nobody waits for,
//! is a worker waiting for work: state, not a finding.

use super::{LockKind, WaitForGraph, WaitNode};
use crate::{
    event::Tid,
    model::{Model, Process},
};

/// Library waits of Python's `threading` and `queue` with no owner: the
/// view's label ("Queue.get on jobs").
fn library_label(p: &Process, tid: Tid) -> Option<&str> {
    p.python.as_ref()?.thread(tid)?.label.as_deref()
}

/// The wait is for a lock: a mutex, an rwlock, a PI or robust mutex, a
/// futex lock that records no owner (val 2: Rust's `Mutex`), an RLock, or a
/// `threading.Lock` the program itself acquires (not the waiter lock that
/// Condition, Event, Queue and Semaphore park on).
pub fn is_lock_wait(p: &Process, w: &WaitNode) -> bool {
    match w.target.kind {
        LockKind::Mutex
        | LockKind::RobustMutex
        | LockKind::PiMutex
        | LockKind::Rwlock
        | LockKind::Lock
        | LockKind::PyRLock
        | LockKind::MpLock => true,
        // A lock object the Python view knows, entered outside a library
        // wait. A PyLock only the deep tier names (a C module's internal
        // lock, e.g. SimpleQueue's) is a queue, not a lock.
        LockKind::PyLock => {
            library_label(p, w.tid).is_none()
                && p.python
                    .as_ref()
                    .is_some_and(|v| v.lock(w.target.lock).is_some())
        }
        LockKind::Join
        | LockKind::Future
        | LockKind::Condvar
        | LockKind::Semaphore
        | LockKind::Unknown => false,
    }
}

/// Why a thread's current wait matters, or does not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// It waits for a lock: a finding once longer than the threshold.
    LockWait,
    /// These threads wait for it (join it, wait for a lock it holds or
    /// for a future it runs).
    HeldUp(Vec<Tid>),
    /// It joins another thread, or waits for a future another thread runs:
    /// that thread's state is the story.
    Joining,
    /// Nobody waits for it: a worker waiting for work (what it waits on).
    Idle(String),
}

/// The standing of `tid`'s current futex wait (None: not in one).
pub fn standing(m: &Model, p: &Process, g: &WaitForGraph, tid: Tid) -> Option<Standing> {
    let w = g.waits.get(&tid)?;
    let by = g.waiters_of(tid);
    if !by.is_empty() {
        return Some(Standing::HeldUp(by));
    }
    if w.target.kind.for_work() {
        return Some(Standing::Joining);
    }
    if is_lock_wait(p, w) {
        return Some(Standing::LockWait);
    }
    Some(Standing::Idle(idle_what(m, p, w)))
}

/// What an idle thread waits on, as a person reads it:
/// "waiting for work on Queue jobs", "waiting on condvar pool_cond".
fn idle_what(m: &Model, p: &Process, w: &WaitNode) -> String {
    if let Some(l) = library_label(p, w.tid) {
        // "Future.result() of parse_page in pool crawler".
        if ["Future.", "wait()", "as_completed()"]
            .iter()
            .any(|p| l.starts_with(p))
        {
            return format!("waiting in {l}");
        }
        let (what, on) = l.split_once(" on ").unwrap_or((l, ""));
        let on = if on.is_empty() {
            String::new()
        } else {
            format!(" {on}")
        };
        return match what {
            "Queue.get" => format!("waiting for work on Queue{on}"),
            "Event.wait" => format!("waiting for Event{on} to be set"),
            "Condition.wait" | "Condition.wait_for" => format!("waiting on Condition{on}"),
            "Semaphore.acquire" | "BoundedSemaphore.acquire" => {
                format!("waiting on Semaphore{on}")
            }
            other => format!("waiting in {other}{on}"),
        };
    }
    let py = p.python.as_ref().and_then(|v| v.thread(w.tid));
    if let Some(f) = py.and_then(|t| t.frames.first())
        && f.function == "_worker"
        && f.file.ends_with("concurrent/futures/thread.py")
    {
        return "waiting for work in a ThreadPoolExecutor".into();
    }
    let lock = w.target.lock;
    let name = match m.symbols.get(&(p.tgid, lock)) {
        Some(s) => format!("{} {s} ({lock:#x})", w.target.kind.as_str()),
        None => format!("{} {lock:#x}", w.target.kind.as_str()),
    };
    format!("waiting for work on {name}")
}

/// Every live thread that is idle now, with what it waits on: futex waits
/// nobody waits for, and threads seen blocked in another syscall (a
/// selector, a read) for a while that nobody waits for either.
pub fn idle_threads(m: &Model, p: &Process, g: &WaitForGraph) -> Vec<(Tid, String)> {
    let mut out = Vec::new();
    for t in p.live_threads() {
        match standing(m, p, g, t.tid) {
            Some(Standing::Idle(what)) => out.push((t.tid, what)),
            Some(_) => {}
            None => {
                if let Some(nr) = t.stuck.as_ref().and_then(|s| s.syscall)
                    && g.waiters_of(t.tid).is_empty()
                {
                    out.push((
                        t.tid,
                        format!("waiting in {}", crate::vocab::syscalls::syscall_name(nr)),
                    ));
                }
            }
        }
    }
    out
}
