//! `cargo xtask bench [mutex|wake|wait|futex]`: what the kernel hooks cost,
//! as ratios against baselines measured in the same run.
//!
//! A workload (bench/workload.c) runs timed rounds on request over a pipe
//! while the bench switches between four conditions:
//!
//! - unobserved: no BPF program loaded;
//! - bare: do-nothing programs on the hooks the observer uses here
//!   (`observer_ebpf::BENCH_OBJ`, tp_btf sys_enter + sys_exit);
//! - watched: `observer attach --hooks syscalls` on the workload;
//! - unwatched: the same on another (idle) process.
//!
//! The syscall hooks, not the default `sched_switch`: this bench measures
//! what they cost per call (`bench tax` measures the scheduler hook).
//!
//! Conditions are visited in a rotating order, several passes, and each
//! condition's rounds are pooled into a median. Times are the workload
//! thread's CPU time, so time it spends preempted by other processes is
//! left out. Rounds that ran while someone else's hook programs were loaded
//! are run again, or flagged when those programs stay. Targets are reported
//! as PASS/MISS with a bootstrap interval.

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use aya::{Btf, Ebpf, EbpfLoader, programs::BtfTracePoint};

use super::harness::{self as h, Check, Contamination, Observer, Programs, Verdicts, Workload};

/// What this bench measures the cost of (see the module doc).
const SYSCALL_HOOKS: &[&str] = &["--hooks", "syscalls"];

const USAGE: &str = "\
usage: cargo xtask bench [BENCH...] [--rounds N] [options]   (as root: sudo ./x bench)

BENCH (default: all)
  mutex    uncontended pthread mutex lock+unlock loop: throughput observed/unobserved >= 0.99
  wake     futex FUTEX_WAKE with no waiters: added cost vs a bare BPF program
  wait     futex FUTEX_WAIT returning EAGAIN at once: added cost vs a bare BPF program
  futex    wake and wait

Other suites: cargo xtask bench detect|deep ... (see bench list)

options
  --rounds N        passes over the four conditions (default 6, --quick 2; 3 timed rounds per visit)";

/// Timed rounds per condition visit (after one short warm-up round).
const ROUNDS_PER_VISIT: usize = 3;
/// How often a round disturbed by someone else's BPF programs is run again
/// before it is kept (and counted as contaminated).
const MAX_RETRIES: usize = 5;
/// How long to wait for someone else's BPF programs to go away.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
const ROUND_TIMEOUT: Duration = Duration::from_secs(120);

