//! Idle is not a hang (issue 26): healthy services whose workers wait for
//! work give no finding in `attach`, `run` and the daemon over 30 s, and
//! show their idle threads as state; the hidden kinds that hold someone up,
//! a lock held too long and a process where every thread is blocked are
//! still found, with their exact threads and locks. Thresholds are set low
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
/// The soak: healthy services stay silent this long in every mode.
const SOAK: Duration = Duration::from_secs(30);

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

/// `attach -p PID` for `secs` seconds, its JSON report to `rep`.
fn attach_cmd(pid: u32, secs: f64, rep: &Path) -> Command {
    let mut c = observer();
    c.args(["attach", "--long-wait", LONG_WAIT, "--stuck", STUCK])
        .args(["--duration", &format!("{secs}")])
        .arg("--report")
        .arg(rep)
        .args(["-p", &pid.to_string()]);
    c
}

/// `attach -p PID` for the window: (exit code, JSON report, text).
fn attach(pid: u32) -> (i32, Value, String) {
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let out = attach_cmd(pid, WINDOW.as_secs_f64(), &rep)
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

/// 600 threads begin to wait on one condvar under `attach`: each is an
/// idle thread in the report and none is a finding. Their waits began under
/// observation, so all 600 are read from the kernel's wait table (in
/// batches, more than one), in both ways of learning waits.
#[test]
#[ignore = "needs root and BPF"]
fn six_hundred_waiters_are_read_from_the_wait_table() {
    let bin = fixture("many_waiters");
    for hooks in ["syscalls", "sched"] {
        let mut p = start(&[bin.to_str().unwrap()]);
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut obs = Proc::spawn({
            let mut c = observer();
            // Not churn: they are created once and stay.
            c.args(["-v", "attach", "--churn", "1000", "--hooks", hooks])
                .args(["--duration", "3", "-p", &p.pid().to_string(), "--report"])
                .arg(&rep);
            c
        });
        obs.wait_stderr(T, |l| l.contains("observing pid"));
        p.signal(libc::SIGUSR1);
        p.wait_stdout(T, |l| l == "waiting");
        assert_eq!(
            obs.wait_exit(T).code(),
            Some(0),
            "{hooks}: {:?}",
            obs.stderr
        );
        let r = read_json(&rep);
        assert!(findings(&r).is_empty(), "{hooks}: {:#?}", summaries(&r));
        let idle = r["threads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["tid"] != p.pid() && t["idle"].is_string())
            .count();
        assert_eq!(idle, 600, "{hooks}");
    }
    assert_no_programs_left();
}

fn idle_of(r: &Value, tid: u32) -> String {
    report_thread(r, tid)["idle"]
        .as_str()
        .unwrap_or_else(|| panic!("thread {tid} not idle: {:#}", report_thread(r, tid)))
        .to_string()
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

/// What a soak service is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// fixtures/idle_pool.c: 4 workers on a condvar, main ticking.
    CPool,
    /// fixtures/py_idle_service.py under one CPython.
    Python,
    /// fixtures/py_uvloop_server.py under one CPython's uvloop venv.
    Uvloop,
}

/// One healthy service of the soak: started by the launcher, its stdout
/// in a file of its own.
struct Service {
    label: String,
    kind: Kind,
    argv: Vec<PathBuf>,
    out: PathBuf,
    pid: u32,
    lines: Vec<String>,
}

impl Service {
    /// Waits (hard timeout) until its output says "ready"; keeps the lines.
    fn wait_ready(&mut self) {
        let end = Instant::now() + T;
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            self.lines = text.lines().map(str::to_owned).collect();
            if self.lines.iter().any(|l| l == "ready") {
                return;
            }
            assert!(Instant::now() < end, "{}: never ready: {text}", self.label);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A report (attach's or run's) says it is healthy: no finding about
    /// it, and its waiting threads idle on what they wait for.
    fn check_idle(&self, mode: &str, r: &Value) {
        let label = format!("{mode}: {}", self.label);
        let mine: Vec<String> = findings(r)
            .iter()
            .filter(|f| f["tgid"] == self.pid)
            .map(|f| format!("{}: {}", f["kind"], f["summary"]))
            .collect();
        assert!(mine.is_empty(), "{label}: {mine:#?}");
        match self.kind {
            Kind::CPool => {
                let cond = fixture_locks(&self.lines)
                    .into_iter()
                    .find(|(n, _)| n == "pool_cond")
                    .unwrap()
                    .1;
                for w in ["pool-1", "pool-2", "pool-3", "pool-4"] {
                    let want = format!("waiting for work on condvar pool_cond ({cond:#x})");
                    assert_eq!(idle_of(r, tid_of(&self.lines, w)), want, "{label}");
                }
                assert!(
                    report_thread(r, self.pid)["idle"].is_null(),
                    "{label}: main runs"
                );
            }
            Kind::Python => {
                let view = has_python_view_of(r, self.pid);
                if !view {
                    // Every CPython ./x installs has its Python view read.
                    assert!(!require_all(), "{label}: no Python view");
                    skip(&format!(
                        "{label}: no Python view; idle threads checked in the native view only"
                    ));
                }
                let py = self.argv[0].display().to_string();
                python_idle_checks(&label, &py, r, &self.lines, view);
            }
            Kind::Uvloop => {
                let workers = self.libuv_workers(r);
                assert!(!workers.is_empty(), "{label}: no libuv worker");
                for w in workers {
                    assert!(
                        w["idle"]
                            .as_str()
                            .is_some_and(|s| s.starts_with("waiting for work on ")),
                        "{label}: {w:#}"
                    );
                }
            }
        }
    }

    /// Its `libuv-worker` threads in a report.
    fn libuv_workers<'a>(&self, r: &'a Value) -> Vec<&'a Value> {
        let tids = std::fs::read_dir(format!("/proc/{}/task", self.pid))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .collect::<Vec<_>>();
        r["threads"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| {
                t["name"] == "libuv-worker"
                    && t["tid"]
                        .as_u64()
                        .is_some_and(|x| tids.contains(&(x as u32)))
            })
            .collect()
    }
}

/// Whether the Python view of process `pid` was read in a report whose
/// threads may belong to several processes.
fn has_python_view_of(r: &Value, pid: u32) -> bool {
    let tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    r["threads"].as_array().unwrap().iter().any(|t| {
        t["tid"]
            .as_u64()
            .is_some_and(|x| tids.contains(&(x as u32)))
            && t["python_frames"].as_array().is_some_and(|f| !f.is_empty())
    })
}

/// Kills, when dropped, the processes the launcher started (not our
/// children) as listed in its pid file: those still running a command
/// from the test's directory (a pid reused meanwhile is left alone).
struct Services {
    pids: PathBuf,
    dir: PathBuf,
}

impl Drop for Services {
    fn drop(&mut self) {
        let list = std::fs::read_to_string(&self.pids).unwrap_or_default();
        let dir = self.dir.display().to_string();
        for pid in list
            .lines()
            .filter_map(|l| l.split(' ').nth(2)?.parse().ok())
        {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&dir) {
                kill(pid);
            }
        }
    }
}

