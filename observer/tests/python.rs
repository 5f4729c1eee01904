//! Root integration tests of the Python view (no uprobes): each scenario
//! program hangs (or not) under every CPython on the machine, and `dump`,
//! `attach` after the hang and `run` must name the exact threads (TIDs and
//! `threading` names), locks (as the program spells them), `with` lines,
//! holders, joins and labels. Every target runs under a hard timeout and is
//! killed.

mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const EXIT_HANG: i32 = 3;

fn observer() -> Command {
    Command::new(observer_bin())
}

/// What a scenario must show. Lines are found in the fixture by a needle.
struct Expect {
    fixture: &'static str,
    /// Threads whose waits form the deadlock cycle (None: no finding at all).
    cycle: Option<&'static [&'static str]>,
    /// (thread, lock name as its frame spells it, "with"/"acquire", needle of the line)
    waits: &'static [(&'static str, &'static str, &'static str, &'static str)],
    /// (thread, lock name, needle of the line the holding frame's function
    /// starts at, needle of its `with` line after that)
    holds: &'static [(&'static str, &'static str, &'static str, &'static str)],
    /// (joining thread, joined thread)
    joins: &'static [(&'static str, &'static str)],
    /// (thread, label)
    labels: &'static [(&'static str, &'static str)],
    /// (thread, function expected somewhere in its Python stack)
    functions: &'static [(&'static str, &'static str)],
}

const ABBA_GLOBALS: Expect = Expect {
    fixture: "py_abba_globals",
    cycle: Some(&["alpha", "beta"]),
    waits: &[
        ("alpha", "audit_lock", "with", "        with audit_lock:"),
        ("beta", "ledger_lock", "with", "        with ledger_lock:"),
    ],
    holds: &[
        ("alpha", "ledger_lock", "def post", "with ledger_lock:"),
        ("beta", "audit_lock", "def audit", "with audit_lock:"),
    ],
    joins: &[("MainThread", "alpha")],
    labels: &[],
    functions: &[
        ("alpha", "post"),
        ("beta", "audit"),
        ("MainThread", "<module>"),
    ],
};

const ABBA_ATTRS: Expect = Expect {
    fixture: "py_abba_attrs",
    cycle: Some(&["teller-1", "teller-2"]),
    waits: &[
        ("teller-1", "dst.lock", "with", "with dst.lock:"),
        ("teller-2", "dst.lock", "with", "with dst.lock:"),
    ],
    holds: &[
        ("teller-1", "src.lock", "def transfer", "with src.lock:"),
        ("teller-2", "src.lock", "def transfer", "with src.lock:"),
    ],
    joins: &[("MainThread", "teller-1")],
    labels: &[],
    functions: &[
        ("teller-1", "transfer"),
        ("teller-2", "teller"),
        ("MainThread", "main"),
    ],
};

const RLOCK_ABBA: Expect = Expect {
    fixture: "py_rlock_abba",
    cycle: Some(&["reader", "writer"]),
    waits: &[
        ("reader", "store_lock", "with", "        with store_lock:"),
        ("writer", "index_lock", "with", "        with index_lock:"),
    ],
    // reader re-entered index_lock in lookup(): the innermost `with` shows.
    holds: &[
        ("reader", "index_lock", "def lookup", "with index_lock:"),
        ("writer", "store_lock", "def writer", "with store_lock:"),
    ],
    joins: &[("MainThread", "reader")],
    labels: &[],
    functions: &[
        ("reader", "lookup"),
        ("reader", "reader"),
        ("writer", "writer"),
    ],
};

const JOIN_HOLDING: Expect = Expect {
    fixture: "py_join_holding",
    cycle: Some(&["MainThread", "flusher"]),
    waits: &[("flusher", "state_lock", "with", "    with state_lock:")],
    // Held at the `with` line, while the thread is at `flusher.join()`.
    holds: &[(
        "MainThread",
        "state_lock",
        "say(f\"thread MainThread",
        "with state_lock:",
    )],
    joins: &[("MainThread", "flusher")],
    labels: &[],
    functions: &[("flusher", "flush")],
};

const QUEUE: Expect = Expect {
    fixture: "py_queue_consumer",
    cycle: None,
    waits: &[],
    holds: &[],
    joins: &[("MainThread", "consumer")],
    labels: &[("consumer", "Queue.get on jobs")],
    functions: &[("consumer", "consume"), ("consumer", "Queue.get")],
};

const CLEAN: Expect = Expect {
    fixture: "py_clean",
    cycle: None,
    waits: &[],
    holds: &[],
    joins: &[],
    labels: &[],
    functions: &[
        ("worker-0", "work"),
        ("worker-1", "work"),
        ("worker-2", "work"),
    ],
};

