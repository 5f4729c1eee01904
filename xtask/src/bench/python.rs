//! `cargo xtask bench python`: `observer dump` of a hung 50-thread Python
//! process against `py-spy dump` of the same process, in the same run.
//!
//! The workload (written to target/bench-python/ring50.py) starts 50
//! threads in one 50-long `with`-lock ring, each a few Python frames deep,
//! and the main thread joins them: every thread is blocked, and the one
//! finding names all 50. For each CPython on the machine the two tools are
//! run alternately, `--rounds` times each, on the same hung process; the
//! medians are compared. Target: observer / py-spy <= 1.0: the observer also
//! rebuilds the lock graph, and still costs no more than py-spy's names
//! and lines. py-spy is
//! installed with pip into target/bench-python/venv when it is not on PATH.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::harness::{self as h, Check, Guard, Lines, Verdicts};

const USAGE: &str = "\
usage: cargo xtask bench python [--rounds N] [--quick] [--observer PATH]   (as root: sudo ./x bench python)

`observer dump -p PID` of a hung 50-thread Python process (a 50-long lock ring) against
`py-spy dump --pid PID` on the same process, for each CPython installed; target <= 1.0x.

  --rounds N        runs of each tool per CPython (default 10; --quick: 3)";

const THREADS: usize = 50;

/// Debian's and pyenv's CPythons, and 3.14/3.15 unpacked by ./x under
/// target/pythons.
pub fn pythons() -> Vec<(&'static str, String)> {
    let unpacked = |v: &str| {
        crate::root()
            .join(format!("target/pythons/{v}/usr/bin/python{v}"))
            .to_string_lossy()
            .into_owned()
    };
    vec![
        ("debian 3.11", "/usr/bin/python3.11".into()),
        ("3.11.7", "/root/.pyenv/versions/3.11.7/bin/python3".into()),
        ("3.12.1", "/root/.pyenv/versions/3.12.1/bin/python3".into()),
        ("3.13.0", "/root/.pyenv/versions/3.13.0/bin/python3".into()),
        ("3.14", unpacked("3.14")),
        ("3.15", unpacked("3.15")),
    ]
}

const WORKLOAD: &str = r#"
import sys
import threading

N = int(sys.argv[1])
locks = [threading.Lock() for _ in range(N)]
gate = threading.Barrier(N)
started = threading.Semaphore(0)


def inner(first, second):
    with first:
        started.release()
        gate.wait()
        with second:
            pass


def middle(i):
    inner(locks[i], locks[(i + 1) % N])


def outer(i):
    middle(i)


threads = [threading.Thread(target=outer, args=(i,), name=f"ring-{i}") for i in range(N)]
for t in threads:
    t.start()
for _ in range(N):
    started.acquire()
print("ready", flush=True)
for t in threads:
    t.join()
"#;

/// py-spy on PATH, or installed with pip into a venv under `out`.
fn py_spy(out: &Path) -> Result<PathBuf> {
    if let Some(p) = h::which("py-spy") {
        return Ok(p);
    }
    let venv = out.join("venv");
    let bin = venv.join("bin/py-spy");
    if bin.is_file() {
        return Ok(bin);
    }
    let python = pythons()
        .into_iter()
        .map(|p| p.1)
        .take(4)
        .rev()
        .find(|p| Path::new(p).exists())
        .context("no CPython to install py-spy with")?;
    eprintln!("xtask: installing py-spy with pip into {}", venv.display());
    let ok = Command::new(python)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()?
        .success()
        && Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "py-spy"])
            .status()?
            .success();
    if !ok || !bin.is_file() {
        bail!("could not install py-spy with pip");
    }
    Ok(bin)
}

