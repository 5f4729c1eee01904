//! Locks across processes: recorded runs of the fixtures (xproc_abba,
//! fork_orphan, xproc_turns under `run --follow-forks --record`) replayed,
//! and small hand-made models for what a run rarely shows (a torn view, a
//! Python lock no thread holds).

use super::{Detail, FindingKind, Limits, tests::only, tests::replay};
use crate::{
    event::{Event, Wait, WaitOrigin},
    model::Model,
    vocab::{
        frames::{MapEntry, PyFrame},
        python::{How, PyHeld, PyLockKind, PyThreadView, PyView, PyWait},
    },
};

fn name(m: &Model, pid: u32, tid: u32) -> String {
    m.processes[&pid]
        .threads
        .iter()
        .rev()
        .find(|t| t.tid == tid)
        .unwrap()
        .name()
        .to_string()
}

#[test]
fn abba_across_processes_is_one_cycle_not_an_orphan() {
    let (m, f) = only("xproc_abba", 5.0, 10.0);
    assert_eq!(f.kind, FindingKind::Deadlock);
    let Detail::ProcessesDeadlock { processes, objects } = &f.detail else {
        panic!("{:?}", f.detail)
    };
    let comms: Vec<_> = processes.iter().map(|p| p.comm.clone().unwrap()).collect();
    assert_eq!(comms.len(), 2);
    assert!(comms.contains(&"xparent".into()) && comms.contains(&"xchild".into()));
    assert!(
        processes
            .iter()
            .all(|p| p.exe.as_deref().is_some_and(|e| e.ends_with("/xproc_abba")))
    );
    assert_eq!(objects, &vec![Some("/dev/zero (deleted)".to_string()); 2]);
    // Each edge: a thread of one process waits for a thread of the other.
    let mut named: Vec<(String, String)> = f
        .cycle
        .iter()
        .map(|e| {
            let pid_of = |tid| f.threads.iter().find(|t| t.tid == tid).unwrap().pid;
            let (w, h) = (pid_of(e.waiter_tid), pid_of(e.holder_tid));
            assert_ne!(w, h);
            (name(&m, w, e.waiter_tid), name(&m, h, e.holder_tid))
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        vec![
            ("xchild".into(), "xparent".into()),
            ("xparent".into(), "xchild".into())
        ]
    );
    // Two different locks: xlock_a and xlock_b, 0x28 apart in the mapping.
    assert_eq!(f.locks.len(), 2);
    assert_eq!(f.locks[0].addr.abs_diff(f.locks[1].addr), 0x28);
    let mut pids = f.pids();
    pids.sort();
    let mut want: Vec<u32> = processes.iter().map(|p| p.pid).collect();
    want.sort();
    assert_eq!(pids, want, "kill-on-deadlock ends both");
    assert!(
        f.summary()
            .starts_with("2 threads in 2 processes wait for each other")
    );
}

#[test]
fn a_mutex_inherited_across_fork_names_the_parents_holder() {
    let (m, f) = only("fork_orphan", 5.0, 10.0);
    assert_eq!(f.kind, FindingKind::OrphanedLock);
    let Detail::OrphanedLock {
        inherited: Some(i),
        owner: Some(o),
        ..
    } = &f.detail
    else {
        panic!("{:?}", f.detail)
    };
    assert!(i.parent);
    assert_eq!(i.name, "holder");
    assert_eq!(i.tid, *o);
    assert_eq!(name(&m, i.pid, i.tid), "holder");
    assert_eq!(f.threads[0].name, "child");
    assert_eq!(f.locks[0].symbol.as_deref(), Some("fork_lock"));
    assert_eq!(f.pids(), vec![f.tgid], "the parent is not hung");
    assert!(
        f.summary()
            .contains("inherited locked across fork: held in its parent")
    );
}

#[test]
fn processes_taking_turns_on_a_shared_mutex_give_nothing() {
    let (_, f) = replay("xproc_turns", 0.5, 10.0);
    assert!(
        f.is_empty(),
        "{:?}",
        f.iter().map(|f| f.summary()).collect::<Vec<_>>()
    );
}

const SHM: u64 = 0x7f00_0000_0000;

fn start(m: &mut Model, pid: u32, parent: u32, name: &str) {
    m.apply(&Event::start(0, pid, vec![name.into()], false));
    m.apply(&Event::ThreadSeen {
        ts_ns: 1,
        tgid: pid,
        tid: pid,
        name: name.into(),
        parent_tid: Some(parent),
        start_ns: None,
    });
    m.apply(&Event::Mappings {
        ts_ns: 1,
        tgid: pid,
        maps: vec![MapEntry {
            start: SHM,
            end: SHM + 0x1000,
            read: true,
            write: true,
            exec: false,
            shared: true,
            offset: 0,
            dev: (0, 1),
            inode: 4242,
            path: "/dev/zero (deleted)".into(),
            build_id: String::new(),
        }],
    });
}

/// `tid` waits (FUTEX_WAIT, shared) on a default pshared mutex at `lock`
/// whose `__owner` is `owner`.
fn wait_mutex(m: &mut Model, pid: u32, tid: u32, lock: u64, owner: u32, private: bool) {
    let mut words = vec![0u8; 32];
    words[0..4].copy_from_slice(&2u32.to_ne_bytes());
    words[8..12].copy_from_slice(&owner.to_ne_bytes());
    words[16..20].copy_from_slice(&0x80u32.to_ne_bytes());
    m.apply(&Event::WaitBegin {
        ts_ns: 2,
        tgid: pid,
        tid,
        wait: Wait {
            uaddr: lock,
            uaddr2: 0,
            op: if private { 0x80 } else { 0 },
            val: 2,
            start_ns: 2,
            ip: 0,
            sp: 0,
            bp: 0,
            words_addr: lock,
            words,
            origin: WaitOrigin::Kernel,
        },
    });
}

fn judge(m: &Model) -> Vec<super::Finding> {
    super::Detectors::new(Limits::new(u64::MAX)).candidates(m, 10)
}

#[test]
fn the_owner_in_another_process_is_followed_only_through_shared_memory() {
    let mut m = Model::new();
    start(&mut m, 100, 1, "parent");
    start(&mut m, 200, 100, "child");
    wait_mutex(&mut m, 100, 100, SHM + 0x28, 200, false);
    wait_mutex(&mut m, 200, 200, SHM, 100, false);
    let p = &m.processes[&200];
    let key = p.futex_key(SHM, 0);
    assert_eq!(
        key,
        crate::model::shared::FutexKey::Shared {
            dev: (0, 1),
            inode: 4242,
            offset: 0
        }
    );
    assert_eq!(m.processes[&100].addr_of(key), Some(SHM));
    let fo = m.foreign_owner(p, SHM, 0, 100).unwrap();
    assert!(fo.shared && fo.parent);
    let f = judge(&m);
    assert_eq!(
        f.len(),
        1,
        "{:?}",
        f.iter().map(|f| f.summary()).collect::<Vec<_>>()
    );
    assert!(matches!(f[0].detail, Detail::ProcessesDeadlock { .. }));
    // The same words, private futexes: copies, nobody can wake them.
    let mut m = Model::new();
    start(&mut m, 100, 1, "parent");
    start(&mut m, 200, 100, "child");
    wait_mutex(&mut m, 200, 200, SHM, 100, true);
    assert!(
        !m.foreign_owner(&m.processes[&200], SHM, 0x80, 100)
            .unwrap()
            .shared
    );
    let f = judge(&m);
    assert_eq!(f.len(), 1);
    assert!(matches!(
        &f[0].detail,
        Detail::OrphanedLock { inherited: Some(i), .. } if i.pid == 100 && i.parent
    ));
}

#[test]
fn one_lock_with_two_owners_is_a_torn_view_not_a_cycle() {
    // Read one process after the other while they take turns: each seen
    // waiting for the one lock, each naming the other as its owner.
    let mut m = Model::new();
    start(&mut m, 100, 1, "parent");
    start(&mut m, 200, 100, "child");
    wait_mutex(&mut m, 100, 100, SHM, 200, false);
    wait_mutex(&mut m, 200, 200, SHM, 100, false);
    let f = judge(&m);
    assert!(
        f.is_empty(),
        "{:?}",
        f.iter().map(|f| f.summary()).collect::<Vec<_>>()
    );
}

fn py_thread(tid: u32, name: &str, wait: Option<u64>, held: Option<u64>) -> PyThreadView {
    PyThreadView {
        tid,
        ident: tid as u64,
        name: Some(name.into()),
        frames: vec![PyFrame {
            function: "f".into(),
            file: "app.py".into(),
            line: 12,
        }],
        wait: wait.map(|lock| PyWait {
            lock,
            kind: PyLockKind::Lock,
            how: How::With,
            frame: 0,
            name: Some("shared_lock".into()),
        }),
        held: held
            .map(|lock| PyHeld {
                lock,
                kind: PyLockKind::Lock,
                frame: Some(0),
                name: None,
                line: Some(10),
            })
            .into_iter()
            .collect(),
        joins: None,
        label: None,
        future: None,
    }
}

fn py_wait(m: &mut Model, pid: u32, tid: u32) {
    m.apply(&Event::WaitBegin {
        ts_ns: 2,
        tgid: pid,
        tid,
        wait: Wait {
            uaddr: 0x5000,
            uaddr2: 0,
            op: 0x89,
            val: 0,
            start_ns: 2,
            ip: 0,
            sp: 0,
            bp: 0,
            words_addr: 0,
            words: Vec::new(),
            origin: WaitOrigin::Kernel,
        },
    });
}

fn py_view(m: &mut Model, pid: u32, threads: Vec<PyThreadView>) {
    m.apply(&Event::PyState {
        ts_ns: 3,
        tgid: pid,
        view: PyView {
            version: "3.12.1".into(),
            threads,
            ..Default::default()
        },
    });
}

#[test]
fn a_python_lock_no_thread_holds_names_the_parents_holder() {
    const LOCK: u64 = 0x7f11_0000;
    let mut m = Model::new();
    start(&mut m, 100, 1, "python3");
    m.apply(&Event::ThreadSeen {
        ts_ns: 1,
        tgid: 100,
        tid: 101,
        name: "python3".into(),
        parent_tid: None,
        start_ns: None,
    });
    start(&mut m, 200, 100, "python3");
    py_view(
        &mut m,
        100,
        vec![
            py_thread(100, "main", None, None),
            py_thread(101, "holder", None, Some(LOCK)),
        ],
    );
    py_wait(&mut m, 200, 200);
    py_view(&mut m, 200, vec![py_thread(200, "main", Some(LOCK), None)]);
    let f = judge(&m);
    let orphans: Vec<_> = f
        .iter()
        .filter(|f| f.kind == FindingKind::OrphanedLock)
        .collect();
    assert_eq!(
        orphans.len(),
        1,
        "{:?}",
        f.iter().map(|f| f.summary()).collect::<Vec<_>>()
    );
    let s = orphans[0].summary();
    assert!(
        s.contains("held in its parent 100 \"main\" by thread 101 \"holder\" (taken at app.py:10)"),
        "{s}"
    );
}

#[test]
fn a_python_lock_no_thread_holds_is_silent_while_another_thread_could_release_it() {
    const LOCK: u64 = 0x7f11_0000;
    // No parent, a second thread alive: it may have taken it by acquire().
    let mut m = Model::new();
    start(&mut m, 300, 1, "python3");
    m.apply(&Event::ThreadSeen {
        ts_ns: 1,
        tgid: 300,
        tid: 301,
        name: "python3".into(),
        parent_tid: None,
        start_ns: None,
    });
    py_wait(&mut m, 300, 300);
    py_view(
        &mut m,
        300,
        vec![
            py_thread(300, "main", Some(LOCK), None),
            py_thread(301, "worker", None, None),
        ],
    );
    assert!(
        judge(&m)
            .iter()
            .all(|f| f.kind != FindingKind::OrphanedLock)
    );
    // Alone: nobody is left to release it.
    let mut m = Model::new();
    start(&mut m, 300, 1, "python3");
    py_wait(&mut m, 300, 300);
    py_view(&mut m, 300, vec![py_thread(300, "main", Some(LOCK), None)]);
    let f = judge(&m);
    assert_eq!(
        f.len(),
        1,
        "{:?}",
        f.iter().map(|f| f.summary()).collect::<Vec<_>>()
    );
    assert!(
        f[0].summary()
            .contains("no other thread is left to release it")
    );
}

#[test]
fn an_owner_in_a_process_not_observed_is_named_not_orphaned() {
    let foreign = |tgid| Event::ForeignThread {
        ts_ns: 3,
        tgid,
        tid: 150,
        owner_tgid: 100,
        name: "holder".into(),
        comm: "server".into(),
        exe: Some("/usr/bin/server".into()),
    };
    // Attached to the child alone; its parent (100) is not observed.
    let mut m = Model::new();
    start(&mut m, 200, 100, "child");
    wait_mutex(&mut m, 200, 200, 0x5000, 150, true);
    m.apply(&foreign(200));
    let f = judge(&m);
    assert_eq!(
        f.len(),
        1,
        "{:?}",
        f.iter().map(|f| f.summary()).collect::<Vec<_>>()
    );
    let s = f[0].summary();
    assert!(
        s.contains("inherited locked across fork: held in its parent 100 \"server\" by thread 150 \"holder\""),
        "{s}"
    );
    // In shared memory: that thread can release it, no orphan.
    let mut m = Model::new();
    start(&mut m, 200, 100, "child");
    wait_mutex(&mut m, 200, 200, SHM, 150, false);
    m.apply(&foreign(200));
    assert!(
        judge(&m)
            .iter()
            .all(|f| f.kind != FindingKind::OrphanedLock)
    );
}

#[test]
fn a_lone_acquire_may_have_a_timeout_so_it_is_no_orphan() {
    let mut m = Model::new();
    start(&mut m, 300, 1, "python3");
    py_wait(&mut m, 300, 300);
    let mut t = py_thread(300, "main", Some(0x7f11_0000), None);
    t.wait.as_mut().unwrap().how = How::Acquire;
    py_view(&mut m, 300, vec![t]);
    assert!(
        judge(&m)
            .iter()
            .all(|f| f.kind != FindingKind::OrphanedLock)
    );
}

#[test]
fn a_cycle_whose_processes_die_one_by_one_leaves_no_orphan() {
    let mut m = Model::new();
    start(&mut m, 100, 1, "parent");
    start(&mut m, 200, 100, "child");
    wait_mutex(&mut m, 100, 100, SHM + 0x28, 200, false);
    wait_mutex(&mut m, 200, 200, SHM, 100, false);
    let mut d = super::Detectors::new(Limits::new(u64::MAX));
    let f = d.candidates(&m, 10);
    assert_eq!(d.accept(f).len(), 1);
    // The parent is killed first; the child's end is not seen yet.
    m.apply(&Event::ThreadExit {
        ts_ns: 20,
        tgid: 100,
        tid: 100,
        exit_code: 9,
        group_dead: true,
        group_exit: true,
    });
    let f = d.candidates_at_end(&m, 30);
    assert!(
        f.is_empty(),
        "{:?}",
        f.iter().map(|f| f.summary()).collect::<Vec<_>>()
    );
}

#[test]
fn an_owner_tid_reused_by_an_unrelated_process_is_not_called_inherited() {
    let mut m = Model::new();
    start(&mut m, 100, 1, "other");
    start(&mut m, 200, 50, "child");
    wait_mutex(&mut m, 200, 200, 0x5000, 100, true);
    let f = judge(&m);
    assert_eq!(f.len(), 1);
    assert!(
        matches!(
            &f[0].detail,
            Detail::OrphanedLock {
                inherited: None,
                owner: Some(100),
                ..
            }
        ),
        "{}",
        f[0].summary()
    );
}

/// fixtures/py_fork_held.py under CPython 3.12, `run --follow-forks`.
#[test]
fn a_python_lock_held_at_fork_replays_with_the_parents_holder_and_line() {
    let (m, f) = only("py_fork_held", 5.0, 10.0);
    assert_eq!(f.kind, FindingKind::OrphanedLock);
    let Detail::OrphanedLock {
        inherited: Some(i), ..
    } = &f.detail
    else {
        panic!("{:?}", f.detail)
    };
    assert!(i.parent);
    assert_eq!(i.name, "holder");
    assert_eq!(name(&m, i.pid, i.tid), "holder");
    assert!(
        i.at.as_deref()
            .is_some_and(|a| a.ends_with("py_fork_held.py:30")),
        "{:?}",
        i.at
    );
    assert_eq!(f.threads[0].tid, f.tgid, "the child's only thread");
    assert_eq!(f.locks[0].kind, crate::vocab::locks::LockKind::PyLock);
}

/// The daemon keeps each process in a model of its own: the same run, split
/// by process, is one cycle across the two models and nothing in either.
#[test]
fn abba_across_processes_split_into_one_model_each() {
    let (_, events) = crate::recording::parse(
        super::tests::recording("xproc_abba").as_bytes(),
        "xproc_abba",
    )
    .expect("recording parses");
    let (whole, _) = replay("xproc_abba", 5.0, 10.0);
    let mut pids: Vec<u32> = whole.processes.keys().copied().collect();
    pids.sort();
    assert_eq!(pids.len(), 2);
    let limits = Limits::new(3600 * 1_000_000_000);
    let engines: Vec<_> = pids
        .iter()
        .map(|&pid| {
            // Up to the kill: the models as the daemon holds them then.
            let mut mine: Vec<Event> = events
                .iter()
                .take_while(|e| !matches!(e, Event::ThreadExit { .. }))
                .filter(|e| {
                    e.tgid().is_none_or(|t| t == pid)
                        || matches!(e, Event::ThreadNew { child_tgid, .. } if *child_tgid == pid)
                })
                .cloned()
                .collect();
            // What a live session reads in /proc of the other's thread.
            let other = *pids.iter().find(|&&p| p != pid).unwrap();
            let at = mine
                .iter()
                .position(|e| matches!(e, Event::WaitBegin { .. }))
                .unwrap();
            let name = whole.processes[&other].comm().unwrap().to_string();
            mine.insert(
                at,
                Event::ForeignThread {
                    ts_ns: mine[at].ts_ns().unwrap_or(0),
                    tgid: pid,
                    tid: other,
                    owner_tgid: other,
                    name: name.clone(),
                    comm: name,
                    exe: None,
                },
            );
            crate::replay::replay(
                &mine,
                limits.clone(),
                crate::replay::REPLAY_CHECK_NS,
                &mut (),
            )
        })
        .collect();
    for e in &engines {
        let kinds: Vec<_> = e.detectors.findings.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            vec![],
            "one process alone is no finding: {:#?}",
            e.detectors.findings
        );
    }
    let models: Vec<&Model> = engines.iter().map(|e| &e.model).collect();
    let now = models
        .iter()
        .flat_map(|m| m.processes.values())
        .filter_map(|p| p.threads.iter().filter_map(|t| t.start_ns).max())
        .max()
        .unwrap()
        + 10_000_000_000;
    let found = super::Detectors::across_models(&models, now, &limits);
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(f.kind, FindingKind::Deadlock);
    let Detail::ProcessesDeadlock { processes, .. } = &f.detail else {
        panic!("{:?}", f.detail)
    };
    let mut got: Vec<u32> = processes.iter().map(|p| p.pid).collect();
    got.sort();
    assert_eq!(got, pids);
    assert_eq!(f.cycle.len(), 2);
    let mut tids: Vec<u32> = f.threads.iter().map(|t| t.tid).collect();
    tids.sort();
    assert_eq!(tids, pids, "each process's main thread");
    // Alone, neither model has the cycle.
    assert!(super::Detectors::across_models(&models[..1], now, &limits).is_empty());
}