/// 1-based line of the first fixture line containing `needle`.
fn line_of(fixture: &str, needle: &str) -> u64 {
    line_after(fixture, "", needle)
}

/// 1-based line of the first line containing `needle` at or after the
/// first line containing `after`.
fn line_after(fixture: &str, after: &str, needle: &str) -> u64 {
    let src = std::fs::read_to_string(python_fixture(fixture)).unwrap();
    let lines: Vec<&str> = src.lines().collect();
    let from = lines
        .iter()
        .position(|l| l.contains(after))
        .unwrap_or_else(|| panic!("{fixture}.py has no line {after:?}"));
    (from
        + lines[from..]
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{fixture}.py has no line {needle:?} after {after:?}")))
        as u64
        + 1
}

fn thread(r: &Value, tid: u32) -> &Value {
    r["threads"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|t| t["tid"] == tid)
        .unwrap_or_else(|| panic!("no thread {tid}: {r:#}"))
}

/// Checks a dump or report (both have `threads` and `findings`) against `e`.
fn check(e: &Expect, py: &str, r: &Value, out: &[String]) {
    let tid = |name: &str| tid_of(out, name);
    let ctx = format!("{} under {py}", e.fixture);
    for (name, t) in fixture_threads(out) {
        assert_eq!(thread(r, t)["name"], name, "{ctx}: threading name of {t}");
    }
    let findings = r["findings"].as_array().unwrap();
    match e.cycle {
        None => assert!(
            findings
                .iter()
                .all(|f| f["kind"] != "deadlock" && f["kind"] != "orphaned_lock"),
            "{ctx}: no hang expected: {findings:#?}"
        ),
        Some(names) => {
            let dl: Vec<&Value> = findings
                .iter()
                .filter(|f| f["kind"] == "deadlock")
                .collect();
            assert_eq!(dl.len(), 1, "{ctx}: one deadlock: {findings:#?}");
            let waiters: BTreeSet<u64> = dl[0]["cycle"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["waiter_tid"].as_u64().unwrap())
                .collect();
            let want: BTreeSet<u64> = names.iter().map(|n| u64::from(tid(n))).collect();
            assert_eq!(waiters, want, "{ctx}: the cycle");
            for c in dl[0]["cycle"].as_array().unwrap() {
                let ti = dl[0]["threads"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["tid"] == c["waiter_tid"])
                    .unwrap();
                assert!(
                    !ti["python_frames"].as_array().unwrap().is_empty(),
                    "{ctx}: finding carries Python frames: {ti:#}"
                );
            }
        }
    }
    for &(who, lock, how, needle) in e.waits {
        let t = thread(r, tid(who));
        let w = &t["python"]["waits"];
        assert_eq!(w["name"], lock, "{ctx}: {who} waits for: {t:#}");
        assert_eq!(w["how"], how, "{ctx}: {who} how: {t:#}");
        let site = format!("{}.py:{}", e.fixture, line_of(e.fixture, needle));
        assert!(
            w["site"].as_str().unwrap_or("").ends_with(&site),
            "{ctx}: {who} waits at {site}: {t:#}"
        );
    }
    for &(who, lock, after, needle) in e.holds {
        let t = thread(r, tid(who));
        let held: Vec<&str> = t["python"]["holds"]
            .as_array()
            .map(|v| v.iter().filter_map(|h| h["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(held, vec![lock], "{ctx}: {who} holds: {t:#}");
        // The line of the `with` that took it, not where the frame is now.
        let site = format!("{}.py:{}", e.fixture, line_after(e.fixture, after, needle));
        assert!(
            t["python"]["holds"][0]["site"]
                .as_str()
                .unwrap_or("")
                .ends_with(&site),
            "{ctx}: {who} holds {lock} from {site}: {t:#}"
        );
    }
    for &(who, joined) in e.joins {
        let t = thread(r, tid(who));
        assert_eq!(
            t["python"]["joins"],
            tid(joined),
            "{ctx}: {who} joins: {t:#}"
        );
    }
    for &(who, label) in e.labels {
        let t = thread(r, tid(who));
        assert_eq!(t["python"]["label"], label, "{ctx}: {who} label: {t:#}");
    }
    for &(who, func) in e.functions {
        let t = thread(r, tid(who));
        let funcs: Vec<&str> = t["python_frames"]
            .as_array()
            .map(|v| v.iter().filter_map(|f| f["function"].as_str()).collect())
            .unwrap_or_default();
        assert!(funcs.contains(&func), "{ctx}: {who} runs {func}: {t:#}");
    }
}

fn start(py: &str, fixture: &str) -> Proc {
    let mut p = Proc::spawn({
        let mut c = Command::new(py);
        c.arg(python_fixture(fixture));
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    p
}

/// True once the state to assert has formed (a hang is found, or every
/// expected wait/label/join shows), so a dump taken then is final.
fn formed(e: &Expect, code: Option<i32>, r: &Value, out: &[String]) -> bool {
    if e.cycle.is_some() {
        return code == Some(EXIT_HANG);
    }
    let t = |name: &str| {
        r["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == tid_of(out, name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    e.labels.iter().all(|(w, l)| t(w)["python"]["label"] == *l)
        && e.joins
            .iter()
            .all(|(w, _)| !t(w)["python"]["joins"].is_null())
        && e.functions
            .iter()
            .all(|(w, _)| t(w)["python_frames"].is_array())
}

fn dump_case(e: &Expect) {
    for (label, py) in pythons() {
        let p = start(py, e.fixture);
        let end = Instant::now() + T;
        let (code, r) = loop {
            let out = observer()
                .args(["dump", "--format", "json", "-p", &p.pid().to_string()])
                .output()
                .unwrap();
            let r: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out.stderr)));
            let code = out.status.code();
            if formed(e, code, &r, &p.stdout) {
                break (code, r);
            }
            assert!(
                Instant::now() < end,
                "{} under {label}: never formed: {r:#}",
                e.fixture
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(code, Some(if e.cycle.is_some() { EXIT_HANG } else { 0 }));
        check(e, label, &r, &p.stdout);
        // The text says it the jstack way.
        let text = observer()
            .args(["dump", "-p", &p.pid().to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        if e.cycle.is_some() {
            assert!(text.contains("Found one Python-level deadlock"), "{text}");
        }
        for (w, l) in e.labels {
            assert!(text.contains(&format!("waits in {l}")), "{w}: {text}");
        }
    }
}

fn attach_case(e: &Expect) {
    for (label, py) in pythons() {
        let p = start(py, e.fixture);
        if e.cycle.is_some() {
            // After the hang: the dump says when it formed.
            let end = Instant::now() + T;
            while observer()
                .args(["dump", "-p", &p.pid().to_string()])
                .output()
                .unwrap()
                .status
                .code()
                != Some(EXIT_HANG)
            {
                assert!(Instant::now() < end, "{}: no hang", e.fixture);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut cmd = observer();
        cmd.args(["attach", "-q", "-p", &p.pid().to_string(), "--report"])
            .arg(&rep);
        if e.cycle.is_some() {
            cmd.args(["--kill-on-deadlock", "--duration", "20"]);
        } else {
            cmd.args(["--duration", "1.5"]);
        }
        let mut o = Proc::spawn(cmd);
        let st = o.wait_exit(T);
        assert_eq!(
            st.code(),
            Some(if e.cycle.is_some() { EXIT_HANG } else { 0 }),
            "{} under {label}: {:?}",
            e.fixture,
            o.stderr
        );
        check(e, label, &read_json(&rep), &p.stdout);
        if e.cycle.is_some() {
            assert!(
                !Path::new(&format!("/proc/{}", p.pid())).exists() || {
                    std::thread::sleep(Duration::from_millis(200));
                    std::fs::read_to_string(format!("/proc/{}/stat", p.pid()))
                        .map(|s| s.contains(") Z"))
                        .unwrap_or(true)
                },
                "--kill-on-deadlock killed the target"
            );
        }
        drop(p);
        assert_no_programs_left();
    }
}

fn run_case(e: &Expect) {
    for (label, py) in pythons() {
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let rec = dir.path().join("rec.jsonl");
        let mut cmd = observer();
        cmd.args(["run", "-q", "--report"])
            .arg(&rep)
            .arg("--record")
            .arg(&rec);
        if e.cycle.is_some() {
            cmd.arg("--kill-on-deadlock");
        }
        cmd.arg("--").arg(py).arg(python_fixture(e.fixture));
        let mut o = Proc::spawn(cmd);
        o.wait_stdout(T, |l| l == "ready");
        if e.cycle.is_none() {
            // Let the state form and be seen by a few scans, then stop.
            std::thread::sleep(Duration::from_millis(1500));
            o.signal(libc::SIGINT);
        }
        let st = o.wait_exit(T);
        if e.cycle.is_some() {
            assert_eq!(
                st.code(),
                Some(EXIT_HANG),
                "{} under {label}: {:?}",
                e.fixture,
                o.stderr
            );
        }
        check(e, label, &read_json(&rep), &o.stdout);
        // The recording replays to the same Python finding.
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
            Some(hang_code(&read_json(&rep))),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let replayed = read_json(&rp);
        let kinds = |r: &Value| -> Vec<String> {
            r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["kind"].to_string())
                .filter(|k| k.contains("deadlock"))
                .collect()
        };
        assert_eq!(
            kinds(&replayed),
            kinds(&read_json(&rep)),
            "{} under {label}: replay",
            e.fixture
        );
        drop(o);
        assert_no_programs_left();
    }
}

macro_rules! scenario {
    ($dump:ident, $attach:ident, $run:ident, $e:expr) => {
        #[test]
        #[ignore = "needs root"]
        fn $dump() {
            dump_case(&$e);
        }
        #[test]
        #[ignore = "needs root and BPF"]
        fn $attach() {
            attach_case(&$e);
        }
        #[test]
        #[ignore = "needs root and BPF"]
        fn $run() {
            run_case(&$e);
        }
    };
}

scenario!(
    dump_abba_globals,
    attach_abba_globals,
    run_abba_globals,
    ABBA_GLOBALS
);
scenario!(
    dump_abba_attrs,
    attach_abba_attrs,
    run_abba_attrs,
    ABBA_ATTRS
);
scenario!(
    dump_rlock_abba,
    attach_rlock_abba,
    run_rlock_abba,
    RLOCK_ABBA
);
scenario!(
    dump_join_holding,
    attach_join_holding,
    run_join_holding,
    JOIN_HOLDING
);
scenario!(
    dump_queue_consumer,
    attach_queue_consumer,
    run_queue_consumer,
    QUEUE
);
scenario!(dump_clean, attach_clean, run_clean, CLEAN);

/// `dump --native`: each Python thread also carries its native stack, one
/// stack in the order it ran (JSON `frames`, each with its `kind`): the
/// native frames the innermost Python frame is blocked in come above it.
#[test]
#[ignore = "needs root"]
fn dump_native_frames() {
    let e = &ABBA_GLOBALS;
    for (label, py) in pythons() {
        let p = start(py, e.fixture);
        let pid = p.pid().to_string();
        let end = Instant::now() + T;
        let r = loop {
            let out = observer()
                .args(["dump", "--native", "--format", "json", "-p", &pid])
                .output()
                .unwrap();
            let r: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out.stderr)));
            if out.status.code() == Some(EXIT_HANG) {
                break r;
            }
            assert!(Instant::now() < end, "{label}: never hung: {r:#}");
            std::thread::sleep(Duration::from_millis(100));
        };
        check(e, label, &r, &p.stdout);
        for who in ["alpha", "beta"] {
            let t = thread(&r, tid_of(&p.stdout, who));
            let funcs: Vec<(&str, &str)> = t["frames"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .filter_map(|f| Some((f["kind"].as_str()?, f["function"].as_str()?)))
                        .collect()
                })
                .unwrap_or_default();
            // The lock's wait, in the interpreter's exported C function,
            // under the Python frame that called it (where the eval loop
            // ran). 3.14+ park on a PyMutex through `_PySemaphore_Wait`.
            let at = |kind: &str, name: &str| funcs.iter().position(|f| *f == (kind, name));
            let acquire = at("native", wait_fn(label));
            assert!(acquire.is_some(), "{label}: {who} native: {funcs:?}");
            assert!(
                funcs.iter().skip(acquire.unwrap()).any(|f| f.0 == "python"),
                "{label}: {who}: a Python frame under the wait: {funcs:?}"
            );
        }
        let text = observer()
            .args(["dump", "--native", "-p", &pid])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&text.stdout);
        let block = text
            .split("\nThread ")
            .find(|b| b.contains("\"alpha\""))
            .unwrap_or_else(|| panic!("{label}: no alpha block: {text}"));
        let lines: Vec<&str> = block.lines().collect();
        let native = lines.iter().position(|l| l.contains(wait_fn(label)));
        let post = lines
            .iter()
            .position(|l| l.trim_start().starts_with("post ("));
        assert!(
            native.is_some() && post.is_some() && native < post,
            "{label}: native frames above the Python ones: {block}"
        );
        assert!(
            !block.contains("_PyEval_EvalFrame"),
            "{label}: the eval loop is where its Python frames are: {block}"
        );
    }
}

/// Debian's CPython 3.14/3.15, unpacked from their packages (stripped).
fn unpacked(label: &str) -> bool {
    label == "3.14" || label == "3.15"
}

/// The exported C function a Python lock's waiter sleeps in.
fn wait_fn(label: &str) -> &'static str {
    if unpacked(label) {
        "_PySemaphore_Wait"
    } else {
        "PyThread_acquire_lock_timed"
    }
}
