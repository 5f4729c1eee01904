//! `observer dump`: every thread of a process and what it waits for.

use std::fmt::Write as _;

use serde::Serialize;

use super::escape;
use crate::{
    detect::Finding,
    event::futex,
    graph::{Holder, WaitForGraph},
    model::{Model, Process},
};

/// What the text says of the interpreter.
struct PythonState {
    version: String,
    unsupported: Option<String>,
    limited: Option<String>,
}

pub struct ThreadState {
    pub tid: u32,
    pub name: String,
    /// Null when the thread is not in a futex wait.
    pub wait: Option<WaitState>,
    /// CPython threads: the Python stack (innermost first) and locks.
    pub python_frames: Option<Vec<crate::vocab::frames::PyFrame>>,
    pub python: Option<crate::vocab::python::PyThreadInfo>,
    /// `dump --native`: the stack in the order it ran, innermost first:
    /// every native frame (read from the thread's registers and stack;
    /// empty when it is running) and, for a CPython thread, each Python
    /// frame where the eval loop runs it (`kind`: native/python).
    pub frames: Vec<crate::vocab::frames::StackFrame>,
}

/// A thread's futex wait now: what it is on, and who holds it.
#[derive(Clone, Debug, Serialize)]
pub struct WaitState {
    pub uaddr: u64,
    pub op: String,
    pub val: u32,
    pub kind: crate::graph::LockKind,
    pub lock: u64,
    pub symbol: Option<String>,
    pub holder: Holder,
}

/// The processes to show: `pid` first, then those the dump followed (a
/// lock's holder in another process, the parent a locked lock came from).
fn order(model: &Model, pid: u32) -> Vec<&Process> {
    let first = model.process(pid).into_iter();
    first
        .chain(model.processes.values().filter(|p| p.tgid != pid))
        .collect()
}

/// `native`: include each thread's native stack (`dump --native`).
fn states(model: &Model, p: &Process, native: bool) -> (u32, Vec<ThreadState>) {
    let g = WaitForGraph::build(p);
    let threads = p
        .live_threads()
        .map(|t| ThreadState {
            tid: t.tid,
            name: t.name().to_string(),
            wait: g.waits.get(&t.tid).map(|w| WaitState {
                uaddr: w.uaddr,
                op: futex::name(w.op),
                val: t.wait.as_ref().map(|x| x.val).unwrap_or(0),
                kind: w.target.kind,
                lock: w.target.lock,
                symbol: model.symbols.get(&(p.tgid, w.target.lock)).cloned(),
                holder: w.target.holder,
            }),
            python_frames: p
                .python
                .as_ref()
                .and_then(|v| v.thread(t.tid))
                .map(|x| x.frames.clone()),
            python: p.python.as_ref().and_then(|v| v.info(t.tid)),
            frames: match t.stack.as_ref().filter(|_| native) {
                Some(st) => {
                    let view = p.python.as_ref().and_then(|v| v.thread(t.tid));
                    match (st.python.is_empty(), view) {
                        (false, _) => {
                            crate::vocab::frames::merge(&st.frames, &st.python, &st.python_entry)
                        }
                        (true, Some(v)) => crate::vocab::frames::merge(&st.frames, &v.frames, &[]),
                        (true, None) => crate::vocab::frames::merge(&st.frames, &[], &[]),
                    }
                }
                None => Vec::new(),
            },
        })
        .collect();
    (p.tgid, threads)
}

/// `dump --format json`: the report every mode writes (observer.report/1,
/// mode "dump"), with each live thread's futex wait now and, with
/// `--native`, its stack in the order it ran.
pub fn json<'a>(
    model: &Model,
    pid: u32,
    findings: &'a [Finding],
    native: bool,
) -> super::json::Report<'a> {
    let mut r = super::json::build(model, "dump", &[], findings);
    let states: Vec<ThreadState> = order(model, pid)
        .into_iter()
        .flat_map(|p| states(model, p, native).1)
        .collect();
    for t in &mut r.threads {
        if let Some(st) = states.iter().find(|s| s.tid == t.tid) {
            t.wait = st.wait.clone();
            t.frames = st.frames.clone();
        }
    }
    r
}

fn python_state(p: &Process) -> Option<PythonState> {
    let v = p.python.as_ref()?;
    Some(PythonState {
        version: v.version.clone(),
        unsupported: v.unsupported.clone(),
        limited: v.limited.clone(),
    })
}

/// `pid` and what the dump followed from it, then the findings, then
/// each process's threads.
pub fn text(model: &Model, pid: u32, findings: &[Finding], native: bool) -> String {
    let procs = order(model, pid);
    let mut s = String::new();
    for (i, p) in procs.iter().enumerate() {
        process_text(
            &mut s,
            model,
            p,
            native,
            i > 0,
            (i == 0).then_some(findings),
        );
    }
    s
}

