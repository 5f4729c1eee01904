//! `cargo xtask bench deep`: the deep tier's per-call cost, stack unwinding
//! for `dump`, and the thread lifecycle cost.
//!
//! Three benchmarks, each printed as a table:
//!
//! - lockpair: uncontended pthread_mutex_lock + unlock pairs
//!   (bench/deep_lockpair.c) unobserved, under `observer attach` (default
//!   tier: no lock uprobes), under `attach --uprobes` and under
//!   `attach --uprobes-bare` (the same uprobes running do-nothing
//!   programs). Target: (uprobes - unobserved) / (bare - unobserved)
//!   <= 1.10, i.e. the deep tier's programs add at most 10% to the cost of
//!   the uprobe hits themselves; and default / unobserved stays at 1.
//! - stacks: `observer dump -p PID --format json` on a hung process of 64
//!   threads in one 64-long deadlock ring (bench/stacks_64.c), so that the
//!   one finding names every thread and every stack is unwound and
//!   symbolized; target <= 200 ms; compared with
//!   `gdb -batch -ex 'thread apply all bt' -p PID` on the same process.
//! - threads: pthread_create + pthread_join of 10 000 short threads one by
//!   one (bench/threads_createjoin.c) unobserved, under `observer attach`
//!   (thread uprobes on, the default) and `attach --no-thread-uprobes`.
//!   Target: observed / unobserved <= 1.10.
//!
//! Conditions are visited in a rotating order over several passes, each
//! visit on a fresh workload process, and each condition's rounds are
//! pooled into a median. Every observer is stopped (SIGINT) and waited for
//! before the next visit: an observer with many uprobes takes seconds to
//! exit (the kernel unregisters each uprobe after an RCU grace period).
//! Targets are reported as PASS/MISS; a MISS does not fail the command.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt::Write as _,
    io::{BufRead, BufReader, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask bench deep [lockpair|stacks|threads]... [options]   (as root: sudo ./x bench deep)

BENCH (default: all three)
  lockpair  uncontended pthread_mutex_lock+unlock pairs: per-pair cost unobserved, under
            `observer attach` (default), `--uprobes` and `--uprobes-bare`;
            target (uprobes - unobserved) / (bare - unobserved) <= 1.10
  stacks    `observer dump --format json` on a 64-thread deadlock ring (all 64 stacks unwound
            and symbolized): target <= 200 ms, and gdb 'thread apply all bt' on the same process
  threads   pthread_create+join of 10000 short threads: observed / unobserved <= 1.10, with
            thread uprobes (the default) and with --no-thread-uprobes

options
  --rounds N        passes over the conditions (default 5; each visit times 3 rounds)
  --pairs N         lock/unlock pairs per lockpair round (default 20000)
  --long-pairs N    pairs per round of the default-vs-unobserved comparison (default 2000000)
  --create N        threads per threads round (default 10000)
  --ring N          threads of the stacks target (default 64)
  --dump-reps N     timed `observer dump` runs (default 7)
  --gdb-reps N      timed gdb runs (default 3; 0 skips gdb)
  --cpu N           pin the workloads to CPU N (default: the last CPU)
  --no-pin          do not pin the workloads
  --observer PATH   use this observer binary instead of building target/release/observer
  -h, --help        this text";

const LOCKPAIR_TARGET: f64 = 1.10;
/// Default tier vs unobserved on the lock loop: "as cheap as unobserved"
/// (the `mutex` bench asks throughput >= 0.99 of unobserved).
const DEFAULT_TARGET: f64 = 1.01;
const STACKS_TARGET_MS: f64 = 200.0;
const THREADS_TARGET: f64 = 1.10;

/// Timed rounds per condition visit (after one warm-up round).
const ROUNDS_PER_VISIT: usize = 3;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);
const ROUND_TIMEOUT: Duration = Duration::from_secs(600);
/// Unregistering ~50 uprobes takes ~10 s here; leave a wide margin.
const STOP_TIMEOUT: Duration = Duration::from_secs(300);
const DUMP_TIMEOUT: Duration = Duration::from_secs(60);
const GDB_TIMEOUT: Duration = Duration::from_secs(600);
/// How long to wait for someone else's hook programs to go away before a
/// round (they come and go with other people's tests on a shared machine).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

