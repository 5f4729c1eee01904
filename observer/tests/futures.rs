//! Root tests of future waits (issue 24, "futures and pools"): a thread in
//! `concurrent.futures.Future.result()` waits for whoever completes that
//! future. Under every CPython, in `dump`, `attach` and `run`:
//! - loop<->worker: a worker holding `state_lock` waits for a
//!   `run_coroutine_threadsafe` future whose coroutine blocks the event-loop
//!   thread on `state_lock`: a deadlock through the future, with both
//!   `with` lines;
//! - pool starvation: both workers of a 2-worker pool wait for work queued
//!   behind them in the same pool: a `pool_starvation` finding naming the
//!   pool, its workers and the queued callables;
//! - negative controls (a loop that completes each threadsafe future, a
//!   pool with room for the nested work): no finding.
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
const LOOP: &str = "py_future_loop";
const POOL: &str = "py_pool_starve";

fn observer() -> Command {
    Command::new(observer_bin())
}

fn start(py: &str, fixture: &str, mode: &str) -> Proc {
    let mut c = Command::new(py);
    c.arg(python_fixture(fixture)).arg(mode);
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
fn line_of(fixture: &str, after: &str, text: &str) -> u64 {
    let src = std::fs::read_to_string(python_fixture(fixture)).unwrap();
    let from = src.lines().position(|l| l == after).unwrap();
    (src.lines().skip(from).position(|l| l == text).unwrap() + from + 1) as u64
}

fn finding_thread(f: &Value, tid: u32) -> &Value {
    f["threads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tid"] == tid)
        .unwrap_or_else(|| panic!("no thread {tid} in {f:#}"))
}

fn site_line(v: &Value) -> u64 {
    let s = v["site"]
        .as_str()
        .unwrap_or_else(|| panic!("no site: {v:#}"));
    s.rsplit(':').next().unwrap().parse().unwrap()
}

/// The loop<->worker deadlock: worker waits for the future `fut` the loop
/// thread completes; the loop waits for `state_lock` the worker holds (in
/// apply_update, the future's coroutine).
fn check_loop_cycle(label: &str, r: &Value, out: &[String]) {
    check_loop(label, r, out, false);
}

/// The same deadlock, the loop blocked (in `guard`) before it could start
/// the future's coroutine.
fn check_loop_pending(label: &str, r: &Value, out: &[String]) {
    check_loop(label, r, out, true);
}

