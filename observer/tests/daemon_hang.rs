//! `observer daemon` with `hang_after` (and `kill_on_hang`) in a rule:
//! fully blocked programs get one report, busy and periodic ones none.
//! Every process has a hard timeout and is killed.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::*;
use serde_json::Value;

/// The `hang_after` of the rules in [`daemon_hang_after`], and its sample
/// period (a tenth of it).
const HANG_AFTER: Duration = Duration::from_secs(1);

/// The one `process_hung` report of `pid`, checked: written by the daemon,
/// its only finding, from the watchdog (no thread ran for HANG_AFTER),
/// naming each of `waits` (thread name, what it waits for: a lock's symbol,
/// `join`, a Python label, a syscall) with its stack. Returns the finding.
fn check_hang_report(
    dir: &Path,
    id: &str,
    pid: u32,
    out: &[String],
    waits: &[(&str, &str)],
) -> Value {
    let r = read_json(&dir.join(format!("{id}.json")));
    assert_eq!(r["mode"], "daemon");
    let f = r["findings"].as_array().unwrap();
    assert_eq!(f.len(), 1, "one finding per report: {f:#?}");
    let f = f[0].clone();
    assert_eq!(f["kind"], "process_hung", "{f:#}");
    assert_eq!(f["tgid"], pid, "{f:#}");
    // From the watchdog: "no thread ... has run for 1.023s (...)", at
    // least the duration.
    let s = f["summary"].as_str().unwrap();
    let ran = s
        .strip_prefix("no thread of the watched processes has run for ")
        .and_then(|r| {
            r.split_whitespace()
                .next()?
                .strip_suffix('s')?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("not the watchdog's summary: {s}"));
    assert!(ran >= HANG_AFTER.as_secs_f64(), "{s}");
    for (name, what) in waits {
        // The fixtures print `thread NAME TID`; a shell prints nothing (its pid).
        let tid = fixture_threads(out)
            .into_iter()
            .find(|(n, _)| n == name)
            .map_or(pid, |(_, t)| t);
        let t = f["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == tid)
            .unwrap_or_else(|| panic!("{name} ({tid}) not in {f:#}"));
        let seen = [
            &t["waits_for"]["kind"],
            &t["waits_for"]["symbol"],
            &t["python"]["label"],
            &t["blocked_in"],
        ];
        assert!(
            seen.iter()
                .any(|x| x.as_str().is_some_and(|x| x.contains(what))),
            "{name}: {what} not in {t:#}"
        );
        assert!(!t["frames"].as_array().unwrap().is_empty(), "{t:#}");
    }
    let txt = std::fs::read_to_string(dir.join(format!("{id}.txt"))).unwrap();
    assert!(
        txt.starts_with(&format!("All threads blocked in process {pid}:")),
        "{txt}"
    );
    f
}

fn process_hung_reports(dir: &Path, pid: u32) -> Vec<String> {
    reports_of(dir, pid)
        .into_iter()
        .filter(|id| id.ends_with("-process_hung"))
        .collect()
}

/// Dead or a zombie (its parent killed too, not yet reaped by init).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        matches!(
            s[s.rfind(')').unwrap() + 2..].chars().next(),
            Some('Z' | 'X')
        )
    })
}

/// A process group, SIGKILLed on drop unless disarmed.
struct Group(Option<u32>);

impl Group {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(g) = self.0 {
            // SAFETY: plain kill(2) of a group this test made.
            unsafe { libc::kill(-(g as i32), libc::SIGKILL) };
        }
    }
}

