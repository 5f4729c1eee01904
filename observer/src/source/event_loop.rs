//! Event loop threads from the kernel's epoll_wait bookkeeping (map EPOLL):
//! which are out of their selector too long, and which sit idle in it (a
//! moment to read their tasks: an await cycle leaves the loop idle).

use std::collections::HashMap;

use observer_ebpf::bindings::obs_epoll;

use crate::{event::Event, probe::Probes};

/// The map's threads: (tid, their last epoll_wait entry and return).
pub type Threads = [(u32, obs_epoll)];

/// What was already looked at, per thread.
#[derive(Default)]
pub struct LoopWatch {
    /// The stretch out of the selector already reported (its start).
    out: HashMap<u32, u64>,
    /// The idle stretch in the selector already read (its start).
    idle: HashMap<u32, u64>,
    /// Processes seen calling epoll_wait.
    known: std::collections::HashSet<u32>,
    /// Attached processes already read once.
    looked: std::collections::HashSet<u32>,
}

impl LoopWatch {
    /// True the first time it is asked about `tgid`: a process attached to
    /// is read once right away (a loop idle since before the attach makes no
    /// epoll_wait call to be seen).
    pub fn first_look(&mut self, tgid: u32) -> bool {
        self.looked.insert(tgid)
    }

    /// `tgid`'s threads were seen in epoll_wait (`fresh`).
    pub fn knows(&self, tgid: u32) -> bool {
        self.known.contains(&tgid)
    }