/// A `multiprocessing.Lock` in process `pid`: the SemLock object at `obj`
/// (private), its semaphore at `word` in the shared mapping, held by
/// `owner` (a thread of `pid`) or by none of its threads.
fn mp_lock(obj: u64, word: u64, owner: Option<u32>) -> crate::vocab::python::PyLockInfo {
    crate::vocab::python::PyLockInfo {
        addr: obj,
        kind: PyLockKind::MpLock,
        name: Some(format!("lock_{:x}", word - SHM)),
        word,
        owner: owner.map(|t| (t, 1)),
    }
}

/// `tid` of `pid` waits in `with` for the mp lock `obj` (semaphore `word`)
/// and holds `held` (a SemLock of its own process).
fn mp_thread(
    m: &mut Model,
    pid: u32,
    tid: u32,
    wait: Option<(u64, u64)>,
    held: Option<u64>,
) -> PyThreadView {
    let mut t = py_thread(tid, &format!("t{tid}"), None, None);
    if let Some((obj, word)) = wait {
        t.wait = Some(PyWait {
            lock: obj,
            kind: PyLockKind::MpLock,
            how: How::With,
            frame: 0,
            name: None,
        });
        m.apply(&Event::WaitBegin {
            ts_ns: 2,
            tgid: pid,
            tid,
            wait: Wait {
                uaddr: word,
                uaddr2: 0,
                op: 0x109,
                val: 0,
                start_ns: 2,
                ip: 0,
                sp: 0,
                bp: 0,
                words_addr: 0,
                words: Vec::new(),
                origin: WaitOrigin::Kernel,
            },
        });
    }
    t.held = held
        .map(|lock| PyHeld {
            lock,
            kind: PyLockKind::MpLock,
            frame: Some(0),
            name: None,
            line: Some(10),
        })
        .into_iter()
        .collect();
    t
}

