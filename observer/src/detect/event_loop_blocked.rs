//! An event loop thread that stayed out of its selector (epoll_wait) for
//! longer than `--loop-blocked`: a callback or task step ran that long and
//! nothing else on that loop could run. The thread counts as an event loop
//! when its Python stack shows `run_forever` / `_run_once`.

use super::{Ctx, Detector, Finding, FindingKind};
use crate::{model::event_loop::is_loop_stack, report::escape};

pub struct EventLoopBlocked;

fn ms(ns: u64) -> String {
    format!("{:.0} ms", ns as f64 / 1e6)
}

impl Detector for EventLoopBlocked {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let limit = cx.limits.loop_blocked_ns;
        let p = cx.process;
        let loop_thread = |tid: u32| {
            p.loop_stalls
                .iter()
                .any(|s| s.tid == tid && is_loop_stack(&s.python))
                || p.python
                    .as_ref()
                    .and_then(|v| v.thread(tid))
                    .is_some_and(|t| is_loop_stack(&t.frames))
        };
        let mut out = Vec::new();
        for s in &p.loop_stalls {
            // Reported once, with the stack read while it was out (a stretch
            // that ended before any look is only counted in the summary).
            if s.blocked_ns() < limit || s.python.is_empty() || !loop_thread(s.tid) {
                continue;
            }
            let mut t = cx.thread(s.tid);
            t.python_frames = s.python.clone();
            let at = s
                .python
                .iter()
                .find(|f| !f.file.contains("/asyncio/") && !f.file.ends_with("selectors.py"))
                .map(|f| {
                    format!(
                        " at {} ({}:{})",
                        escape(&f.function),
                        escape(&f.file),
                        f.line
                    )
                })
                .unwrap_or_default();
            let what = match &s.task {
                Some(n) => format!("task \"{}\"", escape(n)),
                None => "a callback".into(),
            };
            let runq = if s.runq_ns >= 1_000_000 {
                format!(" ({} of it waiting for a CPU)", ms(s.runq_ns))
            } else {
                String::new()
            };
            let how_long = match s.end_ns {
                Some(_) => format!("for {}{runq}", ms(s.duration_ns())),
                None => format!("for {}{runq} so far", ms(s.duration_ns())),
            };
            out.push(Finding {
                kind: FindingKind::EventLoopBlocked,
                tgid: p.tgid,
                detected_ns: cx.now_ns,
                summary: format!(
                    "event loop of thread {} \"{}\" did not poll {how_long}: {what} ran{at}",
                    s.tid,
                    escape(&t.name)
                ),
                threads: vec![t],
                locks: Vec::new(),
                cycle: Vec::new(),
                tasks: Vec::new(),
                key: format!("loop:{}:{}:{}", p.tgid, s.tid, s.start_ns),
            });
        }
        out
    }
}
