//! What a futex wait is waiting for: the primitive behind the futex word
//! (from the op, the expected value and the memory around the word) and,
//! where the primitive records one, the thread that holds it.
//!
//! Layouts are glibc's (2.34+, x86_64/aarch64; see FACTS.md). Anything that
//! does not match a layout exactly stays an unresolved wait: a false edge
//! is worse than a missing one.

use serde::Serialize;

use crate::{
    event::{Tid, Wait, futex},
    model::Process,
};
use observer_ebpf::bindings as b;

/// Largest TID Linux can hand out (PID_MAX_LIMIT on 64-bit).
const PID_MAX_LIMIT: u32 = 4 * 1024 * 1024;
const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_WAITERS: u32 = 0x8000_0000;

// pthread_mutex_t
const MUTEX_OWNER: u64 = 8;
const MUTEX_KIND: u64 = 16;
const KIND_ROBUST: u32 = 0x10;
const KIND_PI: u32 = 0x20;
/// type (3) | robust | PI | PP | pshared | elision flags
const KIND_KNOWN_BITS: u32 = 0x3 | 0x10 | 0x20 | 0x40 | 0x80 | 0x100 | 0x200;
// pthread_rwlock_t, relative to the lock
const RW_WRPHASE: u64 = 8;
const RW_WRITERS: u64 = 12;
const RW_CUR_WRITER: u64 = 24;
const RW_WRPHASE_BIT: u32 = 1;
const RW_WRLOCKED_BIT: u32 = 2;
// pthread_cond_t: __g_signals[2] at 40, __wrefs at 36 (waiters << 3)
const COND_SIGNALS: u64 = 40;
const COND_WREFS: u64 = 36;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LockKind {
    Mutex,
    RobustMutex,
    PiMutex,
    Rwlock,
    Join,
    Condvar,
    Semaphore,
    /// A CPython `threading.Lock` (a semaphore underneath; owner from the deep tier).
    PyLock,
    /// A CPython `threading.RLock` (records its owner).
    PyRLock,
    /// A futex lock that records no owner (e.g. Rust's std Mutex).
    Lock,
    /// A `concurrent.futures.Future`'s result: the "holder" is the thread
    /// running its work item.
    Future,
    Unknown,
}

impl LockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::Mutex => "mutex",
            LockKind::RobustMutex => "robust mutex",
            LockKind::PiMutex => "PI mutex",
            LockKind::Rwlock => "rwlock",
            LockKind::Join => "join",
            LockKind::Condvar => "condvar",
            LockKind::Semaphore => "semaphore",
            LockKind::PyLock => "Python lock",
            LockKind::PyRLock => "Python RLock",
            LockKind::Lock => "futex lock",
            LockKind::Future => "future",
            LockKind::Unknown => "futex",
        }
    }

    /// Waits that end when another thread finishes its work (a join, a
    /// future's work item), not when it releases a lock.
    pub fn for_work(self) -> bool {
        matches!(self, LockKind::Join | LockKind::Future)
    }

    /// Primitives with an owner whose death leaves waiters hanging.
    pub fn has_owner(self) -> bool {
        matches!(
            self,
            LockKind::Mutex
                | LockKind::RobustMutex
                | LockKind::PiMutex
                | LockKind::Rwlock
                | LockKind::PyLock
                | LockKind::PyRLock
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "tid")]
pub enum Holder {
    /// A live thread of the process.
    Thread(Tid),
    /// The recorded owner is not a live thread of this process: it exited,
    /// or belongs to another process (a fork inherited the locked lock).
    Gone(Tid),
    /// Read-locked: readers are not recorded.
    Readers,
    /// The primitive records no owner.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    pub kind: LockKind,
    /// Address of the lock object (mutex, rwlock, condvar, semaphore) or
    /// of the futex word when the object is unknown.
    pub lock: u64,
    pub holder: Holder,
    pub owner_died: bool,
}

impl Target {
    fn unresolved(kind: LockKind, lock: u64) -> Target {
        Target {
            kind,
            lock,
            holder: Holder::Unknown,
            owner_died: false,
        }
    }
}

/// A u32 of target memory at `addr`, if the wait's copy covers it.
pub fn word(w: &Wait, addr: u64) -> Option<u32> {
    let off = addr.checked_sub(w.words_addr)? as usize;
    let b = w.words.get(off..off.checked_add(4)?)?;
    Some(u32::from_ne_bytes(b.try_into().ok()?))
}

