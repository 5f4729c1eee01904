//! `cargo xtask bench deep`: the deep tier's per-call cost, stack unwinding
//! for `dump`, the thread lifecycle cost, what `observer run` costs a short
//! program, and whether the observer changes the program it observes.
//!
//! - lockpair: uncontended pthread_mutex_lock + unlock pairs
//!   (bench/deep_lockpair.c) unobserved, under `observer attach` (default
//!   mode), `attach --uprobes` and `attach --uprobes-bare` (the same uprobes
//!   running do-nothing programs). Targets: a pair under --uprobes <= 2 us;
//!   (uprobes - unobserved) / (bare - unobserved) <= 1.10 (the programs add
//!   at most 10% to the bare uprobe hits at the same sites); default /
//!   unobserved <= 1.01.
//! - stacks: `observer dump -p PID --format json` on a hung process of 64
//!   threads in one deadlock ring (bench/stacks_64.c): every stack unwound
//!   and symbolized; target <= 200 ms; gdb 'thread apply all bt' alongside.
//! - threads: pthread_create + pthread_join of 10 000 short threads one by
//!   one (bench/threads_createjoin.c) unobserved, under `observer attach`
//!   (default mode) and `attach --thread-uprobes`. Target: observed /
//!   unobserved <= 1.10.
//! - startup: `observer run -- /bin/true`, wall clock, against /bin/true
//!   alone. Targets: <= 150 ms in the default mode, <= 300 ms with --uprobes.
//! - philosophers: five threads, each taking fork i then fork i+1, 1000
//!   rounds (bench/philosophers_rounds.c), under `observer run --uprobes`,
//!   20 runs (and unobserved, the same number). Targets: no run deadlocks,
//!   and every run reports the 5-lock order inversion.
//! - pyabba: a Python threading.Lock ABBA that deadlocks within milliseconds
//!   of its start (bench/py_abba_early.py) under `observer run --uprobes`,
//!   20 runs. Target: a full cycle (both holders known) every run.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::harness::{self as h, Check, Contamination, Observer, Programs, Verdicts, Workload};

const USAGE: &str = "\
usage: cargo xtask bench deep [BENCH]... [options]   (as root: sudo ./x bench deep)

BENCH (default: all)
  lockpair      uncontended pthread_mutex_lock+unlock pairs unobserved, under `observer attach`
                (default), `--uprobes` and `--uprobes-bare`: --uprobes pair <= 2 us,
                (uprobes - unobserved) / (bare - unobserved) <= 1.10, default / unobserved <= 1.01
  stacks        `observer dump --format json` on a 64-thread deadlock ring (all 64 stacks unwound
                and symbolized): target <= 200 ms, and gdb 'thread apply all bt' on the same process
  threads       pthread_create+join of 10000 short threads: observed / unobserved <= 1.10, in the
                default mode (no uprobes) and with --thread-uprobes; also the observer attached to
                another process (what its hooks cost every process: the floor)
  startup       `observer run -- /bin/true`: <= 150 ms (default mode), <= 300 ms (--uprobes)
  philosophers  5 philosophers x 1000 rounds under `observer run --uprobes`, 20 runs:
                no deadlock and the 5-lock order inversion reported, every run; against
                unobserved, do-nothing programs at the same sites, and unobserved runs as long
                as observed ones
  pyabba        a Python Lock ABBA deadlocking within ms of its start, `observer run --uprobes`,
                20 runs: a full cycle (both holders known) every run

options
  --rounds N        passes over the conditions (default 5, --quick 1; each visit times 3 rounds)
  --pairs N         lock/unlock pairs per lockpair round (default 20000)
  --long-pairs N    pairs per round of the default-vs-unobserved comparison (default 2000000)
  --create N        threads per threads round (default 10000)
  --ring N          threads of the stacks target (default 64)
  --dump-reps N     timed `observer dump` runs (default 7, --quick 3)
  --gdb-reps N      timed gdb runs (default 3, --quick 1; 0 skips gdb)
  --runs N          startup, philosophers and pyabba runs (default 10, 20, 20; --quick 3, 5, 5)
  --meals N         rounds per philosopher (default 1000)";

