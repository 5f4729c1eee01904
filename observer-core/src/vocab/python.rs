//! The Python view: what the interpreter showed about its threads (names,
//! stacks, the `threading` locks they wait for and hold, joins, labels),
//! and what a report says about each thread. Filled by the binary's reader.

use serde::{Deserialize, Serialize};

use super::{asyncio, frames::PyFrame};

/// What kind of `threading` lock an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PyLockKind {
    /// `threading.Lock` (`_thread.lock`).
    Lock,
    /// `threading.RLock` (`_thread.RLock`).
    RLock,
    /// `multiprocessing.Lock` (a `_multiprocessing.SemLock` of kind
    /// SEMAPHORE, maxvalue 1): a named POSIX semaphore in shared memory,
    /// taken and released by threads of several processes.
    MpLock,
    /// `multiprocessing.RLock` (a SemLock of kind RECURSIVE_MUTEX).
    MpRLock,
}

impl PyLockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PyLockKind::Lock => "Lock",
            PyLockKind::RLock => "RLock",
            PyLockKind::MpLock => "multiprocessing.Lock",
            PyLockKind::MpRLock => "multiprocessing.RLock",
        }
    }

    /// A `multiprocessing` lock: its holder may be a thread of another
    /// process (the view of one process knows only its own threads).
    pub fn across_processes(self) -> bool {
        matches!(self, PyLockKind::MpLock | PyLockKind::MpRLock)
    }
}

/// How a thread is entering the lock it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// A `with` statement (the lock's `__exit__` is on the value stack).
    With,
    /// An `acquire()` call.
    Acquire,
}

/// The lock a blocked thread waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyWait {
    pub lock: u64,
    pub kind: PyLockKind,
    pub how: How,
    /// Index in `frames` of the frame entering it (0: innermost).
    pub frame: usize,
    /// Its name as that frame spells it (`dst.lock`), if the frame does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A lock a thread holds: an active `with` block in `frame`, or an RLock
/// whose owner is the thread (`frame` None when no frame shows it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyHeld {
    pub lock: u64,
    pub kind: PyLockKind,
    pub frame: Option<usize>,
    /// Its name as that frame spells it, if the frame does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Line of the `with` statement that took it, in `frame`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<i32>,
}

/// One Python thread as read from the interpreter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyThreadView {
    /// OS thread id (`tstate->native_thread_id`).
    pub tid: u32,
    /// `threading.get_ident()` (pthread_t).
    pub ident: u64,
    pub name: Option<String>,
    /// Innermost first.
    pub frames: Vec<PyFrame>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<PyWait>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<PyHeld>,
    /// `Thread.join()` pending on this thread (its TID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub joins: Option<u32>,
    /// A wait without an owner, e.g. "Queue.get on jobs".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Blocked in a `concurrent.futures.Future`'s result or exception.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub future: Option<PyFutureWait>,
}

/// A `concurrent.futures.Future` a thread waits for, and the thread that
/// runs its work item (a ThreadPoolExecutor worker), which holds it up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyFutureWait {
    pub addr: u64,
    /// "Future.result" or "Future.exception".
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<u32>,
    /// The future as the waiting code spells it (`fut`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Who completes it, when the view shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<FutureSource>,
    /// Called with a timeout: the wait ends by itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timeout: bool,
}

/// What will complete a `concurrent.futures.Future`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FutureSource {
    /// A work item of the pool whose work queue is `pool`, calling
    /// `callable` (qualname); `queued`: no worker has taken it yet.
    Pool {
        pool: u64,
        callable: Option<String>,
        queued: bool,
    },
    /// `asyncio.run_coroutine_threadsafe`: the task running the coroutine
    /// (`coro`, qualname) on an event loop; `runner` is the loop's thread.
    /// No task: the loop has not started it yet (its callback is queued).
    Loop {
        task: Option<u64>,
        task_name: Option<String>,
        coro: Option<String>,
    },
}

/// A `concurrent.futures.ThreadPoolExecutor`, seen through its workers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyPool {
    /// Its work queue (what its workers share; the pool's identity here).
    pub queue: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<u64>,
    /// `thread_name_prefix` ("ThreadPoolExecutor-0" by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Its live worker threads (TIDs).
    pub workers: Vec<u32>,
    /// How many threads the executor started (`_threads`), if read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<usize>,
    /// Work items not taken yet, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queued: Vec<PyQueued>,
}

impl PyPool {
    /// "crawler", else the executor's or the queue's address (not escaped).
    pub fn label(&self) -> String {
        match (&self.prefix, self.executor) {
            (Some(p), _) if !p.is_empty() => p.clone(),
            (_, Some(e)) => format!("<ThreadPoolExecutor at {e:#x}>"),
            _ => format!("<pool of queue {:#x}>", self.queue),
        }
    }
}

/// A work item waiting in a pool's queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyQueued {
    pub future: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callable: Option<String>,
}

