//! Root integration tests of the thread lifecycle findings.

mod common;

use std::{collections::BTreeSet, process::Command, time::Duration};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(60);

fn observer() -> Command {
    Command::new(observer_bin())
}

/// `observer run` to completion: (report, fixture stdout).
fn run(argv: &[String], extra: &[&str]) -> (Value, Vec<String>) {
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--quiet", "--report"])
            .arg(&rep)
            .args(extra)
            .arg("--")
            .args(argv);
        c
    });
    let st = p.wait_exit(T);
    assert_eq!(st.code(), Some(0), "{:?}", p.stderr);
    let r = read_json(&rep);
    // With uprobes asked for, a race or a missing library must not pass
    // for "no finding"; the default mode places none.
    if extra
        .iter()
        .any(|a| *a == "--thread-uprobes" || *a == "--uprobes")
    {
        assert_uprobes_attached(&r);
    } else {
        assert_eq!(
            r["uprobes_attached"].as_u64(),
            Some(0),
            "default mode: no uprobes"
        );
    }
    (r, p.stdout.clone())
}

fn bin(name: &str) -> Vec<String> {
    vec![fixture(name).display().to_string()]
}

fn findings<'a>(r: &'a Value, kind: &str) -> Vec<&'a Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .collect()
}

#[test]
#[ignore = "needs root and BPF"]
fn unjoined_threads_are_counted_exactly() {
    unjoined(&["--hooks", "syscalls"]);
}

/// The same with waits learnt at sched_switch: no exit_group hook, the
/// descriptors are read at the last thread's exit.
#[test]
#[ignore = "needs root and BPF"]
fn unjoined_threads_are_counted_exactly_with_sched_waits() {
    unjoined(&["--hooks", "sched"]);
}

/// A process that joined twenty thousand threads first (more than the
/// kernel's table of ended threads holds) still has exactly its five
/// leaked ones found: the table keeps one entry per descriptor glibc
/// reuses, not one per thread ever ended.
#[test]
#[ignore = "needs root and BPF"]
fn unjoined_threads_are_found_after_twenty_thousand_joined_ones() {
    for extra in [&["--hooks", "syscalls"][..], &["--hooks", "sched"][..]] {
        let mut argv = bin("unjoined");
        argv.push("20000".into());
        let (r, out) = run(&argv, extra);
        assert_eq!(
            leaky_found(&r, &out),
            leaky_want(&out),
            "{extra:?}: exactly the five leaky threads: {:#}",
            r["findings"]
        );
        assert_eq!(r["drops"]["exited_full"], 0, "{extra:?}: {:#}", r["drops"]);
        let lc = &r["processes"][0]["lifecycle"];
        assert_eq!(lc["created"], 20009, "{extra:?}: {lc:#}");
        assert_eq!(lc["exited"], 20010, "{extra:?}: {lc:#}");
    }
    assert_no_programs_left();
}

/// The threads of the (one) unjoined_thread finding.
fn leaky_found(r: &Value, out: &[String]) -> BTreeSet<u64> {
    let f = findings(r, "unjoined_thread");
    assert_eq!(f.len(), 1, "{:#} {out:?}", r["findings"]);
    f[0]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_u64().unwrap())
        .collect()
}

fn leaky_want(out: &[String]) -> BTreeSet<u64> {
    (1..=5)
        .map(|i| tid_of(out, &format!("leaky-{i}")) as u64)
        .collect()
}