const NUMBER_FLAGS: &[&str] = &[
    "--rounds",
    "--pairs",
    "--long-pairs",
    "--create",
    "--ring",
    "--dump-reps",
    "--gdb-reps",
    "--runs",
    "--meals",
];

const PAIR_TARGET_NS: f64 = 2000.0;
/// Uprobe hits per uncontended lock+unlock pair (lock entry, unlock entry).
const PAIR_HITS: u32 = 2;
const LOCKPAIR_TARGET: f64 = 1.10;
/// Default mode vs unobserved on the lock loop: "as cheap as unobserved"
/// (the `mutex` bench asks throughput >= 0.99 of unobserved).
const DEFAULT_TARGET: f64 = 1.01;
const STACKS_TARGET_MS: f64 = 200.0;
const THREADS_TARGET: f64 = 1.10;
const STARTUP_TARGET_MS: f64 = 150.0;
const STARTUP_UPROBES_TARGET_MS: f64 = 300.0;

/// Timed rounds per condition visit (after one warm-up round).
const ROUNDS_PER_VISIT: usize = 3;
const ROUND_TIMEOUT: Duration = Duration::from_secs(600);
const DUMP_TIMEOUT: Duration = Duration::from_secs(60);
const GDB_TIMEOUT: Duration = Duration::from_secs(600);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// `observer run` of a short program; with many uprobes it takes seconds to exit.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// The Python ABBA deadlocks at once: a report later than this is a miss
/// (an observer that saw no cycle waits forever).
const PY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for someone else's hook programs to go away before a
/// round (they come and go with other people's tests on a shared machine).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