/// A lock object the view knows: its name and the futex word its waiters
/// sleep on (3.11/3.12: the `sem_t`; 3.13 Lock: the `PyMutex`; a
/// multiprocessing lock: its `sem_t`, in shared memory).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyLockInfo {
    pub addr: u64,
    pub kind: PyLockKind,
    pub name: Option<String>,
    /// Address the lock's waiters park on (sem_t or PyMutex).
    pub word: u64,
    /// RLock: owning thread (TID) and recursion count; multiprocessing
    /// lock: the thread of this process that holds it and how many times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<(u32, u64)>,
}

/// The Python view of one process at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyView {
    /// "3.12.1".
    pub version: String,
    /// Set when the layout is not known: why nothing else is filled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
    /// Set when only names and stacks were read: what is left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limited: Option<String>,
    pub threads: Vec<PyThreadView>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<PyLockInfo>,
    /// Event loops and their tasks, when the program uses asyncio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asyncio: Option<asyncio::AsyncView>,
    /// ThreadPoolExecutors that have workers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PyPool>,
}

impl PyView {
    pub fn thread(&self, tid: u32) -> Option<&PyThreadView> {
        self.threads.iter().find(|t| t.tid == tid)
    }

    pub fn pool(&self, queue: u64) -> Option<&PyPool> {
        self.pools.iter().find(|p| p.queue == queue)
    }

    pub fn lock(&self, addr: u64) -> Option<&PyLockInfo> {
        self.locks.iter().find(|l| l.addr == addr)
    }

    /// The thread holding `lock`, if the view shows one.
    pub fn holder(&self, lock: u64) -> Option<u32> {
        if let Some((tid, n)) = self.lock(lock).and_then(|l| l.owner)
            && n > 0
        {
            return Some(tid);
        }
        self.threads
            .iter()
            .find(|t| t.held.iter().any(|h| h.lock == lock))
            .map(|t| t.tid)
            // Held across an `await` by a suspended task: its loop thread
            // (only the loop resuming that task releases it).
            .or_else(|| {
                self.asyncio
                    .as_ref()?
                    .thread_lock_holder(lock)
                    .and_then(|(l, t, _)| l.tid.filter(|_| t.state == asyncio::TaskState::Pending))
            })
    }

    /// "ledger_lock" or "<_thread.lock at 0x7f..>".
    pub fn lock_name(&self, lock: u64) -> String {
        match self.lock(lock) {
            Some(PyLockInfo { name: Some(n), .. }) => n.clone(),
            Some(l) => format!("<{} at {lock:#x}>", lock_type(l.kind)),
            None => format!("<_thread.lock at {lock:#x}>"),
        }
    }

    /// The lock whose waiters park on futex word `word`.
    pub fn lock_by_word(&self, word: u64) -> Option<&PyLockInfo> {
        self.locks.iter().find(|l| l.word == word && word != 0)
    }
}

fn lock_type(k: PyLockKind) -> &'static str {
    match k {
        PyLockKind::Lock => "_thread.lock",
        PyLockKind::RLock => "_thread.RLock",
        PyLockKind::MpLock | PyLockKind::MpRLock => "_multiprocessing.SemLock",
    }
}

/// "bank.py:12" of a frame.
pub fn frame_site(f: &PyFrame) -> String {
    format!("{}:{}", f.file, f.line)
}

impl PyView {
    /// Keeps names and stacks, drops what depends on layouts not known
    /// (locks, waits, holders, joins, labels, asyncio), and says so.
    pub fn names_and_stacks_only(&mut self, why: &str) {
        for t in &mut self.threads {
            t.wait = None;
            t.held.clear();
            t.joins = None;
            t.label = None;
            t.future = None;
        }
        self.locks.clear();
        self.asyncio = None;
        self.pools.clear();
        self.limited = Some(why.to_string());
    }
}

/// What a report says about one thread's Python state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PyThreadInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waits: Option<PyLockRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<PyLockRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub joins: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The `concurrent.futures.Future` it waits for, and who completes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub future: Option<PyFutureWait>,
}

/// A lock as a report shows it: its name, kind, and the frame (function,
/// file:line) that waits for it or holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PyLockRef {
    pub name: String,
    pub kind: PyLockKind,
    pub addr: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<How>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
}

impl PyView {
    /// The report's view of thread `tid`.
    pub fn info(&self, tid: u32) -> Option<PyThreadInfo> {
        let t = self.thread(tid)?;
        let r = |lock: u64,
                 kind: PyLockKind,
                 how: Option<How>,
                 frame: Option<usize>,
                 name: &Option<String>,
                 line: Option<i32>| {
            let f = frame.and_then(|i| t.frames.get(i));
            PyLockRef {
                name: name.clone().unwrap_or_else(|| self.lock_name(lock)),
                kind,
                addr: lock,
                how,
                function: f.map(|f| f.function.clone()),
                site: f.map(|f| match line {
                    Some(l) => format!("{}:{l}", f.file),
                    None => frame_site(f),
                }),
            }
        };
        Some(PyThreadInfo {
            waits: t
                .wait
                .as_ref()
                .map(|w| r(w.lock, w.kind, Some(w.how), Some(w.frame), &w.name, None)),
            holds: t
                .held
                .iter()
                .map(|h| r(h.lock, h.kind, None, h.frame, &h.name, h.line))
                .collect(),
            joins: t.joins,
            label: t.label.clone(),
            future: t.future.clone(),
        })
    }
}
