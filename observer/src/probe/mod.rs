//! Loading the BPF object and attaching its programs with a fallback
//! ladder chosen at run time. Root-only and thin: everything it reads goes
//! through `decode` and becomes typed events elsewhere.

pub mod btfcache;
pub mod decode;
pub mod deps;
pub mod multi;
pub mod site;
pub mod spawn;

pub use observer_core::vocab::hooks::{HookUse, Rung};
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
    obs_holder, obs_holder_key, obs_lock_key, obs_lock_stats, obs_owner, obs_stat, obs_wait,
};

use crate::event::Drops;
use decode::Pod;

#[derive(Clone, Copy)]
enum How {
    Fentry(&'static str),
    Fexit(&'static str),
    TpBtf(&'static str),
    RawTp(&'static str),
    Tp(&'static str, &'static str),
}

#[derive(Clone, Copy)]
struct Hook {
    prog: &'static str,
    how: How,
    /// Optional hooks (syscalls newer kernels added) may be missing.
    required: bool,
}

const fn req(prog: &'static str, how: How) -> Hook {
    Hook {
        prog,
        how,
        required: true,
    }
}
const fn opt(prog: &'static str, how: How) -> Hook {
    Hook {
        prog,
        how,
        required: false,
    }
}

#[cfg(target_arch = "x86_64")]
mod sysfn {
    pub const FUTEX: &str = "__x64_sys_futex";
    pub const FUTEX_WAITV: &str = "__x64_sys_futex_waitv";
    pub const FUTEX_WAIT: &str = "__x64_sys_futex_wait";
    pub const EXIT_GROUP: &str = "__x64_sys_exit_group";
}
#[cfg(target_arch = "aarch64")]
mod sysfn {
    pub const FUTEX: &str = "__arm64_sys_futex";
    pub const FUTEX_WAITV: &str = "__arm64_sys_futex_waitv";
    pub const FUTEX_WAIT: &str = "__arm64_sys_futex_wait";
    pub const EXIT_GROUP: &str = "__arm64_sys_exit_group";
}

/// A group of hooks that serve one purpose, with its rungs.
struct Group {
    name: &'static str,
    rungs: &'static [(Rung, &'static [Hook])],
}

const GROUPS: &[Group] = &[
    Group {
        name: "futex",
        rungs: &[
            (
                Rung::Fentry,
                &[
                    req("fentry_futex", How::Fentry(sysfn::FUTEX)),
                    req("fexit_futex", How::Fexit(sysfn::FUTEX)),
                    opt("fentry_futex_waitv", How::Fentry(sysfn::FUTEX_WAITV)),
                    opt("fexit_futex_waitv", How::Fexit(sysfn::FUTEX_WAITV)),
                    opt("fentry_futex_wait", How::Fentry(sysfn::FUTEX_WAIT)),
                    opt("fexit_futex_wait", How::Fexit(sysfn::FUTEX_WAIT)),
                    opt("fentry_exit_group", How::Fentry(sysfn::EXIT_GROUP)),
                ],
            ),
            (
                Rung::TpBtf,
                &[
                    req("btf_sys_enter", How::TpBtf("sys_enter")),
                    req("btf_sys_exit", How::TpBtf("sys_exit")),
                ],
            ),
            (
                Rung::RawTp,
                &[
                    req("raw_sys_enter", How::RawTp("sys_enter")),
                    req("raw_sys_exit", How::RawTp("sys_exit")),
                ],
            ),
            (
                Rung::Tracepoint,
                &[
                    req("tp_sys_enter_futex", How::Tp("syscalls", "sys_enter_futex")),
                    req("tp_sys_exit_futex", How::Tp("syscalls", "sys_exit_futex")),
                    opt(
                        "tp_sys_enter_futex_waitv",
                        How::Tp("syscalls", "sys_enter_futex_waitv"),
                    ),
                    opt(
                        "tp_sys_exit_futex",
                        How::Tp("syscalls", "sys_exit_futex_waitv"),
                    ),
                    opt(
                        "tp_sys_enter_futex_wait",
                        How::Tp("syscalls", "sys_enter_futex_wait"),
                    ),
                    opt(
                        "tp_sys_exit_futex",
                        How::Tp("syscalls", "sys_exit_futex_wait"),
                    ),
                    opt(
                        "tp_sys_enter_epoll",
                        How::Tp("syscalls", "sys_enter_epoll_wait"),
                    ),
                    opt(
                        "tp_sys_enter_epoll",
                        How::Tp("syscalls", "sys_enter_epoll_pwait"),
                    ),
                    opt(
                        "tp_sys_enter_epoll",
                        How::Tp("syscalls", "sys_enter_epoll_pwait2"),
                    ),
                    opt(
                        "tp_sys_exit_epoll",
                        How::Tp("syscalls", "sys_exit_epoll_wait"),
                    ),
                    opt(
                        "tp_sys_exit_epoll",
                        How::Tp("syscalls", "sys_exit_epoll_pwait"),
                    ),
                    opt(
                        "tp_sys_exit_epoll",
                        How::Tp("syscalls", "sys_exit_epoll_pwait2"),
                    ),
                    opt(
                        "tp_sys_enter_exit_group",
                        How::Tp("syscalls", "sys_enter_exit_group"),
                    ),
                ],
            ),
        ],
    },
    Group {
        name: "task_newtask",
        rungs: &[
            (
                Rung::TpBtf,
                &[req("btf_task_newtask", How::TpBtf("task_newtask"))],
            ),
            (
                Rung::RawTp,
                &[req("raw_task_newtask", How::RawTp("task_newtask"))],
            ),
            (
                Rung::Tracepoint,
                &[req("tp_task_newtask", How::Tp("task", "task_newtask"))],
            ),
        ],
    },
    Group {
        name: "sched_process_exit",
        rungs: &[
            (
                Rung::TpBtf,
                &[req("btf_process_exit", How::TpBtf("sched_process_exit"))],
            ),
            (
                Rung::RawTp,
                &[req("raw_process_exit", How::RawTp("sched_process_exit"))],
            ),
            (
                Rung::Tracepoint,
                &[req(
                    "tp_process_exit",
                    How::Tp("sched", "sched_process_exit"),
                )],
            ),
        ],
    },
    Group {
        name: "task_rename",
        rungs: &[
            (
                Rung::TpBtf,
                &[req("btf_task_rename", How::TpBtf("task_rename"))],
            ),
            (
                Rung::RawTp,
                &[req("raw_task_rename", How::RawTp("task_rename"))],
            ),
            (
                Rung::Tracepoint,
                &[req("tp_task_rename", How::Tp("task", "task_rename"))],
            ),
        ],
    },
    Group {
        name: "sched_process_exec",
        rungs: &[
            (
                Rung::TpBtf,
                &[req("btf_process_exec", How::TpBtf("sched_process_exec"))],
            ),
            (
                Rung::RawTp,
                &[req("raw_process_exec", How::RawTp("sched_process_exec"))],
            ),
            (
                Rung::Tracepoint,
                &[req(
                    "tp_process_exec",
                    How::Tp("sched", "sched_process_exec"),
                )],
            ),
        ],
    },
];

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

/// Lifecycle uprobes: rare libc calls, so on by default. (program, symbol)
const THREAD_UPROBES: &[(&str, &str)] = &[
    ("up_pthread_create", "pthread_create"),
    ("up_pthread_join", "pthread_join"),
    ("up_pthread_detach", "pthread_detach"),
    ("up_pthread_exit", "pthread_exit"),
    ("up_pthread_tryjoin", "pthread_tryjoin_np"),
    ("urp_pthread_tryjoin", "pthread_tryjoin_np"),
    ("up_pthread_tryjoin", "pthread_timedjoin_np"),
    ("urp_pthread_tryjoin", "pthread_timedjoin_np"),
];

/// Deep tier (--uprobes): libc lock functions. (entry program, return
/// program, symbol)
const LOCK_UPROBES: &[(&str, Option<&str>, &str)] = &[
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
const PY_UPROBES: &[(&str, Option<&str>, &str)] = &[
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
fn reads(prog: &str) -> site::Reads {
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
fn cookie(prog: &str) -> u64 {
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
    pub mounted_tracefs: bool,
    stop_on_exec: bool,
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
            mounted_tracefs: false,
            stop_on_exec: cfg.stop_on_exec,
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
        tracing::debug!(
            "startup: object relocated and maps created in {:?}",
            t0.elapsed()
        );
        Ok(bpf)
    }

    /// Attaches every hook group on the first rung the kernel accepts.
    pub fn attach(&mut self, only: Option<Rung>) -> Result<(), ProbeError> {
        let t0 = std::time::Instant::now();
        self.btf.get()?;
        let r = self.attach_groups(only);
        tracing::debug!("startup: hooks verified and attached in {:?}", t0.elapsed());
        r
    }

    fn attach_groups(&mut self, only: Option<Rung>) -> Result<(), ProbeError> {
        for g in GROUPS {
            let mut used = HookUse {
                group: g.name,
                rung: None,
                skipped: Vec::new(),
            };
            for &(rung, hooks) in g.rungs {
                if only.is_some_and(|o| o != rung) {
                    continue;
                }
                match self.attach_rung(rung, hooks) {
                    Ok(()) => {
                        used.rung = Some(rung);
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

    fn attach_rung(&mut self, rung: Rung, hooks: &[Hook]) -> Result<(), String> {
        if rung == Rung::Tracepoint && ensure_tracefs()? {
            self.mounted_tracefs = true;
        }
        let mut touched: Vec<&'static str> = Vec::new();
        for h in hooks {
            if let Err(e) = self.attach_one(h) {
                if h.required {
                    for p in touched {
                        self.unload(p);
                    }
                    self.unload(h.prog);
                    return Err(format!("{}: {}", h.prog, short(&e)));
                }
                tracing::debug!(prog = h.prog, err = %short(&e), "optional hook not attached");
                continue;
            }
            touched.push(h.prog);
        }
        Ok(())
    }

    fn unload(&mut self, prog: &'static str) {
        if self.loaded.remove(prog)
            && let Some(p) = self.bpf.program_mut(prog)
        {
            let _ = p_unload(p);
        }
    }

    fn attach_one(&mut self, h: &Hook) -> Result<(), ProgramError> {
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
                p.attach()?;
            }
            How::Fexit(f) => {
                let p: &mut FExit = p.try_into()?;
                if first {
                    p.load(f, btf)?;
                }
                self.loaded.insert(h.prog);
                p.attach()?;
            }
            How::TpBtf(tp) => {
                let p: &mut BtfTracePoint = p.try_into()?;
                if first {
                    p.load(tp, btf)?;
                }
                self.loaded.insert(h.prog);
                p.attach()?;
            }
            How::RawTp(tp) => {
                let p: &mut RawTracePoint = p.try_into()?;
                if first {
                    p.load()?;
                }
                self.loaded.insert(h.prog);
                p.attach(tp)?;
            }
            How::Tp(cat, name) => {
                let p: &mut TracePoint = p.try_into()?;
                if first {
                    p.load()?;
                }
                self.loaded.insert(h.prog);
                p.attach(cat, name)?;
            }
        }
        Ok(())
    }

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
                    std::iter::once("up_bare")
                        .chain(ret.map(|_| "urp_bare"))
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
    fn attach_rows(
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
    fn sites_in(
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

    fn attach_uprobe(
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

    /// Current owners of locks (deep tier): (tgid, lock) -> owner.
    pub fn lock_owner(&self, tgid: u32, lock: u64) -> Option<obs_owner> {
        let m =
            BpfHashMap::<_, Pod<obs_lock_key>, Pod<obs_owner>>::try_from(self.bpf.map("OWNERS")?)
                .ok()?;
        let k = obs_lock_key {
            lock,
            tgid,
            gen_: 0,
        };
        m.get(&Pod(k), 0).ok().map(|v| v.0)
    }

    /// Locks threads of `tgid` hold by an acquisition the deep tier saw
    /// (their held sets; a lock a thread still sleeps in is not held).
    pub fn held_locks(&self, tgid: u32) -> HashSet<u64> {
        let Some(m) = self
            .bpf
            .map("HELD")
            .and_then(|m| BpfHashMap::<_, u32, Pod<obs_held>>::try_from(m).ok())
        else {
            return HashSet::new();
        };
        m.iter()
            .filter_map(Result::ok)
            .filter(|(_, h)| h.0.tgid == tgid)
            .flat_map(|(_, h)| {
                let n = (h.0.n as usize).min(h.0.locks.len());
                h.0.locks[..n]
                    .iter()
                    .filter(|l| l.lock != 0 && u32::from(l.flags) & OBS_HL_WAITING == 0)
                    .map(|l| l.lock)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The lock-order edge table (deep tier).
    pub fn lock_edges(&self) -> Vec<(obs_edge_key, obs_edge)> {
        let Some(m) = self.bpf.map("ORDER") else {
            return Vec::new();
        };
        let Ok(m) = BpfHashMap::<_, Pod<obs_edge_key>, Pod<obs_edge>>::try_from(m) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.0, v.0))
            .collect()
    }

    /// Per-lock statistics and per-holder hold times (deep tier).
    #[allow(clippy::type_complexity)]
    pub fn lock_stats(
        &self,
    ) -> (
        Vec<(obs_lock_key, obs_lock_stats)>,
        Vec<(obs_holder_key, obs_holder)>,
    ) {
        let stats = self
            .bpf
            .map("LSTATS")
            .and_then(|m| BpfHashMap::<_, Pod<obs_lock_key>, Pod<obs_lock_stats>>::try_from(m).ok())
            .map(|m| {
                m.iter()
                    .filter_map(Result::ok)
                    .map(|(k, v)| (k.0, v.0))
                    .collect()
            })
            .unwrap_or_default();
        let holders = self
            .bpf
            .map("HOLDERS")
            .and_then(|m| BpfHashMap::<_, Pod<obs_holder_key>, Pod<obs_holder>>::try_from(m).ok())
            .map(|m| {
                m.iter()
                    .filter_map(Result::ok)
                    .map(|(k, v)| (k.0, v.0))
                    .collect()
            })
            .unwrap_or_default();
        let cached = self
            .bpf
            .map("HELD")
            .and_then(|m| BpfHashMap::<_, u32, Pod<obs_held>>::try_from(m).ok())
            .map(|m| {
                m.iter()
                    .filter_map(Result::ok)
                    .map(|(tid, h)| (tid, h.0))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        decode::add_hold_caches(stats, holders, &cached)
    }

    /// Starts observing process `tgid` (checked first by every program).
    pub fn watch(&mut self, tgid: u32) -> Result<(), ProbeError> {
        let mut m: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(self.bpf.map_mut("WATCH").expect("WATCH"))
                .map_err(|e| ProbeError::Map("WATCH", short(&e)))?;
        m.insert(tgid, 1, 0)
            .map_err(|e| ProbeError::Map("WATCH", short(&e)))
    }

    /// Stops observing process `tgid` (the daemon, when it exits or no
    /// longer matches) and forgets its waits and futex totals: once it is
    /// unwatched no program removes them, and the tables would fill.
    pub fn unwatch(&mut self, tgid: u32) {
        if let Some(m) = self.bpf.map_mut("WATCH")
            && let Ok(mut m) = BpfHashMap::<_, u32, u8>::try_from(m)
        {
            let _ = m.remove(&tgid);
        }
        if let Some(m) = self.bpf.map_mut("WAITS")
            && let Ok(mut m) = BpfHashMap::<_, u32, Pod<obs_wait>>::try_from(m)
        {
            let tids: Vec<u32> = m
                .iter()
                .filter_map(Result::ok)
                .filter(|(_, w)| w.0.tgid == tgid)
                .map(|(t, _)| t)
                .collect();
            for t in tids {
                let _ = m.remove(&t);
            }
        }
        if let Some(m) = self.bpf.map_mut("AGG")
            && let Ok(mut m) = BpfHashMap::<_, Pod<obs_agg_key>, Pod<obs_agg>>::try_from(m)
        {
            let keys: Vec<Pod<obs_agg_key>> = m
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.0.tgid == tgid)
                .collect();
            for k in keys {
                let _ = m.remove(&k);
            }
        }
    }

    pub fn take_ringbuf(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let m = self
            .bpf
            .take_map("EVENTS")
            .ok_or(ProbeError::Map("EVENTS", "already taken".into()))?;
        RingBuf::try_from(m).map_err(|e| ProbeError::Map("EVENTS", short(&e)))
    }

    /// The wait table now: (tid, wait). Entries that vanish mid-walk are skipped.
    pub fn waits(&self) -> Vec<(u32, obs_wait)> {
        let Some(m) = self.bpf.map("WAITS") else {
            return Vec::new();
        };
        let Ok(m) = BpfHashMap::<_, u32, Pod<obs_wait>>::try_from(m) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.0))
            .collect()
    }

    /// An owned handle on the wait table, for a thread that samples it
    /// while the event loop is busy (the GIL sampler).
    pub fn wait_table(&self) -> Option<WaitTable> {
        let m = self.bpf.map("WAITS")?;
        let id = match m {
            aya::maps::Map::HashMap(d) => d.info().ok()?.id(),
            _ => return None,
        };
        let d = aya::maps::MapData::from_id(id).ok()?;
        BpfHashMap::try_from(aya::maps::Map::HashMap(d))
            .ok()
            .map(WaitTable)
    }

    /// One thread's entry in the wait table.
    pub fn wait(&self, tid: u32) -> Option<obs_wait> {
        let m = BpfHashMap::<_, u32, Pod<obs_wait>>::try_from(self.bpf.map("WAITS")?).ok()?;
        m.get(&tid, 0).ok().map(|v| v.0)
    }

    /// Threads of watched processes that call epoll_wait: tid -> their
    /// last entry and return.
    pub fn epoll_threads(&self) -> Vec<(u32, obs_epoll)> {
        let Some(m) = self.bpf.map("EPOLL") else {
            return Vec::new();
        };
        let Ok(m) = BpfHashMap::<_, u32, Pod<obs_epoll>>::try_from(m) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.0))
            .collect()
    }

    pub fn aggregates(&self) -> Vec<(obs_agg_key, obs_agg)> {
        let Some(m) = self.bpf.map("AGG") else {
            return Vec::new();
        };
        let Ok(m) = BpfHashMap::<_, Pod<obs_agg_key>, Pod<obs_agg>>::try_from(m) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.0, v.0))
            .collect()
    }

    pub fn drops(&self) -> Drops {
        let Some(m) = self.bpf.map("STATS") else {
            return Drops::default();
        };
        let Ok(a) = PerCpuArray::<_, u64>::try_from(m) else {
            return Drops::default();
        };
        let get = |i: obs_stat| {
            a.get(&(i as u32), 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        Drops {
            ringbuf: get(obs_stat::OBS_STAT_RB_DROPS),
            wait_table_full: get(obs_stat::OBS_STAT_WAITS_FULL),
            aggregate_full: get(obs_stat::OBS_STAT_AGG_FULL),
            watch_full: get(obs_stat::OBS_STAT_WATCH_FULL),
            records: get(obs_stat::OBS_STAT_RECORDS),
            held_full: get(obs_stat::OBS_STAT_HELD_FULL),
            order_full: get(obs_stat::OBS_STAT_ORDER_FULL),
            lock_stats_full: get(obs_stat::OBS_STAT_LSTATS_FULL),
            creating_full: get(obs_stat::OBS_STAT_CREATING_FULL),
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

/// See [`Probes::wait_table`].
pub struct WaitTable(BpfHashMap<aya::maps::MapData, u32, Pod<obs_wait>>);

impl WaitTable {
    /// One thread's current futex wait.
    pub fn get(&self, tid: u32) -> Option<crate::event::Wait> {
        let w = self.0.get(&tid, 0).ok()?.0;
        Some(decode::wait_from_raw(&w, crate::event::WaitOrigin::Kernel))
    }
}
