//! An event loop thread that stayed out of its selector (epoll_wait) for
//! longer than `--loop-blocked`: a callback or task step ran that long and
//! nothing else on that loop could run. The thread counts as an event loop
//! when its Python stack shows `run_forever` / `_run_once`, or when the
//! asyncio view names it as a loop's thread (uvloop runs its loop in C).

use super::{Ctx, Detail, Detector, Finding, FindingKind};
use crate::model::event_loop::is_loop_stack;

pub struct EventLoopBlocked;

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
                || p.python
                    .as_ref()
                    .and_then(|v| v.asyncio.as_ref())
                    .is_some_and(|a| a.loop_of(tid).is_some())
        };
        let mut out = Vec::new();
        for s in &p.loop_stalls {
            // Reported once, with the stack read while it was out (a stretch
            // that ended before any look is only counted in the summary).
            if s.blocked_ns() < limit || s.python.is_empty() || !loop_thread(s.tid) {
                continue;
            }
            let mut t = cx.thread(s.tid);
            t.set_stack(&[], s.python.clone(), &[]);
            let at = s
                .python
                .iter()
                .find(|f| !f.file.contains("/asyncio/") && !f.file.ends_with("selectors.py"))
                .cloned();
            out.push(Finding {
                kind: FindingKind::EventLoopBlocked,
                tgid: p.tgid,
                detected_ns: cx.now_ns,
                detail: Detail::EventLoopBlocked {
                    blocked_ns: s.duration_ns(),
                    runq_ns: s.runq_ns,
                    ongoing: s.end_ns.is_none(),
                    task: s.task.clone(),
                    at,
                },
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

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    let (tid, tname) = first(f);
    match &f.detail {
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

        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        detect::{FindingKind, Limits},
        engine::Engine,
        event::Event,
        model::Model,
        vocab::frames::PyFrame,
    };

    fn fr(function: &str, file: &str, line: i32) -> PyFrame {
        PyFrame {
            function: function.into(),
            file: file.into(),
            line,
        }
    }

    fn blocked(start: u64, end: Option<u64>, runq: u64, python: Vec<PyFrame>) -> Event {
        Event::LoopBlocked {
            ts_ns: end.unwrap_or(start + 150_000_000),
            tgid: 10,
            tid: 10,
            start_ns: start,
            end_ns: end,
            runq_ns: runq,
            task: (!python.is_empty()).then(|| "slow".into()),
            python,
        }
    }

    #[test]
    fn a_loop_out_of_its_selector_is_reported_once_with_the_stack_read_then() {
        let mut m = Model::new();
        m.apply(&Event::ThreadSeen {
            ts_ns: 1,
            tgid: 10,
            tid: 10,
            name: "python3".into(),
            parent_tid: None,
            start_ns: None,
        });
        let stack = vec![
            fr("handle", "/app/a.py", 19),
            fr("Handle._run", "/py/asyncio/events.py", 84),
            fr(
                "BaseEventLoop._run_once",
                "/py/asyncio/base_events.py",
                1971,
            ),
        ];
        let s = 1_000_000_000;
        // Seen while out (stack read then), then its end from the kernel.
        m.apply(&blocked(s, None, 0, stack.clone()));
        m.apply(&blocked(s, Some(s + 500_000_000), 2_000_000, Vec::new()));
        // Mostly waiting for a CPU: not the loop's doing.
        m.apply(&blocked(
            3 * s,
            Some(3 * s + 300_000_000),
            250_000_000,
            stack.clone(),
        ));
        // Ended before any look: counted, not reported (no stack).
        m.apply(&blocked(5 * s, Some(5 * s + 200_000_000), 0, Vec::new()));
        let mut e = Engine::new(Limits::new(u64::MAX), ());
        e.model = m;
        let found = e.check(6 * s);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.kind, FindingKind::EventLoopBlocked);
        let summary = f.summary();
        assert!(
            summary
                .contains("did not poll for 500 ms (2 ms of it waiting for a CPU): task \"slow\" ran at handle (/app/a.py:19)"),
            "{summary}"
        );
        assert_eq!(f.threads[0].python_frames, stack);
        let mut s = String::new();
        crate::report::asyncio::summary(&mut s, &e.model, e.limits().loop_blocked_ns);
        assert!(s.contains("thread 10 blocked 2 times"), "{s}");
        // Once per stretch.
        assert!(e.check(7_000_000_000).is_empty());
    }
}
