//! The typed events that feed the model. Every source (ring buffer, wait
//! table scan, /proc) produces these, and `--record` writes them one JSON
//! object per line, so `observer replay` re-runs the model offline.
//!
//! Times are CLOCK_MONOTONIC nanoseconds, the clock of `bpf_ktime_get_ns`.

use serde::{Deserialize, Serialize};

pub type Tid = u32;

/// A futex wait as captured at syscall entry (or rebuilt from /proc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    pub uaddr: u64,
    /// WAIT_REQUEUE_PI: the PI mutex; futex_waitv: the array.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uaddr2: u64,
    /// futex(2) op (with flags), or one of `OBS_OP_*` for the futex2 calls.
    pub op: u32,
    pub val: u32,
    pub start_ns: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ip: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sp: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bp: u64,
    /// Target memory around the futex word read at wait start
    /// (`words_addr` is the address of `words[0]`); empty if unreadable.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub words_addr: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "hex_bytes")]
    pub words: Vec<u8>,
    /// Where the wait was seen first.
    pub origin: WaitOrigin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitOrigin {
    /// The BPF wait table: the wait began while observed.
    Kernel,
    /// /proc snapshot: the wait began before we attached (start unknown,
    /// `start_ns` is when we first saw it).
    Snapshot,
}

/// Where an exec'd executable's code was mapped (from the kernel at exec).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExeImage {
    /// (major, minor) as /proc/PID/maps prints them.
    pub dev: (u32, u32),
    pub inode: u64,
    pub start_code: u64,
    pub end_code: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// How a lock was taken (deep tier).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcqKind {
    Mutex,
    RwRead,
    RwWrite,
    Semaphore,
    PyLock,
    Unknown,
}

/// A lock-order edge: `from` (identity: address, generation) was held
/// when `to` was acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EdgeId {
    pub from: u64,
    pub from_gen: u32,
    pub to: u64,
    pub to_gen: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldLock {
    pub lock: u64,
    pub kind: AcqKind,
    pub acquired_ns: u64,
    pub site: u64,
}

/// Per-lock statistics from the deep tier.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockProfile {
    pub acquired: u64,
    pub contended: u64,
    /// Time in contended acquisitions (calls that slept in a futex wait).
    pub wait_total_ns: u64,
    pub wait_max_ns: u64,
    pub hold_total_ns: u64,
    pub hold_max_ns: u64,
    /// Hold times: bucket i counts holds of [2^i, 2^(i+1)) microseconds (0: < 2 us).
    pub hold_hist: Vec<u64>,
    /// (tid, holds, total hold ns), most total hold first.
    pub top_holders: Vec<(Tid, u64, u64)>,
}

/// How a lock was known to be held since before `attach`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldEvidence {
    /// A thread was already waiting for it (the /proc snapshot).
    WaitingAtAttach,
    /// Deep tier: a thread waits for it and the uprobes saw no acquisition.
    NoAcquisitionSeen,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PthreadOp {
    Join,
    Detach,
    Exit,
}

/// Counters of things the kernel side had to drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    pub ringbuf: u64,
    pub wait_table_full: u64,
    pub aggregate_full: u64,
    pub watch_full: u64,
    #[serde(default)]
    pub creating_full: u64,
    #[serde(default)]
    pub held_full: u64,
    #[serde(default)]
    pub order_full: u64,
    #[serde(default)]
    pub lock_stats_full: u64,
    /// Threads that ended by themselves whose join state could not be kept.
    #[serde(default)]
    pub exited_full: u64,
    pub records: u64,
}

impl Drops {
    pub fn any(&self) -> bool {
        self.ringbuf + self.full_tables().iter().map(|(_, n)| n).sum::<u64>() > 0
    }

