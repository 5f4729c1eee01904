//! Idle is not a hang (issue 26): healthy services whose workers wait for
//! work give no finding in `attach`, `run` and the daemon, and show their
//! idle threads as state; the hidden kinds that hold someone up, a lock
//! held too long and a process where every thread is blocked are still
//! found, with their exact threads and locks. Thresholds are set low
//! (`--long-wait 0.5 --stuck 1`) and each window is a few times the
//! largest of them plus the once-a-second sampling: a long wait and a
//! stuck thread would both have been reported within it. Every target
//! runs under a hard timeout and is killed.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const LONG_WAIT: &str = "0.5";
const STUCK: &str = "1";
/// Long enough that a 0.5 s long wait and a 1 s stuck thread (sampled about
/// once a second) would have been reported twice over.
const WINDOW: Duration = Duration::from_millis(3500);

fn observer() -> Command {
    Command::new(observer_bin())
}

fn findings(r: &Value) -> &Vec<Value> {
    r["findings"].as_array().unwrap()
}

fn summaries(r: &Value) -> Vec<String> {
    findings(r)
        .iter()
        .map(|f| format!("{}: {}", f["kind"], f["summary"]))
        .collect()
}

/// `attach -p PID` for the window: (exit code, JSON report, text).
fn attach(pid: u32) -> (i32, Value, String) {
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let out = observer()
        .args(["attach", "--long-wait", LONG_WAIT, "--stuck", STUCK])
        .args(["--duration", &format!("{}", WINDOW.as_secs_f64())])
        .arg("--report")
        .arg(&rep)
        .args(["-p", &pid.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), read_json(&rep), text)
}

/// `run` of `argv` for the window after it printed "ready", then SIGINT:
/// the JSON report and what the program printed.
fn run_window(argv: &[&str], extra: &[&str]) -> (Value, Vec<String>) {
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--long-wait", LONG_WAIT, "--stuck", STUCK])
            .args(extra)
            .arg("--report")
            .arg(&rep)
            .arg("--")
            .args(argv);
        c
    });
    obs.wait_stdout(T, |l| l == "ready");
    std::thread::sleep(WINDOW);
    obs.signal(libc::SIGINT);
    obs.wait_exit(T);
    (read_json(&rep), obs.stdout.clone())
}

/// Runs `argv` until it prints "ready".
fn start(argv: &[&str]) -> Proc {
    let mut p = Proc::spawn({
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]);
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    p
}

fn idle_of(r: &Value, tid: u32) -> String {
    report_thread(r, tid)["idle"]
        .as_str()
        .unwrap_or_else(|| panic!("thread {tid} not idle: {:#}", report_thread(r, tid)))
        .to_string()
}

#[test]
#[ignore = "needs root and BPF"]
fn an_idle_c_pool_is_state_not_a_finding() {
    let bin = fixture("idle_pool");
    let bin = bin.to_str().unwrap();
    // attach: no finding, exit 0, each worker idle on pool_cond.
    let mut p = start(&[bin]);
    let (code, r, text) = attach(p.pid());
    assert_eq!(code, 0, "{text}");
    assert!(findings(&r).is_empty(), "{:#?}", summaries(&r));
    assert!(text.starts_with("FINDINGS: none"), "{text}");
    let cond = fixture_locks(&p.stdout)
        .into_iter()
        .find(|(n, _)| n == "pool_cond")
        .unwrap()
        .1;
    for w in ["pool-1", "pool-2", "pool-3", "pool-4"] {
        let want = format!("waiting for work on condvar pool_cond ({cond:#x})");
        assert_eq!(idle_of(&r, tid_of(&p.stdout, w)), want);
        let row = text
            .lines()
            .find(|l| l.contains(&format!(" {w} ")))
            .unwrap_or_else(|| panic!("no row for {w}: {text}"));
        assert!(row.ends_with(&format!("idle: {want}")), "{row}");
    }
    assert!(report_thread(&r, p.pid())["idle"].is_null(), "main runs");
    p.signal(libc::SIGKILL);
    p.wait_exit(T);
    // run: no finding while it idles.
    let (r, _) = run_window(&[bin], &[]);
    assert!(findings(&r).is_empty(), "{:#?}", summaries(&r));
    assert_no_programs_left();
}

