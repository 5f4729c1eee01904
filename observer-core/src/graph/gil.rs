//! "Is it my locks or the GIL?": per Python thread, where its wall time
//! went (running, waiting for a CPU, waiting for the GIL, waiting on locks,
//! blocked in other syscalls), and a verdict per process. Pure: it reads
//! the cumulative tallies of `python::gil` (two of them for a window).
//!
//! Sources and their precision: on-CPU and run-queue time are exact
//! (schedstat deltas); GIL, lock and holder shares are the fractions of
//! samples (jittered, ~100/s) that saw the thread in a futex wait on the
//! GIL, on another word, or holding the GIL. "Other syscalls" is what is
//! left: wall time in none of those (sleep, I/O, select, ...).

use serde::Serialize;

use crate::vocab::gil::{GilStatus, GilTally, ThreadTally};

/// What mostly limits a process's Python threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    GilBound,
    LockBound,
    IoBound,
    CpuBound,
    Idle,
}

/// One thread's shares of wall time over the window (0..1 each).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ThreadShares {
    pub tid: u32,
    pub wall_ns: u64,
    /// Samples the sampled shares rest on.
    pub samples: u64,
    pub running: f64,
    /// Runnable, waiting for a CPU (the machine is busy).
    pub runnable: f64,
    pub gil_wait: f64,
    pub gil_wait_ns: u64,
    pub held: f64,
    pub lock_wait: f64,
    /// (lock, share), largest first.
    pub locks: Vec<(u64, f64)>,
    /// Blocked in other syscalls.
    pub syscall: f64,
    /// It ran during the window (a thread that never woke is idle and
    /// left out of the verdict: a `join()` or a worker waiting for work).
    pub active: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GilReport {
    pub version: String,
    pub status: GilStatus,
    pub threads: Vec<ThreadShares>,
    /// None when the GIL was not located (free-threaded, unknown layout).
    pub verdict: Option<Verdict>,
    /// Active threads, and their mean shares.
    pub active: usize,
    pub mean_gil_wait: f64,
    pub mean_lock_wait: f64,
    pub mean_syscall: f64,
    /// On a CPU.
    pub mean_cpu: f64,
    /// Waiting for a CPU: the machine's load, not the program's nature,
    /// so it takes no part in the verdict.
    pub mean_runnable: f64,
    /// The thread that held the GIL in most samples.
    pub holder_mostly: Option<u32>,
    /// The lock waited on most (all threads).
    pub top_lock: Option<u64>,
}

/// Minimum window for a verdict: fewer samples say nothing.
const MIN_SAMPLES: u64 = 10;

fn share(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        (n as f64 / d as f64).clamp(0.0, 1.0)
    }
}

fn delta(cur: &ThreadTally, prev: Option<&ThreadTally>) -> ThreadTally {
    let Some(p) = prev else {
        return cur.clone();
    };
    ThreadTally {
        tid: cur.tid,
        samples: cur.samples.saturating_sub(p.samples),
        gil_wait: cur.gil_wait.saturating_sub(p.gil_wait),
        held: cur.held.saturating_sub(p.held),
        lock_waits: cur
            .lock_waits
            .iter()
            .map(|&(l, n)| {
                let was = p.lock_waits.iter().find(|x| x.0 == l).map_or(0, |x| x.1);
                (l, n.saturating_sub(was))
            })
            .filter(|x| x.1 > 0)
            .collect(),
        sched_from_ns: p.sched_to_ns,
        sched_to_ns: cur.sched_to_ns,
        cpu_ns: cur.cpu_ns.saturating_sub(p.cpu_ns),
        runq_ns: cur.runq_ns.saturating_sub(p.runq_ns),
        slices: cur.slices.saturating_sub(p.slices),
    }
}

