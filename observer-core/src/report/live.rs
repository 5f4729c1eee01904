//! One line per thread lifecycle event and long wait, printed as they happen.

use std::collections::BTreeMap;

use super::{dur, escape};
use crate::{
    event::{Event, futex},
    model::{Model, describe_exit},
};

/// Thread lines (creations, exits, renames) of one process printed per
/// second; the rest of that second is counted and said in one line when it
/// ends. A program that churns threads would otherwise print two or three
/// lines per thread (and the observer spend more CPU printing than observing).
pub const THREAD_LINES_PER_S: u32 = 20;
const WINDOW_NS: u64 = 1_000_000_000;

/// The live lines of a stream of events, with thread churn folded.
#[derive(Default)]
pub struct LiveLines {
    /// Per process: its current second of thread lines.
    windows: BTreeMap<u32, Window>,
    t0: Option<u64>,
}

struct Window {
    start_ns: u64,
    shown: u32,
    /// Counted, not shown: created, exited, renamed.
    counted: [u64; 3],
    name: String,
    last_ns: u64,
}

impl LiveLines {
    /// The lines for `ev` (the model as it is after applying it): those of
    /// seconds that ended before it, then its own unless folded.
    pub fn lines(&mut self, model: &Model, ev: &Event) -> Vec<String> {
        self.t0 = model.first_ns.or(self.t0);
        let Some(now) = ev.ts_ns() else {
            return line(model, ev).into_iter().collect();
        };
        let mut out = self.tick(now);
        match ev {
            // The process ends: its count before its last line.
            Event::End { tgid, .. } => out.extend(self.ended_of(*tgid)),
            Event::ThreadExit {
                tgid,
                tid,
                group_dead,
                ..
            } if tid == tgid || *group_dead => out.extend(self.ended_of(*tgid)),
            Event::ThreadNew {
                tgid, child_tgid, ..
            } if tgid == child_tgid && self.fold(model, *tgid, 0, now) => return out,
            Event::ThreadExit { tgid, .. } if self.fold(model, *tgid, 1, now) => return out,
            Event::ThreadRename { tgid, .. } if self.fold(model, *tgid, 2, now) => return out,
            _ => {}
        }
        out.extend(line(model, ev));
        out
    }

    /// The counts of seconds over by `now_ns` (a scan with no events).
    pub fn tick(&mut self, now_ns: u64) -> Vec<String> {
        self.ended(|w| now_ns >= w.start_ns + WINDOW_NS)
    }

    /// The folded counts not yet said (at the end of observation).
    pub fn finish(&mut self) -> Vec<String> {
        self.ended(|_| true)
    }

    /// A thread line of `tgid` at `now`: whether it is folded (counted
    /// under `what`) rather than printed.
    fn fold(&mut self, model: &Model, tgid: u32, what: usize, now: u64) -> bool {
        let w = self.windows.entry(tgid).or_insert_with(|| Window {
            start_ns: now,
            shown: 0,
            counted: [0; 3],
            name: String::new(),
            last_ns: now,
        });
        if w.shown < THREAD_LINES_PER_S {
            w.shown += 1;
            return false;
        }
        w.counted[what] += 1;
        w.last_ns = now;
        if w.name.is_empty() {
            w.name = escape(model.thread_name(tgid, tgid).unwrap_or("?"));
        }
        true
    }

    fn ended_of(&mut self, tgid: u32) -> Vec<String> {
        let t0 = self.t0;
        self.windows
            .remove(&tgid)
            .and_then(|w| folded(tgid, &w, t0))
            .into_iter()
            .collect()
    }

    fn ended(&mut self, done: impl Fn(&Window) -> bool) -> Vec<String> {
        let ended: Vec<u32> = self
            .windows
            .iter()
            .filter(|(_, w)| done(w))
            .map(|(&tgid, _)| tgid)
            .collect();
        ended
            .into_iter()
            .flat_map(|tgid| self.ended_of(tgid))
            .collect()
    }
}

