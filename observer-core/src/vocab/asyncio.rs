//! The asyncio view: every event loop's tasks, where each awaits, what it
//! waits for and the locks it holds; await cycles among them.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::frames::PyFrame;

/// Longest await chain followed (a cycle search gives up beyond it).
pub const MAX_CHAIN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Cancelled,
    Done,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Cancelled => "cancelled",
            TaskState::Done => "done",
        }
    }
}

/// Why a task waits for another one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Why {
    /// `await task`.
    Awaits,
    /// A child of the `gather` it awaits.
    Gather,
    /// The `asyncio.Lock` it waits for is held by that task (`async with`).
    Lock { lock: u64, name: Option<String> },
    /// It awaits a future only that task refers to.
    Future { fut: u64, name: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEdge {
    pub task: u64,
    pub why: Why,
}

/// An `asyncio.Lock`, named as the program spells it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncLock {
    pub addr: u64,
    pub name: Option<String>,
    /// The frame (index in the task's chain) entering or holding it.
    pub frame: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    pub addr: u64,
    pub name: String,
    /// The task's coroutine (qualname).
    pub coro: String,
    pub state: TaskState,
    /// Where it awaits: the coroutine chain, outermost (the task's own
    /// coroutine) first.
    pub chain: Vec<PyFrame>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waits_for: Vec<TaskEdge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_lock: Option<AsyncLock>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<AsyncLock>,
    /// A library wait without an owner: "Event.wait on ready".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The coroutine is running now (its frames are on the thread's stack).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub running: bool,
    /// The future it awaits (`_fut_waiter`), as read; for the reader only.
    #[serde(skip)]
    pub fut_waiter: Option<u64>,
    /// It awaits `loop.run_in_executor(...)`: the pool's worker running the
    /// callable completes it (none yet: queued). An edge to that thread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorWait>,
    /// `threading` locks the active `with` blocks of its suspended
    /// coroutine frames hold (across an `await`): its loop thread holds
    /// them while it is suspended, and only resuming it releases them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thread_locks: Vec<TaskThreadLock>,
}

/// What a task awaiting `loop.run_in_executor(pool, fn)` waits for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutorWait {
    /// The executor's `concurrent.futures.Future`.
    pub future: u64,
    /// The pool's work queue (`PyPool::queue`) and its name.
    pub pool: u64,
    pub pool_name: String,
    /// The callable's qualname, when read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callable: Option<String>,
    /// The worker running it; none: still queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<u32>,
}

/// A `threading.Lock`/`RLock` held by a `with` block of a suspended
/// coroutine frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskThreadLock {
    pub lock: u64,
    pub kind: super::python::PyLockKind,
    /// As that frame spells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The frame (index in the task's chain) whose `with` holds it.
    pub frame: usize,
    /// The `with` statement's line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopView {
    pub addr: u64,
    /// The thread inside its `run_forever`, if any.
    pub tid: Option<u32>,
    /// The task running now (`asyncio.tasks._current_tasks`).
    pub current: Option<u64>,
    /// Handles ready to run and timers scheduled.
    pub ready: Option<u64>,
    pub timers: Option<u64>,
    /// Its thread sits in epoll_wait (read from /proc by `dump`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polling: Option<bool>,
    pub tasks: Vec<TaskView>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncView {
    pub loops: Vec<LoopView>,
    /// Set when the tasks could not be read: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl AsyncView {
    pub fn task(&self, addr: u64) -> Option<(&LoopView, &TaskView)> {
        self.loops
            .iter()
            .find_map(|l| Some((l, l.tasks.iter().find(|t| t.addr == addr)?)))
    }

    /// The task whose suspended coroutine holds `threading` lock `lock`
    /// in a `with` block, its loop, and how it holds it.
    pub fn thread_lock_holder(&self, lock: u64) -> Option<(&LoopView, &TaskView, &TaskThreadLock)> {
        self.loops.iter().find_map(|l| {
            l.tasks.iter().find_map(|t| {
                let h = t.thread_locks.iter().find(|h| h.lock == lock)?;
                Some((l, t, h))
            })
        })
    }

    /// The loop `tid` runs.
    pub fn loop_of(&self, tid: u32) -> Option<&LoopView> {
        self.loops.iter().find(|l| l.tid == Some(tid))
    }

    /// Await cycles: each a list of (task, edge to the next task), in
    /// order, first task the lowest address. Every task of a cycle is
    /// pending and waits for the next one: none can ever finish.
    pub fn cycles(&self) -> Vec<Vec<(u64, TaskEdge)>> {
        let mut by: HashMap<u64, &TaskView> = HashMap::new();
        for l in &self.loops {
            for t in &l.tasks {
                by.insert(t.addr, t);
            }
        }
        let mut out: Vec<Vec<(u64, TaskEdge)>> = Vec::new();
        let mut seen: HashSet<Vec<u64>> = HashSet::new();
        let mut starts: Vec<u64> = by.keys().copied().collect();
        starts.sort_unstable();
        for s in starts {
            // Depth-first along waits_for edges, looking for a way back to s.
            let mut path: Vec<(u64, TaskEdge)> = Vec::new();
            let mut visited = HashSet::new();
            if find_back(&by, s, s, &mut path, &mut visited) {
                let mut key: Vec<u64> = path.iter().map(|e| e.0).collect();
                key.sort_unstable();
                if seen.insert(key) {
                    out.push(path);
                }
            }
        }
        out
    }
}

fn find_back(
    by: &HashMap<u64, &TaskView>,
    start: u64,
    at: u64,
    path: &mut Vec<(u64, TaskEdge)>,
    visited: &mut HashSet<u64>,
) -> bool {
    let Some(t) = by.get(&at) else {
        return false;
    };
    if t.state != TaskState::Pending || !visited.insert(at) || path.len() > MAX_CHAIN {
        return false;
    }
    for e in &t.waits_for {
        path.push((at, e.clone()));
        // Only cycles through their lowest task, so each is found once.
        if e.task == start || (e.task > start && find_back(by, start, e.task, path, visited)) {
            return true;
        }
        path.pop();
    }
    false
}
