//! The detectors offline: real runs of the fixtures, recorded once with
//! `--record` (`cargo xtask record`, see observer/tests/data/recordings/),
//! replayed through the same code as `observer replay`, and the exact
//! findings asserted: kind, threads by name, locks by symbol, the cycle.
//! No root, no BPF, no target.

use std::{collections::BTreeSet, io::Read};

use super::{Finding, FindingKind, Limits};
use crate::model::Model;

pub(super) fn recording(name: &str) -> String {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../observer/tests/data/recordings"
    );
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
pub(super) fn replay(name: &str, long_wait_s: f64, stuck_s: f64) -> (Model, Vec<Finding>) {
    let (_, events) =
        crate::recording::parse(recording(name).as_bytes(), name).expect("recording parses");
    let limits = Limits {
        stuck_ns: (stuck_s * 1e9) as u64,
        ..Limits::new((long_wait_s * 1e9) as u64)
    };
    let engine = crate::replay::replay(&events, limits, crate::replay::REPLAY_CHECK_NS, &mut ());
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

pub(super) fn only(name: &str, long_wait_s: f64, stuck_s: f64) -> (Model, Finding) {
    let (m, f) = replay(name, long_wait_s, stuck_s);
    let shown: Vec<_> = f.iter().map(|f| (f.kind, f.summary())).collect();
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
    // the waiter, then the thread it holds up (main joins it)
    assert_eq!(threads, s(&["waiter", "main"]));
    assert_eq!(locks, set(&["lost_cond"]));
    let super::Detail::LongWait { held_up, .. } = &f.detail else {
        panic!("{:?}", f.detail)
    };
    assert_eq!(held_up, &vec![f.threads[1].tid]);
    assert_eq!(f.locks[0].kind, crate::graph::LockKind::Condvar);
    // with the default threshold (5 s) the 3 s recording has no finding
    assert!(replay("lost_wakeup", 5.0, 10.0).1.is_empty());
}

#[test]
fn a_reader_that_never_returns_is_stuck() {
    let (m, f) = only("stuck_read", 5.0, 1.0);
    let (kind, threads, _, _) = said(&m, &f);
    assert_eq!(kind, FindingKind::StuckThread);
    // the reader, then main, which joins it
    assert_eq!(threads, s(&["reader", "stuck_read"]));
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
    let summary = f.summary();
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

/// Idle is not a hang: synthetic processes, one wait at a time.
mod idle {
    use crate::{
        detect::{Detail, FindingKind, Limits},
        engine::Engine,
        event::{Event, Wait, WaitOrigin},
        graph::{WaitForGraph, idle::idle_threads},
    };

    const S: u64 = 1_000_000_000;
    const COND: u64 = 0x5000;

    fn seen(e: &mut Engine, tid: u32, name: &str) {
        e.apply(&Event::ThreadSeen {
            ts_ns: 1,
            tgid: 100,
            tid,
            name: name.into(),
            parent_tid: None,
            start_ns: None,
        })
        .unwrap();
    }

    /// A wait on `uaddr` with memory `mem` (address -> u32) around it.
    fn wait(op: u32, val: u32, uaddr: u64, start_ns: u64, mem: &[(u64, u32)]) -> Wait {
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
            start_ns,
            ip: 0,
            sp: 0,
            bp: 0,
            words_addr: base,
            words,
            origin: WaitOrigin::Kernel,
        }
    }

    fn begin(e: &mut Engine, tid: u32, w: Wait) {
        e.apply(&Event::WaitBegin {
            ts_ns: w.start_ns,
            tgid: 100,
            tid,
            wait: w,
        })
        .unwrap();
    }

    /// pthread_cond_wait on COND: __g_signals[0] at +40, one waiter in __wrefs.
    fn cond_wait(e: &mut Engine, tid: u32, start: u64) {
        begin(e, tid, wait(0x189, 0, COND + 40, start, &[(COND + 36, 8)]));
    }

    /// `tid` joins `target` (a seeded thread: its TID word, a shared wait).
    fn join(e: &mut Engine, tid: u32, target: u32, start: u64) {
        let word = 0x9000_02d0 + u64::from(target) * 0x1000;
        begin(e, tid, wait(0x109, target, word, start, &[(word, target)]));
    }

    fn pool() -> Engine {
        let mut e = Engine::new(
            Limits {
                stuck_ns: S,
                ..Limits::new(S / 2)
            },
            (),
        );
        seen(&mut e, 100, "main");
        for w in 101..=104 {
            seen(&mut e, w, &format!("worker-{}", w - 100));
            cond_wait(&mut e, w, S);
        }
        e.model.symbols.insert((100, COND), "pool_cond".to_string());
        e
    }

    #[test]
    fn workers_waiting_for_work_nobody_waits_for_are_idle() {
        let mut e = pool();
        // Main keeps running (no wait); the workers have not run for 10 s.
        for w in 101..=104 {
            e.apply(&Event::ThreadStuck {
                ts_ns: 9 * S,
                tgid: 100,
                tid: w,
                since_ns: S,
                syscall: Some(202),
                wchan: "futex_do_wait".into(),
            })
            .unwrap();
        }
        assert!(e.check(11 * S).is_empty(), "{:#?}", e.findings());
        let p = e.model.process(100).unwrap();
        let idle = idle_threads(&e.model, p, &WaitForGraph::build(p));
        assert_eq!(idle.len(), 4, "{idle:?}");
        assert_eq!(
            idle[0],
            (
                101,
                "waiting for work on condvar pool_cond (0x5000)".to_string()
            )
        );
        let text = crate::report::text::summary(&e.model, S / 2);
        assert!(
            text.contains("idle: waiting for work on condvar pool_cond (0x5000)"),
            "{text}"
        );
    }

    #[test]
    fn an_idle_wait_someone_joins_is_a_long_wait() {
        let mut e = pool();
        join(&mut e, 100, 102, 2 * S);
        let found = e.check(3 * S);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.kind, FindingKind::LongWait);
        let tids: Vec<u32> = f.threads.iter().map(|t| t.tid).collect();
        assert_eq!(tids, vec![102, 100]);
        assert_eq!(f.locks[0].symbol.as_deref(), Some("pool_cond"));
        let Detail::LongWait { held_up, .. } = &f.detail else {
            panic!()
        };
        assert_eq!(held_up, &vec![100]);
        let summary = f.summary();
        assert!(
            summary.ends_with("; thread 100 \"main\" waits for it"),
            "{summary}"
        );
        // The other workers stay idle, and no second finding names the process.
        assert!(e.check(30 * S).is_empty(), "{:#?}", e.findings());
    }

    #[test]
    fn every_thread_blocked_is_one_finding() {
        let mut e = pool();
        // Main waits on the same condvar ("all done"): nothing can run.
        cond_wait(&mut e, 100, 2 * S);
        assert!(e.check(2 * S + S / 4).is_empty());
        let found = e.check(3 * S);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.kind, FindingKind::ProcessHung);
        let mut tids: Vec<u32> = f.threads.iter().map(|t| t.tid).collect();
        tids.sort();
        assert_eq!(tids, vec![100, 101, 102, 103, 104]);
        assert_eq!(f.locks.len(), 1);
        assert_eq!(f.locks[0].symbol.as_deref(), Some("pool_cond"));
        assert!(e.check(30 * S).is_empty(), "once");
        // One thread not in a futex wait (a worker woke): no hang.
        let mut e = pool();
        e.apply(&Event::WaitEnd {
            ts_ns: 2 * S,
            tgid: 100,
            tid: 103,
            start_ns: S,
            ret: Some(0),
        })
        .unwrap();
        cond_wait(&mut e, 100, 2 * S);
        assert!(e.check(30 * S).is_empty(), "{:#?}", e.findings());
    }

    #[test]
    fn a_mutex_wait_past_the_threshold_is_a_long_wait_nobody_joins() {
        let mut e = pool();
        // Main waits for a default mutex that worker-1 holds.
        let m = 0x6000;
        begin(
            &mut e,
            100,
            wait(0x80, 2, m, 2 * S, &[(m, 2), (m + 8, 101), (m + 16, 0)]),
        );
        let found = e.check(3 * S);
        // Main's lock wait names its holder, worker-1 (in a condvar wait
        // while it holds the mutex): one finding for both.
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].kind, FindingKind::LongWait);
        let tids: Vec<u32> = found[0].threads.iter().map(|t| t.tid).collect();
        assert_eq!(tids, vec![100, 101]);
    }

    /// Main waits in `Future.result()` (a semaphore wait underneath) for a
    /// future whose work item worker-2 runs: worker-2, idle-looking on its
    /// condvar, holds main up. A future no thread runs names no one. (A
    /// ticker that runs keeps the process from being wholly blocked.)
    #[test]
    fn a_worker_running_a_future_someone_waits_for_holds_them_up() {
        use crate::vocab::python::{PyFutureWait, PyThreadView, PyView};
        for runner in [Some(102), None] {
            let mut e = pool();
            seen(&mut e, 105, "ticker");
            begin(&mut e, 100, wait(0x189, 0, 0x7000, 2 * S, &[]));
            let t = |tid: u32| PyThreadView {
                tid,
                ident: u64::from(tid),
                name: None,
                frames: Vec::new(),
                wait: None,
                held: Vec::new(),
                joins: None,
                label: None,
                future: None,
            };
            let mut main = t(100);
            main.label = Some("Future.result() on fut".into());
            main.future = Some(PyFutureWait {
                addr: 0xf000,
                method: "Future.result".into(),
                runner,
                name: Some("fut".into()),
                source: None,
                timeout: false,
            });
            let mut threads = vec![main];
            threads.extend((101..=104).map(t));
            e.apply(&Event::PyState {
                ts_ns: 2 * S,
                tgid: 100,
                view: PyView {
                    version: "3.12.1".into(),
                    threads,
                    ..Default::default()
                },
            })
            .unwrap();
            e.model.symbols.insert((100, 0xf000), "fut".to_string());
            let found = e.check(3 * S);
            let Some(runner) = runner else {
                assert!(found.is_empty(), "{found:#?}");
                let p = e.model.process(100).unwrap();
                let idle = idle_threads(&e.model, p, &WaitForGraph::build(p));
                assert!(
                    idle.contains(&(100, "waiting in Future.result() on fut".to_string())),
                    "{idle:?}"
                );
                continue;
            };
            assert_eq!(found.len(), 1, "{found:#?}");
            let f = &found[0];
            assert_eq!(f.kind, FindingKind::LongWait);
            let tids: Vec<u32> = f.threads.iter().map(|t| t.tid).collect();
            assert_eq!(tids, vec![runner, 100]);
            assert_eq!(f.locks[0].symbol.as_deref(), Some("pool_cond"));
            let w = f.threads[1].waits_for.as_ref().unwrap();
            assert_eq!(w.kind, crate::graph::LockKind::Future);
            assert_eq!(w.addr, 0xf000);
            let Detail::LongWait { held_up, .. } = &f.detail else {
                panic!()
            };
            assert_eq!(held_up, &vec![100]);
            let summary = f.summary();
            assert!(
                summary.ends_with(
                    "; thread 100 \"main\" waits for future fut (0xf000), whose work item it runs"
                ),
                "{summary}"
            );
            // Main's own wait is not a finding: its worker is the story.
            assert!(e.check(30 * S).is_empty(), "{:#?}", e.findings());
        }
    }

    /// Workers 101 and 102 make up pool "crawler"; each waits in
    /// `Future.result()` for a `parse_page` queued behind it in that pool;
    /// main waits for the future worker 101 runs. A pool starvation naming
    /// the pool, both workers, the queued callables, and main held up. With
    /// one worker's future taken by a third thread, waited for with a
    /// timeout, or a worker the executor started but the view misses, none.
    #[test]
    fn every_worker_waiting_for_work_queued_in_its_own_pool_is_a_starvation() {
        use crate::vocab::python::{
            FutureSource, PyFutureWait, PyPool, PyQueued, PyThreadView, PyView,
        };
        const Q: u64 = 0x9000;
        for case in ["starved", "running", "timeout", "unseen"] {
            let starved = case == "starved";
            let mut e = pool();
            begin(&mut e, 100, wait(0x189, 0, 0x7000, 2 * S, &[]));
            let t = |tid: u32, fut: Option<(u64, Option<u32>, bool, &str)>| PyThreadView {
                tid,
                ident: u64::from(tid),
                name: None,
                frames: Vec::new(),
                wait: None,
                held: Vec::new(),
                joins: None,
                label: None,
                future: fut.map(|(addr, runner, queued, callable)| PyFutureWait {
                    addr,
                    method: "Future.result".into(),
                    runner,
                    name: Some("parsed".into()),
                    timeout: false,
                    source: Some(FutureSource::Pool {
                        pool: Q,
                        callable: Some(callable.into()),
                        queued,
                    }),
                }),
            };
            let second = if case == "running" {
                (0xf2, Some(103), false, "parse_page")
            } else {
                (0xf2, None, true, "parse_page")
            };
            let mut threads = vec![
                t(100, Some((0xf0, Some(101), false, "fetch_page"))),
                t(101, Some((0xf1, None, true, "parse_page"))),
                t(102, Some(second)),
                t(103, None),
                t(104, None),
            ];
            threads[2].future.as_mut().unwrap().timeout = case == "timeout";
            let queued = [0xf1, 0xf2]
                .iter()
                .take(if case == "running" { 1 } else { 2 })
                .map(|&f| PyQueued {
                    future: f,
                    callable: Some("parse_page".into()),
                })
                .collect();
            e.apply(&Event::PyState {
                ts_ns: 2 * S,
                tgid: 100,
                view: PyView {
                    version: "3.12.1".into(),
                    threads,
                    pools: vec![PyPool {
                        queue: Q,
                        executor: Some(0x8000),
                        prefix: Some("crawler".into()),
                        workers: vec![101, 102],
                        started: Some(if case == "unseen" { 3 } else { 2 }),
                        queued,
                    }],
                    ..Default::default()
                },
            })
            .unwrap();
            let found: Vec<crate::detect::Finding> = e
                .check(3 * S)
                .into_iter()
                .filter(|f| f.kind == FindingKind::PoolStarvation)
                .collect();
            if !starved {
                assert!(found.is_empty(), "{case}: {found:#?}");
                continue;
            }
            assert_eq!(found.len(), 1, "{found:#?}");
            let f = &found[0];
            assert!(f.kind.is_hang());
            let tids: Vec<u32> = f.threads.iter().map(|t| t.tid).collect();
            assert_eq!(tids, vec![101, 102, 100]);
            let Detail::PoolStarvation(p) = &f.detail else {
                panic!()
            };
            assert_eq!(p.name, "crawler");
            assert_eq!(p.workers, vec![101, 102]);
            assert_eq!(p.waited, vec!["parse_page", "parse_page"]);
            assert_eq!(p.queued, vec!["parse_page", "parse_page"]);
            let addrs: Vec<u64> = f.locks.iter().map(|l| l.addr).collect();
            assert_eq!(addrs, vec![0xf1, 0xf2]);
            assert_eq!(
                f.summary(),
                "thread pool \"crawler\" is starved: all 2 of its workers (101 \"worker-1\", 102 \"worker-2\") wait for work queued behind them in the same pool (parse_page, parse_page), which no worker is left to run"
            );
            // Main waits for a worker: held up, not a finding of its own.
            assert!(
                e.check(30 * S)
                    .iter()
                    .all(|f| f.threads.iter().all(|t| t.tid != 100))
            );
        }
    }
}
