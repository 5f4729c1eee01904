//! The detectors offline: real runs of the fixtures, recorded once with
//! `--record` (`cargo xtask record`, see observer/tests/data/recordings/),
//! replayed through the same code as `observer replay`, and the exact
//! findings asserted: kind, threads by name, locks by symbol, the cycle.
//! No root, no BPF, no target.

use std::{collections::BTreeSet, io::Read};

use super::{Finding, FindingKind, Limits};
use crate::model::Model;

fn recording(name: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/recordings");
    let plain = format!("{dir}/{name}.jsonl");
    if let Ok(s) = std::fs::read_to_string(&plain) {
        return s;
    }
    let gz = std::fs::File::open(format!("{plain}.gz"))
        .unwrap_or_else(|e| panic!("no recording {plain}(.gz): {e}"));
    let mut s = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut s)
        .expect("gzip recording");
    s
}

/// Replays a recording with the thresholds it was recorded with.
fn replay(name: &str, long_wait_s: f64, stuck_s: f64) -> (Model, Vec<Finding>) {
    let (_, events) =
        crate::recording::parse(recording(name).as_bytes(), name).expect("recording parses");
    let limits = Limits {
        stuck_ns: (stuck_s * 1e9) as u64,
        ..Limits::new((long_wait_s * 1e9) as u64)
    };
    let engine = crate::replay::replay(&events, limits, crate::replay::REPLAY_CHECK_NS);
    (engine.model, engine.detectors.findings)
}

fn name_of(m: &Model, tgid: u32, tid: u32) -> String {
    m.processes[&tgid]
        .threads
        .iter()
        .rev()
        .find(|t| t.tid == tid)
        .map(|t| t.name().to_string())
        .unwrap_or_else(|| format!("?{tid}"))
}

fn sym(l: &super::LockInfo) -> String {
    l.symbol.clone().unwrap_or_else(|| l.addr_hex.clone())
}

