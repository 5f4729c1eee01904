//! `cargo xtask bench`: what observing costs, as ratios against baselines
//! measured in the same run.
//!
//! A workload (bench/workload.c) runs timed rounds on request over a pipe
//! while the bench switches between four conditions:
//!
//! - unobserved: no BPF program loaded;
//! - bare: do-nothing programs on the hooks the observer uses here
//!   (`observer_ebpf::BENCH_OBJ`, tp_btf sys_enter + sys_exit);
//! - watched: `observer attach` on the workload;
//! - unwatched: `observer attach` on another (idle) process.
//!
//! Conditions are visited in a rotating order, several passes, and each
//! condition's rounds are pooled into a median, so that slow drifts of a
//! noisy machine hit every condition alike. Times are the workload thread's
//! CPU time, so time it spends preempted by other processes is left out.
//! Rounds that ran while someone else's hook programs were loaded (another
//! observer, `xtask test`) are run again, or flagged when those programs
//! stay. Targets are reported as PASS/MISS with a bootstrap interval; a MISS
//! does not fail the command (benchmarks inform, they are not tests).

use std::{
    collections::{BTreeSet, HashSet},
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use aya::{Btf, Ebpf, EbpfLoader, programs::BtfTracePoint};

const USAGE: &str = "\
usage: cargo xtask bench [BENCH...] [--rounds N] [--cpu N | --no-pin]   (as root: sudo ./x bench)

BENCH (default: all)
  mutex    uncontended pthread mutex lock+unlock loop: throughput observed/unobserved >= 0.99
  wake     futex FUTEX_WAKE with no waiters: added cost vs a bare BPF program
  wait     futex FUTEX_WAIT returning EAGAIN at once: added cost vs a bare BPF program
  futex    wake and wait

options
  --rounds N       passes over the four conditions (default 6; 3 timed rounds per visit)
  --cpu N          pin the workload to CPU N (default: the last CPU)
  --no-pin         do not pin the workload
  --observer PATH  use this observer binary instead of building target/release/observer
  -h, --help       this text";

/// Timed rounds per condition visit (after one short warm-up round).
const ROUNDS_PER_VISIT: usize = 3;

/// How often a round disturbed by someone else's BPF programs is run again
/// before it is kept (and counted as contaminated).
const MAX_RETRIES: usize = 5;

/// How long to wait for someone else's BPF programs to go away.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

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
    cpu: Option<usize>,
    /// A prebuilt observer to use instead of building target/release/observer.
    observer: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut o = Opts {
        benches: Vec::new(),
        passes: 6,
        cpu: Some(cpus - 1),
        observer: None,
    };
    let mut it = args.iter();
    let number = |v: Option<&String>, what: &str| -> Result<usize> {
        v.and_then(|s| s.parse().ok())
            .with_context(|| format!("{what} needs a number\n\n{USAGE}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "mutex" => o.benches.push(Bench::Mutex),
            "wake" => o.benches.push(Bench::Wake),
            "wait" => o.benches.push(Bench::Wait),
            "futex" => o.benches.extend([Bench::Wake, Bench::Wait]),
            "--rounds" => o.passes = number(it.next(), "--rounds")?.max(1),
            "--cpu" => {
                let c = number(it.next(), "--cpu")?;
                if c >= cpus {
                    bail!("--cpu {c}: this machine has {cpus} CPUs");
                }
                o.cpu = Some(c);
            }
            "--no-pin" => o.cpu = None,
            "--observer" => {
                let p = it
                    .next()
                    .with_context(|| format!("--observer needs a path\n\n{USAGE}"))?;
                o.observer =
                    Some(std::fs::canonicalize(p).with_context(|| format!("--observer {p}"))?);
            }
            _ => bail!("unknown argument {a:?}\n\n{USAGE}"),
        }
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
    Ok(Some(o))
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(opts) = parse(args)? else {
        return Ok(());
    };
    if !crate::is_root() {
        bail!("the benchmarks load BPF programs: run `sudo ./x bench`");
    }
    let (observer, workload) = build(opts.observer.clone())?;
    let btf = Btf::from_sys_fs().context("reading kernel BTF")?;
    let env = Env {
        observer,
        workload,
        btf,
        cpu: opts.cpu,
    };

    let header = header(&opts);
    println!("{header}");
    let mut results = Vec::new();
    let mut seen = Seen::default();
    for &b in &opts.benches {
        let r = run_bench(&env, b, opts.passes, &mut seen)?;
        println!("{}", r.table());
        results.push(r);
    }

    let mut out = String::new();
    if let Some(h) = &seen.hooks {
        writeln!(out, "observer hooks: {h}").unwrap();
    }
    out.push_str(&summary(&results));
    println!("{out}");

    // Every program we loaded went with its owner (a dropped Ebpf, an
    // exited observer); make sure, as `xtask test` does. The kernel frees a
    // syscall-tracepoint program only after an RCU grace period, which can
    // take seconds after its link is gone: poll.
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let left: Vec<_> = hook_programs()
            .into_iter()
            .filter(|p| seen.ours.contains(&p.id))
            .map(|p| format!("{} ({})", p.name, p.id))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        thread::sleep(Duration::from_millis(100));
    };
    if !left.is_empty() {
        bail!(
            "BPF programs the bench loaded are still loaded: {}",
            left.join(", ")
        );
    }
    eprintln!("xtask: bench done; no BPF programs left loaded");
    Ok(())
}

/// Builds the release observer and the C workload; returns their paths.
fn build(observer: Option<PathBuf>) -> Result<(PathBuf, PathBuf)> {
    let observer = match observer {
        Some(p) => p,
        None => {
            crate::run({
                let mut c = crate::cargo();
                c.args(["build", "--release", "-p", "observer"]);
                c
            })?;
            crate::root().join("target/release/observer")
        }
    };
    let out = crate::root().join("target/bench");
    std::fs::create_dir_all(&out)?;
    let workload = out.join("workload");
    crate::run({
        let mut c = Command::new("gcc");
        c.args(["-O2", "-g", "-pthread", "-Wall", "-o"])
            .arg(&workload)
            .arg(crate::root().join("bench/workload.c"));
        c
    })?;
    Ok((observer, workload))
}

struct Env {
    observer: PathBuf,
    workload: PathBuf,
    btf: Btf,
    cpu: Option<usize>,
}

fn header(opts: &Opts) -> String {
    let sh = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU");
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let pin = opts
        .cpu
        .map_or("not pinned".to_string(), |c| format!("pinned to CPU {c}"));
    format!(
        "observer bench, {}\nkernel {}, {cpus} x {model}, load average {load}\n\
         workload {pin}; {} passes x {ROUNDS_PER_VISIT} rounds per condition, conditions in rotating order\n\
         times: median ns per op of thread CPU time (preemption not counted); wall: CLOCK_MONOTONIC\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh("uname", &["-r"]),
        opts.passes,
    )
}

// ---------------------------------------------------------------------------
// Running one bench

struct BenchResult {
    bench: Bench,
    /// Per-round thread CPU ns/op, by condition (index into Cond::ALL).
    samples: [Vec<f64>; 4],
    /// The same rounds' wall-clock ns/op, shown for comparison.
    wall: [Vec<f64>; 4],
    /// Rounds kept although programs not ours were loaded (after retries).
    contaminated: usize,
    /// Rounds run again because programs not ours were loaded.
    retried: usize,
    /// Names of those programs.
    foreign: BTreeSet<String>,
}

fn run_bench(env: &Env, bench: Bench, passes: usize, seen: &mut Seen) -> Result<BenchResult> {
    eprintln!("xtask: bench {} ({} passes)", bench.mode(), passes);
    let mut wl = Workload::spawn(&env.workload, bench.mode(), env.cpu)?;
    // The unwatched case's stand-in target: any process but the workload.
    let idle = Workload::spawn(&env.workload, "idle", None)?;
    let mut r = BenchResult {
        bench,
        samples: Default::default(),
        wall: Default::default(),
        contaminated: 0,
        retried: 0,
        foreign: BTreeSet::new(),
    };
    for pass in 0..passes {
        for k in 0..Cond::ALL.len() {
            let ci = (pass + k) % Cond::ALL.len();
            let cond = Cond::ALL[ci];
            let active = match cond {
                Cond::Unobserved => Active::None,
                Cond::Bare => Active::Bare(attach_bare(&env.btf)?),
                Cond::Watched => Active::Observer(Observer::start(&env.observer, wl.pid())?),
                Cond::Unwatched => Active::Observer(Observer::start(&env.observer, idle.pid())?),
            };
            let holder = match &active {
                Active::None => None,
                Active::Bare(_) => Some(std::process::id()),
                Active::Observer(o) => {
                    if seen.hooks.is_none() {
                        seen.hooks = o.hooks.clone();
                    }
                    Some(o.child.id())
                }
            };
            wl.round(bench.ops() / 4)?; // warm-up: caches, branch predictors, page faults
            for _ in 0..ROUNDS_PER_VISIT {
                // A round counts only if no one else's hook program was
                // loaded before or after it (another observer, `xtask
                // test`): their syscall hooks slow every condition and blur
                // the ratios. Programs that come and go are waited out and
                // the round is run again; programs that stay are not (the
                // rounds are kept and flagged).
                for attempt in 0.. {
                    let wait = if seen.persistent {
                        Duration::ZERO
                    } else {
                        SETTLE_TIMEOUT
                    };
                    let before = settle(holder, &mut seen.ours, wait);
                    seen.persistent = !before.is_empty();
                    let (cpu, wall) = wl.round(bench.ops())?;
                    let after = foreign_programs(holder, &mut seen.ours);
                    let clean = before.is_empty() && after.is_empty();
                    r.foreign
                        .extend(before.iter().chain(&after).map(|p| p.name.clone()));
                    if clean || seen.persistent || attempt == MAX_RETRIES {
                        r.contaminated += usize::from(!clean);
                        r.samples[ci].push(cpu);
                        r.wall[ci].push(wall);
                        break;
                    }
                    r.retried += 1;
                }
            }
            drop(active);
        }
        eprint!(".");
    }
    eprintln!();
    Ok(r)
}

/// What the bench saw of the observer and of the programs it loaded.
#[derive(Default)]
struct Seen {
    /// The observer's hook rungs, from its -v output.
    hooks: Option<String>,
    /// Ids of the programs we (or our observers) loaded.
    ours: HashSet<u32>,
    /// Someone else's hook programs stayed loaded the last time we waited.
    persistent: bool,
}

/// What is loaded during a visit; dropping it unloads it.
enum Active {
    None,
    #[allow(dead_code)] // held for its Drop: unloading the programs
    Bare(Ebpf),
    #[allow(dead_code)]
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

// ---------------------------------------------------------------------------
// Which programs are loaded (bpftool, /proc/PID/fdinfo)

/// Program types that can sit on a syscall hook (or slow a process down).
const HOOK_TYPES: &[&str] = &[
    "tracing",
    "raw_tracepoint",
    "tracepoint",
    "kprobe",
    "perf_event",
];

struct Prog {
    id: u32,
    name: String,
}

/// The loaded programs whose type can hook syscalls.
fn hook_programs() -> Vec<Prog> {
    let Ok(out) = Command::new("bpftool").args(["prog", "show"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "42: tracing  name bare_sys_enter  tag 0123...  gpl"
            let mut w = l.split_whitespace();
            let id = w.next()?.strip_suffix(':')?.parse().ok()?;
            let ty = w.next()?;
            if !HOOK_TYPES.contains(&ty) {
                return None;
            }
            let name = w.skip_while(|&x| x != "name").nth(1).unwrap_or("(unnamed)");
            Some(Prog {
                id,
                name: name.to_string(),
            })
        })
        .collect()
}

/// Ids of the BPF programs process `pid` holds open.
fn held_by(pid: u32) -> HashSet<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let info = std::fs::read_to_string(fd.path()).ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
        })
        .collect()
}

