//! Findings as text, modelled on jstack's "Found one Java-level deadlock".

use std::fmt::Write as _;

use super::{dur, escape};
use crate::detect::{Detail, Finding, FindingKind, LockInfo, ThreadInfo};

fn waited(t: &ThreadInfo) -> String {
    match t.waited_ns {
        Some(ns) if t.waited_since_before_observation && ns >= 1_000_000 => {
            format!(" [waiting since before observation, >= {}]", dur(ns))
        }
        Some(_) if t.waited_since_before_observation => {
            " [waiting since before observation]".into()
        }
        Some(ns) => format!(" [waiting {}]", dur(ns)),
        None => String::new(),
    }
}

fn lock(l: &LockInfo) -> String {
    describe_lock(l)
}

pub use crate::detect::describe_lock;

pub fn finding(f: &Finding) -> String {
    if let Some(s) = super::asyncio::finding(f) {
        return s;
    }
    if let Some(s) = super::python::deadlock(f) {
        return s;
    }
    if let Some(s) = super::pool::finding(f) {
        return s;
    }
    let mut s = String::new();
    let across = match &f.detail {
        Detail::ProcessesDeadlock { processes, objects } => Some((processes, objects)),
        _ => None,
    };
    let _ = match f.kind {
        FindingKind::Deadlock if let Some((ps, _)) = across => {
            let pids: Vec<String> = ps.iter().map(|p| p.pid.to_string()).collect();
            let _ = writeln!(
                s,
                "Found one deadlock ({} threads) across processes {}:",
                f.cycle.len(),
                pids.join(", ")
            );
            for p in ps {
                let _ = writeln!(
                    s,
                    "  process {} \"{}\" ({})",
                    p.pid,
                    escape(p.comm.as_deref().unwrap_or("?")),
                    escape(p.exe.as_deref().unwrap_or("?"))
                );
            }
            Ok(())
        }
        FindingKind::Deadlock if f.cycle.len() == 1 => {
            writeln!(s, "Found a self-deadlock in process {}:", f.tgid)
        }
        FindingKind::Deadlock => writeln!(
            s,
            "Found one deadlock ({} threads) in process {}:",
            f.cycle.len(),
            f.tgid
        ),
        FindingKind::PiDeadlock => writeln!(s, "Found a PI-mutex deadlock in process {}:", f.tgid),
        FindingKind::OrphanedLock => writeln!(s, "Found an orphaned lock in process {}:", f.tgid),
        FindingKind::LongWait => writeln!(s, "Long wait in process {}:", f.tgid),
        FindingKind::StuckThread => writeln!(s, "Stuck thread in process {}:", f.tgid),
        FindingKind::ProcessHung => writeln!(s, "All threads blocked in process {}:", f.tgid),
        FindingKind::UnjoinedThread => writeln!(s, "Threads never joined in process {}:", f.tgid),
        FindingKind::ThreadLeak => writeln!(s, "Thread leak in process {}:", f.tgid),
        FindingKind::ThreadChurn => writeln!(s, "Thread churn in process {}:", f.tgid),
        FindingKind::LockOrderInversion => writeln!(
            s,
            "Lock-order inversion (potential deadlock) in process {}:",
            f.tgid
        ),
        FindingKind::EventLoopBlocked => {
            writeln!(s, "Event loop blocked in process {}:", f.tgid)
        }
        FindingKind::ExitHoldingLock => {
            writeln!(s, "Thread exited holding locks in process {}:", f.tgid)
        }
        FindingKind::PoolStarvation => {
            writeln!(s, "Found a starved thread pool in process {}:", f.tgid)
        }
    };
    let _ = writeln!(s, "  {}", f.summary());
    if f.kind == FindingKind::LockOrderInversion {
        for e in &f.cycle {
            let held = e.held.as_ref().map(lock).unwrap_or_default();
            let name = f
                .threads
                .iter()
                .find(|t| t.tid == e.waiter_tid)
                .map(|t| escape(&t.name))
                .unwrap_or_default();
            let site = e
                .site
                .as_ref()
                .map(|x| format!(" at {}", escape(x)))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {held} -> {}: taken by thread {} \"{name}\"{site}",
                lock(&e.lock),
                e.waiter_tid
            );
            for fr in e.frames.iter().take(FRAMES_SHOWN) {
                let _ = writeln!(s, "        {}", frame_line(fr));
            }
        }
        return s;
    }
    if !f.cycle.is_empty() {
        // Across processes: whose thread each is, and the shared memory.
        let of = |tid| match across {
            Some(_) => f
                .threads
                .iter()
                .find(|t| t.tid == tid)
                .map(|t| format!(" of process {}", t.pid))
                .unwrap_or_default(),
            None => String::new(),
        };
        for (i, e) in f.cycle.iter().enumerate() {
            let w = f.threads.iter().find(|t| t.tid == e.waiter_tid);
            let obj = across
                .and_then(|(_, o)| o.get(i).cloned().flatten())
                .map(|o| format!(" in shared memory {}", escape(&o)))
                .unwrap_or_default();
            let wname = w.map(|t| escape(&t.name)).unwrap_or_else(|| "?".into());
            let hname = f
                .threads
                .iter()
                .find(|t| t.tid == e.holder_tid)
                .map(|t| escape(&t.name));
            let _ = writeln!(
                s,
                "  thread {} \"{wname}\"{} waits for {}{obj}{}",
                e.waiter_tid,
                of(e.waiter_tid),
                lock(&e.lock),
                w.map(waited).unwrap_or_default()
            );
            let _ = writeln!(
                s,
                "      which is held by thread {}{}{}",
                e.holder_tid,
                hname.map(|n| format!(" \"{n}\"")).unwrap_or_default(),
                of(e.holder_tid)
            );
        }
    } else {
        const SHOWN: usize = 10;
        if f.threads.len() > SHOWN {
            let _ = writeln!(s, "  ({} threads; the first {SHOWN}:)", f.threads.len());
        }
        for t in f.threads.iter().take(SHOWN) {
            match &t.waits_for {
                Some(l) => {
                    let held = t
                        .held_by
                        .map(|h| {
                            let n = f.threads.iter().find(|x| x.tid == h);
                            let n = n.map(|x| format!(" \"{}\"", escape(&x.name)));
                            format!(", held by thread {h}{}", n.unwrap_or_default())
                        })
                        .unwrap_or_default();
                    let _ = writeln!(
                        s,
                        "  thread {} \"{}\" waits for {}{held}{}",
                        t.tid,
                        escape(&t.name),
                        lock(l),
                        waited(t)
                    );
                }
                None => {
                    let blocked = t
                        .blocked_in
                        .as_ref()
                        .map(|b| format!(", blocked in {}", escape(b)))
                        .unwrap_or_default();
                    let site = t
                        .created_at
                        .as_ref()
                        .map(|c| format!(", created at {}", escape(c)))
                        .unwrap_or_default();
                    let _ = writeln!(
                        s,
                        "  thread {} \"{}\"{blocked}{site}",
                        t.tid,
                        escape(&t.name)
                    );
                }
            }
        }
    }
    stacks(&mut s, f);
    s
}

