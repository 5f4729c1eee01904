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
    io::{Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask bench soak [--minutes M] [--every SECS] [--observer PATH]   (as root)

observer daemon for M minutes with stress-ng --futex 2 watched, stress-ng --clone 2 not,
and a deadlocking program every SECS seconds: RSS, reports, drops, CPU share.

  --minutes M      how long (default 10)
  --every SECS     start a deadlocking program this often (default 20)
  --observer PATH  use this observer binary instead of building target/release/observer

Needs stress-ng (Debian package; ./x installs it for `bench soak`).";

/// A report must appear within this long of the deadlock.
const REPORT_WITHIN: Duration = Duration::from_secs(5);
const SCENARIO_COMM: &str = "obsd-soak";
const STRESS_COMM: &str = "obsd-stress";

struct Opts {
    minutes: f64,
    every: f64,
    observer: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let mut o = Opts {
        minutes: 10.0,
        every: 20.0,
        observer: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = |what: &str| -> Result<String> {
            it.next()
                .cloned()
                .with_context(|| format!("{what} needs a value"))
        };
        match a.as_str() {
            "--minutes" => o.minutes = val("--minutes")?.parse().context("--minutes")?,
            "--every" => o.every = val("--every")?.parse().context("--every")?,
            "--observer" => o.observer = Some(PathBuf::from(val("--observer")?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            x => bail!("unknown argument {x}\n{USAGE}"),
        }
    }
    if !(o.minutes > 0.0 && o.every >= REPORT_WITHIN.as_secs_f64()) {
        bail!("--minutes must be > 0 and --every >= 5\n{USAGE}");
    }
    Ok(Some(o))
}

/// Kills (and reaps) a child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// utime + stime, in seconds.
fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

fn metrics(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
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
    if !crate::is_root() {
        bail!("the soak benchmark needs root: sudo ./x bench soak");
    }
    if Command::new("stress-ng").arg("--version").output().is_err() {
        bail!("stress-ng not found (apt-get install stress-ng; ./x bench soak installs it)");
    }
    let observer = match o.observer.clone() {
        Some(p) => p,
        None => {
            crate::build_release()?;
            crate::root().join("target/release/observer")
        }
    };
    let base = crate::root().join(format!("target/bench/soak-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let scenario = base.join(SCENARIO_COMM);
    crate::run({
        let mut c = Command::new("gcc");
        c.args(["-O2", "-g", "-pthread", "-o"])
            .arg(&scenario)
            .arg(crate::root().join("fixtures/abba.c"));
        c
    })?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let report_dir = base.join("reports");
    let cfg = base.join("observer.toml");
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\nmax_reports = 0\n\
             [[rule]]\ncomm = \"{SCENARIO_COMM}\"\n[[rule]]\ncomm = \"{STRESS_COMM}\"\n",
            report_dir.to_str().context("path")?
        ),
    )?;
    let log = std::fs::File::create(base.join("daemon.log"))?;
    let mut daemon = Guard(
        Command::new(&observer)
            .args(["daemon", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the daemon")?,
    );
    let dpid = daemon.0.id();
    let t_up = Instant::now();
    while metrics(port).is_none() {
        if t_up.elapsed() > Duration::from_secs(60) || daemon.0.try_wait()?.is_some() {
            bail!(
                "the daemon did not come up; see {}",
                base.join("daemon.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
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
        Ok(Guard(
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
            running.push((Instant::now(), Guard(c)));
            next += every;
        }
        running.retain(|(t, _)| t.elapsed() < REPORT_WITHIN);
        if let Some(r) = rss_kib(dpid) {
            rss_max = rss_max.max(r);
            if rss_warm.is_none() && t0.elapsed() >= warmup {
                rss_warm = Some(r);
            }
        }
        if daemon.0.try_wait()?.is_some() {
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
    let text = metrics(port).unwrap_or_default();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(dpid as i32, libc::SIGTERM) };
    let _ = daemon.0.wait();

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
        "  other findings (watched stress-ng --futex): {other:?}"
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
    let mut observer = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--execs" => n = it.next().context("--execs N")?.parse().context("--execs")?,
            "--observer" => observer = Some(PathBuf::from(it.next().context("--observer PATH")?)),
            x => bail!(
                "unknown argument {x}\nusage: cargo xtask bench execs [--execs N] [--observer PATH]"
            ),
        }
    }
    if !crate::is_root() {
        bail!("the exec benchmark needs root");
    }
    let observer = match observer {
        Some(p) => p,
        None => {
            crate::build_release()?;
            crate::root().join("target/release/observer")
        }
    };
    let base = crate::root().join(format!("target/bench/execs-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
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
                let log = std::fs::File::create(base.join(format!("{mode}-{round}.log")))?;
                let d = Guard(
                    Command::new(&observer)
                        .args(["daemon", "--config"])
                        .arg(&cfg)
                        .env(
                            "OBSERVER_EXEC_FILTER",
                            if mode == "kernel" { "1" } else { "0" },
                        )
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(log)
                        .spawn()?,
                );
                let t = Instant::now();
                while metrics(port).is_none() {
                    if t.elapsed() > Duration::from_secs(60) {
                        bail!("the daemon did not come up");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                daemon = Some(d);
            }
            let dpid = daemon.as_ref().map(|d| d.0.id());
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
            let text = metrics(port).unwrap_or_default();
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
            if let Some(d) = daemon {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(d.0.id() as i32, libc::SIGTERM) };
                let mut d = d;
                let _ = d.0.wait();
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
