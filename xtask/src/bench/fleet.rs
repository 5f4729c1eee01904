//! `cargo xtask bench fleet`: what `observer daemon` costs on a host of
//! healthy Python workers, at two fleet sizes in one run.
//!
//! Each worker is bench/py_poll_service.py (four threads polling a
//! queue.Queue with a 50 ms timeout, the main thread sleeping 10 ms), run
//! under a watched name. For each size the daemon starts on the running
//! fleet; after a warm-up its CPU share is measured over the rest of the
//! run, and its RSS at 30 s and at the end (flat: at most 5 % growth).
//! No report may be written. The cost per process at both sizes shows
//! whether it grows linearly.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::harness::{self as h, Guard, cpu_secs, rss_kib};

const USAGE: &str = "\
usage: cargo xtask bench fleet [--procs A,B] [--secs S] [--idle] [--waits W] [--python PATH] [--quick] [--observer PATH]   (as root)

observer daemon watching A, then B healthy Python workers (bench/py_poll_service.py) for S
seconds each: its CPU share (target <= 5% of one CPU at 100), RSS growth from 30 s to the end
(target <= 5%), reports written (target 0).

  --procs A,B       fleet sizes (default 10,100; --quick: 10,30)
  --secs S          seconds per size after a 10 s warm-up (default 60; --quick: 30)
  --idle            idle workers instead (bench/py_idle_service.py: four threads blocked on an
                    empty queue for good): the daemon's own price per watched process, at sizes
                    such as 100,1000
  --waits W         the daemon's waits setting: auto (default), sched or syscalls
  --python PATH     the interpreter (default: CPython 3.12 of pyenv, else python3)";

const COMM: &str = "obsd-fleet";
const WARMUP: Duration = Duration::from_secs(10);

