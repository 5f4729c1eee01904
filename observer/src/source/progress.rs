//! The hang watchdog of `run --hang-after`: the watched tree (the target
//! and its descendants, observed or not) is hung when none of its threads
//! has run on a CPU for the duration. On-CPU time, not wall time: a
//! CPU-bound program runs all the time, and a program that sleeps and wakes
//! (a periodic timer) runs a little at each wake; neither is hung. A thread
//! that appears or goes away ran too (to be created, to exit).
//!
//! Read from /proc/PID/task/TID/schedstat (its first field, ns on a CPU),
//! else stat's utime+stime; the tree from /proc/PID/task/TID/children, else
//! the parent field of every /proc/PID/stat.

use std::collections::HashMap;

use crate::event::{BlockedIn, Tid};

pub struct Watchdog {
    after_ns: u64,
    /// On-CPU time of each thread of the tree at the last sample.
    seen: HashMap<(u32, Tid), u64>,
    /// When something last ran, as far as the samples tell (the sample
    /// that saw it: never earlier than it ran).
    progress_ns: u64,
    fired: bool,
}

impl Watchdog {
    pub fn new(after_ns: u64, now: u64) -> Watchdog {
        Watchdog {
            after_ns,
            seen: HashMap::new(),
            progress_ns: now,
            fired: false,
        }
    }

    /// How often to sample: a tenth of the duration, within 25 ms .. 1 s.
    pub fn period_ms(after_ns: u64) -> u64 {
        (after_ns / 10_000_000).clamp(25, 1000)
    }

    /// Samples the tree rooted at `root`. Returns when it last ran if it
    /// has not run for the duration since, once.
    pub fn sample(&mut self, root: u32, now: u64) -> Option<u64> {
        let mut cur = HashMap::new();
        for pid in tree(root) {
            for tid in tasks(pid) {
                if let Some(ns) = on_cpu_ns(pid, tid) {
                    cur.insert((pid, tid), ns);
                }
            }
        }
        if cur != self.seen {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let moved: Vec<_> = cur
                    .iter()
                    .filter(|(k, v)| self.seen.get(k) != Some(v))
                    .map(|(k, v)| (k.1, *v - self.seen.get(k).copied().unwrap_or(0)))
                    .collect();
                tracing::debug!("hang watchdog: ran at {now}: {moved:?}");
            }
            self.seen = cur;
            self.progress_ns = now;
            return None;
        }
        if self.fired || self.seen.is_empty() || now - self.progress_ns < self.after_ns {
            return None;
        }
        self.fired = true;
        Some(self.progress_ns)
    }
}

/// Where each thread of `pid` sits now.
pub fn blocked_in(pid: u32) -> Vec<BlockedIn> {
    tasks(pid)
        .into_iter()
        .map(|tid| BlockedIn {
            tid,
            syscall: crate::symbol::proc_syscall(pid, tid)
                .map(|(nr, ..)| nr)
                .filter(|&nr| nr >= 0),
            wchan: std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan"))
                .unwrap_or_default(),
        })
        .collect()
}

fn tasks(pid: u32) -> Vec<Tid> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// `root` and every descendant.
pub fn tree(root: u32) -> Vec<u32> {
    let mut out = vec![root];
    let by_children = std::path::Path::new(&format!("/proc/{root}/task/{root}/children")).exists();
    let parents = (!by_children).then(parents);
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        let kids: Vec<u32> = match &parents {
            None => tasks(pid)
                .into_iter()
                .flat_map(|tid| {
                    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children"))
                        .unwrap_or_default()
                        .split_whitespace()
                        .filter_map(|c| c.parse().ok())
                        .collect::<Vec<u32>>()
                })
                .collect(),
            Some(all) => all
                .iter()
                .filter(|&&(_, pp)| pp == pid)
                .map(|&(p, _)| p)
                .collect(),
        };
        for k in kids {
            if !out.contains(&k) {
                out.push(k);
            }
        }
        i += 1;
    }
    out
}

/// (pid, parent) of every process.
fn parents() -> Vec<(u32, u32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = crate::sys::read_proc(&format!("/proc/{pid}/stat"))?;
        Some((pid, stat_fields(&stat)?.get(1)?.parse().ok()?))
    })
    .collect()
}

/// The fields of /proc/.../stat after the command name: state first.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// Nanoseconds the thread has run on a CPU.
fn on_cpu_ns(pid: u32, tid: Tid) -> Option<u64> {
    if let Some(s) = crate::sys::read_proc(&format!("/proc/{pid}/task/{tid}/schedstat")) {
        return s.split_whitespace().next()?.parse().ok();
    }
    let stat = crate::sys::read_proc(&format!("/proc/{pid}/task/{tid}/stat"))?;
    let f = stat_fields(&stat)?;
    // utime and stime are fields 14 and 15 (state is 3).
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(ticks * (1_000_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_the_name() {
        let s = "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0";
        let f = stat_fields(s).unwrap();
        assert_eq!((f[0], f[1], f[11], f[12]), ("S", "1", "7", "3"));
    }

    /// This test's own process runs: it is never hung; a period follows the duration.
    #[test]
    fn a_running_tree_is_not_hung() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        assert!(on_cpu_ns(me, me).is_some());
        let mut w = Watchdog::new(0, 0);
        assert_eq!(w.sample(me, 1), None); // first sight is progress
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        std::hint::black_box(x);
        assert_eq!(w.sample(me, 2), None);
        assert_eq!(Watchdog::period_ms(600_000_000_000), 1000);
        assert_eq!(Watchdog::period_ms(1_000_000_000), 100);
        assert_eq!(Watchdog::period_ms(1_000_000), 25);
    }
}
