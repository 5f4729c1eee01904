//! `cargo xtask bench detect`: how fast the observer finds a deadlock.
//!
//! Two benchmarks, each printed as a table:
//!
//! - latency: `observer run --kill-on-deadlock` on the ABBA fixture
//!   (fixtures/abba.c), many times, at the default scan interval (25 ms) and
//!   at 10 ms, interleaved. The cycle closes when the last waiter of the
//!   cycle enters its futex wait: its `wait.start_ns` (bpf_ktime_get_ns at
//!   syscall entry) in the `--record` stream. The latency is the finding's
//!   `detected_ns` minus that. Both clocks are CLOCK_MONOTONIC. The same is
//!   measured on bench/detect_abba.c, which closes its cycle at a random
//!   phase of the scan period (abba.c always closes it just after a tick).
//! - dump: `observer dump -p PID` on a hung process with 1000 threads, two of
//!   them deadlocked (bench/dump_1000.c), against
//!   `gdb -batch -ex 'thread apply all bt' -p PID` on the same process,
//!   interleaved.
//!
//! Targets are reported as PASS/MISS; a MISS does not fail the command
//! (benchmarks inform). Setup errors (not root, no observer, a fixture that
//! does not build) do.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    io::{BufRead, BufReader},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask bench detect [latency|dump] [options]   (as root: sudo ./x bench detect)

BENCH (default: both)
  latency  observer run --kill-on-deadlock on fixtures/abba.c and bench/detect_abba.c (the same
           ABBA, cycle closing at a random phase): cycle closed -> finding,
           p50/p90/p99/max at --scan-interval 25 (default) and 10; target p99 <= 100 ms
  dump     observer dump -p PID on a hung process with 1000 threads (2 deadlocked):
           target <= 300 ms and faster than gdb -batch -ex 'thread apply all bt'

options
  --runs N           latency runs per scan interval (default 100, at least 50 advised)
  --intervals A,B    scan intervals to measure, in ms (default 25,10)
  --threads N        threads of the dump target besides main (default 1000)
  --dump-reps N      timed `observer dump` runs per output format (default 9)
  --gdb-reps N       timed gdb runs (default 3; 0 skips gdb)
  --observer PATH    use this observer binary instead of building target/release/observer
  -h, --help         this text";

/// Latency target (p99), from the issue.
const LATENCY_TARGET_MS: f64 = 100.0;
/// Dump target (median wall clock), from the issue.
const DUMP_TARGET_MS: f64 = 300.0;
/// One `observer run` on the ABBA fixture normally takes ~0.1 s.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const DUMP_TIMEOUT: Duration = Duration::from_secs(60);
/// gdb on 1000 threads can be slow; it is the baseline, so let it finish.
const GDB_TIMEOUT: Duration = Duration::from_secs(600);
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// What the observer's scan loop does (observer/src/session.rs): a wait is
/// judged at a scan tick once it is at least min(scan interval, 10 ms) old.
const MIN_WAIT_AGE_MS: u64 = 10;