/// An owner that is no thread of `p`: another observed process's, or gone.
fn gone(model: &Model, p: &Process, h: u32) -> String {
    match model.live_thread(h).filter(|(q, _)| q.tgid != p.tgid) {
        Some((q, t)) => format!(
            ", owner {h} \"{}\" is a thread of process {} \"{}\"",
            escape(t.name()),
            q.tgid,
            escape(q.comm().unwrap_or("?"))
        ),
        None => format!(", owner {h} is gone"),
    }
}

fn process_text(
    s: &mut String,
    model: &Model,
    p: &Process,
    native: bool,
    followed: bool,
    findings: Option<&[Finding]>,
) {
    let (tgid, threads) = states(model, p, native);
    let leader = threads
        .iter()
        .find(|t| t.tid == tgid)
        .map(|t| escape(&t.name))
        .unwrap_or_default();
    let what = if followed {
        "\n== followed: process"
    } else {
        "== observer dump: process"
    };
    let _ = writeln!(
        s,
        "{what} {tgid} \"{leader}\", {} threads ==",
        threads.len()
    );
    if let Some(exe) = p.exe.as_ref() {
        let _ = writeln!(s, "exe: {}", escape(exe));
    }
    if let Some(py) = python_state(p) {
        let _ = writeln!(s, "Python {}", escape(&py.version));
        if let Some(u) = py.unsupported.as_ref().or(py.limited.as_ref()) {
            let _ = writeln!(s, "  {}", escape(u));
        }
    }
    if let Some(findings) = findings {
        s.push_str(&super::findings::all(findings));
    }
    let _ = writeln!(s, "\nTHREADS");
    let name_of = |tid: u32| {
        threads
            .iter()
            .find(|t| t.tid == tid)
            .map(|t| escape(&t.name))
            .unwrap_or_else(|| "?".into())
    };
    for t in &threads {
        let what = match &t.wait {
            None => "not in a futex wait".to_string(),
            Some(w) => {
                let lock = match &w.symbol {
                    Some(sym) => format!("{} {} ({:#x})", w.kind.as_str(), escape(sym), w.lock),
                    None => format!("{} {:#x}", w.kind.as_str(), w.lock),
                };
                let holder = match w.holder {
                    Holder::Thread(h) => format!(", held by {h} \"{}\"", name_of(h)),
                    Holder::Gone(h) => gone(model, p, h),
                    Holder::Readers => ", held by readers".into(),
                    Holder::Unknown => String::new(),
                };
                format!("waits for {lock}{holder}  [{} val {}]", w.op, w.val)
            }
        };
        let Some(frames) = &t.python_frames else {
            let _ = writeln!(s, "  {:>8}  {:<16}  {what}", t.tid, escape(&t.name));
            super::python::stack(s, &t.frames, false, "            ");
            continue;
        };
        // py-spy dump style: the thread, its Python wait, its stack.
        let _ = writeln!(s, "\nThread {} \"{}\"", t.tid, escape(&t.name));
        let py = t.python.as_ref();
        let joins = py.is_some_and(|p| p.joins.is_some() && p.label.is_none());
        let queued = py.and_then(|p| p.future.as_ref()).is_some_and(|f| {
            matches!(
                f.source,
                Some(crate::vocab::python::FutureSource::Pool { queued: true, .. })
            )
        });
        let holder = t.wait.as_ref().map(|w| match w.holder {
            Holder::Thread(h) if joins => format!(" \"{}\"", name_of(h)),
            Holder::Thread(h) if w.kind == crate::graph::LockKind::Future => {
                format!(", run by {h} \"{}\"", name_of(h))
            }
            Holder::Thread(h) => format!(", held by {h} \"{}\"", name_of(h)),
            Holder::Unknown if queued => ", queued: no worker has taken it yet".to_string(),
            Holder::Gone(h) => gone(model, p, h),
            _ => String::new(),
        });
        match py.and_then(super::python::wait_line) {
            Some(line) => {
                let bare = py.is_some_and(|p| p.label.is_none())
                    && py
                        .and_then(|p| p.waits.as_ref())
                        .is_some_and(|w| w.how == Some(crate::vocab::python::How::Acquire))
                    && t.wait.as_ref().is_some_and(|w| w.holder == Holder::Unknown);
                let note = if bare {
                    " (holder unknown: a lock taken by acquire() outside `with` leaves no trace in memory; --uprobes records it)"
                } else {
                    ""
                };
                let _ = writeln!(s, "    {line}{}{note}", holder.unwrap_or_default());
            }
            None => {
                let _ = writeln!(s, "    {what}");
            }
        }
        if let Some(h) = py.and_then(super::python::holds_line) {
            let _ = writeln!(s, "    {h}");
        }
        // py-spy dump's way: the Python stack; with --native, one stack
        // with the native frames in the order it ran.
        if t.frames.is_empty() {
            super::python::frames(s, frames, "        ");
        } else {
            super::python::stack(s, &t.frames, false, "        ");
        }
    }
    let py = p.python.as_ref();
    if let Some(a) = py.and_then(|p| p.asyncio.as_ref()) {
        let _ = writeln!(s, "\nASYNCIO");
        super::asyncio::tasks(s, a, py);
    }
}
