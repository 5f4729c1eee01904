//! Uprobes: the thread, lock and CPython functions the deep tier hooks,
//! where they are attached, and their release.

use super::*;

/// Lifecycle uprobes: rare libc calls, so on by default. (program, symbol)
pub(super) const THREAD_UPROBES: &[(&str, &str)] = &[
    ("up_pthread_create", "pthread_create"),
    ("up_pthread_join", "pthread_join"),
    ("up_pthread_detach", "pthread_detach"),
    ("up_pthread_exit", "pthread_exit"),
    ("up_pthread_tryjoin", "pthread_tryjoin_np"),
    ("urp_pthread_tryjoin", "pthread_tryjoin_np"),
    ("up_pthread_tryjoin", "pthread_timedjoin_np"),
    ("urp_pthread_tryjoin", "pthread_timedjoin_np"),
];

/// Do-nothing entry and return programs (the benchmarks' baseline).
pub(super) const BARE: [&str; 2] = ["up_bare", "urp_bare"];

/// Deep tier (--uprobes): libc lock functions. (entry program, return
/// program, symbol)
pub(super) const LOCK_UPROBES: &[(&str, Option<&str>, &str)] = &[
    // Blocking calls return 0 or never: taken at entry, no return probe.
    ("up_mutex_lock_now", None, "pthread_mutex_lock"),
    (
        "up_mutex_lock",
        Some("urp_lock_ret0"),
        "pthread_mutex_timedlock",
    ),
    (
        "up_mutex_lock",
        Some("urp_lock_ret0"),
        "pthread_mutex_clocklock",
    ),
    (
        "up_mutex_trylock",
        Some("urp_lock_ret0"),
        "pthread_mutex_trylock",
    ),
    ("up_unlock", None, "pthread_mutex_unlock"),
    ("up_destroy", None, "pthread_mutex_destroy"),
    ("up_rw_rdlock_now", None, "pthread_rwlock_rdlock"),
    (
        "up_rw_rdlock",
        Some("urp_lock_ret0"),
        "pthread_rwlock_timedrdlock",
    ),
    (
        "up_rw_rdlock",
        Some("urp_lock_ret0"),
        "pthread_rwlock_clockrdlock",
    ),
    (
        "up_rw_tryrdlock",
        Some("urp_lock_ret0"),
        "pthread_rwlock_tryrdlock",
    ),
    ("up_rw_wrlock_now", None, "pthread_rwlock_wrlock"),
    (
        "up_rw_wrlock",
        Some("urp_lock_ret0"),
        "pthread_rwlock_timedwrlock",
    ),
    (
        "up_rw_wrlock",
        Some("urp_lock_ret0"),
        "pthread_rwlock_clockwrlock",
    ),
    (
        "up_rw_trywrlock",
        Some("urp_lock_ret0"),
        "pthread_rwlock_trywrlock",
    ),
    ("up_unlock", None, "pthread_rwlock_unlock"),
    ("up_destroy", None, "pthread_rwlock_destroy"),
    ("up_sem_wait", Some("urp_lock_ret0"), "sem_wait"),
    ("up_sem_wait", Some("urp_lock_ret0"), "sem_timedwait"),
    ("up_sem_wait", Some("urp_lock_ret0"), "sem_clockwait"),
    ("up_sem_trywait", Some("urp_lock_ret0"), "sem_trywait"),
    ("up_unlock", None, "sem_post"),
    ("up_cond_wait", Some("urp_cond_wait"), "pthread_cond_wait"),
    (
        "up_cond_wait",
        Some("urp_cond_wait"),
        "pthread_cond_timedwait",
    ),
    (
        "up_cond_wait",
        Some("urp_cond_wait"),
        "pthread_cond_clockwait",
    ),
];

/// Deep tier: CPython's lock functions (3.11, 3.12: PyThread locks are sem_t).
pub(super) const PY_UPROBES: &[(&str, Option<&str>, &str)] = &[
    (
        "up_py_acquire",
        Some("urp_py_acquire"),
        "PyThread_acquire_lock_timed",
    ),
    ("up_py_release", None, "PyThread_release_lock"),
];

