//! Findings as text, modelled on jstack's "Found one Java-level deadlock".

use std::fmt::Write as _;

use super::{dur, escape};
use crate::{
    detect::{Detail, Finding, FindingKind, LockInfo, ThreadInfo, WaitHolder},
    event::Tid,
};

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

/// "; thread 1 "main" waits for it" (joins it, or waits for a lock it
/// holds); "...waits for future fut (0x..), whose work item it runs".
fn held_up_by(f: &Finding, by: &[Tid], name: &dyn Fn(Tid) -> String) -> String {
    let future = |t: Tid| {
        f.threads
            .iter()
            .find(|x| x.tid == t)
            .and_then(|x| x.waits_for.as_ref())
            .filter(|l| l.kind == crate::graph::LockKind::Future)
    };
    match by {
        [] => String::new(),
        [one] => match future(*one) {
            Some(l) => format!(
                "; thread {one} \"{}\" waits for {}, whose work item it runs",
                name(*one),
                describe_lock(l)
            ),
            None => format!("; thread {one} \"{}\" waits for it", name(*one)),
        },
        many => {
            let v: Vec<String> = many
                .iter()
                .map(|&t| match future(t) {
                    Some(l) => format!("{t} \"{}\" (for {})", name(t), describe_lock(l)),
                    None => format!("{t} \"{}\"", name(t)),
                })
                .collect();
            format!("; threads {} wait for it", v.join(", "))
        }
    }
}

