//! observer: explains why a multithreaded program hangs or crawls.

mod cli;
mod daemon;
mod exit;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod man;
mod probe;
mod python;
mod recording;
mod session;
mod source;
mod symbol;
mod sys;
#[cfg(test)]
mod testenv;

use std::process::ExitCode;

// The analysis core, at the paths the binary has always used.
use observer_core::{detect, engine, event, graph, model, replay, report};

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`observer dump ... | head`), like other tools.
    // SAFETY: restoring a default signal disposition at startup.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let level = match cli.verbose {
        // The daemon logs what it watches and reports.
        0 if matches!(cli.cmd, Command::Daemon { .. }) => "info",
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
    quiet_py_spy_panics();
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line: the whole context chain, joined.
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("observer: error: {msg}");
            ExitCode::from(exit::of_error(&e))
        }
    }
}

/// A panic inside py-spy (a torn read of a running interpreter) is caught
/// where py-spy is called and costs that read only: log it at debug level
/// instead of printing a backtrace. Every other panic prints as usual.
fn quiet_py_spy_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info
            .location()
            .is_some_and(|l| l.file().contains("/py-spy-"))
        {
            tracing::debug!("py-spy: {info}");
            return;
        }
        default(info);
    }));
}

fn dispatch(cli: Cli) -> Result<u8> {
    match cli.cmd {
        Command::Run { opts, cmd } => session::run(opts, cmd, cli.verbose),
        Command::Attach {
            pid,
            duration,
            opts,
        } => session::attach(opts, pid, duration, cli.verbose),
        Command::Record {
            output,
            pid,
            duration,
            mut opts,
            cmd,
        } => {
            opts.record = Some(output);
            match pid {
                Some(pid) => session::attach(opts, vec![pid], duration, cli.verbose),
                None => session::run(opts, cmd, cli.verbose),
            }
        }
        Command::Replay { args } => recording::replay(&args),
        Command::Dump {
            pid,
            format,
            native,
        } => session::dump(pid, format == "json", native),
        Command::Doctor => doctor(),
        Command::Daemon {
            check_config: Some(path),
            ..
        } => Ok(daemon::check_config(&path)),
        Command::Daemon { config, .. } => {
            daemon::run(&config.context("--config FILE is required")?, cli.verbose)
        }
        Command::Reports { cmd } => match cmd {
            cli::ReportsCmd::List { dir } => daemon::sink::list_command(&dir),
            cli::ReportsCmd::Show { id, dir, json } => daemon::sink::show_command(&dir, &id, json),
        },
        Command::Completions { shell } => {
            completions(shell, &mut std::io::stdout().lock())?;
            Ok(0)
        }
    }
}

/// `observer completions SHELL`: the script, generated from the command line's definition.
fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) -> Result<()> {
    use clap::CommandFactory;
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "observer", &mut buf);
    out.write_all(&buf)?;
    Ok(())
}

fn doctor() -> Result<u8> {
    use probe::{ProbeConfig, Probes, Rung, Waits};
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
    session::require_bpf()?;
    probe::check_kernel()?;
    let mut ok = true;
    for rung in Rung::ALL {
        let mut p = Probes::load(&ProbeConfig::default())?;
        match p.attach(Some(rung), Waits::Syscalls) {
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
    if let Err(e) = p.attach(None, Waits::Sched) {
        println!("auto: FAILED: {e}");
        ok = false;
    }
    for h in &p.hooks {
        println!("auto: {h}");
    }
    // Where `auto` (run/attach) and the daemon learn futex and epoll waits.
    println!(
        "waits: {}",
        match p.wait_hooks() {
            Some(Waits::Sched) => "sched_switch; the syscall hooks once run/attach watch a \
                                   Python process, or the daemon a Python event loop"
                .to_string(),
            _ => format!(
                "syscalls at {} (sched_switch refused)",
                p.rung_of("futex")
                    .map_or("-".to_string(), |r| r.to_string())
            ),
        }
    );
    p.prepare_uprobe_multi(true);
    println!("uprobes: {}", p.uprobe_mode());
    Ok(if ok { 0 } else { 1 })
}
