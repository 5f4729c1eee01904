//! Root tests of `multiprocessing` locks across processes, under every
//! CPython: a parent and its child process in ABBA over two
//! `multiprocessing.Lock`s (or `RLock`s) are one deadlock across the two
//! processes, naming both processes, both threads, both locks and both
//! `with` lines (not two unrelated long waits), in `dump -p` (of either
//! process: it follows into the processes that map the semaphore) and in
//! `run --follow-forks --kill-on-deadlock` and `attach -p PARENT
//! --follow-forks --kill-on-deadlock` (which kill both); with the `fork`
//! and the `forkserver` start methods (3.14's default). Negative
//! control: the two taking turns on one lock give no finding.
//!
//! Every target runs under a hard timeout (and its own `alarm`) and is
//! killed, its child too.

mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(40);
const EXIT_HANG: i32 = 3;
const ABBA: &str = "py_mp_abba";
const OK: &str = "py_mp_ok";

fn observer() -> Command {
    Command::new(observer_bin())
}

/// 1-based line of the fixture's line marked `# MARK`.
fn line_of(path: &Path, mark: &str) -> u64 {
    let src = std::fs::read_to_string(path).unwrap();
    let tag = format!("# {mark}");
    (src.lines()
        .position(|l| l.trim_end().ends_with(&tag))
        .unwrap_or_else(|| panic!("no {tag} in {}", path.display()))
        + 1) as u64
}

fn findings(r: &Value) -> &Vec<Value> {
    r["findings"].as_array().expect("findings")
}

/// The python lock reference `v` (a wait or a hold): its name, kind and
/// the line of its site.
fn lock_ref(v: &Value) -> LockRow {
    (
        v["name"].as_str().unwrap_or("?").to_string(),
        v["kind"].as_str().unwrap_or("?").to_string(),
        v["site"]
            .as_str()
            .map(|s| s.rsplit(':').next().unwrap().parse().unwrap()),
    )
}

/// A lock reference: (name, kind, line; none: no frame shows it).
type LockRow = (String, String, Option<u64>);
/// A thread of the finding: (tid, pid, its wait, its holds).
type ThreadRow = (u64, u64, LockRow, Vec<LockRow>);

