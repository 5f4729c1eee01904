//! Which threads run: /proc/PID/task/TID/schedstat counts the timeslices a
//! thread has run. A thread whose count stays still while another thread
//! of its process runs is stuck; what it is blocked in comes from
//! /proc/.../syscall and wchan. Sampled about once a second: a file read
//! per thread, nothing in the target's hot path.

use std::collections::HashMap;

use super::snapshot::proc_syscall;
use crate::{
    event::{Event, Tid},
    model::Model,
};

struct Seen {
    slices: u64,
    /// When the count last changed (or we first looked).
    changed_ns: u64,
    stuck: bool,
    /// `last_run` as read since the count last changed (it changes only
    /// when the thread runs); None: not read yet.
    last_run: Option<Option<u64>>,
}

#[derive(Default)]
pub struct Activity {
    seen: HashMap<(u32, Tid), Seen>,
}

/// Timeslices run so far: schedstat's third field, or the context switch
/// counts where schedstat is missing.
pub(crate) fn slices(pid: u32, tid: Tid) -> Option<u64> {
    if let Some(s) = crate::sys::read_proc(&format!("/proc/{pid}/task/{tid}/schedstat")) {
        return s.split_whitespace().nth(2)?.parse().ok();
    }
    let s = crate::sys::read_proc(&format!("/proc/{pid}/task/{tid}/status"))?;
    let n: u64 = s
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum();
    Some(n)
}

/// When the thread last started running (`se.exec_start` of
/// /proc/PID/task/TID/sched, in ns of the scheduler clock), where the
/// kernel shows it (CONFIG_SCHED_DEBUG). Orders the last runs of threads
/// that a once-a-second sample sees change in the same interval.
fn last_run(pid: u32, tid: Tid) -> Option<u64> {
    let s = crate::sys::read_proc(&format!("/proc/{pid}/task/{tid}/sched"))?;
    let v = s
        .lines()
        .find(|l| l.starts_with("se.exec_start"))?
        .split(':')
        .nth(1)?
        .trim();
    let (ms, frac) = v.split_once('.').unwrap_or((v, "0"));
    let frac: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    Some(ms.parse::<u64>().ok()? * 1_000_000 + frac.parse::<u64>().ok()?)
}

impl Activity {
    /// Samples every live thread of the model; emits `ThreadStuck` for a
    /// thread idle for `threshold_ns` while its process made progress, and
    /// `ThreadResumed` when a stuck thread runs again.
    pub fn sample(&mut self, model: &Model, now: u64, threshold_ns: u64, out: &mut Vec<Event>) {
        let mut alive = HashMap::new();
        for p in model
            .processes
            .values()
            .filter(|p| p.observed_to_ns.is_none())
        {
            // Newest change among the process's threads: its progress.
            let mut latest: Vec<(Tid, u64, bool, Option<u64>)> = Vec::new();
            for t in p.live_threads() {
                let Some(n) = slices(p.tgid, t.tid) else {
                    continue;
                };
                let e = self.seen.entry((p.tgid, t.tid)).or_insert(Seen {
                    slices: n,
                    changed_ns: now,
                    stuck: false,
                    last_run: None,
                });
                if e.slices != n {
                    e.slices = n;
                    e.changed_ns = now;
                    e.last_run = None;
                    if e.stuck {
                        e.stuck = false;
                        out.push(Event::ThreadResumed {
                            ts_ns: now,
                            tgid: p.tgid,
                            tid: t.tid,
                        });
                    }
                }
                latest.push((t.tid, e.changed_ns, e.stuck, None));
                alive.insert((p.tgid, t.tid), ());
            }
            let candidate = |&(_, changed, stuck, _): &(Tid, u64, bool, Option<u64>)| {
                !stuck && now.saturating_sub(changed) >= threshold_ns
            };
            if !latest.iter().any(candidate) {
                continue;
            }
            // Only now: the sched file is long to format, and a process
            // with no candidate needs no order among its threads' runs. A
            // thread that has not run since it was read keeps its value.
            for l in latest.iter_mut() {
                if let Some(e) = self.seen.get_mut(&(p.tgid, l.0)) {
                    l.3 = *e.last_run.get_or_insert_with(|| last_run(p.tgid, l.0));
                }
            }
            for &(tid, changed, stuck, ran) in &latest {
                if stuck || now.saturating_sub(changed) < threshold_ns {
                    continue;
                }
                // Another thread changed in a later sample, or in the same
                // one but ran after this thread last did.
                let others_ran = latest.iter().any(|&(o, c, _, oran)| {
                    o != tid
                        && (c > changed
                            || (c == changed && matches!((oran, ran), (Some(a), Some(b)) if a > b)))
                });
                if !others_ran {
                    continue;
                }
                let syscall = proc_syscall(p.tgid, tid)
                    .map(|(nr, ..)| nr)
                    .filter(|&nr| nr >= 0);
                let wchan = std::fs::read_to_string(format!("/proc/{}/task/{tid}/wchan", p.tgid))
                    .unwrap_or_default();
                if let Some(e) = self.seen.get_mut(&(p.tgid, tid)) {
                    e.stuck = true;
                }
                out.push(Event::ThreadStuck {
                    ts_ns: now,
                    tgid: p.tgid,
                    tid,
                    since_ns: changed,
                    syscall,
                    wchan,
                });
            }
        }
        self.seen.retain(|k, _| alive.contains_key(k));
    }
}
