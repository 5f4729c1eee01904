//! `concurrent.futures`: a thread blocked in `Future.result()` or
//! `Future.exception()` waits for whoever completes that future:
//! - the ThreadPoolExecutor worker running its work item (`_WorkItem.run`,
//!   whose `future` is that future): the waiter is held up by it, as by a
//!   thread it joins;
//! - nobody yet, when the item is still in its pool's work queue;
//! - the event loop's thread, for a future of
//!   `asyncio.run_coroutine_threadsafe`, through the task that runs the
//!   coroutine (found in the future's done callback `_call_check_cancel`,
//!   whose closure keeps that task).
//!
//! Pools are read from their workers: each `_worker` frame keeps the
//! pool's work queue (a `_queue.SimpleQueue`) and a weak reference to it.

use std::collections::HashMap;

use super::{
    FutureSource, PyFutureWait, PyPool, PyQueued, PyView,
    asyncio::{AsyncView, ExecutorWait},
    reader::{Mem, u64_at},
    walk::{RawFrame, RawThread, Walk},
};

/// Python frames of `threading` a blocked `result()` sits under
/// (`Condition.wait`), at most.
const MAX_INNER: usize = 3;
/// Queued items read per pool, callbacks per future, cells per closure.
const MAX_ITEMS: u64 = 4096;
const MAX_CALLBACKS: usize = 16;

/// `PyTypeObject.tp_call` is 13 pointers after `tp_name` (tp_basicsize
/// .. tp_hash between them), the same in 3.11-3.15.
const TP_CALL_AFTER_TP_NAME: u64 = 13 * 8;

fn in_file(f: &RawFrame, tail: &str) -> bool {
    f.frame.file.ends_with(tail)
}

fn local(f: &RawFrame, name: &str) -> Option<u64> {
    f.locals
        .iter()
        .find(|(n, _)| n == name)
        .map(|x| x.1)
        .filter(|&v| v != 0)
}

fn self_of(f: &RawFrame) -> Option<u64> {
    local(f, "self")
}

/// The `concurrent.futures` call `t` is blocked in (just above
/// `threading`'s frames), as (frame index, method).
fn awaited(t: &RawThread) -> Option<(usize, &'static str)> {
    for (i, f) in t.frames.iter().enumerate().take(MAX_INNER + 1) {
        if in_file(f, "concurrent/futures/_base.py") {
            let m = match f.frame.function.as_str() {
                "Future.result" => "Future.result",
                "Future.exception" => "Future.exception",
                "wait" => "wait",
                "as_completed" => "as_completed",
                _ => return None,
            };
            return Some((i, m));
        }
        if !in_file(f, "/threading.py") {
            return None;
        }
    }
    None
}

/// A work item in a pool, by its future.
struct Item {
    pool: u64,
    callable: Option<String>,
    /// The thread running it; None: queued.
    runner: Option<u32>,
}

