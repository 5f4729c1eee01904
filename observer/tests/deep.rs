//! Root integration tests of the deep tier (--uprobes): lock-order
//! inversions, holders of semaphores and Python locks, hold times, locks
//! held at exit.

mod common;

use std::{collections::BTreeSet, process::Command, time::Duration};

use common::*;
use serde_json::Value;

// Python under --uprobes starts slowly (a uprobe hit per GIL lock call) and
// stopping takes ~0.1-0.2 s per uprobe: generous.
const T: Duration = Duration::from_secs(180);

fn observer() -> Command {
    Command::new(observer_bin())
}

fn run(argv: &[String], extra: &[&str], code: i32) -> (Value, Vec<String>) {
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--quiet", "--uprobes", "--report"])
            .arg(&rep)
            .args(extra)
            .arg("--")
            .args(argv);
        c
    });
    let st = p.wait_exit(T);
    assert_eq!(st.code(), Some(code), "{:?}", p.stderr);
    assert_no_programs_left();
    let r = read_json(&rep);
    assert_uprobes_attached(&r);
    (r, p.stdout.clone())
}

fn c(name: &str) -> Vec<String> {
    vec![fixture(name).display().to_string()]
}

fn py(name: &str) -> Vec<String> {
    vec!["python3".into(), python_fixture(name).display().to_string()]
}

fn findings<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

