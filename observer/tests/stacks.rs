//! Root integration tests: symbolized native and Python stacks in findings.

mod common;

use std::{process::Command, time::Duration};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn observer() -> Command {
    Command::new(observer_bin())
}

/// Line of the first `pthread_mutex_lock(m)` in lock_second() of abba.c: the
/// call that blocks.
fn blocking_line() -> u64 {
    let src = std::fs::read_to_string(repo().join("fixtures/abba.c")).unwrap();
    let start = src
        .lines()
        .position(|l| l.contains("lock_second("))
        .expect("lock_second");
    (src.lines()
        .skip(start)
        .position(|l| l.contains("pthread_mutex_lock("))
        .unwrap()
        + start
        + 1) as u64
}

fn frames(t: &Value) -> Vec<(String, String, u64)> {
    t["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["function"].as_str().unwrap_or("").to_string(),
                f["file"].as_str().unwrap_or("").to_string(),
                f["line"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Each cycle thread's stack names its thread function and the exact line
/// of the blocking pthread_mutex_lock call.
fn check_abba_stacks(r: &Value, out: &[String]) {
    let f = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "deadlock")
        .expect("deadlock");
    let line = blocking_line();
    for name in ["alpha", "beta"] {
        let tid = tid_of(out, name);
        let t = f["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == tid)
            .unwrap();
        let fr = frames(t);
        assert!(
            fr.iter().any(|(func, _, _)| func == name),
            "{name} has its function: {fr:#?}"
        );
        assert!(
            fr.iter()
                .any(|(_, file, l)| file.ends_with("fixtures/abba.c") && *l == line),
            "{name} blocks at abba.c:{line}: {fr:#?}"
        );
        assert!(
            fr.iter()
                .any(|(func, _, _)| func.contains("pthread_mutex_lock")),
            "{fr:#?}"
        );
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn c_abba_without_frame_pointers_has_exact_stacks_live_and_after_the_fact() {
    // fixtures are built with -O2: no frame pointers on x86_64
    let bin = fixture("abba");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "-q", "--kill-on-deadlock", "--report"])
            .arg(&rep)
            .arg("--")
            .arg(&bin);
        c
    });
    assert_eq!(p.wait_exit(T).code(), Some(3));
    check_abba_stacks(&read_json(&rep), &p.stdout);

    let mut hung = Proc::spawn(Command::new(&bin));
    hung.wait_stdout(T, |l| l == "ready");
    std::thread::sleep(Duration::from_millis(100));
    let d = observer()
        .args(["dump", "--format", "json", "-p", &hung.pid().to_string()])
        .output()
        .unwrap();
    assert_eq!(d.status.code(), Some(3));
    check_abba_stacks(&serde_json::from_slice(&d.stdout).unwrap(), &hung.stdout);
    let rep2 = dir.path().join("r2.json");
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args([
            "attach",
            "-q",
            "--kill-on-deadlock",
            "-p",
            &hung.pid().to_string(),
            "--report",
        ])
        .arg(&rep2);
        c
    });
    assert_eq!(obs.wait_exit(T).code(), Some(3));
    hung.wait_exit(T);
    check_abba_stacks(&read_json(&rep2), &hung.stdout);
    assert_no_programs_left();
}

#[test]
#[ignore = "needs root and BPF"]
fn stripped_binary_gives_module_offset_frames() {
    let dir = tmp();
    let stripped = dir.path().join("abba-stripped");
    std::fs::copy(fixture("abba"), &stripped).unwrap();
    assert!(
        Command::new("strip")
            .arg(&stripped)
            .status()
            .unwrap()
            .success()
    );
    let mut hung = Proc::spawn(Command::new(&stripped));
    hung.wait_stdout(T, |l| l == "ready");
    std::thread::sleep(Duration::from_millis(100));
    let d = observer()
        .args(["dump", "--format", "json", "-p", &hung.pid().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        d.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&d.stderr)
    );
    let r: Value = serde_json::from_slice(&d.stdout).unwrap();
    let f = &r["findings"][0];
    assert_eq!(f["kind"], "deadlock");
    // no symbol for the locks (stripped), but the cycle is still found
    assert!(f["cycle"][0]["lock"]["symbol"].is_null(), "{f:#}");
    for t in f["threads"].as_array().unwrap() {
        let fr = t["frames"].as_array().unwrap();
        let exe: Vec<&Value> = fr
            .iter()
            .filter(|x| {
                x["module"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("abba-stripped"))
            })
            .collect();
        assert!(
            !exe.is_empty(),
            "frames in the stripped executable: {fr:#?}"
        );
        for x in exe {
            assert!(
                x["function"].is_null() && x["module_offset"].as_u64().unwrap() > 0,
                "{x:#}"
            );
        }
    }
    let text = observer()
        .args(["dump", "-p", &hung.pid().to_string()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("abba-stripped+0x"),
        "module+offset in text"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn python_abba_names_threads_and_python_lines() {
    let script = python_fixture("abba");
    let src = std::fs::read_to_string(&script).unwrap();
    // the line of `second.acquire()` in worker(): where both block
    let line = src
        .lines()
        .position(|l| l.contains("second.acquire()"))
        .unwrap() as i64
        + 1;
    let mut p = Proc::spawn({
        let mut c = Command::new("python3");
        c.arg(&script);
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let out = observer()
        .args([
            "attach",
            "-q",
            "--duration",
            "1.2",
            "--long-wait",
            "0.5",
            "-p",
            &p.pid().to_string(),
            "--report",
        ])
        .arg(&rep)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let r = read_json(&rep);
    for name in ["alpha", "beta"] {
        let tid = tid_of(&p.stdout, name);
        let f = r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["threads"][0]["tid"] == tid)
            .unwrap_or_else(|| panic!("{name}: {:#}", r["findings"]));
        let t = &f["threads"][0];
        assert_eq!(t["name"], name, "Python thread name replaces python3");
        let py = &t["python_frames"][0];
        assert_eq!(py["function"], "worker", "{t:#}");
        assert_eq!(py["line"], line, "{t:#}");
        assert!(py["file"].as_str().unwrap().ends_with("fixtures/abba.py"));
        assert_eq!(report_thread(&r, tid)["name"], name, "thread table too");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("worker ({}:{line})  [python]", script.display())),
        "{text}"
    );
    assert_no_programs_left();
}