struct Opts {
    sizes: Vec<usize>,
    secs: u64,
    idle: bool,
    waits: String,
    python: Option<PathBuf>,
    common: h::Common,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let (mut sizes, mut secs, mut python, mut idle) = (None, None, None, false);
    let mut waits = "auto".to_string();
    let usage = format!("{USAGE}\n{}", h::COMMON_OPTIONS);
    let Some(common) = h::parse(args, &usage, false, |a, it| {
        match a {
            "--procs" => {
                let v = it.value("--procs")?;
                let s: Result<Vec<usize>, _> = v.split(',').map(str::parse).collect();
                sizes = Some(s.with_context(|| format!("--procs {v}: sizes such as 10,100"))?);
            }
            "--secs" => secs = Some(it.number("--secs")?),
            "--python" => python = Some(PathBuf::from(it.value("--python")?)),
            "--idle" => idle = true,
            "--waits" => waits = it.value("--waits")?.to_string(),
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(None);
    };
    let sizes = sizes.unwrap_or(if common.quick {
        vec![10, 30]
    } else {
        vec![10, 100]
    });
    let secs = secs.unwrap_or(if common.quick { 30 } else { 60 });
    if sizes.is_empty() || sizes.contains(&0) || secs < 30 {
        bail!("--procs needs sizes > 0 and --secs >= 30 (see --help)");
    }
    Ok(Some(Opts {
        sizes,
        secs,
        idle,
        waits,
        python,
        common,
    }))
}

/// The interpreter itself, not a launcher: a worker's comm must be the
/// name it was started as (pyenv's `python3` is a shell script that execs
/// the interpreter, which renames the process).
pub(super) fn python(explicit: Option<&Path>) -> Result<PathBuf> {
    let pyenv = Path::new("/root/.pyenv/versions/3.12.1/bin/python3.12");
    let launcher = match explicit {
        Some(p) => p.to_path_buf(),
        None if pyenv.is_file() => return Ok(pyenv.to_path_buf()),
        None => h::which("python3").context("no python3 found (--python PATH)")?,
    };
    let out = Command::new(&launcher)
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .with_context(|| format!("running {}", launcher.display()))?;
    let exe = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || exe.is_empty() {
        bail!(
            "{} does not say where its interpreter is",
            launcher.display()
        );
    }
    Ok(std::fs::canonicalize(&exe).unwrap_or_else(|_| PathBuf::from(exe)))
}

/// One fleet size's measurements.
struct Run {
    procs: usize,
    cpu_share: f64,
    rss_30: u64,
    rss_end: u64,
    reports: usize,
    scans: Option<(f64, f64)>,
}

struct Fleet<'a> {
    observer: &'a Path,
    py: &'a Path,
    script: &'a str,
    waits: &'a str,
}

fn one(f: &Fleet, n: usize, secs: u64, base: &Path) -> Result<Run> {
    let Fleet {
        observer,
        py,
        script,
        waits,
    } = *f;
    let dir = base.join(format!("n{n}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("reports"))?;
    // The watched name: a link to the interpreter, so comm is COMM.
    let bin = dir.join(COMM);
    std::os::unix::fs::symlink(py, &bin).context("linking the interpreter")?;
    let script = crate::root().join(script);
    let mut fleet = Vec::with_capacity(n);
    for _ in 0..n {
        fleet.push(Guard::new(
            Command::new(&bin)
                .arg(&script)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting a worker")?,
        ));
    }
    let port = h::free_port()?;
    let cfg = dir.join("observer.toml");
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\nwaits = \"{waits}\"\n[[rule]]\ncomm = \"{COMM}\"\n",
            dir.join("reports").to_str().context("path")?
        ),
    )?;
    let log = dir.join("daemon.log");
    let mut daemon = h::start_daemon(observer, &cfg, &log, port, &[])?;
    let dpid = daemon.pid;
    h::wait_metric(&mut daemon, port, &log, "observer_watched_processes", |w| {
        w as usize >= n
    })?;
    std::thread::sleep(WARMUP);
    let t0 = Instant::now();
    let cpu0 = cpu_secs(dpid).unwrap_or(0.0);
    std::thread::sleep(Duration::from_secs(30));
    let rss_30 = rss_kib(dpid).unwrap_or(0);
    std::thread::sleep(Duration::from_secs(secs.saturating_sub(30)));
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(dpid).unwrap_or(cpu0) - cpu0;
    let rss_end = rss_kib(dpid).unwrap_or(0);
    let text = h::metrics(port).unwrap_or_default();
    let scans = h::metric(&text, "observer_scan_duration_seconds_sum")
        .zip(h::metric(&text, "observer_scan_duration_seconds_count"));
    if daemon.wait(Duration::ZERO).is_some() {
        bail!(
            "the daemon exited; see {}",
            dir.join("daemon.log").display()
        );
    }
    daemon.signal(libc::SIGTERM);
    daemon.wait(h::OBSERVER_STOP_TIMEOUT);
    drop(fleet);
    let reports = std::fs::read_dir(dir.join("reports"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0);
    Ok(Run {
        procs: n,
        cpu_share: cpu / wall,
        rss_30,
        rss_end,
        reports,
        scans,
    })
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(o) = parse(args)? else {
        return Ok(());
    };
    h::require_root("bench fleet")?;
    let observer = h::observer_binary(&o.common)?;
    let py = python(o.python.as_deref())?;
    let base = h::out_dir(&format!("bench/fleet-{}", std::process::id()))?;
    let mut runs = Vec::new();
    for &n in &o.sizes {
        eprintln!(
            "xtask: fleet of {n} workers ({}), {} s after a {} s warm-up",
            py.display(),
            o.secs,
            WARMUP.as_secs()
        );
        let script = if o.idle {
            "bench/py_idle_service.py"
        } else {
            "bench/py_poll_service.py"
        };
        let f = Fleet {
            observer: &observer,
            py: &py,
            script,
            waits: &o.waits,
        };
        runs.push(one(&f, n, o.secs, &base)?);
    }
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "{}",
        h::header(
            if o.idle {
                "fleet: observer daemon on idle Python workers"
            } else {
                "fleet: observer daemon on healthy Python workers"
            },
            &format!("waits = \"{}\"\n", o.waits)
        )
    );
    let _ = writeln!(
        out,
        "  {:>6}  {:>10}  {:>12}  {:>10}  {:>10}  {:>8}  {:>8}  {:>7}",
        "procs", "CPU share", "per process", "RSS 30 s", "RSS end", "growth", "scan ms", "reports"
    );
    for r in &runs {
        let growth = r.rss_end as f64 / r.rss_30.max(1) as f64 - 1.0;
        let _ = writeln!(
            out,
            "  {:>6}  {:>9.1}%  {:>11.3}%  {:>7} KiB  {:>6} KiB  {:>+7.1}%  {:>8}  {:>7}",
            r.procs,
            r.cpu_share * 100.0,
            r.cpu_share * 100.0 / r.procs as f64,
            r.rss_30,
            r.rss_end,
            growth * 100.0,
            r.scans
                .filter(|s| s.1 > 0.0)
                .map_or("?".into(), |(sum, n)| format!("{:.2}", sum / n * 1e3)),
            r.reports
        );
    }
    if let Some(big) = runs.iter().max_by_key(|r| r.procs) {
        let ok = |b: bool| if b { "PASS" } else { "MISS" };
        let growth = big.rss_end as f64 / big.rss_30.max(1) as f64 - 1.0;
        let _ = writeln!(
            out,
            "  at {} workers: CPU {:.1}% {} (<= 5% of one CPU at 100); RSS growth {:+.1}% {} (<= 5%); reports {} {} (0)",
            big.procs,
            big.cpu_share * 100.0,
            ok(big.cpu_share <= 0.05 * big.procs as f64 / 100.0),
            growth * 100.0,
            ok(growth <= 0.05),
            runs.iter().map(|r| r.reports).sum::<usize>(),
            ok(runs.iter().all(|r| r.reports == 0))
        );
    }
    if let [a, b] = &runs[..] {
        let per = |r: &Run| r.cpu_share / r.procs as f64;
        let _ = writeln!(
            out,
            "  cost per process at {} vs {}: {:.2}x (1.0: linear)",
            b.procs,
            a.procs,
            per(b) / per(a).max(f64::MIN_POSITIVE)
        );
    }
    print!("{out}");
    let _ = std::fs::write(base.join("summary.txt"), &out);
    Ok(())
}
