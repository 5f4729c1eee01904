//! The lock-pair cost under each condition, and native stacks of a hung
//! 1000-thread program against gdb.

use super::*;

pub(super) const LOCK_CONDS: [Cond; 4] = [
    UNOBSERVED,
    DEFAULT_MODE,
    Cond {
        label: "observer attach --uprobes",
        args: Some(&["--uprobes"]),
        elsewhere: false,
    },
    Cond {
        label: "observer attach --uprobes-bare",
        args: Some(&["--uprobes-bare"]),
        elsewhere: false,
    },
];
pub(super) const L_UNOBSERVED: usize = 0;
pub(super) const L_DEFAULT: usize = 1;
pub(super) const L_UPROBES: usize = 2;
pub(super) const L_BARE: usize = 3;

pub(super) struct LockResult {
    /// a: CPU ns per pair, b: wall ns per pair.
    pub(super) rows: Vec<Row>,
    /// Per --uprobes visit: the hot lock's acquisitions in the report vs
    /// the pairs run.
    pub(super) counted: Vec<(u64, u64)>,
    pub(super) problems: Vec<String>,
}

pub(super) fn lockpair(env: &mut Env, bin: &Path, o: &Opts) -> Result<LockResult> {
    let mut r = LockResult {
        rows: new_rows(LOCK_CONDS.len()),
        counted: Vec::new(),
        problems: Vec::new(),
    };
    let report = env.out.join("lockpair-report.json");
    eprintln!(
        "bench deep: lockpair, {} passes x 4 conditions (an observer with lock uprobes takes seconds to exit) ",
        o.passes
    );
    for p in 0..o.passes {
        for ci in h::order(p, LOCK_CONDS.len()) {
            let cond = &LOCK_CONDS[ci];
            let row = &mut r.rows[ci];
            let mut v = Visit::start(env, bin, cond, &report, row)?;
            v.wl.round(o.pairs, ROUND_TIMEOUT)?; // warm-up: caches, page faults, the uprobes' XOL slots
            let mut pairs_run = o.pairs;
            for _ in 0..ROUNDS_PER_VISIT {
                let (cpu, wall) = v.timed(env, o.pairs, row)?;
                pairs_run += o.pairs;
                row.a.push(cpu);
                row.b.push(wall);
            }
            if ci == L_UNOBSERVED || ci == L_DEFAULT {
                for _ in 0..ROUNDS_PER_VISIT {
                    let (cpu, wall) = v.timed(env, o.long_pairs, row)?;
                    row.long_a.push(cpu);
                    row.long_b.push(wall);
                }
            }
            if v.end(cond, row, &mut r.problems)? && ci == L_UPROBES {
                match hot_lock_acquired(&report) {
                    Ok(n) => r.counted.push((n, pairs_run)),
                    Err(e) => r.problems.push(format!("--uprobes report: {e:#}")),
                }
            }
        }
    }
    eprintln!();
    Ok(r)
}

/// `acquired` of the lock named hot_lock in an observer.report/1.
pub(super) fn hot_lock_acquired(report: &Path) -> Result<u64> {
    let v = h::read_json(report)?;
    v["locks"]
        .as_array()
        .context("no locks array")?
        .iter()
        .find(|l| l["symbol"] == "hot_lock")
        .and_then(|l| l["acquired"].as_u64())
        .context("no entry for hot_lock in the report's locks")
}

