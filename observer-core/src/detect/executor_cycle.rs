//! Deadlocks through `loop.run_in_executor`: an asyncio task awaiting an
//! executor waits for the pool's worker running its callable, and that
//! worker waits (through threads, maybe) for the task itself: a
//! `threading` lock the task's suspended coroutine holds across the
//! `await` (`with lock: await loop.run_in_executor(None, job)` where `job`
//! takes `lock`), a `run_coroutine_threadsafe` future whose coroutine runs
//! in a task that waits for it. The loop thread sleeps in its selector, so
//! the threads' wait-for graph alone has no cycle: tasks are nodes here.

use std::collections::HashSet;

use serde::Serialize;

use super::{Ctx, Detail, Detector, Finding, FindingKind, LockInfo, await_cycle::task_info};
use crate::{
    event::Tid,
    graph::{Holder, LockKind},
    vocab::{
        asyncio::{AsyncView, TaskState},
        python::{FutureSource, PyView},
        text::escape,
    },
};

/// One step of the cycle: who waits for whom, and how.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "hop", rename_all = "snake_case")]
pub enum Hop {
    /// `task` awaits `run_in_executor(callable)` in `pool`, run by `worker`.
    Executor {
        task: String,
        task_addr: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        callable: Option<String>,
        pool: String,
        worker: Tid,
    },
    /// `task` awaits `run_in_executor(callable)` still queued in `pool`,
    /// whose `workers` all wait (the first is followed).
    ExecutorQueued {
        task: String,
        task_addr: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        callable: Option<String>,
        pool: String,
        workers: Vec<Tid>,
    },
    /// Thread `tid` waits (at `site`) for `threading` lock `lock`, held by
    /// a `with` block (at `held_at`) of `task`'s suspended coroutine.
    TaskLock {
        tid: Tid,
        lock: LockInfo,
        name: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        site: Option<String>,
        task: String,
        task_addr: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        held_at: Option<String>,
    },
    /// Thread `tid` waits in `Future.result()` for the coroutine `task`
    /// runs (`asyncio.run_coroutine_threadsafe`).
    TaskFuture {
        tid: Tid,
        task: String,
        task_addr: u64,
        coro: String,
    },
    /// Thread `tid` waits for `lock`, held (or run, or joined) by `holder`.
    Thread {
        tid: Tid,
        lock: LockInfo,
        holder: Tid,
    },
    /// `task` waits for another task (`waits`: in words).
    Task {
        task: String,
        task_addr: u64,
        waits: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Node {
    Thread(Tid),
    Task(u64),
}

pub struct ExecutorCycle;

/// Longest cycle followed.
const MAX_HOPS: usize = 64;

impl Detector for ExecutorCycle {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let Some(v) = cx
            .process
            .python
            .as_ref()
            .filter(|v| v.unsupported.is_none())
        else {
            return Vec::new();
        };
        let Some(a) = v.asyncio.as_ref() else {
            return Vec::new();
        };
        let mut starts: Vec<u64> = a
            .loops
            .iter()
            .flat_map(|l| &l.tasks)
            .filter(|t| t.state == TaskState::Pending && t.executor.is_some())
            .map(|t| t.addr)
            .collect();
        starts.sort_unstable();
        let mut out = Vec::new();
        let mut seen: HashSet<Vec<Node>> = HashSet::new();
        for s in starts {
            let Some(path) = cycle_from(cx, v, a, Node::Task(s)) else {
                continue;
            };
            let mut key: Vec<Node> = path.iter().map(|x| x.0).collect();
            key.sort_unstable();
            if !seen.insert(key.clone()) {
                continue;
            }
            out.push(finding(cx, a, path, &key));
        }
        out
    }
}

/// Follows the one way out of each node (a task: its executor's worker,
/// else the task it awaits) from `start` back to it.
fn cycle_from(cx: &Ctx, v: &PyView, a: &AsyncView, start: Node) -> Option<Vec<(Node, Hop)>> {
    walk(cx, v, a, start, start, 0)
}

/// Nested checks of the other workers of a pool an item is queued in.
const MAX_DEPTH: usize = 4;

/// The path from `from` to `to`, each node's one way out. An item queued
/// in a pool waits for its first worker, and needs every other worker of
/// the pool to wait for `to` as well (any of them would take it).
fn walk(
    cx: &Ctx,
    v: &PyView,
    a: &AsyncView,
    from: Node,
    to: Node,
    depth: usize,
) -> Option<Vec<(Node, Hop)>> {
    let mut path: Vec<(Node, Hop)> = Vec::new();
    let mut at = from;
    let mut visited = HashSet::new();
    while path.len() < MAX_HOPS && visited.insert(at) {
        let (next, hop) = step(cx, v, a, at)?;
        if let Hop::ExecutorQueued { workers, .. } = &hop {
            if depth >= MAX_DEPTH {
                return None;
            }
            for &w in &workers[1..] {
                walk(cx, v, a, Node::Thread(w), at, depth + 1)?;
            }
        }
        path.push((at, hop));
        if next == to {
            return Some(path);
        }
        at = next;
    }
    None
}

/// Where `at` waits, and for whom.
fn step(cx: &Ctx, v: &PyView, a: &AsyncView, at: Node) -> Option<(Node, Hop)> {
    match at {
        Node::Task(addr) => {
            let (_, t) = a.task(addr)?;
            if t.state != TaskState::Pending {
                return None;
            }
            if let Some(e) = &t.executor {
                let Some(w) = e.worker else {
                    // Queued: every worker of its pool, all of them seen.
                    let p = v.pool(e.pool)?;
                    if p.workers.is_empty() || p.started.is_some_and(|n| p.workers.len() < n) {
                        return None;
                    }
                    return Some((
                        Node::Thread(p.workers[0]),
                        Hop::ExecutorQueued {
                            task: t.name.clone(),
                            task_addr: addr,
                            callable: e.callable.clone(),
                            pool: e.pool_name.clone(),
                            workers: p.workers.clone(),
                        },
                    ));
                };
                return Some((
                    Node::Thread(w),
                    Hop::Executor {
                        task: t.name.clone(),
                        task_addr: addr,
                        callable: e.callable.clone(),
                        pool: e.pool_name.clone(),
                        worker: w,
                    },
                ));
            }
            let e = t.waits_for.first()?;
            Some((
                Node::Task(e.task),
                Hop::Task {
                    task: t.name.clone(),
                    task_addr: addr,
                    waits: super::wait_line(a, t).unwrap_or_default(),
                },
            ))
        }
        Node::Thread(tid) => {
            cx.process.thread(tid).filter(|t| t.alive())?;
            let w = cx.graph.waits.get(&tid)?;
            let Holder::Thread(holder) = w.target.holder else {
                return None;
            };
            let pt = v.thread(tid);
            // A lock a suspended task holds across an `await`.
            if matches!(w.target.kind, LockKind::PyLock | LockKind::PyRLock)
                && let Some((_, t, h)) = a.thread_lock_holder(w.target.lock)
                && t.state == TaskState::Pending
            {
                let held_at = t
                    .chain
                    .get(h.frame)
                    .map(|f| format!("{}:{}", f.file, h.line.unwrap_or(f.line)));
                let name = h.name.clone().unwrap_or_else(|| v.lock_name(h.lock));
                let site = v
                    .info(tid)
                    .and_then(|i| i.waits)
                    .filter(|x| x.addr == h.lock)
                    .and_then(|x| x.site);
                let mut lock = cx.lock(w.target.kind, w.target.lock);
                lock.symbol.get_or_insert_with(|| name.clone());
                return Some((
                    Node::Task(t.addr),
                    Hop::TaskLock {
                        tid,
                        lock,
                        name,
                        site,
                        task: t.name.clone(),
                        task_addr: t.addr,
                        held_at,
                    },
                ));
            }
            // A `run_coroutine_threadsafe` future: the task running it.
            if w.target.kind == LockKind::Future
                && let Some(f) = pt.and_then(|t| t.future.as_ref())
                && let Some(FutureSource::Loop {
                    task: Some(task), ..
                }) = &f.source
                && let Some((_, t)) = a.task(*task)
            {
                return Some((
                    Node::Task(*task),
                    Hop::TaskFuture {
                        tid,
                        task: t.name.clone(),
                        task_addr: *task,
                        coro: t.coro.clone(),
                    },
                ));
            }
            Some((
                Node::Thread(holder),
                Hop::Thread {
                    tid,
                    lock: cx.lock(w.target.kind, w.target.lock),
                    holder,
                },
            ))
        }
    }
}

fn finding(cx: &Ctx, a: &AsyncView, path: Vec<(Node, Hop)>, key: &[Node]) -> Finding {
    let mut tids: Vec<Tid> = Vec::new();
    let mut tasks = Vec::new();
    let mut locks: Vec<LockInfo> = Vec::new();
    for (n, hop) in &path {
        if let Hop::ExecutorQueued { workers, .. } = hop {
            for w in workers {
                if !tids.contains(w) {
                    tids.push(*w);
                }
            }
        }
        match n {
            Node::Thread(t) if !tids.contains(t) => tids.push(*t),
            Node::Thread(_) => {}
            Node::Task(addr) => {
                if let Some(ti) = task_info(a, *addr) {
                    tasks.push(ti);
                }
            }
        }
        if let Hop::TaskLock { lock, .. } | Hop::Thread { lock, .. } = hop
            && !locks.iter().any(|l| l.addr == lock.addr)
        {
            locks.push(lock.clone());
        }
    }
    // The loop threads of the tasks: they hold what the tasks hold.
    for t in &tasks {
        if let Some(l) = t.loop_tid
            && !tids.contains(&l)
        {
            tids.push(l);
        }
    }
    let parts: Vec<String> = key
        .iter()
        .map(|n| match n {
            Node::Thread(t) => format!("t{t}"),
            Node::Task(a) => format!("k{a:x}"),
        })
        .collect();
    Finding {
        kind: FindingKind::Deadlock,
        tgid: cx.process.tgid,
        detected_ns: cx.now_ns,
        detail: Detail::ExecutorDeadlock {
            hops: path.into_iter().map(|x| x.1).collect(),
        },
        threads: tids.iter().map(|&t| cx.thread(t)).collect(),
        locks,
        cycle: Vec::new(),
        tasks,
        key: format!("executor:{}:{}", cx.process.tgid, parts.join(",")),
    }
}

fn kind_word(k: LockKind) -> &'static str {
    match k {
        LockKind::PyRLock => "threading.RLock",
        _ => "threading.Lock",
    }
}

