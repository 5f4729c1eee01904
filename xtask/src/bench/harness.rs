//! What every bench suite shares: argument parsing, building, process
//! guards with hard timeouts, the observer under test, other people's BPF
//! programs on a shared machine, statistics, and PASS/MISS verdicts.

use std::{
    collections::{BTreeSet, HashSet},
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

// ---------------------------------------------------------------------------
// Arguments

/// Options every suite takes.
pub struct Common {
    /// A prebuilt observer to use instead of building target/release/observer.
    pub observer: Option<PathBuf>,
    /// A quick subset: fewer rounds and runs.
    pub quick: bool,
    /// The CPU workloads are pinned to (suites that pin).
    pub cpu: Option<usize>,
}

pub const COMMON_OPTIONS: &str =
    "  --quick           a quick subset (fewer rounds and runs; rougher numbers)
  --observer PATH   use this observer binary instead of building target/release/observer
  -h, --help        this text";

pub const PIN_OPTIONS: &str =
    "  --cpu N           pin the workloads to CPU N (default: the last CPU)
  --no-pin          do not pin the workloads";

pub fn cpus() -> usize {
    thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The arguments of one suite, read left to right.
pub struct Args<'a> {
    it: std::slice::Iter<'a, String>,
}

impl<'a> Args<'a> {
    /// The value after `flag`, as a number (`_` separators allowed).
    pub fn number<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T> {
        self.it
            .next()
            .and_then(|s| s.replace('_', "").parse().ok())
            .with_context(|| format!("{flag} needs a number (see --help)"))
    }

    /// The value after `flag`.
    pub fn value(&mut self, flag: &str) -> Result<&'a str> {
        self.it
            .next()
            .map(String::as_str)
            .with_context(|| format!("{flag} needs a value (see --help)"))
    }
}

/// Parses `args`: the common options (and `--cpu`/`--no-pin` if `pin`),
/// the rest through `own`, which returns false for an argument it does not
/// know. None after printing the usage.
pub fn parse(
    args: &[String],
    usage: &str,
    pin: bool,
    mut own: impl FnMut(&str, &mut Args) -> Result<bool>,
) -> Result<Option<Common>> {
    let mut c = Common {
        observer: None,
        quick: false,
        cpu: pin.then(|| cpus() - 1),
    };
    let mut a = Args { it: args.iter() };
    while let Some(x) = a.it.next() {
        match x.as_str() {
            "-h" | "--help" | "help" => {
                println!("{usage}");
                return Ok(None);
            }
            "--quick" => c.quick = true,
            "--observer" => {
                let p = a.value("--observer")?;
                c.observer =
                    Some(std::fs::canonicalize(p).with_context(|| format!("--observer {p}"))?);
            }
            "--cpu" if pin => {
                let n: usize = a.number("--cpu")?;
                if n >= cpus() {
                    bail!("--cpu {n}: this machine has {} CPUs", cpus());
                }
                c.cpu = Some(n);
            }
            "--no-pin" if pin => c.cpu = None,
            _ => {
                if !own(x, &mut a)? {
                    bail!("unknown argument {x:?} (see --help)");
                }
            }
        }
    }
    Ok(Some(c))
}

// ---------------------------------------------------------------------------
// Setting up

pub fn require_root(cmd: &str) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmarks load BPF programs and read other processes: run `sudo ./x {cmd}`");
    }
    Ok(())
}

/// The observer binary: `--observer PATH`, or a fresh release build.
pub fn observer_binary(c: &Common) -> Result<PathBuf> {
    let p = match &c.observer {
        Some(p) => p.clone(),
        None => {
            crate::build_release().context("building the observer")?;
            crate::root().join("target/release/observer")
        }
    };
    if !p.is_file() {
        bail!("observer binary not found at {}", p.display());
    }
    Ok(p)
}

/// target/NAME, created.
pub fn out_dir(name: &str) -> Result<PathBuf> {
    let out = crate::root().join("target").join(name);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    Ok(out)
}

