//! Processes under hard timeouts: guards, output lines, workloads, timed runs.

use super::*;

/// A child process, SIGKILLed and reaped when dropped, whatever happened.
pub struct Guard {
    pub(super) child: Option<Child>,
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
    pub(super) guard: Guard,
    pub(super) stdin: Option<ChildStdin>,
    pub(super) out: Lines,
    pub(super) name: String,
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

/// utime + stime of a process, in seconds.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may hold spaces and ')': the fields start after the last ')'.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks as f64 / hz)
}

/// Resident set size of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
