//! `cargo xtask bench tax`: what `observer daemon` costs every syscall on
//! the host, as ratios against no daemon, in one run.
//!
//! A getppid(2) loop (bench/workload.c) is timed under four conditions,
//! visited in a rotating order over several passes:
//!
//! - none: no daemon;
//! - idle: a daemon whose rule selects nothing (its syscall hooks are
//!   detached while it watches no process);
//! - other: a daemon watching another (idle) process: the syscall hooks
//!   are attached and every process pays for them;
//! - watched: a daemon watching the timed process itself (its non-futex
//!   syscalls).
//!
//! Times are the workload thread's CPU time (see bench/workload.c).

use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context, Result, bail};

use super::harness::{self as h, Contamination, Guard, Programs, Workload};

const USAGE: &str = "\
usage: cargo xtask bench tax [--rounds N] [--quick] [--observer PATH]   (as root)

A getppid(2) loop under no daemon, an idle daemon (its rule selects nothing), a daemon
watching another process, and a daemon watching the loop's own process: the time per call
as ratios against no daemon (targets: idle and other <= 1.05, watched <= 1.10).

  --rounds N        passes over the four conditions (default 6, --quick 2; 3 timed rounds per visit)";

const OPS: u64 = 2_000_000;
const ROUNDS_PER_VISIT: usize = 3;
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a round waits for someone else's BPF programs to go away, and
/// how often it is run again when they came and went.
const SETTLE: Duration = Duration::from_secs(20);
const MAX_RETRIES: usize = 3;

#[derive(Clone, Copy, PartialEq)]
enum Cond {
    None,
    Idle,
    Other,
    Watched,
}

impl Cond {
    const ALL: [Cond; 4] = [Cond::None, Cond::Idle, Cond::Other, Cond::Watched];

    fn name(self) -> &'static str {
        match self {
            Cond::None => "none",
            Cond::Idle => "idle",
            Cond::Other => "other",
            Cond::Watched => "watched",
        }
    }

    /// The comm the daemon's rule selects, and what it then watches.
    fn rule(self) -> (&'static str, f64) {
        match self {
            Cond::None | Cond::Idle => ("obsd-tax-none", 0.0),
            Cond::Other => ("obsd-tax-idle", 1.0),
            Cond::Watched => ("obsd-tax-loop", 1.0),
        }
    }

    /// The ratio against `none` this condition may cost.
    fn target(self) -> f64 {
        match self {
            Cond::None => 1.0,
            Cond::Idle | Cond::Other => 1.05,
            Cond::Watched => 1.10,
        }
    }
}

/// A daemon for `c` (none for `Cond::None`), once it watches what its rule
/// selects and its syscall hooks are as they should be.
fn daemon(observer: &Path, dir: &Path, c: Cond, visit: usize) -> Result<Option<Guard>> {
    if c == Cond::None {
        return Ok(None);
    }
    let (comm, watched) = c.rule();
    let port = h::free_port()?;
    let cfg = dir.join(format!("{}.toml", c.name()));
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\n[[rule]]\ncomm = \"{comm}\"\n",
            dir.join("reports").to_str().context("path")?
        ),
    )?;
    let log = dir.join(format!("{}-{visit}.log", c.name()));
    let mut d = h::start_daemon(observer, &cfg, &log, port, &[])?;
    h::wait_metric(&mut d, port, &log, "observer_watched_processes", |v| {
        v == watched
    })?;
    h::wait_metric(&mut d, port, &log, "observer_syscall_hooks_attached", |v| {
        v == watched
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
    let mut wl = Workload::start(&named("obsd-tax-loop")?, &["getppid".to_string()])?;
    let _idle = Workload::start(&named("obsd-tax-idle")?, &["idle".to_string()])?;
    eprintln!(
        "xtask: bench tax ({passes} passes x {ROUNDS_PER_VISIT} rounds of {OPS} getppid per condition)"
    );
    let mut samples: [Vec<f64>; 4] = Default::default();
    // Rounds run while other tools' (or tests') syscall hooks were loaded
    // would blur every ratio: waited out, run again, or flagged.
    let mut progs = Programs::default();
    let mut cont = Contamination::default();
    for pass in 0..passes {
        for ci in h::order(pass, Cond::ALL.len()) {
            let c = Cond::ALL[ci];
            let mut d = daemon(&observer, &dir, c, pass)?;
            let holder = d.as_ref().map(|d| d.pid);
            wl.round(OPS / 4, ROUND_TIMEOUT)?; // warm-up
            for _ in 0..ROUNDS_PER_VISIT {
                for attempt in 0.. {
                    let rd =
                        progs.round(holder, SETTLE, &mut cont, || wl.round(OPS, ROUND_TIMEOUT))?;
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
    let med: Vec<f64> = samples.iter().map(|v| h::median(v)).collect();
    let base = med[0];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        h::header("tax: what observer daemon costs a getppid(2) call", "")
    );
    let _ = writeln!(
        out,
        "  {:>8}  {:>10}  {:>7}  {:>8}",
        "daemon", "ns/call", "ratio", "target"
    );
    for (i, c) in Cond::ALL.iter().enumerate() {
        let r = med[i] / base;
        let verdict = if *c == Cond::None {
            String::new()
        } else {
            format!(
                "<= {:.2} {}",
                c.target(),
                if r <= c.target() { "PASS" } else { "MISS" }
            )
        };
        let _ = writeln!(
            out,
            "  {:>8}  {:>10.1}  {:>6.2}x  {verdict}",
            c.name(),
            med[i],
            r
        );
    }
    if let Some(n) = cont.note("all conditions") {
        let _ = writeln!(out, "{n}");
    }
    print!("{out}");
    let _ = std::fs::write(dir.join("summary.txt"), &out);
    wl.finish()
}
