//! Model tests on event streams recorded from the fixtures (no root).

use super::*;
use crate::event::{Event, Wait, WaitOrigin};

fn replay(s: &str) -> Model {
    let mut m = Model::new();
    for line in s.lines().filter(|l| !l.trim().is_empty()) {
        m.apply(&serde_json::from_str::<Event>(line).expect("event"));
    }
    m
}

fn by_name<'a>(p: &'a Process, name: &str) -> &'a Thread {
    p.threads
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no thread {name}"))
}

/// fixtures/threads.c under `observer run` (recorded with --record).
#[test]
fn recorded_threads_fixture() {
    let m = replay(include_str!("../../../observer/tests/data/threads.jsonl"));
    assert_eq!(m.processes.len(), 1);
    let p = m.processes.values().next().unwrap();
    assert_eq!(p.threads.len(), 5);
    let main = by_name(p, "main");
    assert_eq!(main.tid, p.tgid);
    assert_eq!(p.exit_status, Some(7 << 8));
    let w3 = by_name(p, "renamed-3");
    assert!(w3.names.iter().any(|(_, n)| n == "worker-3"));
    let gc = by_name(p, "grandchild");
    assert_eq!(gc.parent_tid, Some(w3.tid));
    for n in ["worker-1", "worker-2", "renamed-3"] {
        let t = by_name(p, n);
        assert_eq!(t.parent_tid, Some(main.tid));
        assert!(t.exit_ns.unwrap() > t.start_ns.unwrap());
        assert_ne!(t.child_tid_addr, 0, "clone child_tid recorded");
    }
    assert_eq!(p.live_threads().count(), 0);
}

fn wait(start: u64) -> Wait {
    Wait {
        uaddr: 0x1000,
        uaddr2: 0,
        op: 0x80,
        val: 2,
        start_ns: start,
        ip: 0,
        sp: 0,
        bp: 0,
        words_addr: 0,
        words: vec![],
        origin: WaitOrigin::Kernel,
    }
}

#[test]
fn tid_reuse_keeps_both_threads() {
    let mut m = Model::new();
    let new = |ts, tid| Event::ThreadNew {
        ts_ns: ts,
        tgid: 1,
        creator: 1,
        tid,
        child_tgid: 1,
        clone_flags: 0x3d0f00,
        child_tid_addr: 0x10,
        name: format!("t{ts}"),
        pthread: 0,
        create_site: 0,
        detached: false,
    };
    m.apply(&new(1, 5));
    m.apply(&Event::ThreadExit {
        ts_ns: 2,
        tgid: 1,
        tid: 5,
        exit_code: 0,
        group_dead: false,
        group_exit: false,
    });
    m.apply(&new(3, 5));
    let p = m.process(1).unwrap();
    assert_eq!(p.threads.iter().filter(|t| t.tid == 5).count(), 2);
    assert_eq!(p.thread(5).unwrap().name(), "t3");
    assert!(p.thread(5).unwrap().alive());
}

#[test]
fn waits_begin_and_end_by_start_time() {
    let mut m = Model::new();
    m.apply(&Event::WaitBegin {
        ts_ns: 10,
        tgid: 1,
        tid: 2,
        wait: wait(5),
    });
    assert!(m.process(1).unwrap().thread(2).unwrap().wait.is_some());
    // an end for an older wait does not clear the current one
    m.apply(&Event::WaitEnd {
        ts_ns: 11,
        tgid: 1,
        tid: 2,
        start_ns: 4,
        ret: None,
    });
    assert!(m.process(1).unwrap().thread(2).unwrap().wait.is_some());
    m.apply(&Event::WaitDone {
        ts_ns: 20,
        tgid: 1,
        tid: 2,
        wait: wait(5),
        ret: 0,
    });
    let p = m.process(1).unwrap();
    assert!(p.thread(2).unwrap().wait.is_none());
    assert_eq!(p.long_waits.len(), 1);
}