/// The finding in one line (also the JSON report's `summary`).
pub fn summary(f: &Finding) -> String {
    let name = |tid: Tid| {
        f.threads
            .iter()
            .find(|t| t.tid == tid)
            .map(|t| escape(&t.name))
            .unwrap_or_else(|| "?".into())
    };
    // The thread a one-thread finding is about, and its lock.
    let (tid, tname) = f
        .threads
        .first()
        .map(|t| (t.tid, escape(&t.name)))
        .unwrap_or((0, "?".into()));
    let first_lock = || f.locks.first().map(describe_lock).unwrap_or_default();
    let sym_or_addr = |l: &LockInfo| {
        l.symbol
            .as_deref()
            .map(escape)
            .unwrap_or_else(|| l.addr_hex.clone())
    };
    let counted = |sites: &[(String, usize)], word: &str| -> String {
        let v: Vec<String> = sites
            .iter()
            .map(|(s, n)| format!("{n} {word} {}", escape(s)))
            .collect();
        v.join(", ")
    };
    match &f.detail {
        Detail::Deadlock if f.cycle.len() == 1 => {
            let e = &f.cycle[0];
            let holds = if e.lock.kind == crate::graph::LockKind::Future {
                "whose work item it runs itself"
            } else {
                "it already holds"
            };
            format!(
                "thread {} \"{}\" waits for {} {holds} (self-deadlock)",
                e.waiter_tid,
                name(e.waiter_tid),
                describe_lock(&e.lock)
            )
        }
        Detail::Deadlock => {
            let names: Vec<String> = f
                .threads
                .iter()
                .map(|t| format!("{} \"{}\"", t.tid, escape(&t.name)))
                .collect();
            format!(
                "{} threads wait for each other in a cycle: {}",
                f.cycle.len(),
                names.join(" -> ")
            )
        }
        Detail::PiDeadlock { parked, inferred } => {
            let how = if *inferred {
                "is parked forever on its own stack after the kernel refused a PI lock (EDEADLK)"
            } else {
                "got EDEADLK from the kernel on a PI mutex and now sleeps forever"
            };
            format!("thread {parked} \"{}\" {how}", name(*parked))
        }
        Detail::OrphanedLock {
            owner,
            owner_exited,
        } => {
            let why = match owner_exited {
                Some(n) => format!("owner thread {owner} \"{}\" exited holding it", escape(n)),
                None => format!(
                    "owner thread {owner} is not a thread of this process (exited before observation, or the lock was inherited across fork)"
                ),
            };
            format!("thread {tid} \"{tname}\" waits for {}: {why}", first_lock())
        }
        Detail::LongWait {
            waited_ns,
            before_observation,
            holder,
            held_up,
        } => {
            let held = match holder {
                WaitHolder::Thread(h) => format!(", held by thread {h} \"{}\"", name(*h)),
                WaitHolder::Readers => ", held by readers".into(),
                WaitHolder::Unknown => String::new(),
            };
            let since = if *before_observation { "at least " } else { "" };
            format!(
                "thread {tid} \"{tname}\" has waited {since}{} for {}{held}{}",
                dur(*waited_ns),
                first_lock(),
                held_up_by(f, held_up, &name)
            )
        }
        Detail::ProcessHung {
            blocked_ns,
            before_observation,
            watchdog,
        } => {
            let names: Vec<String> = f
                .threads
                .iter()
                .take(10)
                .map(|t| format!("{} \"{}\"", t.tid, escape(&t.name)))
                .collect();
            let more = if f.threads.len() > 10 { ", ..." } else { "" };
            let since = if *before_observation { "at least " } else { "" };
            if *watchdog {
                return format!(
                    "no thread of the watched processes has run for {} (--hang-after): every thread is blocked: {}{more}",
                    dur(*blocked_ns),
                    names.join(", ")
                );
            }
            format!(
                "every thread has waited {since}{} in a futex wait, no thread is left to end another's: {}{more}",
                dur(*blocked_ns),
                names.join(", ")
            )
        }
        Detail::StuckThread {
            idle_ns,
            wchan,
            held_up,
        } => {
            let blocked = f
                .threads
                .first()
                .and_then(|t| t.blocked_in.as_deref())
                .map(escape)
                .unwrap_or_default();
            let wchan = if wchan.is_empty() {
                String::new()
            } else {
                format!(" ({})", escape(wchan))
            };
            format!(
                "thread {tid} \"{tname}\" has not run for {}, blocked in {blocked}{wchan}, while other threads of the process ran{}",
                dur(*idle_ns),
                held_up_by(f, held_up, &name)
            )
        }
        Detail::UnjoinedThread => {
            let names: Vec<String> = f
                .threads
                .iter()
                .take(5)
                .map(|t| format!("{} \"{}\"", t.tid, escape(&t.name)))
                .collect();
            let more = if f.threads.len() > 5 {
                format!(" and {} more", f.threads.len() - 5)
            } else {
                String::new()
            };
            let mut sites: Vec<&String> = f
                .threads
                .iter()
                .filter_map(|t| t.created_at.as_ref())
                .collect();
            sites.sort();
            sites.dedup();
            let at = if sites.is_empty() {
                String::new()
            } else {
                let v: Vec<String> = sites.iter().map(|s| escape(s)).collect();
                format!("; created at {}", v.join(", "))
            };
            format!(
                "{} joinable thread(s) exited and were never joined or detached: {}{more}{at}",
                f.threads.len(),
                names.join(", ")
            )
        }
        Detail::ThreadLeak {
            from,
            to,
            span_ns,
            slope_per_s,
            r2,
            survivors,
            sites,
        } => format!(
            "live threads grew from {from} to {to} in {:.1}s ({slope_per_s:.1} threads/s, r2 {r2:.2}); {survivors} survivors: {}",
            *span_ns as f64 / 1e9,
            counted(sites, "from")
        ),
        Detail::ThreadChurn {
            in_window,
            total,
            threshold_per_s,
            sites,
        } => format!(
            "{in_window} threads created within one second ({total} in all; threshold {threshold_per_s}/s); top creation sites: {}",
            counted(sites, "at")
        ),
        Detail::LockOrderInversion => {
            let names: Vec<String> = f.locks.iter().map(sym_or_addr).collect();
            let order: Vec<String> = f
                .cycle
                .iter()
                .map(|e| {
                    format!(
                        "{} -> {} (thread {} \"{}\" at {})",
                        e.held.as_ref().map(sym_or_addr).unwrap_or_default(),
                        sym_or_addr(&e.lock),
                        e.waiter_tid,
                        name(e.waiter_tid),
                        e.site.as_deref().map(escape).unwrap_or_else(|| "?".into())
                    )
                })
                .collect();
            format!(
                "locks {} are taken in an order that can deadlock: {}",
                names.join(", "),
                order.join("; ")
            )
        }
        Detail::ExitHoldingLock { held } => {
            let v: Vec<String> = f
                .locks
                .iter()
                .zip(held)
                .map(|(l, h)| {
                    format!(
                        "{} (held {}, taken at {})",
                        describe_lock(l),
                        dur(h.held_ns),
                        h.site.as_deref().map(escape).unwrap_or_else(|| "?".into())
                    )
                })
                .collect();
            format!(
                "thread {tid} \"{tname}\" exited holding {} lock(s): {}",
                f.locks.len(),
                v.join(", ")
            )
        }
        Detail::AwaitCycle => {
            let names: Vec<String> = f
                .tasks
                .iter()
                .map(|t| format!("\"{}\"", escape(&t.name)))
                .collect();
            match f.tasks.as_slice() {
                [t] => format!(
                    "asyncio task {} waits for itself: {}",
                    names[0],
                    t.waits.as_deref().map(escape).unwrap_or_default()
                ),
                _ => format!(
                    "{} asyncio tasks await each other in a cycle: {}",
                    f.tasks.len(),
                    names.join(" -> ")
                ),
            }
        }
        Detail::EventLoopBlocked {
            blocked_ns,
            runq_ns,
            ongoing,
            task,
            at,
        } => {
            let ms = |ns: u64| format!("{:.0} ms", ns as f64 / 1e6);
            let runq = if *runq_ns >= 1_000_000 {
                format!(" ({} of it waiting for a CPU)", ms(*runq_ns))
            } else {
                String::new()
            };
            let so_far = if *ongoing { " so far" } else { "" };
            let what = match task {
                Some(n) => format!("task \"{}\"", escape(n)),
                None => "a callback".into(),
            };
            let at = at
                .as_ref()
                .map(|f| {
                    format!(
                        " at {} ({}:{})",
                        escape(&f.function),
                        escape(&f.file),
                        f.line
                    )
                })
                .unwrap_or_default();
            format!(
                "event loop of thread {tid} \"{tname}\" did not poll for {}{runq}{so_far}: {what} ran{at}",
                ms(*blocked_ns)
            )
        }
    }
}

