//! observer: explains why a multithreaded program hangs or crawls.

mod cli;
mod detect;
mod event;
mod graph;
mod model;
mod probe;
mod python;
mod report;
mod session;
mod source;
mod symbol;
mod sys;

use std::{
    io::{BufRead, BufReader},
    process::ExitCode,
};

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`observer dump ... | head`), like other tools.
    // SAFETY: restoring a default signal disposition at startup.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into()),
        )
        .init();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the whole context chain, joined.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("observer: error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Command::Run { opts, cmd } => session::run(opts, cmd, cli.verbose),
        Command::Attach {
            pid,
            duration,
            opts,
        } => session::attach(opts, pid, duration, cli.verbose),
        Command::Replay {
            file,
            report,
            long_wait,
        } => replay(&file, report.as_deref(), long_wait),
        Command::Dump { pid, format } => session::dump(pid, format == "json"),
        Command::Doctor => doctor(),
    }
}

/// How often replay runs the detectors, in event time (the live scan period).
const REPLAY_CHECK_NS: u64 = 25_000_000;

fn replay(
    file: &std::path::Path,
    report_to: Option<&std::path::Path>,
    long_wait: f64,
) -> Result<u8> {
    let long_wait_ns = cli::secs_to_ns(long_wait, "--long-wait")?;
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let out = match report_to {
        Some(p) => Some(
            std::fs::File::create(p)
                .with_context(|| format!("cannot write report {}", p.display()))?,
        ),
        None => None,
    };
    let mut events = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let ev: event::Event = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not an observer event", file.display(), i + 1))?;
        events.push(ev);
    }
    // Judge the state where the live session did (its Scan events), or,
    // for streams without them, every scan period of event time.
    let scans = events
        .iter()
        .any(|e| matches!(e, event::Event::Scan { .. }));
    let mut m = model::Model::new();
    let mut engine = detect::Engine::new(detect::Limits::new(long_wait_ns));
    let mut last_check = 0u64;
    for ev in &events {
        match ev {
            event::Event::Scan { ts_ns } => {
                m.apply(ev);
                engine.check(&m, *ts_ns);
            }
            _ if !scans => {
                if let Some(ts) = ev.ts_ns().filter(|&ts| ts >= last_check + REPLAY_CHECK_NS) {
                    if last_check != 0 {
                        engine.check(&m, m.last_ns);
                    }
                    last_check = ts;
                }
                m.apply(ev);
            }
            _ => m.apply(ev),
        }
    }
    engine.finish(&m, m.last_ns);
    print!("{}", report::findings::all(&engine.findings));
    println!();
    print!("{}", report::text::summary(&m, long_wait_ns));
    if let Some(f) = out {
        serde_json::to_writer_pretty(f, &report::json::build(&m, "replay", &[], &engine.findings))
            .context("writing the report")?;
    }
    Ok(0)
}

fn doctor() -> Result<u8> {
    use probe::{ProbeConfig, Probes, Rung};
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel: {}", rel.trim());
    println!(
        "BTF: {}",
        if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            "yes"
        } else {
            "no (required)"
        }
    );
    let tracefs = std::path::Path::new("/sys/kernel/tracing/events").exists();
    println!(
        "tracefs: {}",
        if tracefs {
            "mounted"
        } else {
            "not mounted (mounted on demand for tracepoints)"
        }
    );
    match sys::check_privileges() {
        Ok(()) => println!("privileges: ok"),
        Err(e) => {
            println!("privileges: {e}");
            return Ok(1);
        }
    }
    probe::check_kernel()?;
    let mut ok = true;
    for rung in Rung::ALL {
        let mut p = Probes::load(&ProbeConfig::default())?;
        match p.attach(Some(rung)) {
            Ok(()) => println!("hooks {rung}: all groups attach"),
            Err(_) => {
                let parts: Vec<String> = p
                    .hooks
                    .iter()
                    .map(|h| match (h.rung, h.skipped.first()) {
                        (Some(_), _) => format!("{}: ok", h.group),
                        (None, Some((_, why))) => format!("{}: {why}", h.group),
                        (None, None) => format!("{}: n/a", h.group),
                    })
                    .collect();
                println!("hooks {rung}: {}", parts.join("; "));
            }
        }
    }
    let mut p = Probes::load(&ProbeConfig::default())?;
    if let Err(e) = p.attach(None) {
        println!("auto: FAILED: {e}");
        ok = false;
    }
    for h in &p.hooks {
        println!("auto: {h}");
    }
    Ok(if ok { 0 } else { 1 })
}
