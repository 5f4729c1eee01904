//! Target setup: load the probes, start the command held at a gate until
//! they watch it (`run`) or find a running process (`attach`), seed the
//! engine with its threads, then hand over to the live loop.

use anyhow::{Context, Result, bail};

use super::{
    Outputs, Session,
    live::{EXIT_HANG, observe},
    one::One,
    uprobes::{UprobeSet, attach_uprobes, attach_uprobes_to, planned_uprobe_targets},
};
use crate::{
    cli::ObserveOpts,
    event::Event,
    probe::{ProbeConfig, Probes, Rung, Waits},
    source::{live::LiveSource, procfs},
    sys,
};

pub(super) enum Target {
    /// Started by us: reaped for its exit status.
    Child {
        pid: u32,
    },
    Attached {
        pid: u32,
    },
}

impl Target {
    pub(super) fn pid(&self) -> u32 {
        match self {
            Target::Child { pid } | Target::Attached { pid } => *pid,
        }
    }
}

/// `stop_on_exec`: `run` holds each exec of the deep tier's targets until
/// its uprobes are in place (see `Session::resume_execs`).
/// `--hooks auto` learns waits at the scheduler (no syscall of the host
/// pays) until a watched process turns out to be Python
/// (`One::learn_loops`); a kernel without it keeps the syscall hooks.
fn probe_config(
    opts: &ObserveOpts,
    stop_on_exec: bool,
) -> Result<(ProbeConfig, Option<Rung>, Waits)> {
    let (rung, waits) = match opts.hooks.as_str() {
        "auto" | "sched" => (None, Waits::Sched),
        "syscalls" => (None, Waits::Syscalls),
        s => (
            Some(Rung::parse(s).with_context(|| format!("unknown --hooks {s}"))?),
            Waits::Syscalls,
        ),
    };
    let cfg = ProbeConfig {
        long_wait_ns: opts.long_wait_ns()?,
        follow_forks: opts.follow_forks,
        ringbuf_bytes: opts.ringbuf_kib.saturating_mul(1024),
        deep: opts.uprobes || opts.uprobes_bare,
        stop_on_exec: stop_on_exec && UprobeSet::of(opts).locks,
        loop_blocked_ns: crate::cli::secs_to_ns(opts.loop_blocked, "--loop-blocked")?,
    };
    Ok((cfg, rung, waits))
}

/// Fails in one line when this binary was built without BPF programs.
pub fn require_bpf() -> Result<()> {
    if !observer_ebpf::has_programs() {
        bail!(
            "this observer was built without its BPF programs (clang-19 was missing at build \
             time): only `replay` works; install clang-19 and libbpf-dev (`./x setup`) and rebuild"
        );
    }
    Ok(())
}