/// The loaded hook programs that do not belong to `holder` (all of them
/// for `None`); records the ones that do in `ours`.
fn foreign_programs(holder: Option<u32>, ours: &mut HashSet<u32>) -> Vec<Prog> {
    let held = holder.map(held_by).unwrap_or_default();
    let progs = hook_programs();
    ours.extend(progs.iter().map(|p| p.id).filter(|id| held.contains(id)));
    progs
        .into_iter()
        .filter(|p| !held.contains(&p.id))
        .collect()
}

/// Waits (up to `timeout`) until every loaded hook program belongs to
/// `holder`: the programs of an observer that just exited are freed only
/// after an RCU grace period, seconds later. Returns the foreign programs
/// still loaded at the deadline.
fn settle(holder: Option<u32>, ours: &mut HashSet<u32>, timeout: Duration) -> Vec<Prog> {
    let deadline = Instant::now() + timeout;
    loop {
        let foreign = foreign_programs(holder, ours);
        if foreign.is_empty() || Instant::now() > deadline {
            return foreign;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Child processes

/// The C workload, driven line by line over its stdin/stdout.
struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    fn spawn(bin: &Path, mode: &str, cpu: Option<usize>) -> Result<Workload> {
        let mut c = Command::new(bin);
        c.arg(mode).stdin(Stdio::piped()).stdout(Stdio::piped());
        if let Some(cpu) = cpu {
            c.arg(cpu.to_string());
        }
        let mut child = c
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut w = Workload {
            child,
            stdin,
            stdout,
        };
        let line = w.line()?;
        if line != "ready" {
            bail!("workload {mode}: expected \"ready\", got {line:?}");
        }
        Ok(w)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> Result<String> {
        let mut s = String::new();
        if self.stdout.read_line(&mut s)? == 0 {
            bail!("workload exited ({:?})", self.child.try_wait());
        }
        Ok(s.trim().to_string())
    }

    /// Runs `ops` operations; returns ns per op in thread CPU time and in
    /// wall-clock time.
    fn round(&mut self, ops: u64) -> Result<(f64, f64)> {
        let stdin = self.stdin.as_mut().expect("stdin open while running");
        writeln!(stdin, "{ops}")?;
        stdin.flush()?;
        let l = self.line()?;
        let mut it = l.split_whitespace().map(str::parse::<f64>);
        match (it.next(), it.next()) {
            (Some(Ok(cpu)), Some(Ok(wall))) => Ok((cpu, wall)),
            _ => bail!("workload printed {l:?}, expected \"CPU_NS WALL_NS\""),
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stdin = None; // end of input: the workload exits
        if !wait_timeout(&mut self.child, Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `observer -v attach -p PID --quiet`, running until dropped.
struct Observer {
    child: Child,
    /// "futex: tp_btf, task_newtask: tp_btf, ..." from its -v output.
    hooks: Option<String>,
    stderr: Option<thread::JoinHandle<Vec<String>>>,
}

impl Observer {
    fn start(bin: &Path, pid: u32) -> Result<Observer> {
        let mut c = Command::new(bin);
        c.args(["-v", "attach", "--quiet", "-p", &pid.to_string()])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // If xtask dies, the observer still detaches cleanly.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            c.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = c
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let err = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Keep draining stderr after startup so the observer never blocks on it.
        let reader = thread::spawn(move || {
            let mut kept = Vec::new();
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l.clone());
                kept.push(l);
            }
            kept
        });
        let mut o = Observer {
            child,
            hooks: None,
            stderr: Some(reader),
        };
        let mut hooks = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains("observing pid") => break,
                Ok(l) => {
                    if let Some(h) = l.strip_prefix("observer: hook ") {
                        // "futex: tp_btf (fentry failed: ...)": keep the rung
                        hooks.push(h.split(" (").next().unwrap_or(h).to_string());
                    }
                }
                Err(_) => {
                    let lines = o.stop();
                    bail!(
                        "observer did not start observing pid {pid}:\n{}",
                        lines.join("\n")
                    );
                }
            }
        }
        o.hooks = Some(hooks.join(", "));
        Ok(o)
    }

    /// SIGINT (the observer detaches and exits), then its stderr.
    fn stop(&mut self) -> Vec<String> {
        let pid = self.child.id() as libc::pid_t;
        if matches!(self.child.try_wait(), Ok(None)) {
            // SAFETY: our own child, not yet reaped, so the pid is not reused.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        if !wait_timeout(&mut self.child, Duration::from_secs(10)) {
            eprintln!("\nxtask: warning: observer {pid} ignored SIGINT; killing it");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let lines = self.stop();
        if let Ok(Some(st)) = self.child.try_wait()
            && !st.success()
        {
            eprintln!(
                "\nxtask: warning: observer exited with {st}:\n{}",
                lines.join("\n")
            );
        }
    }
}

/// Waits for `child` to exit; false if it is still running after `t`.
fn wait_timeout(child: &mut Child, t: Duration) -> bool {
    let deadline = Instant::now() + t;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() > deadline => return false,
            Ok(None) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

// ---------------------------------------------------------------------------
// Statistics and the table

fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    // linear interpolation between closest ranks
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// One checked target, for the table and the summary.
struct Check {
    what: String,
    value: f64,
    /// 90% bootstrap interval of `value` (rounds resampled per condition).
    lo: f64,
    hi: f64,
    target: &'static str,
    pass: bool,
    /// No round ran with someone else's hook programs loaded.
    reliable: bool,
}

impl Check {
    fn line(&self) -> String {
        format!(
            "  {:<40} {:>6.3} [{:.2} .. {:.2}]  target {:<7} {}{}",
            self.what,
            self.value,
            self.lo,
            self.hi,
            self.target,
            if self.pass { "PASS" } else { "MISS" },
            if self.reliable { "" } else { " (unreliable)" }
        )
    }
}

/// A target: the condition, its name, the target as text, and whether a
/// ratio meets it.
type Target = (Cond, &'static str, &'static str, fn(f64) -> bool);

/// The checked ratio for condition `c`, from the medians per condition.
fn ratio(bench: Bench, c: Cond, med: &[f64; 4]) -> f64 {
    let unobs = med[Cond::Unobserved as usize];
    match bench {
        // throughput ratio: the inverse of the time ratio
        Bench::Mutex => unobs / med[c as usize],
        Bench::Wake | Bench::Wait => (med[c as usize] - unobs) / (med[Cond::Bare as usize] - unobs),
    }
}

/// xorshift64*: enough randomness for a bootstrap, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

impl BenchResult {
    fn med(&self, c: Cond) -> f64 {
        median(&self.samples[c as usize])
    }

    fn medians(&self) -> [f64; 4] {
        Cond::ALL.map(|c| self.med(c))
    }

    /// 5th and 95th percentiles of `ratio` over bootstrap resamples.
    fn interval(&self, c: Cond) -> (f64, f64) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut buf = Vec::new();
        let stats: Vec<f64> = (0..1000)
            .map(|_| {
                let med = Cond::ALL.map(|k| {
                    let v = &self.samples[k as usize];
                    buf.clear();
                    buf.extend((0..v.len()).map(|_| v[rng.below(v.len())]));
                    median(&buf)
                });
                ratio(self.bench, c, &med)
            })
            .collect();
        (quantile(&stats, 0.05), quantile(&stats, 0.95))
    }

    fn checks(&self) -> Vec<Check> {
        let med = self.medians();
        let targets: &[Target] = match self.bench {
            Bench::Mutex => &[
                (Cond::Watched, "watched", ">= 0.99", |r| r >= 0.99),
                (Cond::Unwatched, "unwatched", ">= 0.99", |r| r >= 0.99),
            ],
            // A bare cost that is not positive (ratio NaN or negative) is noise: MISS.
            Bench::Wake | Bench::Wait => &[
                (Cond::Watched, "watched", "<= 1.5", |r| {
                    (0.0..=1.5).contains(&r)
                }),
                (Cond::Unwatched, "unwatched", "<= 1.2", |r| {
                    (0.0..=1.2).contains(&r)
                }),
            ],
        };
        targets
            .iter()
            .map(|&(c, name, target, ok)| {
                let value = ratio(self.bench, c, &med);
                let (lo, hi) = self.interval(c);
                let what = match self.bench {
                    Bench::Mutex => format!("mutex: throughput {name}/unobserved"),
                    b => format!("{}: added {name}/added bare", b.mode()),
                };
                Check {
                    what,
                    value,
                    lo,
                    hi,
                    target,
                    pass: ok(value),
                    reliable: self.contaminated == 0,
                }
            })
            .collect()
    }

    fn table(&self) -> String {
        let mut t = String::new();
        let unobs = self.med(Cond::Unobserved);
        writeln!(t, "{} x {} ops/round", self.bench.title(), self.bench.ops()).unwrap();
        writeln!(
            t,
            "  {:<36} {:>9} {:>19} {:>9} {:>7} {:>9}",
            "condition", "median", "p25 .. p75", "added", "rel", "wall"
        )
        .unwrap();
        for c in Cond::ALL {
            let v = &self.samples[c as usize];
            let m = median(v);
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
                quantile(v, 0.25),
                quantile(v, 0.75),
                added,
                rel,
                median(&self.wall[c as usize])
            )
            .unwrap();
        }
        for ch in self.checks() {
            writeln!(t, "{}", ch.line()).unwrap();
        }
        let names = || {
            self.foreign
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.retried > 0 {
            writeln!(
                t,
                "  note: {} rounds run again: BPF programs not ours came and went ({})",
                self.retried,
                names()
            )
            .unwrap();
        }
        if self.contaminated > 0 {
            let total: usize = self.samples.iter().map(Vec::len).sum();
            writeln!(
                t,
                "  WARNING: {} of {total} rounds ran while BPF programs not ours were loaded ({}):\n  \
                 their hooks slow every condition, so these numbers are unreliable",
                self.contaminated,
                names()
            )
            .unwrap();
        }
        t
    }
}

fn summary(results: &[BenchResult]) -> String {
    let mut s = String::from("summary\n");
    let mut misses = 0;
    for r in results {
        for ch in r.checks() {
            misses += usize::from(!ch.pass);
            writeln!(s, "{}", ch.line()).unwrap();
        }
    }
    let contaminated: usize = results.iter().map(|r| r.contaminated).sum();
    if contaminated > 0 {
        writeln!(
            s,
            "  WARNING: {contaminated} rounds ran while BPF programs not ours were loaded (see above)"
        )
        .unwrap();
    }
    if misses > 0 {
        writeln!(
            s,
            "  {misses} target(s) MISSED (reported, not a failure: see BENCHMARKS.md)"
        )
        .unwrap();
    } else {
        writeln!(s, "  all targets met").unwrap();
    }
    s
}
