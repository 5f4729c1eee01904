//! Root integration tests of the asyncio view: scenario programs under
//! every CPython on the machine, looked at by `dump` (no BPF) and `run`.
//! They assert the exact tasks (names, states, addresses the program
//! printed), the await chains' lines, the asyncio.Lock holders, labels, and
//! the blocked event loop's line. Every target runs under a hard timeout and
//! is killed.

mod common;

use std::{
    collections::BTreeSet,
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const EXIT_HANG: i32 = 3;

fn observer() -> Command {
    Command::new(observer_bin())
}

/// 1-based line of the first fixture line containing `needle`.
fn line_of(fixture: &str, needle: &str) -> u64 {
    let src = std::fs::read_to_string(python_fixture(fixture)).unwrap();
    src.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{fixture}.py has no line {needle:?}")) as u64
        + 1
}

fn start(py: &str, fixture: &str, args: &[&str]) -> Proc {
    let mut p = Proc::spawn({
        let mut c = Command::new(py);
        c.arg(python_fixture(fixture)).args(args);
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    p
}

fn dump(pid: u32) -> (Option<i32>, Value) {
    let out = observer()
        .args(["dump", "--format", "json", "-p", &pid.to_string()])
        .output()
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), r)
}

fn dump_text(pid: u32) -> String {
    let out = observer()
        .args(["dump", "-p", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Dumps until `formed` says the state to assert is there (a dump that
/// does not stop the target can catch it between two steps).
fn dump_until(
    pid: u32,
    what: &str,
    formed: impl Fn(Option<i32>, &Value) -> bool,
) -> (Option<i32>, Value) {
    let end = Instant::now() + T;
    loop {
        let (code, r) = dump(pid);
        if formed(code, &r) {
            return (code, r);
        }
        assert!(Instant::now() < end, "{what}: never formed: {r:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(args: &[&str], py: &str, fixture: &str, fargs: &[&str]) -> (Proc, tempfile::TempDir) {
    let dir = tmp();
    let mut cmd = observer();
    cmd.args(["run", "-q", "--report"])
        .arg(dir.path().join("r.json"))
        .args(args)
        .arg("--")
        .arg(py)
        .arg(python_fixture(fixture))
        .args(fargs);
    (Proc::spawn(cmd), dir)
}

// --- an asyncio.Lock ABBA between two named tasks ---------------------------

const ABBA: &str = "py_async_abba";

fn check_abba(label: &str, f: &Value, asyncio: &Value) {
    let names: BTreeSet<&str> = f["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["auditor", "poster"]),
        "{label}: {f:#}"
    );
    for (who, waits, holds, needle) in [
        (
            "poster",
            "audit_lock",
            "ledger_lock",
            "        async with audit_lock:",
        ),
        (
            "auditor",
            "ledger_lock",
            "audit_lock",
            "        async with ledger_lock:",
        ),
    ] {
        let t = task(asyncio, who);
        assert_eq!(t["state"], "pending", "{label}: {t:#}");
        assert_eq!(t["waits_lock"]["name"], waits, "{label}: {who}: {t:#}");
        let held: Vec<&str> = t["holds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["name"].as_str().unwrap())
            .collect();
        assert_eq!(held, vec![holds], "{label}: {who} holds: {t:#}");
        let other = if who == "poster" { "auditor" } else { "poster" };
        assert_eq!(
            t["waits_for"][0]["task"],
            task(asyncio, other)["addr"],
            "{label}: {who} waits for {other}: {t:#}"
        );
        let fr = user_frame(t, ABBA);
        assert_eq!(fr["line"], line_of(ABBA, needle), "{label}: {who}: {t:#}");
        let ft = f["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == who)
            .unwrap();
        assert!(
            ft["waits"].as_str().unwrap().contains(waits),
            "{label}: finding says what {who} waits for: {ft:#}"
        );
    }
    // The main task waits on both through its gather: not part of the cycle.
    let main = task(asyncio, "Task-1");
    assert_eq!(main["waits_for"].as_array().unwrap().len(), 2, "{main:#}");
}

/// `run` on a program that never ends by itself: its loop goes idle and is
/// looked at, then SIGINT stops it. The program, its exit and the report.
fn run_then_stop(py: &str, fixture: &str, fargs: &[&str]) -> (Proc, ExitStatus, Value) {
    let (mut o, dir) = run(&[], py, fixture, fargs);
    o.wait_stdout(T, |l| l == "ready");
    std::thread::sleep(Duration::from_millis(1500));
    o.signal(libc::SIGINT);
    let st = o.wait_exit(T);
    let r = read_json(&dir.path().join("r.json"));
    (o, st, r)
}

#[test]
#[ignore]
fn lock_abba_dump() {
    for (label, py) in pythons() {
        let p = start(py, ABBA, &[]);
        let (code, r) = dump_until(p.pid(), label, |c, _| c == Some(EXIT_HANG));
        assert_eq!(code, Some(EXIT_HANG));
        check_abba(
            label,
            await_cycle(&r["findings"]),
            &r["processes"][0]["asyncio"],
        );
        let text = dump_text(p.pid());
        assert!(
            text.contains("Found one asyncio await cycle (2 tasks)"),
            "{text}"
        );
        assert!(
            text.contains("waits for asyncio.Lock audit_lock")
                && text.contains("held by task \"auditor\""),
            "{text}"
        );
    }
}

#[test]
#[ignore]
fn lock_abba_run() {
    for (label, py) in pythons() {
        let (mut o, dir) = run(&["--kill-on-deadlock"], py, ABBA, &[]);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", o.stderr);
        let r = read_json(&dir.path().join("r.json"));
        let f = await_cycle(&r["findings"]);
        check_abba(label, f, asyncio_of(&r, f));
        assert_no_programs_left();
    }
}

/// `attach` to the hung program: it reads the tasks right away, confirms
/// the cycle and kills the target.
#[test]
#[ignore]
fn lock_abba_attach() {
    for (label, py) in pythons() {
        let mut p = start(py, ABBA, &[]);
        let dir = tmp();
        let mut cmd = observer();
        cmd.args(["attach", "-q", "--kill-on-deadlock", "--report"])
            .arg(dir.path().join("r.json"))
            .args(["-p", &p.pid().to_string()]);
        let mut o = Proc::spawn(cmd);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", o.stderr);
        p.wait_exit(T);
        let r = read_json(&dir.path().join("r.json"));
        let f = await_cycle(&r["findings"]);
        check_abba(label, f, asyncio_of(&r, f));
        assert_no_programs_left();
    }
}

/// The interpreters that have `asyncio.eager_task_factory` (3.12+).
fn eager_pythons() -> Vec<(&'static str, &'static str)> {
    pythons()
        .into_iter()
        .filter(|(_, py)| {
            Command::new(py)
                .args([
                    "-c",
                    "import asyncio, sys; sys.exit(not hasattr(asyncio, 'eager_task_factory'))",
                ])
                .status()
                .unwrap()
                .success()
        })
        .collect()
}

/// The same ABBA between eager tasks: each ran its first step inside
/// `create_task`, then suspended and became an ordinary pending task.
#[test]
#[ignore]
fn eager_lock_abba_dump() {
    let pys = eager_pythons();
    assert!(pys.len() >= 4 || !common::require_all(), "{pys:?}");
    for (label, py) in pys {
        let p = start(py, ABBA, &["eager"]);
        let (code, r) = dump_until(p.pid(), label, |c, _| c == Some(EXIT_HANG));
        assert_eq!(code, Some(EXIT_HANG));
        check_abba(
            label,
            await_cycle(&r["findings"]),
            &r["processes"][0]["asyncio"],
        );
    }
}

#[test]
#[ignore]
fn eager_lock_abba_run() {
    for (label, py) in eager_pythons() {
        let (mut o, dir) = run(&["--kill-on-deadlock"], py, ABBA, &["eager"]);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", o.stderr);
        let r = read_json(&dir.path().join("r.json"));
        let f = await_cycle(&r["findings"]);
        check_abba(label, f, asyncio_of(&r, f));
        assert_no_programs_left();
    }
}

// --- a gather of tasks waiting on an Event nobody sets ----------------------

const EVENT: &str = "py_async_event";

fn check_event(label: &str, r: &Value, asyncio: &Value, out: &[String]) {
    let findings = r["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .all(|f| f["kind"] != "deadlock" && f["kind"] != "event_loop_blocked"),
        "{label}: nothing to report: {findings:#?}"
    );
    // The tasks the program printed: names at the addresses it gave.
    for l in out.iter().filter(|l| l.starts_with("task ")) {
        let mut it = l.split_whitespace().skip(1);
        let (name, addr) = (it.next().unwrap(), it.next().unwrap());
        let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
        assert_eq!(task(asyncio, name)["addr"], addr, "{label}: {name}");
    }
    assert_eq!(task(asyncio, "finished")["state"], "done", "{label}");
    assert_eq!(task(asyncio, "cancelled")["state"], "cancelled", "{label}");
    let wait_line = line_of(EVENT, "    await ready.wait()");
    for i in 0..3 {
        let t = task(asyncio, &format!("consumer-{i}"));
        assert_eq!(t["state"], "pending", "{label}: {t:#}");
        assert_eq!(t["coro"], "consume", "{label}: {t:#}");
        assert_eq!(t["label"], "Event.wait on ready", "{label}: {t:#}");
        assert_eq!(user_frame(t, EVENT)["line"], wait_line, "{label}: {t:#}");
        assert_eq!(t["chain"][1]["function"], "Event.wait", "{label}: {t:#}");
    }
    let main = task(asyncio, "Task-1");
    assert_eq!(main["coro"], "main");
    let children: BTreeSet<u64> = main["waits_for"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["why"], "gather");
            e["task"].as_u64().unwrap()
        })
        .collect();
    let consumers: BTreeSet<u64> = (0..3)
        .map(|i| {
            task(asyncio, &format!("consumer-{i}"))["addr"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        children, consumers,
        "{label}: main awaits the gather of the consumers"
    );
}

#[test]
#[ignore]
fn event_gather_dump() {
    for (label, py) in pythons() {
        let p = start(py, EVENT, &[]);
        let (code, r) = dump_until(p.pid(), label, |_, r| {
            tasks(&r["processes"][0]["asyncio"])
                .iter()
                .filter(|t| t["label"] == "Event.wait on ready")
                .count()
                == 3
        });
        assert_eq!(code, Some(0), "{label}: no hang finding");
        check_event(label, &r, &r["processes"][0]["asyncio"], &p.stdout);
        let text = dump_text(p.pid());
        assert!(text.contains("waits in Event.wait on ready"), "{text}");
        assert!(
            text.contains("awaits gather of \"consumer-0\", \"consumer-1\", \"consumer-2\""),
            "{text}"
        );
    }
}

#[test]
#[ignore]
fn event_gather_run() {
    for (label, py) in pythons() {
        let (o, _, r) = run_then_stop(py, EVENT, &[]);
        check_event(label, &r, &r["processes"][0]["asyncio"], &o.stdout);
        assert_no_programs_left();
    }
}

// --- a coroutine that calls time.sleep --------------------------------------

const BLOCKING: &str = "py_async_blocking";

fn sleep_line() -> u64 {
    line_of(BLOCKING, "        time.sleep(SECS)")
}

#[test]
#[ignore]
fn blocked_loop_dump() {
    for (label, py) in pythons() {
        // Long sleeps: the dump catches the loop inside one.
        let p = start(py, BLOCKING, &["60", "1"]);
        // Formed once the handler is inside its time.sleep (before that the
        // loop runs its own code between polls).
        let (code, r) = dump_until(p.pid(), label, |_, r| {
            r["threads"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["python_frames"][0]["function"] == "handle")
        });
        assert_eq!(
            r["processes"][0]["asyncio"]["loops"][0]["polling"], false,
            "{label}"
        );
        assert_eq!(code, Some(0), "{label}");
        let l = &r["processes"][0]["asyncio"]["loops"][0];
        assert_eq!(
            l["tid"],
            p.pid(),
            "{label}: the loop runs on the main thread"
        );
        let cur = l["current"].as_u64().unwrap();
        assert_eq!(
            task(&r["processes"][0]["asyncio"], "slow-handler")["addr"],
            cur,
            "{label}"
        );
        let th = r["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == p.pid())
            .unwrap();
        let f0 = &th["python_frames"][0];
        assert_eq!(f0["function"], "handle", "{label}: {th:#}");
        assert_eq!(f0["line"], sleep_line(), "{label}: {th:#}");
        let text = dump_text(p.pid());
        let want = format!(
            "NOT in its selector (epoll_wait): running task \"slow-handler\" at handle ({}:{})",
            python_fixture(BLOCKING).display(),
            sleep_line()
        );
        assert!(text.contains(&want), "{label}: {text}");
        // The waiting task is shown with where it awaits.
        assert_eq!(
            task(&r["processes"][0]["asyncio"], "ticker")["label"],
            "asyncio.sleep"
        );
    }
}

#[test]
#[ignore]
fn blocked_loop_run() {
    for (label, py) in pythons() {
        let (mut o, dir) = run(&[], py, BLOCKING, &["0.5", "3"]);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(0), "{label}: {:?}", o.stderr);
        let r = read_json(&dir.path().join("r.json"));
        let blocked: Vec<&Value> = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "event_loop_blocked")
            .collect();
        // Each time.sleep(0.5) is one stretch out of the selector, seen while
        // it lasted (the stack is read then).
        assert_eq!(blocked.len(), 3, "{label}: {blocked:#?}");
        for f in &blocked {
            let t = &f["threads"][0];
            assert_eq!(t["tid"], r["processes"][0]["tgid"], "{label}");
            assert_eq!(
                t["python_frames"][0]["function"], "handle",
                "{label}: {f:#}"
            );
            assert_eq!(
                t["python_frames"][0]["line"],
                sleep_line(),
                "{label}: {f:#}"
            );
            assert!(
                f["summary"]
                    .as_str()
                    .unwrap()
                    .contains("task \"slow-handler\" ran at handle"),
                "{label}: {f:#}"
            );
        }
        // Every stretch, measured to its end: >= the 0.5 s sleep.
        let stalls = r["processes"][0]["loop_stalls"].as_array().unwrap();
        let long: Vec<u64> = stalls
            .iter()
            .map(|s| s["end_ns"].as_u64().unwrap() - s["start_ns"].as_u64().unwrap())
            .filter(|&d| d >= 500_000_000)
            .collect();
        assert_eq!(long.len(), 3, "{label}: {stalls:#?}");
        let summary = o
            .stdout
            .iter()
            .find(|l| l.starts_with("Event loop of process"))
            .unwrap_or_else(|| panic!("{label}: no summary line: {:?}", o.stdout));
        assert!(summary.contains("blocked 3 times"), "{label}: {summary}");
        assert_no_programs_left();
    }
}

// --- a healthy server under load --------------------------------------------

const SERVER: &str = "py_async_server";

fn no_finding(label: &str, r: &Value) {
    let f = r["findings"].as_array().unwrap();
    assert!(
        f.iter()
            .all(|f| f["kind"] != "deadlock" && f["kind"] != "event_loop_blocked"),
        "{label}: healthy server: {f:#?}"
    );
}

#[test]
#[ignore]
fn healthy_server_dump() {
    for (label, py) in pythons() {
        let p = start(py, SERVER, &[]);
        for _ in 0..5 {
            let (code, r) = dump(p.pid());
            assert_eq!(code, Some(0), "{label}");
            no_finding(label, &r);
            let a = &r["processes"][0]["asyncio"];
            for i in 0..8 {
                assert_eq!(
                    task(a, &format!("client-{i}"))["state"],
                    "pending",
                    "{label}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
#[ignore]
fn healthy_server_run() {
    for (label, py) in pythons() {
        let (mut o, dir) = run(&[], py, SERVER, &["3"]);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(0), "{label}: {:?}", o.stderr);
        let r = read_json(&dir.path().join("r.json"));
        no_finding(label, &r);
        // Observed: the event loop was watched (its stalls list is there),
        // and it never stayed out of its selector past the limit.
        let p = &r["processes"][0];
        assert_eq!(
            p["loop_stalls"].as_array().map(Vec::len),
            Some(0),
            "{label}: {p:#}"
        );
        assert_no_programs_left();
    }
}

// --- two tasks each awaiting a future only the other one keeps --------------

const HANDSHAKE: &str = "py_async_handshake";

/// The futures' addresses the program printed: (task that keeps it, addr).
fn hellos(out: &[String]) -> Vec<(String, u64)> {
    out.iter()
        .filter(|l| l.starts_with("future "))
        .map(|l| {
            let mut it = l.split_whitespace().skip(1);
            let (name, addr) = (it.next().unwrap(), it.next().unwrap());
            let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap();
            (name.to_string(), addr)
        })
        .collect()
}

fn await_line() -> u64 {
    line_of(HANDSHAKE, "    await inbox.pop()")
}

/// The main task awaits the gather of both peers; each is pending in
/// `coro` at `line` of `fixture`.
fn check_peers(
    label: &str,
    asyncio: &Value,
    fixture: &str,
    peers: [&str; 2],
    coro: &str,
    line: u64,
) {
    for who in peers {
        let t = task(asyncio, who);
        assert_eq!(t["state"], "pending", "{label}: {t:#}");
        assert_eq!(t["coro"], coro, "{label}: {t:#}");
        assert_eq!(user_frame(t, fixture)["line"], line, "{label}: {t:#}");
    }
    let main = task(asyncio, "Task-1");
    let children: BTreeSet<u64> = main["waits_for"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["why"], "gather", "{label}: {main:#}");
            e["task"].as_u64().unwrap()
        })
        .collect();
    let peers: BTreeSet<u64> = peers
        .iter()
        .map(|n| task(asyncio, n)["addr"].as_u64().unwrap())
        .collect();
    assert_eq!(children, peers, "{label}: {main:#}");
}

fn check_handshake(label: &str, f: &Value, asyncio: &Value, out: &[String]) {
    let futs = hellos(out);
    assert_eq!(futs.len(), 2, "{label}: {out:?}");
    check_peers(
        label,
        asyncio,
        HANDSHAKE,
        ["client", "server"],
        "handshake",
        await_line(),
    );
    let names: BTreeSet<&str> = f["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["client", "server"]),
        "{label}: {f:#}"
    );
    for (who, other) in [("client", "server"), ("server", "client")] {
        let t = task(asyncio, who);
        // It awaits the other's hello, which only the other keeps.
        let fut = futs.iter().find(|x| x.0 == other).unwrap().1;
        let edges = t["waits_for"].as_array().unwrap();
        assert_eq!(edges.len(), 1, "{label}: {who}: {t:#}");
        assert_eq!(
            edges[0]["task"],
            task(asyncio, other)["addr"],
            "{label}: {who} waits for {other}: {t:#}"
        );
        assert_eq!(
            edges[0]["why"],
            serde_json::json!({"future": {"fut": fut, "name": "my_hello"}}),
            "{label}: {who}: {t:#}"
        );
        assert!(t["holds"].is_null(), "{label}: {who}: {t:#}");
        let ft = f["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == who)
            .unwrap();
        assert_eq!(
            ft["waits"],
            format!("awaits future my_hello ({fut:#x}) that only task \"{other}\" refers to"),
            "{label}: {ft:#}"
        );
        assert_eq!(ft["frames"][0]["function"], "handshake", "{label}: {ft:#}");
        assert_eq!(ft["frames"][0]["line"], await_line(), "{label}: {ft:#}");
        assert!(
            ft["frames"][0]["file"]
                .as_str()
                .unwrap()
                .ends_with(&format!("{HANDSHAKE}.py")),
            "{label}: {ft:#}"
        );
    }
}

/// The main task keeps both futures in a list: each peer's future has two
/// tasks that could complete it, so no edge, no cycle; the peers are shown
/// pending at their await with nothing named to wait for.
fn check_shared(label: &str, r: &Value, asyncio: &Value) {
    check_peers(
        label,
        asyncio,
        HANDSHAKE,
        ["client", "server"],
        "handshake",
        await_line(),
    );
    no_edge(label, r, asyncio, ["client", "server"]);
}

/// No await cycle, and `peers` wait for no task, lock or labelled wait.
fn no_edge(label: &str, r: &Value, asyncio: &Value, peers: [&str; 2]) {
    let findings = r["findings"].as_array().unwrap();
    assert!(
        findings.iter().all(|f| f["kind"] != "deadlock"),
        "{label}: no await cycle: {findings:#?}"
    );
    for who in peers {
        let t = task(asyncio, who);
        assert!(t["waits_for"].is_null(), "{label}: {who}: {t:#}");
        assert!(t["waits_lock"].is_null(), "{label}: {who}: {t:#}");
        assert!(t["label"].is_null(), "{label}: {who}: {t:#}");
    }
}

#[test]
#[ignore]
fn future_cycle_dump() {
    for (label, py) in pythons() {
        let p = start(py, HANDSHAKE, &[]);
        let (code, r) = dump_until(p.pid(), label, |c, _| c == Some(EXIT_HANG));
        assert_eq!(code, Some(EXIT_HANG));
        let a = &r["processes"][0]["asyncio"];
        check_handshake(label, await_cycle(&r["findings"]), a, &p.stdout);
        let text = dump_text(p.pid());
        assert!(
            text.contains("Found one asyncio await cycle (2 tasks)"),
            "{label}: {text}"
        );
        assert!(
            text.contains("awaits future my_hello (")
                && text.contains("that only task \"server\" refers to"),
            "{label}: {text}"
        );
    }
}

#[test]
#[ignore]
fn future_cycle_run() {
    for (label, py) in pythons() {
        let (mut o, dir) = run(&["--kill-on-deadlock"], py, HANDSHAKE, &[]);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", o.stderr);
        let r = read_json(&dir.path().join("r.json"));
        let f = await_cycle(&r["findings"]);
        check_handshake(label, f, asyncio_of(&r, f), &o.stdout);
        assert_no_programs_left();
    }
}

#[test]
#[ignore]
fn future_shared_dump() {
    for (label, py) in pythons() {
        let p = start(py, HANDSHAKE, &["shared"]);
        // Formed once both peers are suspended at their await.
        let (code, r) = dump_until(p.pid(), label, |_, r| {
            all_at(r, ["client", "server"], await_line())
        });
        assert_eq!(code, Some(0), "{label}: no hang finding");
        check_shared(label, &r, &r["processes"][0]["asyncio"]);
    }
}

#[test]
#[ignore]
fn future_shared_run() {
    for (label, py) in pythons() {
        let (o, st, r) = run_then_stop(py, HANDSHAKE, &["shared"]);
        // The program's own end on SIGINT (128+2), not 3: no hang found.
        assert_eq!(st.code(), Some(130), "{label}: {:?}", o.stderr);
        check_shared(label, &r, &r["processes"][0]["asyncio"]);
        assert_no_programs_left();
    }
}

// --- two tasks awaiting one future nobody else keeps ------------------------

const ONE_FUTURE: &str = "py_async_one_future";

/// Both wait for good, but neither can complete the future the other
/// awaits (it awaits it too): no edge between them, no cycle.
fn check_one_future(label: &str, r: &Value, asyncio: &Value) {
    let line = line_of(ONE_FUTURE, "    await ready");
    check_peers(
        label,
        asyncio,
        ONE_FUTURE,
        ["first", "second"],
        "wait_ready",
        line,
    );
    no_edge(label, r, asyncio, ["first", "second"]);
}

#[test]
#[ignore]
fn one_future_dump() {
    for (label, py) in pythons() {
        let p = start(py, ONE_FUTURE, &[]);
        let line = line_of(ONE_FUTURE, "    await ready");
        let (code, r) = dump_until(p.pid(), label, |_, r| all_at(r, ["first", "second"], line));
        assert_eq!(code, Some(0), "{label}: no hang finding");
        check_one_future(label, &r, &r["processes"][0]["asyncio"]);
    }
}

#[test]
#[ignore]
fn one_future_run() {
    for (label, py) in pythons() {
        let (o, st, r) = run_then_stop(py, ONE_FUTURE, &[]);
        // The program's own end on SIGINT (128+2), not 3: no hang found.
        assert_eq!(st.code(), Some(130), "{label}: {:?}", o.stderr);
        check_one_future(label, &r, &r["processes"][0]["asyncio"]);
        assert_no_programs_left();
    }
}

// --- the same await cycles on uvloop's loop ---------------------------------

/// uvloop's tasks are asyncio Tasks and its loop runs in C: the await cycles
/// above, on uvloop under every CPython that has it, are found the same
/// way, with both tasks, what each waits for and the lines.
fn uvloop_pys() -> Vec<(&'static str, String)> {
    uvloop_pythons()
        .into_iter()
        .map(|(l, p)| (l, p.display().to_string()))
        .collect()
}

#[test]
#[ignore]
fn uvloop_future_cycle_dump() {
    for (label, py) in uvloop_pys() {
        let p = start(&py, HANDSHAKE, &["uvloop"]);
        let (code, r) = dump_until(p.pid(), label, |c, _| c == Some(EXIT_HANG));
        assert_eq!(code, Some(EXIT_HANG));
        let a = &r["processes"][0]["asyncio"];
        check_handshake(label, await_cycle(&r["findings"]), a, &p.stdout);
    }
}

#[test]
#[ignore]
fn uvloop_future_cycle_run() {
    for (label, py) in uvloop_pys() {
        let (mut o, dir) = run(&["--kill-on-deadlock"], &py, HANDSHAKE, &["uvloop"]);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", o.stderr);
        let r = read_json(&dir.path().join("r.json"));
        let f = await_cycle(&r["findings"]);
        check_handshake(label, f, asyncio_of(&r, f), &o.stdout);
        assert_no_programs_left();
    }
}

#[test]
#[ignore]
fn uvloop_lock_abba_run() {
    for (label, py) in uvloop_pys() {
        let (mut o, dir) = run(&["--kill-on-deadlock"], &py, ABBA, &["uvloop"]);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", o.stderr);
        let r = read_json(&dir.path().join("r.json"));
        let f = await_cycle(&r["findings"]);
        check_abba(label, f, asyncio_of(&r, f));
        assert_no_programs_left();
    }
}

/// `attach` to the hung uvloop program: its tasks are read right away.
#[test]
#[ignore]
fn uvloop_lock_abba_attach() {
    for (label, py) in uvloop_pys() {
        let mut p = start(&py, ABBA, &["uvloop"]);
        let dir = tmp();
        let mut cmd = observer();
        cmd.args(["attach", "-q", "--kill-on-deadlock", "--report"])
            .arg(dir.path().join("r.json"))
            .args(["-p", &p.pid().to_string()]);
        let mut o = Proc::spawn(cmd);
        let st = o.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", o.stderr);
        p.wait_exit(T);
        let r = read_json(&dir.path().join("r.json"));
        let f = await_cycle(&r["findings"]);
        check_abba(label, f, asyncio_of(&r, f));
        assert_no_programs_left();
    }
}