struct Opts {
    benches: BTreeSet<Bench>,
    passes: usize,
    pairs: u64,
    long_pairs: u64,
    create: u64,
    ring: usize,
    dump_reps: usize,
    gdb_reps: usize,
    startup_runs: usize,
    phil_runs: usize,
    py_runs: usize,
    meals: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Bench {
    Lockpair,
    Stacks,
    Threads,
    Startup,
    Philosophers,
    Pyabba,
}

pub fn main(args: &[String]) -> Result<()> {
    let usage = format!("{USAGE}\n{}\n{}", h::PIN_OPTIONS, h::COMMON_OPTIONS);
    let mut benches = BTreeSet::new();
    // (flag, value) as given; read below with the defaults.
    let mut set: Vec<(String, u64)> = Vec::new();
    let Some(common) = h::parse(args, &usage, true, |a, args| {
        match a {
            "lockpair" => benches.insert(Bench::Lockpair),
            "stacks" => benches.insert(Bench::Stacks),
            "threads" => benches.insert(Bench::Threads),
            "startup" => benches.insert(Bench::Startup),
            "philosophers" => benches.insert(Bench::Philosophers),
            "pyabba" => benches.insert(Bench::Pyabba),
            f if NUMBER_FLAGS.contains(&f) => {
                set.push((f.to_string(), args.number(f)?));
                true
            }
            _ => return Ok(false),
        };
        Ok(true)
    })?
    else {
        return Ok(());
    };
    // The last value given for `flag`, else the default (or the quick one).
    let get = |flag: &str, normal: u64, quick: u64| {
        set.iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map_or(if common.quick { quick } else { normal }, |&(_, v)| v)
    };
    let o = Opts {
        benches: if benches.is_empty() {
            [
                Bench::Lockpair,
                Bench::Stacks,
                Bench::Threads,
                Bench::Startup,
                Bench::Philosophers,
                Bench::Pyabba,
            ]
            .into()
        } else {
            benches
        },
        passes: get("--rounds", 5, 1).max(1) as usize,
        pairs: get("--pairs", 20_000, 20_000).max(1),
        long_pairs: get("--long-pairs", 2_000_000, 2_000_000).max(1),
        create: get("--create", 10_000, 10_000).max(1),
        ring: get("--ring", 64, 64).clamp(2, 1024) as usize,
        dump_reps: get("--dump-reps", 7, 3).max(1) as usize,
        gdb_reps: get("--gdb-reps", 3, 1) as usize,
        startup_runs: get("--runs", 10, 3).max(1) as usize,
        phil_runs: get("--runs", 20, 5).max(1) as usize,
        py_runs: get("--runs", 20, 5).max(1) as usize,
        meals: get("--meals", 1000, 1000).max(1),
    };
    h::require_root("bench deep")?;
    let observer = h::observer_binary(&common)?;
    let out = h::out_dir("bench-deep")?;
    let mut env = Env {
        observer,
        out: out.clone(),
        cpu: common.cpu,
        progs: Programs::default(),
    };
    println!(
        "{}",
        h::header(
            "observer bench deep: deep tier, stacks, thread lifecycle, startup, philosophers",
            &format!(
                "workloads {}; {} passes over the conditions, {ROUNDS_PER_VISIT} timed rounds per visit\n",
                h::pinning(env.cpu),
                o.passes
            )
        )
    );
    let mut v = Verdicts::default();
    // The `observer run` benches last: their programs are not tracked as
    // ours and would count as someone else's in the rounds of the others.
    for b in &o.benches {
        match b {
            Bench::Lockpair => {
                let bin = h::compile(&out, "bench/deep_lockpair.c", "deep_lockpair")?;
                let r = lockpair(&mut env, &bin, &o)?;
                println!("{}", lockpair_table(&r, &o, &mut v));
            }
            Bench::Stacks => {
                let bin = h::compile(&out, "bench/stacks_64.c", "stacks_64")?;
                let r = stacks(&env, &bin, &o)?;
                println!("{}", stacks_table(&r, &o, &mut v));
            }
            Bench::Threads => {
                let bin = h::compile(&out, "bench/threads_createjoin.c", "threads_createjoin")?;
                let r = threads(&mut env, &bin, &o)?;
                println!("{}", threads_table(&r, &o, &mut v));
            }
            Bench::Startup => {
                let r = startup(&env, o.startup_runs)?;
                println!("{}", startup_table(&r, o.startup_runs, &mut v));
            }
            Bench::Philosophers => {
                let bin = h::compile(&out, "bench/philosophers_rounds.c", "philosophers_rounds")?;
                let r = philosophers(&env, &bin, &o)?;
                println!("{}", philosophers_table(&r, &o, &mut v));
            }
            Bench::Pyabba => {
                let r = pyabba(&env, o.py_runs)?;
                println!("{}", pyabba_table(&r, &mut v));
            }
        }
    }
    h::finish(&v, &env.progs, &env.observer, false)
}

/// What the benchmarks share: paths, pinning, and what they loaded.
struct Env {
    observer: PathBuf,
    out: PathBuf,
    cpu: Option<usize>,
    progs: Programs,
}

impl Env {
    fn pin_arg(&self) -> Vec<String> {
        self.cpu.map(|c| vec![c.to_string()]).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Condition visits: a fresh workload, an observer attached (or not), timed
// rounds, then the observer stopped and waited for.

/// One condition of an attach benchmark.
struct Cond {
    label: &'static str,
    /// `observer attach` options; None: unobserved.
    args: Option<&'static [&'static str]>,
    /// The observer watches an idle copy of the workload, not the timed
    /// one: the cost of its hooks being in place for every process (the
    /// floor for a watched one), not of watching.
    elsewhere: bool,
}

#[derive(Default)]
struct Row {
    /// The workload's two numbers per round (their meaning is the bench's).
    a: Vec<f64>,
    b: Vec<f64>,
    /// The same from longer rounds, where a bench has them.
    long_a: Vec<f64>,
    long_b: Vec<f64>,
    /// Start -> `observing pid`, SIGINT -> exit (ns).
    attach: Vec<f64>,
    stop: Vec<f64>,
    /// Uprobed functions the observer reported (lock, thread).
    uprobes: (usize, usize),
    contamination: Contamination,
}

struct Visit {
    wl: Workload,
    obs: Option<Observer>,
    /// The idle copy an `elsewhere` observer watches.
    other: Option<Workload>,
}

impl Visit {
    fn start(
        env: &mut Env,
        bin: &Path,
        cond: &Cond,
        report: &Path,
        row: &mut Row,
    ) -> Result<Visit> {
        let wl = Workload::start(bin, &env.pin_arg())?;
        let other = if cond.elsewhere {
            Some(Workload::start(bin, &env.pin_arg())?)
        } else {
            None
        };
        let watched = other.as_ref().map_or(wl.pid(), Workload::pid);
        let obs = match cond.args {
            None => None,
            Some(extra) => {
                let o =
                    Observer::attach(&env.observer, watched, extra, Some(report), &mut env.progs)?;
                row.attach.push(o.attach.as_secs_f64() * 1e9);
                row.uprobes = (o.uprobes("lock").len(), o.uprobes("thread").len());
                Some(o)
            }
        };
        Ok(Visit { wl, obs, other })
    }

