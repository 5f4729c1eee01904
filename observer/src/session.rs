//! `run` and `attach`: load probes, start or find the target, feed events
//! from the live source into the model until the target exits or we are
//! told to stop, then print the summary and write the reports.

use std::{
    collections::HashSet,
    fs::File,
    io::{BufWriter, Write},
    os::fd::OwnedFd,
    path::PathBuf,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    cli::ObserveOpts,
    event::Event,
    model::Model,
    probe::{HookUse, ProbeConfig, Probes, Rung},
    report,
    source::{live::LiveSource, procfs},
    sys,
};

/// Output files, opened (so checked) before any BPF is loaded.
struct Outputs {
    report: Option<(PathBuf, File)>,
    record: Option<BufWriter<File>>,
}

fn create(p: &PathBuf, what: &str) -> Result<File> {
    File::create(p).with_context(|| format!("cannot write {what} {}", p.display()))
}

impl Outputs {
    fn open(opts: &ObserveOpts) -> Result<Outputs> {
        Ok(Outputs {
            report: match &opts.report {
                Some(p) => Some((p.clone(), create(p, "report")?)),
                None => None,
            },
            record: match &opts.record {
                Some(p) => Some(BufWriter::new(create(p, "recording")?)),
                None => None,
            },
        })
    }
}

enum Target {
    /// Started by us: reaped for its exit status.
    Child {
        pid: u32,
    },
    Attached {
        pid: u32,
    },
}

impl Target {
    fn pid(&self) -> u32 {
        match self {
            Target::Child { pid } | Target::Attached { pid } => *pid,
        }
    }
}

struct Session {
    opts: ObserveOpts,
    long_wait_ns: u64,
    model: Model,
    out: Outputs,
    announced: HashSet<(u32, u64)>,
}

impl Session {
    fn feed(&mut self, evs: &mut Vec<Event>) -> Result<()> {
        for ev in evs.drain(..) {
            self.model.apply(&ev);
            if let Some(rec) = &mut self.out.record {
                serde_json::to_writer(&mut *rec, &ev).context("writing the recording")?;
                rec.write_all(b"\n").context("writing the recording")?;
            }
            if !self.opts.quiet {
                if let Some(line) = report::live::line(&self.model, &ev) {
                    eprintln!("{line}");
                }
            }
        }
        Ok(())
    }

    fn long_wait_lines(&mut self, now: u64) {
        let lines =
            report::live::long_waits(&self.model, now, self.long_wait_ns, &mut self.announced);
        if !self.opts.quiet {
            for l in lines {
                eprintln!("{l}");
            }
        }
    }

    fn finish(&mut self, mode: &str, hooks: &[HookUse]) -> Result<()> {
        print!("{}", report::text::summary(&self.model, self.long_wait_ns));
        if let Some(rec) = &mut self.out.record {
            rec.flush().context("writing the recording")?;
        }
        if let Some((path, f)) = self.out.report.take() {
            let r = report::json::build(&self.model, mode, hooks);
            let mut w = BufWriter::new(f);
            serde_json::to_writer_pretty(&mut w, &r)
                .map_err(anyhow::Error::from)
                .and_then(|_| Ok(w.flush()?))
                .with_context(|| format!("cannot write report {}", path.display()))?;
        }
        Ok(())
    }
}

fn probe_config(opts: &ObserveOpts) -> Result<(ProbeConfig, Option<Rung>)> {
    let rung = match opts.hooks.as_str() {
        "auto" => None,
        s => Some(Rung::parse(s).with_context(|| format!("unknown --hooks {s}"))?),
    };
    let cfg = ProbeConfig {
        long_wait_ns: opts.long_wait_ns()?,
        follow_forks: opts.follow_forks,
        ringbuf_bytes: opts.ringbuf_kib.saturating_mul(1024),
    };
    Ok((cfg, rung))
}

fn load_probes(opts: &ObserveOpts, verbose: u8) -> Result<Probes> {
    let (cfg, rung) = probe_config(opts)?;
    let mut probes = Probes::load(&cfg)?;
    probes.attach(rung)?;
    if probes.mounted_tracefs {
        tracing::info!("mounted tracefs at /sys/kernel/tracing");
    }
    for h in &probes.hooks {
        if verbose > 0 {
            eprintln!("observer: hook {h}");
        }
    }
    Ok(probes)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// `observer run -- CMD`: returns CMD's exit code.
pub fn run(opts: ObserveOpts, cmd: Vec<String>, verbose: u8) -> Result<u8> {
    sys::check_privileges()?;
    let prog = sys::resolve_command(&cmd[0])?;
    let out = Outputs::open(&opts)?;
    let long_wait_ns = opts.long_wait_ns()?;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut probes = load_probes(&opts, verbose)?;
        let mut child = sys::GatedChild::spawn(&prog, &cmd)?;
        let pid = child.pid;
        probes.watch(pid)?;
        let pidfd = sys::pidfd_open(pid).context("pidfd_open on the child")?;
        let src = LiveSource::new(probes, min_age(&opts))?;
        let mut s = Session {
            opts,
            long_wait_ns,
            model: Model::new(),
            out,
            announced: HashSet::new(),
        };
        let now = procfs::mono_ns();
        let mut evs = vec![Event::Start {
            ts_ns: now,
            tgid: pid,
            cmdline: cmd.clone(),
            attached: false,
        }];
        evs.extend(procfs::seed_threads(pid).unwrap_or_default());
        s.feed(&mut evs)?;
        child.release()?;
        tracing::info!("observing pid {pid}");
        let status = observe(&mut s, src, Target::Child { pid }, pidfd, None, "run").await?;
        Ok(status.map(sys::exit_code_of).unwrap_or(1))
    })
}

