//! The pure model of the observed processes, fed only by events. No root,
//! no kernel: `observer replay` and the unit tests drive it from recordings.

pub mod event_loop;
pub mod lifecycle;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use serde::Serialize;

use crate::event::{AcqKind, Drops, EdgeId, Event, HeldLock, LockProfile, PthreadOp, Tid, Wait};

/// One thread, from creation (or first sight) to exit.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Thread {
    pub tid: Tid,
    pub tgid: u32,
    /// Names over time: (since ns, name). Never empty.
    pub names: Vec<(u64, String)>,
    /// The thread that created it (for a process's first thread, its parent process).
    pub parent_tid: Option<Tid>,
    pub clone_flags: Option<u64>,
    /// CLONE_CHILD_CLEARTID address (pthread_join waits on it); 0 if unknown.
    pub child_tid_addr: u64,
    pub start_ns: Option<u64>,
    pub exit_ns: Option<u64>,
    /// Raw `task->exit_code`: status << 8 | signal.
    pub exit_code: Option<i32>,
    /// Existed before observation began (seeded from /proc).
    pub preexisting: bool,
    /// The futex wait it is in now.
    pub wait: Option<Wait>,
    /// pthread_t (the TLS base at clone on x86_64 glibc, or from the
    /// pthread_create uprobe; 0 if unknown).
    pub pthread: u64,
    /// Creation site: return address of the call that created it, from the
    /// unwound creation stack (or the pthread_create uprobe); 0 if unknown.
    pub create_site: u64,
    /// Its creation stack: an index into `Process::create_stacks`.
    pub create_stack: Option<usize>,
    /// Created detached, or detached later (pthread_detach).
    pub detached: bool,
    /// Known to be joined: a join waited for it, its descriptor says so,
    /// or the pthread_join uprobe saw it.
    pub joined: bool,
    /// Joined by this thread, when known.
    pub joined_by: Option<Tid>,
    /// Its glibc descriptor was freed or reused: it was joined or detached
    /// (which one is not known).
    pub released: bool,
    /// Its descriptor was read at the process's exit_group and showed it
    /// neither joined nor detached.
    pub unjoined_at_exit: bool,
    /// Ended through pthread_exit rather than by returning.
    pub called_pthread_exit: bool,
    /// Ended by the process's exit (exit_group, fatal signal), not by itself.
    pub ended_by_group_exit: bool,
    /// Has not run for a while (see `Event::ThreadStuck`).
    pub stuck: Option<Stuck>,
    /// Its stacks, last taken at the given time.
    pub stack: Option<StackSnap>,
    /// Its CPython `threading` name, if any.
    pub py_name: Option<String>,
}