struct Opts {
    lockpair: bool,
    stacks: bool,
    threads: bool,
    passes: usize,
    pairs: u64,
    long_pairs: u64,
    create: u64,
    ring: usize,
    dump_reps: usize,
    gdb_reps: usize,
    cpu: Option<usize>,
    observer: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut o = Opts {
        lockpair: false,
        stacks: false,
        threads: false,
        passes: 5,
        pairs: 20_000,
        long_pairs: 2_000_000,
        create: 10_000,
        ring: 64,
        dump_reps: 7,
        gdb_reps: 3,
        cpu: Some(cpus - 1),
        observer: None,
    };
    let mut it = args.iter();
    fn number(v: Option<&String>, what: &str) -> Result<u64> {
        v.and_then(|s| s.replace('_', "").parse().ok())
            .with_context(|| format!("{what} needs a number (see --help)"))
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "lockpair" => o.lockpair = true,
            "stacks" => o.stacks = true,
            "threads" => o.threads = true,
            "--rounds" => o.passes = number(it.next(), "--rounds")?.max(1) as usize,
            "--pairs" => o.pairs = number(it.next(), "--pairs")?.max(1),
            "--long-pairs" => o.long_pairs = number(it.next(), "--long-pairs")?.max(1),
            "--create" => o.create = number(it.next(), "--create")?.max(1),
            "--ring" => o.ring = (number(it.next(), "--ring")? as usize).clamp(2, 1024),
            "--dump-reps" => o.dump_reps = number(it.next(), "--dump-reps")?.max(1) as usize,
            "--gdb-reps" => o.gdb_reps = number(it.next(), "--gdb-reps")? as usize,
            "--cpu" => {
                let c = number(it.next(), "--cpu")? as usize;
                if c >= cpus {
                    bail!("--cpu {c}: this machine has {cpus} CPUs");
                }
                o.cpu = Some(c);
            }
            "--no-pin" => o.cpu = None,
            "--observer" => {
                let p = it.next().context("--observer needs a path")?;
                o.observer = Some(
                    std::fs::canonicalize(p).map_err(|e| anyhow::anyhow!("--observer {p}: {e}"))?,
                );
            }
            _ => bail!("unknown argument {a:?} (see cargo xtask bench deep --help)"),
        }
    }
    if !o.lockpair && !o.stacks && !o.threads {
        o.lockpair = true;
        o.stacks = true;
        o.threads = true;
    }
    Ok(Some(o))
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(opts) = parse(args)? else {
        return Ok(());
    };
    if !crate::is_root() {
        bail!(
            "the deep benchmarks load BPF programs and read other processes: run `sudo ./x bench deep`"
        );
    }
    let observer = match &opts.observer {
        Some(p) => p.clone(),
        None => {
            crate::run({
                let mut c = crate::cargo();
                c.args(["build", "--release", "-p", "observer"]);
                c
            })
            .map_err(|e| anyhow::anyhow!("building the observer: {e}"))?;
            crate::root().join("target/release/observer")
        }
    };
    if !observer.is_file() {
        bail!("observer binary not found at {}", observer.display());
    }
    let out = crate::root().join("target/bench-deep");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut env = Env {
        observer,
        out: out.clone(),
        cpu: opts.cpu,
        spawned: Vec::new(),
        ours: HashSet::new(),
    };
    println!("{}", header(&opts));
    if opts.lockpair {
        let bin = compile(&out, "bench/deep_lockpair.c", "deep_lockpair")?;
        let r = lockpair(&mut env, &bin, &opts)?;
        println!("{}", lockpair_table(&r, &opts));
    }
    if opts.stacks {
        let bin = compile(&out, "bench/stacks_64.c", "stacks_64")?;
        let r = stacks(&mut env, &bin, &opts)?;
        println!("{}", stacks_table(&r, &opts));
    }
    if opts.threads {
        let bin = compile(&out, "bench/threads_createjoin.c", "threads_createjoin")?;
        let r = threads(&mut env, &bin, &opts)?;
        println!("{}", threads_table(&r, &opts));
    }
    println!("{}", leftovers(&env));
    Ok(())
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
        .unwrap_or("unknown CPU")
        .to_string();
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "observer deep-tier, stacks and thread lifecycle benchmarks\n\
         date {}, kernel {}, {cpus} CPUs ({model}), load {}\n\
         workloads pinned to {}; {} passes over the conditions, {ROUNDS_PER_VISIT} timed rounds per visit\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh("uname", &["-r"]),
        load.join(" "),
        opts.cpu
            .map(|c| format!("CPU {c}"))
            .unwrap_or_else(|| "no CPU".into()),
        opts.passes,
    )
}

fn compile(out: &Path, src: &str, name: &str) -> Result<PathBuf> {
    let bin = out.join(name);
    let st = Command::new("gcc")
        .args(["-O2", "-g", "-pthread", "-o"])
        .arg(&bin)
        .arg(crate::root().join(src))
        .status()
        .map_err(|e| anyhow::anyhow!("running gcc: {e}"))?;
    if !st.success() {
        bail!("gcc could not build {src} ({st})");
    }
    Ok(bin)
}

/// What the benchmarks share: paths, pinning, and what they started.
struct Env {
    observer: PathBuf,
    out: PathBuf,
    cpu: Option<usize>,
    /// Every observer this run started (for the final leftover check).
    spawned: Vec<u32>,
    /// Ids of the BPF programs our observers held.
    ours: HashSet<u32>,
}

// ---------------------------------------------------------------------------
// Processes

/// A C workload driven line by line over stdin/stdout; SIGKILLed and
/// reaped when dropped, whatever happened.
struct Workload {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    pid: u32,
    name: String,
}

