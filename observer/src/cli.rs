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
        a contended wait costs a few hundred nanoseconds more. Needs root (or CAP_BPF + CAP_PERFMON) \
        and Linux >= 5.8 with BTF."
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
    /// Observe a running process until it exits, --duration ends, or SIGINT/SIGTERM.
    Attach {
        /// Process to observe.
        #[arg(short, long)]
        pid: u32,
        /// Stop after this many seconds.
        #[arg(short, long, value_name = "SECS")]
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
    },
    /// Re-run the model offline on a stream written by --record (no root needed).
    Replay {
        /// The recorded event stream (JSON lines).
        file: PathBuf,
        /// Write the JSON report to FILE.
        #[arg(long, value_name = "FILE")]
        report: Option<PathBuf>,
        /// Long-wait threshold used for the summary, in seconds.
        #[arg(long, default_value_t = 5.0, value_name = "SECS")]
        long_wait: f64,
    },
    /// Check this machine: kernel features, privileges, and which hooks attach.
    Doctor,
}

#[derive(Args, Debug, Clone)]
pub struct ObserveOpts {
    /// No live lines; only the final summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Write the JSON report to FILE (schema observer.report/1).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write every event to FILE (JSON lines) for `observer replay`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// A futex wait at least this long (seconds) is reported as a long wait.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    pub long_wait: f64,
    /// A thread that has not run for this long (seconds) while others did is stuck.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub stuck: f64,
    /// Thread creations per second (in any one-second window) that count as churn.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub churn: u64,
    /// On a deadlock (or another hang): write the report, kill the target, exit 3.
    #[arg(long)]
    pub kill_on_deadlock: bool,
    /// Also put uprobes on pthread_create/join/detach/exit. Without them
    /// creation sites come from the creator's stack copied at clone, joins
    /// from futex waits and glibc's thread descriptors, at no cost per call;
    /// with them, pthread_exit calls and joins of threads not created with
    /// glibc's layout are seen too, at ~15 us per call and ~0.15 s per
    /// uprobe when exiting.
    #[arg(long)]
    pub thread_uprobes: bool,
    /// Accepted for compatibility: thread uprobes are off by default.
    #[arg(long, hide = true)]
    pub no_thread_uprobes: bool,
    /// Deep tier: uprobes on libc's mutex/rwlock/semaphore/condvar functions
    /// and CPython's lock functions: holders of semaphores and Python locks,
    /// per-lock hold and wait times, lock-order inversions (potential
    /// deadlocks), locks held at thread exit. Costs two uprobe hits per lock
    /// and unlock call: measured 28 us per uncontended lock/unlock pair on a
    /// 2-core VM (13 ns unobserved); for debugging, not production hot paths.
    #[arg(long)]
    pub uprobes: bool,
    /// Benchmarks: the deep tier's uprobes with do-nothing programs.
    #[arg(long, hide = true)]
    pub uprobes_bare: bool,
    /// Also observe processes the target forks.
    #[arg(long)]
    pub follow_forks: bool,
    /// Kernel hooks: auto picks the cheapest that works (fentry, tp_btf, raw_tp, tracepoint).
    #[arg(long, default_value = "auto", value_parser = ["auto", "fentry", "tp_btf", "raw_tp", "tracepoint"])]
    pub hooks: String,
    /// How often the wait table is scanned, in milliseconds.
    #[arg(long, default_value_t = 25, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub scan_interval: u64,
    /// Ring buffer size in KiB (rounded up to a power of two).
    #[arg(long, default_value_t = 4096, value_name = "KIB", value_parser = clap::value_parser!(u32).range(4..=1_048_576))]
    pub ringbuf_kib: u32,
}

impl ObserveOpts {
    pub fn long_wait_ns(&self) -> anyhow::Result<u64> {
        secs_to_ns(self.long_wait, "--long-wait")
    }
}

pub fn secs_to_ns(s: f64, what: &str) -> anyhow::Result<u64> {
    if !s.is_finite() || !(0.0..=1e7).contains(&s) {
        anyhow::bail!("{what} must be a number of seconds between 0 and 10000000, got {s}");
    }
    Ok((s * 1e9) as u64)
}
