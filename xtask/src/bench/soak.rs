//! `cargo xtask bench soak`: `observer daemon` under load for a while.
//!
//! `stress-ng --futex 2` runs the whole time under a watched name (a copy
//! of the binary called obsd-stress, so its futex storm goes through the
//! daemon's kernel filter and models), `stress-ng --clone 2` unwatched (a
//! storm of fork and exit notifications the daemon must sift), and a
//! deadlocking program (fixtures/abba.c) starts every 20 s and is killed
//! 5 s later. Reported: the daemon's RSS after warm-up and
//! at the end (flat: at most 10 % growth), whether every deadlock was
//! reported exactly once, drops and cap hits from its metrics, and its CPU
//! share. Not a test: it informs (PASS/MISS), it does not fail.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::harness::{self as h, Guard, cpu_secs, rss_kib};

const USAGE: &str = "\
usage: cargo xtask bench soak [--minutes M] [--every SECS] [--python N] [--quick] [--observer PATH]   (as root)

observer daemon for M minutes with stress-ng --futex 2 watched, stress-ng --clone 2 not,
and a deadlocking program every SECS seconds: RSS, reports, drops, CPU share.
Needs stress-ng (Debian package; ./x installs it for `bench soak`).

  --minutes M       how long (default 10; --quick: 1)
  --every SECS      start a deadlocking program this often (default 20)
  --python N        also N healthy Python workers, watched (bench/py_poll_service.py; default 0)";

const EXECS_USAGE: &str = "\
usage: cargo xtask bench execs [--execs N] [--quick] [--observer PATH]   (as root)

An exec storm of /bin/true under observer daemon with its kernel exec filter, with the
process events connector, and with no daemon: wall time and CPU.

  --execs N         execs per storm (default 5000; --quick: 1000)";

/// A report must appear within this long of the deadlock.
const REPORT_WITHIN: Duration = Duration::from_secs(5);
const SCENARIO_COMM: &str = "obsd-soak";
const STRESS_COMM: &str = "obsd-stress";
const PYTHON_COMM: &str = "obsd-pyworker";