impl Workload {
    /// Starts `bin args` and waits for its "ready PID ..." line.
    fn start(bin: &Path, args: &[String]) -> Result<Workload> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut w = Workload {
            pid: child.id(),
            child: Some(child),
            stdin,
            lines: rx,
            name: bin
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
        };
        let line = w.line(READY_TIMEOUT).context("waiting for `ready`")?;
        if !line.starts_with("ready") {
            bail!("{} printed {line:?} instead of `ready`", w.name);
        }
        Ok(w)
    }

    fn line(&mut self, timeout: Duration) -> Result<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{} did not answer within {timeout:?}", self.name)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("{} exited", self.name),
        }
    }

    /// Sends "N", returns the numbers of the answer line.
    fn round(&mut self, n: u64) -> Result<Vec<f64>> {
        let stdin = self.stdin.as_mut().context("workload stdin closed")?;
        writeln!(stdin, "{n}")
            .and_then(|_| stdin.flush())
            .context("writing to the workload")?;
        let l = self.line(ROUND_TIMEOUT)?;
        l.split_whitespace()
            .map(|x| {
                x.parse::<f64>()
                    .with_context(|| format!("bad answer {l:?} from {}", self.name))
            })
            .collect()
    }

    /// End of input: the workload exits 0.
    fn finish(mut self) -> Result<()> {
        self.stdin = None;
        let mut c = self.child.take().unwrap();
        let st = wait_timeout(&mut c, Duration::from_secs(30));
        match st {
            Some(st) if st.success() => Ok(()),
            Some(st) => bail!("{} ended with {}", self.name, describe(&st)),
            None => {
                let _ = c.kill();
                let _ = c.wait();
                bail!("{} did not exit at end of input", self.name)
            }
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits for `child` up to `t`; its status, or None if it still runs.
fn wait_timeout(child: &mut Child, t: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + t;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

fn describe(st: &ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{st}"),
    }
}

/// `observer -v attach -p PID --quiet [EXTRA]`, until stopped or dropped.
struct Observer {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    /// Its stderr so far (the -v lines).
    log: Vec<String>,
    pid: u32,
}

struct Stopped {
    /// SIGINT -> exit.
    took: Duration,
    status: Option<ExitStatus>,
}

impl Observer {
    /// Starts it and waits until it prints `observing pid` (every probe,
    /// uprobes included, is attached before that line).
    fn start(
        env: &mut Env,
        target: u32,
        extra: &[&str],
        report: Option<&Path>,
    ) -> Result<(Observer, Duration)> {
        let mut c = Command::new(&env.observer);
        c.args(["-v", "attach", "--quiet", "-p", &target.to_string()])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(r) = report {
            let _ = std::fs::remove_file(r);
            c.arg("--report").arg(r);
        }
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
        let t0 = Instant::now();
        let mut child = c
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {}: {e}", env.observer.display()))?;
        env.spawned.push(child.id());
        let err = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Keeps draining stderr so that the observer never blocks on it.
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut o = Observer {
            pid: child.id(),
            child: Some(child),
            lines: rx,
            log: Vec::new(),
        };
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match o.lines.recv_timeout(left) {
                Ok(l) => {
                    let done = l.contains("observing pid");
                    o.log.push(l);
                    if done {
                        break;
                    }
                }
                Err(_) => {
                    let _ = o.stop();
                    bail!(
                        "observer {} did not start observing pid {target}:\n{}",
                        extra.join(" "),
                        o.log.join("\n")
                    );
                }
            }
        }
        let attach = t0.elapsed();
        // Remember its programs: they are ours after it exits too.
        env.ours.extend(held_by(o.pid));
        Ok((o, attach))
    }

    /// The uprobe functions it reported attaching (from -v), by kind.
    fn uprobes(&self, kind: &str) -> Vec<String> {
        let key = format!("{kind} uprobes on ");
        self.log
            .iter()
            .filter_map(|l| l.split_once(&key).map(|(_, r)| r))
            .filter_map(|r| r.split_once(": ").map(|(_, f)| f))
            .flat_map(|f| f.split(", ").map(str::to_string))
            .collect()
    }

    /// SIGINT, then waits for it to exit (seconds with many uprobes).
    fn stop(&mut self) -> Stopped {
        let Some(mut c) = self.child.take() else {
            return Stopped {
                took: Duration::ZERO,
                status: None,
            };
        };
        let t0 = Instant::now();
        if matches!(c.try_wait(), Ok(None)) {
            // SAFETY: our own child, not yet reaped, so the pid is not reused.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGINT) };
        }
        let status = wait_timeout(&mut c, STOP_TIMEOUT);
        let took = t0.elapsed();
        if status.is_none() {
            eprintln!(
                "\nbench deep: observer {} ignored SIGINT for {STOP_TIMEOUT:?}; killing it",
                self.pid
            );
            let _ = c.kill();
            let _ = c.wait();
        }
        while let Ok(l) = self.lines.try_recv() {
            self.log.push(l);
        }
        Stopped { took, status }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

// ---------------------------------------------------------------------------
// Other people's hook programs (a shared machine)

/// Program types that can slow a process down from the kernel.
const HOOK_TYPES: &[&str] = &[
    "tracing",
    "raw_tracepoint",
    "tracepoint",
    "kprobe",
    "perf_event",
];

/// (id, name) of the loaded programs whose type can hook a process.
fn hook_programs() -> Vec<(u32, String)> {
    let Ok(out) = Command::new("bpftool").args(["prog", "show"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "42: tracing  name btf_sys_enter  tag 0123...  gpl"
            let mut w = l.split_whitespace();
            let id = w.next()?.strip_suffix(':')?.parse().ok()?;
            let ty = w.next()?;
            if !HOOK_TYPES.contains(&ty) {
                return None;
            }
            let name = w.skip_while(|&x| x != "name").nth(1).unwrap_or("(unnamed)");
            Some((id, name.to_string()))
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

/// Hook programs loaded that are neither the current observer's nor ones
/// an observer of ours held (freed seconds after it exits).
fn foreign(env: &mut Env, current: Option<u32>) -> Vec<String> {
    if let Some(p) = current {
        env.ours.extend(held_by(p));
    }
    hook_programs()
        .into_iter()
        .filter(|(id, _)| !env.ours.contains(id))
        .map(|(_, n)| n)
        .collect()
}

/// Per condition: rounds run while someone else's hook programs were loaded.
#[derive(Default)]
struct Contamination {
    /// Timed rounds, and those run with foreign hook programs loaded.
    total: usize,
    rounds: usize,
    names: BTreeSet<String>,
}

impl Contamination {
    /// "note: LABEL: 3 of 15 rounds ran while ..." or nothing.
    fn note(&self, label: &str) -> Option<String> {
        if self.rounds == 0 {
            return None;
        }
        let mut names: Vec<&str> = self.names.iter().map(String::as_str).take(6).collect();
        if self.names.len() > names.len() {
            names.push("...");
        }
        Some(format!(
            "  note: {label}: {} of {} rounds ran while someone else's hook programs were loaded ({})",
            self.rounds,
            self.total,
            names.join(", ")
        ))
    }
}

/// Runs one timed round, noting foreign hook programs present before or
/// after it (waiting up to SETTLE_TIMEOUT for them to go away first).
fn clean_round(
    env: &mut Env,
    current: Option<u32>,
    wl: &mut Workload,
    n: u64,
    c: &mut Contamination,
) -> Result<Vec<f64>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut before = foreign(env, current);
    while !before.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        before = foreign(env, current);
    }
    let v = wl.round(n)?;
    let after = foreign(env, current);
    c.total += 1;
    if !before.is_empty() || !after.is_empty() {
        c.rounds += 1;
        c.names.extend(before.into_iter().chain(after));
    }
    Ok(v)
}

// ---------------------------------------------------------------------------
// Statistics and formatting

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

/// A duration in ns, in the unit that reads best.
fn ns(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 1e9 {
        format!("{:.2} s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1} ms", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} us", v / 1e3)
    } else if v >= 1e3 {
        format!("{:.2} us", v / 1e3)
    } else {
        format!("{v:.1} ns")
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "-".into()
    }
}

/// Visit order of pass `p` over `n` conditions: rotated, so that every
/// condition is first, second, ... equally often.
fn order(p: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (p + k) % n)
}

// ---------------------------------------------------------------------------
// lockpair

#[derive(Clone, Copy, PartialEq, Eq)]
enum LockCond {
    Unobserved,
    Default,
    Uprobes,
    Bare,
}

impl LockCond {
    const ALL: [LockCond; 4] = [
        LockCond::Unobserved,
        LockCond::Default,
        LockCond::Uprobes,
        LockCond::Bare,
    ];

    fn label(self) -> &'static str {
        match self {
            LockCond::Unobserved => "unobserved",
            LockCond::Default => "observer attach (default: no lock uprobes)",
            LockCond::Uprobes => "observer attach --uprobes",
            LockCond::Bare => "observer attach --uprobes-bare",
        }
    }

    fn args(self) -> Option<&'static [&'static str]> {
        match self {
            LockCond::Unobserved => None,
            LockCond::Default => Some(&[]),
            LockCond::Uprobes => Some(&["--uprobes"]),
            LockCond::Bare => Some(&["--uprobes-bare"]),
        }
    }
}

#[derive(Default)]
struct LockRow {
    /// ns per pair, thread CPU time and wall, `pairs`-long rounds.
    cpu: Vec<f64>,
    wall: Vec<f64>,
    /// The same from `long_pairs`-long rounds (unobserved and default only).
    long_cpu: Vec<f64>,
    long_wall: Vec<f64>,
    attach: Vec<f64>,
    stop: Vec<f64>,
    /// Uprobed functions (from the observer's -v lines).
    lock_uprobes: usize,
    thread_uprobes: usize,
    contamination: Contamination,
}

struct LockResult {
    rows: Vec<LockRow>,
    /// Per --uprobes visit: the hot lock's acquisitions in the report vs
    /// the pairs run.
    counted: Vec<(u64, u64)>,
    problems: Vec<String>,
}

fn pin_arg(env: &Env) -> Vec<String> {
    env.cpu.map(|c| vec![c.to_string()]).unwrap_or_default()
}

fn lockpair(env: &mut Env, bin: &Path, opts: &Opts) -> Result<LockResult> {
    let mut r = LockResult {
        rows: LockCond::ALL.iter().map(|_| LockRow::default()).collect(),
        counted: Vec::new(),
        problems: Vec::new(),
    };
    let report = env.out.join("lockpair-report.json");
    eprintln!(
        "bench deep: lockpair, {} passes x 4 conditions (an observer with lock uprobes takes ~10 s to exit) ",
        opts.passes
    );
    for p in 0..opts.passes {
        for ci in order(p, LockCond::ALL.len()) {
            let cond = LockCond::ALL[ci];
            let mut wl = Workload::start(bin, &pin_arg(env))?;
            let mut obs = None;
            if let Some(extra) = cond.args() {
                let rep = (cond == LockCond::Uprobes).then_some(report.as_path());
                let (o, attach) = Observer::start(env, wl.pid, extra, rep)?;
                let row = &mut r.rows[ci];
                row.attach.push(attach.as_secs_f64() * 1e9);
                row.lock_uprobes = o.uprobes("lock").len();
                row.thread_uprobes = o.uprobes("thread").len();
                obs = Some(o);
            }
            let current = obs.as_ref().map(|o| o.pid);
            let mut pairs_run = 0;
            wl.round(opts.pairs)?; // warm-up: caches, page faults, the uprobes' XOL slots
            pairs_run += opts.pairs;
            for _ in 0..ROUNDS_PER_VISIT {
                let v = clean_round(
                    env,
                    current,
                    &mut wl,
                    opts.pairs,
                    &mut r.rows[ci].contamination,
                )?;
                pairs_run += opts.pairs;
                r.rows[ci].cpu.push(v[0]);
                r.rows[ci].wall.push(v[1]);
            }
            if matches!(cond, LockCond::Unobserved | LockCond::Default) {
                for _ in 0..ROUNDS_PER_VISIT {
                    let v = clean_round(
                        env,
                        current,
                        &mut wl,
                        opts.long_pairs,
                        &mut r.rows[ci].contamination,
                    )?;
                    r.rows[ci].long_cpu.push(v[0]);
                    r.rows[ci].long_wall.push(v[1]);
                }
            }
            if let Some(mut o) = obs.take() {
                let s = o.stop();
                r.rows[ci].stop.push(s.took.as_secs_f64() * 1e9);
                match s.status {
                    Some(st) if st.success() => {}
                    Some(st) => r.problems.push(format!(
                        "{}: observer ended with {}",
                        cond.label(),
                        describe(&st)
                    )),
                    None => r.problems.push(format!(
                        "{}: observer did not exit within {STOP_TIMEOUT:?}",
                        cond.label()
                    )),
                }
                if cond == LockCond::Uprobes {
                    match hot_lock_acquired(&report) {
                        Ok(n) => r.counted.push((n, pairs_run)),
                        Err(e) => r.problems.push(format!("--uprobes report: {e:#}")),
                    }
                }
            }
            wl.finish()?;
            eprint!(".");
        }
    }
    eprintln!();
    Ok(r)
}

/// `acquired` of the lock named hot_lock in an observer.report/1.
fn hot_lock_acquired(report: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(report).context("reading the report")?;
    let v = json::parse(&text).context("parsing the report")?;
    let locks = v
        .get("locks")
        .and_then(|l| l.as_array())
        .context("no locks array")?;
    locks
        .iter()
        .find(|l| l.get("symbol").and_then(|s| s.as_str()) == Some("hot_lock"))
        .and_then(|l| l.get("acquired"))
        .and_then(|a| a.as_u64())
        .context("no entry for hot_lock in the report's locks")
}

fn lockpair_table(r: &LockResult, opts: &Opts) -> String {
    let mut s = String::new();
    let row = |c: LockCond| &r.rows[c as usize];
    writeln!(
        s,
        "Deep tier: uncontended pthread_mutex_lock+unlock pair (bench/deep_lockpair.c)\n\
         {} pairs per round, {} rounds per condition (medians; thread CPU time, wall clock alongside)",
        opts.pairs,
        opts.passes * ROUNDS_PER_VISIT
    )
    .unwrap();
    writeln!(
        s,
        "  {:<44} {:>12} {:>10} {:>10} {:>12} {:>9} {:>9}",
        "condition", "CPU/pair", "min", "max", "wall/pair", "attach", "stop"
    )
    .unwrap();
    for c in LockCond::ALL {
        let x = row(c);
        writeln!(
            s,
            "  {:<44} {:>12} {:>10} {:>10} {:>12} {:>9} {:>9}",
            c.label(),
            ns(median(&x.cpu)),
            ns(min(&x.cpu)),
            ns(max(&x.cpu)),
            ns(median(&x.wall)),
            ns(median(&x.attach)),
            ns(median(&x.stop)),
        )
        .unwrap();
    }
    let un = median(&row(LockCond::Unobserved).cpu);
    let up = median(&row(LockCond::Uprobes).cpu);
    let bare = median(&row(LockCond::Bare).cpu);
    let deep = (up - un) / (bare - un);
    let (lu, tu) = (
        row(LockCond::Uprobes).lock_uprobes,
        row(LockCond::Uprobes).thread_uprobes,
    );
    writeln!(
        s,
        "  uprobed functions: {lu} lock + {tu} thread (a pair hits 3 uprobes: lock entry, lock return, unlock entry)"
    )
    .unwrap();
    writeln!(
        s,
        "  added per pair: --uprobes {} , --uprobes-bare {} , programs' own share {} ({} per hit)",
        ns(up - un),
        ns(bare - un),
        ns(up - bare),
        ns((up - bare) / 3.0)
    )
    .unwrap();
    writeln!(
        s,
        "  (uprobes - unobserved) / (bare - unobserved) = {}: target <= {LOCKPAIR_TARGET:.2} {}",
        ratio(deep),
        verdict(deep <= LOCKPAIR_TARGET)
    )
    .unwrap();
    let dl = median(&row(LockCond::Default).long_cpu);
    let ul = median(&row(LockCond::Unobserved).long_cpu);
    let d_short = median(&row(LockCond::Default).cpu) / un;
    writeln!(
        s,
        "  default / unobserved: {} ({} vs {} per pair, {} pairs x {} rounds each; {} on the {}-pair rounds): target <= {DEFAULT_TARGET:.2} {}",
        ratio(dl / ul),
        ns(dl),
        ns(ul),
        opts.long_pairs,
        row(LockCond::Default).long_cpu.len(),
        ratio(d_short),
        opts.pairs,
        verdict(dl / ul <= DEFAULT_TARGET)
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
    for c in LockCond::ALL {
        if let Some(n) = row(c).contamination.note(c.label()) {
            writeln!(s, "{n}").unwrap();
        }
    }
    for p in &r.problems {
        writeln!(s, "  PROBLEM: {p}").unwrap();
    }
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

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// Waits until the process has `n` threads, all asleep in futex(2).
fn wait_all_in_futex(pid: u32, n: usize) -> Result<Vec<u64>> {
    // x86_64 futex; aarch64 is 98.
    let futex_nr = if cfg!(target_arch = "aarch64") {
        "98"
    } else {
        "202"
    };
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
                if sc.split_whitespace().next() == Some(futex_nr) {
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

/// Runs `c` to completion (stdout captured, stderr discarded), timing its
/// wall clock from spawn to reap; SIGKILLs it after `timeout`.
fn run_timed(mut c: Command, timeout: Duration) -> Result<Option<(f64, ExitStatus, Vec<u8>)>> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let shown = format!("{c:?}");
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let child = c
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {shown}: {e}"))?;
    let pid = child.id();
    thread::spawn(move || {
        let r = child.wait_with_output();
        let _ = tx.send(r.map(|o| (t0.elapsed(), o)));
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => {
            let (el, o) = r.map_err(|e| anyhow::anyhow!("waiting for {shown}: {e}"))?;
            Ok(Some((el.as_secs_f64() * 1e3, o.status, o.stdout)))
        }
        Err(_) => {
            // Still ours: the waiting thread has not reaped it.
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv();
            Ok(None)
        }
    }
}

/// The dump names every thread in one deadlock finding, each with frames.
/// Returns (min frames, max frames, share of frames with a function name).
fn check_dump(out: &[u8], tids: &[u64]) -> Result<(usize, usize, f64)> {
    let text = std::str::from_utf8(out).context("not UTF-8")?;
    let d = json::parse(text).context("not JSON")?;
    let findings = d
        .get("findings")
        .and_then(|f| f.as_array())
        .context("no findings array")?;
    let want: BTreeSet<u64> = tids.iter().copied().collect();
    let f = findings
        .iter()
        .find(|f| f.get("kind").and_then(|k| k.as_str()) == Some("deadlock"))
        .context("no deadlock finding")?;
    let threads = f
        .get("threads")
        .and_then(|t| t.as_array())
        .context("finding without threads")?;
    let got: BTreeSet<u64> = threads
        .iter()
        .filter_map(|t| t.get("tid").and_then(|x| x.as_u64()))
        .collect();
    if got != want {
        bail!(
            "the deadlock finding names {} threads, not the {} of the process",
            got.len(),
            want.len()
        );
    }
    let (mut lo, mut hi, mut total, mut named) = (usize::MAX, 0, 0usize, 0usize);
    for t in threads {
        let fr = t.get("frames").and_then(|x| x.as_array()).unwrap_or(&[]);
        if fr.is_empty() {
            bail!(
                "thread {} has no frames",
                t.get("tid").and_then(|x| x.as_u64()).unwrap_or(0)
            );
        }
        lo = lo.min(fr.len());
        hi = hi.max(fr.len());
        total += fr.len();
        named += fr
            .iter()
            .filter(|x| x.get("function").and_then(|f| f.as_str()).is_some())
            .count();
    }
    Ok((lo, hi, named as f64 / total.max(1) as f64))
}

fn stacks(env: &mut Env, bin: &Path, opts: &Opts) -> Result<StacksResult> {
    eprintln!(
        "bench deep: stacks, a {}-thread deadlock ring ...",
        opts.ring
    );
    let wl = Workload::start(bin, &[opts.ring.to_string()])?;
    let pid = wl.pid;
    let tids = wait_all_in_futex(pid, opts.ring)?;
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
    let gdb = which("gdb");
    if gdb.is_none() && opts.gdb_reps > 0 {
        r.gdb_note = Some("gdb not found: not measured".into());
    }
    let one_dump = |r: &mut StacksResult| -> Result<Option<f64>> {
        let mut c = Command::new(&env.observer);
        c.args(["dump", "-p", &pid.to_string(), "--format", "json"]);
        let Some((ms, st, out)) = run_timed(c, DUMP_TIMEOUT)? else {
            r.problems
                .push(format!("observer dump timed out after {DUMP_TIMEOUT:?}"));
            return Ok(None);
        };
        if st.code() != Some(3) {
            r.problems.push(format!(
                "observer dump ended with {} (3 expected)",
                describe(&st)
            ));
        }
        match check_dump(&out, &tids) {
            Ok(f) => r.frames = Some(f),
            Err(e) => r
                .problems
                .push(format!("observer dump --format json: {e:#}")),
        }
        Ok(Some(ms))
    };
    r.first = one_dump(&mut r)?.unwrap_or(f64::NAN);
    // Interleaved: dump, gdb, dump, gdb, ..., then the remaining dumps.
    for i in 0..opts.dump_reps.max(opts.gdb_reps) {
        if i < opts.dump_reps
            && let Some(ms) = one_dump(&mut r)?
        {
            r.dump.push(ms);
        }
        if i < opts.gdb_reps
            && let Some(g) = &gdb
        {
            eprintln!("bench deep: gdb run {} of {} ...", i + 1, opts.gdb_reps);
            let mut c = Command::new(g);
            // No ~/.gdbinit, no debuginfod downloads: a local, repeatable baseline.
            c.args([
                "-nx",
                "-batch",
                "-iex",
                "set debuginfod enabled off",
                "-ex",
                "thread apply all bt",
                "-p",
                &pid.to_string(),
            ]);
            match run_timed(c, GDB_TIMEOUT)? {
                None => r.gdb_note = Some(format!("gdb timed out after {GDB_TIMEOUT:?}")),
                Some((ms, st, out)) => {
                    if !st.success() {
                        r.gdb_note = Some(format!("gdb ended with {}", describe(&st)));
                    }
                    let text = String::from_utf8_lossy(&out);
                    let threads = text.lines().filter(|l| l.starts_with("Thread ")).count();
                    let frames = text.lines().filter(|l| l.starts_with('#')).count();
                    r.gdb_threads = Some((threads, frames));
                    r.gdb.push(ms);
                }
            }
        }
    }
    // gdb stopped and resumed every thread: the ring must still be intact.
    if let Err(e) = wait_all_in_futex(pid, opts.ring) {
        r.problems.push(format!("after the runs: {e:#}"));
    }
    drop(wl); // SIGKILL
    Ok(r)
}

fn stacks_table(r: &StacksResult, opts: &Opts) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "Stacks: observer dump of a hung process, {} threads in one deadlock ring (bench/stacks_64.c)\n\
         every thread is named by the finding, so every stack is unwound and symbolized; wall clock per call",
        r.threads
    )
    .unwrap();
    writeln!(
        s,
        "  {:<50} {:>5} {:>9} {:>9} {:>9}",
        "command", "runs", "median", "min", "max"
    )
    .unwrap();
    let ms = |v: f64| ns(v * 1e6);
    for (label, v) in [
        ("observer dump -p PID --format json", &r.dump),
        ("gdb -batch -ex 'thread apply all bt' -p PID", &r.gdb),
    ] {
        writeln!(
            s,
            "  {:<50} {:>5} {:>9} {:>9} {:>9}",
            label,
            v.len(),
            ms(median(v)),
            ms(min(v)),
            ms(max(v))
        )
        .unwrap();
    }
    writeln!(
        s,
        "  first observer dump (not in the median): {}",
        ms(r.first)
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
            opts.ring
        )
        .unwrap();
    } else {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &r.problems {
            *seen.entry(p.as_str()).or_default() += 1;
        }
        for (p, n) in seen {
            writeln!(s, "  WRONG ANSWER ({n} run(s)): {p}").unwrap();
        }
    }
    let obs = median(&r.dump);
    let gdb = median(&r.gdb);
    writeln!(
        s,
        "  observer dump median {}: target <= {STACKS_TARGET_MS:.0} ms {}; gdb / observer = {}",
        ms(obs),
        verdict(obs <= STACKS_TARGET_MS),
        if gdb.is_nan() {
            "-".to_string()
        } else {
            format!("{:.1}x", gdb / obs)
        }
    )
    .unwrap();
    s
}

// ---------------------------------------------------------------------------
// threads

#[derive(Clone, Copy, PartialEq, Eq)]
enum ThreadCond {
    Unobserved,
    Default,
    NoThreadUprobes,
}

impl ThreadCond {
    const ALL: [ThreadCond; 3] = [
        ThreadCond::Unobserved,
        ThreadCond::Default,
        ThreadCond::NoThreadUprobes,
    ];

    fn label(self) -> &'static str {
        match self {
            ThreadCond::Unobserved => "unobserved",
            ThreadCond::Default => "observer attach (default: no uprobes)",
            ThreadCond::NoThreadUprobes => "observer attach --thread-uprobes",
        }
    }

    fn args(self) -> Option<&'static [&'static str]> {
        match self {
            ThreadCond::Unobserved => None,
            ThreadCond::Default => Some(&[]),
            ThreadCond::NoThreadUprobes => Some(&["--thread-uprobes"]),
        }
    }
}