    /// One timed round of `n`, kept whatever foreign programs were loaded
    /// (they are counted in the row's note): the workload's two numbers.
    fn timed(&mut self, env: &mut Env, n: u64, row: &mut Row) -> Result<(f64, f64)> {
        let holder = self.obs.as_ref().map(Observer::pid);
        let r = env
            .progs
            .round(holder, SETTLE_TIMEOUT, &mut row.contamination, || {
                self.wl.round(n, ROUND_TIMEOUT)
            })?;
        row.contamination.keep(r.clean);
        match r.value[..] {
            [a, b, ..] => Ok((a, b)),
            _ => bail!("workload answered {:?}, expected two numbers", r.value),
        }
    }

    /// Stops the observer (its report is then complete) and the workload;
    /// whether an observer ran.
    fn end(mut self, cond: &Cond, row: &mut Row, problems: &mut Vec<String>) -> Result<bool> {
        let observed = if let Some(mut o) = self.obs.take() {
            let s = o.stop();
            row.stop.push(s.took.as_secs_f64() * 1e9);
            if let Some(p) = s.problem() {
                problems.push(format!("{}: {p}", cond.label));
            }
            true
        } else {
            false
        };
        self.wl.finish()?;
        if let Some(o) = self.other.take() {
            o.finish()?;
        }
        eprint!(".");
        // a report of the idle copy says nothing of the timed workload
        Ok(observed && !cond.elsewhere)
    }
}

fn new_rows(n: usize) -> Vec<Row> {
    (0..n).map(|_| Row::default()).collect()
}

/// The per-condition notes about foreign programs, and the problems.
fn notes(s: &mut String, conds: &[Cond], rows: &[Row], problems: &[String]) {
    for (c, r) in conds.iter().zip(rows) {
        if let Some(n) = r.contamination.note(c.label) {
            writeln!(s, "{n}").unwrap();
        }
    }
    s.push_str(&h::problems("PROBLEM", problems));
}

// ---------------------------------------------------------------------------
// lockpair

const UNOBSERVED: Cond = Cond {
    label: "unobserved",
    args: None,
    elsewhere: false,
};
const DEFAULT_MODE: Cond = Cond {
    label: "observer attach (default mode)",
    args: Some(&[]),
    elsewhere: false,
};

const LOCK_CONDS: [Cond; 4] = [
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
const L_UNOBSERVED: usize = 0;
const L_DEFAULT: usize = 1;
const L_UPROBES: usize = 2;
const L_BARE: usize = 3;

struct LockResult {
    /// a: CPU ns per pair, b: wall ns per pair.
    rows: Vec<Row>,
    /// Per --uprobes visit: the hot lock's acquisitions in the report vs
    /// the pairs run.
    counted: Vec<(u64, u64)>,
    problems: Vec<String>,
}

fn lockpair(env: &mut Env, bin: &Path, o: &Opts) -> Result<LockResult> {
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
fn hot_lock_acquired(report: &Path) -> Result<u64> {
    let v = h::read_json(report)?;
    v["locks"]
        .as_array()
        .context("no locks array")?
        .iter()
        .find(|l| l["symbol"] == "hot_lock")
        .and_then(|l| l["acquired"].as_u64())
        .context("no entry for hot_lock in the report's locks")
}

fn lockpair_table(r: &LockResult, o: &Opts, v: &mut Verdicts) -> String {
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

struct StacksResult {
    threads: usize,
    /// Wall ms per timed `observer dump --format json`.
    dump: Vec<f64>,
    /// The first (untimed for the median) run.
    first: f64,
    gdb: Vec<f64>,
    gdb_note: Option<String>,
    gdb_threads: Option<(usize, usize)>,
    /// Frames per thread (min, max) and symbolized share, from the last dump.
    frames: Option<(usize, usize, f64)>,
    problems: Vec<String>,
}

/// Waits until the process has `n` threads, all asleep in futex(2).
fn wait_all_in_futex(pid: u32, n: usize) -> Result<Vec<u64>> {
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
fn check_dump(out: &[u8], tids: &[u64]) -> Result<(usize, usize, f64)> {
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

fn stacks(env: &Env, bin: &Path, o: &Opts) -> Result<StacksResult> {
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

fn stacks_table(r: &StacksResult, o: &Opts, v: &mut Verdicts) -> String {
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

const THREAD_CONDS: [Cond; 4] = [
    UNOBSERVED,
    Cond {
        label: "observer attach to another process",
        args: Some(&[]),
        elsewhere: true,
    },
    DEFAULT_MODE,
    Cond {
        label: "observer attach --thread-uprobes",
        args: Some(&["--thread-uprobes"]),
        elsewhere: false,
    },
];

struct ThreadResult {
    /// a: wall ns per round, b: process CPU ns per round.
    rows: Vec<Row>,
    /// Per condition: (threads the report saw created, threads created while observed).
    seen: Vec<Vec<(u64, u64)>>,
    drops: Vec<u64>,
    problems: Vec<String>,
}

fn threads(env: &mut Env, bin: &Path, o: &Opts) -> Result<ThreadResult> {
    let n = THREAD_CONDS.len();
    let mut r = ThreadResult {
        rows: new_rows(n),
        seen: vec![Vec::new(); n],
        drops: vec![0; n],
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
            for _ in 0..ROUNDS_PER_VISIT {
                let (wall, cpu) = v.timed(env, o.create, row)?;
                created += o.create;
                row.a.push(wall);
                row.b.push(cpu);
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
    eprintln!();
    Ok(r)
}

/// (threads created, total drops) from an observer.report/1.
fn lifecycle(report: &Path) -> Result<(u64, u64)> {
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

fn threads_table(r: &ThreadResult, o: &Opts, v: &mut Verdicts) -> String {
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
            "  {}: thread uprobes {}, CPU ratio {}, {} per thread",
            cond.label,
            x.uprobes.1,
            h::ratio(h::median(&x.b) / uc),
            h::signed(h::ns, (w - un) / o.create as f64),
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
    notes(&mut s, &THREAD_CONDS, &r.rows, &r.problems);
    s
}

// ---------------------------------------------------------------------------
// startup: `observer run -- /bin/true`

/// (label, `observer run` options (None: /bin/true alone), target ms).
type StartupCond = (&'static str, Option<&'static [&'static str]>, Option<f64>);

const STARTUP_CONDS: [StartupCond; 4] = [
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

struct StartupResult {
    /// Wall ms per run, by condition.
    ms: Vec<Vec<f64>>,
    problems: Vec<String>,
}

fn startup(env: &Env, runs: usize) -> Result<StartupResult> {
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

fn startup_table(r: &StartupResult, runs: usize, v: &mut Verdicts) -> String {
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

/// What one philosophers condition came to.
#[derive(Default)]
struct PhilRuns {
    runs: usize,
    /// Ended normally.
    finished: usize,
    /// The observer reported a deadlock (and killed the target), or the
    /// workload's watchdog saw no round end for 2 s.
    deadlocked: usize,
    /// The report had a lock-order inversion over exactly the 5 forks.
    inversion: usize,
    /// The workload's own time from its start barrier to the last join
    /// (runs that finished).
    elapsed_ms: Vec<f64>,
    problems: Vec<String>,
}

/// Unobserved; `--uprobes-bare` (do-nothing programs at the same sites);
/// `--uprobes`; unobserved with as many more rounds as make it run as
/// long as an observed run (same run, measured just before).
struct PhilResult {
    conds: [PhilRuns; 4],
    /// Rounds of the last condition.
    stretched_meals: u64,
}

const PHIL_LABELS: [&str; 4] = [
    "unobserved",
    "observer run --uprobes-bare --kill-on-deadlock",
    "observer run --uprobes --kill-on-deadlock",
    "unobserved, as long as an observed run",
];
const P_UNOBSERVED: usize = 0;
const P_BARE: usize = 1;
const P_UPROBES: usize = 2;
const P_STRETCHED: usize = 3;

fn phil_run(
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

fn philosophers(env: &Env, bin: &Path, o: &Opts) -> Result<PhilResult> {
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
fn five_fork_inversion(report: &Path, out: &str) -> Result<()> {
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

fn philosophers_table(r: &PhilResult, o: &Opts, v: &mut Verdicts) -> String {
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

struct PyResult {
    python: PathBuf,
    runs: usize,
    /// Runs whose report had the full cycle.
    full: usize,
    ms: Vec<f64>,
    problems: Vec<String>,
}

fn pyabba(env: &Env, runs: usize) -> Result<PyResult> {
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
fn full_cycle(report: &Path, out: &str) -> Result<()> {
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

fn pyabba_table(r: &PyResult, v: &mut Verdicts) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_check() {
        let ok = br#"{"findings":[{"kind":"deadlock","threads":[
            {"tid":1,"frames":[{"function":"f"},{"addr":2}]},{"tid":2,"frames":[{"function":"g"}]}]}]}"#;
        let (lo, hi, named) = check_dump(ok, &[1, 2]).unwrap();
        assert_eq!((lo, hi), (1, 2));
        assert!((named - 2.0 / 3.0).abs() < 1e-9);
        assert!(check_dump(ok, &[1, 2, 3]).is_err());
        let empty = br#"{"findings":[{"kind":"deadlock","threads":[{"tid":1,"frames":[]}]}]}"#;
        assert!(check_dump(empty, &[1]).is_err());
    }

    #[test]
    fn inversion_over_the_printed_forks() {
        let dir = std::env::temp_dir().join(format!("bench-deep-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = dir.join("r.json");
        let out: String = (0..5)
            .map(|i| format!("lock forks[{i}] {:#x}\n", 0x1000 + 40 * i))
            .collect::<String>()
            + "done\n";
        let locks = |n: u64| -> String {
            (0..n)
                .map(|i| format!(r#"{{"addr":{}}}"#, 0x1000 + 40 * i))
                .collect::<Vec<_>>()
                .join(",")
        };
        std::fs::write(
            &report,
            format!(
                r#"{{"findings":[{{"kind":"lock_order_inversion","locks":[{}]}}]}}"#,
                locks(5)
            ),
        )
        .unwrap();
        assert!(five_fork_inversion(&report, &out).is_ok());
        std::fs::write(
            &report,
            format!(
                r#"{{"findings":[{{"kind":"lock_order_inversion","locks":[{}]}}]}}"#,
                locks(2)
            ),
        )
        .unwrap();
        assert!(five_fork_inversion(&report, &out).is_err());
        assert!(five_fork_inversion(&report, "done\n").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn full_python_cycle() {
        let dir = std::env::temp_dir().join(format!("bench-deep-py-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = dir.join("r.json");
        let out = "thread alpha 11\nthread beta 12\n";
        let write = |holder: u64| {
            std::fs::write(
                &report,
                format!(
                    r#"{{"findings":[{{"kind":"deadlock","cycle":[{{"waiter_tid":11,"holder_tid":12}},{{"waiter_tid":12,"holder_tid":{holder}}}]}}]}}"#
                ),
            )
            .unwrap()
        };
        write(11);
        assert!(full_cycle(&report, out).is_ok());
        write(0); // a holder not known
        assert!(full_cycle(&report, out).is_err());
        assert!(full_cycle(&report, "thread alpha 11\n").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lifecycle_from_report() {
        let dir = std::env::temp_dir().join(format!("bench-deep-lc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = dir.join("r.json");
        std::fs::write(
            &report,
            r#"{"processes":[{"lifecycle":{"created":30001}}],"drops":{"records":5,"ringbuf":2,"map":1}}"#,
        )
        .unwrap();
        assert_eq!(lifecycle(&report).unwrap(), (30001, 3));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