    /// Losses to each full kernel table, by the table's name in reports
    /// and metrics (the one list of them: a new table goes here).
    pub fn full_tables(&self) -> [(&'static str, u64); 8] {
        [
            ("wait_table", self.wait_table_full),
            ("aggregate", self.aggregate_full),
            ("watch", self.watch_full),
            ("held", self.held_full),
            ("order", self.order_full),
            ("lock_stats", self.lock_stats_full),
            ("creating", self.creating_full),
            ("exited", self.exited_full),
        ]
    }
}

/// Where a thread sits when the hang watchdog fires (/proc/.../syscall and wchan).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedIn {
    pub tid: Tid,
    /// The syscall it is blocked in (None: not in a syscall, or unreadable).
    pub syscall: Option<i64>,
    pub wchan: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
pub enum Event {
    /// Observation of process `tgid` begins (`run`: before exec; `attach`:
    /// after probes are live). `cmdline` is untrusted target data.
    Start {
        ts_ns: u64,
        tgid: u32,
        cmdline: Vec<String>,
        attached: bool,
        /// The executable (/proc/PID/exe; `run`: the command's path, made
        /// absolute). Untrusted target data. Absent in older recordings.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exe: Option<String>,
        /// The process's start time (/proc/PID/stat `starttime`) in ns since
        /// boot: with `tgid` it names this process among every process of
        /// the boot (PIDs are reused), so reports of one hang can be matched.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start_time_ns: Option<u64>,
    },
    /// A thread that already existed when observation began (from /proc).
    ThreadSeen {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        name: String,
        parent_tid: Option<Tid>,
        start_ns: Option<u64>,
    },
    /// `creator` cloned `tid` (a thread when `tgid == child_tgid`, else a
    /// new process).
    ThreadNew {
        ts_ns: u64,
        tgid: u32,
        creator: Tid,
        tid: Tid,
        child_tgid: u32,
        clone_flags: u64,
        /// CLONE_CHILD_CLEARTID address: pthread_join waits on it.
        child_tid_addr: u64,
        name: String,
        /// From the pthread_create uprobe (0 / false without it).
        #[serde(default, skip_serializing_if = "is_zero")]
        pthread: u64,
        #[serde(default, skip_serializing_if = "is_zero")]
        create_site: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        detached: bool,
    },
    ThreadExit {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        exit_code: i32,
        group_dead: bool,
        /// Ended by the process's exit (exit_group or a fatal signal), not by itself.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        group_exit: bool,
    },
    ThreadRename {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        name: String,
    },
    Exec {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        old_tid: Tid,
        filename: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<ExeImage>,
    },
    /// A thread is in a futex wait (seen by the wait table scan or /proc).
    WaitBegin {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        wait: Wait,
    },
    /// The wait ended. `ret` is the syscall result when the kernel reported
    /// it (EDEADLK, EOWNERDEAD, long waits), `None` when the scan found it gone.
    WaitEnd {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        start_ns: u64,
        ret: Option<i64>,
    },
    /// A wait the kernel reported at its end (it was never seen in progress,
    /// or its outcome matters: EDEADLK, EOWNERDEAD, longer than the threshold).
    WaitDone {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        wait: Wait,
        ret: i64,
    },
    /// Target memory around a waiting thread's futex word, read again
    /// (owners change while a thread waits).
    WaitWords {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        start_ns: u64,
        words_addr: u64,
        #[serde(with = "hex_bytes")]
        words: Vec<u8>,
    },
    /// The data symbol of a lock address (a global or static).
    Symbol {
        tgid: u32,
        addr: u64,
        name: String,
    },
    /// Per-lock totals of completed waits that slept, from the kernel.
    LockStats {
        tgid: u32,
        uaddr: u64,
        op: u32,
        count: u64,
        total_ns: u64,
        max_ns: u64,
    },
    Drops {
        ts_ns: u64,
        drops: Drops,
    },
    /// Where thread `tid` was created: its creator's stack at the clone
    /// (copied by BPF), unwound by userspace. `frames` are return
    /// addresses from the creation site outwards (libc's pthread_create
    /// and clone frames dropped); `site` is the first of them.
    CreationStack {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        #[serde(skip)]
        regs: [u64; 3],
        #[serde(skip)]
        stack: Vec<u8>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        frames: Vec<u64>,
        /// No copy was sent: the creator's stack matched this signature,
        /// whose frames userspace has (resolved before recording).
        #[serde(skip)]
        sig: u32,
    },
    /// `tid` began a shared futex wait on `uaddr` expecting `val`: a join
    /// of thread `val` when `uaddr` is that thread's CHILD_CLEARTID word.
    JoinWait {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        uaddr: u64,
        val: u32,
    },
    /// A thread of the process was first seen in epoll_wait (a selector
    /// event loop is watched from now on: `loop_blocked` would follow).
    LoopSeen {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
    },
    /// An event loop thread out of its selector (epoll_wait) since
    /// `start_ns`: until `end_ns` (it came back), or still at `ts_ns`;
    /// `runq_ns` of it runnable but waiting for a CPU.
    LoopBlocked {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        start_ns: u64,
        end_ns: Option<u64>,
        runq_ns: u64,
        /// Its Python stack (innermost first) and the asyncio task running,
        /// read while it was still out of its selector.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        python: Vec<crate::vocab::frames::PyFrame>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<String>,
    },
    /// glibc's descriptor of exited thread `tid`, read at the process's
    /// exit_group: `read` false when it was unmapped (freed).
    JoinState {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        pthread: u64,
        read: bool,
        tid_word: i32,
        joinid: u64,
    },
    /// A libc thread call seen by a uprobe: `tid` joined or detached the
    /// thread `pthread`, or called pthread_exit.
    Pthread {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        op: PthreadOp,
        pthread: u64,
        site: u64,
    },
    /// A thread has not run since `since_ns` while other threads of its
    /// process did (sampled from /proc).
    ThreadStuck {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        since_ns: u64,
        syscall: Option<i64>,
        wchan: String,
    },
    /// The hang watchdog (`--hang-after`): no thread of the watched tree
    /// (the target and its descendants) has run on a CPU since `since_ns`
    /// (/proc on-CPU time); `blocked` says where each live thread of this
    /// process sits.
    NoProgress {
        ts_ns: u64,
        tgid: u32,
        since_ns: u64,
        blocked: Vec<BlockedIn>,
    },
    /// A stuck thread ran again.
    ThreadResumed {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
    },
    /// A blocked thread's stacks, taken without stopping it: native frames
    /// (innermost first) and, for CPython, Python frames.
    Stack {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        frames: Vec<crate::vocab::frames::Frame>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        python: Vec<crate::vocab::frames::PyFrame>,
        /// Per Python frame: the first its eval-loop call runs (where the
        /// merged stack puts it, see `symbol::merge_stacks`); empty: unknown.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        python_entry: Vec<bool>,
        /// This thread holds the GIL (Python).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        owns_gil: bool,
    },
    /// A thread's `threading.Thread` name (CPython keeps the OS name).
    PyThreadName {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        name: String,
    },
    /// The Python view of a CPython process read from its memory: every
    /// thread's name and stack, the lock it waits for, the locks it holds.
    PyState {
        ts_ns: u64,
        tgid: u32,
        view: crate::vocab::python::PyView,
    },
    /// GIL and lock accounting of a CPython process: the cumulative tally
    /// of its sampler (the latest one supersedes the others).
    PyGil {
        ts_ns: u64,
        tgid: u32,
        tally: crate::vocab::gil::GilTally,
    },
    /// Deep tier: a lock-order edge seen for the first time, with the call
    /// sites and a copy of the stack (`frames` once unwound by userspace).
    LockEdge {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        edge: EdgeId,
        from_kind: AcqKind,
        to_kind: AcqKind,
        from_site: u64,
        to_site: u64,
        /// The outermost lock held at this first observation (0: none).
        gate: u64,
        #[serde(skip)]
        regs: [u64; 3],
        #[serde(skip)]
        stack: Vec<u8>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        frames: Vec<crate::vocab::frames::Frame>,
    },
    /// Deep tier: the current gate of lock-order edges (the outermost lock
    /// held at every observation; 0 once an observation lacked it).
    EdgeGates {
        ts_ns: u64,
        tgid: u32,
        gates: Vec<(EdgeId, u64)>,
    },
    /// Deep tier: the owner of a lock a thread waits for (from the uprobes).
    LockOwner {
        ts_ns: u64,
        tgid: u32,
        lock: u64,
        owner: Option<Tid>,
        kind: AcqKind,
    },
    /// `attach`: a lock already held when observation began, so no
    /// acquisition of it was seen: `waiter` waited for it at attach, or
    /// (deep tier) waits for it with no acquisition seen since. `holder`
    /// is what the lock's memory names (None: it records no owner).
    HeldAtAttach {
        ts_ns: u64,
        tgid: u32,
        lock: u64,
        kind: crate::vocab::locks::LockKind,
        holder: Option<Tid>,
        waiter: Tid,
        evidence: HeldEvidence,
    },
    /// Deep tier: a thread exited holding these locks.
    ExitHeld {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        locks: Vec<HeldLock>,
    },
    /// Deep tier: statistics of one lock identity, at the end.
    LockProfile {
        tgid: u32,
        lock: u64,
        generation: u32,
        kind: AcqKind,
        profile: LockProfile,
    },
    /// `tid`, the owner recorded in a lock a thread of `tgid` waits for, is
    /// a live thread of the process `owner_tgid`, which is not observed
    /// (from /proc/TID/status when it was seen).
    ForeignThread {
        ts_ns: u64,
        tgid: u32,
        tid: Tid,
        owner_tgid: u32,
        /// The thread's name and its process's.
        name: String,
        comm: String,
        #[serde(default)]
        exe: Option<String>,
    },
    /// The file mappings of a process, read when it appeared (exec,
    /// attach) and again when an address fell in no known mapping: what
    /// symbolizing its addresses needs after it is gone (and in replay).
    Mappings {
        ts_ns: u64,
        tgid: u32,
        #[serde(default)]
        maps: Vec<crate::vocab::frames::MapEntry>,
    },
    /// Code symbols of call sites (creation sites): (tgid, addr) -> function.
    CodeSymbol {
        tgid: u32,
        addr: u64,
        name: String,
    },
    /// The live session ran its detectors here (replay judges at the same points).
    Scan {
        ts_ns: u64,
    },
    /// Observation ended (target exit status when known).
    End {
        ts_ns: u64,
        tgid: u32,
        exit_status: Option<i32>,
    },
}

impl Event {
    /// A `Start` without the identity /proc gives (tests, synthetic streams).
    #[cfg(any(test, feature = "testing"))]
    pub fn start(ts_ns: u64, tgid: u32, cmdline: Vec<String>, attached: bool) -> Event {
        Event::Start {
            ts_ns,
            tgid,
            cmdline,
            attached,
            exe: None,
            start_time_ns: None,
        }
    }
    /// The `tgid` an event belongs to (None for global events).
    pub fn tgid(&self) -> Option<u32> {
        use Event::*;
        match self {
            Start { tgid, .. }
            | ThreadSeen { tgid, .. }
            | ThreadNew { tgid, .. }
            | ThreadExit { tgid, .. }
            | ThreadRename { tgid, .. }
            | Exec { tgid, .. }
            | WaitBegin { tgid, .. }
            | WaitEnd { tgid, .. }
            | WaitDone { tgid, .. }
            | WaitWords { tgid, .. }
            | Symbol { tgid, .. }
            | LockStats { tgid, .. }
            | Pthread { tgid, .. }
            | ThreadStuck { tgid, .. }
            | NoProgress { tgid, .. }
            | ThreadResumed { tgid, .. }
            | Stack { tgid, .. }
            | PyThreadName { tgid, .. }
            | LockEdge { tgid, .. }
            | EdgeGates { tgid, .. }
            | LockOwner { tgid, .. }
            | ExitHeld { tgid, .. }
            | HeldAtAttach { tgid, .. }
            | LockProfile { tgid, .. }
            | CodeSymbol { tgid, .. }
            | Mappings { tgid, .. }
            | ForeignThread { tgid, .. }
            | CreationStack { tgid, .. }
            | JoinWait { tgid, .. }
            | LoopBlocked { tgid, .. }
            | LoopSeen { tgid, .. }
            | JoinState { tgid, .. }
            | PyState { tgid, .. }
            | PyGil { tgid, .. }
            | End { tgid, .. } => Some(*tgid),
            Drops { .. } | Scan { .. } => None,
        }
    }