fn python_idle_checks(label: &str, py: &str, r: &Value, out: &[String], python_view: bool) {
    assert!(findings(r).is_empty(), "{label}: {:#?}", summaries(r));
    for (name, want) in [
        ("pool_0", "waiting for work in a ThreadPoolExecutor"),
        ("asyncio_0", "waiting for work in a ThreadPoolExecutor"),
        ("consumer", "waiting for work on Queue jobs"),
        ("watcher", "waiting for Event stop to be set"),
    ] {
        let got = idle_of(r, tid_of(out, name));
        if python_view {
            assert_eq!(got, want, "{label} ({py}): {name}");
        } else {
            // The native view: an owner-less futex wait.
            assert!(got.starts_with("waiting for work on "), "{label}: {got}");
        }
    }
}

/// Whether the Python view of this interpreter is read (3.11-3.13 today).
fn has_python_view(r: &Value) -> bool {
    r["threads"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["python_frames"].as_array().is_some_and(|f| !f.is_empty()))
}

#[test]
#[ignore = "needs root and BPF"]
fn an_idle_python_service_is_state_not_a_finding() {
    let fix = python_fixture("py_idle_service");
    let fix = fix.to_str().unwrap();
    for (label, py) in pythons() {
        let mut p = start(&[py, fix]);
        let (code, r, text) = attach(p.pid());
        assert_eq!(code, 0, "{label}: {text}");
        let view = has_python_view(&r);
        if !view {
            skip(&format!(
                "{label}: no Python view; idle threads checked in the native view only"
            ));
        }
        python_idle_checks(label, py, &r, &p.stdout, view);
        p.signal(libc::SIGKILL);
        p.wait_exit(T);
        let (r, out) = run_window(&[py, fix], &[]);
        assert!(
            findings(&r).is_empty(),
            "{label}: run: {:#?}",
            summaries(&r)
        );
        assert!(out.iter().any(|l| l == "ready"), "{label}");
    }
    assert_no_programs_left();
}

/// The kept kinds: a semaphore nobody posts whose waiter main joins.
#[test]
#[ignore = "needs root and BPF"]
fn a_semaphore_nobody_posts_with_its_waiter_joined_is_a_long_wait() {
    let (r, out) = run_window(&[fixture("sem_lost").to_str().unwrap()], &[]);
    let f = findings(&r);
    assert_eq!(f.len(), 1, "{:#?}", summaries(&r));
    let f = &f[0];
    assert_eq!(f["kind"], "long_wait", "{f:#}");
    let tids: Vec<u64> = f["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_u64().unwrap())
        .collect();
    assert_eq!(
        tids,
        vec![
            u64::from(tid_of(&out, "sem-waiter")),
            u64::from(tid_of(&out, "main"))
        ]
    );
    assert_eq!(f["locks"][0]["kind"], "semaphore");
    assert_eq!(f["locks"][0]["symbol"], "ready_sem");
    let summary = f["summary"].as_str().unwrap();
    assert!(
        summary.ends_with(&format!(
            "; thread {} \"main\" waits for it",
            tid_of(&out, "main")
        )),
        "{summary}"
    );
    assert_no_programs_left();
}

/// The kept kinds: a lock held for an hour while another thread waits for
/// it, though nobody waits for the waiter.
#[test]
#[ignore = "needs root and BPF"]
fn a_lock_held_too_long_is_a_long_wait() {
    let bin = fixture("lock_hog");
    let (r, out) = run_window(&[bin.to_str().unwrap()], &[]);
    let f = findings(&r);
    assert_eq!(f.len(), 1, "{:#?}", summaries(&r));
    let f = &f[0];
    assert_eq!(f["kind"], "long_wait", "{f:#}");
    assert_eq!(f["threads"][0]["tid"], tid_of(&out, "victim"));
    assert_eq!(f["threads"][1]["tid"], tid_of(&out, "hog"));
    assert_eq!(f["locks"][0]["kind"], "mutex");
    assert_eq!(f["locks"][0]["symbol"], "hog_lock");
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .ends_with(&format!("held by thread {} \"hog\"", tid_of(&out, "hog"))),
        "{f:#}"
    );
    // attach: the same.
    let mut p = start(&[bin.to_str().unwrap()]);
    let (code, r, text) = attach(p.pid());
    assert_eq!(code, 0, "a long wait is not a hang: {text}");
    let f = findings(&r);
    assert_eq!(f.len(), 1, "{:#?}", summaries(&r));
    assert_eq!(f[0]["threads"][0]["tid"], tid_of(&p.stdout, "victim"));
    assert_eq!(f[0]["locks"][0]["symbol"], "hog_lock");
    p.signal(libc::SIGKILL);
    p.wait_exit(T);
    assert_no_programs_left();
}