/// `gcc -O2 -g -pthread -Wall` of SRC (relative to the checkout) into OUT/NAME.
pub fn compile(out: &Path, src: &str, name: &str) -> Result<PathBuf> {
    let bin = out.join(name);
    let st = Command::new("gcc")
        .args(["-O2", "-g", "-pthread", "-Wall", "-o"])
        .arg(&bin)
        .arg(crate::root().join(src))
        .status()
        .context("running gcc")?;
    if !st.success() {
        bail!("gcc could not build {src} ({st})");
    }
    Ok(bin)
}

pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// "TITLE\ndate ..., kernel ..., N CPUs (model), load ...\n" and `extra`.
pub fn header(title: &str, extra: &str) -> String {
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
        .unwrap_or("unknown CPU");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{title}\ndate {}, kernel {}, {} CPUs ({model}), load average {}\n{extra}",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh("uname", &["-r"]),
        cpus(),
        load.join(" "),
    )
}

/// "pinned to CPU N" or "not pinned".
pub fn pinning(cpu: Option<usize>) -> String {
    cpu.map_or("not pinned".into(), |c| format!("pinned to CPU {c}"))
}

// ---------------------------------------------------------------------------
// Processes

/// A child process, SIGKILLed and reaped when dropped, whatever happened.
pub struct Guard {
    child: Option<Child>,
    pub pid: u32,
}

impl Guard {
    pub fn new(child: Child) -> Guard {
        Guard {
            pid: child.id(),
            child: Some(child),
        }
    }

    /// Waits up to `t` for it to exit; its status, or None if it still runs
    /// (or was reaped already).
    pub fn wait(&mut self, t: Duration) -> Option<ExitStatus> {
        wait_timeout(self.child.as_mut()?, t)
    }

