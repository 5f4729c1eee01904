//! A starved thread pool as text: the pool, what is queued in it, each
//! worker's wait and Python stack, and who waits for the workers.

use std::fmt::Write as _;

use super::escape;
use crate::detect::{Detail, Finding};

pub fn finding(f: &Finding) -> Option<String> {
    let Detail::PoolStarvation(p) = &f.detail else {
        return None;
    };
    let mut s = String::new();
    let _ = writeln!(s, "Found a starved thread pool in process {}:", f.tgid);
    let _ = writeln!(s, "  {}", f.summary());
    let exec = p
        .executor
        .map(|e| format!(" (ThreadPoolExecutor {e:#x})"))
        .unwrap_or_default();
    let queued: Vec<String> = p.queued.iter().map(|c| escape(c)).collect();
    let _ = writeln!(
        s,
        "pool \"{}\"{exec}: {} workers, all busy; queued, with no worker to run them: {}",
        escape(&p.name),
        p.workers.len(),
        queued.join(", ")
    );
    for t in &f.threads {
        let role = if p.workers.contains(&t.tid) {
            "worker"
        } else {
            "held up"
        };
        let line = t
            .python
            .as_ref()
            .and_then(super::python::wait_line)
            .unwrap_or_else(|| "waits".into());
        let _ = writeln!(
            s,
            "  {role} \"{}\" (thread {}): {line}",
            escape(&t.name),
            t.tid
        );
    }
    let _ = writeln!(s, "Python stacks of the threads above:");
    for t in &f.threads {
        let _ = writeln!(s, "\"{}\" (thread {}):", escape(&t.name), t.tid);
        super::python::frames(&mut s, &t.python_frames, "    ");
    }
    Some(s)
}
