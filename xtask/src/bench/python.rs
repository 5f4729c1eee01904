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
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask bench python [--rounds N] [--observer PATH]   (as root: sudo ./x bench python)

`observer dump -p PID` of a hung 50-thread Python process (a 50-long lock ring) against
`py-spy dump --pid PID` on the same process, for each CPython installed; target <= 1.0x.";

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

struct Opts {
    rounds: usize,
    observer: Option<PathBuf>,
}

fn parse(args: &[String]) -> Result<Option<Opts>> {
    let mut o = Opts {
        rounds: 10,
        observer: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => {
                o.rounds = it
                    .next()
                    .context("--rounds needs a number")?
                    .parse()
                    .context("--rounds")?;
                if o.rounds == 0 {
                    bail!("--rounds must be at least 1");
                }
            }
            "--observer" => o.observer = Some(it.next().context("--observer needs a path")?.into()),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Some(o))
}

/// py-spy on PATH, or installed with pip into a venv under `out`.
fn py_spy(out: &Path) -> Result<PathBuf> {
    if let Ok(p) = which("py-spy") {
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

fn which(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not on PATH"))
}

struct Target(Child);

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(python: &str, script: &Path) -> Result<Target> {
    let mut child = Command::new(python)
        .arg(script)
        .arg(THREADS.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {python}"))?;
    let out = child.stdout.take().unwrap();
    let t = Target(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if l == "ready" {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .context("the workload never got ready")?;
    Ok(t)
}

/// Wall time of one run, and its exit code.
fn time(cmd: &mut Command) -> Result<(Duration, Option<i32>)> {
    let t0 = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("running {cmd:?}"))?;
    Ok((t0.elapsed(), st.code()))
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn main(args: &[String]) -> Result<()> {
    let Some(opts) = parse(args)? else {
        return Ok(());
    };
    if !crate::is_root() {
        bail!("reading another process's memory needs root: run `sudo ./x bench python`");
    }
    let observer = match &opts.observer {
        Some(p) => p.clone(),
        None => {
            crate::build_release().map_err(|e| anyhow::anyhow!("building the observer: {e}"))?;
            crate::root().join("target/release/observer")
        }
    };
    let out = crate::root().join("target/bench-python");
    std::fs::create_dir_all(&out)?;
    let script = out.join("ring50.py");
    std::fs::write(&script, WORKLOAD)?;
    let spy = py_spy(&out)?;
    println!(
        "bench python: dump of a hung {THREADS}-thread Python process (one {THREADS}-long lock ring), median of {} rounds",
        opts.rounds
    );
    println!(
        "{:<12} {:>14} {:>14} {:>18} {:>8}  target <= 1.00",
        "CPython", "observer dump", "py-spy dump", "py-spy nonblocking", "ratio"
    );
    let mut missed = false;
    for (label, python) in pythons() {
        let python = python.as_str();
        if !Path::new(python).exists() {
            println!("{label:<12} skipped: {python} is not installed");
            continue;
        }
        let target = start(python, &script)?;
        let pid = target.0.id().to_string();
        // Let every thread reach its futex wait: the observer must report the ring.
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, code) = time(Command::new(&observer).args(["dump", "-p", &pid]))?;
            if code == Some(3) {
                break;
            }
            if Instant::now() > end {
                bail!("{label}: observer dump never reported the {THREADS}-thread deadlock");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (mut ours, mut theirs, mut theirs_nb) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..opts.rounds {
            let (d, code) = time(Command::new(&observer).args(["dump", "-p", &pid]))?;
            if code != Some(3) {
                bail!("{label}: observer dump exited {code:?}, expected 3 (deadlock)");
            }
            ours.push(d);
            let (d, code) = time(Command::new(&spy).args(["dump", "--pid", &pid]))?;
            if code != Some(0) {
                bail!("{label}: py-spy dump exited {code:?}");
            }
            theirs.push(d);
            let (d, _) = time(Command::new(&spy).args(["dump", "--nonblocking", "--pid", &pid]))?;
            theirs_nb.push(d);
        }
        let (a, b, c) = (
            median(&mut ours),
            median(&mut theirs),
            median(&mut theirs_nb),
        );
        let ratio = a.as_secs_f64() / b.as_secs_f64();
        let verdict = if ratio <= 1.0 { "PASS" } else { "MISS" };
        missed |= ratio > 1.0;
        println!(
            "{label:<12} {:>14} {:>14} {:>18} {:>7.2}x  {verdict}",
            ms(a),
            ms(b),
            ms(c),
            ratio
        );
        drop(target);
    }
    if missed {
        println!("(a MISS does not fail the command)");
    }
    Ok(())
}