/// The one finding of py_mp_abba: mpparent (in the parent) waits for
/// lock_b, held by mpchild (in the child) at CHILD HOLDS; mpchild waits
/// for lock_a, held by mpparent at PARENT HOLDS. Nothing else: no long
/// wait, no orphaned lock. `acquire`: mpchild took lock_b by `acquire()`,
/// outside a `with`: its holder is known, no line is.
fn check_abba(label: &str, r: &Value, out: &[String], kind: &str, acquire: bool) {
    let src = python_fixture(ABBA);
    let parent = tid_of(out, "mpparent");
    let child = tid_of(out, "mpchild");
    assert_eq!(child, child_of(out), "{label}");
    let f = findings(r);
    assert_eq!(
        f.len(),
        1,
        "{label}: one finding: {:#?}",
        f.iter().map(|f| &f["summary"]).collect::<Vec<_>>()
    );
    let f = &f[0];
    assert_eq!(f["kind"], "deadlock", "{label}: {f:#}");
    let edges: BTreeSet<(u64, u64, String, String)> = f["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["waiter_tid"].as_u64().unwrap(),
                c["holder_tid"].as_u64().unwrap(),
                c["lock"]["symbol"].as_str().unwrap_or("?").to_string(),
                c["lock"]["kind"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(u64, u64, String, String)> =
        [(parent, child, "lock_b"), (child, parent, "lock_a")]
            .into_iter()
            .map(|(w, h, l)| (w.into(), h.into(), l.to_string(), "mp_lock".to_string()))
            .collect();
    assert_eq!(edges, want, "{label}: cycle: {f:#}");
    // Each thread in its own process, with its wait and its hold.
    let lines = |m: &str| Some(line_of(&src, m)).filter(|_| !(acquire && m == "CHILD HOLDS"));
    let want: BTreeSet<ThreadRow> = [
        (parent, "lock_b", "PARENT WAITS", "lock_a", "PARENT HOLDS"),
        (child, "lock_a", "CHILD WAITS", "lock_b", "CHILD HOLDS"),
    ]
    .into_iter()
    .map(|(t, wl, wm, hl, hm)| {
        (
            u64::from(t),
            u64::from(t),
            (wl.to_string(), kind.to_string(), lines(wm)),
            vec![(hl.to_string(), kind.to_string(), lines(hm))],
        )
    })
    .collect();
    let got: BTreeSet<_> = f["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let py = &t["python"];
            assert_eq!(py["waits"]["how"], "with", "{label}: {t:#}");
            (
                t["tid"].as_u64().unwrap(),
                t["pid"].as_u64().unwrap(),
                lock_ref(&py["waits"]),
                py["holds"]
                    .as_array()
                    .unwrap_or_else(|| panic!("{label}: no holds: {t:#}"))
                    .iter()
                    .map(lock_ref)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert_eq!(got, want, "{label}: threads: {f:#}");
    let s = f["summary"].as_str().unwrap();
    assert!(
        s.starts_with("2 threads in 2 processes wait for each other")
            && s.contains(&format!("thread {parent} \"mpparent\" of process {parent}"))
            && s.contains(&format!("thread {child} \"mpchild\" of process {child}")),
        "{label}: {s}"
    );
}

/// The fixture's runs: the lock kind, the start method, and the kind the
/// report names.
/// (`run` and `attach` take the first two in turns; `dump` all three.)
const MODES: [(&str, &str, &str); 3] = [
    ("lock", "fork", "mp_lock"),
    ("rlock", "forkserver", "mp_r_lock"),
    ("acquire", "fork", "mp_lock"),
];

fn start(py: &str, args: &[&str]) -> Proc {
    let mut c = Command::new(py);
    c.arg(python_fixture(ABBA)).args(args);
    let mut p = Proc::spawn(c);
    p.wait_stdout(T, |l| l == "ready");
    p
}

#[test]
#[ignore = "needs root and BPF"]
fn mp_abba_dump_of_either_process_is_one_cycle() {
    for (label, py) in pythons() {
        for (kind, method, rkind) in MODES {
            let label = format!("{label} {kind} {method}");
            let mut p = start(py, &[kind, method, "30"]);
            let child = child_of(&p.stdout);
            std::thread::sleep(Duration::from_millis(100));
            for pid in [p.pid(), child] {
                let (code, d) = dump_json(pid);
                assert_eq!(code, EXIT_HANG, "{label}: dump -p {pid}: {d:#}");
                check_abba(&label, &d, &p.stdout, rkind, kind == "acquire");
            }
            p.signal(libc::SIGKILL);
            p.wait_exit(T);
            kill(child);
            wait_dead(child, T);
        }
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn mp_abba_run_kills_the_whole_cycle() {
    for (i, (label, py)) in pythons().into_iter().enumerate() {
        // Each interpreter in one mode, the modes in turn (dump sees both).
        let (kind, method, rkind) = MODES[i % 2];
        let label = format!("{label} {kind} {method}");
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut p = Proc::spawn({
            let mut c = observer();
            c.args(["run", "--kill-on-deadlock", "--follow-forks", "--report"])
                .arg(&rep)
                .arg("--")
                .arg(py)
                .arg(python_fixture(ABBA))
                .args([kind, method, "25"]);
            c
        });
        let st = p.wait_exit(T);
        let child = child_of(&p.stdout);
        let parent = tid_of(&p.stdout, "mpparent");
        wait_dead(child, T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", p.stderr);
        let r = read_json(&rep);
        check_abba(&label, &r, &p.stdout, rkind, false);
        let note = p
            .stderr
            .iter()
            .find(|l| l.contains("--kill-on-deadlock: killing"))
            .unwrap_or_else(|| panic!("{label}: no kill note: {:?}", p.stderr));
        assert!(
            note.contains(&format!("{parent} \"mpparent\""))
                && note.contains(&format!("{child} \"mpchild\"")),
            "{label}: {note}"
        );
        // The text names the holder's `with` line, in the other process.
        let text = p.stdout.join("\n");
        let src = python_fixture(ABBA);
        for (who, mark) in [("mpchild", "CHILD HOLDS"), ("mpparent", "PARENT HOLDS")] {
            let want = format!(
                "which is held by \"{who}\" (thread {}), as {} in a `with` block at {}:{}",
                tid_of(&p.stdout, who),
                if who == "mpchild" { "lock_b" } else { "lock_a" },
                src.display(),
                line_of(&src, mark)
            );
            assert!(text.contains(&want), "{label}: want {want}\n{text}");
        }
        kill(child);
        assert_no_programs_left();
    }
}

/// `attach -p PARENT --follow-forks` to a deadlock formed before: its
/// live descendants (the child; under forkserver, the server and its
/// child) are observed too, the cycle is whole, both are killed.
#[test]
#[ignore = "needs root and BPF"]
fn mp_abba_attach_follow_forks_finds_the_cycle() {
    for (i, (label, py)) in pythons().into_iter().enumerate() {
        let (kind, method, rkind) = MODES[(i + 1) % 2];
        let label = format!("{label} {kind} {method}");
        let target = start(py, &[kind, method, "30"]);
        let child = child_of(&target.stdout);
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut p = Proc::spawn({
            let mut c = observer();
            c.args([
                "attach",
                "-p",
                &target.pid().to_string(),
                "--follow-forks",
                "--kill-on-deadlock",
                "--duration",
                "20",
                "--report",
            ])
            .arg(&rep);
            c
        });
        let st = p.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", p.stderr);
        wait_dead(child, T);
        wait_dead(target.pid(), T);
        let r = read_json(&rep);
        check_abba(&label, &r, &target.stdout, rkind, false);
        drop(target);
        assert_no_programs_left();
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn mp_lock_taken_in_turns_is_no_finding() {
    for (i, (label, py)) in pythons().into_iter().enumerate() {
        let method = MODES[i % 2].1;
        let label = format!("{label} {method}");
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut p = Proc::spawn({
            let mut c = observer();
            c.args(["run", "--follow-forks", "--report"])
                .arg(&rep)
                .arg("--")
                .arg(py)
                .arg(python_fixture(OK))
                .args([method, "2"]);
            c
        });
        let st = p.wait_exit(T);
        assert!(
            p.stdout.iter().any(|l| l == "done"),
            "{label}: {:?}",
            p.stdout
        );
        assert_eq!(st.code(), Some(0), "{label}: {:?}", p.stderr);
        let r = read_json(&rep);
        assert!(findings(&r).is_empty(), "{label}: {:#}", r["findings"]);
        assert_no_programs_left();
    }
    // Dumps while they take turns: each often waits for the other's hold.
    let (label, py) = pythons()[0];
    let mut c = Command::new(py);
    c.arg(python_fixture(OK)).args(["fork", "4"]);
    let mut p = Proc::spawn(c);
    p.wait_stdout(T, |l| l == "ready");
    let child = child_of(&p.stdout);
    for pid in [p.pid(), child, p.pid()] {
        let (code, d) = dump_json(pid);
        assert_eq!(code, 0, "{label}: dump -p {pid}: {d:#}");
        assert!(findings(&d).is_empty(), "{label}: {:#}", d["findings"]);
    }
    p.wait_exit(T);
    wait_dead(child, T);
}

/// `observer daemon`: each process has its own session; the cycle is found
/// over both (one report, with both `with` lines), and kill_on_deadlock
/// ends both. Every interpreter, the modes in turn.
#[test]
#[ignore = "needs root and BPF"]
fn mp_abba_daemon_reports_the_cycle_once() {
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let cfg = tmp.path().join("observer.toml");
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"\"\nlong_wait = 60\n[[rule]]\ncomm = \"obsd-mp\"\nkill_on_deadlock = true\n",
            reports.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut d = spawn_daemon(&cfg);
    for (i, (label, py)) in pythons().into_iter().enumerate() {
        let (kind, method, rkind) = MODES[i % 2];
        let label = format!("{label} {kind} {method}");
        // The rule's name: a link to the interpreter (comm and argv[0]).
        let link = tmp.path().join(format!("py{i}/obsd-mp"));
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(py, &link).unwrap();
        let link = link.to_str().unwrap().to_string();
        let mut p = start(&link, &[kind, method, "25"]);
        let parent = p.pid();
        let child = child_of(&p.stdout);
        let end = Instant::now() + T;
        let id = loop {
            let mut ids = reports_of(&reports, parent);
            ids.extend(reports_of(&reports, child));
            if let Some(id) = ids.pop() {
                assert!(ids.is_empty(), "{label}: one report: {ids:?} and {id}");
                break id;
            }
            assert!(Instant::now() < end, "{label}: no report: {:#?}", d.stderr);
            std::thread::sleep(Duration::from_millis(50));
        };
        let r = read_json(&reports.join(format!("{id}.json")));
        check_abba(&label, &r, &p.stdout, rkind, false);
        let text = std::fs::read_to_string(reports.join(format!("{id}.txt"))).unwrap();
        let src = python_fixture(ABBA);
        for mark in ["CHILD HOLDS", "PARENT HOLDS", "CHILD WAITS", "PARENT WAITS"] {
            let at = format!("{}:{}", src.display(), line_of(&src, mark));
            assert!(text.contains(&at), "{label}: no {at} in\n{text}");
        }
        for pid in [parent, child] {
            d.wait_stderr(T, |l| {
                l.contains(&format!("pid {pid}: killed (kill_on_deadlock)"))
            });
        }
        p.wait_exit(T);
        wait_dead(child, T);
    }
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// Only the parent named: `attach -p PARENT` and `run` without
/// --follow-forks observe the processes that map the semaphore it waits
/// on, and the cycle is whole (every interpreter; under forkserver the
/// child is the server's, not the parent's).
#[test]
#[ignore = "needs root and BPF"]
fn mp_abba_one_side_named() {
    for (i, (label, py)) in pythons().into_iter().enumerate() {
        let (kind, method, rkind) = MODES[i % 2];
        let label = format!("{label} {kind} {method}");
        let target = start(py, &[kind, method, "30"]);
        let child = child_of(&target.stdout);
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut p = Proc::spawn({
            let mut c = observer();
            c.args(["attach", "--kill-on-deadlock", "--report"])
                .arg(&rep)
                .args(["-p", &target.pid().to_string()]);
            c
        });
        let st = p.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", p.stderr);
        wait_dead(child, T);
        wait_dead(target.pid(), T);
        check_abba(&label, &read_json(&rep), &target.stdout, rkind, false);
        drop(target);
        let (kind, method, rkind) = MODES[(i + 1) % 2];
        let label = format!("{label} run {kind} {method}");
        let rep = dir.path().join("r2.json");
        let mut p = Proc::spawn({
            let mut c = observer();
            c.args(["run", "--kill-on-deadlock", "--report"])
                .arg(&rep)
                .arg("--")
                .arg(py)
                .arg(python_fixture(ABBA))
                .args([kind, method, "25"]);
            c
        });
        let st = p.wait_exit(T);
        let child = child_of(&p.stdout);
        wait_dead(child, T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", p.stderr);
        check_abba(&label, &read_json(&rep), &p.stdout, rkind, false);
        kill(child);
        assert_no_programs_left();
    }
}