/// One hop in words (escaped).
pub fn hop_line(f: &Finding, h: &Hop) -> String {
    use super::words::name;
    let th = |t: Tid| format!("thread {t} \"{}\"", name(f, t));
    match h {
        Hop::Executor {
            task,
            callable,
            pool,
            worker,
            ..
        } => format!(
            "task \"{}\" awaits run_in_executor({}) in pool {}, run by {}",
            escape(task),
            escape(callable.as_deref().unwrap_or("?")),
            escape(pool),
            th(*worker)
        ),
        Hop::ExecutorQueued {
            task,
            callable,
            pool,
            workers,
            ..
        } => {
            let ws: Vec<String> = workers.iter().map(|&w| th(w)).collect();
            format!(
                "task \"{}\" awaits run_in_executor({}) in pool {}, queued, and every worker of the pool waits: {}",
                escape(task),
                escape(callable.as_deref().unwrap_or("?")),
                escape(pool),
                ws.join(", ")
            )
        }
        Hop::TaskLock {
            tid,
            lock,
            name,
            site,
            task,
            held_at,
            ..
        } => format!(
            "{}{} waits for {} {}, held by task \"{}\"{} across an await",
            th(*tid),
            site.as_ref()
                .map(|s| format!(" at {}", escape(s)))
                .unwrap_or_default(),
            kind_word(lock.kind),
            escape(name),
            escape(task),
            held_at
                .as_ref()
                .map(|s| format!(" (`with` at {})", escape(s)))
                .unwrap_or_default()
        ),
        Hop::TaskFuture {
            tid, task, coro, ..
        } => format!(
            "{} waits in Future.result() for coroutine {} of task \"{}\"",
            th(*tid),
            escape(coro),
            escape(task)
        ),
        Hop::Thread { tid, lock, holder } => format!(
            "{} waits for {}, held by {}",
            th(*tid),
            super::describe_lock(lock),
            th(*holder)
        ),
        Hop::Task { task, waits, .. } => format!("task \"{}\" {}", escape(task), escape(waits)),
    }
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    let Detail::ExecutorDeadlock { hops } = &f.detail else {
        return String::new();
    };
    let lines: Vec<String> = hops.iter().map(|h| hop_line(f, h)).collect();
    format!(
        "asyncio task and executor worker wait for each other: {}",
        lines.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use crate::{
        detect::{Detail, FindingKind, Limits},
        engine::Engine,
        event::{Event, Wait, WaitOrigin},
        vocab::{
            asyncio::{AsyncView, ExecutorWait, LoopView, TaskState, TaskThreadLock, TaskView},
            frames::PyFrame,
            python::{How, PyLockInfo, PyLockKind, PyThreadView, PyView, PyWait},
        },
    };

    const S: u64 = 1_000_000_000;
    const LOCK: u64 = 0xa000;
    const WORD: u64 = 0x5a00;
    const TASK: u64 = 0x7700;

    fn frame(function: &str, line: i32) -> PyFrame {
        PyFrame {
            function: function.into(),
            file: "/app/svc.py".into(),
            line,
        }
    }

    /// Loop thread 100 idle in its selector; worker 101 ("asyncio_0") in
    /// `with state_lock:` (svc.py:34), a futex wait on its word; task
    /// "holder" on the loop awaits `run_in_executor(job)` run by 101 and,
    /// when `held`, keeps `state_lock` across that await (svc.py:47).
    fn engine(held: bool) -> Engine {
        engine_with(held, &[])
    }

    /// `engine`, the task's item queued (no worker) in a pool whose
    /// workers are `queued` (101 waits for the lock; others run).
    fn engine_with(held: bool, queued: &[u32]) -> Engine {
        let mut e = Engine::new(Limits::new(S / 2), ());
        for (tid, name) in [(100, "MainThread"), (101, "asyncio_0"), (102, "asyncio_1")] {
            e.apply(&Event::ThreadSeen {
                ts_ns: 1,
                tgid: 100,
                tid,
                name: name.into(),
                parent_tid: None,
                start_ns: None,
            })
            .unwrap();
        }
        e.apply(&Event::WaitBegin {
            ts_ns: S,
            tgid: 100,
            tid: 101,
            wait: Wait {
                uaddr: WORD,
                uaddr2: 0,
                op: 0x189,
                val: 0,
                start_ns: S,
                ip: 0,
                sp: 0,
                bp: 0,
                words_addr: 0,
                words: Vec::new(),
                origin: WaitOrigin::Snapshot,
            },
        })
        .unwrap();
        let t = |tid: u32, frames: Vec<PyFrame>| PyThreadView {
            tid,
            ident: u64::from(tid),
            name: None,
            frames,
            wait: None,
            held: Vec::new(),
            joins: None,
            label: None,
            future: None,
        };
        let mut worker = t(101, vec![frame("job", 34)]);
        worker.wait = Some(PyWait {
            lock: LOCK,
            kind: PyLockKind::Lock,
            how: How::With,
            frame: 0,
            name: Some("state_lock".into()),
        });
        let task = TaskView {
            addr: TASK,
            name: "holder".into(),
            coro: "holder".into(),
            state: TaskState::Pending,
            chain: vec![frame("holder", 48)],
            waits_for: Vec::new(),
            waits_lock: None,
            holds: Vec::new(),
            label: Some("run_in_executor(job) in pool asyncio, run by thread 101".into()),
            running: false,
            fut_waiter: None,
            executor: Some(ExecutorWait {
                future: 0xf000,
                pool: 0x9000,
                pool_name: "asyncio".into(),
                callable: Some("job".into()),
                worker: queued.is_empty().then_some(101),
            }),
            thread_locks: if held {
                vec![TaskThreadLock {
                    lock: LOCK,
                    kind: PyLockKind::Lock,
                    name: Some("state_lock".into()),
                    frame: 0,
                    line: Some(47),
                }]
            } else {
                Vec::new()
            },
        };
        e.apply(&Event::PyState {
            ts_ns: 2 * S,
            tgid: 100,
            view: PyView {
                version: "3.12.1".into(),
                threads: vec![
                    t(100, vec![frame("main", 99)]),
                    worker,
                    t(102, vec![frame("work", 7)]),
                ],
                pools: if queued.is_empty() {
                    Vec::new()
                } else {
                    vec![crate::vocab::python::PyPool {
                        queue: 0x9000,
                        executor: None,
                        prefix: Some("asyncio".into()),
                        started: Some(queued.len()),
                        workers: queued.to_vec(),
                        queued: Vec::new(),
                    }]
                },
                locks: vec![PyLockInfo {
                    addr: LOCK,
                    kind: PyLockKind::Lock,
                    name: Some("state_lock".into()),
                    word: WORD,
                    owner: None,
                }],
                asyncio: Some(AsyncView {
                    loops: vec![LoopView {
                        addr: 0x6000,
                        tid: Some(100),
                        tasks: vec![task],
                        ..Default::default()
                    }],
                    note: None,
                }),
                ..Default::default()
            },
        })
        .unwrap();
        e
    }

    /// The task holding the lock its executor job waits for: one deadlock
    /// (no orphaned lock), naming the task, pool, worker, callable, lock
    /// and both lines.
    #[test]
    fn a_lock_held_across_run_in_executor_that_the_job_takes_is_a_deadlock() {
        let mut e = engine(true);
        let found = e.check(3 * S);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.kind, FindingKind::Deadlock);
        let tids: Vec<u32> = f.threads.iter().map(|t| t.tid).collect();
        assert_eq!(tids, vec![101, 100]);
        assert_eq!(f.tasks.len(), 1);
        assert_eq!(f.tasks[0].name, "holder");
        assert_eq!(f.locks.len(), 1);
        assert_eq!(f.locks[0].addr, LOCK);
        let Detail::ExecutorDeadlock { hops } = &f.detail else {
            panic!("{:?}", f.detail)
        };
        assert_eq!(hops.len(), 2);
        assert_eq!(
            f.summary(),
            "asyncio task and executor worker wait for each other: \
             task \"holder\" awaits run_in_executor(job) in pool asyncio, run by thread 101 \"asyncio_0\"; \
             thread 101 \"asyncio_0\" at /app/svc.py:34 waits for threading.Lock state_lock, \
             held by task \"holder\" (`with` at /app/svc.py:47) across an await"
        );
        // Reported once.
        assert!(e.check(30 * S).is_empty(), "{:#?}", e.findings());
    }

    /// The job waits for a lock the task does not hold (a lock nobody
    /// holds): no deadlock through the executor.
    #[test]
    fn a_job_waiting_for_a_lock_the_task_does_not_hold_is_no_executor_deadlock() {
        let mut e = engine(false);
        let found = e.check(3 * S);
        assert!(
            found
                .iter()
                .all(|f| !matches!(f.detail, Detail::ExecutorDeadlock { .. })),
            "{found:#?}"
        );
    }

    /// The item queued in a pool whose only worker waits for the task: a
    /// deadlock; with a second worker that runs, none (it would take it).
    #[test]
    fn an_item_queued_behind_workers_that_all_wait_for_the_task_is_a_deadlock() {
        let mut e = engine_with(true, &[101]);
        let found = e.check(3 * S);
        assert_eq!(found.len(), 1, "{found:#?}");
        let Detail::ExecutorDeadlock { hops } = &found[0].detail else {
            panic!("{found:#?}")
        };
        assert!(
            matches!(&hops[0], super::Hop::ExecutorQueued { workers, .. } if workers == &vec![101])
        );
        assert!(
            found[0].summary().contains(
                "awaits run_in_executor(job) in pool asyncio, queued, and every worker of the pool waits: thread 101 \"asyncio_0\"; "
            ),
            "{}",
            found[0].summary()
        );
        let mut e = engine_with(true, &[101, 102]);
        let found = e.check(3 * S);
        assert!(
            found
                .iter()
                .all(|f| !matches!(f.detail, Detail::ExecutorDeadlock { .. })),
            "{found:#?}"
        );
    }
}