fn holder_of(p: &Process, raw: u32) -> Option<Holder> {
    let tid = raw & FUTEX_TID_MASK;
    if tid == 0 || tid > PID_MAX_LIMIT {
        return None;
    }
    Some(if p.thread(tid).is_some_and(|t| t.alive()) {
        Holder::Thread(tid)
    } else {
        Holder::Gone(tid)
    })
}

fn sane_mutex_kind(kind: u32) -> bool {
    kind & !KIND_KNOWN_BITS == 0
}

pub fn classify(w: &Wait, p: &Process) -> Target {
    with_deep_owner(classify_futex(w, p), w, p)
}

/// Owner-less primitives get their holder from the deep tier's uprobes,
/// when they are on: a semaphore or Python lock acquired and not released.
fn with_deep_owner(mut t: Target, w: &Wait, p: &Process) -> Target {
    if t.holder != Holder::Unknown
        || !matches!(
            t.kind,
            LockKind::Semaphore | LockKind::Lock | LockKind::Unknown
        )
    {
        return t;
    }
    let key = if p.lock_owners.contains_key(&t.lock) {
        t.lock
    } else {
        w.uaddr
    };
    if let Some(&(owner, kind)) = p.lock_owners.get(&key) {
        t.lock = key;
        t.holder = holder_of(p, owner).unwrap_or(Holder::Unknown);
        t.kind = match kind {
            crate::event::AcqKind::PyLock => LockKind::PyLock,
            crate::event::AcqKind::Semaphore => LockKind::Semaphore,
            crate::event::AcqKind::Mutex => LockKind::Mutex,
            _ => t.kind,
        };
    }
    t
}

fn classify_futex(w: &Wait, p: &Process) -> Target {
    let cmd = futex::cmd(w.op);
    let u = w.uaddr;
    match cmd {
        b::OBS_FUTEX_LOCK_PI | b::OBS_FUTEX_LOCK_PI2 => {
            let Some(raw) = word(w, u) else {
                return Target::unresolved(LockKind::PiMutex, u);
            };
            let holder = holder_of(p, raw).unwrap_or(Holder::Unknown);
            Target {
                kind: LockKind::PiMutex,
                lock: u,
                holder,
                owner_died: raw & FUTEX_OWNER_DIED != 0,
            }
        }
        b::OBS_FUTEX_WAIT_REQUEUE_PI => Target::unresolved(LockKind::Condvar, u),
        b::OBS_FUTEX_WAIT => classify_wait(w, p),
        b::OBS_FUTEX_WAIT_BITSET => classify_bitset(w, p),
        _ => Target::unresolved(LockKind::Unknown, u),
    }
}

/// FUTEX_WAIT: glibc mutexes (normal, robust) and other futex locks.
fn classify_wait(w: &Wait, p: &Process) -> Target {
    let u = w.uaddr;
    let kind = word(w, u.wrapping_add(MUTEX_KIND));
    let owner = word(w, u.wrapping_add(MUTEX_OWNER));
    // Default/errorcheck/recursive/adaptive mutex: lock word 2 = locked with waiters.
    if w.val == 2 {
        if let (Some(kind), Some(owner)) = (kind, owner)
            && sane_mutex_kind(kind)
            && kind & (KIND_ROBUST | KIND_PI) == 0
            && let Some(holder) = holder_of(p, owner)
        {
            return Target {
                kind: LockKind::Mutex,
                lock: u,
                holder,
                owner_died: false,
            };
        }
        return Target::unresolved(LockKind::Lock, u);
    }
    // Robust mutex: the word is the owner's TID | FUTEX_WAITERS.
    if w.val & FUTEX_WAITERS != 0
        && kind.is_some_and(|k| sane_mutex_kind(k) && k & KIND_ROBUST != 0)
        && let Some(holder) = holder_of(p, w.val)
    {
        return Target {
            kind: LockKind::RobustMutex,
            lock: u,
            holder,
            owner_died: w.val & FUTEX_OWNER_DIED != 0,
        };
    }
    Target::unresolved(LockKind::Unknown, u)
}