/// The hung ring under `python`, once every thread holds its first lock.
fn start(python: &str, script: &Path) -> Result<Guard> {
    let mut child = Command::new(python)
        .arg(script)
        .arg(THREADS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {python}"))?;
    let out = Lines::of(child.stdout.take().unwrap());
    let g = Guard::new(child);
    let end = Instant::now() + Duration::from_secs(30);
    while out.next(
        end.saturating_duration_since(Instant::now()),
        "the workload",
    )? != "ready"
    {}
    Ok(g)
}

/// A dump must end well within this.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Wall time of one run in ms, and its exit code.
fn time(cmd: Command) -> Result<(f64, Option<i32>)> {
    let shown = format!("{cmd:?}");
    let t = h::run_timed(cmd, RUN_TIMEOUT)?
        .with_context(|| format!("{shown} did not end within {RUN_TIMEOUT:?}"))?;
    Ok((t.ms(), t.status.code()))
}

fn dump(observer: &Path, pid: &str) -> Command {
    let mut c = Command::new(observer);
    c.args(["dump", "-p", pid]);
    c
}

fn spy(spy: &Path, args: &[&str], pid: &str) -> Command {
    let mut c = Command::new(spy);
    c.arg("dump").args(args).args(["--pid", pid]);
    c
}

pub fn main(args: &[String]) -> Result<()> {
    let mut rounds: usize = 10;
    let usage = format!("{USAGE}\n{}", h::COMMON_OPTIONS);
    let Some(c) = h::parse(args, &usage, false, |a, it| {
        match a {
            "--rounds" => rounds = it.number("--rounds")?,
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(());
    };
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    if c.quick {
        rounds = rounds.min(3);
    }
    h::require_root("bench python")?;
    let observer = h::observer_binary(&c)?;
    let out = h::out_dir("bench-python")?;
    let script = out.join("ring50.py");
    std::fs::write(&script, WORKLOAD)?;
    let spy_bin = py_spy(&out)?;
    println!(
        "bench python: dump of a hung {THREADS}-thread Python process (one {THREADS}-long lock ring), median of {rounds} rounds",
    );
    println!(
        "{:<12} {:>14} {:>14} {:>18} {:>8}  target <= 1.00",
        "CPython", "observer dump", "py-spy dump", "py-spy nonblocking", "ratio"
    );
    let mut verdicts = Verdicts::default();
    for (label, python) in pythons() {
        let python = python.as_str();
        if !Path::new(python).exists() {
            println!("{label:<12} skipped: {python} is not installed");
            continue;
        }
        let target = start(python, &script)?;
        let pid = target.pid.to_string();
        // Let every thread reach its futex wait: the observer must report the ring.
        let end = Instant::now() + Duration::from_secs(20);
        while time(dump(&observer, &pid))?.1 != Some(3) {
            if Instant::now() > end {
                bail!("{label}: observer dump never reported the {THREADS}-thread deadlock");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (mut ours, mut theirs, mut theirs_nb) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (d, code) = time(dump(&observer, &pid))?;
            if code != Some(3) {
                bail!("{label}: observer dump exited {code:?}, expected 3 (deadlock)");
            }
            ours.push(d);
            let (d, code) = time(spy(&spy_bin, &[], &pid))?;
            if code != Some(0) {
                bail!("{label}: py-spy dump exited {code:?}");
            }
            theirs.push(d);
            theirs_nb.push(time(spy(&spy_bin, &["--nonblocking"], &pid))?.0);
        }
        let (a, b, nb) = (h::median(&ours), h::median(&theirs), h::median(&theirs_nb));
        let check = Check::at_most(
            format!("{label}: observer dump / py-spy dump (median)"),
            a / b,
            1.0,
            h::ratio,
        );
        let verdict = if check.pass == Some(true) {
            "PASS"
        } else {
            "MISS"
        };
        verdicts.add(check);
        println!(
            "{label:<12} {:>14} {:>14} {:>18} {:>7.2}x  {verdict}",
            h::ms(a),
            h::ms(b),
            h::ms(nb),
            a / b
        );
        drop(target);
    }
    println!("\n{}", verdicts.summary());
    Ok(())
}