/// Every thread blocked: one finding naming all of them.
#[test]
#[ignore = "needs root and BPF"]
fn a_process_whose_every_thread_is_blocked_is_one_finding() {
    let bin = fixture("pool_stalled");
    let check = |r: &Value, out: &[String]| {
        let f = findings(r);
        assert_eq!(f.len(), 1, "{:#?}", summaries(r));
        let f = &f[0];
        assert_eq!(f["kind"], "process_hung", "{f:#}");
        let mut tids: Vec<u64> = f["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tid"].as_u64().unwrap())
            .collect();
        tids.sort();
        let mut want: Vec<u64> = ["main", "stall-1", "stall-2", "stall-3"]
            .iter()
            .map(|n| u64::from(tid_of(out, n)))
            .collect();
        want.sort();
        assert_eq!(tids, want, "{f:#}");
        let mut locks: Vec<&str> = f["locks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["symbol"].as_str().unwrap())
            .collect();
        locks.sort();
        assert_eq!(locks, vec!["done_cond", "job_cond"], "{f:#}");
    };
    let (r, out) = run_window(&[bin.to_str().unwrap()], &[]);
    check(&r, &out);
    let mut p = start(&[bin.to_str().unwrap()]);
    let (_, r, _) = attach(p.pid());
    check(&r, &p.stdout);
    p.signal(libc::SIGKILL);
    p.wait_exit(T);
    assert_no_programs_left();
}

/// A Python consumer on an empty Queue is idle, until main joins it: then
/// it holds main up (3.11-3.13: the Python view sees the join; without it,
/// every thread is blocked).
#[test]
#[ignore = "needs root and BPF"]
fn a_python_consumer_main_joins_is_found() {
    let fix = python_fixture("py_queue_consumer");
    for (label, py) in pythons() {
        let (r, out) = run_window(&[py, fix.to_str().unwrap()], &[]);
        let consumer = tid_of(&out, "consumer");
        let main = tid_of(&out, "MainThread");
        let f = findings(&r);
        assert_eq!(f.len(), 1, "{label}: {:#?}", summaries(&r));
        let f = &f[0];
        let tids: Vec<u64> = f["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tid"].as_u64().unwrap())
            .collect();
        if has_python_view(&r) {
            assert_eq!(f["kind"], "long_wait", "{label}: {f:#}");
            assert_eq!(tids, vec![u64::from(consumer), u64::from(main)], "{label}");
        } else {
            skip(&format!("{label}: no Python view: the join is not seen"));
            assert_eq!(f["kind"], "process_hung", "{label}: {f:#}");
            assert!(tids.contains(&u64::from(consumer)), "{label}: {f:#}");
            assert!(tids.contains(&u64::from(main)), "{label}: {f:#}");
        }
    }
    assert_no_programs_left();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn metrics(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n").unwrap().1.to_owned()
}

fn idle_metric(body: &str, pid: u32) -> Option<f64> {
    let name = format!("observer_idle_threads{{pid=\"{pid}\",comm=\"");
    body.lines()
        .find_map(|l| l.strip_prefix(&name)?.split_once("} ").map(|x| x.1))
        .map(|v| v.trim().parse().unwrap())
}

fn report_ids(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    v.sort();
    v
}