/// "mutex lock_b (0x5600...)" or "condvar 0x7ff0...".
pub fn describe_lock(l: &LockInfo) -> String {
    match &l.symbol {
        Some(s) => format!("{} {} ({})", l.kind.as_str(), escape(s), l.addr_hex),
        None => format!("{} {}", l.kind.as_str(), l.addr_hex),
    }
}

pub fn finding(f: &Finding) -> String {
    if let Some(s) = super::asyncio::finding(f) {
        return s;
    }
    if let Some(s) = super::python::deadlock(f) {
        return s;
    }
    let mut s = String::new();
    let _ = match f.kind {
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
    };
    let _ = writeln!(s, "  {}", summary(f));
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
        for e in &f.cycle {
            let w = f.threads.iter().find(|t| t.tid == e.waiter_tid);
            let wname = w.map(|t| escape(&t.name)).unwrap_or_else(|| "?".into());
            let hname = f
                .threads
                .iter()
                .find(|t| t.tid == e.holder_tid)
                .map(|t| escape(&t.name));
            let _ = writeln!(
                s,
                "  thread {} \"{wname}\" waits for {}{}",
                e.waiter_tid,
                lock(&e.lock),
                w.map(waited).unwrap_or_default()
            );
            let _ = writeln!(
                s,
                "      which is held by thread {}{}",
                e.holder_tid,
                hname.map(|n| format!(" \"{n}\"")).unwrap_or_default()
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
pub fn frame_line(f: &crate::symbol::Frame) -> String {
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
fn stacks(s: &mut String, f: &Finding) {
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