fn check_loop(label: &str, r: &Value, out: &[String], pending: bool) {
    let (lp, wk) = (tid_of(out, "loop"), tid_of(out, "worker"));
    // `run` and `attach` may also see the loop blocked (it is): nothing else.
    let (f, blocked): (Vec<&Value>, Vec<&Value>) = findings(r)
        .iter()
        .partition(|f| f["kind"] != "event_loop_blocked");
    for b in blocked {
        assert_eq!(b["threads"][0]["tid"], lp, "{label}: {b:#}");
    }
    assert_eq!(f.len(), 1, "{label}: {:#?}", summaries(r));
    let f = f[0];
    assert_eq!(f["kind"], "deadlock", "{label}: {f:#}");
    let mut edges: Vec<(u64, u64, String, String)> = f["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["waiter_tid"].as_u64().unwrap(),
                e["holder_tid"].as_u64().unwrap(),
                e["lock"]["kind"].as_str().unwrap().to_string(),
                e["lock"]["symbol"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    edges.sort();
    let mut want = vec![
        (u64::from(wk), u64::from(lp), "future".into(), "fut".into()),
        (
            u64::from(lp),
            u64::from(wk),
            "py_lock".into(),
            "state_lock".into(),
        ),
    ];
    want.sort();
    assert_eq!(edges, want, "{label}: {f:#}");
    // The worker: its future, completed by the task running apply_update
    // on the loop thread; the `with` line that holds state_lock.
    let w = &finding_thread(f, wk)["python"];
    let fut = &w["future"];
    assert_eq!(fut["runner"], lp, "{label}: {w:#}");
    assert_eq!(fut["name"], "fut", "{label}: {w:#}");
    assert_eq!(
        fut["source"]["loop"]["coro"], "apply_update",
        "{label}: {w:#}"
    );
    let wl = w["label"].as_str().unwrap();
    if pending {
        assert!(fut["source"]["loop"]["task"].is_null(), "{label}: {w:#}");
        assert_eq!(
            wl, "Future.result() of coroutine apply_update (not started: queued on the event loop)",
            "{label}"
        );
    } else {
        assert!(
            wl.starts_with("Future.result() of coroutine apply_update (task "),
            "{label}: {wl}"
        );
    }
    assert!(!wl.contains("self"), "{label}: {wl}");
    let held = &w["holds"][0];
    assert_eq!(held["name"], "state_lock", "{label}: {w:#}");
    assert_eq!(
        site_line(held),
        line_of(LOOP, "def work(loop):", "        with state_lock:"),
        "{label}: {w:#}"
    );
    // The loop thread: `with state_lock:` in the coroutine.
    let l = &finding_thread(f, lp)["python"];
    assert_eq!(l["waits"]["name"], "state_lock", "{label}: {l:#}");
    assert_eq!(l["waits"]["how"], "with", "{label}: {l:#}");
    assert_eq!(
        site_line(&l["waits"]),
        if pending {
            line_of(LOOP, "async def guard():", "    with state_lock:")
        } else {
            line_of(LOOP, "async def apply_update():", "    with state_lock:")
        },
        "{label}: {l:#}"
    );
}

/// The starved pool "crawler": both workers wait for `parse_page` queued
/// behind them; main waits for a worker.
fn check_starved(label: &str, r: &Value, out: &[String]) {
    check_pool(label, r, out, "Future.result");
}

/// The same, each worker waiting for two parses in `wait()`.
fn check_starved_wait(label: &str, r: &Value, out: &[String]) {
    check_pool(label, r, out, "wait");
}

/// The same, each worker waiting for two parses in `as_completed()`.
fn check_starved_as_completed(label: &str, r: &Value, out: &[String]) {
    check_pool(label, r, out, "as_completed");
}

fn check_pool(label: &str, r: &Value, out: &[String], method: &str) {
    let queued = if method == "Future.result" { 2 } else { 4 };
    let main = tid_of(out, "MainThread");
    let mut workers = vec![tid_of(out, "crawler_0"), tid_of(out, "crawler_1")];
    workers.sort_unstable();
    let f = findings(r);
    assert_eq!(f.len(), 1, "{label}: {:#?}", summaries(r));
    let f = &f[0];
    assert_eq!(f["kind"], "pool_starvation", "{label}: {f:#}");
    let p = &f["pool"];
    assert_eq!(p["name"], "crawler", "{label}: {p:#}");
    assert_eq!(p["workers"], serde_json::json!(workers), "{label}: {p:#}");
    assert_eq!(
        p["waited"],
        serde_json::json!(["parse_page", "parse_page"]),
        "{label}: {p:#}"
    );
    assert_eq!(
        p["queued"],
        serde_json::json!(vec!["parse_page"; queued]),
        "{label}: {p:#}"
    );
    let tids: Vec<u64> = f["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_u64().unwrap())
        .collect();
    let mut want: Vec<u64> = workers.iter().map(|&t| u64::from(t)).collect();
    // Main, held up, once it waits too (`run` may find it before).
    if tids.len() == 3 {
        want.push(u64::from(main));
        assert_eq!(
            finding_thread(f, main)["python"]["label"],
            "Future.result() of fetch_page in pool crawler",
            "{label}"
        );
    }
    assert_eq!(tids, want, "{label}: {f:#}");
    for l in f["locks"].as_array().unwrap() {
        assert_eq!(l["kind"], "future", "{label}: {l:#}");
        if method == "Future.result" {
            assert_eq!(l["symbol"], "parsed", "{label}: {l:#}");
        }
    }
    for &w in &workers {
        let py = &finding_thread(f, w)["python"];
        assert_eq!(
            py["label"],
            format!("{method}() of parse_page in pool crawler"),
            "{label}: {py:#}"
        );
        assert_eq!(py["future"]["source"]["pool"]["queued"], true, "{label}");
    }
    let s = f["summary"].as_str().unwrap();
    assert!(
        s.starts_with("thread pool \"crawler\" is starved: all 2 of its workers"),
        "{label}: {s}"
    );
    assert!(s.contains("(parse_page, parse_page)"), "{label}: {s}");
}

/// Dumps until the hang shows (exit 3), then checks it and the text.
fn dump_hang(fixture: &str, mode: &str, check: fn(&str, &Value, &[String]), text: &[&str]) {
    for (label, py) in pythons() {
        let p = start(py, fixture, mode);
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
        assert!(!t.contains(" on self"), "{label}: {t}");
    }
}

/// A healthy program: several dumps, none with a finding; at least one
/// catches `tid_name` waiting for a future whose source is `source`.
fn dump_healthy(fixture: &str, mode: &str, tid_name: &str, source: &str) {
    for (label, py) in pythons() {
        let p = start(py, fixture, mode);
        let tid = tid_of(&p.stdout, tid_name);
        let mut seen = false;
        for _ in 0..12 {
            let (code, r) = dump_json(p.pid());
            assert_eq!(code, 0, "{label}: {:#?}", summaries(&r));
            assert!(findings(&r).is_empty(), "{label}: {:#?}", summaries(&r));
            let t = report_thread(&r, tid);
            seen |= !t["python"]["future"]["source"][source].is_null();
            std::thread::sleep(Duration::from_millis(120));
        }
        assert!(seen, "{label}: {tid_name} never seen waiting for a future");
    }
}

/// Attaches after the hang formed; `--kill-on-deadlock` ends it.
fn attach_hang(fixture: &str, mode: &str, check: fn(&str, &Value, &[String])) {
    for (label, py) in pythons() {
        let p = start(py, fixture, mode);
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

fn attach_healthy(fixture: &str, mode: &str) {
    for (label, py) in pythons() {
        let p = start(py, fixture, mode);
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

/// `run --kill-on-deadlock`: the hang is found and the target killed.
fn run_hang(fixture: &str, mode: &str, check: fn(&str, &Value, &[String])) {
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
            .arg(python_fixture(fixture))
            .arg(mode);
        let mut o = Proc::spawn(cmd);
        // (the hang may be found, and the target killed, before "ready")
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", o.stderr);
        check(label, &read_json(&rep), &o.stdout);
        // The recording replays to the same finding (the core is pure).
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
        let kinds = |r: &Value| -> Vec<Value> {
            let mut k: Vec<Value> = findings(r)
                .iter()
                .map(|f| f["kind"].clone())
                .filter(|k| k != "event_loop_blocked")
                .collect();
            k.dedup();
            k
        };
        assert_eq!(
            kinds(&read_json(&rp)),
            kinds(&read_json(&rep)),
            "{label}: replay"
        );
        if let Some((_, main)) = fixture_threads(&o.stdout).first() {
            kill(*main);
        }
        drop(o);
        assert_no_programs_left();
    }
}

fn run_healthy(fixture: &str, mode: &str) {
    for (label, py) in pythons() {
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut cmd = observer();
        cmd.args(["run", "-q", "--report"])
            .arg(&rep)
            .arg("--")
            .arg(py)
            .arg(python_fixture(fixture))
            .arg(mode);
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
fn dump_loop_worker_cycle() {
    dump_hang(
        LOOP,
        "cycle",
        check_loop_cycle,
        &[
            "Found one Python-level deadlock (2 threads)",
            "waits in Future.result() of coroutine apply_update (task ",
            "whose coroutine runs on the event loop of \"loop\"",
            "as state_lock in a `with` block",
        ],
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_loop_worker_cycle() {
    attach_hang(LOOP, "cycle", check_loop_cycle);
}

#[test]
#[ignore = "needs root and BPF"]
fn run_loop_worker_cycle() {
    run_hang(LOOP, "cycle", check_loop_cycle);
}

#[test]
#[ignore = "needs root"]
fn dump_loop_worker_cycle_not_started() {
    dump_hang(
        LOOP,
        "pending",
        check_loop_pending,
        &[
            "waits in Future.result() of coroutine apply_update (not started: queued on the event loop)",
            "whose coroutine runs on the event loop of \"loop\"",
        ],
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_loop_worker_cycle_not_started() {
    attach_hang(LOOP, "pending", check_loop_pending);
}

#[test]
#[ignore = "needs root and BPF"]
fn run_loop_worker_cycle_not_started() {
    run_hang(LOOP, "pending", check_loop_pending);
}

#[test]
#[ignore = "needs root"]
fn dump_pool_starvation() {
    dump_hang(
        POOL,
        "starve",
        check_starved,
        &[
            "Found a starved thread pool in process",
            "pool \"crawler\" (ThreadPoolExecutor 0x",
            "queued, with no worker to run them: parse_page, parse_page",
            "waits in Future.result() of parse_page in pool crawler, queued: no worker has taken it yet",
        ],
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_pool_starvation() {
    attach_hang(POOL, "starve", check_starved);
}

#[test]
#[ignore = "needs root and BPF"]
fn run_pool_starvation() {
    run_hang(POOL, "starve", check_starved);
}

#[test]
#[ignore = "needs root"]
fn dump_healthy_loop_and_pool() {
    dump_healthy(LOOP, "ok", "worker", "loop");
    dump_healthy(POOL, "ok", "crawler_0", "pool");
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_healthy_loop_and_pool() {
    attach_healthy(LOOP, "ok");
    attach_healthy(POOL, "ok");
}

#[test]
#[ignore = "needs root and BPF"]
fn run_healthy_loop_and_pool() {
    run_healthy(LOOP, "ok");
    run_healthy(POOL, "ok");
}

/// Library waits on objects kept in locals are labelled as the waiting code
/// spells them, never `self` (the library method's word for them).
#[test]
#[ignore = "needs root"]
fn dump_labels_name_the_callers_object() {
    for (label, py) in pythons() {
        let p = start(py, "py_labels", "");
        let want = [
            ("waiter", "Event.wait on ready"),
            ("consumer", "Queue.get on self.jobs"),
            ("cond", "Condition.wait on cv"),
        ];
        let end = Instant::now() + T;
        loop {
            let (code, r) = dump_json(p.pid());
            assert_eq!(code, 0, "{label}: {:#?}", summaries(&r));
            assert!(findings(&r).is_empty(), "{label}: {:#?}", summaries(&r));
            let got: Vec<Value> = want
                .iter()
                .map(|(n, _)| report_thread(&r, tid_of(&p.stdout, n))["python"]["label"].clone())
                .collect();
            if got.iter().zip(&want).all(|(g, w)| g == w.1) {
                break;
            }
            assert!(Instant::now() < end, "{label}: labels {got:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Workers waiting in `wait()` / `as_completed()` for work queued behind
/// them: the same starvation.
#[test]
#[ignore = "needs root"]
fn dump_pool_starvation_wait_and_as_completed() {
    dump_hang(
        POOL,
        "wait",
        check_starved_wait,
        &["waits in wait() of parse_page in pool crawler, queued: no worker has taken it yet"],
    );
    dump_hang(
        POOL,
        "as_completed",
        check_starved_as_completed,
        &["waits in as_completed() of parse_page in pool crawler"],
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_pool_starvation_wait_and_as_completed() {
    attach_hang(POOL, "wait", check_starved_wait);
    attach_hang(POOL, "as_completed", check_starved_as_completed);
}

#[test]
#[ignore = "needs root and BPF"]
fn run_pool_starvation_wait_and_as_completed() {
    run_hang(POOL, "wait", check_starved_wait);
    run_hang(POOL, "as_completed", check_starved_as_completed);
}

/// A task awaiting `loop.run_in_executor(pool, fn)` waits for the pool's
/// worker running `fn`: its wait names the callable, the pool and that
/// worker. No finding (nothing waits for the stuck worker but a task).
#[test]
#[ignore = "needs root"]
fn dump_task_awaiting_run_in_executor_names_the_worker() {
    for (label, py) in pythons() {
        let p = start(py, "py_async_executor", "");
        let worker = tid_of(&p.stdout, "io_0");
        let want = format!("run_in_executor(blocking_fetch) in pool io, run by thread {worker}");
        let (code, r) = dump_json(p.pid());
        assert_eq!(code, 0, "{label}: {:#?}", summaries(&r));
        let tasks: Vec<&Value> = r["processes"][0]["asyncio"]["loops"]
            .as_array()
            .unwrap_or_else(|| panic!("{label}: no loops: {r:#}"))
            .iter()
            .flat_map(|l| l["tasks"].as_array().unwrap())
            .collect();
        let t = tasks
            .iter()
            .find(|t| t["name"] == "fetcher")
            .unwrap_or_else(|| panic!("{label}: no task fetcher: {tasks:#?}"));
        assert_eq!(t["label"], want, "{label}: {t:#}");
        let text = dump_text(p.pid());
        assert!(
            text.contains(&format!("waits in {want}")),
            "{label}: {text}"
        );
    }
}
