//! The hang watchdog of `run --hang-after DURATION [--kill-on-hang]`
//! (issue 25): a program whose threads all block (a consumer on an empty
//! queue, a join on it; C and Python) is reported, every thread with what
//! it waits for, and killed with exit 3 within DURATION plus one sample
//! period; a CPU-bound program and a periodic timer run to their own end
//! with their own status and no report. Root; every run has a hard timeout
//! and its programs are killed.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// The watchdog's duration, and its sample period (a tenth of it).
const AFTER: Duration = Duration::from_secs(1);
const PERIOD: Duration = Duration::from_millis(100);
/// Writing the report once the watchdog fired: every thread's stacks read,
/// the tree killed and reaped, the files written.
const REPORT: Duration = Duration::from_millis(1000);

fn run(argv: &[&str], kill: bool, dir: &Path) -> (Proc, Instant) {
    let mut c = Command::new(observer_bin());
    c.args(["run", "--hang-after", &format!("{}", AFTER.as_secs_f64())]);
    if kill {
        c.arg("--kill-on-hang");
    }
    c.arg("--report")
        .arg(dir.join("r.json"))
        .arg("--html")
        .arg(dir.join("r.html"))
        .arg("--")
        .args(argv);
    let mut p = Proc::spawn(c);
    p.wait_stdout(T, |l| l == "ready");
    (p, Instant::now())
}

fn hung(r: &Value) -> Vec<&Value> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "process_hung")
        .collect()
}

/// The blocked program is ended with 3 within DURATION + one period (plus
/// the report), and the report names `threads` (name, what it waits for).
fn assert_hung(argv: &[&str], waits: &[(&str, &str)]) {
    let dir = tmp();
    let (mut obs, ready) = run(argv, true, dir.path());
    let st = obs.wait_exit(T);
    let took = ready.elapsed();
    let text = obs.stdout.join("\n");
    assert_eq!(st.code(), Some(3), "{text}\n{}", obs.stderr.join("\n"));
    assert!(
        took >= AFTER && took <= AFTER + PERIOD + REPORT,
        "ended {took:?} after ready"
    );
    let r = read_json(&dir.path().join("r.json"));
    let f = hung(&r);
    assert_eq!(f.len(), 1, "{r:#}");
    let s = f[0]["summary"].as_str().unwrap();
    assert!(s.contains("(hang watchdog)"), "{s}");
    for (name, what) in waits {
        let tid = tid_of(&obs.stdout, name);
        let t = f[0]["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == tid)
            .unwrap_or_else(|| panic!("{name} not in {:#}", f[0]));
        let w = t["waits_for"]["kind"].as_str().unwrap_or_default();
        let sym = t["waits_for"]["symbol"].as_str().unwrap_or_default();
        let label = t["python"]["label"].as_str().unwrap_or_default();
        assert!(
            [w, sym, label].iter().any(|x| x.contains(what)),
            "{name}: {what} not in {t:#}"
        );
        assert!(!t["frames"].as_array().unwrap().is_empty(), "{t:#}");
        assert!(text.contains(&format!("thread {tid} ")), "{text}");
    }
    assert!(text.contains("All threads blocked"), "{text}");
    let html = std::fs::read_to_string(dir.path().join("r.html")).unwrap();
    assert!(html.contains("process_hung"), "no finding in the page");
    // The tree is gone.
    let pid = tid_of(&obs.stdout, waits[0].0);
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

fn assert_not_hung(name: &str, code: i32) {
    let bin = fixture(name);
    let secs = format!("{}", 3.0 * AFTER.as_secs_f64());
    let dir = tmp();
    let (mut obs, _) = run(&[bin.to_str().unwrap(), &secs], true, dir.path());
    let st = obs.wait_exit(T);
    assert_eq!(st.code(), Some(code), "{}", obs.stderr.join("\n"));
    let r = read_json(&dir.path().join("r.json"));
    assert!(hung(&r).is_empty(), "{r:#}");
    assert!(
        !obs.stderr.iter().any(|l| l.contains("(hang watchdog)")),
        "{}",
        obs.stderr.join("\n")
    );
}

#[test]
#[ignore = "needs root"]
fn blocked_c_program_is_reported_and_killed() {
    let bin = fixture("hang_consumer");
    assert_hung(
        &[bin.to_str().unwrap()],
        &[("consumer", "jobs_cond"), ("main", "join")],
    );
}

#[test]
#[ignore = "needs root"]
fn blocked_python_program_is_reported_and_killed() {
    let Some((_, py)) = pythons().into_iter().next() else {
        return;
    };
    let script = python_fixture("py_queue_consumer");
    assert_hung(
        &[py, script.to_str().unwrap()],
        &[("consumer", "Queue.get"), ("MainThread", "join")],
    );
}

#[test]
#[ignore = "needs root"]
fn cpu_bound_program_runs_to_its_end() {
    assert_not_hung("busy_cpu", 7);
}

#[test]
#[ignore = "needs root"]
fn periodic_timer_runs_to_its_end() {
    assert_not_hung("periodic", 5);
}

/// Without --kill-on-hang: reported once (report written at once), the
/// program keeps running; killed here, observer exits with its status.
#[test]
#[ignore = "needs root"]
fn without_kill_it_reports_and_keeps_running() {
    let bin = fixture("hang_consumer");
    let dir = tmp();
    let (mut obs, _) = run(&[bin.to_str().unwrap()], false, dir.path());
    obs.wait_stderr(T, |l| l.contains("(hang watchdog)"));
    // The report is written right after the live line.
    let end = Instant::now() + T;
    let rep = dir.path().join("r.json");
    let r = loop {
        let r = std::fs::read_to_string(&rep).ok();
        if let Some(r) = r.and_then(|s| serde_json::from_str::<Value>(&s).ok()) {
            break r;
        }
        assert!(Instant::now() < end, "no report written");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(hung(&r).len(), 1, "{r:#}");
    let pid = tid_of(&obs.stdout, "main");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    kill(pid);
    let st = obs.wait_exit(T);
    assert_eq!(st.code(), Some(128 + 9));
}
