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

/// The Task fields the reader uses, wherever their offsets come from.
#[derive(Clone, Copy, Debug)]
struct TaskOffsets {
    fut_loop: u64,
    fut_state: u64,
    fut_dict: Option<u64>,
    fut_waiter: u64,
    coro: u64,
    name: u64,
}

struct Asyncio<'a, 'r, 'm, M: Mem> {
    w: &'a mut Walk<'r, 'm, M>,
    frames: usize,
    t: TaskOffsets,
}

/// What a task's chain ends on.
struct Chain {
    frames: Vec<RawFrame>,
    running: bool,
}

impl<M: Mem> Asyncio<'_, '_, '_, M> {
    fn r(&self) -> &Reader<'_, M> {
        self.w.r
    }

    fn view(&mut self, interp: u64, threads: &[RawThread]) -> Option<AsyncView> {
        let l = *self.r().l;
        let modules = self.r().u64(interp + l.interp_modules)?;
        let m = self.r().str_dict(modules)?;
        let tasks_mod = m.iter().find(|(k, _)| k == "asyncio.tasks")?.1;
        let g = self.r().u64(tasks_mod + l.module_dict)?;
        let globals = self.r().str_dict(g)?;
        let get = |n: &str| globals.iter().find(|(k, _)| k == n).map(|x| x.1);
        let mut tasks: Vec<u64> = Vec::new();
        // 3.14+: the task lists, and each thread's running loop and task.
        let mut running: Vec<(u32, u64, u64)> = Vec::new();
        let mut note = None;
        if l.task.coro.is_none() {
            match self.debug_offsets() {
                Some(d) => {
                    self.t.coro = d.task_coro;
                    self.t.name = d.task_name;
                    running = self.task_lists(interp, &d, &mut tasks);
                }
                None => {
                    note = Some(format!(
                        "asyncio tasks not read: no `.AsyncioDebug` section found in the \
                         process's `_asyncio` module (CPython 3.{} keeps its tasks in lists \
                         whose offsets only that section gives)",
                        l.minor
                    ));
                }
            }
        }
        for ws in ["_all_tasks", "_scheduled_tasks"] {
            if let Some(ws) = get(ws)
                && let Some(data) = self.attr(ws, "data")
            {
                for r in self.set(data) {
                    if let Some(t) = self.r().u64(r + l.weakref_object)
                        && self.r().header(t).is_some()
                    {
                        tasks.push(t);
                    }
                }
            }
        }
        if let Some(eager) = get("_eager_tasks") {
            tasks.extend(self.set(eager));
        }
        let mut seen = HashSet::new();
        tasks.retain(|t| seen.insert(*t));
        tasks.truncate(MAX_TASKS);
        let mut current: HashMap<u64, u64> = get("_current_tasks")
            .and_then(|d| self.r().dict(d))
            .unwrap_or_default()
            .into_iter()
            .collect();
        for &(_, lp, task) in &running {
            if lp != 0 && task != 0 {
                current.insert(lp, task);
            }
        }

        // Loops: by their tasks, and by the threads inside `run_forever`.
        let mut loops: Vec<LoopView> = Vec::new();
        for t in threads {
            for f in &t.frames {
                if f.frame.function.ends_with("BaseEventLoop.run_forever")
                    && let Some(lp) = self_of(f)
                    && !loops.iter().any(|x| x.addr == lp)
                {
                    loops.push(LoopView {
                        addr: lp,
                        tid: Some(t.tid),
                        ..Default::default()
                    });
                }
            }
        }
        // 3.14+: the loop each thread runs, as the thread state records it.
        for &(tid, lp, _) in &running {
            match loops.iter_mut().find(|x| x.addr == lp) {
                Some(x) => {
                    x.tid.get_or_insert(tid);
                }
                None if lp != 0 => loops.push(LoopView {
                    addr: lp,
                    tid: Some(tid),
                    ..Default::default()
                }),
                None => {}
            }
        }
        let mut chains: Vec<(u64, Chain)> = Vec::new();
        let mut i = 0;
        while i < tasks.len() {
            let t = tasks[i];
            i += 1;
            let Some(v) = self.task(t) else {
                continue;
            };
            let lp = self.r().u64(t + self.t.fut_loop).unwrap_or(0);
            let chain = self.chain(t);
            // 3.14+: a finished task leaves its list; the ones a task's
            // frames still refer to are found there.
            if l.task.coro.is_none() {
                for f in &chain.frames {
                    for x in self.task_refs(f) {
                        if tasks.len() < MAX_TASKS && seen.insert(x) {
                            tasks.push(x);
                        }
                    }
                }
                if i == tasks.len() {
                    for th in threads {
                        for f in &th.frames {
                            for x in self.task_refs(f) {
                                if tasks.len() < MAX_TASKS && seen.insert(x) {
                                    tasks.push(x);
                                }
                            }
                        }
                    }
                }
            }
            let i = match loops.iter().position(|x| x.addr == lp) {
                Some(i) => i,
                None => {
                    loops.push(LoopView {
                        addr: lp,
                        ..Default::default()
                    });
                    loops.len() - 1
                }
            };
            loops[i].tasks.push(v);
            chains.push((t, chain));
        }
        for lv in &mut loops {
            lv.current = current.get(&lv.addr).copied();
            let attrs = self.w.attrs(lv.addr).unwrap_or_default();
            let len = |n: &str| {
                let v = attrs.iter().find(|(k, _)| k == n)?.1;
                self.w.r.u64(v + 16)
            };
            lv.ready = len("_ready");
            lv.timers = len("_scheduled");
        }
        self.waits(&mut loops, &chains);
        for lv in &mut loops {
            lv.tasks
                .sort_by(|a, b| a.name.cmp(&b.name).then(a.addr.cmp(&b.addr)));
        }
        tracing::debug!("asyncio: {} tasks, {} frames", tasks.len(), self.frames);
        Some(AsyncView { loops, note })
    }

    /// The target's `_Py_AsyncioModuleDebugOffsets`: its `_asyncio`
    /// extension module's `.AsyncioDebug` section, else the interpreter's
    /// or libpython's (where `_asyncio` is built in).
    fn debug_offsets(&self) -> Option<AsyncioDebug> {
        let at = self
            .r()
            .mem
            .section(".AsyncioDebug", &["_asyncio", "python"])?;
        let d = AsyncioDebug::parse(&self.r().bytes(at, ASYNCIO_DEBUG_SIZE)?);
        tracing::debug!("asyncio debug offsets at {at:#x}: {d:?}");
        d
    }

    /// 3.14+: the tasks in every thread's list and the interpreter's, and
    /// each thread's running loop and task: (tid, loop, task).
    fn task_lists(
        &self,
        interp: u64,
        d: &AsyncioDebug,
        tasks: &mut Vec<u64>,
    ) -> Vec<(u32, u64, u64)> {
        let l = *self.r().l;
        let mut out = Vec::new();
        let mut ts = self.r().u64(interp + l.interp_threads_head).unwrap_or(0);
        let mut seen = HashSet::new();
        while Reader::<M>::ptr_ok(ts) && seen.insert(ts) && seen.len() < 4096 {
            let tid = self.r().u64(ts + l.ts_native_thread_id).unwrap_or(0) as u32;
            let lp = self.r().u64(ts + d.ts_running_loop).unwrap_or(0);
            let task = self.r().u64(ts + d.ts_running_task).unwrap_or(0);
            out.push((tid, lp, task));
            self.list(ts + d.ts_tasks_head, d.task_node, tasks);
            ts = self.r().u64(ts + l.ts_next).unwrap_or(0);
        }
        self.list(interp + d.interp_tasks_head, d.task_node, tasks);
        out
    }

    /// The tasks of a `struct llist_node` list whose head is at `head`
    /// (each task's node at `node` in it).
    fn list(&self, head: u64, node: u64, tasks: &mut Vec<u64>) {
        let mut n = self.r().u64(head).unwrap_or(0);
        let mut seen = HashSet::new();
        while n != head && Reader::<M>::ptr_ok(n) && tasks.len() < MAX_TASKS && seen.insert(n) {
            let t = n - node;
            if self.r().header(t).is_some() {
                tasks.push(t);
            }
            n = self.r().u64(n).unwrap_or(0);
        }
    }

    /// The C tasks frame `f` refers to: its locals, and the items of a
    /// list or tuple local.
    fn task_refs(&self, f: &RawFrame) -> Vec<u64> {
        let is_task = |x: u64| self.r().is_type(x, "_asyncio.Task");
        let mut out = Vec::new();
        for &(_, v) in &f.locals {
            if is_task(v) {
                out.push(v);
                continue;
            }
            let items = match self.r().obj_type_name(v).as_deref() {
                Some("list") => self.list_items(v).unwrap_or_default(),
                Some("tuple") => self.r().tuple(v).unwrap_or_default(),
                _ => continue,
            };
            out.extend(items.into_iter().take(MAX_CHAIN).filter(|&x| is_task(x)));
        }
        out
    }

    fn attr(&mut self, obj: u64, name: &str) -> Option<u64> {
        self.w
            .attrs(obj)?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|x| x.1)
    }

    /// The keys of a `set` object.
    fn set(&self, obj: u64) -> Vec<u64> {
        let l = *self.r().l;
        if !self.r().is_type(obj, "set") {
            return Vec::new();
        }
        let (Some(mask), Some(table)) = (
            self.r().u64(obj + l.set_mask),
            self.r().u64(obj + l.set_table),
        ) else {
            return Vec::new();
        };
        if mask >= MAX_SET {
            return Vec::new();
        }
        let Some(b) = self.r().bytes(table, ((mask + 1) * 16) as usize) else {
            return Vec::new();
        };
        b.chunks_exact(16)
            .filter_map(|e| u64_at(e, 0))
            .filter(|&k| {
                k != 0
                    && !self
                        .r()
                        .obj_type_name(k)
                        .is_some_and(|n| n.contains("dummy"))
            })
            .collect()
    }

    /// Name, coroutine, state of a task object.
    fn task(&mut self, t: u64) -> Option<TaskView> {
        let ty = self.r().obj_type_name(t)?;
        let coro = self.r().u64(t + self.t.coro)?;
        let coro_ty = self.r().obj_type_name(coro).unwrap_or_default();
        // A subclass of the C Task keeps its layout; anything else is not read.
        if ty != "_asyncio.Task" && coro_ty != "coroutine" {
            return None;
        }
        let state = match self.r().bytes(t + self.t.fut_state, 4)?.first()? {
            0 => TaskState::Pending,
            1 => TaskState::Cancelled,
            2 => TaskState::Done,
            _ => return None,
        };
        let name_obj = self.r().u64(t + self.t.name)?;
        let name = self
            .r()
            .string(name_obj)
            // 3.13 names unnamed tasks lazily: an int n means "Task-n".
            .or_else(|| self.r().long(name_obj).map(|n| format!("Task-{n}")))
            .unwrap_or_else(|| format!("<task {t:#x}>"));
        let coro_name = self.coro_name(coro).unwrap_or_else(|| coro_ty.clone());
        Some(TaskView {
            addr: t,
            name,
            coro: coro_name,
            state,
            chain: Vec::new(),
            waits_for: Vec::new(),
            waits_lock: None,
            holds: Vec::new(),
            label: None,
            running: false,
        })
    }

    fn coro_name(&self, coro: u64) -> Option<String> {
        let l = *self.r().l;
        if !self.is_gen(coro) {
            return None;
        }
        let code = self.r().u64(coro + l.gen_iframe + l.frame_code)?;
        self.r().string(self.r().u64(code + l.code_qualname)?)
    }

    fn is_gen(&self, obj: u64) -> bool {
        matches!(
            self.r().obj_type_name(obj).as_deref(),
            Some("coroutine" | "generator")
        )
    }

    /// The coroutine chain of task `t`: each suspended coroutine's frame,
    /// following what it awaits (the top of its value stack) down to a
    /// future or a running coroutine.
    fn chain(&mut self, t: u64) -> Chain {
        let l = *self.r().l;
        let mut out = Chain {
            frames: Vec::new(),
            running: false,
        };
        let Some(mut obj) = self.r().u64(t + self.t.coro) else {
            return out;
        };
        let mut seen = HashSet::new();
        while out.frames.len() < MAX_CHAIN && seen.insert(obj) {
            let ty = self.r().obj_type_name(obj).unwrap_or_default();
            match ty.as_str() {
                "coroutine" | "generator" => {
                    let Some(state) = self.r().u8(obj + l.gen_frame_state) else {
                        break;
                    };
                    let state = state as i8;
                    if state >= l.frame_executing {
                        // Executing (its frames are on a thread), or finished.
                        out.running = state == l.frame_executing;
                        break;
                    }
                    let f = obj + l.gen_iframe;
                    let Some(b) = self.r().bytes(f, l.frame_localsplus as usize) else {
                        break;
                    };
                    let Some(rf) = self.w.frame(f, &b) else {
                        break;
                    };
                    self.frames += 1;
                    let awaiting = self.yielding_from(state, f, &rf);
                    // 3.15 pushes a NULL above the awaitable (PUSH_NULL
                    // before SEND): what it awaits is just below.
                    let top = match rf.stack.as_slice() {
                        [.., a, 0] if l.minor >= 15 => Some(*a),
                        s => s.last().copied(),
                    };
                    tracing::trace!(
                        "asyncio chain: {} state {state} awaiting {awaiting} top {:?} ({:?})",
                        rf.frame.function,
                        top,
                        top.and_then(|t| self.r().obj_type_name(t))
                    );
                    out.frames.push(rf);
                    match (awaiting, top) {
                        (true, Some(next)) => obj = next,
                        _ => break,
                    }
                }
                // `coro.__await__()`: its coroutine.
                "coroutine_wrapper" => match self.r().u64(obj + 16) {
                    Some(c) => obj = c,
                    None => break,
                },
                _ => break,
            }
        }
        out
    }

    /// A suspended generator frame is in `yield from` / `await` (not a
    /// bare `yield`): 3.13+ say so in the state (3.15 also while another
    /// thread looks at what it awaits: `..._LOCKED`), 3.11/3.12 by the RESUME
    /// after the YIELD_VALUE (oparg >= 2; its opcode is RESUME, or
    /// RESUME_QUICK once 3.11 quickened the code).
    fn yielding_from(&self, state: i8, frame: u64, rf: &RawFrame) -> bool {
        let l = *self.r().l;
        if rf.stack.is_empty() {
            return false;
        }
        if let Some(yf) = l.frame_suspended_yield_from {
            return state == yf || Some(state) == l.frame_suspended_yield_from_locked;
        }
        if state != l.frame_suspended {
            return false;
        }
        let Some(instr) = self.r().u64(frame + l.frame_instr) else {
            return false;
        };
        // 3.11 quickens hot RESUMEs into RESUME_QUICK: the oparg tells, and
        // only awaitable objects are followed from the top of the stack.
        self.r().bytes(instr + 2, 2).is_some_and(|b| b[1] >= 2)
    }

    /// What each pending task waits for, the locks tasks hold, labels.
    fn waits(&mut self, loops: &mut [LoopView], chains: &[(u64, Chain)]) {
        let task_set: HashSet<u64> = chains.iter().map(|c| c.0).collect();
        // Held asyncio locks: `__aexit__` bound to a lock on a chain's stacks.
        let mut held: HashMap<u64, Vec<AsyncLock>> = HashMap::new();
        let mut waiting: HashMap<u64, AsyncLock> = HashMap::new();
        for (t, c) in chains {
            let mut exits: Vec<(usize, u64)> = Vec::new();
            for (fi, f) in c.frames.iter().enumerate() {
                for (k, &v) in f.stack.iter().enumerate() {
                    if let Some(lock) = self.aexit_lock(v, f.stack.get(k + 1).copied()) {
                        exits.push((fi, lock));
                    }
                }
            }
            // Waiting in Lock.acquire: the innermost `__aexit__` of that lock
            // belongs to the `async with` being entered, not one held.
            if let Some(f) = c.frames.last()
                && f.frame.function == "Lock.acquire"
                && f.frame.file.ends_with("locks.py")
                && let Some(lock) = self_of(f)
            {
                if let Some(k) = exits.iter().rposition(|e| e.1 == lock) {
                    exits.remove(k);
                }
                // The program's frame entering it (outside asyncio's own code).
                let caller = c
                    .frames
                    .iter()
                    .rposition(|f| !f.frame.file.contains("/asyncio/"));
                let name = caller.and_then(|i| self.name_in(&c.frames[i], lock));
                waiting.insert(
                    *t,
                    AsyncLock {
                        addr: lock,
                        name,
                        frame: caller,
                    },
                );
            }
            let mut hs: Vec<AsyncLock> = Vec::new();
            for (fi, lock) in exits {
                if hs.iter().any(|h| h.addr == lock) || !self.lock_locked(lock) {
                    continue;
                }
                let name = self.name_in(&c.frames[fi], lock);
                hs.push(AsyncLock {
                    addr: lock,
                    name,
                    frame: Some(fi),
                });
            }
            held.insert(*t, hs);
        }
        // What each task refers to, read once a task awaits a bare future.
        let mut owners: Option<Owners> = None;
        let holder_of = |lock: u64| {
            held.iter()
                .find(|(_, hs)| hs.iter().any(|h| h.addr == lock))
                .map(|x| *x.0)
        };
        for lv in loops.iter_mut() {
            for tv in &mut lv.tasks {
                let Some((_, c)) = chains.iter().find(|c| c.0 == tv.addr) else {
                    continue;
                };
                tv.chain = c.frames.iter().map(|f| f.frame.clone()).collect();
                tv.running = c.running;
                tv.holds = held.get(&tv.addr).cloned().unwrap_or_default();
                if tv.state != TaskState::Pending {
                    continue;
                }
                if let Some(w) = waiting.get(&tv.addr) {
                    tv.waits_lock = Some(w.clone());
                    if let Some(h) = holder_of(w.addr) {
                        tv.waits_for.push(TaskEdge {
                            task: h,
                            why: Why::Lock {
                                lock: w.addr,
                                name: w.name.clone(),
                            },
                        });
                    }
                }
                let waiter = self.r().u64(tv.addr + self.t.fut_waiter).unwrap_or(0);
                if waiter != 0 && tv.waits_for.is_empty() {
                    if task_set.contains(&waiter) {
                        tv.waits_for.push(TaskEdge {
                            task: waiter,
                            why: Why::Awaits,
                        });
                    } else if let Some(children) = self.gather_children(waiter) {
                        for ch in children {
                            if task_set.contains(&ch) {
                                tv.waits_for.push(TaskEdge {
                                    task: ch,
                                    why: Why::Gather,
                                });
                            }
                        }
                    } else if !waiting.contains_key(&tv.addr) {
                        // A future only one other task refers to: that task
                        // is the one that can complete it.
                        let owners = match &owners {
                            Some(o) => o,
                            None => owners.insert(Owners::new(
                                chains
                                    .iter()
                                    .map(|(t, oc)| (*t, self.refs(*t, oc)))
                                    .collect(),
                            )),
                        };
                        if let Some(owner) = owners.owner(tv.addr, waiter) {
                            // As the awaiting task names it, else as its owner does.
                            let own = chains.iter().find(|x| x.0 == owner).map(|x| &x.1);
                            let name = c
                                .frames
                                .iter()
                                .rev()
                                .chain(own.into_iter().flat_map(|o| o.frames.iter().rev()))
                                .find_map(|f| self.name_in(f, waiter));
                            tv.waits_for.push(TaskEdge {
                                task: owner,
                                why: Why::Future { fut: waiter, name },
                            });
                        }
                    }
                }
                if tv.waits_for.is_empty() && tv.waits_lock.is_none() {
                    tv.label = self.label(&c.frames);
                }
            }
        }
    }

    /// What task `t` refers to from its coroutine frames (its locals, a
    /// closure cell's content), what it reaches one level further (a list,
    /// tuple, set or dict's items, an instance's attributes: a list of
    /// pending futures, `self._waiter`), and the future it awaits.
    fn refs(&mut self, t: u64, c: &Chain) -> Refs {
        let mut r = Refs {
            awaits: self.r().u64(t + self.t.fut_waiter).unwrap_or(0),
            ..Default::default()
        };
        for f in &c.frames {
            for &(_, v) in &f.locals {
                let v = match self.r().obj_type_name(v).as_deref() {
                    Some("cell") => match self.r().u64(v + 16) {
                        Some(x) if x != 0 => x,
                        _ => continue,
                    },
                    _ => v,
                };
                if !r.locals.insert(v) {
                    continue;
                }
                let items = match self.r().obj_type_name(v).as_deref() {
                    Some("list") => self.list_items(v).unwrap_or_default(),
                    Some("tuple") => self.r().tuple(v).unwrap_or_default(),
                    Some("set") => self.set(v),
                    Some("dict") => self
                        .r()
                        .dict(v)
                        .unwrap_or_default()
                        .into_iter()
                        .flat_map(|(k, x)| [k, x])
                        .collect(),
                    _ => self
                        .w
                        .attrs(v)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|x| x.1)
                        .collect(),
                };
                r.reach.extend(items);
            }
        }
        r
    }

    /// `_GatheringFuture._children`.
    fn gather_children(&mut self, fut: u64) -> Option<Vec<u64>> {
        let attrs = match self.t.fut_dict {
            Some(off) => {
                let d = self.r().u64(fut + off)?;
                if d == 0 {
                    return None;
                }
                self.r().str_dict(d)?
            }
            None => self.w.attrs(fut)?,
        };
        let list = attrs.iter().find(|(k, _)| k == "_children")?.1;
        self.list_items(list)
    }

    fn list_items(&self, obj: u64) -> Option<Vec<u64>> {
        if !self.r().is_type(obj, "list") {
            return None;
        }
        let n = self.r().u64(obj + 16)?;
        let items = self.r().u64(obj + 24)?;
        if n > MAX_SET {
            return None;
        }
        if n == 0 {
            return Some(Vec::new());
        }
        let b = self.r().bytes(items, n as usize * 8)?;
        Some(b.chunks_exact(8).filter_map(|c| u64_at(c, 0)).collect())
    }

    /// The asyncio.Lock whose `__aexit__` value `v` is (a bound method of a
    /// Lock, or of a Condition/Semaphore-like object wrapping one). 3.14+
    /// keep `__aexit__` unbound, its `self` in the slot above (`above`).
    fn aexit_lock(&mut self, v: u64, above: Option<u64>) -> Option<u64> {
        let l = *self.r().l;
        let (func, this) = match self.r().obj_type_name(v)?.as_str() {
            "method" => (self.r().u64(v + l.method_func)?, None),
            "function" if l.stackref_tag != 0 => (v, Some(above?)),
            _ => return None,
        };
        if !self.r().is_type(func, "function") {
            return None;
        }
        let q = self.r().string(self.r().u64(func + l.func_qualname)?)?;
        if !q.ends_with(".__aexit__") {
            return None;
        }
        let this = match this {
            Some(t) => t,
            None => self.r().u64(v + l.method_self)?,
        };
        self.as_lock(this)
    }

    fn as_lock(&mut self, obj: u64) -> Option<u64> {
        match self.r().obj_type_name(obj)?.as_str() {
            "Lock" if self.attr(obj, "_locked").is_some() => Some(obj),
            "Condition" => {
                let inner = self.attr(obj, "_lock")?;
                self.as_lock(inner)
            }
            _ => None,
        }
    }

    /// asyncio.Lock `_locked` is True.
    fn lock_locked(&mut self, lock: u64) -> bool {
        let l = *self.r().l;
        let Some(b) = self.attr(lock, "_locked") else {
            return false;
        };
        self.r().is_type(b, "bool")
            && self
                .r()
                .bytes(b + l.long_digits, 4)
                .is_some_and(|d| d.iter().any(|&x| x != 0))
    }

    /// A name for `obj` in frame `f`: a local, a local's attribute, or a
    /// global of its module.
    fn name_in(&mut self, f: &RawFrame, obj: u64) -> Option<String> {
        if let Some((k, _)) = f.locals.iter().find(|(k, v)| *v == obj && k != "self") {
            return Some(k.clone());
        }
        for (k, v) in &f.locals {
            if let Some(attrs) = self.w.attrs(*v)
                && let Some((a, _)) = attrs.iter().find(|(_, av)| *av == obj)
            {
                return Some(format!("{k}.{a}"));
            }
        }
        let g = self.r().str_dict(f.globals)?;
        g.into_iter()
            .find(|(k, v)| *v == obj && !k.starts_with("__"))
            .map(|x| x.0)
    }

    /// "Event.wait on ready": the outermost asyncio library wait among the
    /// innermost frames, and its object as the calling frame names it.
    fn label(&mut self, frames: &[RawFrame]) -> Option<String> {
        let mut best: Option<(usize, &str)> = None;
        for (i, f) in frames.iter().enumerate().rev().take(6) {
            if !f.frame.file.contains("asyncio/") {
                break;
            }
            let file = f.frame.file.rsplit('/').next().unwrap_or("");
            if let Some(&(_, _, shown)) = LABELS
                .iter()
                .find(|(lf, n, _)| *lf == file && f.frame.function == *n)
            {
                best = Some((i, shown));
            }
        }
        let (i, what) = best?;
        let obj = self_of(&frames[i]);
        let name = match (obj, i.checked_sub(1)) {
            (Some(o), Some(c)) => self.name_in(&frames[c], o),
            _ => None,
        };
        Some(match name {
            Some(n) => format!("{what} on {n}"),
            None => what.to_string(),
        })
    }
}