struct Opts {
    latency: bool,
    dump: bool,
    runs: usize,
    intervals: Vec<u64>,
    threads: usize,
    dump_reps: usize,
    gdb_reps: usize,
    observer: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let mut o = Opts {
        latency: false,
        dump: false,
        runs: 100,
        intervals: vec![25, 10],
        threads: 1000,
        dump_reps: 9,
        gdb_reps: 3,
        observer: None,
    };
    let mut it = args.iter();
    fn number(v: Option<&String>, what: &str) -> Result<usize> {
        v.and_then(|s| s.parse().ok())
            .with_context(|| format!("{what} needs a number (see --help)"))
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" | "help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            "latency" => o.latency = true,
            "dump" => o.dump = true,
            "--runs" => o.runs = number(it.next(), "--runs")?.max(1),
            "--threads" => o.threads = number(it.next(), "--threads")?.max(3),
            "--dump-reps" => o.dump_reps = number(it.next(), "--dump-reps")?.max(1),
            "--gdb-reps" => o.gdb_reps = number(it.next(), "--gdb-reps")?,
            "--intervals" => {
                let v = it.next().context("--intervals needs a list like 25,10")?;
                o.intervals = v
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<u64>()
                            .ok()
                            .filter(|&n| (1..=10_000).contains(&n))
                    })
                    .collect::<Option<Vec<_>>>()
                    .with_context(|| {
                        format!("--intervals {v}: milliseconds from 1 to 10000, comma-separated")
                    })?;
            }
            "--observer" => {
                let p = it.next().context("--observer needs a path")?;
                o.observer = Some(
                    std::fs::canonicalize(p).map_err(|e| anyhow::anyhow!("--observer {p}: {e}"))?,
                );
            }
            _ => bail!("unknown argument {a:?} (see cargo xtask bench detect --help)"),
        }
    }
    if !o.latency && !o.dump {
        o.latency = true;
        o.dump = true;
    }
    Ok(Some(o))
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(opts) = parse(args)? else {
        return Ok(());
    };
    if !crate::is_root() {
        bail!(
            "the detection benchmarks load BPF programs and read other processes: run `sudo ./x bench detect`"
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
    let out = crate::root().join("target/bench-detect");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;

    println!("{}", header());
    if opts.latency {
        let workloads = [
            Workload {
                label: "fixtures/abba.c",
                bin: compile(&out, "fixtures/abba.c", "abba")?,
            },
            Workload {
                label: "bench/detect_abba.c",
                bin: compile(&out, "bench/detect_abba.c", "detect_abba")?,
            },
        ];
        let rows = latency(&observer, &workloads, &out, &opts)?;
        println!("{}", latency_table(&rows, &workloads, opts.runs));
    }
    if opts.dump {
        let target = compile(&out, "bench/dump_1000.c", "dump_1000")?;
        let r = dump(&observer, &target, &opts)?;
        println!("{}", dump_table(&r, &opts));
    }
    check_no_leftovers();
    Ok(())
}

fn header() -> String {
    let uname = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cpus = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("observer deadlock detection benchmarks (kernel {uname}, {cpus} CPUs)\n")
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

// ---------------------------------------------------------------------------
// Processes

/// A process we started: SIGKILLed and reaped when dropped, whatever happened.
struct Guard {
    child: Option<Child>,
}

impl Guard {
    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

struct Timed {
    elapsed: Duration,
    status: ExitStatus,
    stdout: Vec<u8>,
}

/// Runs `c` to completion (stdout captured, stderr discarded), timing its
/// wall clock from spawn to reap. SIGKILLs it after `timeout`.
fn run_timed(mut c: Command, timeout: Duration) -> Result<Option<Timed>> {
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
        let elapsed = t0.elapsed();
        let _ = tx.send(r.map(|o| (elapsed, o)));
    });
    let r = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            // Still ours: the waiting thread has not reaped it.
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = rx.recv();
            return Ok(None);
        }
    };
    let (elapsed, o) = r.map_err(|e| anyhow::anyhow!("waiting for {shown}: {e}"))?;
    Ok(Some(Timed {
        elapsed,
        status: o.status,
        stdout: o.stdout,
    }))
}

fn describe(st: &ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{st}"),
    }
}

// ---------------------------------------------------------------------------
// Latency

/// The latency targets: (label, binary).
struct Workload {
    label: &'static str,
    bin: PathBuf,
}

struct LatencyRow {
    workload: usize,
    interval_ms: u64,
    /// Cycle closed -> finding, in ms, one per run that found the deadlock.
    samples: Vec<f64>,
    /// Runs that did not yield a usable measurement, and why.
    failures: Vec<String>,
}

