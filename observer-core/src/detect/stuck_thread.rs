//! A thread that has not run for a long time while other threads of its
//! process did, and that holds someone up (a thread joins it, or waits for
//! a lock it holds): a worker that never comes back (blocked in read(), in
//! a wait nobody ends, ...). What it is blocked in comes from /proc. A
//! worker waiting for work that nobody waits for is idle, not stuck; a
//! thread stuck in a lock wait is stuck too (contention).

use super::{Ctx, Detail, Detector, Finding, FindingKind};
use crate::vocab::syscalls::syscall_name;

pub struct StuckThread;

impl Detector for StuckThread {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let mut out = Vec::new();
        for t in cx.process.live_threads() {
            let Some(s) = &t.stuck else { continue };
            let idle = cx.now_ns.saturating_sub(s.since_ns);
            if idle < cx.limits.stuck_ns || cx.covered.contains(&(cx.process.tgid, t.tid)) {
                continue;
            }
            // Waiting to join a thread is normal; that thread's own state is the story.
            if cx.joining(t.tid) {
                continue;
            }
            // A futex wait already as old as --long-wait is told as a
            // long_wait (the more exact finding): which of the two a thread
            // gets must not depend on when the join behind it was read.
            if cx
                .graph
                .waits
                .get(&t.tid)
                .is_some_and(|w| cx.now_ns.saturating_sub(w.start_ns) >= cx.long_wait_ns)
            {
                continue;
            }
            let held_up = cx.graph.waiters_of(t.tid);
            let lock_wait = cx
                .graph
                .waits
                .get(&t.tid)
                .is_some_and(|w| crate::graph::idle::is_lock_wait(cx.process, w));
            if held_up.is_empty() && !lock_wait {
                continue;
            }
            let mut info = cx.thread(t.tid);
            let blocked = match (s.syscall, cx.graph.waits.get(&t.tid)) {
                (_, Some(w)) => format!(
                    "futex wait on {}",
                    super::plain_lock(&cx.lock(w.target.kind, w.target.lock))
                ),
                (Some(nr), None) => format!("syscall {}", syscall_name(nr)),
                (None, None) => "no syscall (stopped?)".to_string(),
            };
            info.blocked_in = Some(blocked);
            let wchan = if s.wchan == "0" {
                String::new()
            } else {
                s.wchan.clone()
            };
            out.push(Finding {
                kind: FindingKind::StuckThread,
                tgid: cx.process.tgid,
                detected_ns: cx.now_ns,
                detail: Detail::StuckThread {
                    idle_ns: idle,
                    wchan,
                    held_up: held_up.clone(),
                },
                threads: std::iter::once(info)
                    .chain(held_up.iter().map(|&b| cx.thread(b)))
                    .collect(),
                locks: cx
                    .graph
                    .waits
                    .get(&t.tid)
                    .map(|w| vec![cx.lock(w.target.kind, w.target.lock)])
                    .unwrap_or_default(),
                cycle: Vec::new(),
                tasks: Vec::new(),
                key: format!("stuck:{}:{}:{}", cx.process.tgid, t.tid, s.since_ns),
            });
        }
        out
    }
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    let (tid, tname) = first(f);
    match &f.detail {
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
                held_up_by(f, held_up)
            )
        }
        _ => String::new(),
    }
}
