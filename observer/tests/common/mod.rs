//! Helpers for the root integration tests: fixtures compiled on demand,
//! processes with hard timeouts that are always killed, report parsing.
#![allow(dead_code)]

mod asyncio;
mod daemon;
mod links;
#[allow(unused_imports)]
pub use asyncio::*;
#[allow(unused_imports)]
pub use daemon::*;
#[allow(unused_imports)]
pub use links::*;

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex,
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    time::{Duration, Instant},
};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn observer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_observer"))
}

static BUILD: Mutex<()> = Mutex::new(());

/// Compiles fixtures/NAME.c (once per source change) and returns the binary.
pub fn fixture(name: &str) -> PathBuf {
    let _g = BUILD.lock().unwrap();
    let src = repo().join(format!("fixtures/{name}.c"));
    let dir = repo().join("target/fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join(name);
    let stale = match (std::fs::metadata(&bin), std::fs::metadata(&src)) {
        (Ok(b), Ok(s)) => b.modified().unwrap() < s.modified().unwrap(),
        _ => true,
    };
    if stale {
        let st = Command::new("gcc")
            .args(["-O2", "-g", "-pthread", "-o"])
            .arg(&bin)
            .arg(&src)
            .status()
            .expect("gcc");
        assert!(st.success(), "compiling {name}");
    }
    bin
}

pub fn python_fixture(name: &str) -> PathBuf {
    repo().join(format!("fixtures/{name}.py"))
}

/// A child process whose stdout/stderr lines are collected, killed on drop.
pub struct Proc {
    pub child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
}

fn pump(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let out = pump(child.stdout.take().unwrap());
        let err = pump(child.stderr.take().unwrap());
        Proc {
            child,
            out,
            err,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn collect(&mut self) {
        while let Ok(l) = self.err.try_recv() {
            self.stderr.push(l);
        }
        while let Ok(l) = self.out.try_recv() {
            self.stdout.push(l);
        }
    }

    /// Waits until a stdout line satisfies `pred`; panics after `timeout`.
    pub fn wait_stdout(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line(timeout, pred, false)
    }

    pub fn wait_stderr(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line(timeout, pred, true)
    }

    fn wait_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool, err: bool) -> String {
        let end = Instant::now() + timeout;
        if let Some(l) = if err { &self.stderr } else { &self.stdout }
            .iter()
            .find(|l| pred(l))
        {
            return l.clone();
        }
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let rx = if err { &self.err } else { &self.out };
            match rx.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(l) => {
                    let hit = pred(&l);
                    if err {
                        self.stderr.push(l.clone())
                    } else {
                        self.stdout.push(l.clone())
                    }
                    if hit {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < end => {}
                Err(_) => {
                    self.collect();
                    panic!(
                        "timed out waiting for a line (stderr={err})\nstdout:\n{}\nstderr:\n{}",
                        self.stdout.join("\n"),
                        self.stderr.join("\n")
                    );
                }
            }
        }
    }

    /// Waits for exit with a hard timeout (then kills and panics).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // let the pumps finish
                std::thread::sleep(Duration::from_millis(50));
                self.collect();
                return st;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.collect();
                panic!(
                    "process did not exit in {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout.join("\n"),
                    self.stderr.join("\n")
                );
            }
            self.collect();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a process (not our child) by pid.
pub fn kill(pid: u32) {
    // SAFETY: plain kill(2).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// `thread NAME TID` lines printed by fixtures: (name, tid).
pub fn fixture_threads(lines: &[String]) -> Vec<(String, u32)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "thread").then_some(())?;
            let name = it.next()?.to_string();
            let tid = it.next()?.parse().ok()?;
            Some((name, tid))
        })
        .collect()
}

/// `lock SYMBOL 0xADDR` lines: (symbol, addr).
pub fn fixture_locks(lines: &[String]) -> Vec<(String, u64)> {
    lines
        .iter()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "lock").then_some(())?;
            let name = it.next()?.to_string();
            let addr = u64::from_str_radix(it.next()?.trim_start_matches("0x"), 16).ok()?;
            Some((name, addr))
        })
        .collect()
}

pub fn tid_of(lines: &[String], name: &str) -> u32 {
    fixture_threads(lines)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("fixture printed no thread {name}: {lines:?}"))
        .1
}

pub fn read_json(p: &Path) -> serde_json::Value {
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("parse {}: {e}\n{s}", p.display()))
}

/// The exit code a report's findings call for: 3 (`observer::exit::HANG`)
/// when one is a hang (deadlock, PI deadlock, orphaned lock), else 0.
pub fn hang_code(r: &serde_json::Value) -> i32 {
    let hang = r["findings"].as_array().into_iter().flatten().any(|f| {
        matches!(
            f["kind"].as_str(),
            Some("deadlock" | "pi_deadlock" | "orphaned_lock")
        )
    });
    if hang { 3 } else { 0 }
}

