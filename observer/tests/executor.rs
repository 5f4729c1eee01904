//! Root tests of deadlocks through `loop.run_in_executor`: an asyncio task
//! awaiting an executor waits for the worker running its callable (an
//! edge), and a worker that waits for that task closes a cycle, though the
//! loop thread sleeps in its selector. Under every CPython, in `dump`,
//! `attach` and `run` (fixtures/py_async_executor_lock.py):
//! - `lock`, `rlock`: task "holder" keeps `state_lock` (a `threading.Lock`,
//!   an `RLock`) across `await loop.run_in_executor(None, job)`, and `job`
//!   takes it: one deadlock naming the task, the pool, the worker, the
//!   callable, the lock and both `with` lines; no orphaned lock;
//! - `threadsafe`: "holder" keeps an `asyncio.Lock` across the await, and
//!   the job waits in `run_coroutine_threadsafe(touch(), loop).result()`
//!   while touch() waits for that lock: one deadlock, worker -> touch's
//!   task -> "holder" -> worker;
//! - `queued`: "holder", in `with state_lock:`, hands pool "io"'s only
//!   worker `blocker` (which takes `state_lock`) and awaits `later`, queued
//!   behind it: one deadlock through the queued item and that worker;
//! - `ok` (negative control): "holder" keeps `state_lock` across awaits of
//!   a job that does not take it, and "quick" awaits jobs that complete: no
//!   finding.
//!
//! Every target runs under a hard timeout and is killed.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const EXIT_HANG: i32 = 3;
const FIX: &str = "py_async_executor_lock";

fn observer() -> Command {
    Command::new(observer_bin())
}

fn start(py: &str, mode: &str) -> Proc {
    let mut c = Command::new(py);
    c.arg(python_fixture(FIX)).arg(mode);
    let mut p = Proc::spawn(c);
    p.wait_stdout(T, |l| l == "ready");
    p
}

fn findings(r: &Value) -> &Vec<Value> {
    r["findings"].as_array().expect("findings")
}

fn summaries(r: &Value) -> Vec<&str> {
    findings(r)
        .iter()
        .map(|f| f["summary"].as_str().unwrap_or("?"))
        .collect()
}

/// 1-based line of the fixture's first line that is exactly `text`
/// (after line `after`).
fn line_of(after: &str, text: &str) -> u64 {
    let src = std::fs::read_to_string(python_fixture(FIX)).unwrap();
    let from = src.lines().position(|l| l == after).unwrap();
    (src.lines().skip(from).position(|l| l == text).unwrap() + from + 1) as u64
}

fn line(site: &Value) -> u64 {
    let s = site.as_str().unwrap_or_else(|| panic!("no site: {site}"));
    assert!(s.contains(&format!("{FIX}.py:")), "{s}");
    s.rsplit(':').next().unwrap().parse().unwrap()
}

/// The one finding besides the loop being seen blocked (it is not: it
/// sleeps in epoll): a deadlock through the executor.
fn the_deadlock<'a>(label: &str, r: &'a Value) -> &'a Value {
    let f: Vec<&Value> = findings(r)
        .iter()
        .filter(|f| f["kind"] != "event_loop_blocked")
        .collect();
    assert_eq!(f.len(), 1, "{label}: {:#?}", summaries(r));
    let f = f[0];
    assert_eq!(f["kind"], "deadlock", "{label}: {f:#}");
    assert!(
        !findings(r).iter().any(|f| f["kind"] == "orphaned_lock"),
        "{label}"
    );
    f
}

