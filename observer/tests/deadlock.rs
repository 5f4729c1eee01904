//! Root integration tests of the findings: every deadlocking fixture is
//! observed from its start (`run --kill-on-deadlock`) and after it already
//! hung (`attach --kill-on-deadlock` and `dump`), and the exact finding is
//! asserted: kind, threads, locks, cycle. Every fixture runs under a hard
//! timeout and is killed.

mod common;

use std::{collections::BTreeSet, process::Command, time::Duration};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const EXIT_HANG: i32 = 3;

fn observer() -> Command {
    Command::new(observer_bin())
}

/// What a finding must say: kind, and the cycle as (waiter, holder, lock)
/// named by the fixture's own thread names and lock symbols.
struct Expect<'a> {
    kind: &'a str,
    lock_kind: &'a str,
    edges: &'a [(&'a str, &'a str, &'a str)],
}

// The cycles of the fixtures, as every way of learning waits must find them.
const ABBA: Expect = Expect {
    kind: "deadlock",
    lock_kind: "mutex",
    edges: &[("alpha", "beta", "lock_b"), ("beta", "alpha", "lock_a")],
};
const RING3: Expect = Expect {
    kind: "deadlock",
    lock_kind: "mutex",
    edges: &[
        ("ring-0", "ring-1", "ring_lock_1"),
        ("ring-1", "ring-2", "ring_lock_2"),
        ("ring-2", "ring-0", "ring_lock_0"),
    ],
};
const SELFLOCK: Expect = Expect {
    kind: "deadlock",
    lock_kind: "mutex",
    edges: &[("selfish", "selfish", "self_lock")],
};
const RWLOCK_ABBA: Expect = Expect {
    kind: "deadlock",
    lock_kind: "rwlock",
    edges: &[
        ("writer-1", "writer-2", "rw_b"),
        ("writer-2", "writer-1", "rw_a"),
    ],
};

fn hang_findings(r: &Value) -> Vec<&Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] != "long_wait")
        .collect()
}

fn lock_addr(out: &[String], sym: &str) -> u64 {
    fixture_locks(out)
        .into_iter()
        .find(|(n, _)| n == sym)
        .unwrap_or_else(|| panic!("fixture printed no lock {sym}: {out:?}"))
        .1
}

/// Symbol the observer should print for a fixture lock: as the source
/// spells it (`forks[2]`, from DWARF).
fn symbol_for(sym: &str) -> String {
    sym.to_string()
}

fn check(r: &Value, out: &[String], e: &Expect) {
    let found = hang_findings(r);
    assert_eq!(
        found.len(),
        1,
        "exactly one hang finding expected: {:#}",
        r["findings"]
    );
    let f = found[0];
    assert_eq!(f["kind"], e.kind, "{f:#}");
    let want: BTreeSet<(u32, u32, u64)> = e
        .edges
        .iter()
        .map(|(w, h, l)| (tid_of(out, w), tid_of(out, h), lock_addr(out, l)))
        .collect();
    let got: BTreeSet<(u32, u32, u64)> = f["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["waiter_tid"].as_u64().unwrap() as u32,
                c["holder_tid"].as_u64().unwrap() as u32,
                c["lock"]["addr"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "cycle edges: {f:#}");
    for c in f["cycle"].as_array().unwrap() {
        assert_eq!(c["lock"]["kind"], e.lock_kind, "{c:#}");
        let (_, _, sym) = e
            .edges
            .iter()
            .find(|(_, _, l)| lock_addr(out, l) == c["lock"]["addr"].as_u64().unwrap())
            .unwrap();
        assert_eq!(c["lock"]["symbol"], symbol_for(sym).as_str(), "{c:#}");
    }
    // every waiter is named with its thread name
    for (w, _, _) in e.edges {
        let tid = tid_of(out, w);
        let t = f["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == tid)
            .unwrap_or_else(|| panic!("{w} not in {f:#}"));
        assert_eq!(t["name"], *w);
    }
}

/// `observer run --kill-on-deadlock` on a fixture: the report and its stdout.
fn run_hang(fixture: &str, extra: &[&str]) -> (Value, Vec<String>) {
    let bin = fixture_path(fixture);
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--quiet", "--kill-on-deadlock", "--report"])
            .arg(&rep)
            .args(extra)
            .arg("--");
        c.args(&bin);
        c
    });
    let st = p.wait_exit(T);
    assert_eq!(
        st.code(),
        Some(EXIT_HANG),
        "run must end with exit 3 on a hang\n{:?}\n{:?}",
        p.stdout,
        p.stderr
    );
    (read_json(&rep), p.stdout.clone())
}

