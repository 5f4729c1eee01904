//! `observer daemon`: the main scenario as root (a rule on a comm, real
//! deadlocking and clean fixtures, a deadlock older than the daemon,
//! SIGHUP, metrics, SIGTERM leaving nothing loaded), and bad configs.
//! Every process has a hard timeout and is killed.

mod common;

use std::{
    collections::BTreeSet,
    io::Write,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::*;

#[test]
#[ignore = "needs root and BPF"]
fn daemon_main_scenario() {
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let cfg = tmp.path().join("observer.toml");
    let port = free_port();
    write_config(&cfg, &reports, port, "obsd-target");

    // A deadlock older than the daemon.
    let mut pre = start(&copy_as("abba", &tmp.path().join("pre"), "obsd-target"));
    pre.wait_stdout(T, |l| l == "ready");

    let mut d = spawn_daemon(&cfg);
    let id = wait_report(&reports, pre.pid(), REPORT_WITHIN, &mut d);
    let abba_cycle = [("alpha", "beta", "lock_b"), ("beta", "alpha", "lock_a")];
    pre.wait_stdout(T, |l| l == "ready");
    check_pair(&reports, &id, &pre.stdout, &abba_cycle);
    // A process found in /proc at start is named like one seen at exec.
    let pre_exe = tmp.path().join("pre/obsd-target");
    assert_identity(
        &read_json(&reports.join(format!("{id}.json"))),
        pre.pid(),
        &pre_exe,
    );
    drop(pre);

    // Two deadlocking programs and a clean one, all named by the rule, and a
    // deadlocking one that no rule names.
    let t0 = Instant::now();
    let mut abba = start(&copy_as("abba", &tmp.path().join("a"), "obsd-target"));
    let mut ring = start(&copy_as("ring3", &tmp.path().join("b"), "obsd-target"));
    let mut clean = start(&copy_as("contended", &tmp.path().join("c"), "obsd-target"));
    let mut other = start(&copy_as("abba", &tmp.path().join("d"), "obsd-other"));
    let abba_id = wait_report(&reports, abba.pid(), REPORT_WITHIN, &mut d);
    let ring_id = wait_report(&reports, ring.pid(), REPORT_WITHIN, &mut d);
    assert!(t0.elapsed() < REPORT_WITHIN, "{:?}", t0.elapsed());
    abba.wait_stdout(T, |l| l == "ready");
    ring.wait_stdout(T, |l| l == "ready");
    other.wait_stdout(T, |l| l == "ready");
    check_pair(&reports, &abba_id, &abba.stdout, &abba_cycle);
    let abba_exe = tmp.path().join("a/obsd-target");
    let abba_report = read_json(&reports.join(format!("{abba_id}.json")));
    assert_identity(&abba_report, abba.pid(), &abba_exe);
    // Where waits were learnt: at sched_switch while C programs are
    // watched (nowhere before the first, as the daemon started).
    let moves = abba_report["wait_hooks"].as_array().unwrap();
    assert_eq!(moves.last().unwrap()["at"], "sched", "{moves:?}");
    check_pair(
        &reports,
        &ring_id,
        &ring.stdout,
        &[
            ("ring-0", "ring-1", "ring_lock_1"),
            ("ring-1", "ring-2", "ring_lock_2"),
            ("ring-2", "ring-0", "ring_lock_0"),
        ],
    );
    // The clean program runs to its end; the daemon sees it exit.
    let st = clean.wait_exit(T);
    assert!(st.success(), "{:?}", clean.stderr);
    let clean_pid = clean.pid();
    d.wait_stderr(T, |l| {
        l.contains(&format!("pid {clean_pid} ")) && l.ends_with("exited")
    });
    let wrong: Vec<String> = reports_of(&reports, clean_pid)
        .iter()
        .map(|id| std::fs::read_to_string(reports.join(format!("{id}.txt"))).unwrap_or_default())
        .collect();
    assert!(
        wrong.is_empty(),
        "the clean program was reported:\n{}\ndaemon stderr:\n{}",
        wrong.join("\n"),
        d.stderr.join("\n")
    );
    assert!(
        d.stderr
            .iter()
            .any(|l| l.contains(&format!("watching pid {clean_pid} "))),
        "the clean program was watched: {:#?}",
        d.stderr
    );
    // Exactly one pair each: the same finding is reported once.
    assert_eq!(reports_of(&reports, abba.pid()), vec![abba_id.clone()]);
    assert_eq!(reports_of(&reports, ring.pid()), vec![ring_id.clone()]);
    assert_eq!(reports_of(&reports, other.pid()), Vec::<String>::new());
    assert!(
        !d.stderr
            .iter()
            .any(|l| l.contains(&format!("watching pid {} ", other.pid())))
    );

    // The recording replays to the same deadlock, offline.
    let rec = reports.join(format!("{abba_id}.events.jsonl"));
    let out = observer().arg("replay").arg(&rec).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a hang replays to exit 3: {text}"
    );
    assert!(text.contains("Found one deadlock (2 threads)"), "{text}");
    assert!(text.contains("waits for mutex lock_b"), "{text}");

    // Metrics, as Prometheus and as promtool see them.
    let body = http_get(port, None);
    assert_eq!(
        metric(&body, "observer_findings_total{kind=\"deadlock\"}"),
        3.0
    );
    assert_eq!(metric(&body, "observer_reports_written_total"), 3.0);
    assert!(metric(&body, "observer_scan_duration_seconds_count") > 0.0);
    assert!(metric(&body, "observer_resident_memory_bytes") > 0.0);
    // Its own cost: CPU time used, events held for the reports' recordings.
    assert!(metric(&body, "observer_cpu_seconds") > 0.0);
    assert!(metric(&body, "observer_recorded_events") >= 0.0);
    // OBSERVER_REQUIRE_PROMTOOL: the old name of OBSERVER_REQUIRE_ALL, for promtool.
    let required = std::env::var_os("OBSERVER_REQUIRE_PROMTOOL").is_some_and(|v| v != "0");
    if let Some(promtool) = tool_if("promtool", "prometheus", "the promtool check", required) {
        let mut p = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        p.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        let o = p.wait_with_output().unwrap();
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.status.success() && msg.trim().is_empty(),
            "promtool: {msg}"
        );
    }
    let om = http_get(port, Some("application/openmetrics-text; version=1.0.0"));
    assert!(om.ends_with("# EOF\n"), "{om}");

    // `reports list` / `show` read the directory.
    let out = observer()
        .args(["reports", "list", "--dir"])
        .arg(&reports)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with(&ring_id) && l.contains("ring-0")),
        "{list}"
    );
    let out = observer()
        .args(["reports", "show", "--dir"])
        .arg(&reports)
        .arg(&abba_id)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Found one deadlock"));

    // SIGHUP with a changed rule: obsd-other is now watched, obsd-target
    // no longer (the processes still running are dropped).
    write_config(&cfg, &reports, port, "obsd-other");
    d.signal(libc::SIGHUP);
    d.wait_stderr(T, |l| l.contains("config reloaded"));
    d.wait_stderr(T, |l| {
        l.contains(&format!("pid {} ", abba.pid())) && l.contains("no longer selected")
    });
    // Started in this order, so the target's exec is judged before other2's.
    let mut target2 = start(&copy_as("abba", &tmp.path().join("e"), "obsd-target"));
    target2.wait_stdout(T, |l| l == "ready");
    let mut other2 = start(&copy_as("abba", &tmp.path().join("f"), "obsd-other"));
    let id2 = wait_report(&reports, other2.pid(), REPORT_WITHIN, &mut d);
    other2.wait_stdout(T, |l| l == "ready");
    check_pair(&reports, &id2, &other2.stdout, &abba_cycle);
    assert_eq!(reports_of(&reports, target2.pid()), Vec::<String>::new());
    assert!(
        !d.stderr
            .iter()
            .any(|l| l.contains(&format!("watching pid {} ", target2.pid())))
    );
    // The first obsd-other, already running, was picked up at reload.
    wait_report(&reports, other.pid(), REPORT_WITHIN, &mut d);

    // A bad config is refused; the old one stays.
    std::fs::write(&cfg, "[[rule]\ncomm = \"x\"\n").unwrap();
    d.signal(libc::SIGHUP);
    let why = d.wait_stderr(T, |l| {
        l.contains("config reload refused, keeping the old config")
    });
    // It says why, on the same line.
    assert!(
        why.contains("observer.toml: line 1: unclosed array table"),
        "{why}"
    );
    let mut other3 = start(&copy_as("abba", &tmp.path().join("g"), "obsd-other"));
    wait_report(&reports, other3.pid(), REPORT_WITHIN, &mut d);
    other3.wait_stdout(T, |l| l == "ready");

    // SIGTERM: exits 0, nothing left loaded.
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(T);
    assert!(st.success(), "{:#?}", d.stderr);
    for l in &d.stderr {
        assert!(!l.contains('\x1b'), "no colours off a TTY: {l:?}");
    }
    assert_no_programs_left();
}