    /// Processes whose threads called epoll_wait for the first time since
    /// the last call (to get ready to read them: the first read of an
    /// interpreter is the slow one).
    pub fn fresh(&mut self, threads: &Threads) -> Vec<u32> {
        let mut out: Vec<u32> = threads
            .iter()
            .map(|(_, e)| e.tgid)
            .filter(|&g| self.known.insert(g))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// `LoopBlocked` events for threads out of their selector for `limit`
    /// or more (once per stretch), and the processes whose Python view
    /// should be read now: those, and those idle in it for `idle`.
    pub fn poll(
        &mut self,
        threads: &Threads,
        now: u64,
        limit: u64,
        idle: u64,
    ) -> (Vec<Event>, Vec<u32>) {
        let mut evs = Vec::new();
        let mut read = Vec::new();
        for (tid, e) in threads {
            let (tid, tgid) = (*tid, e.tgid);
            if e.exit_ns > e.enter_ns {
                if now.saturating_sub(e.exit_ns) < limit || self.out.get(&tid) == Some(&e.exit_ns) {
                    continue;
                }
                // Time spent waiting for a CPU is not the loop's doing. The
                // kernel adds a wait to run_delay only once it ends: a thread
                // runnable now may be waiting right now, so for it only its
                // CPU time counts until the stretch ends (the kernel's record
                // then has the whole wait).
                let Some(st) = sched(tgid, tid) else {
                    continue;
                };
                let out_ns = now.saturating_sub(e.exit_ns);
                let runq = st.run_delay.saturating_sub(e.exit_delay);
                let blocked = if st.runnable {
                    st.cpu.saturating_sub(e.exit_cpu)
                } else {
                    out_ns.saturating_sub(runq)
                };
                if blocked >= limit {
                    self.out.insert(tid, e.exit_ns);
                    evs.push(Event::LoopBlocked {
                        ts_ns: now,
                        tgid,
                        tid,
                        start_ns: e.exit_ns,
                        end_ns: None,
                        runq_ns: runq,
                        python: Vec::new(),
                        task: None,
                    });
                    read.push(tgid);
                }
            } else if now.saturating_sub(e.enter_ns) >= idle
                && self.idle.insert(tid, e.enter_ns) != Some(e.enter_ns)
            {
                read.push(tgid);
            }
        }
        // Threads gone from the map (exited) are forgotten.
        self.out.retain(|t, _| threads.iter().any(|x| x.0 == *t));
        self.idle.retain(|t, _| threads.iter().any(|x| x.0 == *t));
        read.sort_unstable();
        read.dedup();
        (evs, read)
    }

    /// Whether `fresh` or `poll` may have something to do for `threads`: a
    /// process new to epoll_wait, a thread out of its selector `limit` or
    /// more in a stretch not yet reported, or idle in it `idle` or more in a
    /// stretch not yet read. The map's own times only (no /proc read): the
    /// daemon asks it of every idle process on every scan.
    pub fn due(&self, threads: &Threads, now: u64, limit: u64, idle: u64) -> bool {
        threads.iter().any(|(tid, e)| {
            if !self.known.contains(&e.tgid) {
                // New to epoll_wait: its interpreter is found now (`fresh`).
                true
            } else if e.exit_ns > e.enter_ns {
                now.saturating_sub(e.exit_ns) >= limit && self.out.get(tid) != Some(&e.exit_ns)
            } else {
                now.saturating_sub(e.enter_ns) >= idle && self.idle.get(tid) != Some(&e.enter_ns)
            }
        })
    }
}

/// Gives each `LoopBlocked` in `blocked` the stack its thread has in the
/// Python views just read (`views`), if the thread is still out of its
/// selector in the same stretch (else the stack would be of later work).
pub fn stacks(blocked: &mut [Event], views: &[Event], probes: &Probes) {
    if blocked.is_empty() {
        return;
    }
    let out: HashMap<u32, u64> = probes
        .epoll_threads()
        .into_iter()
        .filter(|(_, e)| e.exit_ns > e.enter_ns)
        .map(|(t, e)| (t, e.exit_ns))
        .collect();
    for b in blocked {
        let Event::LoopBlocked {
            tgid,
            tid,
            start_ns,
            python,
            task,
            ..
        } = b
        else {
            continue;
        };
        if out.get(tid) != Some(start_ns) {
            continue;
        }
        let Some(view) = views.iter().rev().find_map(|e| match e {
            Event::PyState { tgid: g, view, .. } if g == tgid => Some(view),
            _ => None,
        }) else {
            continue;
        };
        let Some(t) = view.thread(*tid) else {
            continue;
        };
        *python = t.frames.clone();
        *task = view
            .asyncio
            .as_ref()
            .and_then(|a| a.task(a.loop_of(*tid)?.current?))
            .map(|(_, t)| t.name.clone());
    }
}

/// A thread's scheduler counters (/proc): whether it is running or
/// runnable, its CPU time and the time it spent waiting for a CPU
/// (`se.sum_exec_runtime`, `sched_info.run_delay`).
struct Sched {
    runnable: bool,
    cpu: u64,
    run_delay: u64,
}

fn sched(pid: u32, tid: u32) -> Option<Sched> {
    let dir = format!("/proc/{pid}/task/{tid}");
    let stat = crate::sys::read_proc(&format!("{dir}/stat"))?;
    // The state follows the last ')' (the name may hold anything).
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    let ss = crate::sys::read_proc(&format!("{dir}/schedstat"))?;
    let mut it = ss.split_whitespace();
    Some(Sched {
        runnable: state == "R",
        cpu: it.next()?.parse().ok()?,
        run_delay: it.next()?.parse().ok()?,
    })
}

/// Whether thread `tid` of `pid` sits in epoll_wait now (/proc; no BPF).
pub fn in_selector(pid: u32, tid: u32) -> Option<bool> {
    let s = crate::sys::read_proc(&format!("/proc/{pid}/task/{tid}/syscall"))?;
    let nr: i64 = s.split_whitespace().next()?.parse().ok()?;
    Some(EPOLL_NRS.contains(&nr))
}

#[cfg(target_arch = "x86_64")]
const EPOLL_NRS: &[i64] = &[232, 281, 441];
#[cfg(target_arch = "aarch64")]
const EPOLL_NRS: &[i64] = &[22, 441];