/// When `pid` started, ns since boot (/proc/PID/stat `starttime`), as the
/// reports' `start_time_ns` says it.
pub fn proc_start_time_ns(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 1..];
    let ticks: u64 = rest.split_whitespace().nth(19).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    ticks * 1_000_000_000 / hz
}

/// A report's (or dump's) `processes[]` entry for `pid` names what it runs:
/// `exe`, `comm` and `cmdline` filled, and its start time as /proc says it
/// (so reports of one process match).
pub fn assert_identity(r: &serde_json::Value, pid: u32, exe: &Path) {
    let p = r["processes"]
        .as_array()
        .unwrap_or_else(|| panic!("no processes[]: {r:#}"))
        .iter()
        .find(|p| p["tgid"] == pid)
        .unwrap_or_else(|| panic!("no process {pid} in {:#}", r["processes"]));
    assert_eq!(p["exe"], exe.display().to_string(), "{p:#}");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(p["comm"], comm.trim_end(), "{p:#}");
    assert!(!p["cmdline"].as_array().unwrap().is_empty(), "{p:#}");
    assert_eq!(p["start_time_ns"], proc_start_time_ns(pid), "{p:#}");
}

pub fn report_thread(r: &serde_json::Value, tid: u32) -> &serde_json::Value {
    r["threads"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|t| t["tid"] == tid)
        .unwrap_or_else(|| panic!("report has no thread {tid}: {r:#}"))
}

/// Processes holding each BPF program id (from /proc/*/fdinfo of prog and
/// link fds), as (prog id, holder's parent pid).
fn prog_holders() -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let ppid: u32 = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            if let Some(id) = info.lines().find_map(|l| l.strip_prefix("prog_id:")) {
                out.push((id.trim().parse().unwrap_or(0), ppid));
            }
        }
    }
    out
}