fn fixture_path(name: &str) -> Vec<String> {
    if name.ends_with(".py") {
        vec![
            "python3".into(),
            python_fixture(name.trim_end_matches(".py"))
                .display()
                .to_string(),
        ]
    } else {
        vec![fixture(name).display().to_string()]
    }
}

/// Starts a fixture and waits until it has hung (`ready`).
fn start_hung(fixture: &str) -> Proc {
    let argv = fixture_path(fixture);
    let mut p = Proc::spawn({
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    // let the last waiter reach the kernel
    std::thread::sleep(Duration::from_millis(100));
    p
}

/// `attach --kill-on-deadlock` on a hung fixture: exits 3, kills it; the report.
fn attach_kill(p: &mut Proc) -> Value {
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args([
            "attach",
            "--quiet",
            "--kill-on-deadlock",
            "-p",
            &p.pid().to_string(),
            "--report",
        ])
        .arg(&rep);
        c
    });
    assert_eq!(obs.wait_exit(T).code(), Some(EXIT_HANG), "{:?}", obs.stderr);
    let st = p.wait_exit(T);
    assert!(st.code().is_none(), "the hung target was killed");
    read_json(&rep)
}

/// `dump` and `attach --kill-on-deadlock` on a fixture that already hung.
fn attach_hang(fixture: &str, e: &Expect) {
    let mut p = start_hung(fixture);
    let (code, d) = dump_json(p.pid());
    assert_eq!(code, EXIT_HANG, "dump exits 3 on a deadlock: {d:#}");
    check(&d, &p.stdout, e);
    let r = attach_kill(&mut p);
    check(&r, &p.stdout, e);
    assert_no_programs_left();
}

fn both(fixture: &str, e: Expect) {
    let (r, out) = run_hang(fixture, &[]);
    check(&r, &out, &e);
    assert_no_programs_left();
    attach_hang(fixture, &e);
}

#[test]
#[ignore = "needs root and BPF"]
fn abba() {
    both("abba", ABBA);
}

#[test]
#[ignore = "needs root and BPF"]
fn ring_of_three() {
    both("ring3", RING3);
}