pub(super) fn lockpair_table(r: &LockResult, o: &Opts, v: &mut Verdicts) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "Deep tier: uncontended pthread_mutex_lock+unlock pair (bench/deep_lockpair.c)\n\
         {} pairs per round, {} rounds per condition (medians; thread CPU time, wall clock alongside)",
        o.pairs,
        o.passes * ROUNDS_PER_VISIT
    )
    .unwrap();
    writeln!(
        s,
        "  {:<44} {:>12} {:>10} {:>10} {:>12} {:>9} {:>9}",
        "condition", "CPU/pair", "min", "max", "wall/pair", "attach", "stop"
    )
    .unwrap();
    for (c, x) in LOCK_CONDS.iter().zip(&r.rows) {
        writeln!(
            s,
            "  {:<44} {:>12} {:>10} {:>10} {:>12} {:>9} {:>9}",
            c.label,
            h::ns(h::median(&x.a)),
            h::ns(h::min(&x.a)),
            h::ns(h::max(&x.a)),
            h::ns(h::median(&x.b)),
            h::ns(h::median(&x.attach)),
            h::ns(h::median(&x.stop)),
        )
        .unwrap();
    }
    let med = |i: usize| h::median(&r.rows[i].a);
    let (un, up, bare) = (med(L_UNOBSERVED), med(L_UPROBES), med(L_BARE));
    let (lu, tu) = r.rows[L_UPROBES].uprobes;
    writeln!(
        s,
        "  uprobed functions under --uprobes: {lu} lock + {tu} thread (a pair hits {PAIR_HITS} uprobes: lock entry, unlock entry; \
         pthread_mutex_lock has no return probe)"
    )
    .unwrap();
    writeln!(
        s,
        "  added per pair: --uprobes {} , --uprobes-bare {} , programs' own share {} ({} per hit); --uprobes / bare pair = {}",
        h::ns(up - un),
        h::ns(bare - un),
        h::ns(up - bare),
        h::ns((up - bare) / PAIR_HITS as f64),
        h::ratio(up / bare)
    )
    .unwrap();
    let (dl, ul) = (
        h::median(&r.rows[L_DEFAULT].long_a),
        h::median(&r.rows[L_UNOBSERVED].long_a),
    );
    writeln!(
        s,
        "  default / unobserved on {}-pair rounds: {} vs {} per pair ({} on the {}-pair rounds)",
        o.long_pairs,
        h::ns(dl),
        h::ns(ul),
        h::ratio(med(L_DEFAULT) / un),
        o.pairs
    )
    .unwrap();
    if r.counted.is_empty() {
        writeln!(
            s,
            "  WARNING: no --uprobes report was read: did the uprobes fire?"
        )
        .unwrap();
    } else {
        let all = r.counted.iter().all(|(got, ran)| got == ran);
        let (got, ran) = r.counted[0];
        writeln!(
            s,
            "  --uprobes saw every pair: {} (report's hot_lock acquisitions vs pairs run, e.g. {got} of {ran})",
            if all { "yes" } else { "NO" }
        )
        .unwrap();
    }
    for c in [
        Check::at_most(
            "lockpair: pair under --uprobes (CPU time)",
            up,
            PAIR_TARGET_NS,
            h::ns,
        ),
        Check::at_most(
            "lockpair: (uprobes - unobserved) / (bare - unobserved)",
            (up - un) / (bare - un),
            LOCKPAIR_TARGET,
            h::ratio,
        ),
        Check::at_most(
            "lockpair: default / unobserved (long rounds)",
            dl / ul,
            DEFAULT_TARGET,
            h::ratio,
        ),
    ] {
        writeln!(s, "{}", v.add(c)).unwrap();
    }
    notes(&mut s, &LOCK_CONDS, &r.rows, &r.problems);
    s
}

// ---------------------------------------------------------------------------
// stacks

pub(super) struct StacksResult {
    pub(super) threads: usize,
    /// Wall ms per timed `observer dump --format json`.
    pub(super) dump: Vec<f64>,
    /// The first (untimed for the median) run.
    pub(super) first: f64,
    pub(super) gdb: Vec<f64>,
    pub(super) gdb_note: Option<String>,
    pub(super) gdb_threads: Option<(usize, usize)>,
    /// Frames per thread (min, max) and symbolized share, from the last dump.
    pub(super) frames: Option<(usize, usize, f64)>,
    pub(super) problems: Vec<String>,
}

