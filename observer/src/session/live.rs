//! The live loop of `run` and `attach`: drain the ring buffer, scan the
//! wait table and judge every scan period, sample thread activity, until
//! the target exits, a signal or the duration ends it; then the last look
//! and the outputs.

use std::{os::fd::OwnedFd, time::Duration};

use anyhow::{Context, Result};
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use super::{
    LiveSession,
    enrich::{gate_events, late_site_events, profile_events, symbol_events},
    target::Target,
};
use crate::{
    event::Event,
    report,
    source::{
        live::LiveSource,
        procfs,
        progress::{Watchdog, tree},
    },
    sys,
};

pub(super) struct End {
    /// The target's raw wait status, when we reaped it.
    pub(super) status: Option<i32>,
    pub(super) hang_found: bool,
    pub(super) killed_on_hang: bool,
}

/// The event loop.
pub(super) async fn observe(
    s: &mut LiveSession,
    mut src: LiveSource,
    target: Target,
    pidfd: OwnedFd,
    duration_ns: Option<u64>,
    mode: &str,
) -> Result<End> {
    // SAFETY: the AsyncFd owns the pidfd and keeps it open while registered.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
        .context("watching the target")?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut drain = tokio::time::interval(Duration::from_millis(20));
    let mut scan = tokio::time::interval(Duration::from_millis(s.opts.scan_interval));
    let mut agg = tokio::time::interval(Duration::from_millis(500));
    let mut activity = crate::source::activity::Activity::default();
    let sample_ms = (s.engine.limits().stuck_ns / 4_000_000).clamp(100, 1000);
    let mut sample = tokio::time::interval(Duration::from_millis(sample_ms));
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    agg.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    drain.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = tokio::time::sleep(Duration::from_nanos(duration_ns.unwrap_or(u64::MAX / 4)));
    tokio::pin!(deadline);
    let gil_sample = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(gil_sample);
    // The hang watchdog (--hang-after): on-CPU time of the target's tree.
    let hang_after_ns = s
        .opts
        .hang_after
        .map(|d| crate::cli::secs_to_ns(d, "--hang-after"))
        .transpose()?;
    let mut watchdog = hang_after_ns.map(|ns| Watchdog::new(ns, procfs::mono_ns()));
    let mut hang_tick = tokio::time::interval(Duration::from_millis(Watchdog::period_ms(
        hang_after_ns.unwrap_or(0),
    )));
    hang_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut evs = Vec::new();
    let mut stop_signal: Option<i32> = None;
    let mut hang_found = false;
    let mut killed_on_hang = false;
    loop {
        tokio::select! {
            r = src.urgent(&mut evs) => {
                r.context("reading the ring buffer")?;
                // An urgent record (EDEADLK, ...): judge it before the next scan.
                scan.reset_immediately();
            }
            _ = drain.tick() => src.drain(&mut evs),
            _ = scan.tick() => {
                src.drain(&mut evs);
                let now = procfs::mono_ns();
                src.scan(now, &mut evs);
                s.feed(&mut evs)?;
                // Locks held since before the attach, judged on the state just fed.
                let deep = s.opts.uprobes && src.probes.uprobe_count() > 0;
                evs.extend(crate::source::preheld::events(&s.engine.model, &src.probes, deep, now));
                s.feed(&mut evs)?;
                s.resume_execs(&mut src.probes);
                s.pending_thread_uprobes(&mut src, now);
                let hung = s.scan(&mut src, now)?;
                if !hung.is_empty() {
                    hang_found = true;
                    if s.opts.kill_on_deadlock {
                        killed_on_hang = true;
                        // The hung process (maybe a followed fork) and the target.
                        for pid in hung {
                            sys::kill(pid, libc::SIGKILL);
                        }
                        sys::kill(target.pid(), libc::SIGKILL);
                        let _ = pidfd.readable().await;
                        break;
                    }
                }
            }
            _ = hang_tick.tick(), if watchdog.is_some() => {
                let now = procfs::mono_ns();
                let since = watchdog.as_mut().and_then(|w| w.sample(target.pid(), now));
                if let Some(since) = since {
                    src.drain(&mut evs);
                    s.feed(&mut evs)?;
                    s.hang_report(&src, now, since)?;
                    hang_found = true;
                    if s.opts.kill_on_hang {
                        killed_on_hang = true;
                        // The whole tree, as it is now.
                        for pid in tree(target.pid()) {
                            sys::kill(pid, libc::SIGKILL);
                        }
                        let _ = pidfd.readable().await;
                        break;
                    }
                    // Keep running: the report and pages are written now,
                    // and again at the end.
                    let hooks = src.probes.hooks.clone();
                    s.write_outputs(mode, &hooks, src.probes.uprobe_count())?;
                }
            }
            _ = agg.tick() => {
                s.symbolize_aggregates(&src)?;
                s.refresh_gates(&src)?;
                s.recheck_libs(&mut src);
            }
            _ = sample.tick() => {
                let now = procfs::mono_ns();
                activity.sample(&s.engine.model, now, s.engine.limits().stuck_ns, &mut evs);
                s.python_names(now)?;
            }
            _ = &mut gil_sample => {
                let next = s.gil_tick(&src)?;
                gil_sample.as_mut().reset(tokio::time::Instant::now() + next);
            }
            g = pidfd.readable() => { let _ = g?; break; }
            _ = sigint.recv() => { stop_signal = Some(libc::SIGINT); }
            _ = sigterm.recv() => { stop_signal = Some(libc::SIGTERM); }
            _ = &mut deadline => break,
        }
        s.feed(&mut evs)?;
        s.resume_execs(&mut src.probes);
        if let Some(sig) = stop_signal {
            // Every thread's Python state as it is now, before the signal
            // reaches a child (Python unwinds on SIGINT).
            s.python_view_of(procfs::mono_ns(), true, true)?;
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
    if !killed_on_hang && stop_signal.is_none() {
        s.python_view_of(now, true, true)?;
    }
    s.gil_emit(now)?;
    src.finish(now, &mut evs);
    // Creation sites of a process that already ended: named from the
    // mappings read while it lived.
    s.feed(&mut evs)?;
    evs.extend(late_site_events(
        &s.engine.model,
        &mut s.symbols,
        &mut s.sym_tried,
    ));
    if s.opts.uprobes {
        evs.extend(gate_events(&s.engine.model, &src.probes, now));
        evs.extend(profile_events(&src.probes));
    }
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
    // Never leave a process stopped at exec behind.
    s.resume_execs(&mut src.probes);
    // Names for what arrived since the last scan (a short-lived target may
    // be gone already: its recorded mappings serve).
    let mut evs = symbol_events(&s.engine.model, &mut s.symbols, &mut s.sym_tried);
    s.feed(&mut evs)?;
    // Last look, with what only the end can tell (threads never joined).
    for f in s.engine.finish(now) {
        hang_found |= f.kind.is_hang();
        if !s.opts.quiet {
            eprint!("{}", report::findings::finding(&f));
        }
    }
    if src.decode_errors > 0 {
        tracing::warn!(
            "{} ring buffer records could not be decoded",
            src.decode_errors
        );
    }
    let hooks = src.probes.hooks.clone();
    s.write_outputs(mode, &hooks, src.probes.uprobe_count())?;
    src.probes.release_uprobes();
    // The kernel unregisters uprobes one at a time, each after an RCU grace
    // period: say why exiting takes a moment.
    let n = src.probes.perf_uprobe_count();
    if n > 8 && !s.opts.quiet {
        eprintln!("observer: releasing {n} uprobes (the kernel takes ~0.1-0.2 s for each)");
    }
    Ok(End {
        status,
        hang_found,
        killed_on_hang,
    })
}

/// Exit code of every subcommand when a hang was found (see `crate::exit`).
pub const EXIT_HANG: u8 = crate::exit::HANG;