/// `hang_after` in a daemon rule (issue 25). Under one rule: a C program
/// whose threads all block (a consumer on an empty queue, main joining it)
/// gets exactly one `process_hung` report naming both threads, and keeps
/// running (the rule does not kill); a CPU-bound program and a timer that
/// wakes every 100 ms run to their end with no report at all. A Python
/// program blocked the same way (Queue.get, join) under a rule with the
/// duration in seconds: one report with its Python view. Under a rule with
/// `kill_on_hang`: a shell waiting for such a program is reported and both
/// are killed (the watchdog and the kill cover the process's descendants).
#[test]
#[ignore = "needs root and BPF"]
fn daemon_hang_after() {
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let watched = tmp.path().join("bin");
    let killed = tmp.path().join("kill");
    let cfg = tmp.path().join("observer.toml");
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"\"\n\
             [[rule]]\nexe = \"{}/*\"\nhang_after = \"{}ms\"\n\
             [[rule]]\ncomm = \"obsd-pyhang\"\nhang_after = {}\n\
             [[rule]]\nexe = \"{}/*\"\nhang_after = \"{}s\"\nkill_on_hang = true\n",
            reports.to_str().unwrap(),
            watched.display(),
            HANG_AFTER.as_millis(),
            HANG_AFTER.as_secs(),
            killed.display(),
            HANG_AFTER.as_secs(),
        ),
    )
    .unwrap();
    let mut d = spawn_daemon(&cfg);
    let secs = format!("{}", 3 * HANG_AFTER.as_secs());

    let mut blocked = start(&copy_as("hang_consumer", &watched, "obsd-hang"));
    let mut busy = Proc::spawn({
        let mut c = Command::new(copy_as("busy_cpu", &watched, "obsd-busy"));
        c.arg(&secs);
        c
    });
    let mut tick = Proc::spawn({
        let mut c = Command::new(copy_as("periodic", &watched, "obsd-tick"));
        c.arg(&secs);
        c
    });
    let py = pythons().into_iter().next().map(|(_, py)| {
        let dir = tmp.path().join("py");
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("obsd-pyhang");
        std::os::unix::fs::symlink(py, &link).unwrap();
        Proc::spawn({
            let mut c = Command::new(&link);
            c.arg(python_fixture("py_queue_consumer"));
            c
        })
    });
    // A shell (its own copy, so the kill rule selects it) waiting for a
    // blocked program that no rule selects: its descendant.
    std::fs::create_dir_all(&killed).unwrap();
    let sh = killed.join("obsd-wrap");
    std::fs::copy("/bin/sh", &sh).unwrap();
    let child = copy_as("hang_consumer", &tmp.path().join("plain"), "obsd-child");
    let mut wrap = Proc::spawn({
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(&sh);
        c.arg("-c")
            .arg(format!("{}; exit 0", child.display()))
            .process_group(0);
        c
    });
    // Should the test fail before the daemon kills them, the shell's child
    // goes too (Proc kills only the shell).
    let group = Group(Some(wrap.pid()));

    // The blocked C program: one report within the duration plus a scan
    // and the report's reads, naming both threads; it runs on.
    blocked.wait_stdout(T, |l| l == "ready");
    let t0 = Instant::now();
    let blocked_id = wait_report_of(
        &reports,
        blocked.pid(),
        "process_hung",
        HANG_AFTER + REPORT_WITHIN,
        &mut d,
    );
    eprintln!("blocked C program reported {:?} after ready", t0.elapsed());
    check_hang_report(
        &reports,
        &blocked_id,
        blocked.pid(),
        &blocked.stdout,
        &[("consumer", "jobs_cond"), ("main", "join")],
    );

    // The Python program: its threading names and what each waits in.
    if let Some(mut py) = py {
        py.wait_stdout(T, |l| l == "ready");
        let id = wait_report_of(
            &reports,
            py.pid(),
            "process_hung",
            HANG_AFTER + REPORT_WITHIN,
            &mut d,
        );
        let f = check_hang_report(
            &reports,
            &id,
            py.pid(),
            &py.stdout,
            &[("consumer", "Queue.get"), ("MainThread", "join")],
        );
        let consumer = tid_of(&py.stdout, "consumer");
        let t = f["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == consumer)
            .unwrap();
        assert_eq!(t["name"], "consumer", "{t:#}");
        assert!(
            t["python_frames"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["function"] == "consume"),
            "{t:#}"
        );
        std::thread::sleep(HANG_AFTER * 2);
        assert_eq!(process_hung_reports(&reports, py.pid()), vec![id]);
        assert!(
            py.child.try_wait().unwrap().is_none(),
            "killed without kill_on_hang"
        );
    }

    // The shell and its child: reported, then both killed.
    let id = wait_report_of(
        &reports,
        wrap.pid(),
        "process_hung",
        HANG_AFTER + REPORT_WITHIN,
        &mut d,
    );
    check_hang_report(&reports, &id, wrap.pid(), &[], &[("sh", "wait4")]);
    let st = wrap.wait_exit(T);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
    let child_pid = tid_of(&wrap.stdout, "main");
    assert!(gone(child_pid), "the shell's child {child_pid} lives on");
    let wpid = wrap.pid();
    d.wait_stderr(T, |l| {
        l.contains(&format!(
            "pid {wpid}: killed with 1 descendants (kill_on_hang)"
        ))
    });
    group.disarm();

    // Busy and periodic: not hung, their own exit, nothing reported,
    // though watched with the rule's duration.
    for (p, code) in [(&mut busy, 7), (&mut tick, 5)] {
        let st = p.wait_exit(T);
        assert_eq!(st.code(), Some(code), "{:?}", p.stderr);
        let pid = p.pid();
        d.wait_stderr(T, |l| {
            l.contains(&format!("pid {pid} ")) && l.ends_with("exited")
        });
        assert!(
            d.stderr.iter().any(|l| {
                l.contains(&format!("watching pid {pid} ")) && l.contains("hang_after 1s")
            }),
            "{pid} was not watched with hang_after: {:#?}",
            d.stderr
        );
        assert_eq!(
            reports_of(&reports, pid),
            Vec::<String>::new(),
            "{:#?}",
            d.stderr
        );
    }

    // Still one report of the blocked program, which still runs.
    assert_eq!(
        process_hung_reports(&reports, blocked.pid()),
        vec![blocked_id]
    );
    assert!(
        blocked.child.try_wait().unwrap().is_none(),
        "killed without kill_on_hang"
    );
    drop(blocked);

    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}
