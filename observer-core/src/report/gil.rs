//! GIL and lock accounting as text (the verdict line, the `--python-top`
//! table) and as JSON (`processes[].python`, `threads[].python.gil`).

use std::fmt::Write as _;

use serde::Serialize;

use super::escape;
use crate::{
    graph::gil::{GilReport, ThreadShares, Verdict, analyze},
    model::{Model, Process},
    vocab::gil::{GilStatus, GilTally},
};

/// `processes[].python`.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessGil {
    pub version: String,
    /// "located", "no_gil" or "unknown".
    pub gil: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gil_addr: Option<String>,
    /// One of gil_bound, lock_bound, io_bound, cpu_bound, idle; null when
    /// there is no GIL to account (free-threaded, unknown layout) or too
    /// few samples.
    pub verdict: Option<Verdict>,
    /// Why there is no verdict, or the verdict in words.
    pub summary: String,
    pub active_threads: usize,
    pub holder_mostly: Option<u32>,
}

/// `threads[].python.gil`.
#[derive(Clone, Debug, Serialize)]
pub struct ThreadGil {
    /// Samples behind the sampled shares (wait, held, lock wait).
    pub samples: u64,
    pub wait_ns: u64,
    pub wait_share: f64,
    pub held_share: f64,
    pub running_share: f64,
    pub runnable_share: f64,
    pub lock_wait_share: f64,
    pub syscall_share: f64,
    pub active: bool,
    /// Locks waited on, largest share first.
    pub locks: Vec<LockShare>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LockShare {
    pub addr: String,
    pub name: Option<String>,
    pub share: f64,
}

/// The whole observation of a process.
pub fn report(p: &Process) -> Option<GilReport> {
    p.gil.as_ref().map(|t| analyze(None, t))
}

/// A thread's display name (escaped).
fn tname(p: &Process, tid: u32) -> String {
    let n = p
        .threads
        .iter()
        .rev()
        .find(|t| t.tid == tid)
        .map(|t| t.name())
        .unwrap_or("");
    if n.is_empty() {
        tid.to_string()
    } else {
        escape(n)
    }
}

/// A lock's name: a Python lock the view knows, a symbol, or its address.
pub fn lock_name(model: &Model, p: &Process, addr: u64) -> Option<String> {
    if let Some(v) = &p.python {
        if let Some(l) = v.lock_by_word(addr).or_else(|| v.lock(addr)) {
            return Some(v.lock_name(l.addr));
        }
        // A PyMutex parked on: the lock object starts 16 bytes below.
        if let Some(l) = v.lock(addr.wrapping_sub(16)) {
            return Some(v.lock_name(l.addr));
        }
    }
    // Named by an earlier view (the last one may show no thread on it).
    p.py_lock_names
        .get(&addr)
        .or_else(|| p.py_lock_names.get(&addr.wrapping_sub(16)))
        .or_else(|| model.symbols.get(&(p.tgid, addr)))
        .cloned()
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "thread" } else { "threads" }
}

/// "GIL-bound: 4 threads spent 71% of their time waiting for the GIL,
/// holder mostly cpu-3", or why there is no verdict.
pub fn verdict_text(model: &Model, p: &Process, r: &GilReport) -> String {
    match &r.status {
        GilStatus::NoGil => {
            return format!(
                "CPython {}: free-threaded build: no GIL",
                escape(&r.version)
            );
        }
        GilStatus::Unknown { why } => {
            return format!("{}: no GIL accounting", escape(why));
        }
        GilStatus::Located { .. } => {}
    }
    let n = r.active;
    let their = if n == 1 { "its" } else { "their" };
    match r.verdict {
        None => "too few samples for a verdict".to_string(),
        Some(Verdict::Idle) => "idle: no Python thread ran".to_string(),
        Some(Verdict::GilBound) => {
            let mut s = format!(
                "GIL-bound: {n} {} spent {} of {their} time waiting for the GIL",
                plural(n),
                pct(r.mean_gil_wait)
            );
            if let Some(h) = r.holder_mostly {
                let _ = write!(s, ", holder mostly {}", tname(p, h));
            }
            s
        }
        Some(Verdict::LockBound) => {
            let mut s = format!(
                "lock-bound: {n} {} spent {} of {their} time waiting on locks",
                plural(n),
                pct(r.mean_lock_wait)
            );
            if let Some(l) = r.top_lock {
                let name = lock_name(model, p, l).map_or(format!("{l:#x}"), |x| escape(&x));
                let _ = write!(s, ", mostly {name}");
            }
            let _ = write!(s, " (GIL {})", pct(r.mean_gil_wait));
            s
        }
        Some(Verdict::IoBound) => format!(
            "I/O-bound: {n} {} spent {} of {their} time blocked in other syscalls (GIL {})",
            plural(n),
            pct(r.mean_syscall),
            pct(r.mean_gil_wait)
        ),
        Some(Verdict::CpuBound) => format!(
            "CPU-bound: {n} {} spent {} of {their} time running, {} waiting for a CPU (GIL {})",
            plural(n),
            pct(r.mean_cpu),
            pct(r.mean_runnable),
            pct(r.mean_gil_wait)
        ),
    }
}

