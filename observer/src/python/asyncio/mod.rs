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

use super::{
    reader::{Mem, Reader, u64_at},
    walk::{RawFrame, RawThread, Walk},
};

mod tasks;
#[cfg(test)]
mod tests;

pub use observer_core::vocab::asyncio::*;
use tasks::*;

const MAX_TASKS: usize = 10_000;

const MAX_SET: u64 = 1 << 20;

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
