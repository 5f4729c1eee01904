//! `cargo xtask bench tax`: what `observer daemon` costs the processes of
//! the host, as ratios against no daemon, in one run.
//!
//! A getppid(2) loop (bench/workload.c) is timed under these conditions,
//! visited in a rotating order over several passes:
//!
//! - none: no daemon;
//! - idle: a daemon whose rule selects nothing (it attaches no wait hooks
//!   while it watches no process);
//! - other: a daemon watching another (idle) process, learning waits at
//!   `sched_switch` (its default for a process without an event loop);
//! - watched: a daemon watching the timed process itself (its non-futex
//!   syscalls);
//! - other, syscalls: as other with `waits = "syscalls"`: every syscall of
//!   every process pays for the syscall hooks.
//!
//! The scheduler hook's cost is per context switch instead: a futex
//! ping-pong of two threads pinned to one CPU (two switches per round
//! trip) is timed with no daemon, with a daemon watching another process
//! (what every context switch on the host pays), and watched at
//! `sched_switch` and at the syscall hooks.
//!
//! Times are CPU time: the getppid thread's; the whole ping-pong process's.

use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context, Result, bail};

use super::harness::{self as h, Contamination, Guard, Programs, Workload};

const USAGE: &str = "\
usage: cargo xtask bench tax [--rounds N] [--quick] [--observer PATH]   (as root)

A getppid(2) loop under no daemon, an idle daemon (its rule selects nothing), a daemon
watching another process, and a daemon watching the loop's own process (waits learnt at
sched_switch), and one watching another process with waits = \"syscalls\": the time per
call as ratios against no daemon (targets: idle and other <= 1.05, watched <= 1.10). Then
a futex ping-pong (two threads on one CPU) with no daemon, with one watching another process
(target <= 1.05), and watched with each way of learning waits: what the scheduler hook
costs a context switch.

  --rounds N        passes over the conditions (default 6, --quick 2; 3 timed rounds per visit)";

const OPS: u64 = 2_000_000;
const PP_OPS: u64 = 50_000;
const ROUNDS_PER_VISIT: usize = 3;
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a round waits for someone else's BPF programs to go away, and
/// how often it is run again when they came and went.
const SETTLE: Duration = Duration::from_secs(20);
const MAX_RETRIES: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Load {
    Getppid,
    PingPong,
}

/// One condition: the timed load, the daemon's rule (None: no daemon),
/// whether it then watches a process, its `waits`, and the ratio against
/// the same load with no daemon it may cost (None: no target).
struct Cond {
    name: &'static str,
    load: Load,
    rule: Option<&'static str>,
    watches: bool,
    waits: &'static str,
    target: Option<f64>,
}

const CONDS: [Cond; 9] = [
    Cond {
        name: "none",
        load: Load::Getppid,
        rule: None,
        watches: false,
        waits: "auto",
        target: None,
    },
    Cond {
        name: "idle",
        load: Load::Getppid,
        rule: Some("obsd-tax-none"),
        watches: false,
        waits: "auto",
        target: Some(1.05),
    },
    Cond {
        name: "other",
        load: Load::Getppid,
        rule: Some("obsd-tax-idle"),
        watches: true,
        waits: "auto",
        target: Some(1.05),
    },
    Cond {
        name: "watched",
        load: Load::Getppid,
        rule: Some("obsd-tax-loop"),
        watches: true,
        waits: "auto",
        target: Some(1.10),
    },
    Cond {
        name: "other, syscalls",
        load: Load::Getppid,
        rule: Some("obsd-tax-idle"),
        watches: true,
        waits: "syscalls",
        target: None,
    },
    Cond {
        name: "none",
        load: Load::PingPong,
        rule: None,
        watches: false,
        waits: "auto",
        target: None,
    },
    Cond {
        name: "other",
        load: Load::PingPong,
        rule: Some("obsd-tax-idle"),
        watches: true,
        waits: "auto",
        target: Some(1.05),
    },
    Cond {
        name: "watched, sched",
        load: Load::PingPong,
        rule: Some("obsd-tax-pp"),
        watches: true,
        waits: "sched",
        target: None,
    },
    Cond {
        name: "watched, syscalls",
        load: Load::PingPong,
        rule: Some("obsd-tax-pp"),
        watches: true,
        waits: "syscalls",
        target: None,
    },
];

