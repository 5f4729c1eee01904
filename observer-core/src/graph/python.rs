//! Python-level wait-for edges: what the Python view (read from the
//! interpreter's memory) says a blocked thread waits for, in the same graph
//! as native edges.

use super::classify::{Holder, LockKind, Target};
use crate::{
    event::{Tid, Wait},
    model::Process,
    vocab::python::{PyLockKind, PyView},
};

pub fn lock_kind(k: PyLockKind) -> LockKind {
    match k {
        PyLockKind::Lock => LockKind::PyLock,
        PyLockKind::RLock => LockKind::PyRLock,
        PyLockKind::MpLock | PyLockKind::MpRLock => LockKind::MpLock,
    }
}

fn live(p: &Process, tid: Tid) -> Holder {
    if p.thread(tid).is_some_and(|t| t.alive()) {
        Holder::Thread(tid)
    } else {
        Holder::Gone(tid)
    }
}

/// The target of `tid`'s futex wait `w` once the Python view is known;
/// `native` is what the futex alone says (kept when Python says nothing).
pub fn refine(view: &PyView, p: &Process, tid: Tid, w: &Wait, native: Target) -> Target {
    if view.unsupported.is_some() {
        return native;
    }
    let t = view.thread(tid);
    // A future's result: the thread running its work item completes it.
    if let Some(f) = t.and_then(|t| t.future.as_ref())
        && (f.runner.is_some() || f.source.is_some())
    {
        // Known source, no runner: queued in a pool, or a coroutine whose
        // loop thread is not known; nobody holds it yet.
        return Target {
            kind: LockKind::Future,
            lock: f.addr,
            holder: f.runner.map_or(Holder::Unknown, |r| live(p, r)),
            owner_died: false,
        };
    }
    if let Some(pw) = t.and_then(|t| t.wait.as_ref())
        && pw.kind.across_processes()
    {
        // A thread of this process, else one of another process sharing
        // the semaphore (cross_process.rs looks there); what the deep tier
        // knows of the sem_t is only the last taker here.
        let holder = match view.holder(pw.lock) {
            Some(h) if h == tid && pw.kind == PyLockKind::MpRLock => Holder::Unknown,
            Some(h) => live(p, h),
            None => Holder::Unknown,
        };
        return Target {
            kind: lock_kind(pw.kind),
            lock: pw.lock,
            holder,
            owner_died: false,
        };
    }
    if let Some(pw) = t.and_then(|t| t.wait.as_ref()) {
        let holder = match view.holder(pw.lock) {
            Some(h) if h == tid && pw.kind == PyLockKind::RLock => Holder::Unknown,
            Some(h) => live(p, h),
            // The deep tier may know the owner of the semaphore.
            None if native.holder != Holder::Unknown => native.holder,
            None => Holder::Unknown,
        };
        return Target {
            kind: lock_kind(pw.kind),
            lock: pw.lock,
            holder,
            owner_died: false,
        };
    }
    if let Some(j) = t.and_then(|t| t.joins) {
        return Target {
            kind: LockKind::Join,
            lock: w.uaddr,
            holder: live(p, j),
            owner_died: false,
        };
    }
    // A thread (native code too) sleeping on a Python lock's futex word.
    if native.holder == Holder::Unknown
        && let Some(l) = view.lock_by_word(w.uaddr)
    {
        return Target {
            kind: lock_kind(l.kind),
            lock: l.addr,
            holder: view.holder(l.addr).map_or(Holder::Unknown, |h| live(p, h)),
            owner_died: false,
        };
    }
    native
}

#[cfg(test)]
mod tests {
    use crate::{
        event::{Event, Wait, WaitOrigin},
        graph::{Holder, LockKind, WaitForGraph},
        model::Model,
        vocab::frames::PyFrame,
        vocab::python::{How, PyHeld, PyLockInfo, PyLockKind, PyThreadView, PyView, PyWait},
    };

    fn wait(uaddr: u64) -> Wait {
        Wait {
            uaddr,
            uaddr2: 0,
            op: 0x189,
            val: 0,
            start_ns: 1,
            ip: 0,
            sp: 0,
            bp: 0,
            words_addr: 0,
            words: Vec::new(),
            origin: WaitOrigin::Snapshot,
        }
    }

    fn thread(tid: u32, waits: Option<(u64, PyLockKind)>, held: &[u64]) -> PyThreadView {
        PyThreadView {
            tid,
            ident: 0x7000 + u64::from(tid),
            name: Some(format!("t{tid}")),
            frames: vec![PyFrame {
                function: "work".into(),
                file: "/w.py".into(),
                line: 3,
            }],
            wait: waits.map(|(lock, kind)| PyWait {
                lock,
                kind,
                how: How::With,
                frame: 0,
                name: None,
            }),
            held: held
                .iter()
                .map(|&lock| PyHeld {
                    lock,
                    kind: PyLockKind::Lock,
                    frame: Some(0),
                    name: None,
                    line: None,
                })
                .collect(),
            joins: None,
            label: None,
            future: None,
        }
    }