fn unjoined(extra: &[&str]) {
    let (r, out) = run(&bin("unjoined"), extra);
    assert_eq!(
        leaky_found(&r, &out),
        leaky_want(&out),
        "exactly the five leaky threads"
    );
    let f = findings(&r, "unjoined_thread");
    for t in f[0]["threads"].as_array().unwrap() {
        assert!(
            t["created_at"]
                .as_str()
                .unwrap()
                .starts_with("spawn_leaky (unjoined.c:"),
            "{t:#}"
        );
    }
    assert!(
        f[0]["summary"]
            .as_str()
            .unwrap()
            .starts_with("5 joinable thread(s)")
    );
    // the joined and detached ones are recorded as such (no uprobes: the
    // join waits on the thread's CLONE_CHILD_CLEARTID word)
    let joined = report_thread(&r, tid_of(&out, "joined-1"));
    assert_eq!(joined["joined"], true);
    assert_eq!(joined["joined_by"], r["processes"][0]["tgid"]);
    assert_eq!(report_thread(&r, tid_of(&out, "joined-2"))["joined"], true);
    assert_eq!(
        report_thread(&r, tid_of(&out, "detached"))["detached"],
        true
    );
    assert_eq!(
        report_thread(&r, tid_of(&out, "self-detach"))["detached"],
        true
    );
    assert_eq!(
        r["findings"].as_array().unwrap().len(),
        1,
        "{:#}",
        r["findings"]
    );
    let lc = &r["processes"][0]["lifecycle"];
    assert_eq!(lc["created"], 9, "{lc:#}");
    assert_eq!(lc["exited"], 10, "{lc:#}");
    assert_eq!(lc["alive_at_end"], 0);
    // main's join of joined-1 sleeps (it lives 10 ms): a join, not contention
    let jw = lc["join_waits"]["count"].as_u64().unwrap();
    assert!((1..=2).contains(&jw), "{lc:#}");
    assert!(
        r["waits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["op"] != "WAIT_BITSET"),
        "no join word among the contended futexes: {:#}",
        r["waits"]
    );
    assert_no_programs_left();
}

#[test]
#[ignore = "needs root and BPF"]
fn joins_and_detaches_after_exit_are_read_from_the_descriptors() {
    // Joins that never waited and a late detach leave no kernel event:
    // they are read from glibc's descriptors at exit_group.
    let (r, out) = run(&bin("join_late"), &[]);
    let f = findings(&r, "unjoined_thread");
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    let leaked = tid_of(&out, "leaked") as u64;
    let got: Vec<u64> = f[0]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_u64().unwrap())
        .collect();
    assert_eq!(got, vec![leaked], "{:#}", f[0]);
    let t = &f[0]["threads"][0];
    assert!(
        t["created_at"]
            .as_str()
            .unwrap()
            .starts_with("spawn (join_late.c:"),
        "{t:#}"
    );
    // the creation stack goes on to main
    let stack: Vec<&str> = t["creation_stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(stack[0].starts_with("spawn (join_late.c:"), "{stack:?}");
    assert!(
        stack.iter().any(|s| s.starts_with("main (join_late.c:")),
        "{stack:?}"
    );
    assert_eq!(report_thread(&r, tid_of(&out, "early"))["joined"], true);
    assert_eq!(
        report_thread(&r, tid_of(&out, "late-detach"))["detached"],
        true
    );
    assert_no_programs_left();
}

#[test]
#[ignore = "needs root and BPF"]
fn thread_uprobes_are_opt_in_and_agree() {
    // The opt-in uprobes see the same joins and detaches.
    let (r, out) = run(&bin("unjoined"), &["--thread-uprobes"]);
    let f = findings(&r, "unjoined_thread");
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    assert_eq!(f[0]["threads"].as_array().unwrap().len(), 5);
    assert_eq!(report_thread(&r, tid_of(&out, "joined-1"))["joined"], true);
    assert_eq!(
        report_thread(&r, tid_of(&out, "detached"))["detached"],
        true
    );
    assert_no_programs_left();
}

#[test]
#[ignore = "needs root and BPF"]
fn a_pool_that_never_reaps_is_a_thread_leak() {
    let (r, _) = run(&bin("pool_grow"), &[]);
    let f = findings(&r, "thread_leak");
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    let survivors = f[0]["threads"].as_array().unwrap();
    assert!(survivors.len() >= 20, "{}", survivors.len());
    assert!(survivors.iter().all(|t| {
        t["created_at"]
            .as_str()
            .unwrap()
            .starts_with("spawn_worker (pool_grow.c:")
    }));
    let s = f[0]["summary"].as_str().unwrap();
    assert!(s.contains("from spawn_worker"), "{s}");
    // 20 threads/s by construction; allow for scheduling noise
    let slope: f64 = s
        .split('(')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((12.0..=25.0).contains(&slope), "{s}");
    assert!(
        findings(&r, "unjoined_thread").is_empty(),
        "the workers are detached"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn a_burst_of_short_threads_is_churn_and_not_unjoined() {
    let (r, _) = run(&bin("churn"), &[]);
    let f = findings(&r, "thread_churn");
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    let s = f[0]["summary"].as_str().unwrap();
    assert!(s.contains("(2000 in all;"), "{s}");
    assert!(s.contains("2000 at run_task (churn.c:"), "{s}");
    assert!(
        findings(&r, "unjoined_thread").is_empty(),
        "every thread was joined: {:#}",
        r["findings"]
    );
    assert_eq!(r["threads"].as_array().unwrap().len(), 2001);
    assert_eq!(r["drops"]["ringbuf"], 0);
}

/// The live lines of a churn: each second's first lines, then one count
/// for the rest of it; every thread is told, listed or counted.
#[test]
#[ignore = "needs root and BPF"]
fn live_lines_fold_a_churn() {
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--report"])
            .arg(&rep)
            .arg("--")
            .args(bin("churn"));
        c
    });
    assert_eq!(p.wait_exit(T).code(), Some(0), "{:?}", p.stderr);
    let listed = |what: &str| p.stderr.iter().filter(|l| l.contains(what)).count() as u64;
    let counted = |what: &str| -> u64 {
        p.stderr
            .iter()
            .filter_map(|l| l.split_once("more threads created, "))
            .map(|(a, b)| {
                let n = |s: &str| s.trim().parse::<u64>().unwrap();
                let created = n(a.rsplit(' ').nth(1).unwrap());
                let exited = n(b.split(' ').next().unwrap());
                if what == "created" { created } else { exited }
            })
            .sum()
    };
    let folds = p
        .stderr
        .iter()
        .filter(|l| l.contains("more threads created,"))
        .count();
    assert!(folds >= 1, "a churn of 2000 is folded: {:#?}", p.stderr);
    assert!(
        listed("+ thread") <= 2 * 20 * folds as u64,
        "{} creation lines for {folds} folded seconds",
        listed("+ thread")
    );
    assert_eq!(
        listed("+ thread") + counted("created"),
        2000,
        "{:#?}",
        p.stderr
    );
    // The 2000 and the main thread.
    assert_eq!(
        listed("- thread") + counted("exited"),
        2001,
        "{:#?}",
        p.stderr
    );
    let r = read_json(&rep);
    assert_eq!(r["threads"].as_array().unwrap().len(), 2001);
}

#[test]
#[ignore = "needs root and BPF"]
fn a_detached_thread_exiting_is_no_finding() {
    let (r, out) = run(&bin("detached_ok"), &[]);
    assert!(
        r["findings"].as_array().unwrap().is_empty(),
        "{:#}",
        r["findings"]
    );
    // The scenario was observed: the thread was seen created detached, and
    // exiting, while its process lived on.
    let t = report_thread(&r, tid_of(&out, "detached"));
    assert_eq!(t["detached"], true, "{t:#}");
    assert!(t["exit_ns"].as_u64().is_some(), "{t:#}");
    assert!(!t["preexisting"].as_bool().unwrap(), "{t:#}");
    let main = report_thread(&r, r["processes"][0]["tgid"].as_u64().unwrap() as u32);
    assert!(
        main["exit_ns"].as_u64().unwrap() > t["exit_ns"].as_u64().unwrap(),
        "main outlived it: {main:#}"
    );
}

/// Runs a fixture that hangs, waits for a stuck_thread finding, stops with SIGINT.
fn stuck(argv: &[String]) -> (Value, Vec<String>) {
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--stuck", "1", "--report"])
            .arg(&rep)
            .arg("--")
            .args(argv);
        c
    });
    obs.wait_stderr(T, |l| l.starts_with("Stuck thread"));
    obs.signal(libc::SIGINT);
    obs.wait_exit(T);
    (read_json(&rep), obs.stdout.clone())
}

