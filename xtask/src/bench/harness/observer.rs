//! The observer under test: started, stopped, its report read.

use super::*;

/// `observer -v attach --quiet -p PID [EXTRA]`, running until stopped or
/// dropped (SIGINT: it detaches and exits).
pub struct Observer {
    pub(super) guard: Guard,
    pub(super) err: Lines,
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