/// The summary's lines: one per CPython process with a tally.
pub fn summary(model: &Model) -> String {
    let mut s = String::new();
    for p in model.processes.values() {
        if let Some(r) = report(p) {
            let _ = writeln!(
                s,
                "python (pid {}, CPython {}): {}",
                p.tgid,
                escape(&r.version),
                verdict_text(model, p, &r)
            );
        }
    }
    s
}

pub fn process_json(model: &Model, p: &Process) -> Option<ProcessGil> {
    let r = report(p)?;
    let (gil, gil_addr) = match &r.status {
        GilStatus::Located { addr } => ("located", Some(format!("{addr:#x}"))),
        GilStatus::NoGil => ("no_gil", None),
        GilStatus::Unknown { .. } => ("unknown", None),
    };
    Some(ProcessGil {
        version: r.version.clone(),
        gil,
        gil_addr,
        verdict: r.verdict,
        summary: verdict_text(model, p, &r),
        active_threads: r.active,
        holder_mostly: r.holder_mostly,
    })
}

fn thread_gil(model: &Model, p: &Process, t: &ThreadShares) -> ThreadGil {
    ThreadGil {
        samples: t.samples,
        wait_ns: t.gil_wait_ns,
        wait_share: t.gil_wait,
        held_share: t.held,
        running_share: t.running,
        runnable_share: t.runnable,
        lock_wait_share: t.lock_wait,
        syscall_share: t.syscall,
        active: t.active,
        locks: t
            .locks
            .iter()
            .map(|&(l, share)| LockShare {
                addr: format!("{l:#x}"),
                name: lock_name(model, p, l),
                share,
            })
            .collect(),
    }
}

/// `threads[].python.gil` of every thread of `p` the tally covers.
pub fn threads_json(model: &Model, p: &Process) -> Vec<(u32, ThreadGil)> {
    let Some(r) = report(p) else {
        return Vec::new();
    };
    r.threads
        .iter()
        .map(|t| (t.tid, thread_gil(model, p, t)))
        .collect()
}

