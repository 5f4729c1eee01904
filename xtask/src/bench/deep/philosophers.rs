//! Does observing change the program: philosophers under each condition,
//! and a Python lock ABBA found within milliseconds of start.

use super::*;

/// What one philosophers condition came to.
#[derive(Default)]
pub(super) struct PhilRuns {
    pub(super) runs: usize,
    /// Ended normally.
    pub(super) finished: usize,
    /// The observer reported a deadlock (and killed the target), or the
    /// workload's watchdog saw no round end for 2 s.
    pub(super) deadlocked: usize,
    /// The report had a lock-order inversion over exactly the 5 forks.
    pub(super) inversion: usize,
    /// The workload's own time from its start barrier to the last join
    /// (runs that finished).
    pub(super) elapsed_ms: Vec<f64>,
    pub(super) problems: Vec<String>,
}

/// Unobserved; `--uprobes-bare` (do-nothing programs at the same sites);
/// `--uprobes`; unobserved with as many more rounds as make it run as
/// long as an observed run (same run, measured just before).
pub(super) struct PhilResult {
    pub(super) conds: [PhilRuns; 4],
    /// Rounds of the last condition.
    pub(super) stretched_meals: u64,
}

pub(super) const PHIL_LABELS: [&str; 4] = [
    "unobserved",
    "observer run --uprobes-bare --kill-on-deadlock",
    "observer run --uprobes --kill-on-deadlock",
    "unobserved, as long as an observed run",
];
pub(super) const P_UNOBSERVED: usize = 0;
pub(super) const P_BARE: usize = 1;
pub(super) const P_UPROBES: usize = 2;
pub(super) const P_STRETCHED: usize = 3;

pub(super) fn phil_run(
    env: &Env,
    bin: &Path,
    ci: usize,
    meals: u64,
    report: &Path,
    x: &mut PhilRuns,
) -> Result<()> {
    let observed = ci == P_BARE || ci == P_UPROBES;
    let mut c;
    if observed {
        let _ = std::fs::remove_file(report);
        c = Command::new(&env.observer);
        c.args([
            "run",
            "--quiet",
            if ci == P_BARE {
                "--uprobes-bare"
            } else {
                "--uprobes"
            },
            "--kill-on-deadlock",
            "--report",
        ])
        .arg(report)
        .arg("--")
        .arg(bin);
    } else {
        c = Command::new(bin);
    }
    c.arg(meals.to_string());
    x.runs += 1;
    let t = h::run_timed(c, RUN_TIMEOUT)?;
    eprint!(".");
    let Some(t) = t else {
        x.problems.push(format!("timed out after {RUN_TIMEOUT:?}"));
        return Ok(());
    };
    let out = String::from_utf8_lossy(&t.stdout);
    match t.status.code() {
        Some(0) if out.lines().any(|l| l == "done") => {
            x.finished += 1;
            if let Some(ns) = out
                .lines()
                .find_map(|l| l.strip_prefix("elapsed_ns ")?.trim().parse::<f64>().ok())
            {
                x.elapsed_ms.push(ns / 1e6);
            }
        }
        // 3: the observer's report; 4: the workload's watchdog
        Some(3) if observed => x.deadlocked += 1,
        Some(4) => x.deadlocked += 1,
        _ => x
            .problems
            .push(format!("ended with {}", h::describe(&t.status))),
    }
    if ci == P_UPROBES {
        match five_fork_inversion(report, &out) {
            Ok(()) => x.inversion += 1,
            Err(e) => x.problems.push(format!("{e:#}")),
        }
    }
    Ok(())
}

