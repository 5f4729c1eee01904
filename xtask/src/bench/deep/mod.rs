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
//!   (default mode), `--hooks syscalls` and `--thread-uprobes`. Target: observed /
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

mod lockpair;
mod philosophers;
mod threads;

use lockpair::*;
use philosophers::*;
use threads::*;

const USAGE: &str = "\
usage: cargo xtask bench deep [BENCH]... [options]   (as root: sudo ./x bench deep)

BENCH (default: all)
  lockpair      uncontended pthread_mutex_lock+unlock pairs unobserved, under `observer attach`
                (default), `--uprobes` and `--uprobes-bare`: --uprobes pair <= 2 us,
                (uprobes - unobserved) / (bare - unobserved) <= 1.10, default / unobserved <= 1.01
  stacks        `observer dump --format json` on a 64-thread deadlock ring (all 64 stacks unwound
                and symbolized): target <= 200 ms, and gdb 'thread apply all bt' on the same process
  threads       pthread_create+join of 10000 short threads: observed / unobserved <= 1.10, in the
                default mode (no uprobes), with --hooks syscalls and with --thread-uprobes; also
                the observer attached to another process (what its hooks cost every process: the
                floor), in the default mode and with --hooks syscalls
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