pub(crate) fn load_probes(opts: &ObserveOpts, verbose: u8, stop_on_exec: bool) -> Result<Probes> {
    require_bpf()?;
    let (cfg, rung, waits) = probe_config(opts, stop_on_exec)?;
    let mut probes = Probes::load(&cfg)?;
    probes.attach(rung, waits)?;
    if probes.mounted_tracefs {
        tracing::info!("mounted tracefs at /sys/kernel/tracing");
    }
    if verbose > 0 {
        for h in &probes.hooks {
            eprintln!("observer: hook {h}");
        }
        eprintln!(
            "observer: futex and epoll waits learnt {}",
            match probes.wait_hooks() {
                Some(Waits::Sched) => "at sched_switch: no syscall pays",
                _ if probes.rung_of("futex") == Some(Rung::Fentry) =>
                    "at the syscall hooks (fentry: only futex calls pay)",
                _ => "at the syscall hooks (every syscall on the host pays)",
            }
        );
    }
    if UprobeSet::of(opts).any() {
        probes.prepare_uprobe_multi(UprobeSet::of(opts).locks);
        if verbose > 0 {
            eprintln!("observer: uprobes: {}", probes.uprobe_mode());
        }
    }
    Ok(probes)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// `observer run -- CMD`: returns CMD's exit code.
pub fn run(opts: ObserveOpts, cmd: Vec<String>, verbose: u8) -> Result<u8> {
    let t0 = std::time::Instant::now();
    require_bpf()?;
    sys::check_privileges()?;
    let prog = sys::resolve_command(&cmd[0])?;
    let out = Outputs::open(&opts)?;
    let rt = runtime()?;
    // What the command will map is read while the BPF object loads.
    let planned = UprobeSet::of(&opts).any().then(|| {
        let prog = prog.clone();
        std::thread::spawn(move || planned_uprobe_targets(&prog))
    });
    rt.block_on(async move {
        let mut probes = load_probes(&opts, verbose, true)?;
        let stop_on_exec = probes.stops_on_exec();
        let mut child = sys::GatedChild::spawn(&prog, &cmd)?;
        let pid = child.pid;
        probes.watch(pid)?;
        let pidfd = sys::pidfd_open(pid).context("pidfd_open on the child")?;
        let mut src = LiveSource::new(probes, min_age(&opts))?;
        let mut s = Session::open(opts, out)?;
        s.stop_on_exec = stop_on_exec;
        let now = crate::sys::mono_ns();
        let mut evs = vec![Event::Start {
            ts_ns: now,
            tgid: pid,
            cmdline: cmd.clone(),
            attached: false,
            // What the held child will exec (absolute: exec events carry the
            // path as given); its start time is the fork's, kept by exec.
            exe: std::path::absolute(&prog)
                .ok()
                .map(|p| p.display().to_string()),
            start_time_ns: procfs::start_time_ns(pid),
        }];
        evs.extend(procfs::seed_threads(pid).unwrap_or_default());
        s.feed(&mut evs)?;
        let set = UprobeSet::of(&s.opts);
        if let Some(planned) = planned {
            // In place before the first instruction: on the files the
            // command will map (filtered to the held child's PID, which
            // survives exec); checked again in /proc after exec.
            let (libs, py) = planned.join().unwrap_or_default();
            attach_uprobes_to(&mut src.probes, pid, &libs, &py, set);
        }
        child.release()?;
        tracing::debug!("startup: target released {:?} after start", t0.elapsed());
        tracing::info!("observing pid {pid}");
        let mut one = One::new(&mut s, vec![(Target::Child { pid }, pidfd)], "run")?;
        let policy = one.policy(None);
        observe(&mut one, &mut src, &policy).await?;
        if one.killed {
            return Ok(EXIT_HANG);
        }
        Ok(one.status.map(sys::exit_code_of).unwrap_or(1))
    })
}

/// Checks a PID given to attach and opens it.
fn open_attached(pid: u32) -> Result<std::os::fd::OwnedFd> {
    if pid == std::process::id() {
        bail!("refusing to observe the observer itself (pid {pid})");
    }
    if let Some(tgid) = procfs::tgid_of(pid).filter(|&t| t != pid) {
        bail!("{pid} is a thread of process {tgid}: attach to the process");
    }
    match sys::pidfd_open(pid) {
        Ok(fd) => Ok(fd),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => bail!("no such process: {pid}"),
        Err(e) => Err(e).with_context(|| format!("cannot open process {pid}")),
    }
}

/// `observer attach -p PID[,PID...]`: one session over every process.
pub fn attach(opts: ObserveOpts, pids: Vec<u32>, duration: Option<f64>, verbose: u8) -> Result<u8> {
    require_bpf()?;
    sys::check_privileges()?;
    let mut uniq = Vec::new();
    for pid in pids {
        if !uniq.contains(&pid) {
            uniq.push(pid);
        }
    }
    let mut fds = Vec::new();
    for &pid in &uniq {
        fds.push(open_attached(pid)?);
    }
    let duration = duration
        .map(|d| crate::cli::secs_to_ns(d, "--duration"))
        .transpose()?;
    let out = Outputs::open(&opts)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut probes = load_probes(&opts, verbose, false)?;
        for &pid in &uniq {
            probes.watch(pid)?;
        }
        let mut evs = Vec::new();
        let mut seeds = Vec::new();
        for &pid in &uniq {
            let start = procfs::start_event(pid, crate::sys::mono_ns(), true);
            let seed = procfs::seed_threads(pid);
            if !procfs::exists(pid) || seed.is_err() {
                bail!("process {pid} exited while attaching");
            }
            evs.push(start);
            seeds.push((pid, seed.unwrap_or_default()));
        }
        let mut src = LiveSource::new(probes, min_age(&opts))?;
        let mut s = Session::open(opts, out)?;
        let now = crate::sys::mono_ns();
        // --follow-forks: the processes each forked before we came too (a
        // multiprocessing child holding what a target waits for).
        let mut tree = uniq.clone();
        for (pid, seed) in seeds {
            let tids = seeded_tids(&seed);
            evs.extend(seed);
            // Waits already in progress: a deadlock that formed before we came.
            src.add_snapshot(pid, &tids, now, &mut evs);
            if !s.opts.follow_forks {
                continue;
            }
            for q in procfs::descendants(pid) {
                if tree.contains(&q) {
                    continue;
                }
                let Ok(seed) = procfs::seed_threads(q) else {
                    continue;
                };
                if let Err(e) = src.probes.watch(q) {
                    tracing::warn!("cannot observe descendant {q}: {e}");
                    continue;
                }
                evs.push(procfs::start_event(q, now, true));
                let tids = seeded_tids(&seed);
                evs.extend(seed);
                src.add_snapshot(q, &tids, now, &mut evs);
                tree.push(q);
            }
        }
        s.feed(&mut evs)?;
        if UprobeSet::of(&s.opts).any() {
            for &q in &tree {
                attach_uprobes(&mut src.probes, q, q, UprobeSet::of(&s.opts));
            }
        }
        let list: Vec<String> = uniq.iter().map(u32::to_string).collect();
        tracing::info!("observing pid {}", list.join(", "));
        let targets = uniq
            .iter()
            .map(|&pid| Target::Attached { pid })
            .zip(fds)
            .collect();
        let mut one = One::new(&mut s, targets, "attach")?;
        let policy = one.policy(duration);
        observe(&mut one, &mut src, &policy).await?;
        Ok(if one.hang_found { EXIT_HANG } else { 0 })
    })
}

/// TIDs of the `ThreadSeen` events of a /proc seed.
pub(crate) fn seeded_tids(seed: &[Event]) -> Vec<u32> {
    seed.iter()
        .filter_map(|e| match e {
            Event::ThreadSeen { tid, .. } => Some(*tid),
            _ => None,
        })
        .collect()
}

pub(crate) fn min_age(opts: &ObserveOpts) -> u64 {
    super::live::Policy::observe_wait_age(opts.scan_interval).as_nanos() as u64
}