struct Opts {
    minutes: f64,
    every: f64,
    python: usize,
    common: h::Common,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let (mut minutes, mut every, mut python) = (10.0, 20.0, 0);
    let usage = format!("{USAGE}\n{}", h::COMMON_OPTIONS);
    let Some(common) = h::parse(args, &usage, false, |a, it| {
        match a {
            "--minutes" => minutes = it.number("--minutes")?,
            "--every" => every = it.number("--every")?,
            "--python" => python = it.number("--python")?,
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(None);
    };
    if common.quick {
        minutes = f64::min(minutes, 1.0);
    }
    if !(minutes > 0.0 && every >= REPORT_WITHIN.as_secs_f64()) {
        bail!("--minutes must be > 0 and --every >= 5 (see --help)");
    }
    Ok(Some(Opts {
        minutes,
        every,
        python,
        common,
    }))
}

/// (pid, comm, kind) of every report in `dir`.
fn reports(dir: &Path) -> Vec<(u32, String, String)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let id = n.strip_suffix(".json")?;
            // <time>-<pid>-<comm>-<kind>; comm may contain '-', kind does not.
            let (_, rest) = id.split_once('-')?;
            let (pid, rest) = rest.split_once('-')?;
            let (comm, kind) = rest.rsplit_once('-')?;
            Some((pid.parse().ok()?, comm.to_owned(), kind.to_owned()))
        })
        .collect()
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(o) = parse(args)? else {
        return Ok(());
    };
    h::require_root("bench soak")?;
    if Command::new("stress-ng").arg("--version").output().is_err() {
        bail!("stress-ng not found (apt-get install stress-ng; ./x bench soak installs it)");
    }
    let observer = h::observer_binary(&o.common)?;
    let base = h::out_dir(&format!("bench/soak-{}", std::process::id()))?;
    let scenario = h::compile(&base, "fixtures/abba.c", SCENARIO_COMM)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let report_dir = base.join("reports");
    let cfg = base.join("observer.toml");
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\nmax_reports = 0\n\
             [[rule]]\ncomm = \"{SCENARIO_COMM}\"\n[[rule]]\ncomm = \"{STRESS_COMM}\"\n\
             [[rule]]\ncomm = \"{PYTHON_COMM}\"\n",
            report_dir.to_str().context("path")?
        ),
    )?;
    let mut daemon = h::start_daemon(&observer, &cfg, &base.join("daemon.log"), port, &[])?;
    let dpid = daemon.pid;
    let total = Duration::from_secs_f64(o.minutes * 60.0);
    let warmup = (total / 10).max(Duration::from_secs(10)).min(total / 2);
    let every = Duration::from_secs_f64(o.every);
    eprintln!(
        "xtask: soak {:.1} min: stress-ng --futex 2 (watched) and --clone 2 (not), a deadlock every {:.0} s; daemon pid {dpid}, log {}",
        o.minutes,
        o.every,
        base.join("daemon.log").display()
    );
    let stress_ng = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v stress-ng"])
            .output()?
            .stdout,
    )?;
    let watched_stress = base.join(STRESS_COMM);
    std::fs::copy(stress_ng.trim(), &watched_stress).context("copying stress-ng")?;
    let stress = |bin: &Path, what: &str| -> Result<Guard> {
        Ok(Guard::new(
            Command::new(bin)
                .args([what, "2", "--timeout"])
                .arg(format!("{}s", total.as_secs() + 5))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting stress-ng")?,
        ))
    };
    let _futex = stress(&watched_stress, "--futex")?;
    let mut workers = Vec::new();
    if o.python > 0 {
        let py = super::fleet::python(None)?;
        let bin = base.join(PYTHON_COMM);
        let _ = std::fs::remove_file(&bin);
        std::os::unix::fs::symlink(&py, &bin).context("linking python3")?;
        let script = crate::root().join("bench/py_poll_service.py");
        for _ in 0..o.python {
            workers.push(Guard::new(
                Command::new(&bin)
                    .arg(&script)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting a Python worker")?,
            ));
        }
    }
    let _clone = stress(Path::new(stress_ng.trim()), "--clone")?;
    let t0 = Instant::now();
    let cpu0 = cpu_secs(dpid).unwrap_or(0.0);
    let mut rss_warm = None;
    let rss_start = rss_kib(dpid);
    let mut rss_max = 0u64;
    let mut started: Vec<u32> = Vec::new();
    let mut running: Vec<(Instant, Guard)> = Vec::new();
    let mut next = t0;
    while t0.elapsed() < total {
        if Instant::now() >= next {
            let c = Command::new(&scenario)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting the scenario")?;
            started.push(c.id());
            running.push((Instant::now(), Guard::new(c)));
            next += every;
        }
        running.retain(|(t, _)| t.elapsed() < REPORT_WITHIN);
        if let Some(r) = rss_kib(dpid) {
            rss_max = rss_max.max(r);
            if rss_warm.is_none() && t0.elapsed() >= warmup {
                rss_warm = Some(r);
            }
        }
        if daemon.wait(Duration::ZERO).is_some() {
            bail!(
                "the daemon exited during the soak; see {}",
                base.join("daemon.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(dpid).unwrap_or(cpu0) - cpu0;
    let rss_end = rss_kib(dpid);
    running.clear();
    let text = h::metrics(port).unwrap_or_default();
    daemon.signal(libc::SIGTERM);
    daemon.wait(h::OBSERVER_STOP_TIMEOUT);

    let reps = reports(&report_dir);
    let mut once = 0;
    let mut missed = Vec::new();
    let mut dup = Vec::new();
    for pid in &started {
        let n = reps
            .iter()
            .filter(|(p, _, k)| p == pid && k == "deadlock")
            .count();
        match n {
            1 => once += 1,
            0 => missed.push(*pid),
            _ => dup.push(*pid),
        }
    }
    let mut other: std::collections::BTreeMap<String, usize> = Default::default();
    for (pid, _, kind) in &reps {
        if !started.contains(pid) {
            *other.entry(kind.clone()).or_default() += 1;
        }
    }
    let series = |prefix: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    };
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\nsoak: {:.1} min, daemon {}",
        wall / 60.0,
        observer.display()
    );
    let growth = match (rss_warm, rss_end) {
        (Some(w), Some(e)) if w > 0 => Some(e as f64 / w as f64 - 1.0),
        _ => None,
    };
    let _ = writeln!(
        out,
        "  RSS: start {} KiB, after warm-up ({:.0} s) {} KiB, end {} KiB, max {rss_max} KiB: growth after warm-up {} {}",
        rss_start.unwrap_or(0),
        warmup.as_secs_f64(),
        rss_warm.unwrap_or(0),
        rss_end.unwrap_or(0),
        growth.map_or("?".into(), |g| format!("{:+.1}%", g * 100.0)),
        if growth.is_some_and(|g| g <= 0.10) {
            "PASS (<= 10%)"
        } else {
            "MISS (> 10%)"
        }
    );
    let _ = writeln!(
        out,
        "  deadlocks: {} started, {once} reported exactly once, {} missed {:?}, {} reported more than once {:?}: {}",
        started.len(),
        missed.len(),
        missed,
        dup.len(),
        dup,
        if once == started.len() {
            "PASS"
        } else {
            "MISS"
        }
    );
    let _ = writeln!(
        out,
        "  other findings (watched stress-ng --futex{}): {other:?}",
        if o.python > 0 {
            format!(", {} Python workers", o.python)
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        out,
        "  CPU: {cpu:.1} s over {wall:.0} s: {:.1}% of one CPU",
        cpu / wall * 100.0
    );
    for p in [
        "observer_ringbuf_drops_total",
        "observer_kernel_drops_total",
        "observer_cap_hits_total",
        "observer_events_total",
        "observer_exec_notes_total",
        "observer_scan_duration_seconds_sum",
        "observer_scan_duration_seconds_count",
    ] {
        let v = series(p);
        if v.is_empty() {
            let _ = writeln!(out, "  {p}: none");
        }
        for l in v {
            let _ = writeln!(out, "  {l}");
        }
    }
    print!("{out}");
    let _ = std::fs::write(base.join("summary.txt"), &out);
    Ok(())
}

/// `cargo xtask bench execs [--execs N] [--observer PATH]`: what an exec
/// storm of programs no rule names costs the daemon, with the kernel's
/// exec filter and with the process events connector (every exec and fork
/// sent), against no daemon at all, in the same run (two rounds).
pub fn exec_storm(args: &[String]) -> Result<()> {
    let mut n: u32 = 5000;
    let usage = format!("{EXECS_USAGE}\n{}", h::COMMON_OPTIONS);
    let Some(c) = h::parse(args, &usage, false, |a, it| {
        match a {
            "--execs" => n = it.number("--execs")?,
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(());
    };
    if c.quick {
        n = n.min(1000);
    }
    h::require_root("bench execs")?;
    let observer = h::observer_binary(&c)?;
    let base = h::out_dir(&format!("bench/execs-{}", std::process::id()))?;
    let storm = format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done");
    println!("exec storm: {n} x /bin/true from sh (a fork and an exec each), no rule names them");
    println!(
        "{:<10} {:>9} {:>7} {:>13} {:>12} {:>10}",
        "daemon", "storm s", "ratio", "daemon CPU s", "notes sent", "filtered"
    );
    for round in 0..2 {
        let mut none_s = 0.0;
        for mode in ["none", "connector", "kernel"] {
            let mut daemon = None;
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            if mode != "none" {
                let cfg = base.join(format!("{mode}.toml"));
                std::fs::write(
                    &cfg,
                    format!(
                        "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\n[[rule]]\ncomm = \"obsd-nothing\"\n",
                        base.join("reports").to_str().context("path")?
                    ),
                )?;
                let log = base.join(format!("{mode}-{round}.log"));
                let filter = if mode == "kernel" { "1" } else { "0" };
                let d = h::start_daemon(
                    &observer,
                    &cfg,
                    &log,
                    port,
                    &[("OBSERVER_EXEC_FILTER", filter)],
                )?;
                daemon = Some(d);
            }
            let dpid = daemon.as_ref().map(|d| d.pid);
            // The daemon's own rate (scans, samples) with no storm.
            let idle0 = dpid.and_then(cpu_secs).unwrap_or(0.0);
            std::thread::sleep(Duration::from_secs(3));
            let cpu0 = dpid.and_then(cpu_secs).unwrap_or(0.0);
            let idle_rate = (cpu0 - idle0) / 3.0;
            let t = Instant::now();
            let st = Command::new("sh").args(["-c", &storm]).status()?;
            let wall = t.elapsed().as_secs_f64();
            if !st.success() {
                bail!("the storm failed");
            }
            // What was queued is read now; then the counters (every second).
            std::thread::sleep(Duration::from_millis(2500));
            let cpu = dpid.and_then(cpu_secs).map_or(0.0, |c| c - cpu0)
                - idle_rate * t.elapsed().as_secs_f64();
            let text = h::metrics(port).unwrap_or_default();
            let get = |name: &str| -> Option<f64> {
                text.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                    .and_then(|v| v.trim().parse().ok())
            };
            let sent = get("observer_exec_notes_total{result=\"sent\"}")
                .zip(get("observer_exec_notes_total{result=\"fork\"}"))
                .map(|(a, b)| a + b);
            let filtered = get("observer_exec_notes_total{result=\"filtered\"}");
            if mode == "none" {
                none_s = wall;
            }
            println!(
                "{:<10} {wall:>9.2} {:>7.2} {:>13} {:>12} {:>10}",
                format!("{mode}{}", if round == 1 { "'" } else { "" }),
                wall / none_s,
                if dpid.is_some() {
                    format!("{cpu:.2}")
                } else {
                    "-".into()
                },
                match (mode, sent) {
                    ("none", _) => "-".into(),
                    ("connector", _) => format!(">= {}", 2 * n),
                    (_, Some(s)) => format!("{s:.0}"),
                    _ => "?".into(),
                },
                filtered.map_or("-".into(), |f| format!("{f:.0}")),
            );
            if let Some(mut d) = daemon {
                d.signal(libc::SIGTERM);
                d.wait(h::OBSERVER_STOP_TIMEOUT);
            }
        }
    }
    println!(
        "(connector: the kernel sends every exec and fork of the host to the daemon, which reads /proc for each exec)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names() {
        let d = std::env::temp_dir().join(format!("soak-names-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        for n in [
            "20261201T000000.000Z-12-stress-ng-futex-long_wait.json",
            "20261201T000000.000Z-13-obsd-soak-deadlock.json",
            "20261201T000000.000Z-13-obsd-soak-deadlock.txt",
        ] {
            std::fs::write(d.join(n), "").unwrap();
        }
        let mut r = reports(&d);
        r.sort();
        assert_eq!(
            r,
            vec![
                (12, "stress-ng-futex".into(), "long_wait".into()),
                (13, "obsd-soak".into(), "deadlock".into())
            ]
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