/// `observer attach -p PID`.
pub fn attach(opts: ObserveOpts, pid: u32, duration: Option<f64>, verbose: u8) -> Result<u8> {
    sys::check_privileges()?;
    if pid == std::process::id() {
        bail!("refusing to observe the observer itself (pid {pid})");
    }
    if let Some(tgid) = procfs::tgid_of(pid).filter(|&t| t != pid) {
        bail!("{pid} is a thread of process {tgid}: attach to the process");
    }
    let pidfd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => bail!("no such process: {pid}"),
        Err(e) => return Err(e).with_context(|| format!("cannot open process {pid}")),
    };
    let duration = duration
        .map(|d| crate::cli::secs_to_ns(d, "--duration"))
        .transpose()?;
    let out = Outputs::open(&opts)?;
    let long_wait_ns = opts.long_wait_ns()?;
    let rt = runtime()?;
    rt.block_on(async move {
        let mut probes = load_probes(&opts, verbose)?;
        probes.watch(pid)?;
        let cmdline = procfs::cmdline(pid);
        let seed = procfs::seed_threads(pid);
        if !procfs::exists(pid) || seed.is_err() {
            bail!("process {pid} exited while attaching");
        }
        let src = LiveSource::new(probes, min_age(&opts))?;
        let mut s = Session {
            opts,
            long_wait_ns,
            model: Model::new(),
            out,
            announced: HashSet::new(),
        };
        let now = procfs::mono_ns();
        let mut evs = vec![Event::Start {
            ts_ns: now,
            tgid: pid,
            cmdline,
            attached: true,
        }];
        evs.extend(seed.unwrap_or_default());
        s.feed(&mut evs)?;
        tracing::info!("observing pid {pid}");
        observe(
            &mut s,
            src,
            Target::Attached { pid },
            pidfd,
            duration,
            "attach",
        )
        .await?;
        Ok(0)
    })
}

fn min_age(opts: &ObserveOpts) -> u64 {
    // A wait younger than one scan period is transient contention.
    (opts.scan_interval * 1_000_000).min(10_000_000)
}

/// The event loop. Returns the target's raw wait status when we reaped it.
async fn observe(
    s: &mut Session,
    mut src: LiveSource,
    target: Target,
    pidfd: OwnedFd,
    duration_ns: Option<u64>,
    mode: &str,
) -> Result<Option<i32>> {
    // SAFETY: the AsyncFd owns the pidfd and keeps it open while registered.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .context("watching the target")?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut drain = tokio::time::interval(Duration::from_millis(20));
    let mut scan = tokio::time::interval(Duration::from_millis(s.opts.scan_interval));
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = tokio::time::sleep(Duration::from_nanos(duration_ns.unwrap_or(u64::MAX / 4)));
    tokio::pin!(deadline);
    let mut evs = Vec::new();
    let mut stop_signal: Option<i32> = None;
    loop {
        tokio::select! {
            r = src.urgent(&mut evs) => { r.context("reading the ring buffer")?; }
            _ = drain.tick() => src.drain(&mut evs),
            _ = scan.tick() => {
                src.drain(&mut evs);
                let now = procfs::mono_ns();
                src.scan(now, &mut evs);
                s.feed(&mut evs)?;
                s.long_wait_lines(now);
            }
            g = pidfd.readable() => { let _ = g?; break; }
            _ = sigint.recv() => { stop_signal = Some(libc::SIGINT); }
            _ = sigterm.recv() => { stop_signal = Some(libc::SIGTERM); }
            _ = &mut deadline => break,
        }
        s.feed(&mut evs)?;
        if let Some(sig) = stop_signal {
            match target {
                // Pass the signal on and give the child a moment to exit.
                Target::Child { pid } => {
                    sys::kill(pid, sig);
                    let grace =
                        tokio::time::timeout(Duration::from_secs(3), pidfd.readable()).await;
                    if grace.is_err() {
                        tracing::warn!("child {pid} ignored signal {sig}; killing it");
                        sys::kill(pid, libc::SIGKILL);
                        let _ = pidfd.readable().await;
                    }
                }
                Target::Attached { .. } => {}
            }
            break;
        }
    }
    let now = procfs::mono_ns();
    src.finish(now, &mut evs);
    let status = match target {
        Target::Child { pid } => Some(sys::waitpid(pid).context("reaping the child")?),
        Target::Attached { .. } => None,
    };
    evs.push(Event::End {
        ts_ns: now,
        tgid: target.pid(),
        exit_status: status,
    });
    s.feed(&mut evs)?;
    if src.decode_errors > 0 {
        tracing::warn!(
            "{} ring buffer records could not be decoded",
            src.decode_errors
        );
    }
    let hooks = src.probes.hooks.clone();
    s.finish(mode, &hooks)?;
    Ok(status)
}