#[test]
#[ignore = "needs root and BPF"]
fn dining_philosophers() {
    both(
        "philosophers",
        Expect {
            kind: "deadlock",
            lock_kind: "mutex",
            edges: &[
                ("phil-0", "phil-1", "forks[1]"),
                ("phil-1", "phil-2", "forks[2]"),
                ("phil-2", "phil-3", "forks[3]"),
                ("phil-3", "phil-4", "forks[4]"),
                ("phil-4", "phil-0", "forks[0]"),
            ],
        },
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn self_relock_of_a_default_mutex() {
    both("selflock", SELFLOCK);
}

#[test]
#[ignore = "needs root and BPF"]
fn join_while_holding_the_lock_the_thread_needs() {
    let e = Expect {
        kind: "deadlock",
        lock_kind: "",
        edges: &[("main", "needy", ""), ("needy", "main", "join_lock")],
    };
    // The join edge's lock is the joined thread's TID word, not a fixture lock:
    // check it by hand.
    let verify = |r: &Value, out: &[String]| {
        let f = hang_findings(r);
        assert_eq!(f.len(), 1, "{:#}", r["findings"]);
        assert_eq!(f[0]["kind"], e.kind);
        let cycle = f[0]["cycle"].as_array().unwrap();
        assert_eq!(cycle.len(), 2, "{cycle:#?}");
        let (main, needy) = (tid_of(out, "main"), tid_of(out, "needy"));
        let join = cycle
            .iter()
            .find(|c| c["waiter_tid"] == main)
            .expect("main's edge");
        assert_eq!(join["holder_tid"], needy);
        assert_eq!(join["lock"]["kind"], "join");
        let m = cycle
            .iter()
            .find(|c| c["waiter_tid"] == needy)
            .expect("needy's edge");
        assert_eq!(m["holder_tid"], main);
        assert_eq!(m["lock"]["kind"], "mutex");
        assert_eq!(m["lock"]["addr"], lock_addr(out, "join_lock"));
        assert_eq!(m["lock"]["symbol"], "join_lock");
    };
    let (r, out) = run_hang("join_cycle", &[]);
    verify(&r, &out);
    let mut p = start_hung("join_cycle");
    let (code, d) = dump_json(p.pid());
    assert_eq!(code, EXIT_HANG);
    verify(&d, &p.stdout);
    let r = attach_kill(&mut p);
    verify(&r, &p.stdout);
    assert_no_programs_left();
}

#[test]
#[ignore = "needs root and BPF"]
fn rwlock_write_write_abba() {
    both("rwlock_abba", RWLOCK_ABBA);
}

#[test]
#[ignore = "needs root and BPF"]
fn pi_mutex_abba_is_a_pi_deadlock() {
    // Which thread gets EDEADLK depends on who comes second: accept either
    // orientation, but the finding must name both threads and both locks.
    let verify = |r: &Value, out: &[String], full_cycle: bool| {
        let f = hang_findings(r);
        assert_eq!(f.len(), 1, "{:#}", r["findings"]);
        assert_eq!(f[0]["kind"], "pi_deadlock", "{:#}", f[0]);
        let (p1, p2) = (tid_of(out, "pi-1"), tid_of(out, "pi-2"));
        let tids: BTreeSet<u64> = f[0]["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tid"].as_u64().unwrap())
            .collect();
        assert_eq!(tids, BTreeSet::from([p1 as u64, p2 as u64]), "{:#}", f[0]);
        let cycle = f[0]["cycle"].as_array().unwrap();
        let locks: BTreeSet<u64> = cycle
            .iter()
            .map(|c| c["lock"]["addr"].as_u64().unwrap())
            .collect();
        let (a, b) = (lock_addr(out, "pi_a"), lock_addr(out, "pi_b"));
        if full_cycle {
            assert_eq!(locks, BTreeSet::from([a, b]), "{cycle:#?}");
            assert_eq!(cycle.len(), 2);
        } else {
            // After the fact only the surviving PI wait is visible.
            assert_eq!(cycle.len(), 1, "{cycle:#?}");
            assert!(locks.is_subset(&BTreeSet::from([a, b])));
        }
        for c in cycle {
            assert_eq!(c["lock"]["kind"], "pi_mutex");
            assert!(
                c["lock"]["symbol"] == "pi_a" || c["lock"]["symbol"] == "pi_b",
                "{c:#}"
            );
        }
    };
    // The EDEADLK return: seen by the syscall hooks, not at sched_switch.
    let (r, out) = run_hang("pi_abba", &["--hooks", "syscalls"]);
    verify(&r, &out, true);
    let mut p = start_hung("pi_abba");
    let (code, d) = dump_json(p.pid());
    assert_eq!(code, EXIT_HANG, "{d:#}");
    verify(&d, &p.stdout, false);
    let r = attach_kill(&mut p);
    verify(&r, &p.stdout, false);
    assert_no_programs_left();
}

/// The same hangs seen through the scheduler hook alone (`--hooks sched`,
/// as the default does for a program that is not Python here: a wait is
/// learnt when its thread sleeps in futex(2), no syscall hook is
/// attached): every cycle kind, the PI deadlock (whose EDEADLK return only
/// a syscall hook sees: its parked thread tells it) and the orphaned lock.
#[test]
#[ignore = "needs root and BPF"]
fn sched_waits_find_the_same_hangs() {
    let sched = ["--hooks", "sched"];
    for (fixture, e) in [
        ("abba", ABBA),
        ("ring3", RING3),
        ("selflock", SELFLOCK),
        ("rwlock_abba", RWLOCK_ABBA),
    ] {
        let (r, out) = run_hang(fixture, &sched);
        check(&r, &out, &e);
        assert!(
            r["hooks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["group"] == "sched_switch" && h["rung"] == "tp_btf"),
            "{fixture}: {:#}",
            r["hooks"]
        );
    }
    let (r, out) = run_hang("pi_abba", &sched);
    let f = hang_findings(&r);
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    assert_eq!(f[0]["kind"], "pi_deadlock", "{:#}", f[0]);
    let tids: BTreeSet<u64> = f[0]["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_u64().unwrap())
        .collect();
    let (p1, p2) = (tid_of(&out, "pi-1"), tid_of(&out, "pi-2"));
    assert_eq!(tids, BTreeSet::from([p1 as u64, p2 as u64]), "{:#}", f[0]);
    let (r, out) = run_hang("orphan_exit", &sched);
    let leaver = tid_of(&out, "leaver");
    check_orphan(&r, &out, "victim", "orphan_lock", Some(leaver));
    assert_no_programs_left();
}

fn check_orphan(r: &Value, out: &[String], victim: &str, lock: &str, owner: Option<u32>) {
    let f = hang_findings(r);
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    let f = f[0];
    assert_eq!(f["kind"], "orphaned_lock", "{f:#}");
    assert_eq!(f["threads"][0]["tid"], tid_of(out, victim));
    assert_eq!(f["threads"][0]["name"], victim);
    assert_eq!(f["locks"][0]["addr"], lock_addr(out, lock));
    assert_eq!(f["locks"][0]["symbol"], lock);
    assert_eq!(f["locks"][0]["kind"], "mutex");
    if let Some(o) = owner {
        assert!(
            f["summary"]
                .as_str()
                .unwrap()
                .contains(&format!("owner thread {o}")),
            "{f:#}"
        );
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn thread_exits_holding_a_mutex() {
    let (r, out) = run_hang("orphan_exit", &[]);
    let leaver = tid_of(&out, "leaver");
    check_orphan(&r, &out, "victim", "orphan_lock", Some(leaver));
    assert!(
        hang_findings(&r)[0]["summary"]
            .as_str()
            .unwrap()
            .contains("exited holding it")
    );
    let mut p = start_hung("orphan_exit");
    let (code, d) = dump_json(p.pid());
    assert_eq!(code, EXIT_HANG);
    let leaver = tid_of(&p.stdout, "leaver");
    check_orphan(&d, &p.stdout, "victim", "orphan_lock", Some(leaver));
    p.signal(libc::SIGKILL);
    p.wait_exit(T);
}

#[test]
#[ignore = "needs root and BPF"]
fn forked_child_inherits_a_held_mutex() {
    let (r, out) = run_hang("fork_orphan", &["--follow-forks"]);
    let child: u32 = out
        .iter()
        .find_map(|l| l.strip_prefix("child "))
        .unwrap()
        .parse()
        .unwrap();
    let holder = tid_of(&out, "holder");
    let f = hang_findings(&r);
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    assert_eq!(f[0]["kind"], "orphaned_lock");
    assert_eq!(f[0]["tgid"], child, "the finding is in the forked child");
    assert_eq!(f[0]["threads"][0]["tid"], child);
    assert_eq!(f[0]["locks"][0]["addr"], lock_addr(&out, "fork_lock"));
    assert_eq!(f[0]["locks"][0]["symbol"], "fork_lock");
    // The parent is followed too: its thread that holds the original is named.
    let parent = tid_of(&out, "main");
    assert!(
        f[0]["summary"].as_str().unwrap().contains(&format!(
            "inherited locked across fork: held in its parent {parent} \"main\" by thread {holder} \"holder\""
        )),
        "{:#}",
        f[0]
    );
    assert_no_programs_left();
    // after the fact: dump the child
    let mut p = start_hung("fork_orphan");
    let child: u32 = p
        .stdout
        .iter()
        .find_map(|l| l.strip_prefix("child "))
        .unwrap()
        .parse()
        .unwrap();
    let (code, d) = dump_json(child);
    assert_eq!(code, EXIT_HANG, "{d:#}");
    assert_eq!(hang_findings(&d).len(), 1, "{d:#}");
    assert_eq!(hang_findings(&d)[0]["kind"], "orphaned_lock");
    assert_eq!(hang_findings(&d)[0]["tgid"], child);
    assert_eq!(hang_findings(&d)[0]["locks"][0]["symbol"], "fork_lock");
    // dump follows the owner into the parent and names its holder.
    let holder = tid_of(&p.stdout, "holder");
    let summary = hang_findings(&d)[0]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        summary.contains(&format!(
            "held in its parent {} \"main\" by thread {holder} \"holder\"",
            p.pid()
        )),
        "{summary}"
    );
    p.signal(libc::SIGKILL);
    p.wait_exit(T);
    kill(child);
}

#[test]
#[ignore = "needs root and BPF"]
fn lost_condvar_wakeup_is_a_long_wait() {
    // From the start: SIGINT ends `run` (passed on to the child) with a report.
    let bin = fixture("lost_wakeup");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--long-wait", "0.5", "--report"])
            .arg(&rep)
            .arg("--")
            .arg(&bin);
        c
    });
    obs.wait_stderr(T, |l| l.starts_with("Long wait"));
    obs.signal(libc::SIGINT);
    obs.wait_exit(T);
    let r = read_json(&rep);
    assert!(
        hang_findings(&r).is_empty(),
        "no cycle: {:#}",
        r["findings"]
    );
    let waiter = tid_of(&obs.stdout, "waiter");
    let lw: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["threads"][0]["tid"] == waiter)
        .collect();
    assert_eq!(lw.len(), 1, "{:#}", r["findings"]);
    assert_eq!(lw[0]["kind"], "long_wait");
    assert_eq!(lw[0]["locks"][0]["kind"], "condvar");
    assert_eq!(
        lw[0]["locks"][0]["addr"],
        lock_addr(&obs.stdout, "lost_cond")
    );
    assert_eq!(lw[0]["locks"][0]["symbol"], "lost_cond");
    // After the fact: attach for a while.
    let p = start_hung("lost_wakeup");
    let out = observer()
        .args([
            "attach",
            "--duration",
            "1.5",
            "--long-wait",
            "0.5",
            "-p",
            &p.pid().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "a long wait is not a hang");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "thread {} \"waiter\" has waited at least",
            tid_of(&p.stdout, "waiter")
        )),
        "{text}"
    );
    assert!(text.contains("condvar lost_cond"), "{text}");
    assert_no_programs_left();
}