fn lock_syms(f: &Value) -> BTreeSet<String> {
    f["locks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["symbol"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The deep tier's profile of lock SYMBOL, generation GEN.
fn lock<'a>(r: &'a Value, sym: &str, generation: u64) -> &'a Value {
    r["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["symbol"] == sym && l["generation"] == generation)
        .unwrap_or_else(|| panic!("no {sym} (generation {generation}) in {:#}", r["locks"]))
}

/// (holder tid, holds) of a lock profile.
fn holders(l: &Value) -> BTreeSet<(u64, u64)> {
    l["top_holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_u64().unwrap(), h[1].as_u64().unwrap()))
        .collect()
}

#[test]
#[ignore = "needs root and BPF"]
fn single_thread_ab_then_ba_is_an_inversion() {
    let (r, _) = run(&c("order_ab_ba"), &[], 0);
    let f = findings(&r, "lock_order_inversion");
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    assert_eq!(
        lock_syms(f[0]),
        BTreeSet::from(["lock_a".to_string(), "lock_b".to_string()])
    );
    let cycle = f[0]["cycle"].as_array().unwrap();
    assert_eq!(cycle.len(), 2);
    let sites: BTreeSet<&str> = cycle.iter().map(|e| e["site"].as_str().unwrap()).collect();
    assert!(
        sites
            .iter()
            .any(|s| s.starts_with("take_a_then_b (order_ab_ba.c:")),
        "{sites:?}"
    );
    assert!(
        sites
            .iter()
            .any(|s| s.starts_with("take_b_then_a (order_ab_ba.c:")),
        "{sites:?}"
    );
    for e in cycle {
        // the stack where the edge was first seen
        let funcs: Vec<&str> = e["frames"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["function"].as_str())
            .collect();
        assert!(
            funcs.iter().any(|f| f.starts_with("take_")) && funcs.contains(&"main"),
            "{funcs:?}"
        );
    }
    assert_eq!(
        r["findings"].as_array().unwrap().len(),
        1,
        "no other finding: {:#}",
        r["findings"]
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn two_threads_serialized_by_a_gate_lock_are_no_finding() {
    let (r, _) = run(&c("order_gate"), &[], 0);
    assert!(
        findings(&r, "lock_order_inversion").is_empty(),
        "{:#}",
        r["findings"]
    );
    // Observed: both threads took all three locks, 100 times each (so both
    // orders of lock_a and lock_b were seen, under the gate).
    for sym in ["gate_lock", "lock_a", "lock_b"] {
        let l = lock(&r, sym, 0);
        assert_eq!(l["acquired"], 200, "{l:#}");
        let h = holders(l);
        assert!(h.len() == 2 && h.iter().all(|&(_, n)| n == 100), "{l:#}");
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn dining_philosophers_without_a_hang_is_a_five_lock_inversion() {
    let (r, _) = run(&c("philosophers_ok"), &[], 0);
    let f = findings(&r, "lock_order_inversion");
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    let want: BTreeSet<String> = ["forks[0]", "forks[1]", "forks[2]", "forks[3]", "forks[4]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(lock_syms(f[0]), want);
    assert_eq!(f[0]["cycle"].as_array().unwrap().len(), 5);
}

#[test]
#[ignore = "needs root and BPF"]
fn trylock_in_reverse_order_recursive_relock_and_reinit_are_no_finding() {
    for fx in ["trylock_ok", "recursive_ok", "destroy_reinit"] {
        let (r, out) = run(&c(fx), &[], 0);
        assert!(
            r["findings"].as_array().unwrap().is_empty(),
            "{fx}: {:#}",
            r["findings"]
        );
        // Observed: what each scenario does to its locks was seen.
        match fx {
            // each lock taken once by lock and once by a trylock
            "trylock_ok" => {
                for sym in ["lock_a", "lock_b"] {
                    assert_eq!(lock(&r, sym, 0)["acquired"], 2, "{fx}: {:#}", r["locks"]);
                }
            }
            // other contended while recur held it (recursively)
            "recursive_ok" => {
                let l = lock(&r, "rec_lock", 0);
                assert!(l["contended"].as_u64().unwrap() >= 1, "{fx}: {l:#}");
                let tids: BTreeSet<u64> = holders(l).iter().map(|h| h.0).collect();
                let want: BTreeSet<u64> = ["recur", "other"]
                    .iter()
                    .map(|n| tid_of(&out, n) as u64)
                    .collect();
                assert_eq!(tids, want, "{fx}: {l:#}");
            }
            // the locks before and after their re-initialisation are two
            _ => {
                for sym in ["lock_a", "lock_b"] {
                    for generation in [0, 1] {
                        let l = lock(&r, sym, generation);
                        assert_eq!(l["acquired"], 1, "{fx}: {l:#}");
                    }
                }
            }
        }
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn hold_time_of_a_200ms_hold() {
    let (r, out) = run(&c("hold_200ms"), &[], 0);
    let l = r["locks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["symbol"] == "hold_lock")
        .unwrap_or_else(|| panic!("{:#}", r["locks"]));
    let max = l["hold_max_ns"].as_u64().unwrap() as f64;
    let total = l["hold_total_ns"].as_u64().unwrap() as f64;
    assert!((max - 200e6).abs() <= 20e6, "max hold {max}");
    assert!((total - 600e6).abs() <= 60e6, "total hold {total}");
    assert_eq!(l["acquired"], 3);
    assert_eq!(l["top_holders"][0][0], tid_of(&out, "holder"));
    // 200 ms = 200000 us falls in bucket 17 ([131072, 262144) us)
    assert_eq!(l["hold_hist"][17], 3, "{:#}", l["hold_hist"]);
}

#[test]
#[ignore = "needs root and BPF"]
fn a_thread_exiting_with_two_mutexes_held() {
    let (r, out) = run(&c("exit_held"), &[], 0);
    let f = findings(&r, "exit_holding_lock");
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    assert_eq!(f[0]["threads"][0]["tid"], tid_of(&out, "quitter"));
    assert_eq!(
        lock_syms(f[0]),
        BTreeSet::from(["first_lock".to_string(), "second_lock".to_string()])
    );
}

/// A Python ABBA under --uprobes: the holders come from the lock uprobes,
/// so the two semaphore waits become a full cycle with the Python threads.
fn python_cycle(script: &str) {
    let (r, out) = run(&py(script), &["--kill-on-deadlock"], 3);
    let f = findings(&r, "deadlock");
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    let (a, b) = (tid_of(&out, "alpha") as u64, tid_of(&out, "beta") as u64);
    let edges: BTreeSet<(u64, u64)> = f[0]["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["waiter_tid"].as_u64().unwrap(),
                e["holder_tid"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(edges, BTreeSet::from([(a, b), (b, a)]));
    for t in f[0]["threads"].as_array().unwrap() {
        assert!(
            t["name"] == "alpha" || t["name"] == "beta",
            "Python names: {t:#}"
        );
        assert_eq!(t["python_frames"][0]["function"], "worker", "{t:#}");
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn python_lock_abba_is_a_full_cycle() {
    python_cycle("abba");
}

#[test]
#[ignore = "needs root and BPF"]
fn python_rlock_abba_is_a_full_cycle() {
    python_cycle("rlock_abba");
}

/// A program that takes two global mutexes in both orders and exits at
/// once (in well under 5 ms): gone before the observer reads anything of
/// it, its globals and call sites are still named (from the mappings the
/// kernel reported at exec), every time. The recording names them offline.
#[test]
#[ignore = "needs root and BPF"]
fn a_program_gone_within_5ms_still_names_its_locks_20_times() {
    for i in 0..20 {
        let dir = tmp();
        let rec = dir.path().join("r.jsonl");
        let (r, _) = run(&c("order_quick"), &["--record", rec.to_str().unwrap()], 0);
        let f = findings(&r, "lock_order_inversion");
        assert_eq!(f.len(), 1, "run {i}: {:#}", r["findings"]);
        assert_eq!(
            lock_syms(f[0]),
            BTreeSet::from(["global_left".to_string(), "global_right".to_string()]),
            "run {i}"
        );
        for e in f[0]["cycle"].as_array().unwrap() {
            let site = e["site"].as_str().unwrap();
            assert!(site.starts_with("main (order_quick.c:"), "run {i}: {site}");
        }
        // a lock in no finding is named in the lock table too
        let alone: Vec<_> = r["locks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["symbol"] == "global_alone")
            .collect();
        assert_eq!(alone.len(), 1, "run {i}: {:#}", r["locks"]);
        assert_eq!(alone[0]["acquired"], 1, "run {i}: {:#}", alone[0]);
        if i == 0 {
            // replay names them from the recorded mappings alone
            let text = std::fs::read_to_string(&rec).unwrap();
            let stripped: String = text
                .lines()
                .filter(|l| !l.contains(r#""ev":"symbol""#) && !l.contains(r#""ev":"code_symbol""#))
                .map(|l| format!("{l}\n"))
                .collect();
            let bare = dir.path().join("bare.jsonl");
            std::fs::write(&bare, stripped).unwrap();
            let rep = dir.path().join("replay.json");
            let st = observer()
                .arg("replay")
                .arg(&bare)
                .arg("--report")
                .arg(&rep)
                .output()
                .unwrap();
            assert!(st.status.success(), "{st:?}");
            let r = read_json(&rep);
            let f = findings(&r, "lock_order_inversion");
            assert_eq!(f.len(), 1, "{:#}", r["findings"]);
            assert_eq!(
                lock_syms(f[0]),
                BTreeSet::from(["global_left".to_string(), "global_right".to_string()])
            );
        }
    }
}