/// A lock-order edge as first seen (deep tier).
#[derive(Clone, Debug, Serialize)]
pub struct LockEdgeInfo {
    pub first_ns: u64,
    pub tid: Tid,
    pub from_kind: AcqKind,
    pub to_kind: AcqKind,
    pub from_site: u64,
    pub to_site: u64,
    pub frames: Vec<crate::vocab::frames::Frame>,
    /// The outermost lock held at every observation (0: none).
    pub gate: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct StackSnap {
    pub ts_ns: u64,
    pub frames: Vec<crate::vocab::frames::Frame>,
    pub python: Vec<crate::vocab::frames::PyFrame>,
    /// See `Event::Stack`.
    pub python_entry: Vec<bool>,
    pub owns_gil: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Stuck {
    /// When it last ran.
    pub since_ns: u64,
    /// The syscall it is blocked in (None: not in a syscall).
    pub syscall: Option<i64>,
    pub wchan: String,
}

impl Thread {
    pub fn name(&self) -> &str {
        self.names.last().map(|(_, n)| n.as_str()).unwrap_or("")
    }

    /// Records a name taken at `ts_ns`. Kernel records can arrive after a
    /// later name read from memory (a Python thread name): keep time order.
    fn rename(&mut self, ts_ns: u64, name: &str) {
        let pos = self.names.partition_point(|(t, _)| *t <= ts_ns);
        let before = pos.checked_sub(1).map(|i| self.names[i].1.as_str());
        if before != Some(name) {
            self.names.insert(pos, (ts_ns, name.to_string()));
        }
    }

    pub fn alive(&self) -> bool {
        self.exit_ns.is_none()
    }
}

/// Describes a raw exit code the way a shell would.
pub fn describe_exit(code: i32) -> String {
    let sig = code & 0x7f;
    if sig != 0 {
        let core = if code & 0x80 != 0 {
            " (core dumped)"
        } else {
            ""
        };
        format!("signal {sig}{core}")
    } else {
        format!("{}", (code >> 8) & 0xff)
    }
}

/// Completed waits on one futex word, as the kernel aggregated them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LockStat {
    pub uaddr: u64,
    pub op: u32,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

/// A wait the kernel reported at its end (long, or with an outcome that
/// matters such as EDEADLK), with its outcome.
#[derive(Clone, Debug, Serialize)]
pub struct LongWait {
    pub tid: Tid,
    pub wait: Wait,
    pub end_ns: u64,
    pub ret: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Process {
    pub tgid: u32,
    pub cmdline: Vec<String>,
    pub exe: Option<String>,
    /// When the process started, in ns since boot (/proc/PID/stat); with
    /// `tgid` it names the process among all of one boot.
    pub start_time_ns: Option<u64>,
    /// Attached to a running process (rather than started by `run`).
    pub attached: bool,
    pub observed_from_ns: u64,
    /// When the running image began (the last exec seen), if one was seen.
    pub exec_ns: Option<u64>,
    pub observed_to_ns: Option<u64>,
    pub exit_status: Option<i32>,
    /// Every thread ever seen, in order of first sight (TIDs can be reused).
    pub threads: Vec<Thread>,
    #[serde(skip)]
    live: HashMap<Tid, usize>,
    /// Indexes into `threads` of those not known to have exited, in order:
    /// per-scan work walks these, not every thread a churning program made.
    #[serde(skip)]
    alive: BTreeSet<usize>,
    /// Every distinct `create_site` of its threads (symbolized once each).
    #[serde(skip)]
    create_sites: BTreeSet<u64>,
    /// The latest `exit_ns` of any of its threads (0: none exited).
    #[serde(skip)]
    last_exit_ns: u64,
    pub locks: BTreeMap<u64, LockStat>,
    /// Completed waits on join words (a thread's CHILD_CLEARTID word, which
    /// pthread_join waits on until the thread ends): waits for a thread,
    /// not for a lock, so kept out of `locks`.
    pub joins: BTreeMap<u64, LockStat>,
    /// Every CHILD_CLEARTID address its threads were created with, or
    /// that a join of one was seen waiting on.
    #[serde(skip)]
    join_words: HashSet<u64>,
    pub long_waits: Vec<LongWait>,
    /// Deep tier: lock-order edges, current lock owners, locks held at
    /// thread exit, per-lock profiles.
    pub lock_edges: BTreeMap<EdgeId, LockEdgeInfo>,
    pub lock_owners: HashMap<u64, (Tid, AcqKind)>,
    pub exit_held: Vec<(Tid, u64, Vec<HeldLock>)>,
    pub lock_profiles: BTreeMap<(u64, u32), (AcqKind, LockProfile)>,
    /// `attach`: locks held since before observation began, by address.
    pub held_at_attach: BTreeMap<u64, HeldAtAttach>,
    /// PI lock attempts the kernel refused with EDEADLK: (tid, wait, when).
    pub pi_edeadlk: Vec<(Tid, Wait, u64)>,
    /// Finished waits that were seen (for timelines), oldest first, bounded.
    pub history: History,
    /// Distinct creation stacks (return addresses, site first); threads
    /// point into it (most threads share a few).
    pub create_stacks: Vec<Vec<u64>>,
    #[serde(skip)]
    stack_ids: HashMap<Vec<u64>, usize>,
    /// pthread_t -> the newest thread that had it (descriptors are reused).
    #[serde(skip)]
    by_pthread: HashMap<u64, usize>,
    /// The last Python view of a CPython process.
    pub python: Option<crate::vocab::python::PyView>,
    /// Names of the Python locks any view named, by object and futex word
    /// address: a view lists only the locks waited for or held when read.
    #[serde(skip)]
    pub py_lock_names: HashMap<u64, String>,
    /// Event loop threads' stretches outside epoll_wait.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loop_stalls: Vec<event_loop::LoopStall>,
    /// The first thread seen in epoll_wait, and when: its loop was watched.
    #[serde(skip)]
    pub loop_seen: Option<(Tid, u64)>,
    /// GIL and lock accounting of a CPython process (the latest tally).
    pub gil: Option<crate::vocab::gil::GilTally>,
    /// The hang watchdog found no thread of the watched tree running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_progress: Option<NoProgress>,
    /// Its file-backed mappings as last recorded (shared.rs keys futexes
    /// in MAP_SHARED memory by them).
    #[serde(skip)]
    pub maps: Vec<crate::vocab::frames::MapEntry>,
    /// Lock owners that are threads of processes not observed, by TID.
    #[serde(skip)]
    pub foreign: HashMap<Tid, shared::ForeignProcess>,
}

/// What the hang watchdog saw (see `Event::NoProgress`).
#[derive(Clone, Debug, Serialize)]
pub struct NoProgress {
    /// No thread has run since then.
    pub since_ns: u64,
    /// When the watchdog fired.
    pub at_ns: u64,
    pub blocked: Vec<crate::event::BlockedIn>,
}

/// A finished wait that slept long enough to be seen by the wait-table
/// scan or to be reported by the kernel. Shorter waits exist only in the
/// kernel's per-lock totals (`locks`).
#[derive(Clone, Debug, Serialize)]
pub struct PastWait {
    pub tid: Tid,
    pub start_ns: u64,
    pub end_ns: u64,
    /// What it waited for and who held it, as classified when it ended.
    pub target: classify::Target,
    pub op: u32,
    /// The syscall result when the kernel reported it.
    pub ret: Option<i64>,
    /// It began before observation: `start_ns` is when it was first seen.
    pub before_observation: bool,
}

/// A lock held since before `attach`: its holder was never seen taking it.
#[derive(Clone, Debug, Serialize)]
pub struct HeldAtAttach {
    pub first_ns: u64,
    pub kind: classify::LockKind,
    /// From the lock's memory (mutex `__owner`, rwlock writer, RLock owner).
    pub holder: Option<Tid>,
    /// Threads seen waiting for it, in order.
    pub waiters: Vec<Tid>,
    pub evidence: crate::event::HeldEvidence,
}

/// An interval in which a thread is known to have held a lock.
#[derive(Clone, Debug, Serialize)]
pub struct Hold {
    pub lock: u64,
    pub tid: Tid,
    pub kind: AcqKind,
    pub from_ns: u64,
    /// None: still held when last seen.
    pub to_ns: Option<u64>,
}

/// Bounded history for timelines: the oldest entries go first.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    pub waits: VecDeque<PastWait>,
    pub waits_dropped: u64,
    /// Deep tier: lock owners as the uprobes reported them.
    pub holds: VecDeque<Hold>,
    pub holds_dropped: u64,
}

/// Entries of each history list kept per process.
pub const HISTORY_MAX: usize = 100_000;

impl History {
    fn push_wait(&mut self, w: PastWait) {
        // The kernel's report of a wait the scan already ended: one entry.
        if let Some(last) = self
            .waits
            .iter_mut()
            .rev()
            .take(64)
            .find(|x| x.tid == w.tid && x.start_ns == w.start_ns)
        {
            last.end_ns = last.end_ns.max(w.end_ns);
            last.ret = last.ret.or(w.ret);
            return;
        }
        if self.waits.len() >= HISTORY_MAX {
            self.waits.pop_front();
            self.waits_dropped += 1;
        }
        self.waits.push_back(w);
    }

    fn owner(&mut self, lock: u64, owner: Option<Tid>, kind: AcqKind, ts_ns: u64) {
        if let Some(h) = self
            .holds
            .iter_mut()
            .rev()
            .find(|h| h.lock == lock && h.to_ns.is_none())
        {
            if Some(h.tid) == owner {
                return;
            }
            h.to_ns = Some(ts_ns);
        }
        if let Some(tid) = owner {
            if self.holds.len() >= HISTORY_MAX {
                self.holds.pop_front();
                self.holds_dropped += 1;
            }
            self.holds.push_back(Hold {
                lock,
                tid,
                kind,
                from_ns: ts_ns,
                to_ns: None,
            });
        }
    }

    fn held_until_exit(&mut self, l: &HeldLock, tid: Tid, exit_ns: u64) {
        if self.holds.len() >= HISTORY_MAX {
            self.holds.pop_front();
            self.holds_dropped += 1;
        }
        self.holds.push_back(Hold {
            lock: l.lock,
            tid,
            kind: l.kind,
            from_ns: l.acquired_ns.min(exit_ns),
            to_ns: Some(exit_ns),
        });
    }

    fn ended(&mut self, p: &Process, tid: Tid, w: &Wait, end_ns: u64, ret: Option<i64>) {
        self.push_wait(PastWait {
            tid,
            start_ns: w.start_ns,
            end_ns,
            target: classify::classify(w, p),
            op: w.op,
            ret,
            before_observation: w.origin == crate::event::WaitOrigin::Snapshot,
        });
    }
}

impl Process {
    /// The process's name: its main thread's, as last seen (its first
    /// thread's when the main thread was never seen).
    pub fn comm(&self) -> Option<&str> {
        let newest_leader = self.threads.iter().rev().find(|t| t.tid == self.tgid);
        newest_leader
            .or(self.threads.first())
            .map(Thread::name)
            .filter(|n| !n.is_empty())
    }

    fn new(tgid: u32, ts_ns: u64) -> Self {
        Process {
            tgid,
            observed_from_ns: ts_ns,
            exec_ns: None,
            ..Default::default()
        }
    }

    pub fn thread(&self, tid: Tid) -> Option<&Thread> {
        self.live.get(&tid).map(|&i| &self.threads[i])
    }

    fn thread_mut(&mut self, tid: Tid) -> Option<&mut Thread> {
        self.live.get(&tid).map(|&i| &mut self.threads[i])
    }

    /// Threads not known to have exited.
    pub fn live_threads(&self) -> impl Iterator<Item = &Thread> {
        self.alive.iter().map(|&i| &self.threads[i])
    }

    /// The distinct creation sites of its threads.
    pub fn create_sites(&self) -> impl Iterator<Item = u64> + '_ {
        self.create_sites.iter().copied()
    }

    fn set_create_site(&mut self, i: usize, site: u64) {
        self.threads[i].create_site = site;
        if site != 0 {
            self.create_sites.insert(site);
        }
    }

    /// Thread `tid` (its newest record; made if unknown) ended at `ts_ns`.
    fn end_thread(&mut self, tid: Tid, ts_ns: u64) -> &mut Thread {
        self.ensure_thread(tid, ts_ns);
        let i = self.live[&tid];
        self.alive.remove(&i);
        self.last_exit_ns = self.last_exit_ns.max(ts_ns);
        let t = &mut self.threads[i];
        t.exit_ns = Some(ts_ns);
        t
    }

    /// The latest end of any of its threads (0: none ended).
    pub fn last_exit_ns(&self) -> u64 {
        self.last_exit_ns
    }

    /// Adds a thread, retiring an exited one that had the same TID.
    fn add_thread(&mut self, t: Thread) -> &mut Thread {
        let tid = t.tid;
        if let Some(&i) = self.live.get(&tid)
            && self.threads[i].alive()
        {
            // Already known (e.g. seeded from /proc and then reported
            // by the kernel): keep the first record, fill gaps.
            let old = &mut self.threads[i];
            old.parent_tid = old.parent_tid.or(t.parent_tid);
            old.clone_flags = old.clone_flags.or(t.clone_flags);
            if old.child_tid_addr == 0 && t.child_tid_addr != 0 {
                old.child_tid_addr = t.child_tid_addr;
                self.join_words.insert(t.child_tid_addr);
            }
            old.start_ns = old.start_ns.or(t.start_ns);
            return &mut self.threads[i];
        }
        let (site, alive) = (t.create_site, t.alive());
        if t.child_tid_addr != 0 {
            self.join_words.insert(t.child_tid_addr);
        }
        self.threads.push(t);
        let i = self.threads.len() - 1;
        self.live.insert(tid, i);
        if alive {
            self.alive.insert(i);
        }
        self.set_create_site(i, site);
        &mut self.threads[i]
    }

    fn ensure_thread(&mut self, tid: Tid, ts_ns: u64) -> &mut Thread {
        if self.thread(tid).is_none() {
            let tgid = self.tgid;
            self.add_thread(Thread {
                tid,
                tgid,
                names: vec![(ts_ns, String::new())],
                parent_tid: None,
                clone_flags: None,
                child_tid_addr: 0,
                start_ns: None,
                exit_ns: None,
                exit_code: None,
                preexisting: true,
                wait: None,
                ..Default::default()
            });
        }
        self.thread_mut(tid).expect("just added")
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Model {
    pub processes: BTreeMap<u32, Process>,
    /// Data symbols of lock addresses: (tgid, addr) -> name.
    #[serde(skip)]
    pub symbols: HashMap<(u32, u64), String>,
    /// Function names of code addresses (creation sites).
    #[serde(skip)]
    pub code_symbols: HashMap<(u32, u64), String>,
    pub drops: Drops,
    pub first_ns: Option<u64>,
    pub last_ns: u64,
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn process(&self, tgid: u32) -> Option<&Process> {
        self.processes.get(&tgid)
    }

    fn proc_mut(&mut self, tgid: u32, ts_ns: u64) -> &mut Process {
        self.processes
            .entry(tgid)
            .or_insert_with(|| Process::new(tgid, ts_ns))
    }

    /// The name of a thread as last known, for any process.
    pub fn thread_name(&self, tgid: u32, tid: Tid) -> Option<&str> {
        self.process(tgid)?.thread(tid).map(Thread::name)
    }

    pub fn apply(&mut self, ev: &Event) {
        if let Some(ts) = ev.ts_ns() {
            self.first_ns.get_or_insert(ts);
            self.last_ns = self.last_ns.max(ts);
        }
        match ev {
            Event::Start {
                ts_ns,
                tgid,
                cmdline,
                attached,
                exe,
                start_time_ns,
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                p.cmdline = cmdline.clone();
                if exe.is_some() {
                    p.exe = exe.clone();
                }
                p.start_time_ns = p.start_time_ns.or(*start_time_ns);
                p.attached = *attached;
                p.observed_from_ns = *ts_ns;
            }
            Event::Exec {
                ts_ns,
                tgid,
                tid,
                old_tid,
                filename,
                name,
                ..
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                p.exe = Some(filename.clone());
                p.exec_ns = Some(*ts_ns);
                if old_tid != tid {
                    // A non-leader thread exec'd: it takes over the leader's TID.
                    if p.thread(*old_tid).is_some_and(Thread::alive) {
                        p.end_thread(*old_tid, *ts_ns);
                    }
                }
                let t = p.ensure_thread(*tid, *ts_ns);
                t.rename(*ts_ns, name);
            }
            Event::Drops { drops, .. } => self.drops = *drops,
            Event::Scan { .. } => {}
            // For the symbolizer (session, replay) and shared futex keys.
            Event::Mappings { tgid, maps, .. } => {
                if let Some(p) = self.processes.get_mut(tgid) {
                    p.maps = maps.clone();
                }
            }
            Event::ForeignThread {
                tgid,
                tid,
                owner_tgid,
                name,
                comm,
                exe,
                ..
            } => {
                if let Some(p) = self.processes.get_mut(tgid) {
                    p.foreign.insert(
                        *tid,
                        shared::ForeignProcess {
                            pid: *owner_tgid,
                            name: name.clone(),
                            comm: comm.clone(),
                            exe: exe.clone(),
                        },
                    );
                }
            }
            Event::End {
                ts_ns,
                tgid,
                exit_status,
            } => {
                let p = self.proc_mut(*tgid, *ts_ns);
                p.observed_to_ns.get_or_insert(*ts_ns);
                if exit_status.is_some() {
                    p.exit_status = *exit_status;
                }
            }
            Event::ThreadSeen { .. }
            | Event::ThreadNew { .. }
            | Event::CreationStack { .. }
            | Event::JoinWait { .. }
            | Event::JoinState { .. }
            | Event::ThreadExit { .. }
            | Event::ThreadRename { .. }
            | Event::Pthread { .. }
            | Event::ThreadStuck { .. }
            | Event::NoProgress { .. }
            | Event::ThreadResumed { .. }
            | Event::Stack { .. } => self.apply_thread(ev),
            Event::WaitBegin { .. }
            | Event::WaitEnd { .. }
            | Event::WaitDone { .. }
            | Event::LockStats { .. }
            | Event::WaitWords { .. }
            | Event::Symbol { .. }
            | Event::LockEdge { .. }
            | Event::EdgeGates { .. }
            | Event::LockOwner { .. }
            | Event::ExitHeld { .. }
            | Event::HeldAtAttach { .. }
            | Event::LockProfile { .. }
            | Event::CodeSymbol { .. } => self.apply_wait(ev),
            Event::PyState { .. }
            | Event::LoopBlocked { .. }
            | Event::LoopSeen { .. }
            | Event::PyGil { .. }
            | Event::PyThreadName { .. } => self.apply_python(ev),
        }
    }
}

mod apply_python;
mod apply_threads;
mod apply_waits;
pub mod classify;
pub mod shared;
#[cfg(test)]
mod tests;
