//! Project tasks: `cargo xtask test|demo|bench|vmlinux|record|man|wheel` (usually via ./x).

mod bench;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn run(mut c: Command) -> Result<()> {
    let shown = format!("{c:?}");
    eprintln!("xtask: {shown}");
    let st = c.status().with_context(|| format!("running {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

/// `./x` sets X_LOG: build output goes to that file and the terminal shows
/// one line per step (and the log's tail on failure).
fn x_log() -> Option<PathBuf> {
    std::env::var_os("X_LOG").map(PathBuf::from)
}

/// The last `n` lines of the log, for a failed step.
fn log_tail(log: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A build step: under `./x` one line on the terminal and the output in the
/// log; else like `run`.
pub fn run_logged(what: &str, mut c: Command) -> Result<()> {
    let Some(log) = x_log() else {
        return run(c);
    };
    let shown = format!("{c:?}");
    eprintln!(
        "x: {what} (log: {})",
        log.strip_prefix(root()).unwrap_or(&log).display()
    );
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("opening {}", log.display()))?;
    use std::io::Write;
    writeln!(f, "x: {what}: {shown}")?;
    c.stdout(f.try_clone()?).stderr(f);
    let st = c.status().with_context(|| format!("running {shown}"))?;
    if !st.success() {
        eprintln!(
            "x: {what} failed ({st}); the last 40 lines of {}:\n{}",
            log.display(),
            log_tail(&log, 40)
        );
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

/// `cargo build --release -p observer` (the demo's and the benchmarks').
pub fn build_release() -> Result<()> {
    run_logged("building observer (release)", {
        let mut c = cargo();
        c.args(["build", "--release", "-p", "observer"]);
        c
    })
}

/// Processes holding a BPF program id open (from /proc/*/fdinfo).
fn prog_holders() -> Vec<(u32, u32, PathBuf)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            if let Some(id) = info.lines().find_map(|l| l.strip_prefix("prog_id:"))
                && let Ok(id) = id.trim().parse()
            {
                out.push((id, pid, exe.clone()));
            }
        }
    }
    out
}

/// Our programs still loaded by a binary of this checkout (other
/// observers on the machine are not this run's business).
pub fn leftover_programs() -> Vec<String> {
    // Every program in the observer's object, read from the object itself.
    let ours_names = observer_ebpf::observer_program_names();
    let mut left = Vec::new();
    for _ in 0..50 {
        let Ok(out) = Command::new("bpftool").args(["prog", "show"]).output() else {
            return Vec::new();
        };
        let holders = prog_holders();
        let ours = root().join("target");
        left = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .any(|w| ours_names.iter().any(|p| p == w))
            })
            .filter_map(|l| {
                let id: u32 = l.split(':').next()?.trim().parse().ok()?;
                let held: Vec<_> = holders.iter().filter(|h| h.0 == id).collect();
                // Pinned or held by a binary of this checkout: ours to clean up.
                let mine = held.is_empty() || held.iter().any(|h| h.2.starts_with(&ours));
                mine.then(|| {
                    format!(
                        "{l} (held by {:?})",
                        held.iter().map(|h| h.1).collect::<Vec<_>>()
                    )
                })
            })
            .collect();
        if left.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    left
}

fn test(args: &[String]) -> Result<()> {
    run_logged("building (all targets)", {
        let mut c = cargo();
        c.args(["build", "--workspace", "--all-targets"]);
        c
    })?;
    run({
        let mut c = cargo();
        c.args(["test", "--workspace"]);
        c
    })?;
    if !is_root() {
        bail!("the BPF integration tests need root: run `sudo ./x test`");
    }
    // What tests/wheel.rs installs into a fresh venv.
    wheel()?;
    run({
        let mut c = cargo();
        c.args([
            "test",
            "-p",
            "observer",
            "--tests",
            "--no-fail-fast",
            "--",
            "--ignored",
            "--test-threads=1",
        ]);
        c.args(args);
        c
    })?;
    let left = leftover_programs();
    if !left.is_empty() {
        bail!(
            "BPF programs left loaded after the tests:\n{}",
            left.join("\n")
        );
    }
    eprintln!("xtask: all tests passed; no BPF programs left loaded");
    Ok(())
}

/// maturin, in a venv `./x` makes (pinned there; xtask only uses it).
const MATURIN: &str = "target/maturin/bin/maturin";

/// `cargo xtask wheel`: the `observer` command as a wheel in target/wheels
/// (the project `observer-hang`, see pyproject.toml), with the man pages and
/// shell completions as data files. Returns the wheel's path.
pub fn wheel() -> Result<PathBuf> {
    let maturin = root().join(MATURIN);
    if !maturin.exists() {
        bail!(
            "{} is missing: `./x wheel` installs maturin",
            maturin.display()
        );
    }
    let t0 = std::time::Instant::now();
    // The binary first: the completions come from it, and maturin then
    // only packs it (same profile, nothing to rebuild).
    run_logged("building observer (wheel profile)", {
        let mut c = cargo();
        c.args(["build", "--profile", "wheel", "-p", "observer"]);
        c
    })?;
    let bin = root().join("target/wheel/observer");
    // Laid out as the wheel's .data/data/ dir: installed under the venv's
    // (or prefix's) share/.
    let data = root().join("target/wheel-data");
    let _ = std::fs::remove_dir_all(&data);
    let share = data.join("data/share");
    let man1 = share.join("man/man1");
    std::fs::create_dir_all(&man1)?;
    let mut pages = 0;
    for e in std::fs::read_dir(root().join("man"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "1") {
            std::fs::copy(&p, man1.join(p.file_name().unwrap()))?;
            pages += 1;
        }
    }
    if pages == 0 {
        bail!("no man pages in man/ (`./x man` writes them)");
    }
    for (shell, dest) in [
        ("bash", "bash-completion/completions/observer"),
        ("zsh", "zsh/site-functions/_observer"),
        ("fish", "fish/vendor_completions.d/observer.fish"),
    ] {
        let out = Command::new(&bin)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() || out.stdout.is_empty() {
            bail!("`observer completions {shell}` failed ({})", out.status);
        }
        let dest = share.join(dest);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::write(&dest, &out.stdout)?;
    }
    // One wheel in target/wheels: the one this build made.
    let wheels = root().join("target/wheels");
    if let Ok(rd) = std::fs::read_dir(&wheels) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with("observer_hang-") && n.ends_with(".whl") {
                std::fs::remove_file(e.path())?;
            }
        }
    }
    run_logged("packing the wheel (maturin)", {
        let mut c = Command::new(&maturin);
        c.current_dir(root()).arg("build").arg("--out").arg(&wheels);
        c
    })?;
    let whl = std::fs::read_dir(&wheels)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("observer_hang-"))
        })
        .context("maturin wrote no observer_hang wheel")?;
    eprintln!(
        "x: {} ({:.1} MB, {:.0} s)",
        whl.strip_prefix(root()).unwrap_or(&whl).display(),
        std::fs::metadata(&whl)?.len() as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(whl)
}