#[test]
fn exec_from_a_non_leader_thread() {
    let mut m = Model::new();
    m.apply(&Event::ThreadSeen {
        ts_ns: 1,
        tgid: 7,
        tid: 7,
        name: "a".into(),
        parent_tid: Some(1),
        start_ns: Some(0),
    });
    m.apply(&Event::ThreadSeen {
        ts_ns: 1,
        tgid: 7,
        tid: 8,
        name: "b".into(),
        parent_tid: None,
        start_ns: Some(0),
    });
    m.apply(&Event::Exec {
        ts_ns: 5,
        tgid: 7,
        tid: 7,
        old_tid: 8,
        filename: "/bin/x".into(),
        name: "x".into(),
        image: None,
    });
    let p = m.process(7).unwrap();
    assert_eq!(p.exe.as_deref(), Some("/bin/x"));
    assert_eq!(p.thread(7).unwrap().name(), "x");
    assert!(!p.thread(8).unwrap().alive());
}

#[test]
fn exit_descriptions() {
    assert_eq!(describe_exit(7 << 8), "7");
    assert_eq!(describe_exit(9), "signal 9");
    assert_eq!(describe_exit(0x86), "signal 6 (core dumped)");
}

/// Join and detach state without uprobes: join waits on the CLEARTID word,
/// glibc descriptors read at exit_group, descriptors reused by newer threads.
#[test]
fn join_state_from_waits_descriptors_and_reuse() {
    let mut m = Model::new();
    let pd = |i: u64| 0x7f00_0000_0000 + i * 0x10_0000;
    let new = |ts, tid: u32, pthread: u64| Event::ThreadNew {
        ts_ns: ts,
        tgid: 1,
        creator: 1,
        tid,
        child_tgid: 1,
        clone_flags: 0x3d0f00,
        child_tid_addr: pthread + 0x2d0,
        name: format!("t{tid}"),
        pthread,
        create_site: 0,
        detached: false,
    };
    let exit = |ts, tid| Event::ThreadExit {
        ts_ns: ts,
        tgid: 1,
        tid,
        exit_code: 0,
        group_dead: false,
        group_exit: false,
    };
    let state = |tid, pthread, tid_word, joinid| Event::JoinState {
        ts_ns: 100,
        tgid: 1,
        tid,
        pthread,
        read: true,
        tid_word,
        joinid,
    };
    for (i, tid) in [(1, 11), (2, 12), (3, 13), (4, 14), (5, 15)] {
        m.apply(&new(i, tid, pd(i)));
    }
    // 11: joined with a wait on its CLEARTID word (val = its TID)
    m.apply(&Event::JoinWait {
        ts_ns: 6,
        tgid: 1,
        tid: 1,
        uaddr: pd(1) + 0x2d0,
        val: 11,
    });
    // a shared wait on another word holding a TID is no join
    m.apply(&Event::JoinWait {
        ts_ns: 6,
        tgid: 1,
        tid: 1,
        uaddr: 0x1234,
        val: 12,
    });
    for tid in 11..=15 {
        m.apply(&exit(10 + tid as u64, tid));
    }
    // 14's descriptor is reused by a newer thread: it was freed
    m.apply(&new(40, 16, pd(4)));
    m.apply(&state(12, pd(2), 0, pd(2))); // detached (joinid == pd)
    m.apply(&state(13, pd(3), 0, 0)); // never joined
    m.apply(&state(15, pd(5), -1, 0)); // joined without a wait
    let p = m.process(1).unwrap();
    let t = |tid| p.threads.iter().find(|t| t.tid == tid).unwrap();
    assert!(t(11).joined && t(11).joined_by == Some(1));
    assert!(!t(12).joined && t(12).detached);
    assert!(t(13).unjoined_at_exit && !t(13).joined && !t(13).detached);
    assert!(t(14).released);
    assert!(t(15).joined && !t(15).unjoined_at_exit);
}