/// Library waits that have no owner to blame: (file, function, label).
const LABELS: &[(&str, &str, &str)] = &[
    ("locks.py", "Event.wait", "Event.wait"),
    ("locks.py", "Condition.wait", "Condition.wait"),
    ("locks.py", "Condition.wait_for", "Condition.wait_for"),
    ("locks.py", "Semaphore.acquire", "Semaphore.acquire"),
    ("locks.py", "Barrier.wait", "Barrier.wait"),
    ("queues.py", "Queue.get", "Queue.get"),
    ("queues.py", "Queue.put", "Queue.put"),
    ("queues.py", "Queue.join", "Queue.join"),
    ("tasks.py", "sleep", "asyncio.sleep"),
];

/// What a task refers to, for deciding who can complete a future.
#[derive(Debug, Default)]
struct Refs {
    /// Its coroutine frames' locals.
    locals: HashSet<u64>,
    /// One level into them.
    reach: HashSet<u64>,
    /// The future it awaits (`fut_waiter`).
    awaits: u64,
}

/// Who refers to the futures tasks await.
struct Owners {
    tasks: HashMap<u64, Refs>,
    /// Awaited future -> the tasks referring to it (a local or reached).
    by: HashMap<u64, Vec<u64>>,
}

impl Owners {
    fn new(tasks: HashMap<u64, Refs>) -> Owners {
        let awaited: HashSet<u64> = tasks.values().map(|r| r.awaits).collect();
        let mut by: HashMap<u64, Vec<u64>> = HashMap::new();
        for (t, r) in &tasks {
            for x in r.locals.union(&r.reach) {
                if *x != 0 && awaited.contains(x) {
                    by.entry(*x).or_default().push(*t);
                }
            }
        }
        Owners { tasks, by }
    }

