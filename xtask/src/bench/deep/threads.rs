//! Thread create+join cost while observed, and start-up time of `run`.

use super::*;

pub(super) const THREAD_CONDS: [Cond; 6] = [
    UNOBSERVED,
    Cond {
        label: "observer attach to another process",
        args: Some(&[]),
        elsewhere: true,
    },
    Cond {
        label: "observer --hooks syscalls, another process",
        args: Some(&["--hooks", "syscalls"]),
        elsewhere: true,
    },
    DEFAULT_MODE,
    Cond {
        label: "observer attach --hooks syscalls",
        args: Some(&["--hooks", "syscalls"]),
        elsewhere: false,
    },
    Cond {
        label: "observer attach --thread-uprobes",
        args: Some(&["--thread-uprobes"]),
        elsewhere: false,
    },
];

pub(super) struct ThreadResult {
    /// a: wall ns per round, b: process CPU ns per round.
    pub(super) rows: Vec<Row>,
    /// Per condition: (threads the report saw created, threads created while observed).
    pub(super) seen: Vec<Vec<(u64, u64)>>,
    pub(super) drops: Vec<u64>,
    /// Per condition: the observer's own CPU (user + system) per thread
    /// created in the timed rounds, ns, one per visit.
    pub(super) observer_cpu: Vec<Vec<f64>>,
    /// What the kernel programs themselves cost, per condition measured so.
    pub(super) programs: Vec<ProgCost>,
    pub(super) problems: Vec<String>,
}

/// The observer's BPF programs' own run time per thread created, from one
/// more visit of a condition under the kernel's run-time statistics.
pub(super) struct ProgCost {
    label: &'static str,
    /// (program, ns per thread, runs per thread), costliest first.
    progs: Vec<(String, f64, f64)>,
    total_ns: f64,
}

/// The conditions whose programs are measured: the hooks merely loaded
/// (watching another process) and the default mode.
const COST_CONDS: [usize; 2] = [1, 3];

pub(super) fn threads(env: &mut Env, bin: &Path, o: &Opts) -> Result<ThreadResult> {
    let n = THREAD_CONDS.len();
    let mut r = ThreadResult {
        rows: new_rows(n),
        seen: vec![Vec::new(); n],
        drops: vec![0; n],
        observer_cpu: vec![Vec::new(); n],
        programs: Vec::new(),
        problems: Vec::new(),
    };
    let report = env.out.join("threads-report.json");
    eprintln!("bench deep: threads, {} passes x {n} conditions ", o.passes);
    for p in 0..o.passes {
        for ci in h::order(p, n) {
            let cond = &THREAD_CONDS[ci];
            let row = &mut r.rows[ci];
            let mut v = Visit::start(env, bin, cond, &report, row)?;
            let warm = (o.create / 10).max(1);
            v.wl.round(warm, ROUND_TIMEOUT)?; // warm-up: glibc's stack cache, page faults
            let mut created = warm;
            let c0 = observer_cpu(&v);
            for _ in 0..ROUNDS_PER_VISIT {
                let (wall, cpu) = v.timed(env, o.create, row)?;
                created += o.create;
                row.a.push(wall);
                row.b.push(cpu);
            }
            if let (Some(a), Some(b)) = (c0, observer_cpu(&v)) {
                let timed = (o.create * ROUNDS_PER_VISIT as u64) as f64;
                r.observer_cpu[ci].push((b - a) * 1e9 / timed);
            }
            if v.end(cond, row, &mut r.problems)? {
                match lifecycle(&report) {
                    Ok((seen, drops)) => {
                        r.seen[ci].push((seen, created));
                        r.drops[ci] += drops;
                    }
                    Err(e) => r.problems.push(format!("{}: report: {e:#}", cond.label)),
                }
            }
        }
    }
    for ci in COST_CONDS {
        match program_cost(env, bin, &THREAD_CONDS[ci], o.create, &report) {
            Ok(c) => r.programs.push(c),
            Err(e) => r.problems.push(format!(
                "{}: program run times: {e:#}",
                THREAD_CONDS[ci].label
            )),
        }
    }
    eprintln!();
    Ok(r)
}