/// FUTEX_WAIT_BITSET: joins, rwlocks, condvars, semaphores.
fn classify_bitset(w: &Wait, p: &Process) -> Target {
    let u = w.uaddr;
    // pthread_join: waits until the kernel clears the joined thread's TID
    // word (its clone CHILD_CLEARTID address). Recognised by the recorded
    // address, or (threads seen only in /proc) by a shared wait on a word
    // that still holds a live thread's TID.
    if let Some(t) = p.thread(w.val).filter(|t| t.alive() && w.val != 0) {
        let by_addr = t.child_tid_addr != 0 && t.child_tid_addr == u;
        let by_word =
            t.child_tid_addr == 0 && !futex::is_private(w.op) && word(w, u) == Some(t.tid);
        if by_addr || by_word {
            return Target {
                kind: LockKind::Join,
                lock: u,
                holder: Holder::Thread(t.tid),
                owner_died: false,
            };
        }
    }
    if let Some(t) = rwlock(w, p) {
        return t;
    }
    // sem_t: value (the word) then nwaiters; a waiter is counted in nwaiters.
    if w.val == 0
        && word(w, u) == Some(0)
        && word(w, u.wrapping_add(4)).is_some_and(|n| (1..1 << 20).contains(&n))
    {
        return Target::unresolved(LockKind::Semaphore, u);
    }
    // pthread_cond_t: waits on __g_signals[0|1]; __wrefs counts waiters << 3.
    for base in [
        u.wrapping_sub(COND_SIGNALS),
        u.wrapping_sub(COND_SIGNALS + 4),
    ] {
        if word(w, base.wrapping_add(COND_WREFS)).is_some_and(|r| r >> 3 >= 1 && r >> 3 < 1 << 20) {
            return Target::unresolved(LockKind::Condvar, base);
        }
    }
    Target::unresolved(LockKind::Unknown, u)
}