/// Waits until the process has `n` threads, all asleep in futex(2).
pub(super) fn wait_all_in_futex(pid: u32, n: usize) -> Result<Vec<u64>> {
    let futex_nr = libc::SYS_futex.to_string();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let mut tids = Vec::new();
        let mut asleep = 0;
        if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for e in d.flatten() {
                let Ok(tid) = e.file_name().to_string_lossy().parse::<u64>() else {
                    continue;
                };
                tids.push(tid);
                let sc = std::fs::read_to_string(e.path().join("syscall")).unwrap_or_default();
                if sc.split_whitespace().next() == Some(futex_nr.as_str()) {
                    asleep += 1;
                }
            }
        }
        if tids.len() == n && asleep == n {
            tids.sort();
            return Ok(tids);
        }
        if Instant::now() > deadline {
            bail!(
                "pid {pid}: {} threads, {asleep} in futex(2), after {READY_TIMEOUT:?} ({n} expected)",
                tids.len()
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The dump names every thread in one deadlock finding, each with frames.
/// Returns (min frames, max frames, share of frames with a function name).
pub(super) fn check_dump(out: &[u8], tids: &[u64]) -> Result<(usize, usize, f64)> {
    let d: Value = serde_json::from_slice(out).context("not JSON")?;
    let f = h::finding(&d, "deadlock", |_| true).context("no deadlock finding")?;
    let threads = f["threads"].as_array().context("finding without threads")?;
    let want: BTreeSet<u64> = tids.iter().copied().collect();
    let got: BTreeSet<u64> = threads.iter().filter_map(|t| t["tid"].as_u64()).collect();
    if got != want {
        bail!(
            "the deadlock finding names {} threads, not the {} of the process",
            got.len(),
            want.len()
        );
    }
    let (mut lo, mut hi, mut total, mut named) = (usize::MAX, 0, 0usize, 0usize);
    for t in threads {
        let fr = t["frames"].as_array().map_or(&[][..], Vec::as_slice);
        if fr.is_empty() {
            bail!("thread {} has no frames", t["tid"]);
        }
        lo = lo.min(fr.len());
        hi = hi.max(fr.len());
        total += fr.len();
        named += fr.iter().filter(|x| x["function"].is_string()).count();
    }
    Ok((lo, hi, named as f64 / total.max(1) as f64))
}

pub(super) fn stacks(env: &Env, bin: &Path, o: &Opts) -> Result<StacksResult> {
    eprintln!("bench deep: stacks, a {}-thread deadlock ring ...", o.ring);
    let wl = Workload::start(bin, &[o.ring.to_string()])?;
    let pid = wl.pid();
    let tids = wait_all_in_futex(pid, o.ring)?;
    let mut r = StacksResult {
        threads: tids.len(),
        dump: Vec::new(),
        first: f64::NAN,
        gdb: Vec::new(),
        gdb_note: None,
        gdb_threads: None,
        frames: None,
        problems: Vec::new(),
    };
    let gdb = h::which("gdb");
    if gdb.is_none() && o.gdb_reps > 0 {
        r.gdb_note = Some("gdb not found: not measured".into());
    }
    let one_dump = |r: &mut StacksResult| -> Result<Option<f64>> {
        let mut c = Command::new(&env.observer);
        c.args(["dump", "-p", &pid.to_string(), "--format", "json"]);
        let Some(t) = h::run_timed(c, DUMP_TIMEOUT)? else {
            r.problems
                .push(format!("observer dump timed out after {DUMP_TIMEOUT:?}"));
            return Ok(None);
        };
        if t.status.code() != Some(3) {
            r.problems.push(format!(
                "observer dump ended with {} (3 expected)",
                h::describe(&t.status)
            ));
        }
        match check_dump(&t.stdout, &tids) {
            Ok(f) => r.frames = Some(f),
            Err(e) => r
                .problems
                .push(format!("observer dump --format json: {e:#}")),
        }
        Ok(Some(t.ms()))
    };
    r.first = one_dump(&mut r)?.unwrap_or(f64::NAN);
    // Interleaved: dump, gdb, dump, gdb, ..., then the remaining dumps.
    for i in 0..o.dump_reps.max(o.gdb_reps) {
        if i < o.dump_reps
            && let Some(ms) = one_dump(&mut r)?
        {
            r.dump.push(ms);
        }
        if i < o.gdb_reps
            && let Some(g) = &gdb
        {
            eprintln!("bench deep: gdb run {} of {} ...", i + 1, o.gdb_reps);
            match h::gdb_backtraces(g, pid, GDB_TIMEOUT)? {
                None => r.gdb_note = Some(format!("gdb timed out after {GDB_TIMEOUT:?}")),
                Some(t) => {
                    if !t.status.success() {
                        r.gdb_note = Some(format!("gdb ended with {}", h::describe(&t.status)));
                    }
                    let text = String::from_utf8_lossy(&t.stdout);
                    let threads = text.lines().filter(|l| l.starts_with("Thread ")).count();
                    let frames = text.lines().filter(|l| l.starts_with('#')).count();
                    r.gdb_threads = Some((threads, frames));
                    r.gdb.push(t.ms());
                }
            }
        }
    }
    // gdb stopped and resumed every thread: the ring must still be intact.
    if let Err(e) = wait_all_in_futex(pid, o.ring) {
        r.problems.push(format!("after the runs: {e:#}"));
    }
    Ok(r)
}

pub(super) fn stacks_table(r: &StacksResult, o: &Opts, v: &mut Verdicts) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "Stacks: observer dump of a hung process, {} threads in one deadlock ring (bench/stacks_64.c)\n\
         every thread is named by the finding, so every stack is unwound and symbolized; wall clock per call",
        r.threads
    )
    .unwrap();
    s.push_str(&h::ms_table(
        "command",
        50,
        &[
            ("observer dump -p PID --format json", &r.dump),
            ("gdb -batch -ex 'thread apply all bt' -p PID", &r.gdb),
        ],
        false,
    ));
    writeln!(
        s,
        "  first observer dump (not in the median): {}",
        h::ms(r.first)
    )
    .unwrap();
    if let Some((lo, hi, named)) = r.frames {
        writeln!(
            s,
            "  observer: {lo}-{hi} native frames per thread, {:.0}% with a function name",
            named * 100.0
        )
        .unwrap();
    }
    if let Some((t, f)) = r.gdb_threads {
        writeln!(s, "  gdb printed {t} thread backtraces, {f} frames").unwrap();
    }
    if let Some(n) = &r.gdb_note {
        writeln!(s, "  note: {n}").unwrap();
    }
    if r.problems.is_empty() {
        writeln!(
            s,
            "  observer: exit 3 and one deadlock finding naming all {} threads, each with frames, every run",
            o.ring
        )
        .unwrap();
    } else {
        s.push_str(&h::problems("WRONG ANSWER", &r.problems));
    }
    let (obs, gdb) = (h::median(&r.dump), h::median(&r.gdb));
    writeln!(
        s,
        "  gdb / observer = {}",
        if gdb.is_nan() {
            "-".to_string()
        } else {
            format!("{:.1}x", gdb / obs)
        }
    )
    .unwrap();
    let c = Check::at_most("stacks: observer dump median", obs, STACKS_TARGET_MS, h::ms);
    writeln!(s, "{}", v.add(c)).unwrap();
    s
}

// ---------------------------------------------------------------------------
// threads