#[derive(Default)]
struct ThreadRow {
    /// ns per round (wall, process CPU).
    wall: Vec<f64>,
    cpu: Vec<f64>,
    stop: Vec<f64>,
    /// (threads the report saw created, threads created while observed)
    seen: Vec<(u64, u64)>,
    drops: Vec<u64>,
    contamination: Contamination,
}

struct ThreadResult {
    rows: Vec<ThreadRow>,
    problems: Vec<String>,
}

fn threads(env: &mut Env, bin: &Path, opts: &Opts) -> Result<ThreadResult> {
    let mut r = ThreadResult {
        rows: ThreadCond::ALL
            .iter()
            .map(|_| ThreadRow::default())
            .collect(),
        problems: Vec::new(),
    };
    let report = env.out.join("threads-report.json");
    eprintln!(
        "bench deep: threads, {} passes x 3 conditions ",
        opts.passes
    );
    for p in 0..opts.passes {
        for ci in order(p, ThreadCond::ALL.len()) {
            let cond = ThreadCond::ALL[ci];
            let mut wl = Workload::start(bin, &pin_arg(env))?;
            let mut obs = None;
            if let Some(extra) = cond.args() {
                obs = Some(Observer::start(env, wl.pid, extra, Some(&report))?.0);
            }
            let current = obs.as_ref().map(|o| o.pid);
            let warm = (opts.create / 10).max(1);
            wl.round(warm)?; // warm-up: glibc's stack cache, page faults
            let mut created = warm;
            for _ in 0..ROUNDS_PER_VISIT {
                let v = clean_round(
                    env,
                    current,
                    &mut wl,
                    opts.create,
                    &mut r.rows[ci].contamination,
                )?;
                created += opts.create;
                r.rows[ci].wall.push(v[0]);
                r.rows[ci].cpu.push(v[1]);
            }
            if let Some(mut o) = obs.take() {
                let s = o.stop();
                r.rows[ci].stop.push(s.took.as_secs_f64() * 1e9);
                match s.status {
                    Some(st) if st.success() => {}
                    Some(st) => r.problems.push(format!(
                        "{}: observer ended with {}",
                        cond.label(),
                        describe(&st)
                    )),
                    None => r.problems.push(format!(
                        "{}: observer did not exit within {STOP_TIMEOUT:?}",
                        cond.label()
                    )),
                }
                match lifecycle(&report) {
                    Ok((seen, drops)) => {
                        r.rows[ci].seen.push((seen, created));
                        r.rows[ci].drops.push(drops);
                    }
                    Err(e) => r.problems.push(format!("{}: report: {e:#}", cond.label())),
                }
            }
            wl.finish()?;
            eprint!(".");
        }
    }
    eprintln!();
    Ok(r)
}