/// Fails if programs of ours are still held by an observer this test
/// started (or by nobody: pinned). The kernel frees them shortly after the
/// last fd closes, so poll a little. Observers started by others (another
/// test run, a benchmark) are ignored.
pub fn assert_no_programs_left() {
    // Every program the observer's object holds (deep tier included).
    let ours = observer_ebpf::observer_program_names();
    assert!(!ours.is_empty(), "observer built without BPF programs");
    let me = std::process::id();
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        let out = Command::new("bpftool")
            .args(["prog", "show"])
            .output()
            .expect("bpftool");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let holders = prog_holders();
        let left: Vec<&str> = text
            .lines()
            .filter(|l| l.split_whitespace().any(|w| ours.iter().any(|p| p == w)))
            .filter(|l| {
                let id: u32 = l
                    .split(':')
                    .next()
                    .and_then(|x| x.trim().parse().ok())
                    .unwrap_or(0);
                let held: Vec<_> = holders.iter().filter(|h| h.0 == id).collect();
                held.is_empty() || held.iter().any(|h| h.1 == me)
            })
            .collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > end {
            panic!("BPF programs left loaded: {left:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Tests whose findings come from uprobes first check that they attached
/// (a race or a missing library would otherwise look like "no finding").
pub fn assert_uprobes_attached(r: &serde_json::Value) {
    let n = r["uprobes_attached"].as_u64().unwrap_or(0);
    assert!(n > 0, "no uprobes attached: {:#}", r["hooks"]);
}

/// The CPythons the Python tests run under: Debian's, the pyenv builds,
/// and 3.14/3.15 unpacked by `./x` into target/pythons (xtask/scripts/pythons.sh).
pub fn python_list() -> Vec<(&'static str, String)> {
    let unpacked = |v: &str| {
        repo()
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

/// Whether every tool and interpreter the tests use must be present
/// (`OBSERVER_REQUIRE_ALL`, on in `./x`): then a missing one fails the
/// test instead of skipping it.
pub fn require_all() -> bool {
    std::env::var_os("OBSERVER_REQUIRE_ALL").is_some_and(|v| v != "0")
}

/// One visible "skip: ..." line: written to stderr directly, so the test
/// harness (which captures print! and eprint!) shows it.
pub fn skip(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "skip: {what}");
}

/// A tool the tests use, from PATH. Missing: a failure under
/// `require_all()`, else None and one visible skip line naming `what`
/// it would have checked.
pub fn tool(name: &str, package: &str, what: &str) -> Option<PathBuf> {
    tool_if(name, package, what, require_all())
}

/// `tool`, required when `required` (or under `require_all()`).
pub fn tool_if(name: &str, package: &str, what: &str, required: bool) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if required || require_all() {
            panic!(
                "`{name}` is missing (Debian package {package}; ./x installs it): {what} cannot run"
            );
        }
        skip(&format!(
            "{what}: `{name}` is not installed (Debian package {package})"
        ));
    }
    found
}

/// The CPythons present here. A missing one fails under `require_all()`,
/// else it is skipped with one line on stdout (shown by the harness).
pub fn pythons() -> Vec<(&'static str, &'static str)> {
    let mut found = Vec::new();
    for (label, path) in python_list() {
        if Path::new(&path).exists() {
            found.push((label, &*Box::leak(path.into_boxed_str())));
        } else if require_all() {
            panic!("CPython {label} is missing: {path} (./x test installs it)");
        } else {
            skip(&format!("CPython {label}: {path} is not installed"));
        }
    }
    found
}

/// Something a test needs is missing (a built artifact, a tool): a failure
/// under `require_all()`, else one visible skip line. Return after it.
#[track_caller]
pub fn missing(what: &str) {
    if require_all() {
        panic!("{what} (OBSERVER_REQUIRE_ALL is set)");
    }
    skip(what);
}

/// The CPythons with a venv under target/uvloop that imports uvloop,
/// installed from PyPI by xtask/scripts/uvloop.sh: (label, the venv's
/// python). An interpreter PyPI has no uvloop wheel for is skipped
/// visibly; one whose wheel installed but does not import fails under
/// `require_all()` (./x installs what it needs), as does finding none.
pub fn uvloop_pythons() -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    for (label, py) in pythons() {
        let dir = repo().join("target/uvloop").join(label.replace(' ', "-"));
        let o = Command::new("sh")
            .arg(repo().join("xtask/scripts/uvloop.sh"))
            .arg(py)
            .arg(&dir)
            .output()
            .expect("sh");
        let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
        match o.status.code() {
            Some(0) => out.push((label, dir.join("bin/python"))),
            Some(3) => skip(&format!("CPython {label}: no uvloop wheel on PyPI ({why})")),
            Some(4) if !require_all() => skip(&format!(
                "CPython {label}: uvloop installed but does not import: {why}"
            )),
            _ => panic!("{label}: installing uvloop: {o:?}"),
        }
    }
    assert!(
        !out.is_empty() || !require_all(),
        "no CPython here has uvloop"
    );
    out
}

/// The `port N` line a server fixture printed.
pub fn port_of(lines: &[String]) -> u16 {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("port "))
        .unwrap_or_else(|| panic!("no port line: {lines:?}"))
        .parse()
        .unwrap()
}

/// One request to the line echo server at `port` on a connection of its
/// own: sends `line`, returns once it is echoed.
pub fn echo_once(port: u16, line: &str) {
    use std::io::Write;
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    writeln!(w, "{line}").unwrap();
    let mut got = String::new();
    r.read_line(&mut got).unwrap();
    assert_eq!(got, format!("{line}\n"));
}

/// Echo requests to the line echo server at `port`, one at a time as fast
/// as it answers, until `until` (bounded): how many.
pub fn echo_load(port: u16, until: Instant) -> usize {
    use std::io::Write;
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut n = 0;
    let mut line = String::new();
    while Instant::now() < until && n < 1_000_000 {
        w.write_all(b"ping\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "ping\n");
        n += 1;
    }
    n
}

/// `observer dump --format json -p PID`: its exit code (-1 if killed) and report.
pub fn dump_json(pid: u32) -> (i32, serde_json::Value) {
    let out = Command::new(observer_bin())
        .args(["dump", "--format", "json", "-p", &pid.to_string()])
        .output()
        .unwrap();
    let r = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), r)
}

/// `observer dump -p PID` as text.
pub fn dump_text(pid: u32) -> String {
    let out = Command::new(observer_bin())
        .args(["dump", "-p", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The PID a fixture printed as `child PID`.
pub fn child_of(out: &[String]) -> u32 {
    out.iter()
        .find_map(|l| l.strip_prefix("child "))
        .unwrap_or_else(|| panic!("no child line: {out:?}"))
        .parse()
        .unwrap()
}

/// Gone, or a zombie nobody reaped yet.
pub fn dead(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.rsplit(") ").next().is_some_and(|r| r.starts_with('Z'))
}

/// Waits (hard timeout) until `pid` is dead.
pub fn wait_dead(pid: u32, within: Duration) {
    let end = Instant::now() + within;
    while !dead(pid) {
        assert!(Instant::now() < end, "process {pid} still alive");
        std::thread::sleep(Duration::from_millis(20));
    }
}