fn demo() -> Result<()> {
    if !is_root() {
        bail!("the demo loads BPF programs: run `sudo ./x demo`");
    }
    build_release()?;
    let out = root().join("target/fixtures");
    std::fs::create_dir_all(&out)?;
    let bin = out.join("demo_bank");
    run_logged("compiling demo/bank.c", {
        let mut c = Command::new("gcc");
        c.args(["-O2", "-g", "-pthread", "-o"])
            .arg(&bin)
            .arg(root().join("demo/bank.c"));
        c
    })?;
    eprintln!(
        "x: observer run --kill-on-deadlock -- {}",
        bin.strip_prefix(root()).unwrap_or(&bin).display()
    );
    let st = Command::new(root().join("target/release/observer"))
        .args(["run", "--kill-on-deadlock", "--"])
        .arg(&bin)
        .status()?;
    // 3 = a deadlock was found (the demo's point); anything else is a failure.
    match st.code() {
        Some(3) => Ok(()),
        _ => bail!("the demo did not end with a deadlock report ({st})"),
    }
}

fn vmlinux() -> Result<()> {
    let out = Command::new("bpftool")
        .args([
            "btf",
            "dump",
            "file",
            "/sys/kernel/btf/vmlinux",
            "format",
            "c",
        ])
        .output()
        .context("running bpftool")?;
    if !out.status.success() {
        bail!("bpftool failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let dest = root().join("observer-ebpf/src/bpf/vmlinux.h");
    std::fs::write(&dest, out.stdout)?;
    eprintln!("xtask: wrote {}", dest.display());
    Ok(())
}

/// The recordings the offline detector tests replay: one real run of a
/// fixture per finding kind (name, observer flags, stop with SIGINT after
/// this many seconds, or 0: the run ends by itself). The PI deadlock's
/// full cycle needs the EDEADLK return, which only the syscall hooks see.
const RECORDINGS: &[(&str, &[&str], u64)] = &[
    ("abba", &["--kill-on-deadlock"], 0),
    ("pi_abba", &["--kill-on-deadlock", "--hooks", "syscalls"], 0),
    (
        "orphan_exit",
        &["--kill-on-deadlock", "--hooks", "syscalls"],
        0,
    ),
    ("lost_wakeup", &["--long-wait", "500ms"], 3),
    ("stuck_read", &["--stuck", "1s"], 4),
    ("unjoined", &[], 0),
    ("pool_grow", &[], 0),
    ("churn", &[], 0),
    ("order_ab_ba", &["--uprobes"], 0),
    ("exit_held", &["--uprobes"], 0),
];

/// `cargo xtask record [NAME...]`: records the fixtures again into
/// observer/tests/data/recordings/ (then check the offline tests and commit).
fn record(names: &[String]) -> Result<()> {
    if !is_root() {
        bail!("recording loads BPF programs: run `sudo ./x record`");
    }
    run_logged("building observer", {
        let mut c = cargo();
        c.args(["build", "-p", "observer"]);
        c
    })?;
    let bins = root().join("target/fixtures");
    let dest = root().join("observer/tests/data/recordings");
    std::fs::create_dir_all(&bins)?;
    std::fs::create_dir_all(&dest)?;
    for (name, flags, stop_after) in RECORDINGS {
        if !names.is_empty() && !names.iter().any(|n| n == name) {
            continue;
        }
        let bin = bins.join(name);
        run({
            let mut c = Command::new("gcc");
            c.args(["-O2", "-g", "-pthread", "-o"])
                .arg(&bin)
                .arg(root().join(format!("fixtures/{name}.c")));
            c
        })?;
        let out = dest.join(format!("{name}.jsonl"));
        let mut c = Command::new(root().join("target/debug/observer"));
        c.args(["run", "--quiet", "--record"])
            .arg(&out)
            .args(*flags)
            .arg("--")
            .arg(&bin)
            .stdout(std::process::Stdio::null());
        eprintln!("xtask: {c:?}");
        let mut child = c.spawn().context("starting the observer")?;
        let start = std::time::Instant::now();
        let hard = std::time::Duration::from_secs(60);
        let mut signalled = false;
        let st = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            let t = start.elapsed();
            if *stop_after > 0 && !signalled && t.as_secs() >= *stop_after {
                // SAFETY: plain kill(2) to our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                signalled = true;
            }
            if t > hard {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{name}: the observer did not end in {hard:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        eprintln!(
            "xtask: {} ({st}, {} bytes)",
            out.display(),
            std::fs::metadata(&out)?.len()
        );
        let gz = out.with_extension("jsonl.gz");
        let _ = std::fs::remove_file(&gz);
        if std::fs::metadata(&out)?.len() > 100_000 {
            // Big ones (churn) are checked in compressed.
            run({
                let mut c = Command::new("gzip");
                c.args(["-9", "-n"]).arg(&out);
                c
            })?;
        }
    }
    Ok(())
}

/// `cargo xtask man`: writes man/ again from the command line's definition
/// (the test that checks man/ writes it with OBSERVER_WRITE_MAN=1).
fn man() -> Result<()> {
    run_logged("writing man/ from the command line", {
        let mut c = cargo();
        c.args([
            "test",
            "-p",
            "observer",
            "--bin",
            "observer",
            "--",
            "--exact",
            "man::committed_pages_are_current",
        ])
        .env("OBSERVER_WRITE_MAN", "1");
        c
    })?;
    eprintln!("x: wrote {}", root().join("man").display());
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => demo(),
        Some("bench") => bench::main(&args[1..]),
        Some("vmlinux") => vmlinux(),
        Some("record") => record(&args[1..]),
        Some("man") => man(),
        Some("wheel") => wheel().map(drop),
        _ => bail!(
            "usage: cargo xtask test|demo|bench [list|detect|deep|soak|execs|python|...]|vmlinux|record [FIXTURE...]|man|wheel"
        ),
    }
}