/// Max frames shown per lock-order edge in text.
const FRAMES_SHOWN: usize = 24;

/// One native frame as a line: `func (file.c:12)`, `func`, or `module+0x1f0`.
pub fn frame_line(f: &crate::vocab::frames::Frame) -> String {
    let module = || {
        let m = f.module.as_deref().unwrap_or("?");
        format!(
            "{}+{:#x}",
            m.rsplit('/').next().unwrap_or(m),
            f.module_offset
        )
    };
    let mut s = match (&f.function, &f.file, f.line) {
        (Some(func), Some(file), Some(line)) => format!("{func} ({file}:{line})"),
        (Some(func), _, _) => format!("{func} [{}]", module()),
        (None, _, _) => module(),
    };
    if f.inlined {
        s.push_str(" [inlined]");
    }
    escape(&s)
}

/// The stacks of the threads of a finding, innermost frame first.
pub(super) fn stacks(s: &mut String, f: &Finding) {
    let with: Vec<&ThreadInfo> = f.threads.iter().filter(|t| !t.frames.is_empty()).collect();
    if with.is_empty() {
        return;
    }
    let _ = writeln!(s, "  Stacks:");
    for t in with {
        let gil = if t.owns_gil { " (holds the GIL)" } else { "" };
        let _ = writeln!(s, "    thread {} \"{}\"{gil}:", t.tid, escape(&t.name));
        // One stack in the order it ran: Python frames where the eval
        // loop runs them, among the native ones.
        super::python::stack(s, &t.frames, true, "        ");
    }
}

pub fn all(findings: &[Finding]) -> String {
    let mut s = String::new();
    if findings.is_empty() {
        s.push_str("FINDINGS: none\n");
        return s;
    }
    let _ = writeln!(s, "FINDINGS: {}", findings.len());
    for f in findings {
        s.push_str(&finding(f));
        s.push('\n');
    }
    s
}