fn latency(
    observer: &Path,
    workloads: &[Workload],
    out: &Path,
    opts: &Opts,
) -> Result<Vec<LatencyRow>> {
    let mut rows: Vec<LatencyRow> = Vec::new();
    for w in 0..workloads.len() {
        for &i in &opts.intervals {
            rows.push(LatencyRow {
                workload: w,
                interval_ms: i,
                samples: Vec::new(),
                failures: Vec::new(),
            });
        }
    }
    let report = out.join("latency-report.json");
    let record = out.join("latency-record.jsonl");
    eprintln!(
        "bench detect: latency, {} runs x {} rows ...",
        opts.runs,
        rows.len()
    );
    let n = rows.len();
    // Interleaved, rotating which interval goes first, so that a slow phase
    // of a noisy machine hits every row alike.
    for run in 0..opts.runs {
        for k in 0..rows.len() {
            let row = &mut rows[(run + k) % n];
            let _ = std::fs::remove_file(&report);
            let _ = std::fs::remove_file(&record);
            let mut c = Command::new(observer);
            c.args(["run", "--quiet", "--kill-on-deadlock", "--scan-interval"])
                .arg(row.interval_ms.to_string())
                .arg("--report")
                .arg(&report)
                .arg("--record")
                .arg(&record)
                .arg("--")
                .arg(&workloads[row.workload].bin);
            let Some(t) = run_timed(c, RUN_TIMEOUT)? else {
                row.failures
                    .push(format!("timed out after {RUN_TIMEOUT:?}"));
                continue;
            };
            if t.status.code() != Some(3) {
                row.failures.push(format!(
                    "observer ended with {} (3 expected)",
                    describe(&t.status)
                ));
                continue;
            }
            match one_latency(&report, &record) {
                Ok(ns) => row.samples.push(ns as f64 / 1e6),
                Err(e) => row.failures.push(e.to_string()),
            }
        }
    }
    Ok(rows)
}

/// detected_ns of the first deadlock finding minus the latest wait start of
/// the cycle's waiters.
fn one_latency(report: &Path, record: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(report).context("reading the report")?;
    let r = json::parse(&text).context("parsing the report")?;
    let f = r
        .get("findings")
        .and_then(|f| f.as_array())
        .and_then(|fs| {
            fs.iter()
                .find(|f| f.get("kind").and_then(|k| k.as_str()) == Some("deadlock"))
        })
        .context("no deadlock finding in the report")?;
    let detected = f
        .get("detected_ns")
        .and_then(|v| v.as_u64())
        .context("finding without detected_ns")?;
    let waiters: HashSet<u64> = f
        .get("cycle")
        .and_then(|c| c.as_array())
        .context("deadlock finding without a cycle")?
        .iter()
        .filter_map(|e| e.get("waiter_tid").and_then(|t| t.as_u64()))
        .collect();
    if waiters.is_empty() {
        bail!("deadlock finding with an empty cycle");
    }
    // The latest wait each waiter began before the finding: the one it is
    // stuck in (earlier ones, e.g. the barrier, ended).
    let mut start: HashMap<u64, u64> = HashMap::new();
    let rec = std::fs::read_to_string(record).context("reading the recording")?;
    for line in rec.lines() {
        // Cheap filter before parsing: only wait events matter.
        if !line.contains("\"wait_begin\"") && !line.contains("\"wait_done\"") {
            continue;
        }
        let ev = json::parse(line).context("parsing the recording")?;
        let (Some(tid), Some(s)) = (
            ev.get("tid").and_then(|t| t.as_u64()),
            ev.get("wait")
                .and_then(|w| w.get("start_ns"))
                .and_then(|s| s.as_u64()),
        ) else {
            continue;
        };
        if waiters.contains(&tid) && s <= detected {
            let e = start.entry(tid).or_insert(s);
            *e = (*e).max(s);
        }
    }
    if start.len() != waiters.len() {
        bail!(
            "the recording has no wait start for {} of the {} waiters",
            waiters.len() - start.len(),
            waiters.len()
        );
    }
    let closed = start.values().copied().max().unwrap();
    Ok(detected - closed)
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v >= 1000.0 {
        format!("{:.2} s", v / 1000.0)
    } else {
        format!("{v:.1} ms")
    }
}

