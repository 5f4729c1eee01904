//! A waiter on a lock nobody will unlock: its recorded owner is not a live
//! thread of the process (it exited, or the lock was inherited across fork
//! from another process's thread), or it is a Python lock that is locked
//! while no thread of the process holds it. An owner that is a thread of
//! another process sharing the lock's memory is no orphan: that is an edge
//! of the cross-process graph (cross_process.rs).

use super::{Ctx, Detail, Detector, Finding, FindingKind};
use crate::{
    event::Tid,
    graph::{Holder, LockKind, WaitNode},
    model::{Process, shared::Foreign},
    vocab::python::{How, PyLockKind},
};

pub struct OrphanedLock;

/// The thread of another process whose lock the waiter's copy is.
#[derive(Clone, Debug, PartialEq)]
pub struct Inherited {
    pub pid: u32,
    pub comm: Option<String>,
    pub tid: Tid,
    pub name: String,
    /// That process is the waiter's parent.
    pub parent: bool,
    /// Where that thread took it ("file.py:12"), when known.
    pub at: Option<String>,
}

impl Inherited {
    fn of(f: &Foreign) -> Inherited {
        Inherited {
            pid: f.process.tgid,
            comm: f.process.comm().map(str::to_string),
            tid: f.thread.tid,
            name: f.thread.name().to_string(),
            parent: f.parent,
            at: None,
        }
    }
}

impl Detector for OrphanedLock {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let mut out = Vec::new();
        for w in cx.graph.waits.values() {
            let found = match w.target.holder {
                Holder::Gone(owner) if w.target.kind.has_owner() => native(cx, w, owner),
                Holder::Thread(_) | Holder::Readers => None,
                _ => python(cx, w),
            };
            let Some(detail) = found else { continue };
            let owner = match &detail {
                Detail::OrphanedLock { owner, .. } => owner.unwrap_or(0),
                _ => 0,
            };
            out.push(Finding {
                kind: FindingKind::OrphanedLock,
                tgid: cx.process.tgid,
                detected_ns: cx.now_ns,
                detail,
                threads: vec![cx.thread(w.tid)],
                locks: vec![cx.lock(w.target.kind, w.target.lock)],
                cycle: Vec::new(),
                tasks: Vec::new(),
                key: format!(
                    "orphan:{}:{}:{:x}:{}",
                    cx.process.tgid, w.tid, w.target.lock, owner
                ),
            });
        }
        out
    }
}

/// A lock word naming `owner`, no live thread of this process.
fn native(cx: &Ctx, w: &WaitNode, owner: Tid) -> Option<Detail> {
    let foreign = cx
        .model
        .foreign_owner(cx.process, w.target.lock, w.op, owner);
    if foreign.is_some_and(|f| f.shared) {
        // A thread that can release it: cross_process.rs follows it.
        return None;
    }
    let shareable = cx.process.shareable(w.target.lock, w.op);
    let mine = cx
        .process
        .threads
        .iter()
        .rev()
        .find(|t| t.tid == owner && t.exit_ns.is_some());
    // In shared memory, the owner may have been another observed process's.
    let theirs = || {
        let others = cx
            .model
            .processes
            .values()
            .filter(|q| q.tgid != cx.process.tgid);
        others
            .flat_map(|q| q.threads.iter().rev())
            .find(|t| t.tid == owner && t.exit_ns.is_some())
    };
    let theirs = mine.is_none().then(theirs).flatten().filter(|_| shareable);
    if theirs.is_some() && cx.covered.contains(&(cx.process.tgid, w.tid)) {
        // Already in a finding (a cycle whose processes were killed): the
        // owner's death is its consequence, not news.
        return None;
    }
    let exited = mine.or(theirs);
    // A live thread of a process not observed (not a reused TID of one
    // seen exiting).
    let elsewhere = cx
        .process
        .foreign
        .get(&owner)
        .filter(|_| foreign.is_none() && exited.is_none());
    if elsewhere.is_some() && shareable {
        return None;
    }
    let leader = cx.process.threads.iter().find(|t| t.tid == cx.process.tgid);
    let elsewhere = elsewhere.map(|e| Inherited {
        pid: e.pid,
        comm: Some(e.comm.clone()),
        tid: owner,
        name: e.name.clone(),
        parent: leader.and_then(|t| t.parent_tid) == Some(e.pid),
        at: None,
    });
    Some(Detail::OrphanedLock {
        owner: Some(owner),
        owner_exited: exited.map(|t| t.name().to_string()),
        // Only an ancestor's lock can be copied by fork (else the TID was
        // reused by an unrelated process).
        inherited: foreign
            .filter(|f| f.ancestor)
            .as_ref()
            .map(Inherited::of)
            .or(elsewhere.filter(|e| e.parent)),
        alone: false,
    })
}