#[test]
#[ignore = "needs root and BPF"]
fn a_worker_stuck_in_read_is_a_stuck_thread() {
    let (r, out) = stuck(&bin("stuck_read"));
    let f = findings(&r, "stuck_thread");
    assert_eq!(
        f.len(),
        1,
        "only the reader (main merely joins it): {:#}",
        r["findings"]
    );
    let t = &f[0]["threads"][0];
    assert_eq!(t["tid"], tid_of(&out, "reader"));
    assert_eq!(t["name"], "reader");
    assert_eq!(t["blocked_in"], "syscall read");
    assert_no_programs_left();
}

#[test]
#[ignore = "needs root and BPF"]
fn a_python_worker_that_never_finishes_is_a_stuck_thread() {
    let argv = vec![
        "python3".to_string(),
        python_fixture("stuck_worker").display().to_string(),
    ];
    let (r, out) = stuck(&argv);
    let f = findings(&r, "stuck_thread");
    let stuck_tid = tid_of(&out, "stuck");
    let mine: Vec<_> = f
        .iter()
        .filter(|f| f["threads"][0]["tid"] == stuck_tid)
        .collect();
    assert_eq!(mine.len(), 1, "{:#}", r["findings"]);
    assert!(
        mine[0]["threads"][0]["blocked_in"]
            .as_str()
            .unwrap()
            .starts_with("futex wait on"),
        "{:#}",
        mine[0]
    );
    assert!(
        !f.iter()
            .any(|f| f["threads"][0]["tid"] == tid_of(&out, "busy")),
        "busy ran: {:#}",
        r["findings"]
    );
    assert_no_programs_left();
}