    /// Sends `sig` unless it was reaped.
    pub fn signal(&mut self, sig: libc::c_int) {
        if let Some(c) = &mut self.child
            && matches!(c.try_wait(), Ok(None))
        {
            // SAFETY: our own child, not yet reaped, so the pid is not reused.
            unsafe { libc::kill(self.pid as libc::pid_t, sig) };
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits for `child` up to `t`; its status, or None if it still runs.
pub fn wait_timeout(child: &mut Child, t: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + t;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

pub fn describe(st: &ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => format!("{st}"),
    }
}

/// The lines of a pipe, read by a thread so that the child never blocks on it.
pub struct Lines(mpsc::Receiver<String>);

impl Lines {
    pub fn of(pipe: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The next line; an error at `timeout` or at end of output.
    pub fn next(&self, timeout: Duration, who: &str) -> Result<String> {
        match self.0.recv_timeout(timeout) {
            Ok(l) => Ok(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("{who} did not answer within {timeout:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("{who} exited"),
        }
    }

    /// The lines available now.
    pub fn drain(&self) -> Vec<String> {
        self.0.try_iter().collect()
    }
}

/// A C workload driven line by line: it prints lines up to one starting with
/// `ready`, then answers each number N on stdin with one line of numbers,
/// and exits at end of input. SIGKILLed when dropped.
pub struct Workload {
    guard: Guard,
    stdin: Option<ChildStdin>,
    out: Lines,
    name: String,
    /// What it printed before `ready`.
    pub preamble: Vec<String>,
}

/// How long a workload may take to print `ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

impl Workload {
    pub fn start(bin: &Path, args: &[String]) -> Result<Workload> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdin = child.stdin.take();
        let out = Lines::of(child.stdout.take().expect("piped stdout"));
        let mut w = Workload {
            guard: Guard::new(child),
            stdin,
            out,
            name: bin
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            preamble: Vec::new(),
        };
        loop {
            let l = w.out.next(READY_TIMEOUT, &w.name)?;
            if l.starts_with("ready") {
                break;
            }
            w.preamble.push(l);
        }
        Ok(w)
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid
    }

    /// Sends "N", returns the numbers of the answer (within `timeout`).
    pub fn round(&mut self, n: u64, timeout: Duration) -> Result<Vec<f64>> {
        let stdin = self.stdin.as_mut().context("workload stdin closed")?;
        writeln!(stdin, "{n}")
            .and_then(|_| stdin.flush())
            .context("writing to the workload")?;
        let l = self.out.next(timeout, &self.name)?;
        l.split_whitespace()
            .map(|x| {
                x.parse::<f64>()
                    .with_context(|| format!("bad answer {l:?} from {}", self.name))
            })
            .collect()
    }

    /// End of input: the workload must exit 0.
    pub fn finish(mut self) -> Result<()> {
        self.stdin = None;
        match self.guard.wait(Duration::from_secs(30)) {
            Some(st) if st.success() => Ok(()),
            Some(st) => bail!("{} ended with {}", self.name, describe(&st)),
            None => bail!("{} did not exit at end of input", self.name),
        }
    }
}

/// A command run to completion: wall clock from spawn to reap.
pub struct Timed {
    pub elapsed: Duration,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
}

impl Timed {
    pub fn ms(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e3
    }
}

/// Runs `c` (stdout captured, stderr discarded); SIGKILLs it at `timeout`
/// (then None).
pub fn run_timed(mut c: Command, timeout: Duration) -> Result<Option<Timed>> {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let shown = format!("{c:?}");
    let (tx, rx) = mpsc::channel();
    let t0 = Instant::now();
    let child = c.spawn().with_context(|| format!("cannot run {shown}"))?;
    let pid = child.id();
    thread::spawn(move || {
        let r = child.wait_with_output();
        let _ = tx.send(r.map(|o| (t0.elapsed(), o)));
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => {
            let (elapsed, o) = r.with_context(|| format!("waiting for {shown}"))?;
            Ok(Some(Timed {
                elapsed,
                status: o.status,
                stdout: o.stdout,
            }))
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

/// `gdb -batch 'thread apply all bt' -p PID`, without gdbinit or debuginfod
/// downloads: a local, repeatable baseline.
pub fn gdb_backtraces(gdb: &Path, pid: u32, timeout: Duration) -> Result<Option<Timed>> {
    let mut c = Command::new(gdb);
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
    run_timed(c, timeout)
}

/// A JSON document from a file (an observer report).
pub fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The first finding of `kind` in a report or dump for which `ok` holds.
pub fn finding<'a>(
    doc: &'a serde_json::Value,
    kind: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Option<&'a serde_json::Value> {
    doc["findings"]
        .as_array()?
        .iter()
        .find(|f| f["kind"] == kind && ok(f))
}

/// The numbers under `key` in the objects of the array `v`.
pub fn numbers(v: &serde_json::Value, key: &str) -> BTreeSet<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x[key].as_u64()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// The observer under test

/// `observer -v attach --quiet -p PID [EXTRA]`, running until stopped or
/// dropped (SIGINT: it detaches and exits).
pub struct Observer {
    guard: Guard,
    err: Lines,
    /// Its stderr so far (the -v lines).
    pub log: Vec<String>,
    /// Start until `observing pid`.
    pub attach: Duration,
}

pub struct Stopped {
    /// SIGINT -> exit.
    pub took: Duration,
    /// None: it ignored SIGINT until the timeout and was killed.
    pub status: Option<ExitStatus>,
}

impl Stopped {
    /// A problem to report, if it did not exit cleanly.
    pub fn problem(&self) -> Option<String> {
        match self.status {
            Some(st) if st.success() => None,
            Some(st) => Some(format!("observer ended with {}", describe(&st))),
            None => Some(format!(
                "observer did not exit within {OBSERVER_STOP_TIMEOUT:?} of SIGINT"
            )),
        }
    }
}

const ATTACH_TIMEOUT: Duration = Duration::from_secs(120);
/// An observer with many uprobes takes seconds to exit (one RCU grace
/// period per uprobe): leave a wide margin.
pub const OBSERVER_STOP_TIMEOUT: Duration = Duration::from_secs(300);

impl Observer {
    /// Starts it and waits until it prints `observing pid` (every probe,
    /// uprobes included, is attached before that line). Its programs are
    /// recorded in `progs` as ours.
    pub fn attach(
        bin: &Path,
        target: u32,
        extra: &[&str],
        report: Option<&Path>,
        progs: &mut Programs,
    ) -> Result<Observer> {
        let mut c = Command::new(bin);
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
            .with_context(|| format!("starting {}", bin.display()))?;
        let err = Lines::of(child.stderr.take().expect("piped stderr"));
        let mut o = Observer {
            guard: Guard::new(child),
            err,
            log: Vec::new(),
            attach: Duration::ZERO,
        };
        progs.started.push(o.guard.pid);
        let deadline = t0 + ATTACH_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match o.err.next(left, "observer") {
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
        o.attach = t0.elapsed();
        // Its programs stay ours after it exits (they are freed later).
        progs.ours.extend(held_by(o.guard.pid));
        Ok(o)
    }

    pub fn pid(&self) -> u32 {
        self.guard.pid
    }

    /// "futex: tp_btf, task_newtask: tp_btf, ..." from its -v lines.
    pub fn hooks(&self) -> String {
        self.log
            .iter()
            .filter_map(|l| l.strip_prefix("observer: hook "))
            // "futex: tp_btf (fentry failed: ...)": keep the rung
            .map(|h| h.split(" (").next().unwrap_or(h))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The uprobed functions it reported (from -v), of one kind ("lock", "thread").
    pub fn uprobes(&self, kind: &str) -> Vec<String> {
        let key = format!("{kind} uprobes on ");
        self.log
            .iter()
            .filter_map(|l| l.split_once(&key).map(|(_, r)| r))
            .filter_map(|r| r.split_once(": ").map(|(_, f)| f))
            .flat_map(|f| f.split(", ").map(str::to_string))
            .collect()
    }

    /// Adds what it printed within `t` to `log`.
    pub fn poll(&mut self, t: Duration) {
        if let Ok(l) = self.err.next(t, "observer") {
            self.log.push(l);
        }
        self.log.extend(self.err.drain());
    }

    /// SIGINT, then waits for it to exit.
    pub fn stop(&mut self) -> Stopped {
        let t0 = Instant::now();
        self.guard.signal(libc::SIGINT);
        let status = self.guard.wait(OBSERVER_STOP_TIMEOUT);
        let took = t0.elapsed();
        if status.is_none() && self.guard.child.is_some() {
            eprintln!(
                "\nxtask: observer {} ignored SIGINT for {OBSERVER_STOP_TIMEOUT:?}; killing it",
                self.guard.pid
            );
        }
        self.guard.kill();
        self.log.extend(self.err.drain());
        Stopped { took, status }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        if self.guard.child.is_none() {
            return; // stopped already
        }
        if let Some(p) = self.stop().problem() {
            let tail = &self.log[self.log.len().saturating_sub(10)..];
            eprintln!("\nxtask: warning: {p}:\n{}", tail.join("\n"));
        }
    }
}

// ---------------------------------------------------------------------------
// BPF programs: ours, and other people's on a shared machine

/// Program types that can hook a process from the kernel.
const HOOK_TYPES: &[&str] = &[
    "tracing",
    "raw_tracepoint",
    "tracepoint",
    "kprobe",
    "perf_event",
];

pub struct Prog {
    pub id: u32,
    pub name: String,
}

/// The loaded programs whose type can hook a process.
pub fn hook_programs() -> Vec<Prog> {
    let Ok(out) = Command::new("bpftool").args(["prog", "show"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            // "42: tracing  name btf_sys_enter  tag 0123...  gpl"
            let mut w = l.split_whitespace();
            let id = w.next()?.strip_suffix(':')?.parse().ok()?;
            if !HOOK_TYPES.contains(&w.next()?) {
                return None;
            }
            let name = w.skip_while(|&x| x != "name").nth(1).unwrap_or("(unnamed)");
            Some(Prog {
                id,
                name: name.to_string(),
            })
        })
        .collect()
}

/// Ids of the BPF programs process `pid` holds open.
pub fn held_by(pid: u32) -> HashSet<u32> {
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

/// The BPF programs this run loaded (itself or through its observers).
#[derive(Default)]
pub struct Programs {
    /// Ids of the programs we (or our observers) held.
    pub ours: HashSet<u32>,
    /// Pids of the observers we started.
    pub started: Vec<u32>,
}

/// Per condition: rounds run while someone else's hook programs were loaded.
#[derive(Default)]
pub struct Contamination {
    /// Rounds timed.
    pub total: usize,
    /// Rounds kept although foreign programs were loaded.
    pub rounds: usize,
    /// Rounds run again because foreign programs came and went.
    pub retried: usize,
    pub names: BTreeSet<String>,
}

/// One round run by `Programs::round`.
pub struct Round<T> {
    pub value: T,
    /// No foreign hook program was loaded before or after it.
    pub clean: bool,
    /// Foreign programs were still loaded when the settle wait ended.
    pub stayed: bool,
}

impl Contamination {
    /// Counts a round that is kept.
    pub fn keep(&mut self, clean: bool) {
        self.total += 1;
        self.rounds += usize::from(!clean);
    }

    /// "note: LABEL: 3 of 15 rounds ran while ..." or nothing.
    pub fn note(&self, label: &str) -> Option<String> {
        let mut names: Vec<&str> = self.names.iter().map(String::as_str).take(6).collect();
        if self.names.len() > names.len() {
            names.push("...");
        }
        let mut s = String::new();
        if self.retried > 0 {
            writeln!(
                s,
                "  note: {label}: {} rounds run again: BPF programs not ours came and went ({})",
                self.retried,
                names.join(", ")
            )
            .unwrap();
        }
        if self.rounds > 0 {
            writeln!(
                s,
                "  note: {label}: {} of {} rounds ran while someone else's hook programs were loaded ({})",
                self.rounds,
                self.total,
                names.join(", ")
            )
            .unwrap();
        }
        (!s.is_empty()).then(|| s.trim_end().to_string())
    }
}

impl Programs {
    /// Loaded hook programs that are neither `holder`'s nor ones we held.
    pub fn foreign(&mut self, holder: Option<u32>) -> Vec<Prog> {
        if let Some(p) = holder {
            self.ours.extend(held_by(p));
        }
        hook_programs()
            .into_iter()
            .filter(|p| !self.ours.contains(&p.id))
            .collect()
    }

    /// Waits up to `timeout` for the foreign programs to go away; those left.
    pub fn settle(&mut self, holder: Option<u32>, timeout: Duration) -> Vec<Prog> {
        let deadline = Instant::now() + timeout;
        loop {
            let f = self.foreign(holder);
            if f.is_empty() || Instant::now() > deadline {
                return f;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs one timed round `f`, noting foreign hook programs loaded before
    /// or after it (waiting up to `settle` for them to go away first); their
    /// names go to `c` (the caller decides whether to keep the round).
    pub fn round<T>(
        &mut self,
        holder: Option<u32>,
        settle: Duration,
        c: &mut Contamination,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<Round<T>> {
        let before = self.settle(holder, settle);
        let value = f()?;
        let after = self.foreign(holder);
        let r = Round {
            value,
            clean: before.is_empty() && after.is_empty(),
            stayed: !before.is_empty(),
        };
        c.names
            .extend(before.into_iter().chain(after).map(|p| p.name));
        Ok(r)
    }

    /// Waits (up to `timeout`) until no observer we started runs and none of
    /// the programs we held, nor any of this checkout's programs held by no
    /// live process, is loaded (the kernel frees a program an RCU grace
    /// period after its last link, seconds later). Ok(summary) or Err(what
    /// is left).
    pub fn leftovers(&self, observer: &Path, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let alive: Vec<u32> = self
                .started
                .iter()
                .copied()
                .filter(|p| {
                    std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == observer)
                })
                .collect();
            let mut left: Vec<String> = hook_programs()
                .into_iter()
                .filter(|p| self.ours.contains(&p.id))
                .map(|p| format!("{} ({})", p.name, p.id))
                .collect();
            left.extend(
                crate::leftover_programs()
                    .into_iter()
                    .filter(|l| !held_by_live_process(l)),
            );
            if left.is_empty() && alive.is_empty() && self.started.is_empty() {
                return Ok("Leftovers: none (no orphaned observer programs)".into());
            }
            if left.is_empty() && alive.is_empty() {
                return Ok(format!(
                    "Leftovers: none ({} observers attached and reaped, {} BPF programs they held all freed; no orphaned observer programs)",
                    self.started.len(),
                    self.ours.len()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "observers still running {alive:?}; BPF programs still loaded: {}",
                    left.join("; ")
                ));
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A `crate::leftover_programs` line ending in "(held by [PID, ...])" with a PID alive.
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
// Statistics

/// Quantile `q` in [0, 1], interpolating between closest ranks; NaN if empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

pub fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// Nearest-rank percentile `p` in [0, 100] (a value that was measured: the
/// p99 of 100 runs is the second worst); NaN if empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::min).unwrap_or(f64::NAN)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::max).unwrap_or(f64::NAN)
}

/// Visit order of pass `p` over `n` conditions: rotated, so that every
/// condition comes first, second, ... equally often and slow drifts of a
/// noisy machine hit all alike.
pub fn order(p: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (p + k) % n)
}

/// 90% bootstrap interval (5th, 95th percentile) of `stat` of the medians
/// of `groups`, each resampled with replacement.
pub fn bootstrap(groups: &[&[f64]], stat: impl Fn(&[f64]) -> f64) -> (f64, f64) {
    // xorshift64*: enough randomness for a bootstrap, fixed seed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut below = |n: usize| {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    };
    let mut buf = Vec::new();
    let stats: Vec<f64> = (0..1000)
        .map(|_| {
            let med: Vec<f64> = groups
                .iter()
                .map(|v| {
                    buf.clear();
                    buf.extend((0..v.len()).map(|_| v[below(v.len())]));
                    median(&buf)
                })
                .collect();
            stat(&med)
        })
        .collect();
    (quantile(&stats, 0.05), quantile(&stats, 0.95))
}

// ---------------------------------------------------------------------------
// Formatting and verdicts

/// A duration in ns, in the unit that reads best.
pub fn ns(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 1e9 {
        format!("{:.2} s", v / 1e9)
    } else if v.abs() >= 1e6 {
        format!("{:.1} ms", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.1} us", v / 1e3)
    } else if v.abs() >= 1e3 {
        format!("{:.2} us", v / 1e3)
    } else {
        format!("{v:.1} ns")
    }
}

/// A duration in ms, in the unit that reads best.
pub fn ms(v: f64) -> String {
    ns(v * 1e6)
}

/// `show(v)` with its sign: "+1.2 us", "-3.0 ns".
pub fn signed(show: fn(f64) -> String, v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", show(v))
    } else {
        show(v)
    }
}

pub fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "-".into()
    }
}

/// One target, checked: printed as a PASS/MISS line.
pub struct Check {
    pub what: String,
    /// The measured value, as text.
    pub value: String,
    /// e.g. "<= 150 ms".
    pub target: String,
    /// None: nothing was measured.
    pub pass: Option<bool>,
    /// Appended to the line ("(unreliable)", a bootstrap interval).
    pub note: String,
}

impl Check {
    /// `value <= limit`; `show` formats both.
    pub fn at_most(
        what: impl Into<String>,
        value: f64,
        limit: f64,
        show: fn(f64) -> String,
    ) -> Check {
        Check::compare(what.into(), value, "<=", limit, show)
    }

    /// `value >= limit`; `show` formats both.
    pub fn at_least(
        what: impl Into<String>,
        value: f64,
        limit: f64,
        show: fn(f64) -> String,
    ) -> Check {
        Check::compare(what.into(), value, ">=", limit, show)
    }

    fn compare(what: String, value: f64, op: &str, limit: f64, show: fn(f64) -> String) -> Check {
        let ok = if op == "<=" {
            value <= limit
        } else {
            value >= limit
        };
        Check {
            what,
            value: show(value),
            target: format!("{op} {}", show(limit)),
            pass: (!value.is_nan()).then_some(ok),
            note: String::new(),
        }
    }

    /// `ok` of `n` runs were right; all of them must be.
    pub fn every(what: impl Into<String>, ok: usize, n: usize) -> Check {
        Check {
            what: what.into(),
            value: format!("{ok}/{n}"),
            target: "every run".into(),
            pass: (n > 0).then_some(ok == n),
            note: String::new(),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Check {
        self.note = note.into();
        self
    }

    pub fn line(&self) -> String {
        let verdict = match self.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "no data",
        };
        let note = if self.note.is_empty() {
            String::new()
        } else {
            format!(" {}", self.note)
        };
        format!(
            "  {:<58} {:>10}  target {:<11} {verdict}{note}",
            self.what, self.value, self.target
        )
    }
}

/// The checks of one run, printed where measured and again as a summary.
#[derive(Default)]
pub struct Verdicts(Vec<Check>);

impl Verdicts {
    /// Records `c`; its line, for the table it belongs to.
    pub fn add(&mut self, c: Check) -> String {
        let l = c.line();
        self.0.push(c);
        l
    }

    pub fn summary(&self) -> String {
        let mut s = String::from("Summary\n");
        for c in &self.0 {
            writeln!(s, "{}", c.line()).unwrap();
        }
        let misses = self.0.iter().filter(|c| c.pass != Some(true)).count();
        if misses > 0 {
            writeln!(
                s,
                "  {misses} of {} target(s) MISSED or not measured (reported, not a failure: see BENCHMARKS.md)",
                self.0.len()
            )
            .unwrap();
        } else {
            writeln!(s, "  all {} targets met", self.0.len()).unwrap();
        }
        s
    }
}

/// A table of wall-clock times per command: runs, median, min, max, and
/// with `added`, the median minus that of the first row (the baseline).
pub fn ms_table(first: &str, width: usize, rows: &[(&str, &[f64])], added: bool) -> String {
    let mut s = format!(
        "  {first:<width$} {:>5} {:>9} {:>9} {:>9}{}\n",
        "runs",
        "median",
        "min",
        "max",
        if added { "     added" } else { "" }
    );
    let base = rows.first().map_or(f64::NAN, |r| median(r.1));
    for (i, (label, v)) in rows.iter().enumerate() {
        let plus = match (added, i) {
            (false, _) => String::new(),
            (true, 0) => format!(" {:>9}", "-"),
            (true, _) => format!(" {:>9}", ms(median(v) - base)),
        };
        writeln!(
            s,
            "  {label:<width$} {:>5} {:>9} {:>9} {:>9}{plus}",
            v.len(),
            ms(median(v)),
            ms(min(v)),
            ms(max(v)),
        )
        .unwrap();
    }
    s
}

/// The end of a suite: the verdicts' summary, then whether anything was
/// left behind (an error if `strict`, else a warning).
pub fn finish(v: &Verdicts, progs: &Programs, observer: &Path, strict: bool) -> Result<()> {
    println!("{}", v.summary());
    match progs.leftovers(observer, Duration::from_secs(60)) {
        Ok(s) => println!("{s}"),
        Err(e) if strict => bail!("the bench left something behind: {e}"),
        Err(e) => println!("WARNING: the bench left something behind: {e}"),
    }
    Ok(())
}

/// "  TAG (N run(s)): problem" per distinct problem.
pub fn problems(tag: &str, p: &[String]) -> String {
    let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
    for x in p {
        *seen.entry(x.as_str()).or_default() += 1;
    }
    seen.iter()
        .map(|(p, n)| format!("  {tag} ({n} run(s)): {p}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!((min(&v), max(&v)), (1.0, 100.0));
        assert!(min(&[]).is_nan());
    }

    #[test]
    fn rotating_order() {
        let o: Vec<usize> = order(1, 4).collect();
        assert_eq!(o, vec![1, 2, 3, 0]);
    }

    #[test]
    fn bootstrap_brackets_the_statistic() {
        let a: Vec<f64> = (0..30).map(|i| 100.0 + f64::from(i % 7)).collect();
        let b: Vec<f64> = (0..30).map(|i| 200.0 + f64::from(i % 5)).collect();
        let (lo, hi) = bootstrap(&[&a, &b], |m| m[1] / m[0]);
        let r = median(&b) / median(&a);
        assert!(lo <= r && r <= hi, "{lo} {r} {hi}");
    }

    #[test]
    fn checks() {
        let c = Check::at_most("x", 120.0, 150.0, ms);
        assert_eq!(c.pass, Some(true));
        assert!(c.line().contains("<= 150.0 ms") && c.line().ends_with("PASS"));
        assert_eq!(Check::at_least("y", 0.5, 0.99, ratio).pass, Some(false));
        assert_eq!(Check::at_most("z", f64::NAN, 1.0, ratio).pass, None);
        assert_eq!(Check::every("w", 19, 20).pass, Some(false));
        let mut v = Verdicts::default();
        v.add(Check::every("w", 20, 20));
        assert!(v.summary().contains("all 1 targets met"));
        v.add(Check::every("w", 0, 0));
        assert!(v.summary().contains("1 of 2 target(s) MISSED"));
    }

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
}