/// Pins this process (and what it starts from now on) to CPUs 0..cpu.
fn pin_self_below(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the libc macros only
    // set bits within it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in 0..cpu {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A daemon for `c` (none without a rule), once it watches what its rule
/// selects and its wait hooks are as they should be.
fn daemon(observer: &Path, dir: &Path, ci: usize, visit: usize) -> Result<Option<Guard>> {
    let c = &CONDS[ci];
    let Some(comm) = c.rule else {
        return Ok(None);
    };
    let watched = f64::from(u8::from(c.watches));
    let port = h::free_port()?;
    let cfg = dir.join(format!("c{ci}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\nwaits = \"{}\"\n[[rule]]\ncomm = \"{comm}\"\n",
            dir.join("reports").to_str().context("path")?,
            c.waits
        ),
    )?;
    let log = dir.join(format!("c{ci}-{visit}.log"));
    let mut d = h::start_daemon(observer, &cfg, &log, port, &[])?;
    h::wait_metric(&mut d, port, &log, "observer_watched_processes", |v| {
        v == watched
    })?;
    let (sys, sched) = match (c.watches, c.waits) {
        (false, _) => (0.0, 0.0),
        (true, "syscalls") => (1.0, 0.0),
        (true, _) => (0.0, 1.0),
    };
    h::wait_metric(&mut d, port, &log, "observer_syscall_hooks_attached", |v| {
        v == sys
    })?;
    h::wait_metric(&mut d, port, &log, "observer_sched_hook_attached", |v| {
        v == sched
    })?;
    Ok(Some(d))
}

pub fn main(args: &[String]) -> Result<()> {
    let mut rounds = None;
    let usage = format!("{USAGE}\n{}", h::COMMON_OPTIONS);
    let Some(common) = h::parse(args, &usage, false, |a, it| {
        if a == "--rounds" {
            rounds = Some(it.number("--rounds")?);
            return Ok(true);
        }
        Ok(false)
    })?
    else {
        return Ok(());
    };
    let passes: usize = rounds.unwrap_or(if common.quick { 2 } else { 6 });
    if passes == 0 {
        bail!("--rounds needs at least 1");
    }
    h::require_root("bench tax")?;
    let observer = h::observer_binary(&common)?;
    let dir = h::out_dir(&format!("bench/tax-{}", std::process::id()))?;
    std::fs::create_dir_all(dir.join("reports"))?;
    let built = h::compile(&h::out_dir("bench")?, "bench/workload.c", "workload")?;
    // The rules select by comm: copies of the workload under their names.
    let named = |comm: &str| -> Result<std::path::PathBuf> {
        let p = dir.join(comm);
        std::fs::copy(&built, &p).with_context(|| format!("copying to {}", p.display()))?;
        Ok(p)
    };
    // The timed loads on the last CPU, everything else (this driver, the
    // daemons it starts) kept off it: the daemon's own scans are not
    // counted against the loads. Pinned, each ping-pong hand-over is a
    // context switch on that CPU.
    let last = h::cpus().saturating_sub(1);
    if last > 0 {
        pin_self_below(last)?;
    }
    let cpu = last.to_string();
    let mut wl = Workload::start(
        &named("obsd-tax-loop")?,
        &["getppid".to_string(), cpu.clone()],
    )?;
    let mut pp = Workload::start(&named("obsd-tax-pp")?, &["pingpong".to_string(), cpu])?;
    let _idle = Workload::start(&named("obsd-tax-idle")?, &["idle".to_string()])?;
    eprintln!(
        "xtask: bench tax ({passes} passes x {ROUNDS_PER_VISIT} rounds of {OPS} getppid or {PP_OPS} ping-pongs per condition)"
    );
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); CONDS.len()];
    // Rounds run while other tools' (or tests') syscall hooks were loaded
    // would blur every ratio: waited out, run again, or flagged.
    let mut progs = Programs::default();
    let mut cont = Contamination::default();
    for pass in 0..passes {
        for ci in h::order(pass, CONDS.len()) {
            let mut d = daemon(&observer, &dir, ci, pass)?;
            let holder = d.as_ref().map(|d| d.pid);
            let (w, ops) = match CONDS[ci].load {
                Load::Getppid => (&mut wl, OPS),
                Load::PingPong => (&mut pp, PP_OPS),
            };
            w.round(ops / 4, ROUND_TIMEOUT)?; // warm-up
            for _ in 0..ROUNDS_PER_VISIT {
                for attempt in 0.. {
                    let rd =
                        progs.round(holder, SETTLE, &mut cont, || w.round(ops, ROUND_TIMEOUT))?;
                    if rd.clean || attempt == MAX_RETRIES {
                        cont.keep(rd.clean);
                        samples[ci].push(*rd.value.first().context("workload printed nothing")?);
                        break;
                    }
                    cont.retried += 1;
                }
            }
            if let Some(d) = d.as_mut() {
                d.signal(libc::SIGTERM);
                if d.wait(h::OBSERVER_STOP_TIMEOUT).is_none() {
                    bail!("the daemon did not stop; see {}", dir.display());
                }
            }
        }
        eprint!(".");
    }
    eprintln!();
    // Back on every CPU: the header counts them.
    pin_self_below(last + 1)?;
    let med: Vec<f64> = samples.iter().map(|v| h::median(v)).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        h::header("tax: what observer daemon costs the host's processes", "")
    );
    for (load, what, unit) in [
        (Load::Getppid, "a getppid(2) call", "ns/call"),
        (
            Load::PingPong,
            "a futex ping-pong round trip (2 context switches)",
            "ns/trip",
        ),
    ] {
        let base = CONDS
            .iter()
            .position(|c| c.load == load && c.rule.is_none())
            .map(|i| med[i])
            .unwrap_or(f64::NAN);
        let _ = writeln!(out, "  {what}:");
        let _ = writeln!(
            out,
            "  {:>18}  {:>10}  {:>7}  {:>8}",
            "daemon", unit, "ratio", "target"
        );
        for (i, c) in CONDS.iter().enumerate().filter(|(_, c)| c.load == load) {
            let r = med[i] / base;
            let verdict = match c.target {
                Some(t) => format!("<= {t:.2} {}", if r <= t { "PASS" } else { "MISS" }),
                None => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:>18}  {:>10.1}  {:>6.2}x  {verdict}",
                c.name, med[i], r
            );
        }
    }
    if let Some(n) = cont.note("all conditions") {
        let _ = writeln!(out, "{n}");
    }
    print!("{out}");
    let _ = std::fs::write(dir.join("summary.txt"), &out);
    pp.finish()?;
    wl.finish()
}
