//! Locks across processes. The kernel keys a futex in MAP_SHARED memory by
//! the object behind it (inode and offset; anonymous MAP_SHARED memory is a
//! shmem inode), so one lock sits at a different address in each process
//! that maps it; any other futex belongs to one address space. The owner
//! TID in a lock word that is no thread of the waiter's process is another
//! process's thread: it can release the lock only when the lock is in
//! memory both map, else the waiter holds a copy inherited across fork
//! that nobody will ever unlock.

use serde::Serialize;

use super::{Model, Process, Thread};
use crate::{
    event::{Tid, futex},
    vocab::frames::MapEntry,
};

/// A futex word as the kernel keys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "memory")]
pub enum FutexKey {
    /// In one address space.
    Private { tgid: u32, addr: u64 },
    /// In a shared object: its device, inode and the word's offset in it.
    Shared {
        dev: (u32, u32),
        inode: u64,
        offset: u64,
    },
}

impl Process {
    /// The recorded file mapping that covers `addr`.
    pub fn mapping_of(&self, addr: u64) -> Option<&MapEntry> {
        self.maps.iter().find(|m| m.start <= addr && addr < m.end)
    }

    /// The key of the futex word at `addr` waited on with `op`.
    pub fn futex_key(&self, addr: u64, op: u32) -> FutexKey {
        match self.mapping_of(addr).filter(|m| m.shared) {
            Some(m) if !futex::is_private(op) => FutexKey::Shared {
                dev: m.dev,
                inode: m.inode,
                offset: m.offset + (addr - m.start),
            },
            _ => FutexKey::Private {
                tgid: self.tgid,
                addr,
            },
        }
    }

    /// Where this process maps the shared word `key`, if it does.
    pub fn addr_of(&self, key: FutexKey) -> Option<u64> {
        let FutexKey::Shared { dev, inode, offset } = key else {
            return None;
        };
        self.maps.iter().find_map(|m| {
            let in_it = m.shared
                && m.dev == dev
                && m.inode == inode
                && offset >= m.offset
                && offset - m.offset < m.end - m.start;
            in_it.then(|| m.start + (offset - m.offset))
        })
    }

    /// The mapping's path, for a shared key (data: escape it to print).
    pub fn object_name(&self, key: FutexKey) -> Option<String> {
        let a = self.addr_of(key)?;
        self.mapping_of(a).map(|m| m.path.clone())
    }
}

/// The process of a lock owner that is not observed (`Event::ForeignThread`).
#[derive(Clone, Debug, PartialEq)]
pub struct ForeignProcess {
    pub pid: u32,
    /// The owner thread's name.
    pub name: String,
    pub comm: String,
    pub exe: Option<String>,
}

impl Process {
    /// Whether a lock at `lock` waited on with `op` can be released by a
    /// thread of another process: it is in memory shared with others.
    pub fn shareable(&self, lock: u64, op: u32) -> bool {
        !futex::is_private(op)
            && match self.futex_key(lock, op) {
                FutexKey::Shared { .. } => true,
                // No mapping recorded at all: only the op tells.
                FutexKey::Private { .. } => self.maps.is_empty(),
            }
    }
}

/// The owner of a lock when it is a live thread of another process.
#[derive(Clone, Copy, Debug)]
pub struct Foreign<'a> {
    pub process: &'a Process,
    pub thread: &'a Thread,
    /// The lock is in memory both processes share: that thread can release
    /// it (a wait-for edge across processes). Else the waiter's copy was
    /// inherited across fork.
    pub shared: bool,
    /// The owner's process is the waiter's parent.
    pub parent: bool,
    /// The owner's process is the waiter's parent or an earlier ancestor
    /// (a fork copies locks only from there).
    pub ancestor: bool,
}

impl Model {
    /// The live thread `tid` and its process, in any observed process.
    pub fn live_thread(&self, tid: Tid) -> Option<(&Process, &Thread)> {
        self.processes
            .values()
            .find_map(|p| Some((p, p.thread(tid).filter(|t| t.alive())?)))
    }

    /// The observed process `p` was forked from.
    pub fn parent_of(&self, p: &Process) -> Option<&Process> {
        let leader = p.threads.iter().find(|t| t.tid == p.tgid)?;
        let creator = leader.parent_tid?;
        self.processes
            .values()
            .filter(|q| q.tgid != p.tgid)
            .find(|q| q.tgid == creator || q.threads.iter().any(|t| t.tid == creator))
    }

    /// `owner`, recorded in the lock at `lock` that a thread of `p` waits
    /// on with `op`, when it is a live thread of another observed process.
    pub fn foreign_owner(
        &self,
        p: &Process,
        lock: u64,
        op: u32,
        owner: Tid,
    ) -> Option<Foreign<'_>> {
        if p.thread(owner).is_some_and(|t| t.alive()) {
            return None;
        }
        let (q, t) = self.live_thread(owner)?;
        if q.tgid == p.tgid {
            return None;
        }
        // The word names a thread of `q`, which took the lock in memory it
        // shared with `p` then (its mappings may be older than that).
        let shared = p.shareable(lock, op);
        let parent = self.parent_of(p).is_some_and(|pp| pp.tgid == q.tgid);
        let mut up = self.parent_of(p);
        let mut ancestor = false;
        for _ in 0..16 {
            let Some(a) = up else { break };
            if a.tgid == q.tgid {
                ancestor = true;
                break;
            }
            up = self.parent_of(a);
        }
        Some(Foreign {
            process: q,
            thread: t,
            shared,
            parent,
            ancestor,
        })
    }
}

impl Model {
    /// The thread of another observed process that holds the
    /// `multiprocessing` lock whose semaphore a thread of `p` waits on
    /// (futex word `uaddr`, op `op`): the view of each process names the
    /// holder among its own threads (the SemLock's `count` and `last_tid`
    /// are per process), and the semaphore is the same shared word.
    /// Returns that process, the thread, and the lock (SemLock) as that
    /// process has it (another address, unless it was copied by fork).
    pub fn mp_holder(&self, p: &Process, uaddr: u64, op: u32) -> Option<(&Process, Tid, u64)> {
        let key = p.futex_key(uaddr, op);
        if !matches!(key, FutexKey::Shared { .. }) {
            return None;
        }
        self.processes
            .values()
            .filter(|q| q.tgid != p.tgid)
            .find_map(|q| {
                let v = q.python.as_ref()?;
                v.locks.iter().find_map(|l| {
                    let (tid, n) = l.owner?;
                    let word = q.futex_key(l.word, 0);
                    (l.kind.across_processes()
                        && n > 0
                        && l.word != 0
                        && word == key
                        && q.thread(tid).is_some_and(|t| t.alive()))
                    .then_some((q, tid, l.addr))
                })
            })
    }
}
