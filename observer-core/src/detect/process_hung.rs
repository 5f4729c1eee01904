//! The whole process is blocked: every live thread has sat in a futex wait
//! for at least the long-wait window, so no thread made progress in it and
//! none can wake another. One finding names every blocked thread, unless a
//! finding already explains one of them (a deadlock, a wait that holds
//! someone up): then that finding is the story. A thread in any other
//! syscall (a selector, a read, a sleep) can be woken from outside: its
//! process is not hung.

use super::{Ctx, Detail, Detector, Finding, FindingKind};

pub struct ProcessHung;

impl Detector for ProcessHung {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let p = cx.process;
        let window = cx.long_wait_ns;
        if p.observed_to_ns.is_some() {
            return Vec::new();
        }
        if let Some(np) = &p.no_progress {
            return watchdog(cx, np);
        }
        let live: Vec<_> = p.live_threads().collect();
        if live.is_empty() {
            return Vec::new();
        }
        let mut waits = Vec::new();
        for t in &live {
            let Some(w) = cx.graph.waits.get(&t.tid) else {
                return Vec::new();
            };
            if cx.now_ns.saturating_sub(w.start_ns) < window {
                return Vec::new();
            }
            if cx.covered.contains(&(p.tgid, t.tid)) {
                return Vec::new();
            }
            waits.push(w);
        }
        // The threads others wait on first (the root of the hang), joins
        // and futures' waiters last.
        waits.sort_by_key(|w| (w.target.kind.for_work(), w.start_ns, w.tid));
        let threads = waits.iter().map(|w| cx.thread(w.tid)).collect();
        let mut locks = Vec::new();
        for w in &waits {
            let l = cx.lock(w.target.kind, w.target.lock);
            if !w.target.kind.for_work() && !locks.contains(&l) {
                locks.push(l);
            }
        }
        let last = waits.iter().map(|w| w.start_ns).max().unwrap_or(0);
        vec![Finding {
            kind: FindingKind::ProcessHung,
            tgid: p.tgid,
            detected_ns: cx.now_ns,
            detail: Detail::ProcessHung {
                blocked_ns: cx.now_ns.saturating_sub(last),
                before_observation: waits.iter().any(|w| w.before_observation),
                watchdog: false,
            },
            threads,
            locks,
            cycle: Vec::new(),
            tasks: Vec::new(),
            key: format!("hung:{}:{last}", p.tgid),
        }]
    }
}

/// Every live thread of a process the watchdog found not running: futex
/// waits first (lock waits before joins), then threads in other syscalls.
fn watchdog(cx: &Ctx, np: &crate::model::NoProgress) -> Vec<Finding> {
    use crate::vocab::syscalls::syscall_name;
    let p = cx.process;
    let mut live: Vec<_> = p.live_threads().map(|t| t.tid).collect();
    if live.is_empty() {
        return Vec::new();
    }
    let order = |tid: &u32| match cx.graph.waits.get(tid) {
        Some(w) if !w.target.kind.for_work() => (0, w.start_ns, *tid),
        Some(w) => (1, w.start_ns, *tid),
        None => (2, 0, *tid),
    };
    live.sort_by_key(order);
    let mut locks = Vec::new();
    let mut threads = Vec::new();
    for tid in live {
        let mut info = cx.thread(tid);
        match cx.graph.waits.get(&tid) {
            Some(w) => {
                if let crate::graph::Holder::Thread(h) = w.target.holder
                    && h != tid
                    && !w.target.kind.for_work()
                {
                    info.held_by = Some(h);
                }
                let l = cx.lock(w.target.kind, w.target.lock);
                if !w.target.kind.for_work() && !locks.contains(&l) {
                    locks.push(l);
                }
            }
            None => {
                let b = np.blocked.iter().find(|b| b.tid == tid);
                info.blocked_in = Some(match b {
                    Some(b) if b.syscall.is_some() => {
                        let nr = b.syscall.unwrap_or_default();
                        match b.wchan.as_str() {
                            "" | "0" => format!("syscall {}", syscall_name(nr)),
                            w => format!("syscall {} ({w})", syscall_name(nr)),
                        }
                    }
                    _ => "no syscall (stopped?)".to_string(),
                });
            }
        }
        threads.push(info);
    }
    vec![Finding {
        kind: FindingKind::ProcessHung,
        tgid: p.tgid,
        detected_ns: cx.now_ns,
        detail: Detail::ProcessHung {
            blocked_ns: np.at_ns.saturating_sub(np.since_ns),
            before_observation: false,
            watchdog: true,
        },
        threads,
        locks,
        cycle: Vec::new(),
        tasks: Vec::new(),
        key: format!("hung:{}:watchdog:{}", p.tgid, np.since_ns),
    }]
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    match &f.detail {
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
                    "no thread of the watched processes has run for {} (hang watchdog): every thread is blocked: {}{more}",
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
        _ => String::new(),
    }
}
