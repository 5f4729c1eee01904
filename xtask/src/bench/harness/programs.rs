//! BPF programs: ours, and other people's on a shared machine.

use super::*;

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
pub(super) fn held_by_live_process(line: &str) -> bool {
    let Some(i) = line.find("held by [") else {
        return false;
    };
    let rest = &line[i + 9..];
    rest[..rest.find(']').unwrap_or(rest.len())]
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok())
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

/// The kernel's run-time statistics of BPF programs, on while this lives
/// (BPF_ENABLE_STATS: they go off again when the fd closes, also if the
/// bench dies). They cost every program run a clock read or two, so rounds
/// timed for a ratio must not run under them.
pub struct RunStats {
    _fd: std::os::fd::OwnedFd,
}

impl RunStats {
    pub fn enable() -> Result<RunStats> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        // union bpf_attr's enable_stats.type = BPF_STATS_RUN_TIME (0); the
        // rest zero, as the kernel checks
        let attr = [0u32; 4];
        // SAFETY: a plain bpf(2) call with a zeroed attr of the size given.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                std::mem::size_of_val(&attr),
            )
        };
        if fd < 0 {
            bail!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error());
        }
        // SAFETY: the kernel just returned this fd; nothing else owns it.
        Ok(RunStats {
            _fd: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as i32) },
        })
    }
}

/// Run time (ns) and run count of each program in `ids`, by id, with its
/// name; only while `RunStats` is on are they counted.
pub fn run_totals(ids: &HashSet<u32>) -> Result<BTreeMap<u32, (String, u64, u64)>> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool")?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("bpftool -j prog show: not JSON")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let id = u32::try_from(p["id"].as_u64()?).ok()?;
            ids.contains(&id).then(|| {
                (
                    id,
                    (
                        p["name"].as_str().unwrap_or("(unnamed)").to_string(),
                        p["run_time_ns"].as_u64().unwrap_or(0),
                        p["run_cnt"].as_u64().unwrap_or(0),
                    ),
                )
            })
        })
        .collect())
}