/// A test host of idle services: the C pool and the Python service under
/// every CPython leave no report, and the metric counts their idle
/// threads; a stalled pool and a semaphore nobody posts next to them are
/// reported.
#[test]
#[ignore = "needs root and BPF"]
fn the_daemon_reports_no_idle_service() {
    let dir = tmp();
    let reports = dir.path().join("reports");
    let port = free_port();
    let cfg = dir.path().join("observer.toml");
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\nlong_wait = {LONG_WAIT}\nstuck = {STUCK}\n\
             [[rule]]\ncomm = \"obsd-idle\"\n[[rule]]\ncomm = \"obsd-py\"\n[[rule]]\ncomm = \"obsd-stall\"\n",
            reports.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut d = Proc::spawn({
        let mut c = observer();
        c.args(["daemon", "--config"]).arg(&cfg);
        c
    });
    d.wait_stderr(T, |l| l.contains("observer daemon started"));
    let copy = |fix: &str, name: &str| -> PathBuf {
        let sub = dir.path().join(fix);
        std::fs::create_dir_all(&sub).unwrap();
        let dst = sub.join(name);
        std::fs::copy(fixture(fix), &dst).unwrap();
        dst
    };
    let pool_bin = copy("idle_pool", "obsd-idle");
    let mut services = vec![(
        "C pool".to_string(),
        start(&[pool_bin.to_str().unwrap()]),
        4.0,
    )];
    let fix = python_fixture("py_idle_service");
    for (i, (label, py)) in pythons().into_iter().enumerate() {
        let sub = dir.path().join(format!("py{i}"));
        std::fs::create_dir_all(&sub).unwrap();
        let link = sub.join("obsd-py");
        std::os::unix::fs::symlink(py, &link).unwrap();
        let p = start(&[link.to_str().unwrap(), fix.to_str().unwrap()]);
        services.push((label.to_string(), p, 4.0));
    }
    for (_, p, _) in &services {
        let pid = p.pid();
        d.wait_stderr(T, |l| l.contains(&format!("watching pid {pid} ")));
    }
    let since = Instant::now();
    std::thread::sleep(WINDOW);
    // Idle threads are counted (read once a second).
    let end = Instant::now() + T;
    for (label, p, want) in &services {
        loop {
            let got = idle_metric(&metrics(port), p.pid());
            // The workers; the main thread too once seen asleep in its selector.
            if got.is_some_and(|n| n >= *want) {
                break;
            }
            if Instant::now() > end {
                d.signal(libc::SIGTERM);
                let _ = d.wait_exit(T);
                panic!(
                    "{label}: observer_idle_threads {got:?}, want {want}\nreports: {:#?}\n{}",
                    report_ids(&reports),
                    d.stderr.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let ids = report_ids(&reports);
    assert!(
        ids.is_empty(),
        "idle services reported after {:?}: {ids:#?}\n{}",
        since.elapsed(),
        d.stderr.join("\n")
    );
    // Next to them, the hung ones are reported.
    let stall_bin = copy("pool_stalled", "obsd-stall");
    let stalled = start(&[stall_bin.to_str().unwrap()]);
    let sem_bin = copy("sem_lost", "obsd-stall");
    let sem = start(&[sem_bin.to_str().unwrap()]);
    let end = Instant::now() + T;
    // (Named by comm: sem_lost's main thread renames itself "main".)
    let want = [
        (format!("-{}-", stalled.pid()), "-process_hung"),
        (format!("-{}-", sem.pid()), "-long_wait"),
    ];
    loop {
        let ids = report_ids(&reports);
        if want
            .iter()
            .all(|(pid, kind)| ids.iter().any(|id| id.contains(pid) && id.ends_with(kind)))
        {
            assert_eq!(ids.len(), 2, "{ids:#?}");
            break;
        }
        assert!(Instant::now() < end, "{ids:#?}\n{}", d.stderr.join("\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(services);
    drop((stalled, sem));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// The CPythons with a venv under target/uvloop that imports uvloop,
/// installed from PyPI by xtask/scripts/uvloop.sh. An interpreter PyPI has
/// no uvloop wheel for, or that cannot import it, is skipped visibly.
fn uvloop_pythons() -> Vec<(&'static str, PathBuf)> {
    let mut out = Vec::new();
    for (label, py) in pythons() {
        let dir = repo().join("target/uvloop").join(label.replace(' ', "-"));
        let o = Command::new("sh")
            .arg(repo().join("xtask/scripts/uvloop.sh"))
            .arg(py)
            .arg(&dir)
            .output()
            .expect("sh");
        let why = String::from_utf8_lossy(&o.stderr).trim().to_string();
        match o.status.code() {
            Some(0) => out.push((label, dir.join("bin/python"))),
            Some(3) => skip(&format!("CPython {label}: no uvloop wheel on PyPI ({why})")),
            Some(4) => skip(&format!(
                "CPython {label}: uvloop installed but does not import: {why}"
            )),
            _ => panic!("{label}: installing uvloop: {o:?}"),
        }
    }
    out
}

/// A coroutine that calls time.sleep on a uvloop loop: event_loop_blocked
/// at that line, naming the task, on the loop's thread.
#[test]
#[ignore = "needs root and BPF"]
fn a_uvloop_loop_blocked_by_time_sleep_is_found_at_that_line() {
    const FIX: &str = "py_uvloop_blocking";
    let src = std::fs::read_to_string(python_fixture(FIX)).unwrap();
    let line = src
        .lines()
        .position(|l| l == "        time.sleep(SECS)")
        .unwrap() as u64
        + 1;
    for (label, py) in uvloop_pythons() {
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut obs = Proc::spawn({
            let mut c = observer();
            c.args(["run", "-q", "--report"])
                .arg(&rep)
                .arg("--")
                .arg(&py)
                .arg(python_fixture(FIX))
                .args(["0.5", "2"]);
            c
        });
        let st = obs.wait_exit(T);
        assert!(st.success(), "{label}: {st:?} {:?}", obs.stderr);
        let r = read_json(&rep);
        let pid = r["processes"][0]["tgid"].as_u64().unwrap();
        let f = findings(&r);
        assert!(!f.is_empty(), "{label}: no finding: {r:#}");
        for f in f {
            assert_eq!(f["kind"], "event_loop_blocked", "{label}: {f:#}");
            let t = &f["threads"][0];
            assert_eq!(t["tid"], pid, "{label}: the main thread runs the loop");
            let top = &t["python_frames"][0];
            assert_eq!(top["function"], "handle", "{label}: {f:#}");
            assert_eq!(top["line"], line, "{label}: {f:#}");
            let summary = f["summary"].as_str().unwrap();
            assert!(
                summary.contains("task \"slow-handler\" ran at handle"),
                "{label}: {summary}"
            );
        }
    }
    assert_no_programs_left();
}

/// Echo requests to the uvloop server at `port` until `until` (bounded).
fn load(port: u16, until: Instant) -> usize {
    use std::io::{BufRead, BufReader, Write};
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut n = 0;
    let mut line = String::new();
    while Instant::now() < until && n < 200_000 {
        w.write_all(b"ping\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "ping\n");
        n += 1;
    }
    n
}

/// A uvloop server idle and under load: no finding in attach and run; its
/// libuv worker pool is idle.
#[test]
#[ignore = "needs root and BPF"]
fn a_uvloop_server_idle_and_under_load_is_no_finding() {
    let fix = python_fixture("py_uvloop_server");
    for (label, py) in uvloop_pythons() {
        let py = py.to_str().unwrap();
        let mut p = start(&[py, fix.to_str().unwrap()]);
        let port: u16 = p
            .stdout
            .iter()
            .find_map(|l| l.strip_prefix("port "))
            .unwrap()
            .parse()
            .unwrap();
        // Idle.
        let (code, r, text) = attach(p.pid());
        assert_eq!(code, 0, "{label}: {text}");
        assert!(findings(&r).is_empty(), "{label}: {:#?}", summaries(&r));
        let workers: Vec<&Value> = r["threads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"] == "libuv-worker")
            .collect();
        assert!(!workers.is_empty(), "{label}: no libuv worker: {text}");
        for w in &workers {
            assert!(
                w["idle"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("waiting for work on ")),
                "{label}: {w:#}"
            );
        }
        // Under load.
        let until = Instant::now() + WINDOW;
        let client = std::thread::spawn(move || load(port, until));
        let (code, r, text) = attach(p.pid());
        let n = client.join().unwrap();
        assert!(n > 100, "{label}: only {n} requests");
        assert_eq!(code, 0, "{label}: {text}");
        assert!(findings(&r).is_empty(), "{label}: {:#?}", summaries(&r));
        p.signal(libc::SIGKILL);
        p.wait_exit(T);
        // run, under load.
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut obs = Proc::spawn({
            let mut c = observer();
            c.args([
                "run",
                "--long-wait",
                LONG_WAIT,
                "--stuck",
                STUCK,
                "--report",
            ])
            .arg(&rep)
            .arg("--")
            .args([py, fix.to_str().unwrap()]);
            c
        });
        obs.wait_stdout(T, |l| l == "ready");
        let port: u16 = obs
            .stdout
            .iter()
            .find_map(|l| l.strip_prefix("port "))
            .unwrap()
            .parse()
            .unwrap();
        let n = load(port, Instant::now() + WINDOW);
        assert!(n > 100, "{label}: only {n} requests");
        obs.signal(libc::SIGINT);
        obs.wait_exit(T);
        let r = read_json(&rep);
        assert!(
            findings(&r).is_empty(),
            "{label}: run: {:#?}",
            summaries(&r)
        );
    }
    assert_no_programs_left();
}