pub(super) fn philosophers(env: &Env, bin: &Path, o: &Opts) -> Result<PhilResult> {
    let mut r = PhilResult {
        conds: Default::default(),
        stretched_meals: 0,
    };
    let report = env.out.join("philosophers-report.json");
    eprintln!(
        "bench deep: philosophers, {} runs x {} conditions ",
        o.phil_runs,
        PHIL_LABELS.len()
    );
    for p in 0..o.phil_runs {
        for ci in h::order(p, P_STRETCHED) {
            phil_run(env, bin, ci, o.meals, &report, &mut r.conds[ci])?;
        }
    }
    // A deadlock needs a philosopher descheduled between its two forks:
    // the longer it runs, the likelier. Unobserved, as long as observed:
    let un = h::median(&r.conds[P_UNOBSERVED].elapsed_ms);
    let obs = h::median(&r.conds[P_UPROBES].elapsed_ms);
    if un > 0.0 && obs > 0.0 {
        r.stretched_meals = ((o.meals as f64 * obs / un) as u64).clamp(o.meals, 10_000_000);
        for _ in 0..o.phil_runs {
            phil_run(
                env,
                bin,
                P_STRETCHED,
                r.stretched_meals,
                &report,
                &mut r.conds[P_STRETCHED],
            )?;
        }
    }
    eprintln!();
    Ok(r)
}

/// The report has a lock-order inversion over exactly the forks the
/// workload printed ("lock forks[i] ADDR").
pub(super) fn five_fork_inversion(report: &Path, out: &str) -> Result<()> {
    let forks: BTreeSet<u64> = out
        .lines()
        .filter_map(|l| {
            let a = l.strip_prefix("lock forks[")?.split_whitespace().nth(1)?;
            u64::from_str_radix(a.trim_start_matches("0x"), 16).ok()
        })
        .collect();
    if forks.len() != 5 {
        bail!("the workload printed {} fork addresses, not 5", forks.len());
    }
    let v = h::read_json(report)?;
    if h::finding(&v, "lock_order_inversion", |f| {
        h::numbers(&f["locks"], "addr") == forks
    })
    .is_none()
    {
        bail!("no lock_order_inversion finding over exactly the 5 forks");
    }
    Ok(())
}

pub(super) fn philosophers_table(r: &PhilResult, o: &Opts, v: &mut Verdicts) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "Philosophers: 5 threads, each takes fork i then fork i+1, {} rounds (bench/philosophers_rounds.c);\n\
         {} runs per condition, interleaved; a deadlock is the observer's report (--kill-on-deadlock) or\n\
         the workload's watchdog (no round ended for 2 s); time: the workload's own, start barrier to last join",
        o.meals, o.phil_runs
    )
    .unwrap();
    writeln!(
        s,
        "  {:<52} {:>8} {:>5} {:>9} {:>11} {:>10} {:>10}",
        "condition", "rounds", "runs", "finished", "deadlocked", "inversion", "median"
    )
    .unwrap();
    for (ci, (label, x)) in PHIL_LABELS.iter().zip(&r.conds).enumerate() {
        let meals = if ci == P_STRETCHED {
            r.stretched_meals
        } else {
            o.meals
        };
        if x.runs == 0 {
            continue;
        }
        writeln!(
            s,
            "  {:<52} {:>8} {:>5} {:>9} {:>11} {:>10} {:>10}",
            label,
            meals,
            x.runs,
            x.finished,
            x.deadlocked,
            if ci == P_UPROBES {
                x.inversion.to_string()
            } else {
                "-".into()
            },
            h::ms(h::median(&x.elapsed_ms))
        )
        .unwrap();
    }
    for (label, x) in PHIL_LABELS.iter().zip(&r.conds) {
        s.push_str(&h::problems(&format!("PROBLEM, {label}"), &x.problems));
    }
    let rate = |x: &PhilRuns| x.deadlocked as f64 / x.runs.max(1) as f64;
    writeln!(
        s,
        "  deadlock rate: --uprobes {:.0}%, do-nothing programs at the same sites {:.0}%, unobserved {:.0}%, unobserved as long as observed {:.0}%",
        100.0 * rate(&r.conds[P_UPROBES]),
        100.0 * rate(&r.conds[P_BARE]),
        100.0 * rate(&r.conds[P_UNOBSERVED]),
        100.0 * rate(&r.conds[P_STRETCHED]),
    )
    .unwrap();
    let u = &r.conds[P_UPROBES];
    for c in [
        Check::every(
            "philosophers --uprobes: runs without deadlock",
            u.runs - u.deadlocked,
            u.runs,
        ),
        Check::every(
            "philosophers --uprobes: 5-lock inversion reported",
            u.inversion,
            u.runs,
        ),
    ] {
        writeln!(s, "{}", v.add(c)).unwrap();
    }
    s
}

