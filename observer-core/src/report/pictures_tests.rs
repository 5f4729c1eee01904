//! A deadlock model for the picture writers' unit tests, built from events
//! the way replay builds it, and the trace-event format checks.

use serde_json::Value;

use crate::{
    detect::{Finding, Limits},
    engine::Engine,
    event::{Event, Wait, WaitOrigin},
    model::Model,
};

const MS: u64 = 1_000_000;

/// A glibc mutex wait on `lock` owned by `owner` (lock word 2: contended).
pub fn mutex_wait(lock: u64, owner: u32, start_ns: u64) -> Wait {
    let mut words = vec![0u8; 24];
    words[0..4].copy_from_slice(&2u32.to_ne_bytes());
    words[8..12].copy_from_slice(&owner.to_ne_bytes());
    Wait {
        uaddr: lock,
        uaddr2: 0,
        op: 0x80,
        val: 2,
        start_ns,
        ip: 0,
        sp: 0,
        bp: 0,
        words_addr: lock,
        words,
        origin: WaitOrigin::Kernel,
    }
}

/// main (10) creates alpha (11) and beta (12 → renamed); alpha and beta
/// deadlock on lock_a/lock_b; an earlier wait of beta on lock_a ended.
pub fn abba_events(beta_name: &str) -> Vec<Event> {
    let (a, b) = (0x5000u64, 0x5028u64);
    let t0 = 1_000 * MS;
    let new = |ts, tid, name: &str| Event::ThreadNew {
        ts_ns: ts,
        tgid: 10,
        creator: 10,
        tid,
        child_tgid: 10,
        clone_flags: 0x3d0f00,
        child_tid_addr: 0,
        name: name.into(),
        pthread: 0,
        create_site: 0,
        detached: false,
    };
    vec![
        Event::start(t0, 10, vec!["./abba".into()], false),
        Event::ThreadSeen {
            ts_ns: t0,
            tgid: 10,
            tid: 10,
            name: "main".into(),
            parent_tid: None,
            start_ns: Some(t0 - MS),
        },
        new(t0 + MS, 11, "abba"),
        new(t0 + 2 * MS, 12, "abba"),
        Event::ThreadRename {
            ts_ns: t0 + 3 * MS,
            tgid: 10,
            tid: 11,
            name: "alpha".into(),
        },
        Event::ThreadRename {
            ts_ns: t0 + 3 * MS,
            tgid: 10,
            tid: 12,
            name: beta_name.into(),
        },
        Event::Symbol {
            tgid: 10,
            addr: a,
            name: "lock_a".into(),
        },
        Event::Symbol {
            tgid: 10,
            addr: b,
            name: "lock_b".into(),
        },
        // beta waited for lock_a once, alpha held it, and got it
        Event::WaitBegin {
            ts_ns: t0 + 20 * MS,
            tgid: 10,
            tid: 12,
            wait: mutex_wait(a, 11, t0 + 5 * MS),
        },
        Event::WaitEnd {
            ts_ns: t0 + 30 * MS,
            tgid: 10,
            tid: 12,
            start_ns: t0 + 5 * MS,
            ret: None,
        },
        Event::WaitBegin {
            ts_ns: t0 + 60 * MS,
            tgid: 10,
            tid: 11,
            wait: mutex_wait(b, 12, t0 + 40 * MS),
        },
        Event::WaitBegin {
            ts_ns: t0 + 60 * MS,
            tgid: 10,
            tid: 12,
            wait: mutex_wait(a, 11, t0 + 41 * MS),
        },
        Event::Scan {
            ts_ns: t0 + 60 * MS,
        },
        Event::LockStats {
            tgid: 10,
            uaddr: a,
            op: 0x80,
            count: 7,
            total_ns: 3 * MS,
            max_ns: MS,
        },
    ]
}

/// The abba events applied, with the findings replay would report.
pub fn abba_model_named(beta_name: &str) -> (Model, Vec<Finding>) {
    let mut e = Engine::new(Limits::new(5_000 * MS), ());
    for ev in abba_events(beta_name) {
        e.apply(&ev).unwrap();
        if let Event::Scan { ts_ns } = ev {
            e.check(ts_ns);
        }
    }
    let end = e.model.last_ns;
    e.finish(end);
    (e.model, e.detectors.findings)
}

pub fn abba_model() -> (Model, Vec<Finding>) {
    abba_model_named("beta")
}

/// The trace-event format rules the writer promises: valid phases, every
/// thread track named, complete slices inside their thread's lifetime,
/// flows paired.
pub fn check_trace(v: &Value) {
    let evs = v["traceEvents"].as_array().expect("traceEvents");
    let mut named = std::collections::HashSet::new();
    for e in evs {
        let ph = e["ph"].as_str().expect("ph");
        assert!(["M", "X", "i", "s", "f"].contains(&ph), "{e}");
        if ph == "M" && e["name"] == "thread_name" {
            named.insert((e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()));
        }
        if ph != "M" {
            assert!(e["ts"].as_f64().unwrap() >= 0.0, "{e}");
        }
    }
    for e in evs.iter().filter(|e| e["ph"] == "X") {
        let k = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        assert!(named.contains(&k), "unnamed track {k:?}");
        assert!(e["dur"].as_f64().unwrap() >= 0.0, "{e}");
    }
    for w in evs.iter().filter(|e| e["cat"] == "wait") {
        let (ts, end) = (
            w["ts"].as_f64().unwrap(),
            w["ts"].as_f64().unwrap() + w["dur"].as_f64().unwrap(),
        );
        assert!(
            evs.iter().any(|l| l["cat"] == "thread"
                && l["tid"] == w["tid"]
                && l["pid"] == w["pid"]
                && l["ts"].as_f64().unwrap() <= ts
                && l["ts"].as_f64().unwrap() + l["dur"].as_f64().unwrap() >= end - 1e-6),
            "wait outside its thread's lifetime: {w}"
        );
    }
    for s in evs.iter().filter(|e| e["ph"] == "s") {
        assert!(
            evs.iter().any(|f| f["ph"] == "f" && f["id"] == s["id"]),
            "{s}"
        );
    }
}
