//! Uprobe policy: which uprobes a process gets (thread calls; lock calls in
//! the deep tier), on which files, and when (before the first instruction
//! in `run`, at exec, when a library appears).

use std::path::PathBuf;

use super::{Session, Sink};
use crate::{
    cli::ObserveOpts,
    event::Event,
    probe::Probes,
    source::{live::LiveSource, procfs},
    sys,
};

/// How long to keep looking for the libc of a process that just exec'd.
pub(super) const UPROBE_RETRY_NS: u64 = 5_000_000_000;

/// Which uprobes to put on a process.
#[derive(Clone, Copy)]
pub(crate) struct UprobeSet {
    pub(crate) thread: bool,
    pub(crate) locks: bool,
    pub(crate) bare: bool,
}

impl UprobeSet {
    pub(crate) fn of(opts: &ObserveOpts) -> UprobeSet {
        UprobeSet {
            thread: opts.thread_uprobes && !opts.no_thread_uprobes,
            locks: opts.uprobes || opts.uprobes_bare,
            bare: opts.uprobes_bare,
        }
    }

    pub(crate) fn any(self) -> bool {
        self.thread || self.locks
    }
}

fn report_uprobes(
    pid: u32,
    lib: &std::path::Path,
    what: &str,
    used: &crate::probe::UprobeUse,
    essential: &[&str],
) {
    tracing::info!(
        "pid {pid}: {what} uprobes on {}: {}",
        lib.display(),
        used.attached.join(", ")
    );
    let missing: Vec<&(&str, String)> = used
        .missing
        .iter()
        .filter(|(s, _)| essential.contains(s))
        .collect();
    if let Some((_, why)) = missing.first() {
        let names: Vec<&str> = missing.iter().map(|(s, _)| *s).collect();
        tracing::warn!(
            "pid {pid}: cannot probe {} in {}: {why}: {what} tracking is incomplete",
            names.join(", "),
            lib.display()
        );
    }
}

/// Puts the uprobes on the libraries that `libs_of` maps (libc; libpython
/// for the deep tier), for process `pid`. Returns whether libc was found.
pub(crate) fn attach_uprobes(probes: &mut Probes, pid: u32, libs_of: u32, set: UprobeSet) -> bool {
    let libs = procfs::thread_libs(libs_of);
    let py = if set.locks {
        procfs::python_libs(libs_of)
    } else {
        Vec::new()
    };
    attach_uprobes_to(probes, pid, &libs, &py, set);
    !libs.is_empty()
}