/// The `--python-top` table of one process over the window `prev`..`cur`.
pub fn top(
    model: &Model,
    p: &Process,
    prev: Option<&GilTally>,
    cur: &GilTally,
    tty: bool,
) -> String {
    let r = analyze(prev, cur);
    let (bold, red, yellow, reset) = if tty {
        ("\x1b[1m", "\x1b[31m", "\x1b[33m", "\x1b[0m")
    } else {
        ("", "", "", "")
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{bold}python pid {} (CPython {}): {}{reset}",
        p.tgid,
        escape(&r.version),
        verdict_text(model, p, &r)
    );
    if r.threads.is_empty() {
        return s;
    }
    let _ = writeln!(
        s,
        "{bold}{:>8} {:<16} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  TOP LOCK{reset}",
        "TID", "NAME", "RUN", "RUNQ", "GIL", "HELD", "LOCK", "SYS"
    );
    let mut ts: Vec<&ThreadShares> = r.threads.iter().collect();
    ts.sort_by(|a, b| b.gil_wait.total_cmp(&a.gil_wait).then(a.tid.cmp(&b.tid)));
    for t in ts {
        let hot = |x: f64| {
            if x >= 0.5 {
                red
            } else if x >= 0.2 {
                yellow
            } else {
                ""
            }
        };
        let cell = |x: f64| {
            let c = hot(x);
            let r = if c.is_empty() { "" } else { reset };
            format!("{c}{:>5}{r}", pct(x))
        };
        let mut name: String = tname(p, t.tid).chars().take(16).collect();
        if !t.active {
            name = format!("({name})").chars().take(16).collect();
        }
        let lock = t
            .locks
            .first()
            .map(|&(l, sh)| {
                let n = lock_name(model, p, l).map_or(format!("{l:#x}"), |x| escape(&x));
                format!("{n} {}", pct(sh))
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "{:>8} {:<16} {} {} {} {} {} {}  {}",
            t.tid,
            name,
            cell(t.running),
            cell(t.runnable),
            cell(t.gil_wait),
            cell(t.held),
            cell(t.lock_wait),
            cell(t.syscall),
            lock
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{event::Event, vocab::gil::ThreadTally};

    /// A view lists only the locks waited for or held when it was read: a
    /// lock an earlier view named keeps its name.
    #[test]
    fn a_lock_keeps_the_name_an_earlier_view_gave_it() {
        use crate::vocab::python::{PyLockInfo, PyLockKind, PyView};
        let mut m = Model::new();
        let view = |locks: Vec<PyLockInfo>| Event::PyState {
            ts_ns: 2,
            tgid: 10,
            view: PyView {
                version: "3.13.0".into(),
                locks,
                ..Default::default()
            },
        };
        m.apply(&view(vec![PyLockInfo {
            addr: 0xa000,
            kind: PyLockKind::Lock,
            name: Some("ledger".into()),
            word: 0x5a,
            owner: None,
        }]));
        m.apply(&view(Vec::new()));
        let p = m.process(10).unwrap();
        assert_eq!(lock_name(&m, p, 0x5a).as_deref(), Some("ledger"));
        assert_eq!(lock_name(&m, p, 0xa000).as_deref(), Some("ledger"));
        assert_eq!(lock_name(&m, p, 0xb000), None);
    }

    #[test]
    fn verdict_line_names_the_holder_and_escapes() {
        let mut m = Model::new();
        m.apply(&Event::start(1, 10, vec!["python3".into()], true));
        for (tid, name) in [(10u32, "main"), (11, "cpu-1"), (12, "cpu\x1b[2J-2")] {
            m.apply(&Event::PyThreadName {
                ts_ns: 2,
                tgid: 10,
                tid,
                name: name.into(),
            });
        }
        let th = |tid, gil, held, slices| ThreadTally {
            tid,
            samples: 100,
            gil_wait: gil,
            held,
            lock_waits: Vec::new(),
            sched_from_ns: 0,
            sched_to_ns: 1_000_000_000,
            cpu_ns: 300_000_000,
            runq_ns: 0,
            slices,
        };
        m.apply(&Event::PyGil {
            ts_ns: 3,
            tgid: 10,
            tally: GilTally {
                version: "3.12.1".into(),
                status: GilStatus::Located { addr: 0x1000 },
                samples: 100,
                threads: vec![th(10, 0, 0, 0), th(11, 70, 20, 50), th(12, 72, 40, 50)],
            },
        });
        let s = summary(&m);
        assert_eq!(
            s,
            "python (pid 10, CPython 3.12.1): GIL-bound: 2 threads spent 71% of their time \
             waiting for the GIL, holder mostly cpu\\x1b[2J-2\n"
        );
        let p = &m.processes[&10];
        let j = process_json(&m, p).unwrap();
        assert_eq!(j.verdict, Some(Verdict::GilBound));
        let t = top(&m, p, None, p.gil.as_ref().unwrap(), false);
        assert!(
            t.contains("TID") && t.contains("(main)") && !t.contains('\x1b'),
            "{t}"
        );
        let t = top(&m, p, None, p.gil.as_ref().unwrap(), true);
        assert!(t.contains("\x1b[31m"), "{t}");
    }

    #[test]
    fn no_gil_and_unknown_say_so() {
        let mut m = Model::new();
        let mut tally = GilTally {
            version: "3.13.0".into(),
            status: GilStatus::NoGil,
            samples: 0,
            threads: Vec::new(),
        };
        m.apply(&Event::PyGil {
            ts_ns: 3,
            tgid: 10,
            tally: tally.clone(),
        });
        assert_eq!(
            summary(&m),
            "python (pid 10, CPython 3.13.0): CPython 3.13.0: free-threaded build: no GIL\n"
        );
        tally.status = GilStatus::Unknown {
            why: "CPython 3.14.0: GIL layout not known (3.11-3.13 are)".into(),
        };
        tally.version = "3.14.0".into();
        m.apply(&Event::PyGil {
            ts_ns: 4,
            tgid: 10,
            tally,
        });
        assert!(summary(&m).contains("GIL layout not known (3.11-3.13 are): no GIL accounting"));
    }
}