#[test]
#[ignore = "needs root and BPF"]
fn python_lock_abba_shows_two_semaphore_waits() {
    // Kernel tier: Python locks are owner-less semaphores; the Python view
    // names the lock object each thread waits for (cross-checked against
    // its semaphore), but locks taken by a bare acquire() leave no holder
    // in memory (holders need the uprobe tier): long waits, no cycle.
    let p = start_hung("abba.py");
    let out = observer()
        .args([
            "attach",
            "--duration",
            "1.2",
            "--long-wait",
            "0.5",
            "--report",
            "/dev/stdout",
            "--quiet",
            "-p",
            &p.pid().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let json = &text[text.find("{\n").unwrap()..];
    let r: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
    for (who, futex_of) in [("alpha", "lock_b"), ("beta", "lock_a")] {
        let tid = tid_of(&p.stdout, who);
        let lock = fixture_locks(&p.stdout)
            .into_iter()
            .find(|l| l.0 == futex_of)
            .unwrap()
            .1;
        let f = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["threads"][0]["tid"] == tid)
            .unwrap_or_else(|| panic!("{who}: {:#}", r["findings"]));
        assert_eq!(f["kind"], "long_wait");
        assert_eq!(f["locks"][0]["kind"], "py_lock");
        assert_eq!(f["locks"][0]["addr"], lock, "{who} waits for {futex_of}");
        assert_eq!(f["locks"][0]["symbol"], futex_of);
        assert_eq!(f["threads"][0]["python"]["waits"]["how"], "acquire");
    }
    assert!(
        hang_findings(&r).is_empty(),
        "no false cycle: {:#}",
        r["findings"]
    );
    assert_no_programs_left();
}

fn expect_clean(name: &str) {
    let bin = fixture(name);
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args([
            "run",
            "--quiet",
            "--kill-on-deadlock",
            "--long-wait",
            "1",
            "--report",
        ])
        .arg(&rep)
        .arg("--")
        .arg(&bin);
        c
    });
    assert_eq!(p.wait_exit(T).code(), Some(0), "{:?}", p.stderr);
    let r = read_json(&rep);
    assert_eq!(
        r["findings"].as_array().unwrap().len(),
        0,
        "{:#}",
        r["findings"]
    );
    assert!(
        !r["waits"].as_array().unwrap().is_empty(),
        "the fixture did contend"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn recursive_relock_is_not_a_deadlock() {
    expect_clean("recursive_ok");
}

#[test]
#[ignore = "needs root and BPF"]
fn heavy_clean_contention_has_no_finding() {
    expect_clean("clean_contention");
}

#[test]
#[ignore = "needs root and BPF"]
fn dump_of_a_healthy_process() {
    let mut p = Proc::spawn(Command::new(fixture("sleeper")));
    p.wait_stdout(T, |l| l == "ready");
    let (code, d) = dump_json(p.pid());
    assert_eq!(code, 0);
    assert_eq!(d["schema"], "observer.report/1");
    assert_eq!(d["mode"], "dump");
    assert!(d["findings"].as_array().unwrap().is_empty());
    assert_eq!(d["threads"].as_array().unwrap().len(), 3);
    let text = observer()
        .args(["dump", "-p", &p.pid().to_string()])
        .output()
        .unwrap();
    assert_eq!(text.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&text.stdout).contains("FINDINGS: none"));
    let missing = observer()
        .args(["dump", "-p", "999999999"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
}
