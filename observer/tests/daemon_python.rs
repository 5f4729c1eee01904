//! `observer daemon` on Python programs: blocked asyncio and uvloop event
//! loops, await cycles, each one report at the right line. Every process
//! has a hard timeout and is killed.

mod common;

use std::{
    collections::BTreeSet,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::*;

/// A daemon whose rule names the comm "obsd-py" (the interpreters run
/// through a link of that name).
fn python_daemon(tmp: &Path, reports: &Path) -> Proc {
    spawn_daemon(&daemon_config(tmp, reports, "", &["obsd-py"]))
}

/// A coroutine that calls time.sleep blocks its event loop: the daemon
/// reads the loop's Python stack while it is blocked and leaves one report
/// per blocked stretch naming the line and the task, under every CPython.
/// The program makes no futex wait and no thread: nothing but the
/// kernel's epoll_wait bookkeeping shows the stall.
#[test]
#[ignore = "needs root and BPF"]
fn daemon_event_loop_blocked() {
    const BLOCKING: &str = "py_async_blocking";
    let src = std::fs::read_to_string(python_fixture(BLOCKING)).unwrap();
    let sleep_line = src
        .lines()
        .position(|l| l == "        time.sleep(SECS)")
        .expect("the fixture's time.sleep line") as u64
        + 1;
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let mut d = python_daemon(tmp.path(), &reports);
    for (i, (label, py)) in pythons().into_iter().enumerate() {
        let link = python_link(&tmp.path().join(format!("py{i}")), Path::new(py), "obsd-py");
        // Two stretches of 2 s each.
        let mut p = Proc::spawn({
            let mut c = Command::new(&link);
            c.arg(python_fixture(BLOCKING)).args(["2", "2"]);
            c
        });
        let pid = p.pid();
        p.wait_stdout(T, |l| l == "ready");
        let st = p.wait_exit(T);
        assert!(st.success(), "{label}: {:?}", p.stderr);
        d.wait_stderr(T, |l| {
            l.contains(&format!("pid {pid} ")) && l.ends_with("exited")
        });
        let ids = reports_of(&reports, pid);
        // One report per stretch: each seen while it lasted, written once.
        assert_eq!(ids.len(), 2, "{label}: {ids:?}\n{:#?}", d.stderr);
        for id in &ids {
            assert!(id.ends_with("-obsd-py-event_loop_blocked"), "{label}: {id}");
            let r = read_json(&reports.join(format!("{id}.json")));
            assert_eq!(r["mode"], "daemon");
            let f = r["findings"].as_array().unwrap();
            assert_eq!(f.len(), 1, "{label}: {f:#?}");
            let f = &f[0];
            assert_eq!(f["kind"], "event_loop_blocked", "{label}: {f:#}");
            assert_eq!(f["tgid"], pid, "{label}");
            let t = &f["threads"][0];
            assert_eq!(t["tid"], pid, "{label}: the main thread runs the loop");
            let top = &t["python_frames"][0];
            assert_eq!(top["function"], "handle", "{label}: {f:#}");
            assert_eq!(top["line"], sleep_line, "{label}: {f:#}");
            assert!(
                top["file"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("{BLOCKING}.py")),
                "{label}: {f:#}"
            );
            let summary = f["summary"].as_str().unwrap();
            assert!(
                summary.contains("task \"slow-handler\" ran at handle"),
                "{label}: {summary}"
            );
            let txt = std::fs::read_to_string(reports.join(format!("{id}.txt"))).unwrap();
            let at = format!("{}:{sleep_line}", python_fixture(BLOCKING).display());
            assert!(txt.contains(&at), "{label}: no {at} in\n{txt}");
            assert!(txt.contains("slow-handler"), "{label}: {txt}");
        }
    }
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// Two tasks take two asyncio.Locks in opposite orders and await each
/// other forever: the loop sits idle in epoll_wait (no futex wait, no
/// event), and the daemon reads its tasks once it has been idle a while.
/// One report, naming both tasks, the lock each waits for and its line.
#[test]
#[ignore = "needs root and BPF"]
fn daemon_await_cycle() {
    const ABBA: &str = "py_async_abba";
    let src = std::fs::read_to_string(python_fixture(ABBA)).unwrap();
    let line_of = |needle: &str| {
        src.lines()
            .position(|l| l == needle)
            .unwrap_or_else(|| panic!("{ABBA}.py has no line {needle:?}")) as u64
            + 1
    };
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let mut d = python_daemon(tmp.path(), &reports);
    for (i, (label, py)) in pythons().into_iter().enumerate() {
        let link = python_link(&tmp.path().join(format!("py{i}")), Path::new(py), "obsd-py");
        let mut p = Proc::spawn({
            let mut c = Command::new(&link);
            c.arg(python_fixture(ABBA));
            c
        });
        let pid = p.pid();
        p.wait_stdout(T, |l| l == "ready");
        let id = wait_report(&reports, pid, REPORT_WITHIN, &mut d);
        assert!(id.ends_with("-obsd-py-deadlock"), "{label}: {id}");
        let r = read_json(&reports.join(format!("{id}.json")));
        let f = r["findings"].as_array().unwrap();
        assert_eq!(f.len(), 1, "{label}: {f:#?}");
        let f = &f[0];
        assert_eq!(f["kind"], "deadlock", "{label}: {f:#}");
        let tasks = f["tasks"].as_array().unwrap();
        let names: BTreeSet<&str> = tasks.iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            BTreeSet::from(["auditor", "poster"]),
            "{label}: {f:#}"
        );
        let txt = std::fs::read_to_string(reports.join(format!("{id}.txt"))).unwrap();
        assert!(
            txt.starts_with("Found one asyncio await cycle (2 tasks)"),
            "{label}: {txt}"
        );
        let file = python_fixture(ABBA).display().to_string();
        for (who, waits, func, needle) in [
            (
                "poster",
                "audit_lock",
                "post",
                "        async with audit_lock:",
            ),
            (
                "auditor",
                "ledger_lock",
                "audit",
                "        async with ledger_lock:",
            ),
        ] {
            let t = tasks.iter().find(|t| t["name"] == who).unwrap();
            assert!(
                t["waits"].as_str().unwrap().contains(waits),
                "{label}: {who} waits for {waits}: {t:#}"
            );
            let at = format!("{func} ({file}:{})", line_of(needle));
            assert!(txt.contains(&at), "{label}: no {at:?} in\n{txt}");
        }
        drop(p);
        d.wait_stderr(T, |l| {
            l.contains(&format!("pid {pid} ")) && l.ends_with("exited")
        });
        // Reported once, however long it stayed idle.
        assert_eq!(reports_of(&reports, pid), vec![id], "{label}");
    }
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// uvloop servers, one per CPython with uvloop, under the daemon: idle, then
/// under load of fast requests, they leave no report; then one request whose
/// handler calls time.sleep in its coroutine leaves exactly one
/// event_loop_blocked report per server, at that line, naming the task.
#[test]
#[ignore = "needs root and BPF"]
fn daemon_uvloop_server() {
    const SERVER: &str = "py_uvloop_server";
    /// Long enough that a 0.5 s long wait and a 1 s stuck thread (sampled
    /// about once a second) would have been reported twice over.
    const WINDOW: Duration = Duration::from_millis(3500);
    let src = std::fs::read_to_string(python_fixture(SERVER)).unwrap();
    let sleep_line = src
        .lines()
        .position(|l| l == "            time.sleep(0.5)")
        .expect("the fixture's time.sleep line") as u64
        + 1;
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    // A name only this test's servers have (other runs on the host use
    // the fixed ones).
    let comm = own_comm("uv");
    let cfg = daemon_config(
        tmp.path(),
        &reports,
        "long_wait = 0.5\nstuck = 1\n",
        &[&comm],
    );
    let mut d = spawn_daemon(&cfg);
    let mut servers = Vec::new();
    for (i, (label, py)) in uvloop_pythons().into_iter().enumerate() {
        let link = venv_link(&tmp.path().join(format!("uv{i}")), &py, &comm);
        let mut p = Proc::spawn({
            let mut c = Command::new(&link);
            c.arg(python_fixture(SERVER));
            c
        });
        p.wait_stdout(T, |l| l == "ready");
        let pid = p.pid();
        d.wait_stderr(T, |l| l.contains(&format!("watching pid {pid} ")));
        let port = port_of(&p.stdout);
        servers.push((label, p, port));
    }
    // Idle, then every server under load at once.
    std::thread::sleep(WINDOW);
    let until = Instant::now() + WINDOW;
    let clients: Vec<_> = servers
        .iter()
        .map(|&(_, _, port)| std::thread::spawn(move || echo_load(port, until)))
        .collect();
    for (c, (label, ..)) in clients.into_iter().zip(&servers) {
        let n = c.join().unwrap();
        assert!(n > 100, "{label}: only {n} requests");
    }
    let ids = report_ids(&reports);
    assert!(
        ids.is_empty(),
        "healthy uvloop servers reported: {ids:#?}\n{}",
        d.stderr.join("\n")
    );
    // One slow request each: one stretch out of the selector each.
    for (_, _, port) in &servers {
        echo_once(*port, "sleep");
    }
    let file = python_fixture(SERVER).display().to_string();
    let n = servers.len();
    for (label, mut p, _) in servers {
        let pid = p.pid();
        let id = wait_report_of(&reports, pid, "event_loop_blocked", T, &mut d);
        p.signal(libc::SIGKILL);
        p.wait_exit(T);
        d.wait_stderr(T, |l| {
            l.contains(&format!("pid {pid} ")) && l.ends_with("exited")
        });
        // Exactly one, seen to the process's end.
        assert_eq!(reports_of(&reports, pid), vec![id.clone()], "{label}");
        let r = read_json(&reports.join(format!("{id}.json")));
        let f = r["findings"].as_array().unwrap();
        assert_eq!(f.len(), 1, "{label}: {f:#?}");
        let f = &f[0];
        assert_eq!(f["kind"], "event_loop_blocked", "{label}: {f:#}");
        let t = &f["threads"][0];
        assert_eq!(t["tid"], pid, "{label}: the main thread runs the loop");
        let top = &t["python_frames"][0];
        assert_eq!(top["function"], "echo", "{label}: {f:#}");
        assert_eq!(top["line"], sleep_line, "{label}: {f:#}");
        assert_eq!(top["file"], file.as_str(), "{label}: {f:#}");
        let summary = f["summary"].as_str().unwrap();
        let want = format!("task \"connection\" ran at echo ({file}:{sleep_line})");
        assert!(summary.ends_with(&want), "{label}: {summary}");
    }
    assert_eq!(report_ids(&reports).len(), n, "one report per server");
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}