/// One creation site reached through two callers, and a second site: the
/// kernel sends a creation stack once per path and matches later clones
/// against it (creation-stack signatures). Every thread must keep its own
/// path: the two callers of `spawn` never share a stack, and none is lost.
#[test]
#[ignore = "needs root and BPF"]
fn creation_stacks_sent_once_per_path_stay_each_threads_own() {
    const N: usize = 100;
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        // -v gives the counts line; RUST_LOG would override it
        c.env_remove("RUST_LOG")
            .args(["-v", "run", "--quiet", "--report"])
            .arg(&rep)
            .arg("--")
            .args(bin("creation_paths"))
            .arg(N.to_string());
        c
    });
    let st = p.wait_exit(T);
    assert_eq!(st.code(), Some(0), "{:?}", p.stderr);
    let r = read_json(&rep);
    let f = findings(&r, "unjoined_thread");
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    let threads = f[0]["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 4 * N, "every thread exited unjoined");
    let mut by_path: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for t in threads {
        let name = t["name"].as_str().unwrap();
        let stack: Vec<&str> = t["creation_stack"]
            .as_array()
            .unwrap_or_else(|| panic!("no creation stack: {t:#}"))
            .iter()
            .map(|f| f.as_str().unwrap().split(' ').next().unwrap())
            .collect();
        let want: &[&str] = match name.split('-').next().unwrap() {
            "one" => &["spawn", "from_one", "main"],
            "two" => &["spawn", "from_two", "main"],
            "other" => &["spawn_other", "main"],
            _ => panic!("unexpected thread {t:#}"),
        };
        assert!(stack.starts_with(want), "{name}: {stack:?}");
        *by_path
            .entry((want[0].to_string(), want[1].to_string()))
            .or_default() += 1;
    }
    let counts: Vec<usize> = by_path.values().copied().collect();
    assert_eq!(counts, vec![N, 2 * N, N], "{by_path:?}");
    // The signature path ran (how many copies come first depends on how
    // fast this build unwinds the first one of each path).
    let line = p
        .stderr
        .iter()
        .find(|l| l.contains("creation stacks:"))
        .unwrap_or_else(|| panic!("{:?}", p.stderr));
    let known: u64 = line
        .split(", ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(known > 0, "{line}");
    assert_no_programs_left();
}
