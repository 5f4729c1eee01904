//! asyncio from outside: every event loop's tasks (name, coroutine, state),
//! where each one awaits (the coroutine chain, file:line, as
//! `python -m asyncio pstree` prints it in 3.14), what it waits for (a
//! task, the children of a gather, an `asyncio.Lock` and the task holding
//! it, a future another task keeps), the locks it holds (`async with`), and
//! labelled library waits (Event.wait, Queue.get, ...).
//!
//! Tasks come from `asyncio.tasks` found in `sys.modules`: `_all_tasks`
//! (3.11) or `_scheduled_tasks` (3.12+, WeakSets) and `_eager_tasks`. From
//! 3.14 on, C tasks (eager ones too) are kept in linked lists instead, one
//! per thread (`_PyThreadStateImpl.asyncio_tasks_head`) plus the
//! interpreter's for tasks of threads that ended, and a finished task
//! leaves its list: the offsets come from the target's `_asyncio` module
//! (its `.AsyncioDebug` section), and finished tasks still referenced by a
//! task's or a thread's frames are shown as older versions show them. The
//! C Task's other fields are private: their offsets (layout.rs
//! `TaskLayout`) are measured on each interpreter by the tests below.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{
    reader::{Mem, Reader, u64_at},
    walk::{RawFrame, RawThread, Walk},
};
use crate::symbol::PyFrame;

mod tasks;
#[cfg(test)]
mod tests;

use tasks::*;

const MAX_TASKS: usize = 10_000;
const MAX_CHAIN: usize = 64;
const MAX_SET: u64 = 1 << 20;

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

/// The asyncio view of the interpreter, when `asyncio.tasks` is loaded.
pub(super) fn read<M: Mem>(
    w: &mut Walk<'_, '_, M>,
    interp: u64,
    threads: &[RawThread],
) -> Option<AsyncView> {
    let t = w.r.l.task;
    let mut a = Asyncio {
        w,
        frames: 0,
        t: TaskOffsets {
            fut_loop: t.fut_loop,
            fut_state: t.fut_state,
            fut_dict: t.fut_dict,
            fut_waiter: t.fut_waiter,
            coro: t.coro.unwrap_or(0),
            name: t.name.unwrap_or(0),
        },
    };
    a.view(interp, threads)
}

/// `_Py_AsyncioModuleDebugOffsets` (3.14+), as the target's `_asyncio`
/// module publishes it in its `.AsyncioDebug` section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct AsyncioDebug {
    pub task_size: u64,
    pub task_name: u64,
    pub task_awaited_by: u64,
    pub task_is_task: u64,
    pub task_awaited_by_is_set: u64,
    pub task_coro: u64,
    pub task_node: u64,
    pub interp_size: u64,
    pub interp_tasks_head: u64,
    pub ts_size: u64,
    pub ts_running_loop: u64,
    pub ts_running_task: u64,
    pub ts_tasks_head: u64,
}

/// Its size: 13 `uint64_t`s (3.14, 3.15).
pub(super) const ASYNCIO_DEBUG_SIZE: usize = 13 * 8;

impl AsyncioDebug {
    /// The struct from its bytes, if every offset lies inside the size it
    /// gives for its struct (a torn or foreign section is refused).
    pub(super) fn parse(b: &[u8]) -> Option<AsyncioDebug> {
        let v: Vec<u64> = (0..13).map(|i| u64_at(b, i * 8)).collect::<Option<_>>()?;
        let d = AsyncioDebug {
            task_size: v[0],
            task_name: v[1],
            task_awaited_by: v[2],
            task_is_task: v[3],
            task_awaited_by_is_set: v[4],
            task_coro: v[5],
            task_node: v[6],
            interp_size: v[7],
            interp_tasks_head: v[8],
            ts_size: v[9],
            ts_running_loop: v[10],
            ts_running_task: v[11],
            ts_tasks_head: v[12],
        };
        let inside = |size: u64, max: u64, fields: &[u64]| {
            size <= max && fields.iter().all(|&f| f >= 16 && f + 8 <= size)
        };
        (inside(
            d.task_size,
            4096,
            &[d.task_name, d.task_awaited_by, d.task_coro, d.task_node + 8],
        ) && d.task_is_task < d.task_size
            && d.task_awaited_by_is_set < d.task_size
            && inside(d.interp_size, 1 << 22, &[d.interp_tasks_head + 8])
            && inside(
                d.ts_size,
                1 << 16,
                &[d.ts_running_loop, d.ts_running_task, d.ts_tasks_head + 8],
            ))
        .then_some(d)
    }
}
