//! The walk over an interpreter's tasks: task lists, each task's await
//! chain, what it waits for and the locks it holds.

use super::*;

/// The Task fields the reader uses, wherever their offsets come from.
#[derive(Clone, Copy, Debug)]
pub(super) struct TaskOffsets {
    pub(super) fut_loop: u64,
    pub(super) fut_state: u64,
    pub(super) fut_dict: Option<u64>,
    pub(super) fut_waiter: u64,
    pub(super) coro: u64,
    pub(super) name: u64,
}

pub(super) struct Asyncio<'a, 'r, 'm, M: Mem> {
    pub(super) w: &'a mut Walk<'r, 'm, M>,
    pub(super) frames: usize,
    pub(super) t: TaskOffsets,
}

/// What a task's chain ends on.
pub(super) struct Chain {
    pub(super) frames: Vec<RawFrame>,
    pub(super) running: bool,
}

impl<M: Mem> Asyncio<'_, '_, '_, M> {
    pub(super) fn r(&self) -> &Reader<'_, M> {
        self.w.r
    }

    pub(super) fn view(&mut self, interp: u64, threads: &[RawThread]) -> Option<AsyncView> {
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
        // Loops run from C (uvloop: no `run_forever` frame): the thread
        // running the loop's current task has its coroutine on its stack;
        // an idle one sits in `run_until_complete` called from asyncio's or
        // uvloop's `run`.
        for lv in loops.iter_mut().filter(|l| l.tid.is_none()) {
            let coro = lv
                .current
                .and_then(|c| lv.tasks.iter().find(|t| t.addr == c))
                .map(|t| t.coro.clone());
            lv.tid = match coro {
                Some(c) => threads
                    .iter()
                    .find(|t| t.frames.iter().any(|f| f.frame.function == c))
                    .map(|t| t.tid),
                None => {
                    let mut idle = threads.iter().filter(|t| {
                        t.frames.first().is_some_and(|f| {
                            let file = &f.frame.file;
                            (file.ends_with("asyncio/runners.py")
                                && matches!(f.frame.function.as_str(), "Runner.run" | "run"))
                                || (file.ends_with("uvloop/__init__.py")
                                    && f.frame.function == "run")
                        })
                    });
                    // Only when one thread can be it.
                    match (idle.next(), idle.next()) {
                        (Some(t), None) => Some(t.tid),
                        _ => None,
                    }
                }
            };
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
    pub(super) fn debug_offsets(&self) -> Option<AsyncioDebug> {
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
    pub(super) fn task_lists(
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
    pub(super) fn list(&self, head: u64, node: u64, tasks: &mut Vec<u64>) {
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
    pub(super) fn task_refs(&self, f: &RawFrame) -> Vec<u64> {
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

    pub(super) fn attr(&mut self, obj: u64, name: &str) -> Option<u64> {
        self.w
            .attrs(obj)?
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|x| x.1)
    }

    /// The keys of a `set` object.
    pub(super) fn set(&self, obj: u64) -> Vec<u64> {
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
    pub(super) fn task(&mut self, t: u64) -> Option<TaskView> {
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
            fut_waiter: None,
            executor: None,
            thread_locks: Vec::new(),
        })
    }

    pub(super) fn coro_name(&self, coro: u64) -> Option<String> {
        let l = *self.r().l;
        if !self.is_gen(coro) {
            return None;
        }
        let code = self.r().u64(coro + l.gen_iframe + l.frame_code)?;
        self.r().string(self.r().u64(code + l.code_qualname)?)
    }

    pub(super) fn is_gen(&self, obj: u64) -> bool {
        matches!(
            self.r().obj_type_name(obj).as_deref(),
            Some("coroutine" | "generator")
        )
    }

    /// The coroutine chain of task `t`: each suspended coroutine's frame,
    /// following what it awaits (the top of its value stack) down to a
    /// future or a running coroutine.
    pub(super) fn chain(&mut self, t: u64) -> Chain {
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
    pub(super) fn yielding_from(&self, state: i8, frame: u64, rf: &RawFrame) -> bool {
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
    pub(super) fn waits(&mut self, loops: &mut [LoopView], chains: &[(u64, Chain)]) {
        let task_set: HashSet<u64> = chains.iter().map(|c| c.0).collect();
        // Held asyncio locks: `__aexit__` bound to a lock on a chain's stacks.
        let mut held: HashMap<u64, Vec<AsyncLock>> = HashMap::new();
        let mut waiting: HashMap<u64, AsyncLock> = HashMap::new();
        let mut thread_held: HashMap<u64, Vec<TaskThreadLock>> = HashMap::new();
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
            // `threading` locks held across an `await` (`with lock:`).
            let mut tl: Vec<TaskThreadLock> = Vec::new();
            for (fi, f) in c.frames.iter().enumerate() {
                for (lock, kind, line) in self.w.with_locks(f) {
                    if tl.iter().any(|h| h.lock == lock) {
                        continue;
                    }
                    let name = self.name_in(f, lock);
                    tl.push(TaskThreadLock {
                        lock,
                        kind,
                        name,
                        frame: fi,
                        line,
                    });
                }
            }
            thread_held.insert(*t, tl);
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
                if tv.state == TaskState::Pending && !tv.running {
                    tv.thread_locks = thread_held.remove(&tv.addr).unwrap_or_default();
                }
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
                tv.fut_waiter = (waiter != 0).then_some(waiter);
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
    pub(super) fn refs(&mut self, t: u64, c: &Chain) -> Refs {
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
    pub(super) fn gather_children(&mut self, fut: u64) -> Option<Vec<u64>> {
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

    pub(super) fn list_items(&self, obj: u64) -> Option<Vec<u64>> {
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
    pub(super) fn aexit_lock(&mut self, v: u64, above: Option<u64>) -> Option<u64> {
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

    pub(super) fn as_lock(&mut self, obj: u64) -> Option<u64> {
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
    pub(super) fn lock_locked(&mut self, lock: u64) -> bool {
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
    pub(super) fn name_in(&mut self, f: &RawFrame, obj: u64) -> Option<String> {
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
    pub(super) fn label(&mut self, frames: &[RawFrame]) -> Option<String> {
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
pub(super) const LABELS: &[(&str, &str, &str)] = &[
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
pub(super) struct Refs {
    /// Its coroutine frames' locals.
    pub(super) locals: HashSet<u64>,
    /// One level into them.
    pub(super) reach: HashSet<u64>,
    /// The future it awaits (`fut_waiter`).
    pub(super) awaits: u64,
}

/// Who refers to the futures tasks await.
pub(super) struct Owners {
    pub(super) tasks: HashMap<u64, Refs>,
    /// Awaited future -> the tasks referring to it (a local or reached).
    pub(super) by: HashMap<u64, Vec<u64>>,
}

impl Owners {
    pub(super) fn new(tasks: HashMap<u64, Refs>) -> Owners {
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
    pub(super) fn owner(&self, awaiter: u64, fut: u64) -> Option<u64> {
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

pub(super) fn self_of(f: &RawFrame) -> Option<u64> {
    f.locals.iter().find(|(n, _)| n == "self").map(|x| x.1)
}