/// ABBA over two multiprocessing locks: each process's view names the
/// holder among its own threads only (the SemLock objects are at other
/// addresses in each process, as after forkserver/spawn); the shared
/// semaphore joins the waiter in one process to the holder in the other.
#[test]
fn multiprocessing_locks_meet_their_holders_through_the_shared_semaphore() {
    let (wa, wb) = (SHM + 0x20, SHM + 0x40);
    for both in [true, false] {
        let mut m = Model::new();
        start(&mut m, 100, 1, "python3");
        start(&mut m, 200, 100, "python3");
        // Parent: 0xa100 = lock_a (held), 0xb100 = lock_b (waited for).
        let t = mp_thread(&mut m, 100, 100, Some((0xb100, wb)), Some(0xa100));
        m.apply(&Event::PyState {
            ts_ns: 3,
            tgid: 100,
            view: PyView {
                version: "3.12.1".into(),
                threads: vec![t],
                locks: vec![mp_lock(0xa100, wa, Some(100)), mp_lock(0xb100, wb, None)],
                ..Default::default()
            },
        });
        // Child: 0xa200 = lock_a, 0xb200 = lock_b (held); waits for
        // lock_a only in the deadlock.
        let wait = both.then_some((0xa200, wa));
        let t = mp_thread(&mut m, 200, 200, wait, Some(0xb200));
        m.apply(&Event::PyState {
            ts_ns: 3,
            tgid: 200,
            view: PyView {
                version: "3.12.1".into(),
                threads: vec![t],
                locks: vec![mp_lock(0xa200, wa, None), mp_lock(0xb200, wb, Some(200))],
                ..Default::default()
            },
        });
        let (p, tid, obj) = m.mp_holder(&m.processes[&100], wb, 0x109).unwrap();
        assert_eq!((p.tgid, tid, obj), (200, 200, 0xb200));
        let f = judge(&m);
        let sums: Vec<_> = f.iter().map(|f| f.summary()).collect();
        if !both {
            // The child holds lock_b and runs: no hang, no orphan.
            assert!(f.is_empty(), "{sums:?}");
            continue;
        }
        assert_eq!(f.len(), 1, "{sums:?}");
        assert_eq!(f[0].kind, FindingKind::Deadlock);
        let Detail::ProcessesDeadlock { processes, .. } = &f[0].detail else {
            panic!("{:?}", f[0].detail)
        };
        assert_eq!(processes.len(), 2);
        let mut edges: Vec<_> = f[0]
            .cycle
            .iter()
            .map(|e| (e.waiter_tid, e.holder_tid, e.lock.addr, e.holder_lock))
            .collect();
        edges.sort();
        assert_eq!(
            edges,
            vec![
                (100, 200, 0xb100, Some(0xb200)),
                (200, 100, 0xa200, Some(0xa100))
            ]
        );
        assert!(
            f[0].cycle
                .iter()
                .all(|e| e.lock.kind == crate::graph::LockKind::MpLock)
        );
    }
}