/// (threads created, total drops) from an observer.report/1.
fn lifecycle(report: &Path) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(report).context("reading the report")?;
    let v = json::parse(&text).context("parsing the report")?;
    let created = v
        .get("processes")
        .and_then(|p| p.as_array())
        .and_then(|p| p.first())
        .and_then(|p| p.get("lifecycle"))
        .and_then(|l| l.get("created"))
        .and_then(|c| c.as_u64())
        .context("no processes[0].lifecycle.created")?;
    let drops = match v.get("drops") {
        Some(json::Value::Object(kv)) => kv
            .iter()
            .filter(|(k, _)| k != "records")
            .filter_map(|(_, v)| v.as_u64())
            .sum(),
        _ => 0,
    };
    Ok((created, drops))
}

fn threads_table(r: &ThreadResult, opts: &Opts) -> String {
    let mut s = String::new();
    let row = |c: ThreadCond| &r.rows[c as usize];
    writeln!(
        s,
        "Thread lifecycle: pthread_create + pthread_join of {} short threads, one by one (bench/threads_createjoin.c)\n\
         {} rounds per condition (medians; wall clock, and process CPU time of all threads)",
        opts.create,
        opts.passes * ROUNDS_PER_VISIT
    )
    .unwrap();
    writeln!(
        s,
        "  {:<44} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "condition", "wall", "min", "max", "per thread", "CPU", "stop", "wall ratio"
    )
    .unwrap();
    let un = median(&row(ThreadCond::Unobserved).wall);
    for c in ThreadCond::ALL {
        let x = row(c);
        let w = median(&x.wall);
        writeln!(
            s,
            "  {:<44} {:>10} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
            c.label(),
            ns(w),
            ns(min(&x.wall)),
            ns(max(&x.wall)),
            ns(w / opts.create as f64),
            ns(median(&x.cpu)),
            ns(median(&x.stop)),
            ratio(w / un),
        )
        .unwrap();
    }
    let uc = median(&row(ThreadCond::Unobserved).cpu);
    for c in [ThreadCond::Default, ThreadCond::NoThreadUprobes] {
        let x = row(c);
        let w = median(&x.wall) / un;
        writeln!(
            s,
            "  {}: observed / unobserved = {} (CPU {}), +{} per thread: target <= {THREADS_TARGET:.2} {}",
            c.label(),
            ratio(w),
            ratio(median(&x.cpu) / uc),
            ns((median(&x.wall) - un) / opts.create as f64),
            verdict(w <= THREADS_TARGET)
        )
        .unwrap();
        let all = x.seen.iter().all(|(got, ran)| got >= ran);
        let drops: u64 = x.drops.iter().sum();
        if let Some((got, ran)) = x.seen.first() {
            writeln!(
                s,
                "    saw every thread: {} (report's lifecycle.created vs threads created, e.g. {got} of {ran}); drops {drops}",
                if all { "yes" } else { "NO" }
            )
            .unwrap();
        }
    }
    for c in ThreadCond::ALL {
        if let Some(n) = row(c).contamination.note(c.label()) {
            writeln!(s, "{n}").unwrap();
        }
    }
    for p in &r.problems {
        writeln!(s, "  PROBLEM: {p}").unwrap();
    }
    s
}