/// Names of the do-nothing programs in BENCH_OBJ and their tp_btf hooks.
const BARE_PROGS: &[(&str, &str)] = &[
    ("bare_sys_enter", "sys_enter"),
    ("bare_sys_exit", "sys_exit"),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Bench {
    Mutex,
    Wake,
    Wait,
}

impl Bench {
    fn mode(self) -> &'static str {
        match self {
            Bench::Mutex => "mutex",
            Bench::Wake => "wake",
            Bench::Wait => "wait",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Bench::Mutex => "uncontended pthread_mutex_lock+unlock (ns per pair)",
            Bench::Wake => "futex(FUTEX_WAKE_PRIVATE), no waiters (ns per call)",
            Bench::Wait => "futex(FUTEX_WAIT_PRIVATE) -> EAGAIN (ns per call)",
        }
    }

    /// Ops per timed round: a few tenths of a second each on this kind of machine.
    fn ops(self) -> u64 {
        match self {
            Bench::Mutex => 20_000_000,
            Bench::Wake | Bench::Wait => 1_000_000,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cond {
    Unobserved,
    Bare,
    Watched,
    Unwatched,
}

impl Cond {
    const ALL: [Cond; 4] = [Cond::Unobserved, Cond::Bare, Cond::Watched, Cond::Unwatched];

    fn label(self) -> &'static str {
        match self {
            Cond::Unobserved => "unobserved (no BPF)",
            Cond::Bare => "bare BPF (tp_btf sys_enter+exit)",
            Cond::Watched => "observer watching this process",
            Cond::Unwatched => "observer watching another process",
        }
    }
}

struct Opts {
    benches: Vec<Bench>,
    passes: usize,
}

pub fn main(args: &[String]) -> Result<()> {
    let usage = format!("{USAGE}\n{}\n{}", h::PIN_OPTIONS, h::COMMON_OPTIONS);
    let mut o = Opts {
        benches: Vec::new(),
        passes: 0,
    };
    let Some(common) = h::parse(args, &usage, true, |a, args| {
        match a {
            "mutex" => o.benches.push(Bench::Mutex),
            "wake" => o.benches.push(Bench::Wake),
            "wait" => o.benches.push(Bench::Wait),
            "futex" => o.benches.extend([Bench::Wake, Bench::Wait]),
            "--rounds" => o.passes = args.number::<usize>("--rounds")?.max(1),
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(());
    };
    if o.passes == 0 {
        o.passes = if common.quick { 2 } else { 6 };
    }
    if o.benches.is_empty() {
        o.benches = vec![Bench::Mutex, Bench::Wake, Bench::Wait];
    }
    let mut once = Vec::new();
    o.benches.retain(|b| {
        let first = !once.contains(b);
        once.push(*b);
        first
    });
    h::require_root("bench")?;
    let observer = h::observer_binary(&common)?;
    let workload = h::compile(&h::out_dir("bench")?, "bench/workload.c", "workload")?;
    let env = Env {
        observer,
        workload,
        btf: Btf::from_sys_fs().context("reading kernel BTF")?,
        cpu: common.cpu,
    };

    println!(
        "{}",
        h::header(
            "observer bench: kernel hooks",
            &format!(
                "workload {}; {} passes x {ROUNDS_PER_VISIT} rounds per condition, conditions in rotating order\n\
                 times: median ns per op of thread CPU time (preemption not counted); wall: CLOCK_MONOTONIC\n",
                h::pinning(env.cpu),
                o.passes,
            )
        )
    );
    let mut progs = Programs::default();
    let mut verdicts = Verdicts::default();
    let mut hooks = None;
    for &b in &o.benches {
        let r = run_bench(&env, b, o.passes, &mut progs, &mut hooks)?;
        println!("{}", r.table(&mut verdicts));
    }
    if let Some(h) = &hooks {
        println!("observer hooks: {h}");
    }
    // Every program we loaded went with its owner (a dropped Ebpf, an
    // exited observer); make sure, as `xtask test` does.
    h::finish(&verdicts, &progs, &env.observer, true)
}

struct Env {
    observer: PathBuf,
    workload: PathBuf,
    btf: Btf,
    cpu: Option<usize>,
}

struct BenchResult {
    bench: Bench,
    /// Per-round thread CPU ns/op, by condition (index into Cond::ALL).
    samples: [Vec<f64>; 4],
    /// The same rounds' wall-clock ns/op, shown for comparison.
    wall: [Vec<f64>; 4],
    /// Over all conditions (the guard is per round, not per condition).
    contamination: Contamination,
}

fn run_bench(
    env: &Env,
    bench: Bench,
    passes: usize,
    progs: &mut Programs,
    hooks: &mut Option<String>,
) -> Result<BenchResult> {
    eprintln!("xtask: bench {} ({} passes)", bench.mode(), passes);
    let mut args = vec![bench.mode().to_string()];
    args.extend(env.cpu.map(|c| c.to_string()));
    let mut wl = Workload::start(&env.workload, &args)?;
    // The unwatched case's stand-in target: any process but the workload.
    let idle = Workload::start(&env.workload, &["idle".to_string()])?;
    let mut r = BenchResult {
        bench,
        samples: Default::default(),
        wall: Default::default(),
        contamination: Contamination::default(),
    };
    // Someone else's programs stayed loaded the last time we waited: do not
    // wait for them again.
    let mut persistent = false;
    for pass in 0..passes {
        for ci in h::order(pass, Cond::ALL.len()) {
            let active = match Cond::ALL[ci] {
                Cond::Unobserved => Active::None,
                Cond::Bare => Active::Bare(attach_bare(&env.btf)?),
                Cond::Watched => Active::Observer(Observer::attach(
                    &env.observer,
                    wl.pid(),
                    SYSCALL_HOOKS,
                    None,
                    progs,
                )?),
                Cond::Unwatched => Active::Observer(Observer::attach(
                    &env.observer,
                    idle.pid(),
                    SYSCALL_HOOKS,
                    None,
                    progs,
                )?),
            };
            let holder = match &active {
                Active::None => None,
                Active::Bare(_) => Some(std::process::id()),
                Active::Observer(o) => {
                    hooks.get_or_insert_with(|| o.hooks());
                    Some(o.pid())
                }
            };
            wl.round(bench.ops() / 4, ROUND_TIMEOUT)?; // warm-up: caches, branch predictors, page faults
            for _ in 0..ROUNDS_PER_VISIT {
                // A round counts only if no one else's hook program was
                // loaded before or after it: their syscall hooks slow every
                // condition and blur the ratios. Programs that come and go
                // are waited out and the round is run again; programs that
                // stay are not (the rounds are kept and flagged).
                for attempt in 0.. {
                    let wait = if persistent {
                        Duration::ZERO
                    } else {
                        SETTLE_TIMEOUT
                    };
                    let rd = progs.round(holder, wait, &mut r.contamination, || {
                        wl.round(bench.ops(), ROUND_TIMEOUT)
                    })?;
                    persistent = rd.stayed;
                    if rd.clean || persistent || attempt == MAX_RETRIES {
                        let [cpu, wall, ..] = rd.value[..] else {
                            bail!("workload printed {:?}, expected CPU_NS WALL_NS", rd.value);
                        };
                        r.contamination.keep(rd.clean);
                        r.samples[ci].push(cpu);
                        r.wall[ci].push(wall);
                        break;
                    }
                    r.contamination.retried += 1;
                }
            }
            drop(active);
        }
        eprint!(".");
    }
    eprintln!();
    Ok(r)
}

/// What is loaded during a visit; dropping it unloads it.
enum Active {
    None,
    #[allow(dead_code)] // held for its Drop: unloading the programs
    Bare(Ebpf),
    Observer(Observer),
}

fn attach_bare(btf: &Btf) -> Result<Ebpf> {
    let mut bpf = EbpfLoader::new()
        .btf(Some(btf))
        .load(observer_ebpf::BENCH_OBJ)
        .context("loading BENCH_OBJ")?;
    for &(name, tp) in BARE_PROGS {
        let p: &mut BtfTracePoint = bpf
            .program_mut(name)
            .with_context(|| format!("{name} missing from BENCH_OBJ"))?
            .try_into()?;
        p.load(tp, btf).with_context(|| format!("loading {name}"))?;
        p.attach().with_context(|| format!("attaching {name}"))?;
    }
    Ok(bpf)
}

/// The checked ratio for condition `c`, from the medians per condition.
fn ratio(bench: Bench, c: Cond, med: &[f64]) -> f64 {
    let unobs = med[Cond::Unobserved as usize];
    match bench {
        // throughput ratio: the inverse of the time ratio
        Bench::Mutex => unobs / med[c as usize],
        Bench::Wake | Bench::Wait => (med[c as usize] - unobs) / (med[Cond::Bare as usize] - unobs),
    }
}

impl BenchResult {
    fn checks(&self) -> Vec<Check> {
        let med: Vec<f64> = self.samples.iter().map(|v| h::median(v)).collect();
        let groups: Vec<&[f64]> = self.samples.iter().map(Vec::as_slice).collect();
        let targets: &[(Cond, &str, f64)] = match self.bench {
            Bench::Mutex => &[
                (Cond::Watched, "watched", 0.99),
                (Cond::Unwatched, "unwatched", 0.99),
            ],
            Bench::Wake | Bench::Wait => &[
                (Cond::Watched, "watched", 1.5),
                (Cond::Unwatched, "unwatched", 1.2),
            ],
        };
        let unreliable = if self.contamination.rounds > 0 {
            " (unreliable)"
        } else {
            ""
        };
        targets
            .iter()
            .map(|&(c, name, limit)| {
                let value = ratio(self.bench, c, &med);
                let (lo, hi) = h::bootstrap(&groups, |m| ratio(self.bench, c, m));
                let note = format!("[{lo:.2} .. {hi:.2}]{unreliable}");
                match self.bench {
                    Bench::Mutex => Check::at_least(
                        format!("mutex: throughput {name}/unobserved"),
                        value,
                        limit,
                        h::ratio,
                    ),
                    b => {
                        let mut ch = Check::at_most(
                            format!("{}: added {name}/added bare", b.mode()),
                            value,
                            limit,
                            h::ratio,
                        );
                        // A bare cost that is not positive (a negative ratio) is noise.
                        if value < 0.0 {
                            ch.pass = Some(false);
                        }
                        ch
                    }
                }
                .note(note)
            })
            .collect()
    }

    fn table(&self, verdicts: &mut Verdicts) -> String {
        let mut t = String::new();
        let unobs = h::median(&self.samples[Cond::Unobserved as usize]);
        writeln!(t, "{} x {} ops/round", self.bench.title(), self.bench.ops()).unwrap();
        writeln!(
            t,
            "  {:<36} {:>9} {:>19} {:>9} {:>7} {:>9}",
            "condition", "median", "p25 .. p75", "added", "rel", "wall"
        )
        .unwrap();
        for c in Cond::ALL {
            let v = &self.samples[c as usize];
            let m = h::median(v);
            let (added, rel) = if c == Cond::Unobserved {
                ("-".to_string(), "1.000".to_string())
            } else {
                (format!("{:+.1}", m - unobs), format!("{:.3}", m / unobs))
            };
            writeln!(
                t,
                "  {:<36} {:>9.1} {:>8.1} .. {:>8.1} {:>9} {:>7} {:>9.1}",
                c.label(),
                m,
                h::quantile(v, 0.25),
                h::quantile(v, 0.75),
                added,
                rel,
                h::median(&self.wall[c as usize])
            )
            .unwrap();
        }
        for ch in self.checks() {
            writeln!(t, "{}", verdicts.add(ch)).unwrap();
        }
        if let Some(n) = self.contamination.note("all conditions") {
            writeln!(t, "{n}").unwrap();
        }
        if self.contamination.rounds > 0 {
            writeln!(
                t,
                "  WARNING: someone else's hook programs slow every condition: these numbers are unreliable"
            )
            .unwrap();
        }
        t
    }
}