impl<M: Mem> Walk<'_, '_, M> {
    fn attr(&mut self, obj: u64, name: &str) -> Option<u64> {
        self.attrs(obj)?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|x| x.1)
    }

    fn list(&self, obj: u64) -> Option<Vec<u64>> {
        if !self.r.is_type(obj, "list") {
            return None;
        }
        let n = self.r.u64(obj + 16)?;
        if n > MAX_ITEMS {
            return None;
        }
        if n == 0 {
            return Some(Vec::new());
        }
        let b = self.r.bytes(self.r.u64(obj + 24)?, n as usize * 8)?;
        Some(b.chunks_exact(8).filter_map(|c| u64_at(c, 0)).collect())
    }

    /// The items of a `_queue.SimpleQueue`, oldest first. 3.11/3.12 keep a
    /// list and the index of its head; 3.13+ a ring buffer.
    fn simple_queue(&self, q: u64) -> Option<Vec<u64>> {
        if !self.r.is_type(q, "_queue.SimpleQueue") {
            return None;
        }
        if self.r.l.minor <= 12 {
            let all = self.list(self.r.u64(q + 32)?)?;
            let pos = self.r.u64(q + 40)? as usize;
            return Some(all.get(pos..)?.to_vec());
        }
        // RingBuf { put_idx, get_idx, items, items_cap, num_items } at 24.
        let b = self.r.bytes(q + 24, 40)?;
        let (get, items, cap, n) = (
            u64_at(&b, 8)?,
            u64_at(&b, 16)?,
            u64_at(&b, 24)?,
            u64_at(&b, 32)?,
        );
        if n > cap || cap > MAX_ITEMS * 4 || get >= cap.max(1) {
            return None;
        }
        if n == 0 {
            return Some(Vec::new());
        }
        let all = self.r.bytes(items, cap as usize * 8)?;
        (0..n)
            .map(|i| u64_at(&all, ((get + i) % cap) * 8))
            .collect()
    }

    /// A callable's qualname: a function, a bound method, a
    /// `functools.partial` of one; else its type's name.
    fn callable_name(&self, obj: u64) -> Option<String> {
        let l = *self.r.l;
        let ty = self.r.obj_type_name(obj)?;
        let func = match ty.as_str() {
            "function" => obj,
            "method" => self.r.u64(obj + l.method_func)?,
            // partialobject: { head, fn, args, kw, ... }
            "functools.partial" => return self.callable_name(self.r.u64(obj + 16)?),
            // A builtin (`time.sleep`): its PyMethodDef's ml_name.
            "builtin_function_or_method" => {
                let name = self.r.u64(self.r.u64(obj + l.cfunc_ml)?)?;
                let b = self.r.bytes(name, 64)?;
                let end = b.iter().position(|&c| c == 0)?;
                return std::str::from_utf8(&b[..end]).ok().map(str::to_string);
            }
            // A callable object (a class, an instance with `__call__`): its
            // type's name. A read torn by the running program can land on
            // any object: one whose type has no tp_call names no job.
            _ => {
                let (_, t) = self.r.header(obj)?;
                let call = self.r.u64(t + l.type_name + TP_CALL_AFTER_TP_NAME)?;
                return (call != 0).then_some(ty);
            }
        };
        self.r.string(self.r.u64(func + l.func_qualname)?)
    }

    /// What a work item calls: `fn` (up to 3.13), `task[0]` (3.14+).
    fn work_callable(&mut self, item: u64) -> Option<String> {
        let f = match self.attr(item, "fn") {
            Some(f) => f,
            None => *self.r.tuple(self.attr(item, "task")?)?.first()?,
        };
        self.callable_name(f)
    }

    /// The asyncio task a `run_coroutine_threadsafe` future is chained to:
    /// kept by the closure of its done callback.
    fn chained_task(&mut self, fut: u64) -> Option<u64> {
        let cbs = self.attr(fut, "_done_callbacks")?;
        for cb in self.list(cbs)?.into_iter().take(MAX_CALLBACKS) {
            // 3.12+ keep (callback, context) pairs in asyncio, plain
            // callables here; accept both.
            let f = match self.r.tuple(cb) {
                Some(t) => *t.first()?,
                None => cb,
            };
            for v in self.closure(f) {
                if self
                    .r
                    .obj_type_name(v)
                    .is_some_and(|n| n == "_asyncio.Task" || n == "Task")
                {
                    return Some(v);
                }
            }
        }
        None
    }

    /// Closure cells of function `f`. func_closure: four fields after
    /// func_qualname in every version (globals, builtins, name, qualname,
    /// code, defaults, kwdefaults, closure).
    fn closure(&self, f: u64) -> Vec<u64> {
        if !self.r.is_type(f, "function") {
            return Vec::new();
        }
        self.r
            .u64(f + self.r.l.func_qualname + 32)
            .and_then(|c| self.r.tuple(c))
            .unwrap_or_default()
            .into_iter()
            .take(MAX_CALLBACKS)
            .filter_map(|cell| self.r.u64(cell + 16))
            .collect()
    }

    /// The items of a `collections.deque`: blocks of 64 slots after a left
    /// link, then a right link.
    fn deque(&self, d: u64) -> Option<Vec<u64>> {
        if !self.r.is_type(d, "collections.deque") {
            return None;
        }
        let b = self.r.bytes(d + 16, 32)?;
        let (n, mut block, mut i) = (u64_at(&b, 0)?, u64_at(&b, 8)?, u64_at(&b, 24)?);
        if n > MAX_ITEMS || i >= 64 {
            return None;
        }
        let mut out = Vec::new();
        while (out.len() as u64) < n {
            let data = self.r.bytes(block, 8 + 64 * 8 + 8)?;
            while i < 64 && (out.len() as u64) < n {
                out.push(u64_at(&data, 8 + i * 8)?);
                i += 1;
            }
            block = u64_at(&data, 8 + 64 * 8)?;
            i = 0;
        }
        Some(out)
    }

    /// A `run_coroutine_threadsafe` future whose callback has not run yet:
    /// the loop whose ready queue holds a handle calling a closure that
    /// keeps `fut` (and the coroutine). Its thread and the coroutine's
    /// qualname.
    fn pending_on_loop(&mut self, aio: &AsyncView, fut: u64) -> Option<(u32, Option<String>)> {
        let l = *self.r.l;
        for lp in &aio.loops {
            let Some(tid) = lp.tid else { continue };
            let Some(ready) = self.attr(lp.addr, "_ready") else {
                continue;
            };
            for h in self.deque(ready).unwrap_or_default() {
                // Handle keeps its callback in a slot: look at every word.
                let Some(size) = self
                    .r
                    .type_of(h)
                    .and_then(|t| self.r.u64(t + l.type_basicsize))
                    .filter(|&s| (16..=256).contains(&s))
                else {
                    continue;
                };
                let Some(b) = self.r.bytes(h + 16, size as usize - 16) else {
                    continue;
                };
                for cb in b.chunks_exact(8).filter_map(|c| u64_at(c, 0)) {
                    let cells = self.closure(cb);
                    if !cells.contains(&fut) {
                        continue;
                    }
                    let coro = cells.iter().find_map(|&c| {
                        self.r.obj_type_name(c).filter(|n| n == "coroutine")?;
                        let code = self
                            .r
                            .stackref(self.r.u64(c + l.gen_iframe + l.frame_code)?);
                        self.r.string(self.r.u64(code + l.code_qualname)?)
                    });
                    return Some((tid, coro));
                }
            }
        }
        None
    }

    /// The keys of a `set`.
    fn set(&self, obj: u64) -> Vec<u64> {
        let l = *self.r.l;
        if !self.r.is_type(obj, "set") {
            return Vec::new();
        }
        let (Some(mask), Some(table)) =
            (self.r.u64(obj + l.set_mask), self.r.u64(obj + l.set_table))
        else {
            return Vec::new();
        };
        if mask >= MAX_ITEMS * 4 {
            return Vec::new();
        }
        let Some(b) = self.r.bytes(table, ((mask + 1) * 16) as usize) else {
            return Vec::new();
        };
        b.chunks_exact(16)
            .filter_map(|e| u64_at(e, 0))
            .filter(|&k| k != 0 && !self.r.obj_type_name(k).is_some_and(|n| n.contains("dummy")))
            .collect()
    }

    /// The futures frame `f` of `method` waits for, and whether it needs
    /// all of them (`wait` but FIRST_COMPLETED) or any (`as_completed`,
    /// FIRST_COMPLETED). Done ones are left out.
    fn waited_futures(&mut self, f: &RawFrame, method: &str) -> Option<(Vec<u64>, bool)> {
        let (set, all) = match method {
            "wait" => {
                let any = local(f, "return_when")
                    .and_then(|v| self.r.string(v))
                    .is_some_and(|w| w == "FIRST_COMPLETED");
                (local(f, "not_done")?, !any)
            }
            "as_completed" => (local(f, "pending")?, false),
            _ => return Some((vec![self_of(f)?], true)),
        };
        let mut futs = self.set(set);
        futs.retain(|&x| self.state_is(x, &["PENDING", "RUNNING"]));
        futs.sort_unstable();
        (!futs.is_empty()).then_some((futs, all))
    }

    /// Whether a `concurrent.futures.Future`'s `_state` is one of `states`.
    fn state_is(&mut self, fut: u64, states: &[&str]) -> bool {
        self.attr(fut, "_state")
            .and_then(|v| self.r.string(v))
            .is_some_and(|st| states.contains(&st.as_str()))
    }

    /// Tasks awaiting `loop.run_in_executor(...)`: the asyncio future a
    /// task awaits is kept by the done callback (`_call_set_state`) of the
    /// executor's future. (task, label naming the callable, the pool and
    /// the worker running it, and the wait: an edge to that worker).
    fn executor_awaits(
        &mut self,
        aio: &AsyncView,
        items: &HashMap<u64, Item>,
        pools: &[PyPool],
    ) -> Vec<(u64, String, ExecutorWait)> {
        let awaited: Vec<u64> = aio
            .loops
            .iter()
            .flat_map(|l| &l.tasks)
            .filter_map(|t| t.fut_waiter)
            .collect();
        if awaited.is_empty() {
            return Vec::new();
        }
        let mut by_waiter: HashMap<u64, u64> = HashMap::new();
        for &cf in items.keys() {
            let Some(cbs) = self.attr(cf, "_done_callbacks") else {
                continue;
            };
            for cb in self
                .list(cbs)
                .unwrap_or_default()
                .into_iter()
                .take(MAX_CALLBACKS)
            {
                for v in self.closure(cb) {
                    if awaited.contains(&v) {
                        by_waiter.insert(v, cf);
                    }
                }
            }
        }
        let mut out = Vec::new();
        for t in aio.loops.iter().flat_map(|l| &l.tasks) {
            let Some((&cf, it)) = t
                .fut_waiter
                .and_then(|w| by_waiter.get(&w))
                .and_then(|cf| Some((cf, items.get(cf)?)))
            else {
                continue;
            };
            let pool = pools
                .iter()
                .find(|p| p.queue == it.pool)
                .map(|p| p.label())
                .unwrap_or_else(|| format!("<pool of queue {:#x}>", it.pool));
            let who = match it.runner {
                Some(r) => format!("run by thread {r}"),
                None => "queued: no worker has taken it yet".into(),
            };
            out.push((
                t.addr,
                format!(
                    "run_in_executor({}) in pool {pool}, {who}",
                    it.callable.as_deref().unwrap_or("?")
                ),
                ExecutorWait {
                    future: cf,
                    pool: it.pool,
                    pool_name: pool,
                    callable: it.callable.clone(),
                    worker: it.runner,
                },
            ));
        }
        out
    }

    /// The pools that have workers, and every work item they show (running
    /// or queued) by its future.
    fn pools(&mut self, raw: &[RawThread]) -> (Vec<PyPool>, HashMap<u64, Item>) {
        let mut pools: Vec<PyPool> = Vec::new();
        let mut items: HashMap<u64, Item> = HashMap::new();
        for t in raw {
            let Some(wf) = t.frames.iter().find(|f| {
                f.frame.function == "_worker" && in_file(f, "concurrent/futures/thread.py")
            }) else {
                continue;
            };
            let Some(q) = local(wf, "work_queue") else {
                continue;
            };
            let running = t.frames.iter().find(|f| {
                f.frame.function == "_WorkItem.run" && in_file(f, "concurrent/futures/thread.py")
            });
            // Read after the frames: the item may have finished (and been
            // freed) since. Its future is set before the worker lets go of
            // it: still running after the callable was read, it was its.
            // A callable that does not read (memory reused meanwhile) is
            // looked at again at the next read, when a hang holds still.
            if let Some(item) = running.and_then(self_of)
                && let Some(fut) = self.attr(item, "future")
                && let Some(callable) = self.work_callable(item)
                && self.state_is(fut, &["RUNNING"])
            {
                items.entry(fut).or_insert(Item {
                    pool: q,
                    callable: Some(callable),
                    runner: Some(t.tid),
                });
            }
            if let Some(p) = pools.iter_mut().find(|p| p.queue == q) {
                p.workers.push(t.tid);
                continue;
            }
            let executor = local(wf, "executor_reference")
                .and_then(|r| self.r.u64(r + self.r.l.weakref_object))
                .filter(|&e| e != 0 && !self.r.is_type(e, "NoneType"));
            let prefix = executor
                .and_then(|e| self.attr(e, "_thread_name_prefix"))
                .and_then(|s| self.r.string(s));
            let started = executor
                .and_then(|e| self.attr(e, "_threads"))
                .map(|s| self.set(s).len());
            pools.push(PyPool {
                queue: q,
                executor,
                prefix,
                started,
                workers: vec![t.tid],
                queued: Vec::new(),
            });
        }
        for p in &mut pools {
            p.workers.sort_unstable();
            for item in self.simple_queue(p.queue).unwrap_or_default() {
                let Some(fut) = self.attr(item, "future") else {
                    continue;
                };
                let callable = self.work_callable(item);
                p.queued.push(PyQueued {
                    future: fut,
                    callable: callable.clone(),
                });
                items.entry(fut).or_insert(Item {
                    pool: p.queue,
                    callable,
                    runner: None,
                });
            }
        }
        (pools, items)
    }
}