// ---------------------------------------------------------------------------
// Leftovers

/// No observer of ours still runs and none of the programs they held is
/// still loaded (uprobe programs are freed seconds after their observer
/// exits, after RCU grace periods). Informative only.
fn leftovers(env: &Env) -> String {
    let alive: Vec<u32> = env
        .spawned
        .iter()
        .copied()
        .filter(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == env.observer))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<String> = hook_programs()
            .into_iter()
            .filter(|(id, _)| env.ours.contains(id))
            .map(|(id, n)| format!("{id}:{n}"))
            .collect();
        if (left.is_empty() && alive.is_empty()) || Instant::now() > deadline {
            return if left.is_empty() && alive.is_empty() {
                format!(
                    "Leftovers: none ({} observers started and reaped; none of the {} BPF programs they held is loaded)",
                    env.spawned.len(),
                    env.ours.len()
                )
            } else {
                format!(
                    "WARNING: leftovers: observers still running {alive:?}; programs still loaded {left:?}"
                )
            };
        }
        thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------
// A minimal JSON reader, enough for observer's report and dump (xtask has
// no serde_json). Integers stay exact as u64.

mod json {
    use anyhow::{Result, bail};

    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        UInt(u64),
        Num(f64),
        Str(String),
        Array(Vec<Value>),
        Object(Vec<(String, Value)>),
    }

    impl Value {
        pub fn get(&self, key: &str) -> Option<&Value> {
            match self {
                Value::Object(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }
        pub fn as_u64(&self) -> Option<u64> {
            match self {
                Value::UInt(n) => Some(*n),
                _ => None,
            }
        }
        pub fn as_str(&self) -> Option<&str> {
            match self {
                Value::Str(s) => Some(s),
                _ => None,
            }
        }
        pub fn as_array(&self) -> Option<&[Value]> {
            match self {
                Value::Array(v) => Some(v),
                _ => None,
            }
        }
    }

    pub fn parse(s: &str) -> Result<Value> {
        let mut p = Parser {
            b: s.as_bytes(),
            i: 0,
        };
        let v = p.value(0)?;
        p.ws();
        if p.i != p.b.len() {
            bail!("trailing data at byte {}", p.i);
        }
        Ok(v)
    }

    struct Parser<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
                self.i += 1;
            }
        }

        fn eat(&mut self, c: u8) -> bool {
            self.ws();
            if self.b.get(self.i) == Some(&c) {
                self.i += 1;
                true
            } else {
                false
            }
        }

        fn value(&mut self, depth: usize) -> Result<Value> {
            if depth > 128 {
                bail!("nested too deeply");
            }
            self.ws();
            let Some(&c) = self.b.get(self.i) else {
                bail!("unexpected end of input");
            };
            match c {
                b'{' => {
                    self.i += 1;
                    let mut kv = Vec::new();
                    if self.eat(b'}') {
                        return Ok(Value::Object(kv));
                    }
                    loop {
                        self.ws();
                        let k = self.string()?;
                        if !self.eat(b':') {
                            bail!("expected : at byte {}", self.i);
                        }
                        kv.push((k, self.value(depth + 1)?));
                        if self.eat(b'}') {
                            return Ok(Value::Object(kv));
                        }
                        if !self.eat(b',') {
                            bail!("expected , or }} at byte {}", self.i);
                        }
                    }
                }
                b'[' => {
                    self.i += 1;
                    let mut v = Vec::new();
                    if self.eat(b']') {
                        return Ok(Value::Array(v));
                    }
                    loop {
                        v.push(self.value(depth + 1)?);
                        if self.eat(b']') {
                            return Ok(Value::Array(v));
                        }
                        if !self.eat(b',') {
                            bail!("expected , or ] at byte {}", self.i);
                        }
                    }
                }
                b'"' => Ok(Value::Str(self.string()?)),
                b't' => self.lit("true", Value::Bool(true)),
                b'f' => self.lit("false", Value::Bool(false)),
                b'n' => self.lit("null", Value::Null),
                _ => self.number(),
            }
        }

        fn lit(&mut self, word: &str, v: Value) -> Result<Value> {
            if self.b[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                Ok(v)
            } else {
                bail!("bad literal at byte {}", self.i)
            }
        }

        fn number(&mut self) -> Result<Value> {
            let start = self.i;
            while self
                .b
                .get(self.i)
                .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
            {
                self.i += 1;
            }
            let s = std::str::from_utf8(&self.b[start..self.i])?;
            if let Ok(n) = s.parse::<u64>() {
                return Ok(Value::UInt(n));
            }
            match s.parse::<f64>() {
                Ok(f) => Ok(Value::Num(f)),
                Err(_) => bail!("bad number {s:?} at byte {start}"),
            }
        }

        fn hex4(&mut self) -> Result<u32> {
            let h = self
                .b
                .get(self.i..self.i + 4)
                .ok_or_else(|| anyhow::anyhow!("short \\u escape"))?;
            self.i += 4;
            Ok(u32::from_str_radix(std::str::from_utf8(h)?, 16)?)
        }

        fn string(&mut self) -> Result<String> {
            if self.b.get(self.i) != Some(&b'"') {
                bail!("expected a string at byte {}", self.i);
            }
            self.i += 1;
            let mut out: Vec<u8> = Vec::new();
            loop {
                let Some(&c) = self.b.get(self.i) else {
                    bail!("unterminated string");
                };
                self.i += 1;
                match c {
                    b'"' => return Ok(String::from_utf8(out)?),
                    b'\\' => {
                        let Some(&e) = self.b.get(self.i) else {
                            bail!("unterminated escape");
                        };
                        self.i += 1;
                        let ch = match e {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let hi = self.hex4()?;
                                let cp = if (0xd800..0xdc00).contains(&hi)
                                    && self.b[self.i..].starts_with(b"\\u")
                                {
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    0x10000
                                        + ((hi - 0xd800) << 10)
                                        + (lo.wrapping_sub(0xdc00) & 0x3ff)
                                } else {
                                    hi
                                };
                                char::from_u32(cp).unwrap_or('\u{fffd}')
                            }
                            _ => bail!("bad escape at byte {}", self.i),
                        };
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                    }
                    _ => out.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let v = json::parse(r#"{"locks":[{"symbol":"hot_lock","acquired":80000,"x":-1.5e3,"s":"a\"\u00e9"}],"n":null}"#)
            .unwrap();
        let l = &v.get("locks").unwrap().as_array().unwrap()[0];
        assert_eq!(l.get("symbol").unwrap().as_str(), Some("hot_lock"));
        assert_eq!(l.get("acquired").unwrap().as_u64(), Some(80000));
        assert_eq!(l.get("s").unwrap().as_str(), Some("a\"é"));
        assert!(json::parse("[1,").is_err());
        assert!(json::parse("{} x").is_err());
    }

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
    fn medians_and_order() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let o: Vec<usize> = order(1, 4).collect();
        assert_eq!(o, vec![1, 2, 3, 0]);
    }
}
