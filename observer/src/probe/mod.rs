//! Loading the BPF object and attaching its programs with a fallback
//! ladder chosen at run time. Root-only and thin: everything it reads goes
//! through `decode` and becomes typed events elsewhere.

pub mod btfcache;
pub mod decode;
pub mod deps;
mod hooks;
mod maps;
pub mod multi;
pub mod site;
pub mod spawn;
mod uprobes;

use hooks::*;
pub use uprobes::UprobeUse;

pub use observer_core::vocab::hooks::{HookUse, Rung, WaitMove, Waits};
use std::{collections::HashSet, path::Path};

use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, FEntry, FExit, Program, ProgramError, RawTracePoint, TracePoint, UProbe,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
};
use observer_ebpf::bindings::{
    OBS_HL_WAITING, obs_acquire, obs_agg, obs_agg_key, obs_edge, obs_edge_key, obs_epoll, obs_held,
    obs_holder, obs_holder_key, obs_lock_key, obs_lock_stats, obs_owner, obs_stack_sig, obs_stat,
    obs_wait,
};

use crate::event::Drops;
use decode::Pod;

#[derive(Clone, Debug)]
pub struct ProbeConfig {
    pub long_wait_ns: u64,
    pub follow_forks: bool,
    pub ringbuf_bytes: u32,
    /// Deep tier (--uprobes): futex waits mark pending lock calls contended.
    pub deep: bool,
    /// Stop watched processes at exec (SIGSTOP, urgent record) so uprobes
    /// can be put in place before their first instruction; the caller
    /// continues them (SIGCONT).
    pub stop_on_exec: bool,
    /// Event loops: a gap this long between epoll_wait calls is recorded.
    pub loop_blocked_ns: u64,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            long_wait_ns: 5_000_000_000,
            follow_forks: false,
            ringbuf_bytes: 4 << 20,
            deep: false,
            stop_on_exec: false,
            loop_blocked_ns: 100_000_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "kernel has no BTF (/sys/kernel/btf/vmlinux missing): observer needs Linux >= 5.8 built with CONFIG_DEBUG_INFO_BTF"
    )]
    NoBtf,
    #[error("kernel {0} is too old: observer needs Linux >= 5.8 (BPF ring buffer)")]
    OldKernel(String),
    #[error("cannot load the BPF programs: {0}")]
    Load(String),
    #[error("cannot attach {group}: {why}")]
    Attach { group: &'static str, why: String },
    #[error("BPF map {0}: {1}")]
    Map(&'static str, String),
}

/// Maps only the deep tier (--uprobes) writes.
const DEEP_MAPS: [&str; 7] = [
    "PENDING", "HELD", "ORDER", "LSTATS", "OWNERS", "HOLDERS", "GEN",
];

/// The full kernel BTF, parsed on another thread until first needed.
enum BtfSlot {
    Pending(std::thread::JoinHandle<Result<Btf, String>>),
    Ready(Btf),
    Failed(String),
}

impl BtfSlot {
    fn get(&mut self) -> Result<&Btf, ProbeError> {
        if matches!(self, BtfSlot::Pending(_)) {
            let BtfSlot::Pending(h) = std::mem::replace(self, BtfSlot::Failed(String::new()))
            else {
                unreachable!()
            };
            *self = match h.join() {
                Ok(Ok(b)) => BtfSlot::Ready(b),
                Ok(Err(e)) => BtfSlot::Failed(e),
                Err(_) => BtfSlot::Failed("the BTF parser panicked".into()),
            };
        }
        match self {
            BtfSlot::Ready(b) => Ok(b),
            BtfSlot::Failed(e) => Err(ProbeError::Load(format!("kernel BTF: {e}"))),
            BtfSlot::Pending(_) => unreachable!(),
        }
    }

    fn ready(&self) -> Option<&Btf> {
        match self {
            BtfSlot::Ready(b) => Some(b),
            _ => None,
        }
    }
}

pub struct Probes {
    bpf: Ebpf,
    /// The full kernel BTF (attach IDs of tp_btf and fentry programs).
    btf: BtfSlot,
    /// The minimized BTF the object was relocated against, when cached.
    reloc_btf: Option<Btf>,
    loaded: HashSet<&'static str>,
    /// (pid, library (dev, inode)) already carrying the thread uprobes.
    uprobed: HashSet<(u32, u64, u64)>,
    /// Every perf-event uprobe link, with the pid it fires in (0: any).
    uprobe_links: Vec<(u32, &'static str, aya::programs::uprobe::UProbeLinkId)>,
    /// Probe sites per library content (see `site`).
    sites: site::SiteCache,
    /// uprobe_multi programs, when the kernel has them; else why not.
    multi: Option<multi::Multi>,
    multi_why: Option<String>,
    /// uprobe_multi links: (pid they fire in, probes in the link, link).
    multi_links: Vec<(u32, usize, std::os::fd::OwnedFd)>,
    /// Releases the links of processes that are gone, off the caller's
    /// thread (see `release_process_uprobes`).
    reaper: multi::Reaper,
    /// Probes attached through `multi_links` (programs × sites).
    multi_probes: usize,
    pub hooks: Vec<HookUse>,
    /// Where waits were learnt, move by move (the last `MAX_WAIT_MOVES`).
    wait_moves: Vec<WaitMove>,
    pub mounted_tracefs: bool,
    stop_on_exec: bool,
    /// The syscall hooks (the "futex" group: futex and epoll waits,
    /// exit_group) as attached, and their links while attached: the daemon
    /// takes them off while it watches no process (`set_syscall_hooks`).
    sys_hooks: Vec<Hook>,
    sys_links: Vec<Link>,
    /// The scheduler hook that learns waits instead (`Waits::Sched`),
    /// while attached.
    sched_link: Option<Link>,
}

/// Moves of the wait hooks a report lists (a daemon's come and go).
const MAX_WAIT_MOVES: usize = 32;

/// A link of one of our programs, to detach it.
enum Link {
    Fentry(&'static str, aya::programs::fentry::FEntryLinkId),
    Fexit(&'static str, aya::programs::fexit::FExitLinkId),
    TpBtf(&'static str, aya::programs::tp_btf::BtfTracePointLinkId),
    RawTp(
        &'static str,
        aya::programs::raw_trace_point::RawTracePointLinkId,
    ),
    Tp(&'static str, aya::programs::trace_point::TracePointLinkId),
}

/// Checks the kernel features observer needs, before touching BPF.
pub fn check_kernel() -> Result<(), ProbeError> {
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(ProbeError::NoBtf);
    }
    let rel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rel = rel.trim().to_string();
    let mut it = rel
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (maj, min) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    if (maj, min) < (5, 8) {
        return Err(ProbeError::OldKernel(rel));
    }
    Ok(())
}

fn tracefs_mounted() -> bool {
    Path::new("/sys/kernel/tracing/events").exists()
        || Path::new("/sys/kernel/debug/tracing/events").exists()
}

/// Mounts tracefs where the tracepoint rung needs it. Returns whether we did.
fn ensure_tracefs() -> Result<bool, String> {
    if tracefs_mounted() {
        return Ok(false);
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .status()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if status.success() && tracefs_mounted() {
        Ok(true)
    } else {
        Err(
            "tracefs is not mounted and `mount -t tracefs tracefs /sys/kernel/tracing` failed"
                .into(),
        )
    }
}

fn short(e: &dyn std::error::Error) -> String {
    // aya appends an empty verifier log and repeats the OS error as the source.
    let mut s = e
        .to_string()
        .replace(". Verifier output: ", "")
        .trim_end()
        .to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let m = x.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = x.source();
    }
    s
}

impl Probes {
    /// Creates maps and relocates programs (nothing is attached yet).
    pub fn load(cfg: &ProbeConfig) -> Result<Probes, ProbeError> {
        check_kernel()?;
        // The full kernel BTF (tp_btf/fentry attach IDs) is parsed while
        // the object is relocated against the minimized one, when cached.
        let full = std::thread::spawn(|| {
            let t0 = std::time::Instant::now();
            let b = Btf::from_sys_fs().map_err(|e| short(&e));
            tracing::debug!("startup: kernel BTF parsed in {:?}", t0.elapsed());
            b
        });
        // aya 0.14's `EbpfLoader::new` parses the full BTF too (its
        // default target): on a third thread, so the parses overlap.
        let loader = std::thread::spawn(EbpfLoader::new);
        let min = btfcache::min_core_btf(observer_ebpf::OBSERVER_OBJ);
        let mut full = BtfSlot::Pending(full);
        let loader = loader
            .join()
            .map_err(|_| ProbeError::Load("the BTF parser panicked".into()))?;
        let bpf = match min.as_ref() {
            Some(m) => match Self::load_obj(cfg, loader, m) {
                Ok(bpf) => bpf,
                Err(e) => {
                    tracing::debug!("minimized BTF: {e}; relocating against the full BTF");
                    Self::load_obj(cfg, EbpfLoader::new(), full.get()?)?
                }
            },
            None => Self::load_obj(cfg, loader, full.get()?)?,
        };
        Ok(Probes {
            bpf,
            btf: full,
            reloc_btf: min,
            loaded: HashSet::new(),
            uprobed: HashSet::new(),
            uprobe_links: Vec::new(),
            sites: site::SiteCache::default(),
            multi: None,
            multi_why: None,
            multi_links: Vec::new(),
            reaper: multi::Reaper::default(),
            multi_probes: 0,
            hooks: Vec::new(),
            wait_moves: Vec::new(),
            mounted_tracefs: false,
            stop_on_exec: cfg.stop_on_exec,
            sys_hooks: Vec::new(),
            sys_links: Vec::new(),
            sched_link: None,
        })
    }

    /// Creates maps and relocates the object's programs against `btf`.
    fn load_obj(
        cfg: &ProbeConfig,
        loader: EbpfLoader<'static>,
        btf: &Btf,
    ) -> Result<Ebpf, ProbeError> {
        let t0 = std::time::Instant::now();
        let mut loader: EbpfLoader<'_> = loader;
        let follow = u8::from(cfg.follow_forks);
        let deep = u8::from(cfg.deep);
        let stop = u8::from(cfg.stop_on_exec);
        let ring = cfg.ringbuf_bytes.next_power_of_two().max(4096);
        loader
            .btf(Some(btf))
            // ASLEEP and TABLED (task storage) are used by the programs only.
            .allow_unsupported_maps()
            .override_global("LONG_WAIT_NS", &cfg.long_wait_ns, true)
            .override_global("LOOP_BLOCKED_NS", &cfg.loop_blocked_ns, true)
            .override_global("FOLLOW_FORKS", &follow, true)
            .override_global("DEEP", &deep, true)
            .override_global("STOP_ON_EXEC", &stop, true)
            .map_max_entries("EVENTS", ring);
        if !cfg.deep {
            // Hash maps are preallocated: the deep tier's would cost
            // megabytes and milliseconds at every start that never uses them.
            for m in DEEP_MAPS {
                loader.map_max_entries(m, 1);
            }
        }
        let bpf = loader
            .load(observer_ebpf::OBSERVER_OBJ)
            .map_err(|e| ProbeError::Load(short(&e)))?;
        // A program the tables name but the object lacks would only fail
        // its attach (quietly for an optional hook): say so at load.
        let missing = missing_programs(&named_programs(), bpf.programs().map(|(n, _)| n));
        if !missing.is_empty() {
            return Err(ProbeError::Load(format!(
                "the BPF object has no program {} (renamed in the C?)",
                missing.join(", ")
            )));
        }
        tracing::debug!(
            "startup: object relocated and maps created in {:?}",
            t0.elapsed()
        );
        Ok(bpf)
    }

    /// Attaches every hook group on the first rung the kernel accepts, and
    /// learns futex and epoll waits as `waits` says: `Sched` puts the
    /// scheduler hook on and takes the futex group's syscall hooks off
    /// again (they stay verified, for `set_waits`); a kernel without it
    /// (no tp_btf, or no `bpf_task_pt_regs`) keeps the syscall hooks.
    pub fn attach(&mut self, only: Option<Rung>, waits: Waits) -> Result<(), ProbeError> {
        let t0 = std::time::Instant::now();
        self.btf.get()?;
        let r = self.attach_groups(only);
        if r.is_ok() && waits == Waits::Sched {
            let mut used = HookUse {
                group: "sched_switch",
                rung: None,
                skipped: Vec::new(),
            };
            match self.set_waits(Some(Waits::Sched)) {
                Ok(_) => used.rung = Some(Rung::TpBtf),
                Err(e) => {
                    tracing::info!("waits stay on the syscall hooks: {e}");
                    used.skipped.push((Rung::TpBtf, e.to_string()));
                }
            }
            self.hooks.push(used);
        }
        if r.is_ok() {
            self.note_waits();
        }
        tracing::debug!("startup: hooks verified and attached in {:?}", t0.elapsed());
        r
    }

    /// Whether the syscall hooks see epoll_wait: fentry is put on futex(2)
    /// alone, so there a move to the syscall hooks would lose event loops.
    pub fn syscall_hooks_see_epoll(&self) -> bool {
        self.rung_of("futex") != Some(Rung::Fentry)
    }

    /// The rung a hook group was attached on.
    pub fn rung_of(&self, group: &str) -> Option<Rung> {
        self.hooks.iter().find(|h| h.group == group)?.rung
    }

    /// Where waits are learnt now; None: nowhere (`set_waits(None)`).
    pub fn wait_hooks(&self) -> Option<Waits> {
        if self.sched_link.is_some() {
            Some(Waits::Sched)
        } else if !self.sys_links.is_empty() {
            Some(Waits::Syscalls)
        } else {
            None
        }
    }

    /// Learns waits at the syscall hooks, at the scheduler, or (None)
    /// nowhere: then no process pays anything for them. The new hooks go on
    /// before the old come off, so no wait falls between (one seen by both
    /// is ended by whichever sees its end first). Returns whether anything
    /// changed.
    pub fn set_waits(&mut self, w: Option<Waits>) -> Result<bool, ProbeError> {
        if self.wait_hooks() == w {
            return Ok(false);
        }
        match w {
            Some(Waits::Sched) => {
                if self.sched_link.is_none() {
                    let l = self
                        .attach_one(&SCHED_HOOK)
                        .map_err(|e| ProbeError::Attach {
                            group: "sched_switch",
                            why: short(&e),
                        })?;
                    self.sched_link = Some(l);
                }
                self.set_syscall_hooks(false)?;
            }
            Some(Waits::Syscalls) => {
                self.set_syscall_hooks(true)?;
                self.set_sched_hook_off();
            }
            None => {
                self.set_syscall_hooks(false)?;
                self.set_sched_hook_off();
            }
        }
        self.note_waits();
        Ok(true)
    }

    /// Notes where waits are learnt now, if that moved.
    fn note_waits(&mut self) {
        let at = self.wait_hooks();
        if self.wait_moves.last().map(|m| m.at) == Some(at) {
            return;
        }
        if self.wait_moves.len() == MAX_WAIT_MOVES {
            self.wait_moves.remove(0);
        }
        self.wait_moves.push(WaitMove {
            since_ns: crate::sys::mono_ns(),
            at,
        });
    }

    /// Where waits were learnt, move by move, for the report.
    pub fn wait_moves(&self) -> &[WaitMove] {
        &self.wait_moves
    }

    fn set_sched_hook_off(&mut self) {
        if let Some(l) = self.sched_link.take()
            && let Err(e) = self.detach(l)
        {
            tracing::warn!("detaching the scheduler hook: {}", short(&e));
        }
    }

    fn attach_groups(&mut self, only: Option<Rung>) -> Result<(), ProbeError> {
        for g in groups() {
            let mut used = HookUse {
                group: g.name,
                rung: None,
                skipped: Vec::new(),
            };
            for (rung, hooks) in g.rungs {
                if only.is_some_and(|o| o != rung) {
                    continue;
                }
                match self.attach_rung(rung, &hooks) {
                    Ok(attached) => {
                        used.rung = Some(rung);
                        if g.name == "futex" {
                            // Exactly the hooks that went on: put back
                            // later, all must go on again.
                            (self.sys_hooks, self.sys_links) = attached.into_iter().unzip();
                        }
                        break;
                    }
                    Err(why) => {
                        tracing::debug!(group = g.name, %rung, %why, "rung failed");
                        used.skipped.push((rung, why));
                    }
                }
            }
            let ok = used.rung.is_some();
            let why = used
                .skipped
                .iter()
                .map(|(r, w)| format!("{r}: {w}"))
                .collect::<Vec<_>>()
                .join("; ");
            self.hooks.push(used);
            if !ok {
                return Err(ProbeError::Attach {
                    group: g.name,
                    why: if why.is_empty() {
                        "no rung allowed".into()
                    } else {
                        why
                    },
                });
            }
        }
        Ok(())
    }

    /// Attaches a rung's hooks in order (return side first). An optional
    /// call-side hook whose return side did not go on is left off: the
    /// waits it began would never end.
    fn attach_rung(&mut self, rung: Rung, hooks: &[Hook]) -> Result<Vec<(Hook, Link)>, String> {
        if rung == Rung::Tracepoint && ensure_tracefs()? {
            self.mounted_tracefs = true;
        }
        let mut attached: Vec<(Hook, Link)> = Vec::new();
        let mut unended: Vec<&str> = Vec::new();
        for h in hooks {
            if !h.how.at_return() && h.how.call().is_some_and(|c| unended.contains(&c)) {
                tracing::debug!(
                    prog = h.prog,
                    "optional hook left off: its return side failed"
                );
                continue;
            }
            match self.attach_one(h) {
                Ok(l) => attached.push((*h, l)),
                Err(e) if h.required => {
                    for (_, l) in &attached {
                        self.unload(l.prog());
                    }
                    self.unload(h.prog);
                    return Err(format!("{}: {}", h.prog, short(&e)));
                }
                Err(e) => {
                    unended.extend(h.how.call().filter(|_| h.how.at_return()));
                    tracing::debug!(prog = h.prog, err = %short(&e), "optional hook not attached")
                }
            }
        }
        Ok(attached)
    }

    /// Takes the syscall hooks off (`false`) or puts them back: while they
    /// are off, no syscall of any process pays for them, and no futex or
    /// epoll wait is seen. The daemon turns them off while it watches no
    /// process. Returns whether they changed.
    fn set_syscall_hooks(&mut self, on: bool) -> Result<bool, ProbeError> {
        if on != self.sys_links.is_empty() {
            return Ok(false);
        }
        if on {
            for h in self.sys_hooks.clone() {
                match self.attach_one(&h) {
                    Ok(l) => self.sys_links.push(l),
                    Err(e) => {
                        // All or none.
                        self.set_syscall_hooks(false)?;
                        return Err(ProbeError::Attach {
                            group: "futex",
                            why: format!("{}: {}", h.prog, short(&e)),
                        });
                    }
                }
            }
        } else {
            // The call side first (attached last): no wait begins unended.
            for l in std::mem::take(&mut self.sys_links).into_iter().rev() {
                let prog = l.prog();
                if let Err(e) = self.detach(l) {
                    tracing::warn!("detaching {prog}: {}", short(&e));
                }
            }
        }
        Ok(true)
    }

    fn detach(&mut self, l: Link) -> Result<(), ProgramError> {
        let p = self
            .bpf
            .program_mut(l.prog())
            .ok_or(ProgramError::NotLoaded)?;
        match l {
            Link::Fentry(_, id) => TryInto::<&mut FEntry>::try_into(p)?.detach(id),
            Link::Fexit(_, id) => TryInto::<&mut FExit>::try_into(p)?.detach(id),
            Link::TpBtf(_, id) => TryInto::<&mut BtfTracePoint>::try_into(p)?.detach(id),
            Link::RawTp(_, id) => TryInto::<&mut RawTracePoint>::try_into(p)?.detach(id),
            Link::Tp(_, id) => TryInto::<&mut TracePoint>::try_into(p)?.detach(id),
        }
    }

    fn unload(&mut self, prog: &'static str) {
        if self.loaded.remove(prog)
            && let Some(p) = self.bpf.program_mut(prog)
        {
            let _ = p_unload(p);
        }
    }

    fn attach_one(&mut self, h: &Hook) -> Result<Link, ProgramError> {
        let first = !self.loaded.contains(h.prog);
        // Joined in `attach`.
        let btf = self.btf.ready().ok_or(ProgramError::NotLoaded)?;
        let p = self
            .bpf
            .program_mut(h.prog)
            .ok_or(ProgramError::NotLoaded)?;
        match h.how {
            How::Fentry(f) => {
                let p: &mut FEntry = p.try_into()?;
                if first {
                    p.load(f, btf)?;
                }
                self.loaded.insert(h.prog);
                Ok(Link::Fentry(h.prog, p.attach()?))
            }
            How::Fexit(f) => {
                let p: &mut FExit = p.try_into()?;
                if first {
                    p.load(f, btf)?;
                }
                self.loaded.insert(h.prog);
                Ok(Link::Fexit(h.prog, p.attach()?))
            }
            How::TpBtf(tp) => {
                let p: &mut BtfTracePoint = p.try_into()?;
                if first {
                    p.load(tp, btf)?;
                }
                self.loaded.insert(h.prog);
                Ok(Link::TpBtf(h.prog, p.attach()?))
            }
            How::RawTp(tp) => {
                let p: &mut RawTracePoint = p.try_into()?;
                if first {
                    p.load()?;
                }
                self.loaded.insert(h.prog);
                Ok(Link::RawTp(h.prog, p.attach(tp)?))
            }
            How::Tp(cat, name) => {
                let p: &mut TracePoint = p.try_into()?;
                if first {
                    p.load()?;
                }
                self.loaded.insert(h.prog);
                Ok(Link::Tp(h.prog, p.attach(cat, name)?))
            }
        }
    }
}

impl Link {
    fn prog(&self) -> &'static str {
        match self {
            Link::Fentry(p, _)
            | Link::Fexit(p, _)
            | Link::TpBtf(p, _)
            | Link::RawTp(p, _)
            | Link::Tp(p, _) => p,
        }
    }
}

fn p_unload(p: &mut Program) -> Result<(), ProgramError> {
    match p {
        Program::FEntry(p) => p.unload(),
        Program::FExit(p) => p.unload(),
        Program::BtfTracePoint(p) => p.unload(),
        Program::RawTracePoint(p) => p.unload(),
        Program::TracePoint(p) => p.unload(),
        _ => Ok(()),
    }
}