/// What a uprobe program reads at its site: argument registers, and the
/// return address at `[rsp]` (its call site). Return programs read only the
/// return value, but need `[rsp]` intact at the site to hijack it.
pub(super) fn reads(prog: &str) -> site::Reads {
    let (args, stack) = match prog {
        "up_pthread_create" | "up_cond_wait" | "up_py_acquire" => (2, true),
        "up_unlock" | "up_py_release" | "up_destroy" | "up_pthread_tryjoin" => (1, false),
        p if p.starts_with("urp_") => (0, true),
        _ => (1, true),
    };
    site::Reads { args, stack }
}

/// The uprobe_multi attach cookie that makes `upm_entry`/`upm_return` do
/// what program `prog` does (observer.h, OBS_UP_*).
pub(super) fn cookie(prog: &str) -> u64 {
    use observer_ebpf::bindings::*;
    let acq = |kind: obs_lock_kind, flags: u32| {
        u64::from(OBS_UP_ACQ) << 16 | (kind as u64) << 8 | u64::from(flags)
    };
    let class = |c: u32| u64::from(c) << 16;
    let now = |kind: obs_lock_kind| u64::from(OBS_UP_LOCK) << 16 | (kind as u64) << 8;
    match prog {
        "up_mutex_lock_now" => now(obs_lock_kind::OBS_LK_MUTEX),
        "up_rw_rdlock_now" => now(obs_lock_kind::OBS_LK_RWLOCK_READ),
        "up_rw_wrlock_now" => now(obs_lock_kind::OBS_LK_RWLOCK_WRITE),
        "up_mutex_lock" => acq(obs_lock_kind::OBS_LK_MUTEX, 0),
        "up_mutex_trylock" => acq(obs_lock_kind::OBS_LK_MUTEX, OBS_ACQ_TRY),
        "up_rw_rdlock" => acq(obs_lock_kind::OBS_LK_RWLOCK_READ, 0),
        "up_rw_tryrdlock" => acq(obs_lock_kind::OBS_LK_RWLOCK_READ, OBS_ACQ_TRY),
        "up_rw_wrlock" => acq(obs_lock_kind::OBS_LK_RWLOCK_WRITE, 0),
        "up_rw_trywrlock" => acq(obs_lock_kind::OBS_LK_RWLOCK_WRITE, OBS_ACQ_TRY),
        "up_sem_wait" => acq(obs_lock_kind::OBS_LK_SEM, 0),
        "up_sem_trywait" => acq(obs_lock_kind::OBS_LK_SEM, OBS_ACQ_TRY),
        "up_unlock" | "up_py_release" => class(OBS_UP_REL),
        "up_destroy" => class(OBS_UP_DESTROY),
        "up_cond_wait" => class(OBS_UP_COND_WAIT),
        "up_py_acquire" => class(OBS_UP_PY_ACQ),
        "up_pthread_create" => class(OBS_UP_PT_CREATE),
        "up_pthread_join" => class(OBS_UP_PT_JOIN),
        "up_pthread_detach" => class(OBS_UP_PT_DETACH),
        "up_pthread_exit" => class(OBS_UP_PT_EXIT),
        "up_pthread_tryjoin" => class(OBS_UP_PT_TRYJOIN),
        "urp_lock_ret0" => class(OBS_URP_RET0),
        "urp_cond_wait" => class(OBS_URP_COND),
        "urp_py_acquire" => class(OBS_URP_PY),
        "urp_pthread_tryjoin" => class(OBS_URP_TRYJOIN),
        _ => class(OBS_UP_BARE),
    }
}

