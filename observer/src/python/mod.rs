//! The Python view of a CPython process, read from the interpreter's memory
//! without stopping it: every thread's `threading` name and Python stack,
//! the `threading` lock it waits for (cross-checked against its futex
//! wait), the locks its active `with` blocks hold, a pending `join()`, and
//! labelled waits (Queue.get, Condition.wait, ...), with lock names as the
//! program spells them. py-spy finds the interpreter; the walk is ours,
//! with per-version offsets checked against the headers (layout.rs).

pub mod asyncio;
#[cfg(test)]
mod fuzz_tests;
pub mod gil;
pub mod layout;
pub mod reader;
mod walk;

use serde::{Deserialize, Serialize};

use crate::symbol::PyFrame;
pub use walk::inspect;

/// What kind of `threading` lock an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PyLockKind {
    /// `threading.Lock` (`_thread.lock`).
    Lock,
    /// `threading.RLock` (`_thread.RLock`).
    RLock,
}

impl PyLockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PyLockKind::Lock => "Lock",
            PyLockKind::RLock => "RLock",
        }
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
}

/// A lock object the view knows: its name and the futex word its waiters
/// sleep on (3.11/3.12: the `sem_t`; 3.13 Lock: the `PyMutex`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyLockInfo {
    pub addr: u64,
    pub kind: PyLockKind,
    pub name: Option<String>,
    /// Address the lock's waiters park on (sem_t or PyMutex).
    pub word: u64,
    /// RLock: owning thread (TID) and recursion count.
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
    pub threads: Vec<PyThreadView>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<PyLockInfo>,
    /// Event loops and their tasks, when the program uses asyncio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asyncio: Option<asyncio::AsyncView>,
}

impl PyView {
    pub fn thread(&self, tid: u32) -> Option<&PyThreadView> {
        self.threads.iter().find(|t| t.tid == tid)
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
    }

    /// "ledger_lock" or "<_thread.lock at 0x7f..>".
    pub fn lock_name(&self, lock: u64) -> String {
        match self.lock(lock) {
            Some(PyLockInfo { name: Some(n), .. }) => n.clone(),
            Some(l) => format!("<_thread.{} at {lock:#x}>", lock_type(l.kind)),
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
        PyLockKind::Lock => "lock",
        PyLockKind::RLock => "RLock",
    }
}

/// "bank.py:12" of a frame.
pub fn frame_site(f: &PyFrame) -> String {
    format!("{}:{}", f.file, f.line)
}

/// Where a CPython process's interpreter is.
#[derive(Clone, Debug)]
pub struct Located {
    pub version: String,
    pub major: u64,
    pub minor: u64,
    /// The main `PyInterpreterState`.
    pub interp: u64,
}

impl Located {
    pub fn of_spy(spy: &py_spy::python_spy::PythonSpy) -> Self {
        Located {
            version: spy.version.to_string(),
            major: spy.version.major,
            minor: spy.version.minor,
            interp: spy.addresses.interpreter_address as u64,
        }
    }
}

/// Finds the interpreter of a CPython 3.11–3.13 process from its
/// `_PyRuntime` and `Py_Version` symbols (py-spy's binary parsing), without
/// the stack walk `PythonSpy::new` does to validate it: the walk that
/// follows validates it too (no threads: the caller falls back to py-spy).
pub fn locate(pid: u32) -> anyhow::Result<Located> {
    use anyhow::Context;
    use py_spy::python_process_info::{PythonProcessInfo, get_python_version};
    let process = remoteprocess::Process::new(pid as remoteprocess::Pid)
        .with_context(|| format!("opening process {pid}"))?;
    let info = PythonProcessInfo::new(&process)?;
    let v = get_python_version(&info, &process)?;
    let l = layout::for_version(v.major, v.minor)
        .with_context(|| format!("CPython {v}: layout not known"))?;
    let runtime = *info
        .get_symbol("_PyRuntime")
        .context("no _PyRuntime symbol")?;
    let interp = reader::Mem::read(&reader::Live(pid), runtime + l.runtime_interp_head, 8)
        .and_then(|b| reader::u64_at(&b, 0))
        .filter(|&p| reader::Reader::<reader::Live>::ptr_ok(p))
        .context("reading _PyRuntime.interpreters.head")?;
    Ok(Located {
        version: v.to_string(),
        major: v.major,
        minor: v.minor,
        interp,
    })
}

/// The Python view of live process `pid`, whose interpreter is at `loc`.
/// An unknown layout (another version, a free-threaded build) gives a view
/// that says so and nothing else.
pub fn view(
    pid: u32,
    loc: &Located,
    free_threaded: bool,
    waits: &std::collections::HashMap<u32, u64>,
) -> PyView {
    let vs = loc.version.clone();
    let unsupported = |why: String| PyView {
        version: vs.clone(),
        unsupported: Some(why),
        ..Default::default()
    };
    if free_threaded {
        return unsupported(format!(
            "CPython {vs} is a free-threaded build: its Python locks are not read (native view only)"
        ));
    }
    let Some(layout) = layout::for_version(loc.major, loc.minor) else {
        return unsupported(format!(
            "CPython {vs}: interpreter layout not known (3.11-3.13 are): Python locks are not read (native view only)"
        ));
    };
    let t0 = std::time::Instant::now();
    let reads = reader::READS.load(std::sync::atomic::Ordering::Relaxed);
    let v = inspect(&reader::Live(pid), layout, vs.clone(), loc.interp, waits);
    tracing::debug!(
        "python walk of {pid}: {} threads in {:?}, {} memory reads",
        v.threads.len(),
        t0.elapsed(),
        reader::READS.load(std::sync::atomic::Ordering::Relaxed) - reads
    );
    v
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
        })
    }
}
