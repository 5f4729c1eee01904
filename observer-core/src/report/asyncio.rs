//! asyncio as text: each event loop's tasks and where they await (the way
//! `python -m asyncio pstree` prints them), and await-cycle findings.

use std::fmt::Write as _;

use super::escape;
use crate::{
    detect::{Detail, Finding, FindingKind, hop_line, wait_line},
    model::Model,
    vocab::{asyncio::AsyncView, python::PyView},
};

/// Every loop and its tasks, for `dump`; `py` gives the loop threads'
/// stacks (what a loop out of its selector is running).
pub fn tasks(s: &mut String, v: &AsyncView, py: Option<&PyView>) {
    if let Some(n) = &v.note {
        let _ = writeln!(s, "\n{}", escape(n));
    }
    for l in &v.loops {
        let mut on = match l.tid {
            Some(t) => format!("thread {t}"),
            None => "no thread (not running)".into(),
        };
        match l.polling {
            Some(true) => on.push_str(" (idle in its selector, epoll_wait)"),
            Some(false) => {
                let what = match l.current.and_then(|c| v.task(c)) {
                    Some((_, t)) => format!("task \"{}\"", escape(&t.name)),
                    None => "a callback".into(),
                };
                let at = l
                    .tid
                    .and_then(|t| py?.thread(t))
                    .and_then(|t| {
                        t.frames.iter().find(|f| {
                            !f.file.contains("/asyncio/") && !f.file.ends_with("selectors.py")
                        })
                    })
                    .map(|f| {
                        format!(
                            " at {} ({}:{})",
                            escape(&f.function),
                            escape(&f.file),
                            f.line
                        )
                    })
                    .unwrap_or_default();
                let _ = write!(
                    on,
                    " NOT in its selector (epoll_wait): running {what}{at}; how long needs `observer run`/`attach`"
                );
            }
            None => {}
        }
        let _ = writeln!(
            s,
            "\nEvent loop {:#x} on {on}: {} task{}",
            l.addr,
            l.tasks.len(),
            if l.tasks.len() == 1 { "" } else { "s" }
        );
        for t in &l.tasks {
            let cur = if l.current == Some(t.addr) {
                ", running now"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "  Task \"{}\" ({:#x}) {} coro={}{cur}",
                escape(&t.name),
                t.addr,
                t.state.as_str(),
                escape(&t.coro)
            );
            if let Some(w) = wait_line(v, t) {
                let _ = writeln!(s, "      {w}");
            }
            for h in &t.holds {
                let _ = writeln!(
                    s,
                    "      holds asyncio.Lock {} ({:#x})",
                    escape(h.name.as_deref().unwrap_or("?")),
                    h.addr
                );
            }
            for h in &t.thread_locks {
                let kind = if h.kind == crate::vocab::python::PyLockKind::RLock {
                    "threading.RLock"
                } else {
                    "threading.Lock"
                };
                let at = t
                    .chain
                    .get(h.frame)
                    .map(|f| {
                        format!(
                            " (`with` at {}:{})",
                            escape(&f.file),
                            h.line.unwrap_or(f.line)
                        )
                    })
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "      holds {kind} {} ({:#x}) across an await{at}",
                    escape(h.name.as_deref().unwrap_or("?")),
                    h.lock
                );
            }
            // Innermost first, like a thread's stack.
            for f in t.chain.iter().rev() {
                let _ = writeln!(
                    s,
                    "        {} ({}:{})",
                    escape(&f.function),
                    escape(&f.file),
                    f.line
                );
            }
        }
    }
}

/// An await cycle, the way jstack prints a deadlock: each task, what it
/// waits for, and where it awaits.
pub fn finding(f: &Finding) -> Option<String> {
    if f.kind != FindingKind::Deadlock || f.tasks.is_empty() {
        return None;
    }
    let mut s = String::new();
    if let Detail::ExecutorDeadlock { hops } = &f.detail {
        let _ = writeln!(
            s,
            "Found one deadlock through run_in_executor ({} task{}, {} thread{}) in process {}:",
            f.tasks.len(),
            if f.tasks.len() == 1 { "" } else { "s" },
            f.threads.len(),
            if f.threads.len() == 1 { "" } else { "s" },
            f.tgid
        );
        for h in hops {
            let _ = writeln!(s, "  {}", hop_line(f, h));
        }
        for t in &f.tasks {
            let on = t
                .loop_tid
                .map(|x| format!(" on the loop of thread {x}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "Task \"{}\" (coro {}, {}){on}:",
                escape(&t.name),
                escape(&t.coro),
                t.state.as_str()
            );
            super::python::frames(&mut s, &t.frames, "    ");
        }
        super::findings::stacks(&mut s, f);
        return Some(s);
    }
    let _ = writeln!(
        s,
        "Found one asyncio await cycle ({} task{}) in process {}:",
        f.tasks.len(),
        if f.tasks.len() == 1 { "" } else { "s" },
        f.tgid
    );
    let _ = writeln!(s, "  {}", f.summary());
    for t in &f.tasks {
        let on = t
            .loop_tid
            .map(|x| format!(" on the loop of thread {x}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "Task \"{}\" (coro {}, {}){on}:",
            escape(&t.name),
            escape(&t.coro),
            t.state.as_str()
        );
        if let Some(w) = &t.waits {
            let _ = writeln!(s, "  {w}");
        }
        for h in &t.holds {
            let _ = writeln!(s, "  holds asyncio.Lock {}", escape(h));
        }
        super::python::frames(&mut s, &t.frames, "    ");
    }
    Some(s)
}

/// The summary's event-loop lines: per loop thread, how many times and how
/// long it stayed out of its selector past the limit.
pub fn summary(s: &mut String, model: &Model, limit_ns: u64) {
    for p in model.processes.values() {
        let mut tids: Vec<u32> = p.loop_stalls.iter().map(|x| x.tid).collect();
        tids.sort_unstable();
        tids.dedup();
        for tid in tids {
            let d: Vec<u64> = p
                .loop_stalls
                .iter()
                .filter(|x| x.tid == tid && x.blocked_ns() >= limit_ns)
                .map(|x| x.duration_ns())
                .collect();
            if d.is_empty() {
                continue;
            }
            let total: u64 = d.iter().sum();
            let max = d.iter().copied().max().unwrap_or(0);
            let list: Vec<String> = d.iter().take(10).map(|&x| super::dur(x)).collect();
            let _ = writeln!(
                s,
                "Event loop of process {} thread {tid} blocked {} time{} (>= {}): total {}, max {}; {}",
                p.tgid,
                d.len(),
                if d.len() == 1 { "" } else { "s" },
                super::dur(limit_ns),
                super::dur(total),
                super::dur(max),
                list.join(", ")
            );
        }
    }
}