fn latency_table(rows: &[LatencyRow], workloads: &[Workload], runs: usize) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "Detection latency: cycle closed (last waiter's futex entry) -> finding reported\n\
         observer run --quiet --kill-on-deadlock --scan-interval MS -- TARGET, {runs} runs per row, interleaved\n\
         (fixtures/abba.c closes its cycle right after the first scan tick; bench/detect_abba.c at a random phase)"
    )
    .unwrap();
    writeln!(
        s,
        "  {:<20} {:<15} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  p99 <= {LATENCY_TARGET_MS:.0} ms",
        "target",
        "scan interval",
        "found",
        "min",
        "p50",
        "p90",
        "p99",
        "max",
        "expected",
    )
    .unwrap();
    for r in rows {
        let mut v = r.samples.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        let p99 = pct(&v, 99.0);
        let verdict = if v.is_empty() {
            "no data"
        } else if p99 <= LATENCY_TARGET_MS {
            "PASS"
        } else {
            "MISS"
        };
        // A wait is judged at the first scan tick at which it is
        // min(interval, 10 ms) old: latency in [age, age + interval].
        let age = r.interval_ms.min(MIN_WAIT_AGE_MS);
        let label = if r.interval_ms == 25 {
            "25 ms (default)".to_string()
        } else {
            format!("{} ms", r.interval_ms)
        };
        writeln!(
            s,
            "  {:<20} {:<15} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {}",
            workloads[r.workload].label,
            label,
            format!("{}/{}", v.len(), v.len() + r.failures.len()),
            ms(v.first().copied().unwrap_or(f64::NAN)),
            ms(pct(&v, 50.0)),
            ms(pct(&v, 90.0)),
            ms(p99),
            ms(v.last().copied().unwrap_or(f64::NAN)),
            format!("{}-{} ms", age, age + r.interval_ms),
            verdict
        )
        .unwrap();
    }
    writeln!(
        s,
        "  expected: a wait is judged at the first scan tick where it is at least min(interval, {MIN_WAIT_AGE_MS} ms) old,\n  \
         so the latency is that minimum age plus up to one scan interval (plus scheduling noise)."
    )
    .unwrap();
    for r in rows {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &r.failures {
            *seen.entry(f.as_str()).or_default() += 1;
        }
        for (f, n) in seen {
            writeln!(
                s,
                "  {} at {} ms: {n} run(s) without a measurement: {f}",
                workloads[r.workload].label, r.interval_ms
            )
            .unwrap();
        }
    }
    s
}

// ---------------------------------------------------------------------------
// Dump

struct DumpResult {
    threads: usize,
    text: Vec<f64>,
    json: Vec<f64>,
    gdb: Vec<f64>,
    gdb_note: Option<String>,
    /// Problems with observer's answers (wrong exit code, wrong finding).
    problems: Vec<String>,
    gdb_threads: Option<usize>,
}

/// Starts the dump target and waits for its `ready`; returns it with the
/// tids of alpha and beta.
fn start_target(target: &Path, threads: usize) -> Result<(Guard, [u64; 2])> {
    let child = Command::new(target)
        .arg(threads.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", target.display()))?;
    let mut g = Guard { child: Some(child) };
    let stdout = g.child.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut tids = HashMap::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!(
                    "{} did not print `ready` within {READY_TIMEOUT:?}",
                    target.display()
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("{} exited before `ready`", target.display())
            }
        };
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["thread", name, tid] => {
                if let Ok(t) = tid.parse::<u64>() {
                    tids.insert(name.to_string(), t);
                }
            }
            ["ready"] => break,
            _ => {}
        }
    }
    let (Some(&a), Some(&b)) = (tids.get("alpha"), tids.get("beta")) else {
        bail!("{} did not name alpha and beta", target.display());
    };
    Ok((g, [a, b]))
}

