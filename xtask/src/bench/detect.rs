//! `cargo xtask bench detect`: how fast the observer finds a deadlock.
//!
//! Two benchmarks, each printed as a table:
//!
//! - latency: `observer run --kill-on-deadlock` on the ABBA fixture
//!   (fixtures/abba.c), many times, at the default scan interval (25 ms) and
//!   at 10 ms, interleaved. The cycle closes when the last waiter of the
//!   cycle enters its futex wait: its `wait.start_ns` (bpf_ktime_get_ns when
//!   it went to sleep, at `sched_switch`; at syscall entry with the syscall
//!   hooks) in the `--record` stream. The latency is the finding's
//!   `detected_ns` minus that. Both clocks are CLOCK_MONOTONIC. The same is
//!   measured on bench/detect_abba.c, which closes its cycle at a random
//!   phase of the scan period (abba.c always closes it just after a tick).
//! - dump: `observer dump -p PID` on a hung process with 1000 threads, two of
//!   them deadlocked (bench/dump_1000.c), against
//!   `gdb -batch -ex 'thread apply all bt' -p PID` on the same process,
//!   interleaved.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::harness::{self as h, Check, Programs, Verdicts, Workload};

const USAGE: &str = "\
usage: cargo xtask bench detect [latency|dump] [options]   (as root: sudo ./x bench detect)

BENCH (default: both)
  latency  observer run --kill-on-deadlock on fixtures/abba.c and bench/detect_abba.c (the same
           ABBA, cycle closing at a random phase): cycle closed -> finding,
           p50/p90/p99/max at --scan-interval 25 (default) and 10; target p99 <= 100 ms
  dump     observer dump -p PID on a hung process with 1000 threads (2 deadlocked):
           target <= 300 ms and faster than gdb -batch -ex 'thread apply all bt'

options
  --runs N           latency runs per scan interval (default 100, --quick 10; at least 50 advised)
  --intervals A,B    scan intervals to measure, in ms (default 25,10)
  --threads N        threads of the dump target besides main (default 1000)
  --dump-reps N      timed `observer dump` runs per output format (default 9, --quick 3)
  --gdb-reps N       timed gdb runs (default 3, --quick 1; 0 skips gdb)";

/// Latency target (p99), from the issue.
const LATENCY_TARGET_MS: f64 = 100.0;
/// Dump target (median wall clock), from the issue.
const DUMP_TARGET_MS: f64 = 300.0;
/// One `observer run` on the ABBA fixture normally takes ~0.1 s.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
const DUMP_TIMEOUT: Duration = Duration::from_secs(60);
/// gdb on 1000 threads can be slow; it is the baseline, so let it finish.
const GDB_TIMEOUT: Duration = Duration::from_secs(600);

/// What the observer's scan loop does (observer/src/session.rs): a wait is
/// judged at a scan tick once it is at least min(scan interval, 10 ms) old.
const MIN_WAIT_AGE_MS: u64 = 10;

struct Opts {
    latency: bool,
    dump: bool,
    runs: Option<usize>,
    intervals: Vec<u64>,
    threads: usize,
    dump_reps: Option<usize>,
    gdb_reps: Option<usize>,
}