/// One more visit of `cond`, its rounds timed by the kernel's statistics
/// of the observer's programs rather than by the clock (the statistics
/// slow every program run, so these rounds are in no ratio). Programs
/// also run for other processes' events meanwhile (a few per round on an
/// idle machine); they are counted too.
fn program_cost(
    env: &mut Env,
    bin: &Path,
    cond: &'static Cond,
    n: u64,
    report: &Path,
) -> Result<ProgCost> {
    let mut row = Row::default();
    let mut v = Visit::start(env, bin, cond, report, &mut row)?;
    let measured = (|| {
        v.wl.round((n / 10).max(1), ROUND_TIMEOUT)?;
        let obs = v.obs.as_ref().context("not an observed condition")?;
        let ids = h::held_by(obs.pid());
        let stats = h::RunStats::enable()?;
        let before = h::run_totals(&ids)?;
        for _ in 0..ROUNDS_PER_VISIT {
            v.wl.round(n, ROUND_TIMEOUT)?;
        }
        let after = h::run_totals(&ids)?;
        drop(stats);
        Ok::<_, anyhow::Error>((before, after))
    })();
    let mut problems = Vec::new();
    v.end(cond, &mut row, &mut problems)?;
    let (before, after) = measured?;
    if let Some(p) = problems.first() {
        bail!("{p}");
    }
    let threads = (n * ROUNDS_PER_VISIT as u64) as f64;
    let mut progs: Vec<(String, f64, f64)> = after
        .iter()
        .filter_map(|(id, (name, ns, runs))| {
            let (_, ns0, runs0) = before.get(id)?;
            let ns = ns.saturating_sub(*ns0) as f64 / threads;
            // a program that ran only for someone else's rare event
            (ns >= 1.0).then(|| {
                let runs = runs.saturating_sub(*runs0) as f64 / threads;
                (name.clone(), ns, runs)
            })
        })
        .collect();
    if progs.is_empty() {
        bail!("no program of the observer ran while the statistics were on");
    }
    progs.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total_ns = progs.iter().map(|p| p.1).sum();
    Ok(ProgCost {
        label: cond.label,
        progs,
        total_ns,
    })
}

/// Observed / unobserved wall of each pass (median of its rounds each):
/// how far one visit's figure can be from another's. On a VM whose speed
/// moves from one visit to the next, these spread far wider than the
/// effect measured, and no single pair says much.
fn pass_ratios(x: &Row, unobserved: &Row) -> Vec<f64> {
    (x.a.chunks(ROUNDS_PER_VISIT))
        .zip(unobserved.a.chunks(ROUNDS_PER_VISIT))
        .map(|(o, u)| h::median(o) / h::median(u))
        .collect()
}

/// The observer's CPU seconds so far (user + system), if one runs.
fn observer_cpu(v: &Visit) -> Option<f64> {
    v.obs.as_ref().and_then(|o| h::cpu_secs(o.pid()))
}

/// (threads created, total drops) from an observer.report/1.
pub(super) fn lifecycle(report: &Path) -> Result<(u64, u64)> {
    let v = h::read_json(report)?;
    let created = v["processes"][0]["lifecycle"]["created"]
        .as_u64()
        .context("no processes[0].lifecycle.created")?;
    let drops = v["drops"].as_object().map_or(0, |d| {
        d.iter()
            .filter(|(k, _)| *k != "records")
            .filter_map(|(_, v)| v.as_u64())
            .sum()
    });
    Ok((created, drops))
}

pub(super) fn threads_table(r: &ThreadResult, o: &Opts, v: &mut Verdicts) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "Thread lifecycle: pthread_create + pthread_join of {} short threads, one by one (bench/threads_createjoin.c)\n\
         {} rounds per condition (medians; wall clock, and process CPU time of all threads)",
        o.create,
        o.passes * ROUNDS_PER_VISIT
    )
    .unwrap();
    writeln!(
        s,
        "  {:<44} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "condition", "wall", "min", "max", "per thread", "CPU", "stop", "wall ratio"
    )
    .unwrap();
    let un = h::median(&r.rows[0].a);
    let uc = h::median(&r.rows[0].b);
    for (c, x) in THREAD_CONDS.iter().zip(&r.rows) {
        let w = h::median(&x.a);
        writeln!(
            s,
            "  {:<44} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
            c.label,
            h::ns(w),
            h::ns(h::min(&x.a)),
            h::ns(h::max(&x.a)),
            h::ns(w / o.create as f64),
            h::ns(h::median(&x.b)),
            h::ns(h::median(&x.stop)),
            h::ratio(w / un),
        )
        .unwrap();
    }
    for (ci, (cond, x)) in THREAD_CONDS.iter().zip(&r.rows).enumerate().skip(1) {
        let w = h::median(&x.a);
        writeln!(
            s,
            "  {}: thread uprobes {}, CPU ratio {}, {} per thread; the observer's own CPU {} per thread (median of visits)",
            cond.label,
            x.uprobes.1,
            h::ratio(h::median(&x.b) / uc),
            h::signed(h::ns, (w - un) / o.create as f64),
            if r.observer_cpu[ci].is_empty() {
                "-".to_string()
            } else {
                h::ns(h::median(&r.observer_cpu[ci]))
            },
        )
        .unwrap();
        let paired = pass_ratios(x, &r.rows[0]);
        let list: Vec<String> = paired.iter().map(|&q| h::ratio(q)).collect();
        writeln!(
            s,
            "    wall ratio pass by pass (against the unobserved visit of the same pass; the spread is the noise): {} (median {})",
            list.join(" "),
            h::ratio(h::median(&paired))
        )
        .unwrap();
        if let Some((got, ran)) = r.seen[ci].first() {
            let all = r.seen[ci].iter().all(|(got, ran)| got >= ran);
            writeln!(
                s,
                "    saw every thread: {} (report's lifecycle.created vs threads created, e.g. {got} of {ran}); drops {}",
                if all { "yes" } else { "NO" },
                r.drops[ci]
            )
            .unwrap();
        }
        if cond.elsewhere {
            // a floor, not a target: the hooks every process pays for
            continue;
        }
        let c = Check::at_most(
            format!(
                "threads: {} / unobserved",
                cond.label.trim_start_matches("observer ")
            ),
            w / un,
            THREADS_TARGET,
            h::ratio,
        );
        writeln!(s, "{}", v.add(c)).unwrap();
    }
    if !r.programs.is_empty() {
        let per = un / o.create as f64;
        writeln!(
            s,
            "  The observer's BPF programs alone (kernel run-time statistics, their own cost per run included; one more visit each, \
             {} rounds, not in the rows above), per thread created, against an unobserved create+join ({}):",
            ROUNDS_PER_VISIT,
            h::ns(per)
        )
        .unwrap();
        for c in &r.programs {
            let list: Vec<String> = c
                .progs
                .iter()
                .map(|(name, ns, runs)| format!("{name} {} ({runs:.2} runs)", h::ns(*ns)))
                .collect();
            writeln!(
                s,
                "    {}: {} = {:.1} % of it: {}",
                c.label,
                h::ns(c.total_ns),
                100.0 * c.total_ns / per,
                list.join(", ")
            )
            .unwrap();
        }
    }
    notes(&mut s, &THREAD_CONDS, &r.rows, &r.problems);
    s
}

