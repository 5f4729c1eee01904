//! Root integration tests of the merged stack: a CPython thread's stack in
//! the order it ran, each Python frame where the interpreter's eval loop
//! runs it, among the native frames (`dump --native`, text and JSON), on
//! every CPython present (fixtures/py_native_stack.py). Every fixture runs
//! under a hard timeout and is killed.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);

fn start(py: &str) -> Proc {
    let mut p = Proc::spawn({
        let mut c = Command::new("timeout");
        c.args(["60", py])
            .arg(python_fixture("py_native_stack"))
            .env("PYTHONDONTWRITEBYTECODE", "1");
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    p
}

/// The fixture's interpreter process (under `timeout`).
fn target_pid(p: &Proc) -> u32 {
    tid_of(&p.stdout, "main")
}

fn dump(pid: u32, json: bool) -> String {
    let mut c = Command::new(observer_bin());
    c.args(["dump", "--native", "-p", &pid.to_string()]);
    if json {
        c.args(["--format", "json"]);
    }
    let out = c.output().unwrap();
    assert!(
        out.status.code().is_some_and(|c| c == 0 || c == 3),
        "{out:?}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Python frames a thread's stack must show, innermost first.
const IN_LOCK: &[&str] = &[
    "wait_for_lock",
    "sort_with_key",
    "worker",
    "Thread.run",
    "Thread._bootstrap_inner",
    "Thread._bootstrap",
];
const IN_C: &[&str] = &[
    "in_c_inner",
    "in_c_outer",
    "worker",
    "Thread.run",
    "Thread._bootstrap_inner",
    "Thread._bootstrap",
];

/// The text lines of thread `name`'s stack in `dump --native`, each as its
/// function (Python frames prefixed "py:").
fn text_stack(text: &str, name: &str) -> Vec<String> {
    let block = text
        .split("\nThread ")
        .find(|b| {
            b.lines()
                .next()
                .is_some_and(|l| l.ends_with(&format!("\"{name}\"")))
        })
        .unwrap_or_else(|| panic!("no {name} block: {text}"));
    block
        .lines()
        .skip(2)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let l = l.trim();
            let f = l.split([' ', '[']).next().unwrap_or(l).to_string();
            if l.ends_with("[python]") {
                format!("py:{f}")
            } else {
                f
            }
        })
        .collect()
}

/// What each interpreter shows, frame by frame, for the thread waiting for
/// a lock from a key function that `sorted` (C) calls back: the lock's
/// wait in libc and the interpreter, the key function, the C sort that
/// called it, the Python line that called `sorted`, the thread's start.
fn expected_in_lock(label: &str) -> Option<Vec<&'static str>> {
    let wait = [
        "__futex_abstimed_wait_common64",
        "__futex_abstimed_wait_common",
        "__new_sem_wait_slow64",
        "PyThread_acquire_lock_timed",
    ];
    let py = [
        "py:sort_with_key",
        "py:worker",
        "py:Thread.run",
        "py:Thread._bootstrap_inner",
        "py:Thread._bootstrap",
    ];
    let sort = ["list_sort_impl", "list_sort", "builtin_sorted"];
    let start = ["thread_run", "pythread_wrapper", "start_thread", "clone3"];
    let v: Vec<&str> = match label {
        // Debian's interpreter keeps only its exported symbols: its static
        // functions (the sort, the thread's start) have no name to show.
        "debian 3.11" => [
            &wait[..],
            &["py:wait_for_lock"],
            &py,
            &["start_thread", "clone3"],
        ]
        .concat(),
        "3.11.7" | "3.12.1" => [
            &wait[..],
            &[
                "acquire_timed",
                "lock_PyThread_acquire_lock",
                "py:wait_for_lock",
            ],
            &sort,
            &py,
            &start,
        ]
        .concat(),
        "3.13.0" => [
            &wait[..],
            &[
                "PyThread_acquire_lock_timed_with_retries",
                "acquire_timed",
                "lock_PyThread_acquire_lock",
                "py:wait_for_lock",
            ],
            &sort,
            &py,
            &start,
        ]
        .concat(),
        _ => return None,
    };
    Some(v)
}

#[test]
#[ignore = "needs root"]
fn dump_native_merges_python_frames_where_the_eval_loop_runs_them() {
    for (label, py) in pythons() {
        let mut p = start(py);
        let pid = target_pid(&p);
        // The waits settle: the lock's waiter is in its futex wait.
        let end = Instant::now() + T;
        let (json, text) = loop {
            let j: Value = serde_json::from_str(&dump(pid, true)).unwrap();
            let t = dump(pid, false);
            let ready = j["threads"].as_array().unwrap().iter().any(|t| {
                t["name"] == "in-lock"
                    && !t["wait"].is_null()
                    && t["frames"]
                        .as_array()
                        .is_some_and(|f| f.iter().any(|f| f["function"] == "wait_for_lock"))
            });
            if ready {
                break (j, t);
            }
            assert!(
                Instant::now() < end,
                "{label}: in-lock never shown waiting: {j:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        p.signal(libc::SIGKILL);
        p.wait_exit(T);
        let thread = |name: &str| {
            json["threads"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == name)
                .unwrap_or_else(|| panic!("{label}: no {name}: {json:#}"))
                .clone()
        };
        // JSON: every frame has its kind; the Python frames in order, the
        // native frames of the lock's wait before the first, the C sort
        // (where its symbols exist) between the key function and its caller.
        let t = thread("in-lock");
        let frames = t["frames"].as_array().unwrap();
        for f in frames {
            assert!(
                f["kind"] == "native" || f["kind"] == "python",
                "{label}: {f:#}"
            );
        }
        let pos = |name: &str, kind: &str| {
            frames
                .iter()
                .position(|f| f["function"] == name && f["kind"] == kind)
        };
        let pyfs: Vec<&str> = frames
            .iter()
            .filter(|f| f["kind"] == "python")
            .map(|f| f["function"].as_str().unwrap())
            .collect();
        assert_eq!(pyfs, IN_LOCK, "{label}: {t:#}");
        // 3.14+ park on a PyMutex through `_PySemaphore_Wait`.
        let wait_fn = match label {
            "3.14" | "3.15" => "_PySemaphore_Wait",
            _ => "PyThread_acquire_lock_timed",
        };
        let acquire = pos(wait_fn, "native").unwrap_or_else(|| panic!("{label}: {t:#}"));
        let key = pos("wait_for_lock", "python").unwrap();
        let caller = pos("sort_with_key", "python").unwrap();
        assert!(
            acquire < key,
            "{label}: the wait runs under the key function: {t:#}"
        );
        // Debian's 3.14/3.15 (and the libc unpacked with them) are stripped
        // of local symbols: their eval loop has no name, so their Python
        // frames stay together (below the interpreter's frames, above the
        // thread's start), and the thread's start has no name either.
        let stripped = matches!(label, "3.14" | "3.15");
        if !stripped {
            assert!(
                frames[key + 1..caller]
                    .iter()
                    .any(|f| f["kind"] == "native"),
                "{label}: C frames between the key function and sorted()'s caller: {t:#}"
            );
        }
        if let Some(sort) = pos("list_sort", "native") {
            assert!(key < sort && sort < caller, "{label}: {t:#}");
        }
        assert_eq!(frames[0]["kind"], "native", "{label}");
        if !stripped {
            assert_eq!(
                frames.last().unwrap()["function"],
                "clone3",
                "{label}: {t:#}"
            );
        }
        // The eval loop's frames are replaced by the Python frames they run.
        assert!(
            !frames
                .iter()
                .any(|f| f["function"] == "_PyEval_EvalFrameDefault"),
            "{label}: {t:#}"
        );
        // Text, frame by frame.
        let got = text_stack(&text, "in-lock");
        if let Some(want) = expected_in_lock(label) {
            assert_eq!(got, want, "{label}:\n{text}");
        } else {
            let py: Vec<&str> = got.iter().filter_map(|f| f.strip_prefix("py:")).collect();
            assert_eq!(py, IN_LOCK, "{label}:\n{text}");
        }
        // A thread blocked in C through ctypes: the C call first, then the
        // Python line that made it (the unwind through libffi may stop
        // there: the Python frames then follow the native ones).
        let got = text_stack(&text, "in-c");
        let first_py = got.iter().position(|f| f.starts_with("py:")).unwrap();
        if stripped {
            // (libc's internal frames have no name: `pause` is among them)
            assert!(
                got[..first_py].iter().any(|f| f == "pause"),
                "{label}:\n{text}"
            );
        } else {
            assert_eq!(got[0], "__libc_pause", "{label}:\n{text}");
        }
        let py: Vec<&str> = got.iter().filter_map(|f| f.strip_prefix("py:")).collect();
        assert_eq!(py, IN_C, "{label}:\n{text}");
    }
}