    /// The task that can complete `fut`, which `awaiter` awaits: the only
    /// other task that refers to it, keeping it in a local. A task awaiting
    /// `fut` too cannot complete it; any other task reaching it (a list, an
    /// attribute) could, and then no one task is to blame. The owner must
    /// hold it in a local: the reads do not stop the target and a busy
    /// program reuses a freed future's address at once, so blaming what is
    /// only reached (every stream reader's `_waiter`) would be fooled by
    /// torn reads.
    fn owner(&self, awaiter: u64, fut: u64) -> Option<u64> {
        let refs = |t: &u64| self.tasks.get(t);
        let mut by = self
            .by
            .get(&fut)?
            .iter()
            .filter(|t| **t != awaiter && refs(t).is_some_and(|r| r.awaits != fut));
        let t = *by.next()?;
        (by.next().is_none() && refs(&t)?.locals.contains(&fut)).then_some(t)
    }
}

fn self_of(f: &RawFrame) -> Option<u64> {
    f.locals.iter().find(|(n, _)| n == "self").map(|x| x.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(addr: u64, name: &str, waits: &[u64]) -> TaskView {
        TaskView {
            addr,
            name: name.into(),
            coro: "work".into(),
            state: TaskState::Pending,
            chain: Vec::new(),
            waits_for: waits
                .iter()
                .map(|&t| TaskEdge {
                    task: t,
                    why: Why::Awaits,
                })
                .collect(),
            waits_lock: None,
            holds: Vec::new(),
            label: None,
            running: false,
        }
    }

    #[test]
    fn cycles_are_found_once_and_only_among_pending_tasks() {
        let mut v = AsyncView {
            loops: vec![LoopView {
                addr: 1,
                tasks: vec![
                    task(30, "c", &[10]),
                    task(10, "a", &[20]),
                    task(20, "b", &[10]),
                    task(40, "d", &[30]),
                    task(50, "e", &[50]),
                ],
                ..Default::default()
            }],
            note: None,
        };
        let c = v.cycles();
        let ids: Vec<Vec<u64>> = c.iter().map(|c| c.iter().map(|e| e.0).collect()).collect();
        assert_eq!(ids, vec![vec![10, 20], vec![50]]);
        v.loops[0].tasks[2].state = TaskState::Done;
        assert_eq!(v.cycles().len(), 1);
    }

    #[test]
    fn a_future_has_an_owner_only_when_one_other_task_keeps_it() {
        let refs = |v: &[(u64, &[u64], &[u64], u64)]| {
            Owners::new(
                v.iter()
                    .map(|&(t, locals, reach, awaits)| {
                        let r = Refs {
                            locals: locals.iter().copied().collect(),
                            reach: reach.iter().copied().collect(),
                            awaits,
                        };
                        (t, r)
                    })
                    .collect(),
            )
        };
        // Task 1 awaits future 100, which task 2 keeps in a local; task 2
        // awaits 101, which task 1 keeps: an await cycle's two edges.
        let mut base = vec![
            (1, &[101, 7][..], &[][..], 100),
            (2, &[100, 8][..], &[][..], 101),
            (3, &[9][..], &[][..], 0),
        ];
        assert_eq!(refs(&base).owner(1, 100), Some(2));
        assert_eq!(refs(&base).owner(2, 101), Some(1));
        // A future no task refers to.
        assert_eq!(refs(&base).owner(1, 102), None);
        // A third task keeps it in a list (say the main task's pending
        // futures): it could complete it too.
        base[2].2 = &[100];
        assert_eq!(refs(&base).owner(1, 100), None);
        // Reached only through a list or attribute: no owner named.
        base[2].2 = &[];
        base[1].1 = &[8];
        base[1].2 = &[100];
        assert_eq!(refs(&base).owner(1, 100), None);
        // Two tasks awaiting the same future, both keeping it: neither
        // can complete it, so neither is the other's owner.
        let both = [(1, &[100][..], &[][..], 100), (2, &[100][..], &[][..], 100)];
        assert_eq!(refs(&both).owner(1, 100), None);
        assert_eq!(refs(&both).owner(2, 100), None);
    }
}