/// Each bad config: exit 2 and one clear line, for --check-config; and the
/// daemon refuses to start on it (one line, non-zero).
#[test]
fn daemon_bad_configs() {
    let tmp = tmp();
    let dir = tmp.path().join("reports");
    let dir_s = dir.to_str().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let cases: Vec<(&str, String, String)> = vec![
        (
            "unknown key",
            format!(
                "report_dir = {dir_s:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"a\"\nkill_on_deadlok = true\n"
            ),
            "line 5: unknown field `kill_on_deadlok`".into(),
        ),
        (
            "bad glob",
            format!(
                "report_dir = {dir_s:?}\nmetrics_listen = \"\"\n[[rule]]\nexe = \"/opt/{{a,b\"\n"
            ),
            "rule 1: exe: bad glob".into(),
        ),
        (
            "unwritable report dir",
            format!(
                "report_dir = {:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"a\"\n",
                file.join("reports").to_str().unwrap()
            ),
            "report_dir: ".into(),
        ),
        (
            "port in use",
            format!(
                "report_dir = {dir_s:?}\nmetrics_listen = \"127.0.0.1:{busy_port}\"\n[[rule]]\ncomm = \"a\"\n"
            ),
            format!("metrics_listen: cannot listen on 127.0.0.1:{busy_port}"),
        ),
        (
            "invalid TOML",
            format!("report_dir = {dir_s:?}\nmetrics_listen = \"\"\n[[rule]\ncomm = \"a\"\n"),
            "line 3: ".into(),
        ),
        (
            "bad user",
            format!(
                "report_dir = {dir_s:?}\nmetrics_listen = \"\"\n[[rule]]\nuser = \"no-such-user-here\"\n"
            ),
            "rule 1: user: no such user".into(),
        ),
        (
            "hang_after with an unknown unit",
            format!(
                "report_dir = {dir_s:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"a\"\nhang_after = \"10 minutes\"\n"
            ),
            "line 5: unknown unit in '10 minutes'".into(),
        ),
        (
            "hang_after of 0",
            format!(
                "report_dir = {dir_s:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"a\"\nhang_after = 0\n"
            ),
            "rule 1: hang_after: must be more than 0".into(),
        ),
        (
            "hang_after not a duration",
            format!(
                "report_dir = {dir_s:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"a\"\nhang_after = [1]\n"
            ),
            "line 5: invalid type: sequence, expected a duration".into(),
        ),
        (
            "kill_on_hang without hang_after",
            format!(
                "report_dir = {dir_s:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"a\"\nkill_on_hang = true\n"
            ),
            "rule 1: kill_on_hang needs hang_after".into(),
        ),
    ];
    for (what, text, want) in cases {
        let path = tmp.path().join("bad.toml");
        std::fs::write(&path, &text).unwrap();
        let out = observer()
            .args(["daemon", "--check-config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
        let prefix = format!("{}: {want}", path.display());
        assert!(
            err.starts_with(&prefix),
            "{what}: want {prefix:?}, got {err}"
        );
        let out = observer()
            .args(["daemon", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}");
        assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
    }
    assert!(!dir.exists(), "checking creates nothing");
    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "report_dir = {dir_s:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"a\"\nhang_after = \"10m\"\nkill_on_hang = true\n"
        ),
    )
    .unwrap();
    let out = observer()
        .args(["daemon", "--check-config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    drop(busy);
}

/// A watched process's fork (no exec) is watched too: the forked child that
/// inherited a held mutex is reported as an orphaned lock, in the child.
#[test]
#[ignore = "needs root and BPF"]
fn daemon_watches_forks() {
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let cfg = tmp.path().join("observer.toml");
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"obsd-fork\"\nkill_on_deadlock = true\n",
            reports.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut d = spawn_daemon(&cfg);
    let mut p = start(&copy_as("fork_orphan", &tmp.path().join("a"), "obsd-fork"));
    let line = p.wait_stdout(T, |l| l.starts_with("child "));
    let child: u32 = line.strip_prefix("child ").unwrap().parse().unwrap();
    let id = wait_report(&reports, child, REPORT_WITHIN, &mut d);
    let r = read_json(&reports.join(format!("{id}.json")));
    let f = &r["findings"][0];
    assert_eq!(f["kind"], "orphaned_lock", "{f:#}");
    assert_eq!(f["tgid"], child);
    assert_eq!(f["threads"][0]["tid"], child);
    assert_eq!(reports_of(&reports, p.pid()), Vec::<String>::new());
    // kill_on_deadlock: the hung child is killed (a zombie until its parent,
    // which never waits, dies); its parent is not.
    d.wait_stderr(T, |l| {
        l.contains(&format!("pid {child}: killed (kill_on_deadlock)"))
    });
    let end = Instant::now() + T;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')) {
            break;
        }
        assert!(Instant::now() < end, "child {child} still alive: {stat}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(p.child.try_wait().unwrap().is_none(), "the parent lives on");
    drop(p);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// Caps: a process past max_processes is not watched; a process past
/// max_threads has its model rebuilt; both are counted in the metrics and
/// the daemon carries on.
#[test]
#[ignore = "needs root and BPF"]
fn daemon_caps() {
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let cfg = tmp.path().join("observer.toml");
    let port = free_port();
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\nmax_processes = 2\nmax_threads = 16\n\
             [[rule]]\ncomm = \"obsd-cap\"\n",
            reports.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut d = spawn_daemon(&cfg);
    let sleeper = copy_as("sleeper", &tmp.path().join("s"), "obsd-cap");
    // Outgrows max_threads over 2 s (a thread every 50 ms), so scans see it
    // grow: a burst that starts and ends between two scans never counts.
    let pool = copy_as("pool_grow", &tmp.path().join("p"), "obsd-cap");
    let mut a = start(&sleeper);
    let mut b = start(&sleeper);
    a.wait_stdout(T, |l| l == "ready");
    b.wait_stdout(T, |l| l == "ready");
    d.wait_stderr(T, |l| l.contains(&format!("watching pid {} ", b.pid())));
    // Two watched: the third is skipped. It lives until killed: one that
    // exits before the daemon reads its /proc entry is never considered.
    let mut c1 = start(&sleeper);
    c1.wait_stdout(T, |l| l == "ready");
    let skipped = c1.pid();
    d.wait_stderr(T, |l| {
        l.contains(&format!("not watching pid {skipped} ")) && l.contains("max_processes (2)")
    });
    drop(c1);
    // One slot free: the growing pool is watched and outgrows max_threads.
    drop(b);
    d.wait_stderr(T, |l| l.ends_with("exited"));
    let mut c2 = start(&pool);
    let pid = c2.pid();
    d.wait_stderr(T, |l| {
        l.contains(&format!("pid {pid} "))
            && l.contains("max_threads reached: rebuilding its model")
    });
    assert!(c2.wait_exit(T).success());
    let body = http_get(port, None);
    assert_eq!(
        metric(&body, "observer_cap_hits_total{cap=\"processes\"}"),
        1.0
    );
    assert!(metric(&body, "observer_cap_hits_total{cap=\"threads\"}") >= 1.0);
    // Still working: it watches `a` and answers.
    assert!(d.child.try_wait().unwrap().is_none(), "{:#?}", d.stderr);
    drop(a);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// Polls the daemon's metrics until `name` reaches `min` (they are
/// refreshed about once a second); returns the value.
fn wait_metric(port: u16, name: &str, min: f64) -> f64 {
    let end = Instant::now() + T;
    loop {
        let body = http_get(port, None);
        let v = body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        if v >= min {
            return v;
        }
        assert!(Instant::now() < end, "{name} = {v} < {min}:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kernel's exec filter sends only the execs a rule may select, and
/// never drops one it can: a rule's comm is matched against the comm at
/// exec, the executable's file name and argv[0]'s, as userspace does.
#[test]
#[ignore = "needs root and BPF"]
fn daemon_exec_filter() {
    use std::os::unix::process::CommandExt;
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let cfg = tmp.path().join("observer.toml");
    let port = free_port();
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\n\
             [[rule]]\ncomm = \"obsd-exe\"\n[[rule]]\ncomm = \"obsd-argv\"\n",
            reports.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut d = spawn_daemon(&cfg);
    assert!(
        d.stderr
            .iter()
            .any(|l| l.contains("exec notifications from BPF, filtered in the kernel by name (2)")),
        "{:#?}",
        d.stderr
    );
    // Named by nothing a rule has: never sent (and not watched).
    let plain = copy_as("abba", &tmp.path().join("p"), "obsd-plain");
    let mut none = Proc::spawn(Command::new(&plain));
    none.wait_stdout(T, |l| l == "ready");
    // Only the executable's file name matches: run through a symlink, so
    // comm and argv[0] are the link's name.
    let exe = copy_as("abba", &tmp.path().join("e"), "obsd-exe");
    let link = tmp.path().join("e/link-name");
    std::os::unix::fs::symlink(&exe, &link).unwrap();
    let mut by_exe = Proc::spawn(Command::new(&link));
    // Only argv[0]'s file name matches.
    let mut by_argv = Proc::spawn({
        let mut c = Command::new(&plain);
        c.arg0("/somewhere/obsd-argv");
        c
    });
    let abba_cycle = [("alpha", "beta", "lock_b"), ("beta", "alpha", "lock_a")];
    for p in [&mut by_exe, &mut by_argv] {
        let id = wait_report(&reports, p.pid(), T, &mut d);
        p.wait_stdout(T, |l| l == "ready");
        check_pair(&reports, &id, &p.stdout, &abba_cycle);
    }
    assert_eq!(reports_of(&reports, none.pid()), Vec::<String>::new());
    assert!(
        !d.stderr
            .iter()
            .any(|l| l.contains(&format!("watching pid {} ", none.pid()))),
        "{:#?}",
        d.stderr
    );
    // An exec storm of other names stays in the kernel.
    let st = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 300 ]; do /bin/true; i=$((i+1)); done",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    wait_metric(
        port,
        "observer_exec_notes_total{result=\"filtered\"}",
        300.0,
    );
    assert!(wait_metric(port, "observer_exec_notes_total{result=\"sent\"}", 2.0) >= 2.0);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// uprobes = true: several deep-tier processes in a row, each reported;
/// each one's uprobe links go when it exits (not at daemon stop), and
/// SIGTERM leaves nothing loaded.
#[test]
#[ignore = "needs root and BPF"]
fn daemon_uprobes_released_per_process() {
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let cfg = tmp.path().join("observer.toml");
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"obsd-up\"\nuprobes = true\n",
            reports.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut d = spawn_daemon(&cfg);
    let dpid = d.pid();
    assert_eq!(uprobe_multi_links(dpid), 0);
    let abba_cycle = [("alpha", "beta", "lock_b"), ("beta", "alpha", "lock_a")];
    for i in 0..3 {
        let mut p = start(&copy_as(
            "abba",
            &tmp.path().join(format!("u{i}")),
            "obsd-up",
        ));
        let pid = p.pid();
        // With lock uprobes the opposite orders are also a lock-order
        // inversion: a scan between the second lock call and the waits
        // being confirmed reports it before the deadlock.
        let id = wait_report_of(&reports, pid, "deadlock", T, &mut d);
        p.wait_stdout(T, |l| l == "ready");
        let r = read_json(&reports.join(format!("{id}.json")));
        check_cycle(&r, &p.stdout, &abba_cycle);
        for other in reports_of(&reports, pid).into_iter().filter(|o| *o != id) {
            assert!(other.ends_with("-lock_order_inversion"), "{other}");
            let r = read_json(&reports.join(format!("{other}.json")));
            let locks: BTreeSet<&str> = r["findings"][0]["locks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["symbol"].as_str().unwrap_or("?"))
                .collect();
            assert_eq!(locks, BTreeSet::from(["lock_a", "lock_b"]), "{other}");
        }
        // In before any scan could judge it: its report counts them.
        assert_uprobes_attached(&r);
        d.wait_stderr(T, |l| l.contains(&format!("pid {pid}: lock uprobes on")));
        assert!(uprobe_multi_links(dpid) > 0, "{:#?}", d.stderr);
        drop(p);
        d.wait_stderr(T, |l| {
            l.contains(&format!("pid {pid} ")) && l.ends_with("exited")
        });
        let end = Instant::now() + T;
        while uprobe_multi_links(dpid) > 0 {
            assert!(
                Instant::now() < end,
                "pid {pid} exited {T:?} ago and its uprobe links are still held"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// A process the daemon finds before its loader has mapped libc (held
/// right after its exec here; under load the daemon's exec note can simply
/// win the race): the uprobes still go in as it is watched, on the files
/// its executable will map, not whenever libc shows in its maps.
#[test]
#[ignore = "needs root and BPF"]
fn daemon_uprobes_before_the_loader_maps_libc() {
    use std::os::unix::process::CommandExt;
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let cfg = tmp.path().join("observer.toml");
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"obsd-ld\"\nuprobes = true\n",
            reports.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut d = spawn_daemon(&cfg);
    let mut cmd = Command::new(copy_as("abba", &tmp.path().join("ld"), "obsd-ld"));
    // SAFETY: ptrace(PTRACE_TRACEME) is async-signal-safe; the child stops
    // with SIGTRAP after its exec, before the loader runs.
    unsafe {
        cmd.pre_exec(|| {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            Ok(())
        });
    }
    let mut p = Proc::spawn(cmd);
    let pid = p.pid();
    let mut st = 0;
    // SAFETY: waits for our own child's stop.
    let r = unsafe { libc::waitpid(pid as i32, &mut st, libc::WUNTRACED) };
    assert_eq!(r, pid as i32);
    assert!(libc::WIFSTOPPED(st), "{st:#x}");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(!maps.contains("libc.so"), "{maps}");
    d.wait_stderr(T, |l| l.contains(&format!("watching pid {pid} ")));
    // In as it was watched: before it runs a single instruction.
    assert!(
        d.stderr
            .iter()
            .any(|l| l.contains(&format!("pid {pid}: lock uprobes on"))),
        "{:#?}",
        d.stderr
    );
    // SAFETY: detaches our stopped tracee; it runs on.
    unsafe { libc::ptrace(libc::PTRACE_DETACH, pid as i32, 0, 0) };
    let id = wait_report_of(&reports, pid, "deadlock", T, &mut d);
    p.wait_stdout(T, |l| l == "ready");
    let r = read_json(&reports.join(format!("{id}.json")));
    assert_uprobes_attached(&r);
    drop(p);
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    assert_no_programs_left();
}

/// Polls until the daemon holds `sys` syscall hook links and `sched`
/// scheduler hook links, and its metrics say so.
fn wait_wait_hooks(d: &Proc, port: u16, sys: usize, sched: usize) {
    let end = Instant::now() + T;
    loop {
        let links = (syscall_links(d.pid()), sched_links(d.pid()));
        let body = http_get(port, None);
        let m = |name: &str| {
            body.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| "?".into())
        };
        let metrics = (
            m("observer_syscall_hooks_attached "),
            m("observer_sched_hook_attached "),
        );
        let on = |n: usize| if n > 0 { "1" } else { "0" }.to_string();
        if links == (sys, sched) && metrics == (on(sys), on(sched)) {
            return;
        }
        assert!(
            Instant::now() < end,
            "want {sys} syscall and {sched} sched_switch links: {links:?}, metrics {metrics:?}\n{:#?}",
            d.stderr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The hooks that learn waits follow what is watched. Nothing is attached
/// while no process is (no process on the host pays). A C process is
/// watched through the scheduler hook alone (no syscall on the host pays),
/// and its deadlock is found through it, twice. A Python event loop makes
/// the daemon learn waits at the syscall hooks (a loop under load may never
/// sleep in epoll_wait), and its blocked stretch is reported once; when it
/// ends, nothing is attached again.
#[test]
#[ignore = "needs root and BPF"]
fn daemon_wait_hooks_follow_what_is_watched() {
    let tmp = tmp();
    let reports = tmp.path().join("reports");
    let cfg = tmp.path().join("observer.toml");
    let port = free_port();
    std::fs::write(
        &cfg,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\n[[rule]]\ncomm = \"obsd-hooks\"\n[[rule]]\ncomm = \"obsd-hookpy\"\n",
            reports.to_str().unwrap()
        ),
    )
    .unwrap();
    let mut d = spawn_daemon(&cfg);
    wait_wait_hooks(&d, port, 0, 0);
    d.wait_stderr(T, |l| {
        l.contains("waits learnt nowhere: no process is watched")
    });
    let bin = copy_as("abba", &tmp.path().join("a"), "obsd-hooks");
    let abba_cycle = [("alpha", "beta", "lock_b"), ("beta", "alpha", "lock_a")];
    for _ in 0..2 {
        let mut p = Proc::spawn(Command::new(&bin));
        let id = wait_report(&reports, p.pid(), T, &mut d);
        p.wait_stdout(T, |l| l == "ready");
        check_pair(&reports, &id, &p.stdout, &abba_cycle);
        wait_wait_hooks(&d, port, 0, 1);
        let pid = p.pid();
        drop(p);
        wait_wait_hooks(&d, port, 0, 0);
        d.wait_stderr(T, |l| {
            l.contains(&format!("pid {pid} ")) && l.ends_with(": exited")
        });
    }
    // A loop ticking every 10 ms, then blocked 2 s in time.sleep.
    let (label, py) = pythons()[0];
    let link = python_link(&tmp.path().join("py"), Path::new(py), "obsd-hookpy");
    let mut p = Proc::spawn({
        let mut c = Command::new(&link);
        c.arg(python_fixture("py_async_blocking")).args(["2", "1"]);
        c
    });
    let pid = p.pid();
    p.wait_stdout(T, |l| l == "ready");
    wait_wait_hooks(&d, port, 2, 0);
    assert!(p.wait_exit(T).success(), "{label}: {:?}", p.stderr);
    wait_wait_hooks(&d, port, 0, 0);
    d.wait_stderr(T, |l| {
        l.contains(&format!("pid {pid} ")) && l.ends_with("exited")
    });
    let ids = reports_of(&reports, pid);
    assert_eq!(ids.len(), 1, "{label}: {ids:?}\n{:#?}", d.stderr);
    assert!(
        ids[0].ends_with("-obsd-hookpy-event_loop_blocked"),
        "{ids:?}"
    );
    d.signal(libc::SIGTERM);
    assert!(d.wait_exit(T).success(), "{:#?}", d.stderr);
    let count = |what: &str| d.stderr.iter().filter(|l| l.contains(what)).count();
    assert_eq!(
        count("waits learnt at sched_switch: no syscall pays"),
        3,
        "{:#?}",
        d.stderr
    );
    assert_eq!(
        count(&format!("pid {pid} runs an event loop")),
        1,
        "{:#?}",
        d.stderr
    );
    assert_eq!(
        count("waits learnt nowhere: no process is watched"),
        4,
        "{:#?}",
        d.stderr
    );
    assert_no_programs_left();
}