/// Shares and verdict over the window from `prev` (None: from the start)
/// to `cur`.
pub fn analyze(prev: Option<&GilTally>, cur: &GilTally) -> GilReport {
    let mut r = GilReport {
        version: cur.version.clone(),
        status: cur.status.clone(),
        threads: Vec::new(),
        verdict: None,
        active: 0,
        mean_gil_wait: 0.0,
        mean_lock_wait: 0.0,
        mean_syscall: 0.0,
        mean_cpu: 0.0,
        mean_runnable: 0.0,
        holder_mostly: None,
        top_lock: None,
    };
    if !matches!(cur.status, GilStatus::Located { .. }) {
        return r;
    }
    let mut held_by: Vec<(u32, u64)> = Vec::new();
    let mut lock_total: Vec<(u64, u64)> = Vec::new();
    for t in &cur.threads {
        let d = delta(
            t,
            prev.and_then(|p| p.threads.iter().find(|x| x.tid == t.tid)),
        );
        if d.samples == 0 {
            continue;
        }
        let wall = d.sched_to_ns.saturating_sub(d.sched_from_ns);
        let running = share(d.cpu_ns, wall);
        let runnable = share(d.runq_ns, wall);
        let gil_wait = share(d.gil_wait, d.samples);
        let mut locks: Vec<(u64, f64)> = d
            .lock_waits
            .iter()
            .map(|&(l, n)| (l, share(n, d.samples)))
            .collect();
        locks.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let lock_wait = locks.iter().fold(0.0, |a, x| a + x.1).min(1.0);
        // A waiter woken (by a timeout or a signal) waits for a CPU inside
        // its futex call: schedstat counts that in the run queue too. So the
        // run queue only takes what the samples left.
        let rest = (1.0 - running - gil_wait - lock_wait).max(0.0);
        let runnable = runnable.min(rest);
        let syscall = rest - runnable;
        for &(l, n) in &d.lock_waits {
            match lock_total.iter_mut().find(|x| x.0 == l) {
                Some(x) => x.1 += n,
                None => lock_total.push((l, n)),
            }
        }
        held_by.push((t.tid, d.held));
        r.threads.push(ThreadShares {
            tid: t.tid,
            wall_ns: wall,
            samples: d.samples,
            running,
            runnable,
            gil_wait,
            gil_wait_ns: (gil_wait * wall as f64) as u64,
            held: share(d.held, d.samples),
            lock_wait,
            locks,
            syscall,
            active: d.slices >= 2 && wall > 0,
        });
    }
    r.holder_mostly = held_by
        .iter()
        .filter(|x| x.1 > 0)
        .max_by_key(|x| (x.1, std::cmp::Reverse(x.0)))
        .map(|x| x.0);
    r.top_lock = lock_total
        .iter()
        .max_by_key(|x| (x.1, std::cmp::Reverse(x.0)))
        .map(|x| x.0);
    let samples = cur.samples - prev.map_or(0, |p| p.samples.min(cur.samples));
    if samples < MIN_SAMPLES {
        return r;
    }
    let act: Vec<&ThreadShares> = r.threads.iter().filter(|t| t.active).collect();
    r.active = act.len();
    if act.is_empty() {
        r.verdict = Some(Verdict::Idle);
        return r;
    }
    let n = act.len() as f64;
    r.mean_gil_wait = act.iter().map(|t| t.gil_wait).sum::<f64>() / n;
    r.mean_lock_wait = act.iter().map(|t| t.lock_wait).sum::<f64>() / n;
    r.mean_syscall = act.iter().map(|t| t.syscall).sum::<f64>() / n;
    r.mean_cpu = act.iter().map(|t| t.running).sum::<f64>() / n;
    r.mean_runnable = act.iter().map(|t| t.runnable).sum::<f64>() / n;
    // The largest of the four: where the threads' time mostly went (time
    // spent waiting for a CPU says the machine is busy, whatever the
    // program does: an overloaded host must not make I/O threads CPU-bound).
    let cands = [
        (r.mean_gil_wait, Verdict::GilBound),
        (r.mean_lock_wait, Verdict::LockBound),
        (r.mean_syscall, Verdict::IoBound),
        (r.mean_cpu, Verdict::CpuBound),
    ];
    r.verdict = cands.iter().max_by(|a, b| a.0.total_cmp(&b.0)).map(|x| x.1);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(
        tid: u32,
        samples: u64,
        gil: u64,
        held: u64,
        locks: &[(u64, u64)],
        cpu_ms: u64,
    ) -> ThreadTally {
        ThreadTally {
            tid,
            samples,
            gil_wait: gil,
            held,
            lock_waits: locks.to_vec(),
            sched_from_ns: 0,
            sched_to_ns: 1_000_000_000,
            cpu_ns: cpu_ms * 1_000_000,
            runq_ns: 0,
            slices: 100,
        }
    }

    fn tally(threads: Vec<ThreadTally>) -> GilTally {
        GilTally {
            version: "3.12.1".into(),
            status: GilStatus::Located { addr: 0x1000 },
            samples: 100,
            threads,
        }
    }

    #[test]
    fn four_cpu_threads_are_gil_bound() {
        let mut ts: Vec<ThreadTally> = (1..=4).map(|i| t(i, 100, 74, 25, &[], 250)).collect();
        ts[2].held = 40;
        // The main thread joins: it never wakes.
        let mut main = t(9, 100, 0, 0, &[(0x5000, 100)], 0);
        main.slices = 0;
        ts.push(main);
        let r = analyze(None, &tally(ts));
        assert_eq!(r.verdict, Some(Verdict::GilBound));
        assert_eq!(r.active, 4);
        assert!((r.mean_gil_wait - 0.74).abs() < 1e-9);
        assert_eq!(r.holder_mostly, Some(3));
        let w = &r.threads[0];
        assert_eq!(w.gil_wait_ns, 740_000_000);
        assert!((w.syscall - 0.01).abs() < 1e-9, "{w:?}");
    }

    #[test]
    fn lock_io_cpu_and_idle() {
        let lock = (1..=4)
            .map(|i| t(i, 100, 2, 0, &[(0x7000, 70)], 10))
            .collect();
        let r = analyze(None, &tally(lock));
        assert_eq!(r.verdict, Some(Verdict::LockBound));
        assert_eq!(r.top_lock, Some(0x7000));
        let io = (1..=4).map(|i| t(i, 100, 1, 0, &[], 20)).collect();
        assert_eq!(analyze(None, &tally(io)).verdict, Some(Verdict::IoBound));
        // On an overloaded host, sleepers wait long for a CPU once woken:
        // still I/O-bound, not CPU-bound.
        let busy_host = (1..=4)
            .map(|i| ThreadTally {
                runq_ns: 600_000_000,
                ..t(i, 100, 1, 0, &[], 10)
            })
            .collect();
        let r = analyze(None, &tally(busy_host));
        assert_eq!(r.verdict, Some(Verdict::IoBound), "{r:?}");
        assert!((r.mean_runnable - 0.6).abs() < 1e-9);
        let cpu = vec![t(1, 100, 0, 95, &[], 950)];
        assert_eq!(analyze(None, &tally(cpu)).verdict, Some(Verdict::CpuBound));
        let mut idle = t(1, 100, 0, 0, &[(0x7000, 100)], 0);
        idle.slices = 0;
        assert_eq!(
            analyze(None, &tally(vec![idle])).verdict,
            Some(Verdict::Idle)
        );
    }

    #[test]
    fn windows_are_differences() {
        let a = tally(vec![t(1, 100, 90, 0, &[], 100)]);
        let mut b = tally(vec![t(1, 200, 100, 0, &[(0x7000, 80)], 200)]);
        b.samples = 200;
        b.threads[0].sched_to_ns = 2_000_000_000;
        b.threads[0].slices = 200;
        let r = analyze(Some(&a), &b);
        let th = &r.threads[0];
        assert!((th.gil_wait - 0.10).abs() < 1e-9);
        assert!((th.lock_wait - 0.80).abs() < 1e-9);
        assert_eq!(th.wall_ns, 1_000_000_000);
        assert_eq!(r.verdict, Some(Verdict::LockBound));
        // Too few samples: shares, no verdict.
        let mut c = b.clone();
        c.samples = 205;
        assert_eq!(analyze(Some(&b), &c).verdict, None);
    }

    #[test]
    fn no_gil_no_verdict() {
        let mut x = tally(vec![t(1, 100, 0, 0, &[], 100)]);
        x.status = GilStatus::NoGil;
        let r = analyze(None, &x);
        assert!(r.threads.is_empty() && r.verdict.is_none());
    }
}