/// glibc rwlock: a writer blocked by a writer waits on __writers_futex (+12),
/// a reader blocked by a writer on __wrphase_futex (+8) with value 3; a
/// writer blocked by readers on __wrphase_futex with value 2.
fn rwlock(w: &Wait, p: &Process) -> Option<Target> {
    let u = w.uaddr;
    for (field, base) in [
        (RW_WRITERS, u.wrapping_sub(RW_WRITERS)),
        (RW_WRPHASE, u.wrapping_sub(RW_WRPHASE)),
    ] {
        let readers = word(w, base)?;
        let writer = word(w, base.wrapping_add(RW_CUR_WRITER)).unwrap_or(0);
        let wrlocked = readers & RW_WRLOCKED_BIT != 0;
        let wrphase = readers & RW_WRPHASE_BIT != 0;
        let holder = match (field, w.val) {
            (RW_WRITERS, 3) if wrlocked && writer != 0 => holder_of(p, writer),
            (RW_WRPHASE, 3) if wrphase && wrlocked && writer != 0 => holder_of(p, writer),
            (RW_WRPHASE, 2) if !wrphase && readers >> 3 > 0 => Some(Holder::Readers),
            _ => None,
        };
        if let Some(holder) = holder {
            return Some(Target {
                kind: LockKind::Rwlock,
                lock: base,
                holder,
                owner_died: false,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{Event, WaitOrigin},
        model::Model,
    };

    fn process(live: &[Tid]) -> Model {
        let mut m = Model::new();
        for &tid in live {
            m.apply(&Event::ThreadSeen {
                ts_ns: 1,
                tgid: 100,
                tid,
                name: format!("t{tid}"),
                parent_tid: None,
                start_ns: None,
            });
        }
        m
    }

    /// A wait on `uaddr` with memory `mem` (address -> u32) around it.
    fn wait(op: u32, val: u32, uaddr: u64, mem: &[(u64, u32)]) -> Wait {
        let base = (uaddr & !7) - 24;
        let mut words = vec![0u8; 64];
        for &(a, v) in mem {
            let off = (a - base) as usize;
            words[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        }
        Wait {
            uaddr,
            uaddr2: 0,
            op,
            val,
            start_ns: 1,
            ip: 0,
            sp: 0,
            bp: 0,
            words_addr: base,
            words,
            origin: WaitOrigin::Kernel,
        }
    }

    #[test]
    fn default_mutex_resolves_to_owner() {
        let m = process(&[100, 101]);
        let p = m.process(100).unwrap();
        let w = wait(0x80, 2, 0x1000, &[(0x1000, 2), (0x1008, 101), (0x1010, 0)]);
        assert_eq!(
            classify(&w, p),
            Target {
                kind: LockKind::Mutex,
                lock: 0x1000,
                holder: Holder::Thread(101),
                owner_died: false
            }
        );
        // owner not a live thread of the process
        let w = wait(0x80, 2, 0x1000, &[(0x1008, 555), (0x1010, 512)]);
        assert_eq!(classify(&w, p).holder, Holder::Gone(555));
    }

    #[test]
    fn glibc_internal_lock_with_a_pointer_is_not_a_mutex() {
        let m = process(&[100]);
        // _IO_lock_t keeps a pointer at +8: its low half is no TID
        let w = wait(
            0x80,
            2,
            0x1000,
            &[(0x1008, 0xf7fe_4740), (0x100c, 0x7fff), (0x1010, 0)],
        );
        assert_eq!(classify(&w, m.process(100).unwrap()).kind, LockKind::Lock);
        // insane kind word
        let w = wait(0x80, 2, 0x1000, &[(0x1008, 100), (0x1010, 0xdead_0000)]);
        assert_eq!(
            classify(&w, m.process(100).unwrap()).holder,
            Holder::Unknown
        );
    }

    #[test]
    fn pi_and_robust() {
        let m = process(&[100, 101]);
        let p = m.process(100).unwrap();
        let w = wait(0x86, 0, 0x2000, &[(0x2000, 101 | FUTEX_WAITERS)]);
        assert_eq!(classify(&w, p).holder, Holder::Thread(101));
        assert_eq!(classify(&w, p).kind, LockKind::PiMutex);
        let val = 101 | FUTEX_WAITERS | FUTEX_OWNER_DIED;
        let w = wait(0x80, val, 0x2000, &[(0x2000, val), (0x2010, KIND_ROBUST)]);
        let t = classify(&w, p);
        assert_eq!(
            (t.kind, t.holder, t.owner_died),
            (LockKind::RobustMutex, Holder::Thread(101), true)
        );
    }

    #[test]
    fn join_by_recorded_address_and_by_word() {
        let mut m = process(&[100]);
        m.apply(&Event::ThreadNew {
            ts_ns: 2,
            tgid: 100,
            creator: 100,
            tid: 102,
            child_tgid: 100,
            clone_flags: 0,
            child_tid_addr: 0x7000_02d0,
            name: "w".into(),
            pthread: 0,
            create_site: 0,
            detached: false,
        });
        let p = m.process(100).unwrap();
        let w = wait(0x109, 102, 0x7000_02d0, &[(0x7000_02d0, 102)]);
        assert_eq!(classify(&w, p).holder, Holder::Thread(102));
        assert_eq!(classify(&w, p).kind, LockKind::Join);
        // seeded thread: no recorded address, the word holds its TID
        let m = process(&[100, 103]);
        let w = wait(0x109, 103, 0x9000_02d0, &[(0x9000_02d0, 103)]);
        assert_eq!(classify(&w, m.process(100).unwrap()).kind, LockKind::Join);
        // a private wait on such a word is not a join
        let w = wait(0x189, 103, 0x9000_02d0, &[(0x9000_02d0, 103)]);
        assert_ne!(classify(&w, m.process(100).unwrap()).kind, LockKind::Join);
    }

    #[test]
    fn rwlock_writer_blocked_by_writer() {
        let m = process(&[100, 101]);
        let base = 0x3000;
        let w = wait(
            0x189,
            3,
            base + 12,
            &[
                (base, RW_WRLOCKED_BIT | RW_WRPHASE_BIT),
                (base + 12, 3),
                (base + 24, 101),
            ],
        );
        assert_eq!(
            classify(&w, m.process(100).unwrap()),
            Target {
                kind: LockKind::Rwlock,
                lock: base,
                holder: Holder::Thread(101),
                owner_died: false
            }
        );
    }

    #[test]
    fn semaphore_and_condvar_are_unresolved() {
        let m = process(&[100]);
        let p = m.process(100).unwrap();
        let w = wait(0x189, 0, 0x4000, &[(0x4000, 0), (0x4004, 1)]);
        assert_eq!(
            classify(&w, p),
            Target::unresolved(LockKind::Semaphore, 0x4000)
        );
        let cond = 0x5000;
        let w = wait(0x189, 0, cond + 40, &[(cond + 36, 8), (cond + 40, 0)]);
        assert_eq!(classify(&w, p), Target::unresolved(LockKind::Condvar, cond));
    }
}