/// A process is named in every mode: exe and start time from its `start`
/// (read from /proc), its comm from its main thread; a followed fork runs
/// its parent's program until it execs; an old recording (no identity in
/// `start`) still reads, named by its exec.
#[test]
fn processes_are_named_by_exe_comm_and_start_time() {
    let m = replay(concat!(
        r#"{"ev":"start","ts_ns":1,"tgid":10,"cmdline":["./srv","-x"],"attached":true,"exe":"/opt/srv","start_time_ns":5000000000}"#,
        "\n",
        r#"{"ev":"thread_seen","ts_ns":1,"tgid":10,"tid":10,"name":"srv-main","parent_tid":1,"start_ns":1}"#,
        "\n",
        r#"{"ev":"thread_new","ts_ns":2,"tgid":10,"creator":10,"tid":20,"child_tgid":20,"clone_flags":17,"child_tid_addr":0,"name":"srv-main"}"#,
        "\n",
    ));
    let p = m.process(10).unwrap();
    assert_eq!(p.exe.as_deref(), Some("/opt/srv"));
    assert_eq!(p.start_time_ns, Some(5_000_000_000));
    assert_eq!(p.comm(), Some("srv-main"));
    let child = m.process(20).unwrap();
    assert_eq!(child.exe.as_deref(), Some("/opt/srv"));
    assert_eq!(child.cmdline, ["./srv", "-x"]);
    assert_eq!(child.start_time_ns, None, "never read from /proc");
    let old = replay(concat!(
        r#"{"ev":"start","ts_ns":1,"tgid":10,"cmdline":["./a"],"attached":false}"#,
        "\n",
        r#"{"ev":"exec","ts_ns":2,"tgid":10,"tid":10,"old_tid":10,"filename":"/x/a","name":"a"}"#,
        "\n",
    ));
    let p = old.process(10).unwrap();
    assert_eq!((p.exe.as_deref(), p.comm()), (Some("/x/a"), Some("a")));
    let r = crate::report::json::build(&old, "replay", &[], &[]);
    let v = serde_json::to_value(&r.processes).unwrap();
    assert_eq!(v[0]["exe"], "/x/a");
    assert_eq!(v[0]["comm"], "a");
    assert!(v[0]["start_time_ns"].is_null());
}

/// Totals of waits on a thread's CLEARTID word are joins, not contention;
/// a private wait there is a lock's (the memory was reused).
#[test]
fn join_word_totals_are_joins_not_locks() {
    let mut m = Model::new();
    let word = 0x7f00_0000_02d0;
    m.apply(&Event::ThreadNew {
        ts_ns: 1,
        tgid: 1,
        creator: 1,
        tid: 11,
        child_tgid: 1,
        clone_flags: 0x3d0f00,
        child_tid_addr: word,
        name: "t11".into(),
        pthread: word - 0x2d0,
        create_site: 0,
        detached: false,
    });
    let stats = |uaddr, op, count| Event::LockStats {
        tgid: 1,
        uaddr,
        op,
        count,
        total_ns: count * 1000,
        max_ns: 2000,
    };
    const WAIT_BITSET: u32 = 9;
    const PRIVATE: u32 = 128;
    m.apply(&stats(word, WAIT_BITSET, 3));
    m.apply(&stats(0x5000, WAIT_BITSET | PRIVATE, 5));
    let p = m.process(1).unwrap();
    assert_eq!(p.joins.keys().copied().collect::<Vec<_>>(), vec![word]);
    assert_eq!(p.locks.keys().copied().collect::<Vec<_>>(), vec![0x5000]);
    let lc = super::lifecycle::lifecycle(p);
    assert_eq!((lc.join_waits.count, lc.join_waits.total_ns), (3, 3000));
    // a later private wait on the word: a lock's now
    m.apply(&stats(word, WAIT_BITSET | PRIVATE, 4));
    let p = m.process(1).unwrap();
    assert!(p.locks.contains_key(&word) && p.joins.is_empty());

    // a thread seen only in /proc (no CLEARTID address): its join names the word
    m.apply(&Event::ThreadSeen {
        ts_ns: 5,
        tgid: 1,
        tid: 12,
        name: "old".into(),
        parent_tid: None,
        start_ns: None,
    });
    let old_word = 0x7f00_0010_02d0;
    m.apply(&Event::JoinWait {
        ts_ns: 6,
        tgid: 1,
        tid: 1,
        uaddr: old_word,
        val: 12,
    });
    m.apply(&stats(old_word, WAIT_BITSET, 1));
    assert!(m.process(1).unwrap().joins.contains_key(&old_word));
}