/// The files a command will map that want uprobes, before it runs: the
/// libraries with libc's thread and lock functions (the executable itself
/// when static), and Python interpreters or libpython.
pub(super) fn planned_uprobe_targets(prog: &std::path::Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let plan = crate::probe::deps::planned(prog);
    let name = |f: &PathBuf| {
        f.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut libs: Vec<PathBuf> = plan
        .libs
        .iter()
        .filter(|l| procfs::is_thread_lib(&name(l)))
        .cloned()
        .collect();
    if !plan.dynamic {
        libs.extend(plan.exe.clone());
    }
    let py = plan
        .files()
        .filter(|f| procfs::is_python(&name(f)))
        .cloned()
        .collect();
    (libs, py)
}

/// Puts the uprobes of `set` on `libs` (libc) and `py` (Python) for `pid`.
pub(super) fn attach_uprobes_to(
    probes: &mut Probes,
    pid: u32,
    libs: &[PathBuf],
    py: &[PathBuf],
    set: UprobeSet,
) {
    for lib in libs {
        if set.thread
            && let Some(used) = probes.attach_thread_uprobes(pid, lib)
        {
            report_uprobes(
                pid,
                lib,
                "thread",
                &used,
                &["pthread_create", "pthread_join"],
            );
        }
        if set.locks
            && let Some(used) = probes.attach_lock_uprobes(pid, lib, false, set.bare)
        {
            report_uprobes(
                pid,
                lib,
                "lock",
                &used,
                &["pthread_mutex_lock", "pthread_mutex_unlock"],
            );
        }
    }
    if set.locks {
        // The interpreter executable has the lock functions when it is
        // static; a shared build has them in libpython: one is enough.
        let mut tried = Vec::new();
        let mut found = false;
        for lib in py {
            if let Some(used) = probes.attach_lock_uprobes(pid, lib, true, set.bare) {
                found |= !used.attached.is_empty();
                if !used.attached.is_empty() {
                    tracing::info!("pid {pid}: Python lock uprobes on {}", lib.display());
                }
                tried.push((lib, used));
            }
        }
        if !found && let Some((lib, used)) = tried.first() {
            report_uprobes(
                pid,
                lib,
                "Python lock",
                used,
                &["PyThread_acquire_lock_timed"],
            );
        }
    }
}

impl<S: Sink> Session<S> {
    /// Attaches the thread uprobes to processes whose libc just appeared.
    pub(crate) fn pending_thread_uprobes(&mut self, src: &mut LiveSource, now: u64) {
        let pending: Vec<(u32, u64)> = self.pending_uprobes.iter().map(|(a, b)| (*a, *b)).collect();
        for (tgid, give_up) in pending {
            if attach_uprobes(&mut src.probes, tgid, tgid, UprobeSet::of(&self.opts))
                || now > give_up
                || !procfs::exists(tgid)
            {
                self.pending_uprobes.remove(&tgid);
            }
        }
    }

    /// Puts the uprobes on a process found already running (the daemon's
    /// exec notes and /proc scans). Found right after its exec, the loader
    /// may not have mapped libc yet: then they go on the files the
    /// executable will map (its ELF dependencies; a uprobe is set on a
    /// file, so it is in before the first lock call). Either way the mapped
    /// libraries are looked at again at the next scans
    /// (`pending_thread_uprobes`): one found mid-exec shows only its
    /// executable for a moment.
    pub(crate) fn uprobes_at_watch(&mut self, probes: &mut Probes, pid: u32, now: u64) {
        let set = UprobeSet::of(&self.opts);
        if !set.any() {
            return;
        }
        if !attach_uprobes(probes, pid, pid, set)
            && let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe"))
        {
            let (libs, py) = planned_uprobe_targets(&exe);
            attach_uprobes_to(probes, pid, &libs, &py, set);
        }
        self.pending_uprobes.insert(pid, now + UPROBE_RETRY_NS);
    }

    /// Deep tier: puts the lock uprobes on libraries mapped since the last
    /// look (dlopen of libpython, ...); already probed ones are skipped.
    pub(super) fn recheck_libs(&mut self, src: &mut LiveSource) {
        let set = UprobeSet::of(&self.opts);
        if !set.locks {
            return;
        }
        let live: Vec<u32> = self
            .engine
            .model
            .processes
            .values()
            .filter(|p| p.observed_to_ns.is_none())
            .map(|p| p.tgid)
            .collect();
        for tgid in live {
            attach_uprobes(&mut src.probes, tgid, tgid, set);
        }
    }

    /// Continues the processes the kernel stopped at exec, once the uprobes
    /// are on the executable and the libraries it will map (its ELF
    /// dependencies: the loader has not mapped them yet).
    pub(super) fn resume_execs(&mut self, probes: &mut Probes) {
        let set = UprobeSet::of(&self.opts);
        for tgid in std::mem::take(&mut self.exec_stopped) {
            if let Ok(exe) = std::fs::read_link(format!("/proc/{tgid}/exe")) {
                let (libs, py) = planned_uprobe_targets(&exe);
                attach_uprobes_to(probes, tgid, &libs, &py, set);
            }
            sys::kill(tgid, libc::SIGCONT);
        }
    }

    /// Notes the processes that want uprobes once their libraries are
    /// mapped: an exec (held by the kernel in `run`'s deep tier), a fork.
    pub(super) fn note_uprobe_targets(&mut self, ev: &Event) {
        if !UprobeSet::of(&self.opts).any() {
            return;
        }
        match ev {
            Event::Exec { ts_ns, tgid, .. } => {
                if self.stop_on_exec && !self.exec_stopped.contains(tgid) {
                    self.exec_stopped.push(*tgid);
                }
                self.pending_uprobes.insert(*tgid, ts_ns + UPROBE_RETRY_NS);
                self.not_python.remove(tgid);
            }
            Event::ThreadNew {
                ts_ns,
                tgid,
                child_tgid,
                ..
            } if tgid != child_tgid && self.opts.follow_forks => {
                self.pending_uprobes
                    .insert(*child_tgid, ts_ns + UPROBE_RETRY_NS);
            }
            _ => {}
        }
    }
}