/// "... 9980 more threads created, 9980 exited" for a second that had more.
fn folded(tgid: u32, w: &Window, t0: Option<u64>) -> Option<String> {
    let [created, exited, renamed] = w.counted;
    if created + exited + renamed == 0 {
        return None;
    }
    let rel = w.last_ns.saturating_sub(t0.unwrap_or(w.last_ns)) as f64 / 1e9;
    let renamed = if renamed > 0 {
        format!(", {renamed} renamed")
    } else {
        String::new()
    };
    Some(format!(
        "{rel:>9.3}s ... process {tgid} \"{}\": {created} more threads created, {exited} exited{renamed} in {} (thread churn: past {THREAD_LINES_PER_S} lines a second, counted, not listed)",
        w.name,
        dur(w.last_ns.saturating_sub(w.start_ns)),
    ))
}

/// The line for `ev`, rendered with the model as it is after applying it.
pub fn line(model: &Model, ev: &Event) -> Option<String> {
    let name = |tgid: u32, tid: u32| escape(model.thread_name(tgid, tid).unwrap_or("?"));
    let rel = |ts: u64| {
        let t0 = model.first_ns.unwrap_or(ts);
        format!("{:>9.3}s", ts.saturating_sub(t0) as f64 / 1e9)
    };
    Some(match ev {
        Event::ThreadNew {
            ts_ns,
            tgid,
            creator,
            tid,
            child_tgid,
            ..
        } if tgid == child_tgid => format!(
            "{} + thread {tid} \"{}\" created by {creator} \"{}\"",
            rel(*ts_ns),
            name(*child_tgid, *tid),
            name(*tgid, *creator)
        ),
        Event::ThreadNew {
            ts_ns,
            creator,
            child_tgid,
            tgid,
            ..
        } => format!(
            "{} + process {child_tgid} forked by {creator} \"{}\"",
            rel(*ts_ns),
            name(*tgid, *creator)
        ),
        Event::ThreadExit {
            ts_ns,
            tgid,
            tid,
            exit_code,
            ..
        } => {
            let t = model.process(*tgid)?.thread(*tid)?;
            let life = t
                .start_ns
                .map(|s| format!(" after {}", dur(ts_ns.saturating_sub(s))))
                .unwrap_or_default();
            format!(
                "{} - thread {tid} \"{}\" exited ({}){life}",
                rel(*ts_ns),
                escape(t.name()),
                describe_exit(*exit_code)
            )
        }
        Event::HeldAtAttach {
            ts_ns,
            tgid,
            lock,
            kind,
            holder,
            waiter,
            ..
        } => {
            // The holder may be another observed process's thread (a lock
            // in shared memory).
            let holder_name = |h: u32| {
                model
                    .thread_name(*tgid, h)
                    .or_else(|| model.live_thread(h).map(|(_, t)| t.name()))
                    .map(escape)
                    .unwrap_or_else(|| "?".into())
            };
            let by = match holder {
                Some(h) => format!("{h} \"{}\"", holder_name(*h)),
                None => "a thread the lock does not record".into(),
            };
            format!(
                "{} ! {} {lock:#x} was held before attach, by {by}; {waiter} \"{}\" waits for it",
                rel(*ts_ns),
                kind.as_str(),
                name(*tgid, *waiter)
            )
        }
        Event::ThreadRename {
            ts_ns,
            tid,
            name: n,
            ..
        } => {
            format!("{} ~ thread {tid} renamed \"{}\"", rel(*ts_ns), escape(n))
        }
        Event::Exec {
            ts_ns,
            tgid,
            filename,
            ..
        } => {
            format!("{} * process {tgid} exec {}", rel(*ts_ns), escape(filename))
        }
        Event::WaitDone {
            ts_ns,
            tgid,
            tid,
            wait,
            ret,
        } => format!(
            "{} ! thread {tid} \"{}\" waited {} on futex {:#x} ({}) -> {}",
            rel(*ts_ns),
            name(*tgid, *tid),
            dur(ts_ns.saturating_sub(wait.start_ns)),
            wait.uaddr,
            futex::name(wait.op),
            errno_name(*ret)
        ),
        _ => return None,
    })
}

