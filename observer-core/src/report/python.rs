//! Python-level text: a deadlock the way jstack prints a Java one, and the
//! per-thread block of `dump` the way py-spy dump prints it.

use std::fmt::Write as _;

use super::escape;
use crate::{
    detect::{Finding, FindingKind, ThreadInfo},
    vocab::frames::{PyFrame, StackFrame, is_interpreter_frame},
    vocab::python::{How, PyLockRef, PyThreadInfo},
};

fn who(t: Option<&ThreadInfo>, tid: u32) -> String {
    match t {
        Some(t) => format!("\"{}\" (thread {tid})", escape(&t.name)),
        None => format!("thread {tid}"),
    }
}

fn lock_ref(l: &PyLockRef) -> String {
    format!("{} {} ({:#x})", l.kind.as_str(), escape(&l.name), l.addr)
}

fn at(l: &PyLockRef) -> String {
    match (&l.site, &l.function) {
        (Some(s), Some(f)) => format!(" at {} ({})", escape(s), escape(f)),
        (Some(s), None) => format!(" at {}", escape(s)),
        _ => String::new(),
    }
}

/// One line: what a Python thread waits for (without the holder).
pub fn wait_line(p: &PyThreadInfo) -> Option<String> {
    if p.joins.is_none()
        && let Some(l) = &p.label
    {
        return Some(format!("waits in {}", escape(l)));
    }
    if let Some(w) = &p.waits {
        let how = match w.how {
            Some(How::With) => "in `with`",
            _ => "in acquire()",
        };
        return Some(format!("waits for {} {how}{}", lock_ref(w), at(w)));
    }
    if let Some(j) = p.joins {
        return Some(format!("waits in Thread.join for thread {j}"));
    }
    p.label.as_ref().map(|l| format!("waits in {}", escape(l)))
}

/// jstack-style text of a deadlock whose waits Python explains; None when
/// no thread of the cycle is a Python wait.
pub fn deadlock(f: &Finding) -> Option<String> {
    if f.kind != FindingKind::Deadlock
        || !f.threads.iter().any(|t| {
            t.python
                .as_ref()
                .is_some_and(|p| p.waits.is_some() || p.joins.is_some())
        })
    {
        return None;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Found one Python-level deadlock ({} thread{}) in process {}:",
        f.cycle.len(),
        if f.cycle.len() == 1 { "" } else { "s" },
        f.tgid
    );
    let _ = writeln!(s, "  {}", f.summary());
    let thread = |tid| f.threads.iter().find(|t| t.tid == tid);
    for e in &f.cycle {
        let w = thread(e.waiter_tid);
        let _ = writeln!(s, "{}:", who(w, e.waiter_tid));
        let py = w.and_then(|t| t.python.as_ref());
        let line = py.and_then(wait_line).unwrap_or_else(|| {
            format!(
                "waits for {}",
                crate::report::findings::describe_lock(&e.lock)
            )
        });
        let _ = writeln!(s, "  {line}");
        let h = thread(e.holder_tid);
        let held = h.and_then(|t| t.python.as_ref()).and_then(|p| {
            let addr = e.holder_lock.unwrap_or(e.lock.addr);
            p.holds.iter().find(|l| l.addr == addr)
        });
        let how = match held {
            Some(l) if l.site.is_some() => {
                format!(", as {} in a `with` block{}", escape(&l.name), at(l))
            }
            Some(_) => ", its owner".to_string(),
            None => String::new(),
        };
        if py.is_some_and(|p| p.joins.is_some()) {
            let _ = writeln!(s, "  which has not finished: {}", who(h, e.holder_tid));
        } else if e.lock.kind == crate::graph::LockKind::Future {
            let on_loop = py.and_then(|p| p.future.as_ref()).is_some_and(|f| {
                matches!(
                    f.source,
                    Some(crate::vocab::python::FutureSource::Loop { .. })
                )
            });
            let what = if on_loop {
                "whose coroutine runs on the event loop of"
            } else {
                "whose work item is run by"
            };
            let _ = writeln!(s, "  {what} {}", who(h, e.holder_tid));
        } else {
            let _ = writeln!(s, "  which is held by {}{how}", who(h, e.holder_tid));
        }
    }
    let _ = writeln!(s, "Python stacks of the threads above:");
    for e in &f.cycle {
        let Some(t) = thread(e.waiter_tid) else {
            continue;
        };
        let _ = writeln!(s, "{}:", who(Some(t), t.tid));
        stack(&mut s, &t.frames, false, "    ");
    }
    Some(s)
}

pub fn frames(s: &mut String, frames: &[PyFrame], indent: &str) {
    for p in frames {
        let _ = writeln!(
            s,
            "{indent}{} ({}:{})",
            escape(&p.function),
            escape(&p.file),
            p.line
        );
    }
}

/// Most lines of a stack in text: a native stack, and one with Python
/// frames (whose interpreter frames are left out).
const NATIVE_SHOWN: usize = 24;
const MIXED_SHOWN: usize = 48;

/// A thread's stack as text lines, innermost first, in the order it ran
/// (`symbol::merge_stacks`): Python frames as `function (file:line)`,
/// native ones as [`super::findings::frame_line`]. In a stack with Python
/// frames the interpreter's own native frames (calls, vectorcall, eval-loop
/// frames left over) are left out, as py-spy `--native` does; the JSON has
/// them. `mark`: Python frames end in `[python]` (always in findings; in a
/// stack that also has native frames, everywhere). Past the line limit:
/// "... N more frames (the JSON has all)".
pub fn stack_lines(frames: &[StackFrame], mark: bool) -> Vec<String> {
    let has_python = frames.iter().any(StackFrame::is_python);
    let has_native = frames.iter().any(|f| !f.is_python());
    let mark = mark || (has_python && has_native);
    let shown: Vec<&StackFrame> = frames
        .iter()
        .filter(|f| match f {
            StackFrame::Native(n) => !has_python || !is_interpreter_frame(n),
            StackFrame::Python(_) => true,
        })
        .collect();
    let max = if has_python {
        MIXED_SHOWN
    } else {
        NATIVE_SHOWN
    };
    let mut out: Vec<String> = shown
        .iter()
        .take(max)
        .map(|f| match f {
            StackFrame::Native(n) => super::findings::frame_line(n),
            StackFrame::Python(p) => format!(
                "{} ({}:{}){}",
                escape(&p.function),
                escape(&p.file),
                p.line,
                if mark { "  [python]" } else { "" }
            ),
        })
        .collect();
    if shown.len() > max {
        out.push(format!(
            "... {} more frames (the JSON has all)",
            shown.len() - max
        ));
    }
    out
}

/// [`stack_lines`] written to `s`, each line after `indent`.
pub fn stack(s: &mut String, frames: &[StackFrame], mark: bool, indent: &str) {
    for l in stack_lines(frames, mark) {
        let _ = writeln!(s, "{indent}{l}");
    }
}

/// The locks a thread holds, for `dump`: "holds Lock a (0x..) at f.py:3".
pub fn holds_line(p: &PyThreadInfo) -> Option<String> {
    (!p.holds.is_empty()).then(|| {
        let v: Vec<String> = p
            .holds
            .iter()
            .map(|l| format!("{}{}", lock_ref(l), at(l)))
            .collect();
        format!("holds {}", v.join(", "))
    })
}