/// A Python `threading.Lock` waited for that no thread of the process
/// holds: nobody can release it when the parent held it at fork (same
/// object address in the parent, held there) or no other thread is left.
fn python(cx: &Ctx, w: &WaitNode) -> Option<Detail> {
    if !matches!(
        w.target.kind,
        LockKind::PyLock | LockKind::Lock | LockKind::Semaphore | LockKind::Unknown
    ) {
        return None;
    }
    let view = cx.process.python.as_ref()?;
    let pw = view.thread(w.tid)?.wait.as_ref()?;
    if pw.kind != PyLockKind::Lock || view.holder(pw.lock).is_some() {
        return None;
    }
    let inherited = cx
        .model
        .parent_of(cx.process)
        .and_then(|pp| held_in(pp, pw.lock));
    // `with` has no timeout; an acquire(timeout=...) alone would return.
    let alone = cx.process.live_threads().count() == 1 && pw.how == How::With;
    if inherited.is_none() && !alone {
        return None;
    }
    // No owner: the same finding (one key) whether or not the parent was read.
    Some(Detail::OrphanedLock {
        owner: None,
        owner_exited: None,
        inherited,
        alone,
    })
}

/// The thread of `parent` that holds the Python lock at `lock` (a forked
/// child has the parent's objects at the same addresses).
fn held_in(parent: &Process, lock: u64) -> Option<Inherited> {
    let view = parent.python.as_ref()?;
    let tid = view.holder(lock)?;
    let t = parent.thread(tid).filter(|t| t.alive())?;
    let at = view.thread(tid).and_then(|pt| {
        let h = pt.held.iter().find(|h| h.lock == lock)?;
        let f = pt.frames.get(h.frame?)?;
        Some(format!("{}:{}", f.file, h.line.unwrap_or(f.line)))
    });
    Some(Inherited {
        pid: parent.tgid,
        comm: parent.comm().map(str::to_string),
        tid,
        name: view
            .thread(tid)
            .and_then(|pt| pt.name.clone())
            .unwrap_or_else(|| t.name().to_string()),
        parent: true,
        at,
    })
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    let (tid, tname) = first(f);
    let Detail::OrphanedLock {
        owner,
        owner_exited,
        inherited,
        alone,
    } = &f.detail
    else {
        return String::new();
    };
    let why = match (owner, owner_exited, inherited) {
        (_, _, Some(i)) => {
            let whose = if i.parent { "its parent" } else { "process" };
            let at = i
                .at
                .as_ref()
                .map(|a| format!(" (taken at {})", escape(a)))
                .unwrap_or_default();
            format!(
                "inherited locked across fork: held in {whose} {} \"{}\" by thread {} \"{}\"{at}; no thread of this process will unlock its copy",
                i.pid,
                escape(i.comm.as_deref().unwrap_or("?")),
                i.tid,
                escape(&i.name)
            )
        }
        (Some(owner), Some(n), _) => {
            format!("owner thread {owner} \"{}\" exited holding it", escape(n))
        }
        (Some(owner), None, _) => format!(
            "owner thread {owner} is not a thread of this process (exited before observation, or the lock was inherited across fork)"
        ),
        (None, _, _) if *alone => "it is locked, no thread of this process holds it and no other thread is left to release it (abandoned, or inherited locked across fork)".into(),
        (None, _, _) => "it is locked and no thread of this process holds it".into(),
    };
    format!(
        "thread {tid} \"{tname}\" waits for {}: {why}",
        first_lock(f)
    )
}