    pub fn ts_ns(&self) -> Option<u64> {
        use Event::*;
        match self {
            Start { ts_ns, .. }
            | ThreadSeen { ts_ns, .. }
            | ThreadNew { ts_ns, .. }
            | ThreadExit { ts_ns, .. }
            | ThreadRename { ts_ns, .. }
            | Exec { ts_ns, .. }
            | WaitBegin { ts_ns, .. }
            | WaitEnd { ts_ns, .. }
            | WaitDone { ts_ns, .. }
            | WaitWords { ts_ns, .. }
            | Drops { ts_ns, .. }
            | Scan { ts_ns }
            | Pthread { ts_ns, .. }
            | CreationStack { ts_ns, .. }
            | JoinWait { ts_ns, .. }
            | LoopBlocked { ts_ns, .. }
            | LoopSeen { ts_ns, .. }
            | JoinState { ts_ns, .. }
            | ThreadStuck { ts_ns, .. }
            | NoProgress { ts_ns, .. }
            | ThreadResumed { ts_ns, .. }
            | Stack { ts_ns, .. }
            | PyThreadName { ts_ns, .. }
            | PyState { ts_ns, .. }
            | PyGil { ts_ns, .. }
            | LockEdge { ts_ns, .. }
            | EdgeGates { ts_ns, .. }
            | LockOwner { ts_ns, .. }
            | ExitHeld { ts_ns, .. }
            | HeldAtAttach { ts_ns, .. }
            | Mappings { ts_ns, .. }
            | ForeignThread { ts_ns, .. }
            | End { ts_ns, .. } => Some(*ts_ns),
            LockStats { .. } | Symbol { .. } | CodeSymbol { .. } | LockProfile { .. } => None,
        }
    }
}

/// Futex op helpers shared by the model and reports.
pub mod futex {
    use observer_abi::bindings as b;