fn tids(f: &Value) -> Vec<u64> {
    let mut v: Vec<u64> = f["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_u64().unwrap())
        .collect();
    v.sort_unstable();
    v
}

fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// The executor hop: task "holder" awaits `callable` in pool asyncio, run
/// by worker `wk`.
fn check_executor_hop(label: &str, h: &Value, callable: &str, wk: u32) {
    assert_eq!(h["hop"], "executor", "{label}: {h:#}");
    assert_eq!(h["task"], "holder", "{label}: {h:#}");
    assert_eq!(h["callable"], callable, "{label}: {h:#}");
    assert_eq!(h["pool"], "asyncio", "{label}: {h:#}");
    assert_eq!(h["worker"], wk, "{label}: {h:#}");
}

/// lock / rlock: holder -> worker (job) -> state_lock held by holder.
fn check_lock(label: &str, r: &Value, out: &[String], kind: &str) {
    let (lp, wk) = (tid_of(out, "MainThread"), tid_of(out, "asyncio_0"));
    let f = the_deadlock(label, r);
    assert_eq!(
        tids(f),
        sorted(vec![lp.into(), wk.into()]),
        "{label}: {f:#}"
    );
    let tasks: Vec<&Value> = f["tasks"].as_array().unwrap().iter().collect();
    assert_eq!(tasks.len(), 1, "{label}: {f:#}");
    assert_eq!(tasks[0]["name"], "holder", "{label}: {f:#}");
    assert_eq!(tasks[0]["loop_tid"], lp, "{label}: {f:#}");
    let locks = f["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 1, "{label}: {f:#}");
    assert_eq!(locks[0]["kind"], kind, "{label}: {f:#}");
    assert_eq!(locks[0]["symbol"], "state_lock", "{label}: {f:#}");
    let hops = f["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 2, "{label}: {f:#}");
    check_executor_hop(label, &hops[0], "job", wk);
    let h = &hops[1];
    assert_eq!(h["hop"], "task_lock", "{label}: {h:#}");
    assert_eq!(h["tid"], wk, "{label}: {h:#}");
    assert_eq!(h["name"], "state_lock", "{label}: {h:#}");
    assert_eq!(h["task"], "holder", "{label}: {h:#}");
    assert_eq!(h["lock"]["addr"], locks[0]["addr"], "{label}: {h:#}");
    let job_line = line_of("def job():", "    with state_lock:");
    let held_line = line_of("async def holder(loop):", "    with state_lock:");
    assert_eq!(line(&h["site"]), job_line, "{label}: {h:#}");
    assert_eq!(line(&h["held_at"]), held_line, "{label}: {h:#}");
    let word = if kind == "py_r_lock" {
        "threading.RLock"
    } else {
        "threading.Lock"
    };
    let s = f["summary"].as_str().unwrap();
    for want in [
        format!(
            "task \"holder\" awaits run_in_executor(job) in pool asyncio, run by thread {wk} \"asyncio_0\""
        ),
        format!("thread {wk} \"asyncio_0\" at "),
        format!(
            "{FIX}.py:{job_line} waits for {word} state_lock, held by task \"holder\" (`with` at "
        ),
        format!("{FIX}.py:{held_line}) across an await"),
    ] {
        assert!(s.contains(&want), "{label}: no {want:?} in {s}");
    }
    // The lock's holder in the worker's own view: the loop thread.
    let w = report_thread(r, wk);
    assert_eq!(w["python"]["waits"]["name"], "state_lock", "{label}: {w:#}");
}

fn check_plain_lock(label: &str, r: &Value, out: &[String]) {
    check_lock(label, r, out, "py_lock");
}

fn check_rlock(label: &str, r: &Value, out: &[String]) {
    check_lock(label, r, out, "py_r_lock");
}

/// queued: holder -> `later` queued in pool io -> its only worker io_0
/// (running `blocker`) -> state_lock held by holder.
fn check_queued(label: &str, r: &Value, out: &[String]) {
    let (lp, wk) = (tid_of(out, "MainThread"), tid_of(out, "io_0"));
    let f = the_deadlock(label, r);
    assert_eq!(
        tids(f),
        sorted(vec![lp.into(), wk.into()]),
        "{label}: {f:#}"
    );
    let hops = f["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 2, "{label}: {f:#}");
    let h = &hops[0];
    assert_eq!(h["hop"], "executor_queued", "{label}: {h:#}");
    assert_eq!(h["task"], "holder", "{label}: {h:#}");
    assert_eq!(h["callable"], "later", "{label}: {h:#}");
    assert_eq!(h["pool"], "io", "{label}: {h:#}");
    assert_eq!(h["workers"], serde_json::json!([wk]), "{label}: {h:#}");
    let h = &hops[1];
    assert_eq!(h["hop"], "task_lock", "{label}: {h:#}");
    assert_eq!(h["tid"], wk, "{label}: {h:#}");
    assert_eq!(h["name"], "state_lock", "{label}: {h:#}");
    assert_eq!(h["task"], "holder", "{label}: {h:#}");
    let blocker_line = line_of("def blocker():", "    with state_lock:");
    let held_line = line_of("async def holder_queued(loop):", "    with state_lock:");
    assert_eq!(line(&h["site"]), blocker_line, "{label}: {h:#}");
    assert_eq!(line(&h["held_at"]), held_line, "{label}: {h:#}");
    let s = f["summary"].as_str().unwrap();
    let want = format!(
        "task \"holder\" awaits run_in_executor(later) in pool io, queued, and every worker of the pool waits: thread {wk} \"io_0\"; thread {wk} \"io_0\" at "
    );
    assert!(s.contains(&want), "{label}: no {want:?} in {s}");
}

/// threadsafe: holder -> worker -> touch's task (run_coroutine_threadsafe)
/// -> gate_lock held by holder.
fn check_threadsafe(label: &str, r: &Value, out: &[String]) {
    let (lp, wk) = (tid_of(out, "MainThread"), tid_of(out, "asyncio_0"));
    let f = the_deadlock(label, r);
    assert_eq!(
        tids(f),
        sorted(vec![lp.into(), wk.into()]),
        "{label}: {f:#}"
    );
    let hops = f["hops"].as_array().unwrap();
    assert_eq!(hops.len(), 3, "{label}: {f:#}");
    check_executor_hop(label, &hops[0], "threadsafe_job", wk);
    let h = &hops[1];
    assert_eq!(h["hop"], "task_future", "{label}: {h:#}");
    assert_eq!(h["tid"], wk, "{label}: {h:#}");
    assert_eq!(h["coro"], "touch", "{label}: {h:#}");
    let toucher = h["task"].as_str().unwrap();
    let t = &hops[2];
    assert_eq!(t["hop"], "task", "{label}: {t:#}");
    assert_eq!(t["task"], toucher, "{label}: {t:#}");
    let waits = t["waits"].as_str().unwrap();
    assert!(
        waits.starts_with("waits for asyncio.Lock gate_lock (")
            && waits.ends_with("held by task \"holder\""),
        "{label}: {waits}"
    );
    let names: Vec<&str> = f["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["holder", toucher], "{label}: {f:#}");
    let s = f["summary"].as_str().unwrap();
    let want = format!(
        "task \"holder\" awaits run_in_executor(threadsafe_job) in pool asyncio, run by thread {wk} \"asyncio_0\"; thread {wk} \"asyncio_0\" waits in Future.result() for coroutine touch of task \"{toucher}\"; task \"{toucher}\" waits for asyncio.Lock gate_lock"
    );
    assert!(s.contains(&want), "{label}: no {want:?} in {s}");
}

/// Dumps until the hang shows (exit 3), then checks it and the text.
fn dump_hang(mode: &str, check: fn(&str, &Value, &[String]), text: &[&str]) {
    for (label, py) in pythons() {
        let p = start(py, mode);
        let end = Instant::now() + T;
        let r = loop {
            let (code, r) = dump_json(p.pid());
            if code == EXIT_HANG {
                break r;
            }
            assert!(Instant::now() < end, "{label}: no hang: {r:#}");
            std::thread::sleep(Duration::from_millis(100));
        };
        check(label, &r, &p.stdout);
        let t = dump_text(p.pid());
        for want in text {
            assert!(t.contains(want), "{label}: no {want:?} in\n{t}");
        }
    }
}

/// Attaches after the hang formed; `--kill-on-deadlock` ends it.
fn attach_hang(mode: &str, check: fn(&str, &Value, &[String])) {
    for (label, py) in pythons() {
        let p = start(py, mode);
        let end = Instant::now() + T;
        while dump_json(p.pid()).0 != EXIT_HANG {
            assert!(Instant::now() < end, "{label}: no hang");
            std::thread::sleep(Duration::from_millis(100));
        }
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut cmd = observer();
        cmd.args(["attach", "-q", "-p", &p.pid().to_string(), "--report"])
            .arg(&rep)
            .args(["--kill-on-deadlock", "--duration", "20"]);
        let mut o = Proc::spawn(cmd);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", o.stderr);
        check(label, &read_json(&rep), &p.stdout);
        drop(p);
        assert_no_programs_left();
    }
}

/// `run --kill-on-deadlock`: the hang is found and the target killed; the
/// recording replays to the same finding.
fn run_hang(mode: &str, check: fn(&str, &Value, &[String])) {
    for (label, py) in pythons() {
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let rec = dir.path().join("rec.jsonl");
        let mut cmd = observer();
        cmd.args(["run", "-q", "--kill-on-deadlock", "--report"])
            .arg(&rep)
            .arg("--record")
            .arg(&rec)
            .arg("--")
            .arg(py)
            .arg(python_fixture(FIX))
            .arg(mode);
        let mut o = Proc::spawn(cmd);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", o.stderr);
        check(label, &read_json(&rep), &o.stdout);
        let rp = dir.path().join("replay.json");
        let out = observer()
            .arg("replay")
            .arg(&rec)
            .arg("--report")
            .arg(&rp)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(EXIT_HANG),
            "{label}: replay: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        check(label, &read_json(&rp), &o.stdout);
        if let Some((_, main)) = fixture_threads(&o.stdout).first() {
            kill(*main);
        }
        drop(o);
        assert_no_programs_left();
    }
}

/// The negative control: several dumps, none with a finding; one at
/// least shows "holder" holding `state_lock` across its await of a
/// running `side_job` (the edge to its worker, no cycle).
#[test]
#[ignore = "needs root"]
fn dump_healthy() {
    for (label, py) in pythons() {
        let p = start(py, "ok");
        let held_line = line_of("async def holder_ok(loop):", "        with state_lock:");
        let mut seen = false;
        for _ in 0..12 {
            let (code, r) = dump_json(p.pid());
            assert_eq!(code, 0, "{label}: {:#?}", summaries(&r));
            assert!(findings(&r).is_empty(), "{label}: {:#?}", summaries(&r));
            let a = &r["processes"][0]["asyncio"];
            let h = task(a, "holder");
            let q = task(a, "quick");
            assert!(
                q["executor"].is_null() || q["executor"]["callable"] == "sleep",
                "{label}: {q:#}"
            );
            if h["executor"]["callable"] == "side_job" && !h["executor"]["worker"].is_null() {
                let tl = &h["thread_locks"][0];
                seen |= tl["name"] == "state_lock" && tl["line"] == held_line;
            }
            std::thread::sleep(Duration::from_millis(120));
        }
        assert!(
            seen,
            "{label}: holder never seen holding state_lock across run_in_executor"
        );
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_healthy() {
    for (label, py) in pythons() {
        let p = start(py, "ok");
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut cmd = observer();
        cmd.args(["attach", "-q", "-p", &p.pid().to_string(), "--report"])
            .arg(&rep)
            .args(["--duration", "2.5"]);
        let mut o = Proc::spawn(cmd);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(0), "{label}: {:?}", o.stderr);
        let r = read_json(&rep);
        assert!(findings(&r).is_empty(), "{label}: {:#?}", summaries(&r));
        drop(p);
        assert_no_programs_left();
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn run_healthy() {
    for (label, py) in pythons() {
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut cmd = observer();
        cmd.args(["run", "-q", "--report"])
            .arg(&rep)
            .arg("--")
            .arg(py)
            .arg(python_fixture(FIX))
            .arg("ok");
        let mut o = Proc::spawn(cmd);
        o.wait_stdout(T, |l| l == "ready");
        std::thread::sleep(Duration::from_millis(2500));
        o.signal(libc::SIGINT);
        o.wait_exit(T);
        let r = read_json(&rep);
        assert!(findings(&r).is_empty(), "{label}: {:#?}", summaries(&r));
        if let Some((_, main)) = fixture_threads(&o.stdout).first() {
            kill(*main);
        }
        drop(o);
        assert_no_programs_left();
    }
}

#[test]
#[ignore = "needs root"]
fn dump_lock_held_across_await() {
    dump_hang(
        "lock",
        check_plain_lock,
        &[
            "Found one deadlock through run_in_executor (1 task, 2 threads) in process",
            "  task \"holder\" awaits run_in_executor(job) in pool asyncio, run by thread ",
            "waits for threading.Lock state_lock, held by task \"holder\" (`with` at ",
            "Task \"holder\" (coro holder, pending) on the loop of thread ",
            "holds threading.Lock state_lock (0x",
            "across an await (`with` at ",
        ],
    );
}

#[test]
#[ignore = "needs root"]
fn dump_rlock_held_across_await() {
    dump_hang(
        "rlock",
        check_rlock,
        &["waits for threading.RLock state_lock, held by task \"holder\" (`with` at "],
    );
}

#[test]
#[ignore = "needs root"]
fn dump_threadsafe_future_of_a_task_waiting_for_the_awaiter() {
    dump_hang(
        "threadsafe",
        check_threadsafe,
        &[
            "Found one deadlock through run_in_executor (2 tasks, 2 threads) in process",
            "waits in Future.result() for coroutine touch of task ",
        ],
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_lock_held_across_await() {
    attach_hang("lock", check_plain_lock);
    attach_hang("rlock", check_rlock);
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_threadsafe() {
    attach_hang("threadsafe", check_threadsafe);
}

#[test]
#[ignore = "needs root and BPF"]
fn run_lock_held_across_await() {
    run_hang("lock", check_plain_lock);
    run_hang("rlock", check_rlock);
}

#[test]
#[ignore = "needs root and BPF"]
fn run_threadsafe() {
    run_hang("threadsafe", check_threadsafe);
}

#[test]
#[ignore = "needs root"]
fn dump_queued_behind_a_worker_waiting_for_the_task() {
    dump_hang(
        "queued",
        check_queued,
        &[
            "awaits run_in_executor(later) in pool io, queued, and every worker of the pool waits: thread ",
        ],
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_queued() {
    attach_hang("queued", check_queued);
}

#[test]
#[ignore = "needs root and BPF"]
fn run_queued() {
    run_hang("queued", check_queued);
}
