//! Which threads run: /proc/PID/task/TID/schedstat counts the timeslices a
//! thread has run. A thread whose count stays still while another thread
//! of its process runs is stuck; what it is blocked in comes from
//! /proc/.../syscall and wchan. Sampled about once a second: a file read
//! per thread, nothing in the target's hot path.

use std::collections::HashMap;

use super::snapshot::proc_syscall;
use crate::{
    event::{Event, Tid, WaitOrigin},
    model::Model,
};

struct Seen {
    slices: u64,
    /// When the count last changed (or we first looked).
    changed_ns: u64,
    /// `changed_ns` is only when we first looked: no change seen yet.
    first_look: bool,
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
                let new = !self.seen.contains_key(&(p.tgid, t.tid));
                let e = self.seen.entry((p.tgid, t.tid)).or_insert(Seen {
                    slices: n,
                    changed_ns: now,
                    first_look: true,
                    stuck: false,
                    last_run: None,
                });
                if e.slices != n {
                    e.slices = n;
                    e.changed_ns = now;
                    e.first_look = false;
                    e.last_run = None;
                    if e.stuck {
                        e.stuck = false;
                        out.push(Event::ThreadResumed {
                            ts_ns: now,
                            tgid: p.tgid,
                            tid: t.tid,
                        });
                    }
                } else if e.first_look
                    && !new
                    && let Some(w) = &t.wait
                    && w.origin == WaitOrigin::Kernel
                    && w.start_ns < e.changed_ns
                {
                    // Still for a whole sample, in a futex wait the kernel
                    // saw begin before we first looked: it last ran then.
                    // (A loop held up at the start first looks at every
                    // thread at once; `last_run` cannot order them, as
                    // each CPU's clock is its own.)
                    e.changed_ns = w.start_ns;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Wait;
    use std::sync::mpsc;

    const S: u64 = 1_000_000_000;

    /// A thread of this process asleep in a futex wait until `tx` is dropped.
    fn sleeper() -> (Tid, mpsc::Sender<()>, std::thread::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<()>();
        let (tid_tx, tid_rx) = mpsc::channel();
        let h = std::thread::spawn(move || {
            tid_tx.send(unsafe { libc::gettid() } as Tid).unwrap();
            let _ = rx.recv();
        });
        let tid = tid_rx.recv().unwrap();
        let stat = format!("/proc/self/task/{tid}/stat");
        // Asleep in recv(): its timeslice count no longer moves.
        while !std::fs::read_to_string(&stat)
            .unwrap()
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('S'))
        {
            std::thread::yield_now();
        }
        (tid, tx, h)
    }

    fn wait_since(start_ns: u64) -> Wait {
        Wait {
            uaddr: 0x1000,
            uaddr2: 0,
            op: 0x189,
            val: 0,
            start_ns,
            ip: 0,
            sp: 0,
            bp: 0,
            words_addr: 0,
            words: Vec::new(),
            origin: WaitOrigin::Kernel,
        }
    }

    /// The loop first looks at both threads after both went to sleep (a
    /// scan held it up): the one whose wait began first is stuck, since the
    /// other ran after it; the one that ran last is not.
    #[test]
    fn a_late_first_look_orders_threads_by_their_waits() {
        let (early, tx1, h1) = sleeper();
        let (late, tx2, h2) = sleeper();
        let tgid = std::process::id();
        let mut m = Model::new();
        for (tid, since) in [(early, 10 * S), (late, 20 * S)] {
            m.apply(&Event::ThreadSeen {
                ts_ns: S,
                tgid,
                tid,
                name: "t".into(),
                parent_tid: None,
                start_ns: None,
            });
            m.apply(&Event::WaitBegin {
                ts_ns: since,
                tgid,
                tid,
                wait: wait_since(since),
            });
        }
        let mut a = Activity::default();
        let mut out = Vec::new();
        a.sample(&m, 100 * S, S, &mut out);
        assert!(out.is_empty(), "{out:?}");
        a.sample(&m, 100 * S + S / 4, S, &mut out);
        let stuck: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                Event::ThreadStuck { tid, since_ns, .. } => Some((*tid, *since_ns)),
                _ => None,
            })
            .collect();
        assert_eq!(stuck, vec![(early, 10 * S)]);
        drop((tx1, tx2));
        h1.join().unwrap();
        h2.join().unwrap();
    }
}