    pub fn cmd(op: u32) -> u32 {
        if op & (b::OBS_OP_WAITV | b::OBS_OP_FUTEX2_WAIT) != 0 {
            op
        } else {
            op & b::OBS_FUTEX_CMD_MASK
        }
    }

    pub fn is_private(op: u32) -> bool {
        op & b::OBS_FUTEX_PRIVATE_FLAG != 0 && cmd(op) == (op & b::OBS_FUTEX_CMD_MASK)
    }

    pub fn is_pi(op: u32) -> bool {
        matches!(
            cmd(op),
            b::OBS_FUTEX_LOCK_PI | b::OBS_FUTEX_LOCK_PI2 | b::OBS_FUTEX_WAIT_REQUEUE_PI
        )
    }

    pub fn name(op: u32) -> String {
        let base = match cmd(op) {
            b::OBS_FUTEX_WAIT => "WAIT",
            b::OBS_FUTEX_WAKE => "WAKE",
            b::OBS_FUTEX_LOCK_PI => "LOCK_PI",
            b::OBS_FUTEX_UNLOCK_PI => "UNLOCK_PI",
            b::OBS_FUTEX_WAIT_BITSET => "WAIT_BITSET",
            b::OBS_FUTEX_WAIT_REQUEUE_PI => "WAIT_REQUEUE_PI",
            b::OBS_FUTEX_LOCK_PI2 => "LOCK_PI2",
            b::OBS_OP_WAITV => return "futex_waitv".into(),
            b::OBS_OP_FUTEX2_WAIT => return "futex_wait".into(),
            other => return format!("op{other}"),
        };
        if is_private(op) {
            format!("{base}_PRIVATE")
        } else {
            base.into()
        }
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(b.len() * 2);
        for x in b {
            out.push_str(&format!("{x:02x}"));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd hex length"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Events for tests: a thread of `tgid` created by its leader, and its end.
#[cfg(test)]
impl Event {
    pub(crate) fn test_thread_new(ts_ns: u64, tgid: u32, tid: Tid, name: &str) -> Event {
        Event::ThreadNew {
            ts_ns,
            tgid,
            creator: tgid,
            tid,
            child_tgid: tgid,
            clone_flags: 0,
            child_tid_addr: 0,
            name: name.into(),
            pthread: 0,
            create_site: 0,
            detached: false,
        }
    }

    pub(crate) fn test_thread_exit(ts_ns: u64, tgid: u32, tid: Tid, exit_code: i32) -> Event {
        Event::ThreadExit {
            ts_ns,
            tgid,
            tid,
            exit_code,
            group_dead: false,
            group_exit: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_round_trips_through_json() {
        let e = Event::WaitBegin {
            ts_ns: 5,
            tgid: 1,
            tid: 2,
            wait: Wait {
                uaddr: 0x1000,
                uaddr2: 0,
                op: 0x80,
                val: 2,
                start_ns: 4,
                ip: 1,
                sp: 2,
                bp: 3,
                words_addr: 0xfe8,
                words: vec![0, 1, 0xff],
                origin: WaitOrigin::Kernel,
            },
        };
        let s = serde_json::to_string(&e).unwrap();
        assert!(s.contains("\"words\":\"0001ff\""), "{s}");
        let back: Event = serde_json::from_str(&s).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn futex_names() {
        assert_eq!(futex::name(0x80), "WAIT_PRIVATE");
        assert_eq!(futex::name(0x189), "WAIT_BITSET_PRIVATE");
        assert_eq!(futex::name(0x86), "LOCK_PI_PRIVATE");
        assert_eq!(futex::name(0x109), "WAIT_BITSET");
        assert!(futex::is_pi(0x86));
        assert!(!futex::is_pi(0x80));
    }
}