fn dump(observer: &Path, target: &Path, opts: &Opts) -> Result<DumpResult> {
    eprintln!(
        "bench detect: dump, starting a target with {} threads ...",
        opts.threads
    );
    let (guard, deadlocked) = start_target(target, opts.threads)?;
    let pid = guard.pid();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    let mut r = DumpResult {
        threads: tasks,
        text: Vec::new(),
        json: Vec::new(),
        gdb: Vec::new(),
        gdb_note: None,
        problems: Vec::new(),
        gdb_threads: None,
    };
    let gdb = which("gdb");
    if gdb.is_none() && opts.gdb_reps > 0 {
        r.gdb_note = Some("gdb not found: not measured".into());
    }
    let want: HashSet<u64> = deadlocked.into_iter().collect();
    // Interleaved: observer text, observer json, gdb, observer text, ...
    let reps = opts.dump_reps.max(opts.gdb_reps);
    for i in 0..reps {
        if i < opts.dump_reps {
            for json in [false, true] {
                let mut c = Command::new(observer);
                c.args(["dump", "-p", &pid.to_string()]);
                if json {
                    c.args(["--format", "json"]);
                }
                let Some(t) = run_timed(c, DUMP_TIMEOUT)? else {
                    r.problems
                        .push(format!("observer dump timed out after {DUMP_TIMEOUT:?}"));
                    continue;
                };
                let ms = t.elapsed.as_secs_f64() * 1e3;
                if t.status.code() != Some(3) {
                    r.problems.push(format!(
                        "observer dump ended with {} (3 expected)",
                        describe(&t.status)
                    ));
                }
                if json {
                    if let Err(e) = check_dump_json(&t.stdout, &want) {
                        r.problems.push(e.to_string());
                    }
                    r.json.push(ms);
                } else {
                    r.text.push(ms);
                }
            }
        }
        if i < opts.gdb_reps
            && let Some(gdb) = &gdb
        {
            eprintln!("bench detect: gdb run {} of {} ...", i + 1, opts.gdb_reps);
            let mut c = Command::new(gdb);
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
                None => {
                    r.gdb_note = Some(format!("gdb timed out after {GDB_TIMEOUT:?}"));
                }
                Some(t) => {
                    if !t.status.success() {
                        r.gdb_note = Some(format!("gdb ended with {}", describe(&t.status)));
                    }
                    let out = String::from_utf8_lossy(&t.stdout);
                    r.gdb_threads = Some(out.lines().filter(|l| l.starts_with("Thread ")).count());
                    r.gdb.push(t.elapsed.as_secs_f64() * 1e3);
                }
            }
        }
    }
    drop(guard);
    Ok(r)
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// The dump's JSON has a deadlock finding whose threads are exactly alpha and beta.
fn check_dump_json(out: &[u8], want: &HashSet<u64>) -> Result<()> {
    let text = std::str::from_utf8(out).context("observer dump --format json: not UTF-8")?;
    let d = json::parse(text).context("observer dump --format json: not JSON")?;
    let findings = d
        .get("findings")
        .and_then(|f| f.as_array())
        .context("observer dump --format json: no findings array")?;
    let ok = findings.iter().any(|f| {
        f.get("kind").and_then(|k| k.as_str()) == Some("deadlock")
            && f.get("threads")
                .and_then(|t| t.as_array())
                .is_some_and(|ts| {
                    let got: HashSet<u64> = ts
                        .iter()
                        .filter_map(|t| t.get("tid").and_then(|x| x.as_u64()))
                        .collect();
                    &got == want
                })
    });
    if !ok {
        let mut w: Vec<_> = want.iter().collect();
        w.sort();
        bail!("observer dump --format json: no deadlock finding naming exactly threads {w:?}");
    }
    Ok(())
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (
        pct(&s, 50.0),
        s.first().copied().unwrap_or(f64::NAN),
        s.last().copied().unwrap_or(f64::NAN),
    )
}