/// What a finding says, by names: (kind, threads, locks, cycle as
/// (waiter, holder, lock, site)).
#[allow(clippy::type_complexity)]
fn said(
    m: &Model,
    f: &Finding,
) -> (
    FindingKind,
    Vec<String>,
    BTreeSet<String>,
    BTreeSet<(String, String, String, String)>,
) {
    let threads = f.threads.iter().map(|t| t.name.clone()).collect();
    let locks = f.locks.iter().map(sym).collect();
    let cycle = f
        .cycle
        .iter()
        .map(|e| {
            (
                name_of(m, f.tgid, e.waiter_tid),
                name_of(m, f.tgid, e.holder_tid),
                sym(&e.lock),
                e.site.clone().unwrap_or_default(),
            )
        })
        .collect();
    (f.kind, threads, locks, cycle)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn edges(v: &[(&str, &str, &str, &str)]) -> BTreeSet<(String, String, String, String)> {
    v.iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect()
}

fn only(name: &str, long_wait_s: f64, stuck_s: f64) -> (Model, Finding) {
    let (m, f) = replay(name, long_wait_s, stuck_s);
    let shown: Vec<_> = f
        .iter()
        .map(|f| (f.kind, crate::report::findings::summary(f)))
        .collect();
    assert_eq!(f.len(), 1, "{name}: exactly one finding: {shown:#?}");
    (m, f.into_iter().next().unwrap())
}

#[test]
fn abba_is_a_two_thread_deadlock() {
    let (m, f) = only("abba", 5.0, 10.0);
    let (kind, mut threads, locks, cycle) = said(&m, &f);
    threads.sort();
    assert_eq!(kind, FindingKind::Deadlock);
    assert_eq!(threads, s(&["alpha", "beta"]));
    assert_eq!(locks, set(&["lock_a", "lock_b"]));
    assert_eq!(
        cycle,
        edges(&[
            ("alpha", "beta", "lock_b", ""),
            ("beta", "alpha", "lock_a", "")
        ])
    );
    for t in &f.threads {
        assert!(
            t.created_at
                .as_deref()
                .unwrap()
                .starts_with("main (abba.c:"),
            "{:?}",
            t.created_at
        );
    }
}

#[test]
fn pi_abba_is_a_pi_deadlock() {
    let (m, f) = only("pi_abba", 5.0, 10.0);
    let (kind, mut threads, locks, cycle) = said(&m, &f);
    threads.sort();
    assert_eq!(kind, FindingKind::PiDeadlock);
    assert_eq!(threads, s(&["pi-1", "pi-2"]));
    assert_eq!(locks, set(&["pi_a", "pi_b"]));
    assert_eq!(
        cycle,
        edges(&[("pi-1", "pi-2", "pi_b", ""), ("pi-2", "pi-1", "pi_a", "")])
    );
}

#[test]
fn a_thread_gone_with_its_lock_orphans_the_waiter() {
    let (m, f) = only("orphan_exit", 5.0, 10.0);
    let (kind, threads, locks, cycle) = said(&m, &f);
    assert_eq!(kind, FindingKind::OrphanedLock);
    assert_eq!(threads, s(&["victim"]));
    assert_eq!(locks, set(&["orphan_lock"]));
    assert!(cycle.is_empty());
}

#[test]
fn a_lost_condvar_wakeup_is_a_long_wait() {
    let (m, f) = only("lost_wakeup", 0.5, 10.0);
    let (kind, threads, locks, _) = said(&m, &f);
    assert_eq!(kind, FindingKind::LongWait);
    assert_eq!(threads, s(&["waiter"]));
    assert_eq!(locks, set(&["lost_cond"]));
    assert_eq!(f.locks[0].kind, crate::graph::LockKind::Condvar);
    // with the default threshold (5 s) the 3 s recording has no finding
    assert!(replay("lost_wakeup", 5.0, 10.0).1.is_empty());
}

#[test]
fn a_reader_that_never_returns_is_stuck() {
    let (m, f) = only("stuck_read", 5.0, 1.0);
    let (kind, threads, _, _) = said(&m, &f);
    assert_eq!(kind, FindingKind::StuckThread);
    assert_eq!(threads, s(&["reader"]));
    assert_eq!(f.threads[0].blocked_in.as_deref(), Some("syscall read"));
}

#[test]
fn five_leaky_threads_are_unjoined() {
    let (m, f) = only("unjoined", 5.0, 10.0);
    let (kind, mut threads, _, _) = said(&m, &f);
    threads.sort();
    assert_eq!(kind, FindingKind::UnjoinedThread);
    assert_eq!(
        threads,
        s(&["leaky-1", "leaky-2", "leaky-3", "leaky-4", "leaky-5"])
    );
    for t in &f.threads {
        assert!(
            t.created_at
                .as_deref()
                .unwrap()
                .starts_with("spawn_leaky (unjoined.c:"),
            "{:?}",
            t.created_at
        );
    }
    let summary = crate::report::findings::summary(&f);
    assert!(summary.starts_with("5 joinable thread(s)"), "{summary}");
}

#[test]
fn a_pool_that_never_reaps_leaks() {
    let (m, f) = only("pool_grow", 5.0, 10.0);
    let (kind, threads, _, _) = said(&m, &f);
    assert_eq!(kind, FindingKind::ThreadLeak);
    assert!(!threads.is_empty());
    assert!(threads.iter().all(|n| n == "pool-worker"), "{threads:?}");
    for t in &f.threads {
        assert!(
            t.created_at
                .as_deref()
                .unwrap()
                .starts_with("spawn_worker (pool_grow.c:"),
            "{:?}",
            t.created_at
        );
    }
}

#[test]
fn a_burst_of_short_threads_is_churn() {
    let (_, f) = only("churn", 5.0, 10.0);
    assert_eq!(f.kind, FindingKind::ThreadChurn);
    assert!(f.threads.is_empty() && f.locks.is_empty());
}

#[test]
fn ab_then_ba_in_one_thread_is_an_inversion() {
    let (m, f) = only("order_ab_ba", 5.0, 10.0);
    let (kind, threads, locks, cycle) = said(&m, &f);
    assert_eq!(kind, FindingKind::LockOrderInversion);
    assert_eq!(threads, s(&["order_ab_ba"]));
    assert_eq!(locks, set(&["lock_a", "lock_b"]));
    assert_eq!(
        cycle,
        edges(&[
            (
                "order_ab_ba",
                "order_ab_ba",
                "lock_b",
                "take_a_then_b (order_ab_ba.c:15)"
            ),
            (
                "order_ab_ba",
                "order_ab_ba",
                "lock_a",
                "take_b_then_a (order_ab_ba.c:23)"
            ),
        ])
    );
    for e in &f.cycle {
        // the stack where the edge was first seen, unwound live
        let funcs: Vec<&str> = e
            .frames
            .iter()
            .filter_map(|f| f.function.as_deref())
            .collect();
        assert!(funcs.contains(&"main"), "{funcs:?}");
    }
}

#[test]
fn a_thread_exiting_with_two_locks_held() {
    let (m, f) = only("exit_held", 5.0, 10.0);
    let (kind, threads, locks, _) = said(&m, &f);
    assert_eq!(kind, FindingKind::ExitHoldingLock);
    assert_eq!(threads, s(&["quitter"]));
    assert_eq!(locks, set(&["first_lock", "second_lock"]));
}