    /// Two Python threads in ABBA plus a native thread waiting on one of
    /// the locks' semaphores: one graph, one cycle, and the native waiter
    /// resolved to the Python holder.
    #[test]
    fn python_abba_is_a_cycle_and_native_waiters_join_it() {
        let mut m = Model::new();
        for tid in [10, 11, 12, 13] {
            m.apply(&Event::ThreadSeen {
                ts_ns: 1,
                tgid: 10,
                tid,
                name: "python3".into(),
                parent_tid: None,
                start_ns: None,
            });
        }
        // Lock A at 0xa000 (sem 0x5a), lock B at 0xb000 (sem 0x5b).
        for (tid, u) in [(11, 0x5b), (12, 0x5a), (13, 0x5a)] {
            m.apply(&Event::WaitBegin {
                ts_ns: 2,
                tgid: 10,
                tid,
                wait: wait(u),
            });
        }
        let mut j = thread(10, None, &[]);
        j.joins = Some(11);
        m.apply(&Event::WaitBegin {
            ts_ns: 2,
            tgid: 10,
            tid: 10,
            wait: wait(0x77),
        });
        let view = PyView {
            version: "3.12.1".into(),
            unsupported: None,
            limited: None,
            threads: vec![
                j,
                thread(11, Some((0xb000, PyLockKind::Lock)), &[0xa000]),
                thread(12, Some((0xa000, PyLockKind::Lock)), &[0xb000]),
            ],
            locks: vec![
                PyLockInfo {
                    addr: 0xa000,
                    kind: PyLockKind::Lock,
                    name: Some("lock_a".into()),
                    word: 0x5a,
                    owner: None,
                },
                PyLockInfo {
                    addr: 0xb000,
                    kind: PyLockKind::Lock,
                    name: None,
                    word: 0x5b,
                    owner: None,
                },
            ],
            asyncio: None,
            pools: Vec::new(),
        };
        assert_eq!(view.lock_name(0xb000), "<_thread.lock at 0xb000>");
        assert_eq!(view.info(11).unwrap().holds[0].name, "lock_a");
        m.apply(&Event::PyState {
            ts_ns: 3,
            tgid: 10,
            view,
        });
        let p = m.process(10).unwrap();
        assert_eq!(p.thread(11).unwrap().name(), "t11");
        let g = WaitForGraph::build(p);
        let cycles = g.cycles();
        assert_eq!(cycles.len(), 1);
        let tids: Vec<u32> = cycles[0].iter().map(|w| w.tid).collect();
        assert_eq!(tids, vec![11, 12]);
        assert_eq!(cycles[0][0].target.kind, LockKind::PyLock);
        assert_eq!(g.waits[&13].target.holder, Holder::Thread(11));
        assert_eq!(g.waits[&13].target.lock, 0xa000);
        assert_eq!(g.waits[&10].target.kind, LockKind::Join);
        assert_eq!(g.waits[&10].target.holder, Holder::Thread(11));
    }

    /// Condition.wait parks on its waiter lock: `acquire()` once, then a
    /// second blocking `acquire()` that another thread's release ends. The
    /// deep tier saw the first one, so it names the waiter as the owner:
    /// no self-deadlock. The same wait inside the thread's own `with` on
    /// that lock is one.
    #[test]
    fn a_plain_lock_taken_by_its_own_waiter_is_a_self_deadlock_only_under_its_with() {
        for with in [false, true] {
            let mut m = Model::new();
            m.apply(&Event::ThreadSeen {
                ts_ns: 1,
                tgid: 10,
                tid: 10,
                name: "python3".into(),
                parent_tid: None,
                start_ns: None,
            });
            m.apply(&Event::WaitBegin {
                ts_ns: 2,
                tgid: 10,
                tid: 10,
                wait: wait(0x5a),
            });
            m.apply(&Event::LockOwner {
                ts_ns: 2,
                tgid: 10,
                lock: 0x5a,
                owner: Some(10),
                kind: crate::event::AcqKind::PyLock,
            });
            let mut t = thread(10, Some((0xa000, PyLockKind::Lock)), &[]);
            t.wait.as_mut().unwrap().how = How::Acquire;
            if with {
                t = thread(10, Some((0xa000, PyLockKind::Lock)), &[0xa000]);
            }
            m.apply(&Event::PyState {
                ts_ns: 3,
                tgid: 10,
                view: PyView {
                    version: "3.12.1".into(),
                    unsupported: None,
                    limited: None,
                    threads: vec![t],
                    locks: vec![PyLockInfo {
                        addr: 0xa000,
                        kind: PyLockKind::Lock,
                        name: Some("waiter".into()),
                        word: 0x5a,
                        owner: None,
                    }],
                    asyncio: None,
                    pools: Vec::new(),
                },
            });
            let g = WaitForGraph::build(m.process(10).unwrap());
            assert_eq!(g.waits[&10].target.kind, LockKind::PyLock);
            if with {
                assert_eq!(g.waits[&10].target.holder, Holder::Thread(10));
                assert_eq!(g.cycles().len(), 1);
            } else {
                assert_eq!(g.waits[&10].target.holder, Holder::Unknown);
                assert!(g.cycles().is_empty());
            }
        }
    }

    #[test]
    fn unknown_layout_keeps_the_native_view() {
        let mut m = Model::new();
        m.apply(&Event::ThreadSeen {
            ts_ns: 1,
            tgid: 10,
            tid: 10,
            name: "python3".into(),
            parent_tid: None,
            start_ns: None,
        });
        m.apply(&Event::WaitBegin {
            ts_ns: 2,
            tgid: 10,
            tid: 10,
            wait: wait(0x5a),
        });
        m.apply(&Event::PyState {
            ts_ns: 3,
            tgid: 10,
            view: PyView {
                version: "3.14.0".into(),
                unsupported: Some("layout not known".into()),
                ..Default::default()
            },
        });
        let g = WaitForGraph::build(m.process(10).unwrap());
        assert_eq!(g.waits[&10].target.holder, Holder::Unknown);
        assert_ne!(g.waits[&10].target.kind, LockKind::PyLock);
    }
}