pub fn main(args: &[String]) -> Result<()> {
    let usage = format!("{USAGE}\n{}", h::COMMON_OPTIONS);
    let mut o = Opts {
        latency: false,
        dump: false,
        runs: None,
        intervals: vec![25, 10],
        threads: 1000,
        dump_reps: None,
        gdb_reps: None,
    };
    let Some(common) = h::parse(args, &usage, false, |a, args| {
        match a {
            "latency" => o.latency = true,
            "dump" => o.dump = true,
            "--runs" => o.runs = Some(args.number::<usize>("--runs")?.max(1)),
            "--threads" => o.threads = args.number::<usize>("--threads")?.max(3),
            "--dump-reps" => o.dump_reps = Some(args.number::<usize>("--dump-reps")?.max(1)),
            "--gdb-reps" => o.gdb_reps = Some(args.number("--gdb-reps")?),
            "--intervals" => {
                let v = args.value("--intervals")?;
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
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(());
    };
    if !o.latency && !o.dump {
        o.latency = true;
        o.dump = true;
    }
    let q = common.quick;
    let runs = o.runs.unwrap_or(if q { 10 } else { 100 });
    let dump_reps = o.dump_reps.unwrap_or(if q { 3 } else { 9 });
    let gdb_reps = o.gdb_reps.unwrap_or(if q { 1 } else { 3 });
    h::require_root("bench detect")?;
    let observer = h::observer_binary(&common)?;
    let out = h::out_dir("bench-detect")?;

    println!(
        "{}",
        h::header("observer bench detect: deadlock detection", "")
    );
    let mut verdicts = Verdicts::default();
    if o.latency {
        let workloads = [
            Target {
                label: "fixtures/abba.c",
                bin: h::compile(&out, "fixtures/abba.c", "abba")?,
            },
            Target {
                label: "bench/detect_abba.c",
                bin: h::compile(&out, "bench/detect_abba.c", "detect_abba")?,
            },
        ];
        let rows = latency(&observer, &workloads, &out, runs, &o.intervals)?;
        println!("{}", latency_table(&rows, &workloads, runs, &mut verdicts));
    }
    if o.dump {
        let target = h::compile(&out, "bench/dump_1000.c", "dump_1000")?;
        let r = dump(&observer, &target, o.threads, dump_reps, gdb_reps)?;
        println!("{}", dump_table(&r, o.threads, &mut verdicts));
    }
    // Every observer here was an `observer run`, reaped by run_timed: only
    // this checkout's programs held by no one can be left.
    h::finish(&verdicts, &Programs::default(), &observer, false)
}

// ---------------------------------------------------------------------------
// Latency

/// A latency target: (label, binary).
struct Target {
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
    workloads: &[Target],
    out: &Path,
    runs: usize,
    intervals: &[u64],
) -> Result<Vec<LatencyRow>> {
    let mut rows: Vec<LatencyRow> = Vec::new();
    for w in 0..workloads.len() {
        for &i in intervals {
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
        "bench detect: latency, {runs} runs x {} rows ...",
        rows.len()
    );
    let n = rows.len();
    for run in 0..runs {
        for k in h::order(run, n) {
            let row = &mut rows[k];
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
            let Some(t) = h::run_timed(c, RUN_TIMEOUT)? else {
                row.failures
                    .push(format!("timed out after {RUN_TIMEOUT:?}"));
                continue;
            };
            if t.status.code() != Some(3) {
                row.failures.push(format!(
                    "observer ended with {} (3 expected)",
                    h::describe(&t.status)
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
    let r = h::read_json(report)?;
    let f = h::finding(&r, "deadlock", |_| true).context("no deadlock finding in the report")?;
    let detected = f["detected_ns"]
        .as_u64()
        .context("finding without detected_ns")?;
    let waiters: HashSet<u64> = f["cycle"]
        .as_array()
        .context("deadlock finding without a cycle")?
        .iter()
        .filter_map(|e| e["waiter_tid"].as_u64())
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
        let ev: Value = serde_json::from_str(line).context("parsing the recording")?;
        let (Some(tid), Some(s)) = (ev["tid"].as_u64(), ev["wait"]["start_ns"].as_u64()) else {
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

fn latency_table(
    rows: &[LatencyRow],
    workloads: &[Target],
    runs: usize,
    verdicts: &mut Verdicts,
) -> String {
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
        "  {:<20} {:<15} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "target", "scan interval", "found", "min", "p50", "p90", "p99", "max", "expected",
    )
    .unwrap();
    let mut checks = Vec::new();
    for r in rows {
        let v = &r.samples;
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
            "  {:<20} {:<15} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            workloads[r.workload].label,
            label,
            format!("{}/{}", v.len(), v.len() + r.failures.len()),
            h::ms(h::min(v)),
            h::ms(h::percentile(v, 50.0)),
            h::ms(h::percentile(v, 90.0)),
            h::ms(h::percentile(v, 99.0)),
            h::ms(h::max(v)),
            format!("{}-{} ms", age, age + r.interval_ms),
        )
        .unwrap();
        checks.push(Check::at_most(
            format!(
                "latency p99, {} at {} ms",
                workloads[r.workload].label, r.interval_ms
            ),
            h::percentile(v, 99.0),
            LATENCY_TARGET_MS,
            h::ms,
        ));
    }
    writeln!(
        s,
        "  expected: a wait is judged at the first scan tick where it is at least min(interval, {MIN_WAIT_AGE_MS} ms) old,\n  \
         so the latency is that minimum age plus up to one scan interval (plus scheduling noise)."
    )
    .unwrap();
    for c in checks {
        writeln!(s, "{}", verdicts.add(c)).unwrap();
    }
    for r in rows {
        let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
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

fn dump(
    observer: &Path,
    target: &Path,
    threads: usize,
    dump_reps: usize,
    gdb_reps: usize,
) -> Result<DumpResult> {
    eprintln!("bench detect: dump, starting a target with {threads} threads ...");
    let wl = Workload::start(target, &[threads.to_string()])?;
    // "thread NAME TID" lines come before `ready`.
    let tids: HashMap<&str, u64> = wl
        .preamble
        .iter()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            ["thread", name, tid] => Some((name, tid.parse().ok()?)),
            _ => None,
        })
        .collect();
    let (Some(&a), Some(&b)) = (tids.get("alpha"), tids.get("beta")) else {
        bail!("{} did not name alpha and beta", target.display());
    };
    let want: BTreeSet<u64> = [a, b].into();
    let pid = wl.pid();
    let mut r = DumpResult {
        threads: std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| d.count())
            .unwrap_or(0),
        text: Vec::new(),
        json: Vec::new(),
        gdb: Vec::new(),
        gdb_note: None,
        problems: Vec::new(),
        gdb_threads: None,
    };
    let gdb = h::which("gdb");
    if gdb.is_none() && gdb_reps > 0 {
        r.gdb_note = Some("gdb not found: not measured".into());
    }
    // Interleaved: observer text, observer json, gdb, observer text, ...
    for i in 0..dump_reps.max(gdb_reps) {
        if i < dump_reps {
            for json in [false, true] {
                let mut c = Command::new(observer);
                c.args(["dump", "-p", &pid.to_string()]);
                if json {
                    c.args(["--format", "json"]);
                }
                let Some(t) = h::run_timed(c, DUMP_TIMEOUT)? else {
                    r.problems
                        .push(format!("observer dump timed out after {DUMP_TIMEOUT:?}"));
                    continue;
                };
                if t.status.code() != Some(3) {
                    r.problems.push(format!(
                        "observer dump ended with {} (3 expected)",
                        h::describe(&t.status)
                    ));
                }
                if json {
                    if let Err(e) = check_dump_json(&t.stdout, &want) {
                        r.problems
                            .push(format!("observer dump --format json: {e:#}"));
                    }
                    r.json.push(t.ms());
                } else {
                    r.text.push(t.ms());
                }
            }
        }
        if i < gdb_reps
            && let Some(gdb) = &gdb
        {
            eprintln!("bench detect: gdb run {} of {gdb_reps} ...", i + 1);
            match h::gdb_backtraces(gdb, pid, GDB_TIMEOUT)? {
                None => r.gdb_note = Some(format!("gdb timed out after {GDB_TIMEOUT:?}")),
                Some(t) => {
                    if !t.status.success() {
                        r.gdb_note = Some(format!("gdb ended with {}", h::describe(&t.status)));
                    }
                    let out = String::from_utf8_lossy(&t.stdout);
                    r.gdb_threads = Some(out.lines().filter(|l| l.starts_with("Thread ")).count());
                    r.gdb.push(t.ms());
                }
            }
        }
    }
    Ok(r)
}

/// The dump's JSON has a deadlock finding whose threads are exactly `want`.
fn check_dump_json(out: &[u8], want: &BTreeSet<u64>) -> Result<()> {
    let d: Value = serde_json::from_slice(out).context("not JSON")?;
    if h::finding(&d, "deadlock", |f| {
        h::numbers(&f["threads"], "tid") == *want
    })
    .is_none()
    {
        bail!("no deadlock finding naming exactly threads {want:?}");
    }
    Ok(())
}

fn dump_table(r: &DumpResult, threads: usize, verdicts: &mut Verdicts) -> String {
    let mut s = String::new();
    writeln!(
        s,
        "dump of a hung process: {} threads ({} idle in pthread_cond_wait, 2 in an ABBA deadlock, main in pthread_join)\n\
         wall clock per call, interleaved on the same process",
        r.threads,
        threads.saturating_sub(2)
    )
    .unwrap();
    s.push_str(&h::ms_table(
        "command",
        44,
        &[
            ("observer dump -p PID", &r.text),
            ("observer dump -p PID --format json", &r.json),
            ("gdb -batch -ex 'thread apply all bt' -p PID", &r.gdb),
        ],
        false,
    ));
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
        s.push_str(&h::problems("WRONG ANSWER", &r.problems));
    }
    let obs = h::median(&r.text).max(h::median(&r.json));
    let gdb = h::median(&r.gdb);
    let faster = Check::at_least(
        "dump: gdb / observer (faster than gdb)",
        gdb / obs,
        1.0,
        |v| {
            if v.is_nan() {
                "-".into()
            } else {
                format!("{v:.1}x")
            }
        },
    );
    for c in [
        Check::at_most(
            "dump: observer median (slower format)",
            obs,
            DUMP_TARGET_MS,
            h::ms,
        ),
        faster,
    ] {
        writeln!(s, "{}", verdicts.add(c)).unwrap();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn dump_json_names_the_threads() {
        let out = br#"{"findings":[{"kind":"long_wait","threads":[{"tid":1}]},
            {"kind":"deadlock","threads":[{"tid":7},{"tid":8}]}]}"#;
        assert!(check_dump_json(out, &[7, 8].into()).is_ok());
        assert!(check_dump_json(out, &[7].into()).is_err());
        assert!(check_dump_json(b"[1,", &[7].into()).is_err());
    }
}