/// What attaching uprobes to one library of one process gave.
#[derive(Clone, Debug, Default)]
pub struct UprobeUse {
    pub attached: Vec<&'static str>,
    /// Symbols the library does not have (stripped, static, other libc).
    pub missing: Vec<(&'static str, String)>,
}

impl Probes {
    /// Attaches the thread lifecycle uprobes to `lib` for process `pid`.
    /// Returns None if that library already has them for that process.
    pub fn attach_thread_uprobes(&mut self, pid: u32, lib: &Path) -> Option<UprobeUse> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(lib).ok()?;
        if !self.uprobed.insert((pid, md.dev(), md.ino())) {
            return None;
        }
        let want: Vec<(&str, site::Reads)> = THREAD_UPROBES
            .iter()
            .map(|&(prog, sym)| (sym, reads(prog)))
            .collect();
        let sites = self.sites_in(lib, &want);
        let rows: Vec<(&'static str, Vec<&'static str>, Result<site::Site, String>)> =
            THREAD_UPROBES
                .iter()
                .zip(sites)
                .map(|(&(prog, sym), site)| (sym, vec![prog], site))
                .collect();
        let mut used = self.attach_rows(pid, lib, rows, true)?;
        used.attached.dedup();
        used.missing.dedup_by(|a, b| a.0 == b.0);
        Some(used)
    }