fn dump_table(r: &DumpResult, opts: &Opts) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "dump of a hung process: {} threads ({} idle in pthread_cond_wait, 2 in an ABBA deadlock, main in pthread_join)\n\
         wall clock per call, interleaved on the same process",
        r.threads,
        opts.threads.saturating_sub(2)
    )
    .unwrap();
    writeln!(
        s,
        "  {:<44} {:>5} {:>9} {:>9} {:>9}",
        "command", "runs", "median", "min", "max"
    )
    .unwrap();
    let mut row = |label: &str, v: &[f64]| {
        let (med, lo, hi) = stats(v);
        writeln!(
            s,
            "  {:<44} {:>5} {:>9} {:>9} {:>9}",
            label,
            v.len(),
            ms(med),
            ms(lo),
            ms(hi)
        )
        .unwrap();
    };
    row("observer dump -p PID", &r.text);
    row("observer dump -p PID --format json", &r.json);
    row("gdb -batch -ex 'thread apply all bt' -p PID", &r.gdb);
    let obs = stats(&r.text).0.max(stats(&r.json).0);
    let gdb = stats(&r.gdb).0;
    if let Some(n) = &r.gdb_note {
        writeln!(s, "  note: {n}").unwrap();
    }
    if let Some(n) = r.gdb_threads {
        writeln!(s, "  gdb printed {n} thread backtraces").unwrap();
    }
    if r.problems.is_empty() {
        writeln!(
            s,
            "  observer: exit 3 and a deadlock finding naming exactly alpha and beta, every run"
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
    let ratio = gdb / obs;
    let within = obs <= DUMP_TARGET_MS;
    let faster = !gdb.is_nan() && gdb > obs;
    writeln!(
        s,
        "  observer (slower format's median) {}: target <= {DUMP_TARGET_MS:.0} ms {}; gdb/observer = {}: faster than gdb {}",
        ms(obs),
        if within { "PASS" } else { "MISS" },
        if ratio.is_nan() {
            "-".to_string()
        } else {
            format!("{ratio:.1}x")
        },
        if gdb.is_nan() {
            "not measured"
        } else if faster {
            "PASS"
        } else {
            "MISS"
        }
    )
    .unwrap();
    s
}

/// Every observer run unloaded its programs (the kernel may take a few
/// seconds of RCU grace to free them). Informative only. Programs held by a
/// live process are someone else's (every process we started is reaped by
/// now) and are ignored.
fn check_no_leftovers() {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> = crate::leftover_programs()
            .into_iter()
            .filter(|l| !held_by_live_process(l))
            .collect();
        if left.is_empty() {
            println!("BPF programs left loaded: none");
            return;
        }
        if Instant::now() >= deadline {
            println!("WARNING: BPF programs left loaded:\n{}", left.join("\n"));
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// A `bpftool prog show` line ending in "(held by [PID, ...])" with a PID alive.
fn held_by_live_process(line: &str) -> bool {
    let Some(i) = line.find("held by [") else {
        return false;
    };
    let rest = &line[i + 9..];
    rest[..rest.find(']').unwrap_or(rest.len())]
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok())
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

// ---------------------------------------------------------------------------
// A minimal JSON reader: enough for observer's report, recording and dump
// (no dependency on serde_json in xtask). Integers stay exact as u64/i64.

mod json {
    use anyhow::{Result, bail};

    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        /// An integer that fits in u64.
        UInt(u64),
        /// Any other number.
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
            while self.i < self.b.len() && matches!(self.b[self.i], b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            }
        }

        fn peek(&self) -> Option<u8> {
            self.b.get(self.i).copied()
        }

        fn expect(&mut self, c: u8) -> Result<()> {
            if self.peek() != Some(c) {
                bail!("expected {:?} at byte {}", c as char, self.i);
            }
            self.i += 1;
            Ok(())
        }

        fn lit(&mut self, word: &str, v: Value) -> Result<Value> {
            if self.b[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                Ok(v)
            } else {
                bail!("bad literal at byte {}", self.i)
            }
        }

        fn value(&mut self, depth: usize) -> Result<Value> {
            if depth > 128 {
                bail!("nested too deeply");
            }
            self.ws();
            match self.peek() {
                None => bail!("unexpected end of input"),
                Some(b'{') => {
                    self.i += 1;
                    let mut kv = Vec::new();
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.i += 1;
                        return Ok(Value::Object(kv));
                    }
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.ws();
                        self.expect(b':')?;
                        let v = self.value(depth + 1)?;
                        kv.push((k, v));
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(Value::Object(kv));
                            }
                            _ => bail!("expected , or }} at byte {}", self.i),
                        }
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    let mut v = Vec::new();
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.i += 1;
                        return Ok(Value::Array(v));
                    }
                    loop {
                        v.push(self.value(depth + 1)?);
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(Value::Array(v));
                            }
                            _ => bail!("expected , or ] at byte {}", self.i),
                        }
                    }
                }
                Some(b'"') => Ok(Value::Str(self.string()?)),
                Some(b't') => self.lit("true", Value::Bool(true)),
                Some(b'f') => self.lit("false", Value::Bool(false)),
                Some(b'n') => self.lit("null", Value::Null),
                Some(_) => self.number(),
            }
        }

        fn number(&mut self) -> Result<Value> {
            let start = self.i;
            while self.i < self.b.len()
                && matches!(
                    self.b[self.i],
                    b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'
                )
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
            self.expect(b'"')?;
            let mut out: Vec<u8> = Vec::new();
            loop {
                let Some(c) = self.peek() else {
                    bail!("unterminated string");
                };
                self.i += 1;
                match c {
                    b'"' => return Ok(String::from_utf8(out)?),
                    b'\\' => {
                        let Some(e) = self.peek() else {
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

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_observer_shapes() {
            let v = parse(
                r#"{"findings":[{"kind":"deadlock","detected_ns":18446744073709551615,
                "cycle":[{"waiter_tid":7,"x":-1.5e3,"s":"a\"\u00e9\ud83d\ude00"}],"n":null,"t":true}]}"#,
            )
            .unwrap();
            let f = &v.get("findings").unwrap().as_array().unwrap()[0];
            assert_eq!(f.get("kind").unwrap().as_str(), Some("deadlock"));
            assert_eq!(f.get("detected_ns").unwrap().as_u64(), Some(u64::MAX));
            let e = &f.get("cycle").unwrap().as_array().unwrap()[0];
            assert_eq!(e.get("waiter_tid").unwrap().as_u64(), Some(7));
            assert_eq!(e.get("x"), Some(&Value::Num(-1500.0)));
            assert_eq!(e.get("s").unwrap().as_str(), Some("a\"é😀"));
            assert!(parse("{\"a\":1} x").is_err());
            assert!(parse("[1,").is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_holders() {
        let me = std::process::id();
        assert!(held_by_live_process(&format!(
            "7: tracing  name btf_sys_enter  tag 67  gpl (held by [{me}, {me}])"
        )));
        assert!(!held_by_live_process(
            "7: tracing  name btf_sys_enter  tag 67  gpl"
        ));
        assert!(!held_by_live_process(
            "7: tracing  name btf_sys_enter  gpl (held by [4194304])"
        ));
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(pct(&v, 50.0), 50.0);
        assert_eq!(pct(&v, 99.0), 99.0);
        assert_eq!(pct(&v, 100.0), 100.0);
        assert_eq!(pct(&[3.0], 99.0), 3.0);
        assert!(pct(&[], 50.0).is_nan());
    }

    #[test]
    fn latency_from_report_and_recording() {
        let dir = std::env::temp_dir().join(format!("bench-detect-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = dir.join("r.json");
        let record = dir.join("e.jsonl");
        std::fs::write(
            &report,
            r#"{"findings":[{"kind":"deadlock","detected_ns":1000000,
               "cycle":[{"waiter_tid":10,"holder_tid":11},{"waiter_tid":11,"holder_tid":10}]}]}"#,
        )
        .unwrap();
        std::fs::write(
            &record,
            [
                r#"{"ev":"wait_done","ts_ns":1,"tgid":9,"tid":11,"wait":{"start_ns":100},"ret":0}"#,
                r#"{"ev":"wait_begin","ts_ns":1000000,"tgid":9,"tid":10,"wait":{"start_ns":400000}}"#,
                r#"{"ev":"wait_begin","ts_ns":1000000,"tgid":9,"tid":11,"wait":{"start_ns":300000}}"#,
                r#"{"ev":"wait_begin","ts_ns":1000000,"tgid":9,"tid":12,"wait":{"start_ns":900000}}"#,
                r#"{"ev":"scan","ts_ns":1000000}"#,
            ]
            .join("\n"),
        )
        .unwrap();
        assert_eq!(one_latency(&report, &record).unwrap(), 600000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