pub fn errno_name(ret: i64) -> String {
    match ret.saturating_neg() {
        0 if ret == 0 => "0".into(),
        4 => "EINTR".into(),
        11 => "EAGAIN".into(),
        35 => "EDEADLK".into(),
        110 => "ETIMEDOUT".into(),
        130 => "EOWNERDEAD".into(),
        131 => "ENOTRECOVERABLE".into(),
        _ if ret >= 0 => ret.to_string(),
        e => format!("errno {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(ts_ns: u64, tid: u32) -> Event {
        Event::test_thread_new(ts_ns, 7, tid, "worker")
    }

    fn exit(ts_ns: u64, tid: u32) -> Event {
        Event::test_thread_exit(ts_ns, 7, tid, 0)
    }

    fn feed(m: &mut Model, live: &mut LiveLines, ev: Event, out: &mut Vec<String>) {
        m.apply(&ev);
        out.extend(live.lines(m, &ev));
    }

    fn rename(ts_ns: u64, tid: u32) -> Event {
        Event::ThreadRename {
            ts_ns,
            tgid: 7,
            tid,
            name: "pool-x".into(),
        }
    }

    /// A churning process gets its first lines of each second, then one
    /// count when the second is over (the next scan's tick says so, with no
    /// event in between); the last thread out ends the count at once.
    #[test]
    fn thread_churn_is_folded_per_second() {
        let (mut m, mut live, mut out) = (Model::default(), LiveLines::default(), Vec::new());
        let leader = Event::ThreadSeen {
            ts_ns: 0,
            tgid: 7,
            tid: 7,
            name: "server".into(),
            parent_tid: None,
            start_ns: None,
        };
        feed(&mut m, &mut live, leader, &mut out);
        for i in 0..100u32 {
            let ts = 1_000_000 + u64::from(i) * 1_000_000;
            feed(&mut m, &mut live, new(ts, 100 + i), &mut out);
            feed(&mut m, &mut live, rename(ts + 1, 100 + i), &mut out);
            feed(&mut m, &mut live, exit(ts + 500_000, 100 + i), &mut out);
        }
        assert_eq!(out.len(), THREAD_LINES_PER_S as usize);
        assert!(out.iter().all(|l| l.contains("thread 1")), "{out:#?}");
        assert!(live.tick(900_000_000).is_empty());
        out.extend(live.tick(1_100_000_000));
        let last = out.last().unwrap();
        assert!(
            last.contains(
                "... process 7 \"server\": 93 more threads created, 94 exited, 93 renamed in"
            ),
            "{last}"
        );
        // A new second: lines again.
        feed(&mut m, &mut live, new(2_200_000_000, 500), &mut out);
        assert!(
            out.last()
                .unwrap()
                .contains("+ thread 500 \"worker\" created")
        );
        // A fork is never folded; the last thread out (group_dead) says the
        // count first.
        for i in 0..30u32 {
            feed(
                &mut m,
                &mut live,
                new(2_300_000_000 + u64::from(i), 600 + i),
                &mut out,
            );
        }
        let mut fork = new(2_400_000_000, 9);
        if let Event::ThreadNew { child_tgid, .. } = &mut fork {
            *child_tgid = 9;
        }
        feed(&mut m, &mut live, fork, &mut out);
        assert!(
            out.last().unwrap().contains("+ process 9 forked by 7"),
            "{out:#?}"
        );
        let mut last_out = exit(2_500_000_000, 629);
        if let Event::ThreadExit { group_dead, .. } = &mut last_out {
            *group_dead = true;
        }
        let n = out.len();
        feed(&mut m, &mut live, last_out, &mut out);
        assert!(
            out[n].contains("11 more threads created, 0 exited in"),
            "{out:#?}"
        );
        assert!(out[n + 1].contains("- thread 629"), "{out:#?}");
        assert!(live.finish().is_empty());
    }
}