    /// Attaches the deep-tier lock uprobes (libc or libpython set) to `lib`
    /// for `pid`; `bare` attaches do-nothing programs instead (benchmarks).
    pub fn attach_lock_uprobes(
        &mut self,
        pid: u32,
        lib: &Path,
        python: bool,
        bare: bool,
    ) -> Option<UprobeUse> {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::metadata(lib).ok()?;
        // key space apart from the thread uprobes: python/libc sets differ
        let tag = if python { 1u64 << 62 } else { 1u64 << 63 };
        if !self.uprobed.insert((pid, md.dev() | tag, md.ino())) {
            return None;
        }
        let table = if python { PY_UPROBES } else { LOCK_UPROBES };
        // Bare programs go to the sites the real ones would use.
        let want: Vec<(&str, site::Reads)> = table
            .iter()
            .map(|&(entry, ret, sym)| {
                let r = reads(entry);
                (
                    sym,
                    site::Reads {
                        stack: r.stack || ret.is_some(),
                        ..r
                    },
                )
            })
            .collect();
        let sites = self.sites_in(lib, &want);
        let rows = table
            .iter()
            .zip(sites)
            .map(|(&(entry, ret, sym), site)| {
                let progs: Vec<&'static str> = if bare {
                    std::iter::once(BARE[0])
                        .chain(ret.map(|_| BARE[1]))
                        .collect()
                } else {
                    std::iter::once(entry).chain(ret).collect()
                };
                (sym, progs, site)
            })
            .collect();
        self.attach_rows(pid, lib, rows, false)
    }

    /// Attaches each row's programs at its site: in two uprobe_multi links
    /// (entry, return) where the kernel has them, else one perf-event uprobe
    /// per program.
    #[allow(clippy::type_complexity)]
    pub(super) fn attach_rows(
        &mut self,
        pid: u32,
        lib: &Path,
        rows: Vec<(&'static str, Vec<&'static str>, Result<site::Site, String>)>,
        thread: bool,
    ) -> Option<UprobeUse> {
        let mut used = UprobeUse::default();
        let mut ok: Vec<(&'static str, Vec<&'static str>, u64)> = Vec::new();
        for (sym, progs, site) in rows {
            match site {
                Ok(at) => ok.push((sym, progs, at.offset)),
                Err(e) => used.missing.push((sym, e)),
            }
        }
        if let Some(m) = self.multi.as_ref().filter(|m| thread || m.has_locks()) {
            let mut dirs: [(Vec<u64>, Vec<u64>); 2] = Default::default();
            for (_, progs, off) in &ok {
                for p in progs {
                    let d = &mut dirs[usize::from(p.starts_with("urp_"))];
                    d.0.push(*off);
                    d.1.push(cookie(p));
                }
            }
            let mut links = Vec::new();
            let mut err = None;
            for (ret, (offs, cookies)) in dirs.iter().enumerate() {
                if offs.is_empty() {
                    continue;
                }
                match m.attach(lib, offs, cookies, (thread, ret == 1), pid) {
                    Ok(l) => links.push((pid, offs.len(), l)),
                    Err(e) => err = Some(e),
                }
            }
            match err {
                None => {
                    self.multi_links.extend(links);
                    self.multi_probes += dirs.iter().map(|d| d.0.len()).sum::<usize>();
                    used.attached.extend(ok.iter().map(|r| r.0));
                    return Some(used);
                }
                Some(e) => {
                    tracing::debug!("uprobe_multi on {}: {e}; one uprobe each", lib.display());
                    multi::release(links.into_iter().map(|l| l.2).collect());
                }
            }
        }
        let scope = UProbeScope::OneProcess(std::num::NonZeroU32::new(pid)?);
        for (sym, progs, off) in ok {
            let mut r = Ok(());
            for prog in progs {
                r = r.and_then(|_| self.attach_uprobe(prog, off, lib, scope));
            }
            match r {
                Ok(()) => used.attached.push(sym),
                Err(e) => used.missing.push((sym, short(&e))),
            }
        }
        Some(used)
    }

    /// Probe sites of `want` (symbol, what its programs read) in `lib`.
    pub(super) fn sites_in(
        &mut self,
        lib: &Path,
        want: &[(&str, site::Reads)],
    ) -> Vec<Result<site::Site, String>> {
        let sites = self.sites.sites(lib, want);
        for (&(sym, _), s) in want.iter().zip(&sites) {
            match s {
                Ok(s) if s.emulated => tracing::debug!(
                    "{sym} in {}: probe at +{:#x} ({}, emulated)",
                    lib.display(),
                    s.offset - s.entry,
                    s.why
                ),
                Ok(s) => tracing::info!(
                    "{sym} in {}: probe at +0, single-stepped: {}",
                    lib.display(),
                    s.why
                ),
                Err(_) => {}
            }
        }
        sites
    }

    pub(super) fn attach_uprobe(
        &mut self,
        prog: &'static str,
        offset: u64,
        lib: &Path,
        scope: UProbeScope,
    ) -> Result<(), ProgramError> {
        let p: &mut UProbe = self
            .bpf
            .program_mut(prog)
            .ok_or(ProgramError::NotLoaded)?
            .try_into()?;
        if !self.loaded.contains(prog) {
            if let Err(e) = p.load() {
                if let ProgramError::LoadError { verifier_log, .. } = &e {
                    tracing::debug!("verifier log of {prog}:\n{verifier_log}");
                }
                return Err(e);
            }
            self.loaded.insert(prog);
        }
        let id = p.attach(UProbeAttachLocation::AbsoluteOffset(offset), lib, scope)?;
        let pid = match scope {
            UProbeScope::OneProcess(p) => p.get(),
            _ => 0,
        };
        self.uprobe_links.push((pid, prog, id));
        Ok(())
    }

    /// Loads the uprobe_multi programs (before the ring buffer is taken).
    /// Without them, each uprobe is a perf event of its own.
    /// `locks`: also the deep tier's lock programs.
    pub fn prepare_uprobe_multi(&mut self, locks: bool) {
        if self.multi.is_some() || self.multi_why.is_some() {
            return;
        }
        if std::env::var_os("OBSERVER_UPROBE_MULTI").is_some_and(|v| v == "0") {
            self.multi_why = Some("off (OBSERVER_UPROBE_MULTI=0)".into());
            return;
        }
        let btf = match &self.reloc_btf {
            Some(m) => m,
            None => match self.btf.get() {
                Ok(b) => b,
                Err(e) => {
                    self.multi_why = Some(e.to_string());
                    return;
                }
            },
        };
        match multi::Multi::load(&self.bpf, btf, observer_ebpf::OBSERVER_OBJ, locks) {
            Ok(m) => self.multi = Some(m),
            Err(e) => {
                tracing::debug!("no uprobe_multi: {e}");
                self.multi_why = Some(e);
            }
        }
    }

    /// How uprobes are attached: "uprobe_multi (one link per library)" or
    /// why each is a perf event.
    pub fn uprobe_mode(&self) -> String {
        match (&self.multi, &self.multi_why) {
            (Some(_), _) => "uprobe_multi (one link per library and direction)".into(),
            (None, Some(why)) => format!("one perf event per uprobe (uprobe_multi: {why})"),
            (None, None) => "not prepared".into(),
        }
    }

    /// Releases every uprobe_multi link at once (each link waits out one
    /// grace period; in parallel they overlap).
    pub fn release_uprobes(&mut self) {
        multi::release(
            std::mem::take(&mut self.multi_links)
                .into_iter()
                .map(|l| l.2)
                .collect(),
        );
        self.multi_probes = 0;
    }

    /// The uprobes of one process that is gone or no longer watched (the
    /// daemon): its links are released on the reaper thread, so the caller
    /// never waits out a grace period, and a later process with the same
    /// pid gets its own. Returns how many probes were released.
    pub fn release_process_uprobes(&mut self, pid: u32) -> usize {
        self.uprobed.retain(|(p, _, _)| *p != pid);
        let mut gone: Vec<Box<dyn Send>> = Vec::new();
        let mut n = 0;
        let (theirs, ours): (Vec<_>, Vec<_>) = std::mem::take(&mut self.multi_links)
            .into_iter()
            .partition(|l| l.0 == pid);
        self.multi_links = ours;
        for (_, probes, fd) in theirs {
            n += probes;
            gone.push(Box::new(fd));
        }
        self.multi_probes -= n;
        let (theirs, ours): (Vec<_>, Vec<_>) = std::mem::take(&mut self.uprobe_links)
            .into_iter()
            .partition(|l| l.0 == pid);
        self.uprobe_links = ours;
        for (_, prog, id) in theirs {
            let link = self
                .bpf
                .program_mut(prog)
                .and_then(|p| <&mut UProbe>::try_from(p).ok())
                .and_then(|p| p.take_link(id).ok());
            if let Some(l) = link {
                n += 1;
                gone.push(Box::new(l));
            }
        }
        self.reaper.release(gone);
        n
    }

    /// Whether the kernel side stops watched processes at exec.
    pub fn stops_on_exec(&self) -> bool {
        self.stop_on_exec
    }

    /// How many uprobes are attached (a program at a site), either way.
    pub fn uprobe_count(&self) -> usize {
        self.uprobe_links.len() + self.multi_probes
    }

    /// How many uprobes fire in process `pid` (its own links, and any
    /// attached for every process).
    pub fn process_uprobe_count(&self, pid: u32) -> usize {
        let multi: usize = self
            .multi_links
            .iter()
            .filter(|l| l.0 == pid || l.0 == 0)
            .map(|l| l.1)
            .sum();
        multi
            + self
                .uprobe_links
                .iter()
                .filter(|l| l.0 == pid || l.0 == 0)
                .count()
    }

    /// How many uprobes are attached one perf event each (each costs a
    /// grace period to release).
    pub fn perf_uprobe_count(&self) -> usize {
        self.uprobe_links.len()
    }

    /// Real return addresses of the lock calls a thread is inside (deep
    /// tier), innermost first: its stack shows uretprobe trampolines there.
    pub fn pending_sites(&self, tid: u32) -> Vec<u64> {
        let Some(m) = self.bpf.map("PENDING") else {
            return Vec::new();
        };
        let Ok(m) = BpfHashMap::<_, u32, Pod<obs_acquire>>::try_from(m) else {
            return Vec::new();
        };
        let Ok(Pod(a)) = m.get(&tid, 0) else {
            return Vec::new();
        };
        let inner = (a.depth as usize).min(a.inner_site.len());
        a.inner_site[..inner]
            .iter()
            .rev()
            .copied()
            .chain(std::iter::once(a.site))
            .collect()
    }

    /// The kind of lock call a thread is blocked in (deep tier).
    pub fn pending_kind(&self, tid: u32) -> Option<crate::event::AcqKind> {
        let m = BpfHashMap::<_, u32, Pod<obs_acquire>>::try_from(self.bpf.map("PENDING")?).ok()?;
        m.get(&tid, 0).ok().map(|Pod(a)| decode::lock_kind(a.kind))
    }
}