// ---------------------------------------------------------------------------
// pyabba: a Python deadlock closing before late uprobes could see it

pub(super) struct PyResult {
    pub(super) python: PathBuf,
    pub(super) runs: usize,
    /// Runs whose report had the full cycle.
    pub(super) full: usize,
    pub(super) ms: Vec<f64>,
    pub(super) problems: Vec<String>,
}

pub(super) fn pyabba(env: &Env, runs: usize) -> Result<PyResult> {
    // The system's CPython (Debian's), else the first on PATH.
    let python = Some(PathBuf::from("/usr/bin/python3"))
        .filter(|p| p.is_file())
        .or_else(|| h::which("python3"))
        .context("python3 not found")?;
    let script = crate::root().join("bench/py_abba_early.py");
    let report = env.out.join("pyabba-report.json");
    let mut r = PyResult {
        python: python.clone(),
        runs,
        full: 0,
        ms: Vec::new(),
        problems: Vec::new(),
    };
    eprintln!("bench deep: pyabba, {runs} runs under `observer run --uprobes` ");
    for _ in 0..runs {
        let _ = std::fs::remove_file(&report);
        let mut c = Command::new(&env.observer);
        c.args([
            "run",
            "--quiet",
            "--uprobes",
            "--kill-on-deadlock",
            "--report",
        ])
        .arg(&report)
        .arg("--")
        .arg(&python)
        .arg(&script);
        let t = h::run_timed(c, PY_TIMEOUT)?;
        eprint!(".");
        let Some(t) = t else {
            r.problems
                .push(format!("no deadlock reported within {PY_TIMEOUT:?}"));
            continue;
        };
        r.ms.push(t.ms());
        if t.status.code() != Some(3) {
            r.problems.push(format!(
                "observer ended with {} (3 expected)",
                h::describe(&t.status)
            ));
            continue;
        }
        match full_cycle(&report, &String::from_utf8_lossy(&t.stdout)) {
            Ok(()) => r.full += 1,
            Err(e) => r.problems.push(format!("{e:#}")),
        }
    }
    eprintln!();
    Ok(r)
}

/// The report has a deadlock whose cycle's waiters and holders are exactly
/// the two workers the script printed ("thread NAME TID").
pub(super) fn full_cycle(report: &Path, out: &str) -> Result<()> {
    let tids: BTreeSet<u64> = out
        .lines()
        .filter_map(|l| {
            l.strip_prefix("thread ")?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .collect();
    if tids.len() != 2 {
        bail!("the script printed {} worker tids, not 2", tids.len());
    }
    let v = h::read_json(report)?;
    let full = |f: &Value| {
        h::numbers(&f["cycle"], "waiter_tid") == tids
            && h::numbers(&f["cycle"], "holder_tid") == tids
    };
    if h::finding(&v, "deadlock", full).is_none() {
        bail!("no deadlock finding with the full cycle alpha <-> beta");
    }
    Ok(())
}

pub(super) fn pyabba_table(r: &PyResult, v: &mut Verdicts) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "Python Lock ABBA deadlocking within milliseconds of its start (bench/py_abba_early.py, {}),\n\
         observer run --uprobes --kill-on-deadlock, {} runs: median {} to the report and kill",
        r.python.display(),
        r.runs,
        h::ms(h::median(&r.ms))
    )
    .unwrap();
    s.push_str(&h::problems("WRONG ANSWER", &r.problems));
    let c = Check::every("pyabba --uprobes: full cycle reported", r.full, r.runs);
    writeln!(s, "{}", v.add(c)).unwrap();
    s
}
