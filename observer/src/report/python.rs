//! Python-level text: a deadlock the way jstack prints a Java one, and the
//! per-thread block of `dump` the way py-spy dump prints it.

use std::fmt::Write as _;

use super::escape;
use crate::{
    detect::{Finding, FindingKind, ThreadInfo},
    python::{How, PyLockRef, PyThreadInfo},
    symbol::{Frame, PyFrame},
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
    let _ = writeln!(s, "  {}", super::findings::summary(f));
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
        let held = h
            .and_then(|t| t.python.as_ref())
            .and_then(|p| p.holds.iter().find(|l| l.addr == e.lock.addr));
        let how = match held {
            Some(l) if l.site.is_some() => {
                format!(", as {} in a `with` block{}", escape(&l.name), at(l))
            }
            Some(_) => ", its owner".to_string(),
            None => String::new(),
        };
        if py.is_some_and(|p| p.joins.is_some()) {
            let _ = writeln!(s, "  which has not finished: {}", who(h, e.holder_tid));
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
        merged(&mut s, &t.frames, &t.python_frames, "    ");
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

/// Native frames shown above a Python stack when the interpreter's eval
/// loop is not found in them (a short or failed unwind).
const NATIVE_ABOVE: usize = 8;
/// Native frames shown for a thread without Python frames.
const NATIVE_SHOWN: usize = 24;

/// A CPython thread's stack as one list, innermost first: the native
/// frames the innermost Python frame is in (libc, the interpreter's C
/// code, a C extension), down to the interpreter's eval loop, each marked
/// `[native]`, then the Python frames. Deeper native frames (the eval
/// loop and what calls it) are only in the JSON. Without native frames:
/// the Python stack alone.
pub fn merged(s: &mut String, native: &[Frame], python: &[PyFrame], indent: &str) {
    let eval = native.iter().position(|f| {
        f.function
            .as_deref()
            .is_some_and(|n| n.starts_with("_PyEval_EvalFrame"))
    });
    let above = if python.is_empty() {
        native.len().min(NATIVE_SHOWN)
    } else {
        eval.unwrap_or(NATIVE_ABOVE.min(native.len()))
    };
    for f in &native[..above] {
        let _ = writeln!(s, "{indent}{}  [native]", super::findings::frame_line(f));
    }
    if python.is_empty() && native.len() > above {
        let _ = writeln!(
            s,
            "{indent}... {} more native frames (the JSON has all)",
            native.len() - above
        );
    }
    frames(s, python, indent);
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