/// The soak: a test host of healthy services — the idle C pool, the
/// idle Python service under every CPython, a uvloop server under every
/// CPython with uvloop, idle and in turn under load — is watched for 30 s by
/// the daemon, by `run` (which started them all, following forks) and by an
/// `attach` to each, all at once: no finding in any mode, no report; every
/// waiting worker is shown idle, and the daemon counts them. Then the hung
/// ones started next to them are reported, exactly.
#[test]
#[ignore = "needs root and BPF"]
fn healthy_services_are_silent_for_30s_in_every_mode() {
    let dir = tmp();
    let reports = dir.path().join("reports");
    let port = free_port();
    // Names only this test's programs have: other runs on the host use
    // the fixed ones, and the daemon would watch theirs too.
    let [c_comm, py_comm, uv_comm, stall_comm] = ["idle", "py", "uv", "stall"].map(own_comm);
    let cfg = daemon_config(
        dir.path(),
        &reports,
        &format!(
            "metrics_listen = \"127.0.0.1:{port}\"\nlong_wait = {LONG_WAIT}\nstuck = {STUCK}\n"
        ),
        &[&c_comm, &py_comm, &uv_comm, &stall_comm],
    );
    let mut d = spawn_daemon(&cfg);
    let mut svcs = Vec::new();
    let mut add = |label: String, kind: Kind, argv: Vec<PathBuf>| {
        let out = dir.path().join(format!("out{}", svcs.len()));
        svcs.push(Service {
            label,
            kind,
            argv,
            out,
            pid: 0,
            lines: Vec::new(),
        });
    };
    add(
        "C pool".into(),
        Kind::CPool,
        vec![copy_as("idle_pool", &dir.path().join("c"), &c_comm)],
    );
    for (i, (label, py)) in pythons().into_iter().enumerate() {
        let link = python_link(&dir.path().join(format!("py{i}")), Path::new(py), &py_comm);
        add(
            format!("Python service {label}"),
            Kind::Python,
            vec![link, python_fixture("py_idle_service")],
        );
    }
    for (i, (label, py)) in uvloop_pythons().into_iter().enumerate() {
        let link = venv_link(&dir.path().join(format!("uv{i}")), &py, &uv_comm);
        add(
            format!("uvloop server {label}"),
            Kind::Uvloop,
            vec![link, python_fixture("py_uvloop_server")],
        );
    }
    // `run` starts them all: a launcher that forks each one, says its pid
    // (and notes it for the guard), and waits (a SIGINT ends the launcher
    // alone).
    let guard = Services {
        pids: dir.path().join("pids"),
        dir: dir.path().to_path_buf(),
    };
    let mut script = String::new();
    for (i, s) in svcs.iter().enumerate() {
        let argv: Vec<String> = s
            .argv
            .iter()
            .map(|a| format!("'{}'", a.display()))
            .collect();
        script += &format!(
            "{} > '{}' 2>&1 &\necho \"pid {i} $!\" >> '{}'\necho \"pid {i} $!\"\n",
            argv.join(" "),
            s.out.display(),
            guard.pids.display()
        );
    }
    // Its last sleep runs from the test's directory too, for the guard.
    let sleep = dir.path().join("launcher-sleep");
    std::os::unix::fs::symlink("/bin/sleep", &sleep).unwrap();
    script += &format!(
        "echo \"pid launcher $$\" >> '{}'\necho launched\nexec '{}' 3600\n",
        guard.pids.display(),
        sleep.display()
    );
    let launcher = dir.path().join("launcher.sh");
    std::fs::write(&launcher, script).unwrap();
    let run_rep = dir.path().join("run.json");
    let mut run = Proc::spawn({
        let mut c = observer();
        c.args([
            "run",
            "--follow-forks",
            "--long-wait",
            LONG_WAIT,
            "--stuck",
            STUCK,
        ])
        .arg("--report")
        .arg(&run_rep)
        .arg("--")
        .arg("sh")
        .arg(&launcher);
        c
    });
    run.wait_stdout(T, |l| l == "launched");
    for l in &run.stdout {
        if let Some(rest) = l.strip_prefix("pid ") {
            let (i, pid) = rest.split_once(' ').unwrap();
            svcs[i.parse::<usize>().unwrap()].pid = pid.parse().unwrap();
        }
    }
    for s in &mut svcs {
        s.wait_ready();
        let pid = s.pid;
        d.wait_stderr(T, |l| l.contains(&format!("watching pid {pid} ")));
    }
    // The window: an attach to each, as the daemon and `run` go on.
    let attaches: Vec<(Proc, PathBuf)> = svcs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let rep = dir.path().join(format!("attach{i}.json"));
            (
                Proc::spawn(attach_cmd(s.pid, SOAK.as_secs_f64(), &rep)),
                rep,
            )
        })
        .collect();
    // Each uvloop server in turn under load for its share of the window,
    // idle the rest of it.
    let ports: Vec<(String, u16)> = svcs
        .iter()
        .filter(|s| s.kind == Kind::Uvloop)
        .map(|s| (s.label.clone(), port_of(&s.lines)))
        .collect();
    let load = std::thread::spawn(move || {
        let t0 = Instant::now();
        let share = SOAK / ports.len().max(1) as u32;
        ports
            .into_iter()
            .zip(1u32..)
            .map(|((label, port), k)| (label, echo_load(port, t0 + share * k)))
            .collect::<Vec<_>>()
    });
    let mut workers = Vec::new();
    for ((mut a, rep), s) in attaches.into_iter().zip(&svcs) {
        let st = a.wait_exit(SOAK + T);
        assert_eq!(st.code(), Some(0), "attach: {}: {:?}", s.label, a.stdout);
        let r = read_json(&rep);
        assert!(
            findings(&r).is_empty(),
            "attach: {}: {:#?}",
            s.label,
            summaries(&r)
        );
        s.check_idle("attach", &r);
        workers.push(s.libuv_workers(&r).len());
        if s.kind == Kind::CPool {
            let text = a.stdout.join("\n");
            assert!(text.starts_with("FINDINGS: none"), "{text}");
            let cond = fixture_locks(&s.lines)[0].1;
            for w in ["pool-1", "pool-2", "pool-3", "pool-4"] {
                let row = a
                    .stdout
                    .iter()
                    .find(|l| l.contains(&format!(" {w} ")))
                    .unwrap_or_else(|| panic!("no row for {w}: {text}"));
                let want = format!("idle: waiting for work on condvar pool_cond ({cond:#x})");
                assert!(row.ends_with(&want), "{row}");
            }
        }
    }
    for (label, n) in load.join().unwrap() {
        assert!(n > 100, "{label}: only {n} requests");
    }
    // The daemon: no report, and the idle threads counted (read once a
    // second): the workers, and main too once seen asleep in its selector.
    let ids = report_ids(&reports);
    assert!(
        ids.is_empty(),
        "healthy services reported: {ids:#?}\n{}\n{}",
        ids.iter()
            .map(
                |id| std::fs::read_to_string(reports.join(format!("{id}.json")))
                    .unwrap_or_default()
            )
            .collect::<Vec<_>>()
            .join("\n"),
        d.stderr.join("\n")
    );
    let body = http_get(port, None);
    for (s, n) in svcs.iter().zip(workers) {
        let want = match s.kind {
            Kind::CPool | Kind::Python => 4.0,
            Kind::Uvloop => n as f64,
        };
        let got = idle_metric(&body, s.pid);
        assert!(
            got.is_some_and(|n| n >= want),
            "{}: observer_idle_threads {got:?}, want >= {want}",
            s.label
        );
    }
    // `run`: stopped by SIGINT, which ends the launcher; the services live on.
    run.signal(libc::SIGINT);
    run.wait_exit(T);
    let r = read_json(&run_rep);
    assert!(findings(&r).is_empty(), "run: {:#?}", summaries(&r));
    for s in &svcs {
        assert!(
            r["processes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["tgid"] == s.pid),
            "run did not follow {} ({})",
            s.label,
            s.pid
        );
        s.check_idle("run", &r);
    }
    // Next to them, the hung ones are reported, exactly.
    let stalled = start(&[
        copy_as("pool_stalled", &dir.path().join("stall"), &stall_comm)
            .to_str()
            .unwrap(),
    ]);
    let sem = start(&[copy_as("sem_lost", &dir.path().join("sem"), &stall_comm)
        .to_str()
        .unwrap()]);
    // (Named by comm: sem_lost's main thread renames itself "main".)
    let want = [
        (format!("-{}-", stalled.pid()), "-process_hung"),
        (format!("-{}-", sem.pid()), "-long_wait"),
    ];
    let end = Instant::now() + T;
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
    drop((stalled, sem, guard));
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// `dump` of `pid` until it finds a hang (exit 3): its JSON.
fn dump_until_hang(label: &str, pid: u32) -> Value {
    let end = Instant::now() + T;
    loop {
        let out = observer()
            .args(["dump", "--format", "json", "-p", &pid.to_string()])
            .output()
            .unwrap();
        if out.status.code() == Some(3) {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        assert!(Instant::now() < end, "{label}: no hang: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 1-based line of the fixture's line that is exactly `text`.
fn line_of(fixture: &str, text: &str) -> u64 {
    let src = std::fs::read_to_string(python_fixture(fixture)).unwrap();
    src.lines()
        .position(|l| l == text)
        .unwrap_or_else(|| panic!("{fixture}.py has no line {text:?}")) as u64
        + 1
}

/// The line of the innermost frame of `function` in a thread's Python stack.
fn frame_line(t: &Value, function: &str) -> Option<u64> {
    t["python_frames"]
        .as_array()?
        .iter()
        .find(|f| f["function"] == function)?["line"]
        .as_u64()
}

/// Main waits in `fut.result()` for the job a ThreadPoolExecutor worker
/// runs, which waits forever on an Event nobody sets: the worker, idle as it
/// looks, holds main up (a long_wait naming both and the future). A worker
/// that works while main waits, and a pool nobody waits for, give none; a
/// job that needs the lock main holds while it waits is a deadlock through
/// the future, and a job that waits for its own future a self-deadlock.
/// Under every CPython.
#[test]
#[ignore = "needs root and BPF"]
fn a_pool_worker_stuck_in_the_job_main_waits_for_is_found() {
    const FIX: &str = "py_future_wait";
    let fix = python_fixture(FIX);
    let fix = fix.to_str().unwrap();
    for (label, py) in pythons() {
        let mut procs: Vec<Proc> = ["stuck", "busy", "idle"]
            .iter()
            .map(|m| start(&[py, fix, m]))
            .collect();
        let dir = tmp();
        // The three at once, each for the window.
        let obs: Vec<(Proc, PathBuf)> = procs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let rep = dir.path().join(format!("r{i}.json"));
                let c = attach_cmd(p.pid(), WINDOW.as_secs_f64(), &rep);
                (Proc::spawn(c), rep)
            })
            .collect();
        let mut reports = Vec::new();
        for (mut o, rep) in obs {
            let st = o.wait_exit(T);
            assert_eq!(st.code(), Some(0), "{label}: a long wait is not a hang");
            reports.push(read_json(&rep));
        }
        // stuck: one long_wait of pool_0, holding main up through `fut`.
        let out = &procs[0].stdout;
        let (main, worker) = (tid_of(out, "MainThread"), tid_of(out, "pool_0"));
        let fut = out
            .iter()
            .find_map(|l| l.strip_prefix("future fut 0x"))
            .map(|h| u64::from_str_radix(h, 16).unwrap())
            .unwrap_or_else(|| panic!("{label}: no future line: {out:?}"));
        let r = &reports[0];
        let f = findings(r);
        assert_eq!(f.len(), 1, "{label}: {:#?}", summaries(r));
        let f = &f[0];
        assert_eq!(f["kind"], "long_wait", "{label}: {f:#}");
        let tids: Vec<u64> = f["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tid"].as_u64().unwrap())
            .collect();
        assert_eq!(tids, vec![u64::from(worker), u64::from(main)], "{label}");
        let w = &f["threads"][1]["waits_for"];
        assert_eq!(w["kind"], "future", "{label}: {w:#}");
        assert_eq!(w["symbol"], "fut", "{label}: {w:#}");
        assert_eq!(w["addr"], fut, "{label}: {w:#}");
        let summary = f["summary"].as_str().unwrap();
        let want = format!(
            "; thread {main} \"MainThread\" waits for future fut ({fut:#x}), whose work item it runs"
        );
        assert!(summary.ends_with(&want), "{label}: {summary}");
        assert_eq!(
            frame_line(&f["threads"][0], "fetch"),
            Some(line_of(FIX, "        gate.wait()")),
            "{label}: {f:#}"
        );
        assert_eq!(
            frame_line(&f["threads"][1], "main"),
            Some(line_of(FIX, "    fut.result()")),
            "{label}: {f:#}"
        );
        // busy: main waits for a worker that works.
        let r = &reports[1];
        assert!(findings(r).is_empty(), "{label}: busy: {:#?}", summaries(r));
        let main = tid_of(&procs[1].stdout, "MainThread");
        assert_eq!(
            report_thread(r, main)["python"]["label"],
            "Future.result() of fetch in pool pool",
            "{label}"
        );
        // idle: the pool's worker waits for work, nobody waits for it.
        let r = &reports[2];
        assert!(findings(r).is_empty(), "{label}: idle: {:#?}", summaries(r));
        assert_eq!(
            idle_of(r, tid_of(&procs[2].stdout, "pool_0")),
            "waiting for work in a ThreadPoolExecutor",
            "{label}"
        );
        for p in &mut procs {
            p.signal(libc::SIGKILL);
            p.wait_exit(T);
        }
        // cycle: main holds ledger and waits for the job that needs it;
        // self: the job waits for its own future.
        for mode in ["cycle", "self"] {
            let p = start(&[py, fix, mode]);
            let (m, w) = (
                u64::from(tid_of(&p.stdout, "MainThread")),
                u64::from(tid_of(&p.stdout, "pool_0")),
            );
            let r = dump_until_hang(label, p.pid());
            let f = findings(&r);
            assert_eq!(f.len(), 1, "{label}: {mode}: {:#?}", summaries(&r));
            assert_eq!(f[0]["kind"], "deadlock", "{label}: {mode}");
            let edges: Vec<(u64, u64, String, String)> = f[0]["cycle"]
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
            let want = if mode == "cycle" {
                vec![
                    (m, w, "future".into(), "fut".into()),
                    (w, m, "py_lock".into(), "ledger".into()),
                ]
            } else {
                vec![(w, w, "future".into(), "own".into())]
            };
            assert_eq!(edges, want, "{label}: {mode}");
        }
    }
    assert_no_programs_left();
}
