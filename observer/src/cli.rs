//! Command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "observer",
    version,
    about = "Explains why a multithreaded program hangs or crawls, from outside, with eBPF",
    long_about = "Explains why a multithreaded program hangs or crawls, from outside, with eBPF.\n\n\
        Kernel probes on futex waits and thread lifecycle (clone, exit, rename, exec) feed a model \
        of the process's threads and waits. Uncontended locks never enter the kernel and cost nothing; \
        a futex wait of a watched process costs about 0.2 us more (BENCHMARKS.md). Needs root (or CAP_BPF + CAP_PERFMON) \
        and Linux >= 5.8 with BTF.",
    after_help = "Exit status (every subcommand): 0 no hang found, 1 error, 2 usage (bad command \
        line or daemon config), 3 a hang was found (deadlock, PI deadlock, orphaned lock, starved thread pool; \
        or --hang-after with --kill-on-hang saw no thread run). `run` without --kill-on-deadlock \
        or --kill-on-hang exits with CMD's status (128+N when killed by signal N)."
)]
pub struct Cli {
    /// More detail on stderr: which kernel hooks were used and why (-vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start CMD under observation from its first instruction; exit with its status.
    Run {
        #[command(flatten)]
        opts: ObserveOpts,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Observe running processes until they exit, --duration ends, or SIGINT/SIGTERM.
    Attach {
        /// Process to observe; several (`-p A -p B` or `-p A,B`) are one
        /// wait-for graph: a cycle through shared memory between them is
        /// one deadlock.
        #[arg(short, long, required = true, value_delimiter = ',')]
        pid: Vec<u32>,
        /// Stop after this long (30, 1.5s, 500ms, 2m, 1h; a bare number is seconds).
        #[arg(short, long, value_name = "DURATION", value_parser = duration_secs)]
        duration: Option<f64>,
        #[command(flatten)]
        opts: ObserveOpts,
    },
    /// One look at a process through /proc (no BPF): every blocked thread,
    /// what it waits for, and any deadlock. Exits 3 if one is found.
    Dump {
        #[arg(short, long)]
        pid: u32,
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        format: String,
        /// Every thread's native stack too; a CPython thread's Python frames
        /// are merged into it where the eval loop runs them, one stack in
        /// the order it ran (like `py-spy dump --native`).
        #[arg(long)]
        native: bool,
    },
    /// Record every event of a run or an attach to FILE for `observer replay`
    /// (like `run`/`attach` with --record; all their options apply).
    Record {
        /// The recording to write (JSON lines, schema observer.recording/1).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Attach to this running process instead of starting CMD.
        #[arg(short, long, conflicts_with = "cmd")]
        pid: Option<u32>,
        /// With -p: stop after this long (30, 1.5s, 500ms, 2m; a bare number is seconds).
        #[arg(short, long, value_name = "DURATION", requires = "pid", value_parser = duration_secs)]
        duration: Option<f64>,
        #[command(flatten)]
        opts: ObserveOpts,
        /// The command and its arguments (after `--`).
        #[arg(last = true, value_name = "CMD", required_unless_present = "pid")]
        cmd: Vec<String>,
    },
    /// Re-run the model offline on a recording (no root needed): the same
    /// findings, judged with the live run's limits (from the recording's header).
    Replay {
        #[command(flatten)]
        args: ReplayArgs,
    },
    /// Check this machine: kernel features, privileges, and which hooks attach.
    Doctor,
    /// Watch the processes a config selects; leave a report behind every finding.
    #[command(long_about = crate::daemon::HELP)]
    Daemon {
        /// The TOML config.
        #[arg(
            long,
            value_name = "FILE",
            required_unless_present = "check_config",
            conflicts_with = "check_config"
        )]
        config: Option<PathBuf>,
        /// Validate FILE and exit: 0 if good, else one line per error and exit 2.
        #[arg(long, value_name = "FILE")]
        check_config: Option<PathBuf>,
    },
    /// Reports written by the daemon (with or without a daemon running).
    Reports {
        #[command(subcommand)]
        cmd: ReportsCmd,
    },
    /// Print the completion script for SHELL on stdout
    /// (`observer completions bash > /etc/bash_completion.d/observer`).
    Completions {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReportsCmd {
    /// One line per report, oldest first: its id and its finding.
    List {
        #[arg(long, value_name = "DIR", default_value = "/var/lib/observer/reports")]
        dir: PathBuf,
    },
    /// Print one report (text, or --json).
    Show {
        /// The id from `reports list` (the file name without extension).
        id: String,
        #[arg(long, value_name = "DIR", default_value = "/var/lib/observer/reports")]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ReplayArgs {
    /// The recording (`observer record`, or --record of run/attach).
    pub file: PathBuf,
    /// What goes to stdout: findings and summary as text, or the JSON report.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub pictures: PictureOpts,
    /// Long-wait threshold (5, 500ms, 2m; default: the recorded run's, else 5s).
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    pub long_wait: Option<f64>,
    /// Stuck-thread threshold (10, 2m; default: the recorded run's, else 10s).
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    pub stuck: Option<f64>,
    /// Thread creations per second that count as churn (default: the recorded run's, else 200).
    #[arg(long, value_name = "N")]
    pub churn: Option<u64>,
}

/// Picture files written at the end (see docs/reports.md).
#[derive(Args, Debug, Clone, Default)]
pub struct PictureOpts {
    /// Write a timeline to FILE (Chrome trace-event JSON: open it in ui.perfetto.dev).
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    /// Write the wait-for graph to FILE (Graphviz DOT: `dot -Tsvg FILE`).
    #[arg(long, value_name = "FILE")]
    pub dot: Option<PathBuf>,
    /// Write a self-contained HTML page to FILE: findings, cycles drawn, threads.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ObserveOpts {
    #[command(flatten)]
    pub pictures: PictureOpts,
    /// No live lines; only the final summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the JSON report to FILE (schema observer.report/1).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write every event to FILE (JSON lines) for `observer replay`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// A futex wait at least this long is reported as a long wait (5, 1s, 500ms, 2m;
    /// a bare number is seconds).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = duration_secs)]
    pub long_wait: f64,
    /// A thread that has not run for this long while others did is stuck (10, 10s, 2m).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = duration_secs)]
    pub stuck: f64,
    /// Thread creations per second (in any one-second window) that count as churn.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub churn: u64,
    /// An event loop thread (asyncio) that has not returned to its selector
    /// (epoll_wait) for this long is reported blocked (100ms, 0.5s, 1).
    #[arg(long, default_value = "100ms", value_name = "DURATION", value_parser = duration_secs)]
    pub loop_blocked: f64,
    /// On a deadlock (or another hang): write the report, kill the target, exit 3.
    #[arg(long)]
    pub kill_on_deadlock: bool,
    /// Hang watchdog: when no thread of the target or its descendants has
    /// run on a CPU for DURATION (10m, 30s, 1.5s), write the report once:
    /// every thread, what it waits for, its stacks (busy or periodically
    /// waking programs are not hung).
    #[arg(long, value_name = "DURATION", value_parser = duration_secs)]
    pub hang_after: Option<f64>,
    /// With --hang-after: after the report, kill the target and its
    /// descendants and exit 3.
    #[arg(long, requires = "hang_after")]
    pub kill_on_hang: bool,
    /// Also put uprobes on pthread_create/join/detach/exit. Without them
    /// creation sites come from the creator's stack copied at clone, joins
    /// from futex waits and glibc's thread descriptors, at no cost per call;
    /// with them, pthread_exit calls and joins of threads not created with
    /// glibc's layout are seen too, at about 8 us more per
    /// pthread_create+join than without (BENCHMARKS.md).
    #[arg(long)]
    pub thread_uprobes: bool,
    /// Accepted for compatibility: thread uprobes are off by default.
    #[arg(long, hide = true)]
    pub no_thread_uprobes: bool,
    /// Deep tier: uprobes on libc's mutex/rwlock/semaphore/condvar functions
    /// and CPython's lock functions: holders of semaphores and Python locks,
    /// per-lock hold and wait times, lock-order inversions (potential
    /// deadlocks), locks held at thread exit. Costs a uprobe hit per lock
    /// and per unlock call: about 1.4 us per uncontended lock/unlock pair
    /// against about 20 ns unobserved (BENCHMARKS.md); for debugging, not
    /// production hot paths.
    #[arg(long)]
    pub uprobes: bool,
    /// Benchmarks: the deep tier's uprobes with do-nothing programs.
    #[arg(long, hide = true)]
    pub uprobes_bare: bool,
    /// Also observe processes the target forks (attach: and those it forked before, its live descendants).
    #[arg(long)]
    pub follow_forks: bool,
    /// Kernel hooks. auto: the cheapest rung that works (fentry, tp_btf,
    /// raw_tp, tracepoint); futex and epoll waits learnt when a thread
    /// sleeps in one (sched_switch: no syscall of the host pays), moving to
    /// the syscall hooks once a watched process turns out to be Python (an
    /// asyncio loop under load may never sleep in epoll_wait; not where
    /// those are fentry, which sees no epoll_wait). sched:
    /// always sched_switch. syscalls or a rung: always the syscall hooks,
    /// which see each call's return (a PI deadlock's EDEADLK, a robust
    /// mutex's EOWNERDEAD) and epoll_wait calls that do not sleep, but make
    /// every syscall of every process pay where fentry is refused.
    #[arg(long, default_value = "auto", value_parser = ["auto", "syscalls", "sched", "fentry", "tp_btf", "raw_tp", "tracepoint"])]
    pub hooks: String,
    /// How often the wait table is scanned, in milliseconds.
    #[arg(long, default_value_t = 25, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub scan_interval: u64,
    /// Ring buffer size in KiB (rounded up to a power of two). It absorbs
    /// bursts while userspace unwinds creation stacks: a record that finds it
    /// over half full goes out without its stack.
    #[arg(long, default_value_t = 16384, value_name = "KIB", value_parser = clap::value_parser!(u32).range(4..=1_048_576))]
    pub ringbuf_kib: u32,
    /// CPython targets: print, every SECS seconds (default 2), like top, where
    /// each Python thread's time went: running, waiting for the GIL, holding
    /// it, waiting on locks, blocked in other syscalls; and a verdict.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2",
          value_parser = top_secs)]
    pub python_top: Option<f64>,
}

