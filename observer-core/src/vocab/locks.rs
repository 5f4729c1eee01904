//! What kind of lock a wait is on, as the classifier tells it.

use serde::Serialize;

/// What a futex word belongs to.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    Mutex,
    RobustMutex,
    PiMutex,
    Rwlock,
    Join,
    Condvar,
    Semaphore,
    /// A CPython `threading.Lock` (a semaphore underneath; owner from the deep tier).
    PyLock,
    /// A CPython `threading.RLock` (records its owner).
    PyRLock,
    /// A `multiprocessing.Lock` or `RLock`: a semaphore in shared memory
    /// whose holder each process's Python view names (possibly in another
    /// process).
    MpLock,
    /// A futex lock that records no owner (e.g. Rust's std Mutex).
    Lock,
    /// A `concurrent.futures.Future`'s result: the "holder" is the thread
    /// running its work item.
    Future,
    Unknown,
}

impl LockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::Mutex => "mutex",
            LockKind::RobustMutex => "robust mutex",
            LockKind::PiMutex => "PI mutex",
            LockKind::Rwlock => "rwlock",
            LockKind::Join => "join",
            LockKind::Condvar => "condvar",
            LockKind::Semaphore => "semaphore",
            LockKind::PyLock => "Python lock",
            LockKind::PyRLock => "Python RLock",
            LockKind::MpLock => "multiprocessing lock",
            LockKind::Lock => "futex lock",
            LockKind::Future => "future",
            LockKind::Unknown => "futex",
        }
    }

    /// Waits that end when another thread finishes its work (a join, a
    /// future's work item), not when it releases a lock.
    pub fn for_work(self) -> bool {
        matches!(self, LockKind::Join | LockKind::Future)
    }

    /// Primitives with an owner whose death leaves waiters hanging.
    pub fn has_owner(self) -> bool {
        matches!(
            self,
            LockKind::Mutex
                | LockKind::RobustMutex
                | LockKind::PiMutex
                | LockKind::Rwlock
                | LockKind::PyLock
                | LockKind::PyRLock
        )
    }
}