// ---------------------------------------------------------------------------
// startup: `observer run -- /bin/true`

/// (label, `observer run` options (None: /bin/true alone), target ms).
type StartupCond = (&'static str, Option<&'static [&'static str]>, Option<f64>);

pub(super) const STARTUP_CONDS: [StartupCond; 4] = [
    ("/bin/true (unobserved)", None, None),
    (
        "observer run -- /bin/true (default mode)",
        Some(&[]),
        Some(STARTUP_TARGET_MS),
    ),
    (
        "observer run --thread-uprobes -- /bin/true",
        Some(&["--thread-uprobes"]),
        None,
    ),
    (
        "observer run --uprobes -- /bin/true",
        Some(&["--uprobes"]),
        Some(STARTUP_UPROBES_TARGET_MS),
    ),
];

pub(super) struct StartupResult {
    /// Wall ms per run, by condition.
    pub(super) ms: Vec<Vec<f64>>,
    pub(super) problems: Vec<String>,
}

pub(super) fn startup(env: &Env, runs: usize) -> Result<StartupResult> {
    let mut r = StartupResult {
        ms: vec![Vec::new(); STARTUP_CONDS.len()],
        problems: Vec::new(),
    };
    eprintln!(
        "bench deep: startup, {runs} runs x {} conditions ",
        STARTUP_CONDS.len()
    );
    for p in 0..runs {
        for ci in h::order(p, STARTUP_CONDS.len()) {
            let (label, args, _) = STARTUP_CONDS[ci];
            let c = match args {
                None => Command::new("/bin/true"),
                Some(a) => {
                    let mut c = Command::new(&env.observer);
                    c.args(["run", "--quiet"]).args(a).args(["--", "/bin/true"]);
                    c
                }
            };
            match h::run_timed(c, RUN_TIMEOUT)? {
                None => r
                    .problems
                    .push(format!("{label}: timed out after {RUN_TIMEOUT:?}")),
                Some(t) if !t.status.success() => r
                    .problems
                    .push(format!("{label}: ended with {}", h::describe(&t.status))),
                Some(t) => r.ms[ci].push(t.ms()),
            }
            eprint!(".");
        }
    }
    eprintln!();
    Ok(r)
}

pub(super) fn startup_table(r: &StartupResult, runs: usize, v: &mut Verdicts) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "Startup: a short program under `observer run`, wall clock from spawn to reap, {runs} runs per condition, interleaved"
    )
    .unwrap();
    let rows: Vec<(&str, &[f64])> = STARTUP_CONDS
        .iter()
        .zip(&r.ms)
        .map(|(c, x)| (c.0, x.as_slice()))
        .collect();
    s.push_str(&h::ms_table("command", 50, &rows, true));
    s.push_str(&h::problems("PROBLEM", &r.problems));
    for ((label, _, target), x) in STARTUP_CONDS.iter().zip(&r.ms) {
        if let Some(t) = target {
            let what = format!("startup: {}", label.trim_start_matches("observer "));
            writeln!(
                s,
                "{}",
                v.add(Check::at_most(what, h::median(x), *t, h::ms))
            )
            .unwrap();
        }
    }
    s
}

// ---------------------------------------------------------------------------
// philosophers: does observing change the program?