fn top_secs(s: &str) -> Result<f64, String> {
    match duration_secs(s)? {
        v if (0.1..=3600.0).contains(&v) => Ok(v),
        v => Err(format!("--python-top wants 0.1 to 3600 seconds, got {v}")),
    }
}

impl ObserveOpts {
    pub fn long_wait_ns(&self) -> anyhow::Result<u64> {
        secs_to_ns(self.long_wait, "--long-wait")
    }
}

/// A duration as people type it, in seconds: `1.5`, `1s`, `500ms`, `2m`,
/// `1h`, `250us` (a bare number is seconds).
pub fn duration_secs(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit in '{s}' (use ns, us, ms, s, m or h)")),
    };
    match num.parse::<f64>() {
        Ok(v) if v.is_finite() && v * scale > 1e7 => Err(format!(
            "'{s}' is too long (at most 10000000 seconds, about 115 days)"
        )),
        Ok(v) if v.is_finite() => Ok(v * scale),
        _ => Err(format!(
            "'{s}' is not a duration (a number with an optional unit: 30, 1.5s, 500ms, 2m)"
        )),
    }
}

pub fn secs_to_ns(s: f64, what: &str) -> anyhow::Result<u64> {
    if !s.is_finite() || !(0.0..=1e7).contains(&s) {
        anyhow::bail!("{what} must be a number of seconds between 0 and 10000000, got {s}");
    }
    Ok((s * 1e9) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(duration_secs("5"), Ok(5.0));
        assert_eq!(duration_secs("1.5"), Ok(1.5));
        assert_eq!(duration_secs("1s"), Ok(1.0));
        assert_eq!(duration_secs("500ms"), Ok(0.5));
        assert_eq!(duration_secs("2m"), Ok(120.0));
        assert_eq!(duration_secs("1h"), Ok(3600.0));
        assert_eq!(duration_secs("250us"), Ok(0.00025));
        assert_eq!(duration_secs(" 3 s "), Ok(3.0));
        for bad in ["", "s", "5x", "1.2.3s", "-1s", "ms5", "inf", "5 parsecs"] {
            let e = duration_secs(bad).unwrap_err();
            assert!(!e.contains('\n') && e.contains(bad.trim()), "{bad}: {e}");
        }
        // out of range values are refused where they are used, and parsed
        assert!(secs_to_ns(1e9, "--x").is_err());
        let e = duration_secs("10000001").unwrap_err();
        assert!(e.contains("too long"), "{e}");
        assert_eq!(duration_secs("10000000"), Ok(1e7));
    }

    /// Costs quoted in --help are the ones BENCHMARKS.md measures now (the
    /// deep tier's pair was 28 us before its probes moved to emulated sites).
    #[test]
    fn help_quotes_current_costs() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").unwrap().render_long_help();
        let run = run.to_string();
        assert!(!run.contains("28 us") && !run.contains("15 us"), "{run}");
        let bench = include_str!("../../BENCHMARKS.md");
        for (quoted, measured) in [
            ("about 1.4 us per uncontended lock/unlock pair", "1.44 µs"),
            ("about 8 us more per\npthread_create+join", "37.7 µs"),
        ] {
            let flat = run.split_whitespace().collect::<Vec<_>>().join(" ");
            let quoted = quoted.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(&quoted), "{quoted:?} not in {run}");
            assert!(bench.contains(measured), "{measured}");
        }
    }

    #[test]
    fn command_lines_take_units() {
        let c = Cli::try_parse_from([
            "observer",
            "run",
            "--long-wait",
            "500ms",
            "--stuck",
            "2m",
            "--",
            "x",
        ])
        .unwrap();
        let Command::Run { opts, .. } = c.cmd else {
            panic!()
        };
        assert_eq!((opts.long_wait, opts.stuck), (0.5, 120.0));
        let c =
            Cli::try_parse_from(["observer", "attach", "-p", "1", "--duration", "1.5s"]).unwrap();
        let Command::Attach { duration, opts, .. } = c.cmd else {
            panic!()
        };
        assert_eq!(
            (duration, opts.long_wait, opts.stuck),
            (Some(1.5), 5.0, 10.0)
        );
        let c = Cli::try_parse_from(["observer", "replay", "f", "--long-wait", "2"]).unwrap();
        let Command::Replay { args } = c.cmd else {
            panic!()
        };
        assert_eq!(args.long_wait, Some(2.0));
        let e =
            Cli::try_parse_from(["observer", "run", "--long-wait", "5x", "--", "x"]).unwrap_err();
        assert!(
            e.to_string()
                .lines()
                .next()
                .unwrap()
                .contains("unknown unit in '5x'"),
            "{e}"
        );
    }
}