/// For each thread blocked (in `waits`) in a Future's result or exception
/// (or `wait`, `as_completed`): the future, its name, and who completes it;
/// the pools; tasks awaiting an executor.
pub(super) fn read<M: Mem>(
    w: &mut Walk<M>,
    raw: &[RawThread],
    waits: &HashMap<u32, u64>,
    aio: Option<&AsyncView>,
) -> Found {
    let mut out = Vec::new();
    let (pools, items) = w.pools(raw);
    let in_executor = aio.map_or_else(Vec::new, |v| w.executor_awaits(v, &items, &pools));
    for p in &pools {
        tracing::debug!(
            "pool {:?}: workers {:?} of {:?} started, {} queued",
            p.label(),
            p.workers,
            p.started,
            p.queued.len()
        );
    }
    let waiting: Vec<(&RawThread, usize, &'static str)> = raw
        .iter()
        .filter(|t| waits.contains_key(&t.tid))
        .filter_map(|t| awaited(t).map(|(i, m)| (t, i, m)))
        .collect();
    for (t, i, method) in waiting {
        let Some((futs, all)) = w.waited_futures(&t.frames[i], method) else {
            continue;
        };
        let mut each: Vec<(u64, Option<u32>, Option<FutureSource>)> = Vec::new();
        for &fut in &futs {
            let (runner, source) = resolve(w, &items, aio, fut);
            each.push((fut, runner, source));
        }
        // Needing all: any pending one that someone runs holds it up.
        // Needing any: only when they all wait for the same thread, or are
        // all queued in one pool.
        let same = |a: &(u64, Option<u32>, Option<FutureSource>)| {
            let b = &each[0];
            match (a.1, &a.2, b.1, &b.2) {
                (Some(x), _, Some(y), _) => x == y,
                (
                    None,
                    Some(FutureSource::Pool {
                        pool: p,
                        queued: true,
                        ..
                    }),
                    None,
                    Some(FutureSource::Pool {
                        pool: q,
                        queued: true,
                        ..
                    }),
                ) => p == q,
                _ => false,
            }
        };
        let pick = if all {
            each.iter()
                .position(|e| e.1.is_some())
                .or_else(|| each.iter().position(|e| e.2.is_some()))
                .unwrap_or(0)
        } else if each.iter().all(same) {
            0
        } else {
            // No single thread to blame: the wait names none.
            each[0].1 = None;
            each[0].2 = None;
            0
        };
        let (fut, runner, source) = each.swap_remove(pick);
        let timeout = local(&t.frames[i], "timeout").is_some_and(|v| !w.r.is_type(v, "NoneType"));
        // As the caller spells it (`fut`).
        let name = t
            .frames
            .get(i + 1)
            .and_then(|f| w.local_name(f, fut))
            .filter(|n| n != "self");
        out.push((
            t.tid,
            PyFutureWait {
                addr: fut,
                method: method.to_string(),
                runner,
                name,
                source,
                timeout,
            },
        ));
    }
    Found {
        waits: out,
        pools,
        in_executor,
    }
}

/// What `read` found: future waits by thread, the pools, and labels of
/// tasks awaiting `run_in_executor`.
pub(super) struct Found {
    waits: Vec<(u32, PyFutureWait)>,
    pools: Vec<PyPool>,
    in_executor: Vec<(u64, String, ExecutorWait)>,
}

/// Who completes `fut`: a pool's worker (or its queue), or an event loop.
fn resolve<M: Mem>(
    w: &mut Walk<M>,
    items: &HashMap<u64, Item>,
    aio: Option<&AsyncView>,
    fut: u64,
) -> (Option<u32>, Option<FutureSource>) {
    match items.get(&fut) {
        Some(it) => (
            it.runner,
            Some(FutureSource::Pool {
                pool: it.pool,
                callable: it.callable.clone(),
                queued: it.runner.is_none(),
            }),
        ),
        None => match w.chained_task(fut) {
            Some(task) => {
                let found = aio.and_then(|v| v.task(task));
                (
                    found.and_then(|(l, _)| l.tid),
                    Some(FutureSource::Loop {
                        task: Some(task),
                        task_name: found.map(|(_, t)| t.name.clone()),
                        coro: found.map(|(_, t)| t.coro.clone()),
                    }),
                )
            }
            None => match aio.and_then(|v| w.pending_on_loop(v, fut)) {
                Some((tid, coro)) => (
                    Some(tid),
                    Some(FutureSource::Loop {
                        task: None,
                        task_name: None,
                        coro,
                    }),
                ),
                None => (None, None),
            },
        },
    }
}

/// "Future.result() of parse_page in pool crawler", "Future.result()
/// of coroutine apply_update (task \"Task-1\")", "Future.result() on fut".
pub fn label(f: &PyFutureWait, pools: &[PyPool]) -> String {
    let on = f.name.clone().unwrap_or_else(|| format!("{:#x}", f.addr));
    match &f.source {
        Some(FutureSource::Pool { pool, callable, .. }) => {
            let p = pools
                .iter()
                .find(|p| p.queue == *pool)
                .map(|p| p.label())
                .unwrap_or_else(|| format!("<pool of queue {pool:#x}>"));
            format!(
                "{}() of {} in pool {p}",
                f.method,
                callable.as_deref().unwrap_or(&on)
            )
        }
        Some(FutureSource::Loop {
            task,
            task_name,
            coro,
        }) => {
            let task = match (task_name, task) {
                (Some(n), _) => format!("task \"{n}\""),
                (None, Some(t)) => format!("task {t:#x}"),
                (None, None) => "not started: queued on the event loop".into(),
            };
            match coro {
                Some(c) => format!("{}() of coroutine {c} ({task})", f.method),
                None => format!("{}() of {task}", f.method),
            }
        }
        None => format!("{}() on {on}", f.method),
    }
}

/// Puts what `read` found on the view's threads, labelled by what they
/// wait for.
pub(super) fn apply(view: &mut PyView, found: Found) {
    for (tid, f) in found.waits {
        let l = label(&f, &found.pools);
        let Some(t) = view.threads.iter_mut().find(|t| t.tid == tid) else {
            continue;
        };
        t.label = Some(l);
        t.future = Some(f);
    }
    view.pools = found.pools;
    let tasks = view
        .asyncio
        .iter_mut()
        .flat_map(|a| &mut a.loops)
        .flat_map(|l| &mut l.tasks);
    for t in tasks {
        if let Some((_, l, e)) = found.in_executor.iter().find(|x| x.0 == t.addr) {
            t.label = Some(l.clone());
            t.executor = Some(e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(source: Option<FutureSource>) -> PyFutureWait {
        PyFutureWait {
            addr: 0xf0,
            method: "Future.result".into(),
            runner: None,
            name: Some("fut".into()),
            source,
            timeout: false,
        }
    }

    #[test]
    fn labels_name_the_callable_and_pool_or_the_coroutine() {
        let pools = [PyPool {
            queue: 0x90,
            executor: None,
            prefix: Some("crawler".into()),
            started: None,
            workers: vec![1],
            queued: Vec::new(),
        }];
        let pool = |queue, callable: Option<&str>| {
            wait(Some(FutureSource::Pool {
                pool: queue,
                callable: callable.map(Into::into),
                queued: true,
            }))
        };
        assert_eq!(
            label(&pool(0x90, Some("parse_page")), &pools),
            "Future.result() of parse_page in pool crawler"
        );
        // A callable not read: the future's name; a pool not listed: its queue.
        assert_eq!(
            label(&pool(0x91, None), &pools),
            "Future.result() of fut in pool <pool of queue 0x91>"
        );
        let lp = wait(Some(FutureSource::Loop {
            task: Some(0x70),
            task_name: Some("Task-1".into()),
            coro: Some("apply_update".into()),
        }));
        assert_eq!(
            label(&lp, &pools),
            "Future.result() of coroutine apply_update (task \"Task-1\")"
        );
        assert_eq!(label(&wait(None), &pools), "Future.result() on fut");
    }
}
