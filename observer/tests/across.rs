//! Root integration tests of hangs across processes: process-shared
//! mutexes in MAP_SHARED memory (a cycle through parent and child, and a
//! negative control taking turns), and locks inherited locked across fork
//! (C and every Python). Every fixture runs under a hard timeout and is
//! killed, its children too.

mod common;

use std::{
    collections::BTreeSet,
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

/// The one ABBA cycle of xproc_abba: xparent waits for xlock_b held by
/// xchild, xchild for xlock_a held by xparent; each thread of its process.
fn check_abba(r: &Value, out: &[String]) {
    let parent = tid_of(out, "xparent");
    let child = tid_of(out, "xchild");
    assert_eq!(child, child_of(out));
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["kind"] != "orphaned_lock"),
        "no false orphaned lock: {:#}",
        r["findings"]
    );
    let f = hang_findings(r);
    assert_eq!(f.len(), 1, "one finding: {:#}", r["findings"]);
    let f = f[0];
    assert_eq!(f["kind"], "deadlock", "{f:#}");
    let want: BTreeSet<(u64, u64, u64)> = [
        (parent, child, lock_addr(out, "xlock_b")),
        (child, parent, lock_addr(out, "xlock_a")),
    ]
    .into_iter()
    .map(|(w, h, l)| (w as u64, h as u64, l))
    .collect();
    let got: BTreeSet<(u64, u64, u64)> = f["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["waiter_tid"].as_u64().unwrap(),
                c["holder_tid"].as_u64().unwrap(),
                c["lock"]["addr"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "cycle: {f:#}");
    for c in f["cycle"].as_array().unwrap() {
        assert_eq!(c["lock"]["kind"], "mutex", "{f:#}");
    }
    let pids: BTreeSet<(u64, u64)> = f["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["tid"].as_u64().unwrap(), t["pid"].as_u64().unwrap()))
        .collect();
    let want: BTreeSet<(u64, u64)> = [(parent as u64, parent as u64), (child as u64, child as u64)]
        .into_iter()
        .collect();
    assert_eq!(pids, want, "each thread in its own process: {f:#}");
    let s = f["summary"].as_str().unwrap();
    assert!(
        s.contains(&format!(
            "thread {parent} \"xparent\" of process {parent} \"xparent\""
        )) && s.contains(&format!(
            "thread {child} \"xchild\" of process {child} \"xchild\""
        )) && s.starts_with("2 threads in 2 processes wait for each other"),
        "{s}"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn abba_across_processes_run_kills_the_whole_cycle() {
    let bin = fixture("xproc_abba");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--kill-on-deadlock", "--follow-forks", "--report"])
            .arg(&rep)
            .arg("--")
            .arg(&bin)
            .arg("25");
        c
    });
    let st = p.wait_exit(T);
    let child = child_of(&p.stdout);
    let parent = tid_of(&p.stdout, "xparent");
    // Killed by the observer, not left hung (the fixture's alarm is 25 s).
    wait_dead(child, T);
    assert_eq!(st.code(), Some(EXIT_HANG), "{:?}", p.stderr);
    let r = read_json(&rep);
    check_abba(&r, &p.stdout);
    let note = p
        .stderr
        .iter()
        .find(|l| l.contains("--kill-on-deadlock: killing"))
        .unwrap_or_else(|| panic!("no kill note: {:?}", p.stderr));
    assert!(
        note.contains(&format!("{parent} \"xparent\""))
            && note.contains(&format!("{child} \"xchild\"")),
        "{note}"
    );
    let text = p.stdout.join("\n");
    assert!(
        text.contains(&format!("process {parent} \"xparent\" ({})", bin.display()))
            && text.contains(&format!("process {child} \"xchild\" ({})", bin.display())),
        "the text names each process with its exe:\n{text}"
    );
    kill(child);
    assert_no_programs_left();
}

#[test]
#[ignore = "needs root and BPF"]
fn abba_across_processes_dump_follows_the_holder() {
    let bin = fixture("xproc_abba");
    let mut p = Proc::spawn({
        let mut c = Command::new(&bin);
        c.arg("25");
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    let child = child_of(&p.stdout);
    std::thread::sleep(Duration::from_millis(100));
    for pid in [p.pid(), child] {
        let (code, d) = dump_json(pid);
        assert_eq!(code, EXIT_HANG, "{d:#}");
        check_abba(&d, &p.stdout);
    }
    let text = observer()
        .args(["dump", "-p", &p.pid().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("== followed: process {child} \"xchild\"")),
        "{text}"
    );
    p.signal(libc::SIGKILL);
    p.wait_exit(T);
    kill(child);
}

#[test]
#[ignore = "needs root and BPF"]
fn shared_mutex_taken_in_turns_is_no_finding() {
    // With --follow-forks, and without (the child then is observed only if
    // it holds what the parent waits for).
    for follow in [true, false] {
        turns(follow);
    }
}

fn turns(follow: bool) {
    let bin = fixture("xproc_turns");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--quiet", "--kill-on-deadlock", "--report"])
            .arg(&rep);
        if follow {
            c.arg("--follow-forks");
        }
        c.arg("--").arg(&bin).arg("2");
        c
    });
    let st = p.wait_exit(T);
    assert_eq!(st.code(), Some(0), "{:?} {:?}", p.stdout, p.stderr);
    assert!(p.stdout.iter().any(|l| l == "done"), "{:?}", p.stdout);
    let r = read_json(&rep);
    assert_eq!(
        r["findings"],
        Value::Array(Vec::new()),
        "{:#}",
        r["findings"]
    );
    // They contended: one waited while the other held tlock.
    let tlock = lock_addr(&p.stdout, "tlock");
    let contended = r["waits"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["addr"] == tlock && w["count"].as_u64().unwrap_or(0) >= 1);
    assert!(contended, "they took turns on tlock: {:#}", r["waits"]);
    // dump while they take turns: no finding either.
    let mut p = Proc::spawn({
        let mut c = Command::new(&bin);
        c.arg("3");
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let (code, d) = dump_json(p.pid());
        assert_eq!(code, 0, "{d:#}");
        assert_eq!(d["findings"], Value::Array(Vec::new()), "{d:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(p.wait_exit(T).code(), Some(0));
}

/// Line of the fixture's source line holding `mark`.
fn line_of(path: &std::path::Path, mark: &str) -> usize {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .position(|l| l.contains(mark))
        .unwrap_or_else(|| panic!("no {mark} in {}", path.display()))
        + 1
}

#[test]
#[ignore = "needs root and BPF"]
fn python_fork_with_a_held_lock_names_the_parents_holder() {
    let src = python_fixture("py_fork_held");
    let held = line_of(&src, "# HELD");
    for (label, py) in pythons() {
        let mut p = Proc::spawn({
            let mut c = Command::new(py);
            c.arg(&src);
            c
        });
        p.wait_stdout(T, |l| l == "ready");
        let child = child_of(&p.stdout);
        let holder = tid_of(&p.stdout, "holder");
        let (code, d) = dump_json(child);
        assert_eq!(code, EXIT_HANG, "{label}: {d:#}");
        let f = hang_findings(&d);
        assert_eq!(f.len(), 1, "{label}: {:#}", d["findings"]);
        let f = f[0];
        assert_eq!(f["kind"], "orphaned_lock", "{label}: {f:#}");
        assert_eq!(f["tgid"], child, "{label}");
        assert_eq!(f["threads"][0]["tid"], child, "{label}");
        assert_eq!(
            f["locks"][0]["addr"],
            lock_addr(&p.stdout, "shared_lock"),
            "{label}: {f:#}"
        );
        let s = f["summary"].as_str().unwrap();
        let want = format!(
            "inherited locked across fork: held in its parent {} \"main\" by thread {holder} \"holder\" (taken at {}:{held})",
            p.pid(),
            src.display()
        );
        assert!(s.contains(&want), "{label}: {s}\nwant: {want}");
        assert!(s.contains("shared_lock"), "{label}: {s}");
        p.signal(libc::SIGKILL);
        p.wait_exit(T);
        kill(child);
        wait_dead(child, T);
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn python_fork_with_a_held_lock_run_follow_forks() {
    let src = python_fixture("py_fork_held");
    let held = line_of(&src, "# HELD");
    for (label, py) in pythons() {
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut p = Proc::spawn({
            let mut c = observer();
            c.args(["run", "--kill-on-deadlock", "--follow-forks", "--report"])
                .arg(&rep)
                .arg("--")
                .arg(py)
                .arg(&src);
            c
        });
        let st = p.wait_exit(T);
        assert_eq!(st.code(), Some(EXIT_HANG), "{label}: {:?}", p.stderr);
        let child = child_of(&p.stdout);
        let parent = tid_of(&p.stdout, "main");
        let holder = tid_of(&p.stdout, "holder");
        wait_dead(child, T);
        let r = read_json(&rep);
        let f = hang_findings(&r);
        assert_eq!(f.len(), 1, "{label}: {:#}", r["findings"]);
        let f = f[0];
        assert_eq!(f["kind"], "orphaned_lock", "{label}: {f:#}");
        assert_eq!(f["tgid"], child, "{label}");
        assert_eq!(f["threads"][0]["tid"], child, "{label}");
        assert_eq!(f["threads"][0]["pid"], child, "{label}");
        assert_eq!(
            f["locks"][0]["addr"],
            lock_addr(&p.stdout, "shared_lock"),
            "{label}: {f:#}"
        );
        let s = f["summary"].as_str().unwrap();
        let want = format!(
            "held in its parent {parent} \"main\" by thread {holder} \"holder\" (taken at {}:{held})",
            src.display()
        );
        assert!(s.contains(&want), "{label}: {s}\nwant: {want}");
        kill(child);
    }
    assert_no_programs_left();
}

/// `attach` to the child alone: its lock's owner is a thread of a process
/// not observed, named from /proc (not "gone").
#[test]
#[ignore = "needs root and BPF"]
fn attach_to_a_child_with_an_inherited_mutex_names_the_parents_holder() {
    let mut p = Proc::spawn(Command::new(fixture("fork_orphan")));
    p.wait_stdout(T, |l| l == "ready");
    let child = child_of(&p.stdout);
    let holder = tid_of(&p.stdout, "holder");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args([
            "attach",
            "--quiet",
            "--kill-on-deadlock",
            "-p",
            &child.to_string(),
            "--report",
        ])
        .arg(&rep);
        c
    });
    assert_eq!(obs.wait_exit(T).code(), Some(EXIT_HANG), "{:?}", obs.stderr);
    wait_dead(child, T);
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the parent is not part of the hang"
    );
    let r = read_json(&rep);
    let f = hang_findings(&r);
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    assert_eq!(f[0]["kind"], "orphaned_lock");
    assert_eq!(f[0]["tgid"], child);
    assert_eq!(f[0]["locks"][0]["symbol"], "fork_lock");
    let s = f[0]["summary"].as_str().unwrap();
    assert!(
        s.contains(&format!(
            "inherited locked across fork: held in its parent {} \"main\" by thread {holder} \"holder\"",
            p.pid()
        )),
        "{s}"
    );
    p.signal(libc::SIGKILL);
    p.wait_exit(T);
    assert_no_programs_left();
}

/// xproc_ring3's "proc ring-i PID ADDR0 ADDR1 ADDR2" lines: name -> (pid, lock addresses there).
fn ring_procs(out: &[String]) -> Vec<(String, u64, [u64; 3])> {
    out.iter()
        .filter_map(|l| {
            let v: Vec<&str> = l.strip_prefix("proc ")?.split_whitespace().collect();
            let a = |i: usize| u64::from_str_radix(v[i].trim_start_matches("0x"), 16).unwrap();
            Some((v[0].to_string(), v[1].parse().unwrap(), [a(2), a(3), a(4)]))
        })
        .collect()
}

/// The ring: ring-i waits for ring-(i+1) on rlock_(i+1), at ring-i's own
/// address of it; every thread in its own process; the shm object named.
fn check_ring(r: &Value, out: &[String]) {
    let procs = ring_procs(out);
    assert_eq!(procs.len(), 3, "{out:?}");
    let of = |n: usize| procs.iter().find(|p| p.0 == format!("ring-{n}")).unwrap();
    let f = hang_findings(r);
    assert_eq!(f.len(), 1, "{:#}", r["findings"]);
    let f = f[0];
    assert_eq!(f["kind"], "deadlock", "{f:#}");
    let want: BTreeSet<(u64, u64, u64)> = (0..3)
        .map(|i| (of(i).1, of((i + 1) % 3).1, of(i).2[(i + 1) % 3]))
        .collect();
    let got: BTreeSet<(u64, u64, u64)> = f["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["waiter_tid"].as_u64().unwrap(),
                c["holder_tid"].as_u64().unwrap(),
                c["lock"]["addr"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want, "{f:#}");
    for t in f["threads"].as_array().unwrap() {
        assert_eq!(t["pid"], t["tid"], "single-threaded processes: {t:#}");
    }
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .starts_with("3 threads in 3 processes wait for each other"),
        "{f:#}"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn ring_of_three_processes_through_posix_shm() {
    let bin = fixture("xproc_ring3");
    // dump, from a process in the middle of the ring.
    let mut p = Proc::spawn({
        let mut c = Command::new(&bin);
        c.arg("25");
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    let procs = ring_procs(&p.stdout);
    let ring1 = procs.iter().find(|x| x.0 == "ring-1").unwrap().1 as u32;
    let (code, d) = dump_json(ring1);
    assert_eq!(code, EXIT_HANG, "{d:#}");
    check_ring(&d, &p.stdout);
    let text = observer()
        .args(["dump", "-p", &ring1.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "in shared memory /dev/shm/observer-ring3-{}",
            p.pid()
        )),
        "{text}"
    );
    p.signal(libc::SIGKILL);
    p.wait_exit(T);
    for x in &procs {
        kill(x.1 as u32);
    }
    // run: the whole ring is killed.
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut o = Proc::spawn({
        let mut c = observer();
        c.args([
            "run",
            "--quiet",
            "--kill-on-deadlock",
            "--follow-forks",
            "--report",
        ])
        .arg(&rep)
        .arg("--")
        .arg(&bin)
        .arg("25");
        c
    });
    let st = o.wait_exit(T);
    let procs = ring_procs(&o.stdout);
    for x in &procs {
        wait_dead(x.1 as u32, T);
    }
    assert_eq!(st.code(), Some(EXIT_HANG), "{:?}", o.stderr);
    check_ring(&read_json(&rep), &o.stdout);
    assert_no_programs_left();
}

/// The daemon keeps one session per process: a cycle between two watched
/// processes is found over both sessions, reported once (with both
/// processes), and `kill_on_deadlock` ends both.
#[test]
#[ignore = "needs root and BPF"]
fn abba_across_processes_daemon_one_graph() {
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let cfg = tmp.path().join("observer.toml");
    // long_wait far away: the cycle, not two long waits.
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"\"\nlong_wait = 60\n[[rule]]\ncomm = \"obsd-xabba\"\nkill_on_deadlock = true\n",
            reports.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut d = spawn_daemon(&cfg);
    let bin = copy_as("xproc_abba", &tmp.path().join("a"), "obsd-xabba");
    let mut p = Proc::spawn({
        let mut c = Command::new(&bin);
        c.arg("25");
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    let child = child_of(&p.stdout);
    let parent = p.pid();
    let end = Instant::now() + T;
    let id = loop {
        let mut ids = reports_of(&reports, parent);
        ids.extend(reports_of(&reports, child));
        if let Some(id) = ids.pop() {
            assert!(ids.is_empty(), "one report for the cycle: {ids:?} and {id}");
            break id;
        }
        assert!(
            Instant::now() < end,
            "no report within {T:?}: {:#?}",
            d.stderr
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let r = read_json(&reports.join(format!("{id}.json")));
    check_abba(&r, &p.stdout);
    for pid in [parent, child] {
        d.wait_stderr(T, |l| {
            l.contains(&format!("pid {pid}: killed (kill_on_deadlock)"))
        });
    }
    p.wait_exit(T);
    wait_dead(child, T);
    // Nothing more about either: no long wait, no orphan, no second copy.
    std::thread::sleep(Duration::from_millis(500));
    let mut ids = reports_of(&reports, parent);
    ids.extend(reports_of(&reports, child));
    assert_eq!(ids, vec![id.clone()]);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// `attach -p PARENT,CHILD`: two running processes in one graph; the cycle
/// between them is one deadlock, and --kill-on-deadlock ends both.
#[test]
#[ignore = "needs root and BPF"]
fn abba_across_processes_attach_to_both() {
    let bin = fixture("xproc_abba");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut fx = Proc::spawn({
        let mut c = Command::new(&bin);
        c.arg("25");
        c
    });
    fx.wait_stdout(T, |l| l == "ready");
    let child = child_of(&fx.stdout);
    let parent = fx.pid();
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["attach", "--kill-on-deadlock", "--report"])
            .arg(&rep)
            .args(["-p", &parent.to_string(), "-p", &child.to_string()]);
        c
    });
    let st = p.wait_exit(T);
    assert_eq!(st.code(), Some(EXIT_HANG), "{:?}", p.stderr);
    fx.wait_exit(T);
    wait_dead(child, T);
    let r = read_json(&rep);
    check_abba(&r, &fx.stdout);
    let note = p
        .stderr
        .iter()
        .find(|l| l.contains("--kill-on-deadlock: killing"))
        .unwrap_or_else(|| panic!("no kill note: {:?}", p.stderr));
    assert!(
        note.contains(&format!("{parent} \"xparent\""))
            && note.contains(&format!("{child} \"xchild\"")),
        "{note}"
    );
    kill(child);
    assert_no_programs_left();
}

/// Only one side named: `attach -p PARENT` and `run` without
/// --follow-forks observe the process holding what theirs waits for too
/// (the owner in the shared lock word), and the cycle is whole.
#[test]
#[ignore = "needs root and BPF"]
fn abba_across_processes_one_side_named() {
    let bin = fixture("xproc_abba");
    // attach to the parent only
    let mut fx = Proc::spawn({
        let mut c = Command::new(&bin);
        c.arg("25");
        c
    });
    fx.wait_stdout(T, |l| l == "ready");
    let child = child_of(&fx.stdout);
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["attach", "--kill-on-deadlock", "--report"])
            .arg(&rep)
            .args(["-p", &fx.pid().to_string()]);
        c
    });
    let st = p.wait_exit(T);
    assert_eq!(st.code(), Some(EXIT_HANG), "{:?}", p.stderr);
    assert!(
        p.stderr.iter().any(|l| l.starts_with(&format!(
            "observer: also observing pid {child} \"xchild\": it holds what"
        ))),
        "{:?}",
        p.stderr
    );
    fx.wait_exit(T);
    wait_dead(child, T);
    check_abba(&read_json(&rep), &fx.stdout);
    // run without --follow-forks
    let rep = dir.path().join("r2.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--kill-on-deadlock", "--report"])
            .arg(&rep)
            .arg("--")
            .arg(&bin)
            .arg("25");
        c
    });
    let st = p.wait_exit(T);
    let child = child_of(&p.stdout);
    wait_dead(child, T);
    assert_eq!(st.code(), Some(EXIT_HANG), "{:?}", p.stderr);
    check_abba(&read_json(&rep), &p.stdout);
    kill(child);
    assert_no_programs_left();
}
