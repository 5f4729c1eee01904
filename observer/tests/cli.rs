//! The exit codes of every subcommand (README "Exit codes"): 0 no hang
//! found, 1 error, 2 usage, 3 a hang found; `run` without
//! `--kill-on-deadlock` exits with its command's status. The tests without
//! `#[ignore]` need neither root nor BPF.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use common::*;

const T: Duration = Duration::from_secs(30);

fn observer() -> Command {
    Command::new(observer_bin())
}

fn recording(name: &str) -> PathBuf {
    repo().join(format!("observer/tests/data/recordings/{name}.jsonl"))
}

/// Runs the observer with `args` (a hard timeout: it is killed after `T`).
fn run(args: &[&str]) -> Output {
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(args);
        c
    });
    let st = p.wait_exit(T);
    Output {
        status: st,
        stdout: p.stdout.join("\n").into_bytes(),
        stderr: p.stderr.join("\n").into_bytes(),
    }
}

fn code(args: &[&str]) -> (i32, String) {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o.status.code().expect("exited, not killed"), err)
}

fn expect(args: &[&str], want: i32) -> String {
    let (got, err) = code(args);
    assert_eq!(got, want, "observer {args:?}\nstderr: {err}");
    err
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["run"],
        &["run", "--long-wait", "5x", "--", "true"],
        &["run", "--stuck", "99999999999", "--", "true"],
        &["attach"],
        &["attach", "-p", "x"],
        &["attach", "-p", "1", "--duration", "-1"],
        &["dump"],
        &["dump", "-p", "1", "--format", "yaml"],
        &["record", "-o", "/tmp/x"],
        &["replay"],
        &["replay", "f", "--format", "xml"],
        &["daemon"],
        &["reports"],
        &["reports", "show"],
        &["doctor", "extra"],
    ] {
        expect(args, 2);
    }
    for args in [&["--help"][..], &["--version"], &["replay", "--help"]] {
        expect(args, 0);
    }
    let help = run(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Exit status"), "{help}");
}

#[test]
fn replay_exits_3_on_a_hang_and_0_without() {
    for (rec, want) in [
        ("abba", 3),
        ("pi_abba", 3),
        ("orphan_exit", 3),
        ("lost_wakeup", 0),
        ("stuck_read", 0),
        ("order_ab_ba", 0),
    ] {
        let p = recording(rec);
        let p = p.to_str().unwrap();
        expect(&["replay", p], want);
        expect(&["replay", "--format", "json", p], want);
    }
}

#[test]
fn replay_errors_exit_1() {
    let dir = tmp();
    let err = expect(&["replay", "/nonexistent/recording.jsonl"], 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "this is not a recording\n{\"ev\":\"scan\",\"ts_ns\":1}\n",
    )
    .unwrap();
    let err = expect(&["replay", bad.to_str().unwrap()], 1);
    assert!(err.contains(":1:"), "{err}");
    // Unwritable outputs are checked before anything is judged.
    let rec = recording("abba");
    expect(
        &[
            "replay",
            rec.to_str().unwrap(),
            "--report",
            "/nonexistent/dir/r.json",
        ],
        1,
    );
}

/// A recording whose writer died mid-line replays what it has, with one
/// warning; a corrupt record in the middle is an error naming its line.
#[test]
fn a_cut_recording_replays_and_a_corrupt_one_fails() {
    let dir = tmp();
    let full = std::fs::read_to_string(recording("abba")).unwrap();
    let lines: Vec<&str> = full.lines().collect();
    let n = lines.len();
    let last = lines[n - 1];
    let cut = format!("{}\n{}", lines[..n - 1].join("\n"), &last[..last.len() / 2]);
    let p = write(dir.path(), "cut.jsonl", &cut);
    let err = expect(&["replay", &p], 3);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains(&format!("cut.jsonl:{n}:"))
            && warnings[0].contains(&format!("({} bytes dropped", last.len() / 2)),
        "{err}"
    );
    let mut bad: Vec<&str> = lines.clone();
    bad[6] = &lines[6][..lines[6].len() / 2];
    let p = write(dir.path(), "bad.jsonl", &(bad.join("\n") + "\n"));
    let err = expect(&["replay", &p], 1);
    assert!(err.contains("bad.jsonl:7: not an observer event"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn daemon_config_checks_exit_0_or_2() {
    let dir = tmp();
    let reports = dir.path().join("reports");
    let good = write(
        dir.path(),
        "good.toml",
        &format!(
            "report_dir = {:?}\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"x\"\n",
            reports.display()
        ),
    );
    let bad = write(dir.path(), "bad.toml", "[[rule]]\ncommm = \"x\"\n");
    expect(&["daemon", "--check-config", &good], 0);
    expect(&["daemon", "--check-config", &bad], 2);
    expect(&["daemon", "--check-config", "/nonexistent.toml"], 2);
    // The daemon refuses a bad file the same way, before anything else.
    let err = expect(&["daemon", "--config", &bad], 2);
    assert!(err.contains("commm"), "{err}");
}

#[test]
fn reports_exit_0_or_1() {
    let dir = tmp();
    let d = dir.path().to_str().unwrap();
    expect(&["reports", "list", "--dir", d], 0);
    expect(&["reports", "show", "nope", "--dir", d], 1);
    expect(&["reports", "list", "--dir", "/nonexistent/reports"], 1);
}

#[test]
fn missing_processes_exit_1() {
    // dump reads /proc only: no root needed to find the process missing.
    expect(&["dump", "-p", "999999999"], 1);
    // Without root these fail on privileges: also 1.
    expect(&["attach", "-p", "999999999", "--duration", "1"], 1);
    expect(&["run", "--", "/nonexistent/program"], 1);
}

/// A deadlocked fixture, `ready` once both threads sleep in their second lock.
fn hung_abba() -> Proc {
    let mut p = Proc::spawn(Command::new(fixture("abba")));
    p.wait_stdout(T, |l| l == "ready");
    std::thread::sleep(Duration::from_millis(100));
    p
}

#[test]
#[ignore = "needs root and BPF"]
fn live_subcommands_agree_on_exit_codes() {
    expect(&["doctor"], 0);
    // dump: 3 on the hang, 0 on a healthy process.
    let mut hung = hung_abba();
    let abba = fixture("abba");
    let pid = hung.pid().to_string();
    expect(&["dump", "-p", &pid], 3);
    let o = run(&["dump", "--format", "json", "-p", &pid]);
    assert_eq!(o.status.code(), Some(3));
    // Each mode names the process: exe, comm, cmdline, start time.
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_identity(&d, hung.pid(), &abba);
    // attach: 3 on the hang (without killing it), 0 on a healthy process.
    let dir = tmp();
    let rep = dir.path().join("attach.json");
    let rep_s = rep.to_str().unwrap();
    expect(
        &[
            "attach",
            "-q",
            "-p",
            &pid,
            "--duration",
            "1",
            "--report",
            rep_s,
        ],
        3,
    );
    assert!(hung.child.try_wait().unwrap().is_none(), "not killed");
    assert_identity(&read_json(&rep), hung.pid(), &abba);
    expect(
        &[
            "attach",
            "-q",
            "--kill-on-deadlock",
            "-p",
            &pid,
            "--duration",
            "10",
        ],
        3,
    );
    assert!(hung.wait_exit(T).code().is_none(), "killed");
    let mut ok = Proc::spawn(Command::new(fixture("sleeper")));
    ok.wait_stdout(T, |l| l == "ready");
    let pid = ok.pid().to_string();
    expect(&["dump", "-p", &pid], 0);
    expect(&["attach", "-q", "-p", &pid, "--duration", "0.5"], 0);
    drop(ok);
    // run --kill-on-deadlock and record: 3; replay of that recording: 3,
    // and it names the process as the live report did.
    let rec = dir.path().join("abba.jsonl");
    let live = dir.path().join("live.json");
    let replayed = dir.path().join("replay.json");
    let abba_s = abba.to_str().unwrap();
    expect(&["run", "-q", "--kill-on-deadlock", "--", abba_s], 3);
    expect(
        &[
            "record",
            "-q",
            "-o",
            rec.to_str().unwrap(),
            "--report",
            live.to_str().unwrap(),
            "--kill-on-deadlock",
            "--",
            abba_s,
        ],
        3,
    );
    expect(
        &[
            "replay",
            rec.to_str().unwrap(),
            "--report",
            replayed.to_str().unwrap(),
        ],
        3,
    );
    let (live, replayed) = (read_json(&live), read_json(&replayed));
    let p = &live["processes"][0];
    assert_eq!(p["exe"], abba_s, "{p:#}");
    assert_eq!(p["comm"], "main", "abba names its main thread: {p:#}");
    assert!(p["start_time_ns"].as_u64().unwrap() > 0, "{p:#}");
    for k in ["tgid", "exe", "comm", "cmdline", "start_time_ns"] {
        assert_eq!(p[k], replayed["processes"][0][k], "{k}");
    }
    // An observer killed while recording leaves a recording that replays
    // to the hang it had seen.
    let rec = dir.path().join("killed.jsonl");
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args(["record", "-o", rec.to_str().unwrap(), "--", abba_s]);
        c
    });
    obs.wait_stderr(T, |l| l.starts_with("Found one deadlock"));
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", obs.pid())).unwrap();
    obs.signal(libc::SIGKILL);
    obs.wait_exit(T);
    for pid in children.split_whitespace() {
        kill(pid.parse().unwrap());
    }
    expect(&["replay", rec.to_str().unwrap()], 3);
    // run without kill: the command's status, whatever was found.
    expect(&["run", "-q", "--", "sh", "-c", "exit 7"], 7);
    expect(&["run", "-q", "--", "true"], 0);
    expect(&["run", "-q", "--", "sh", "-c", "kill -TERM $$"], 128 + 15);
    expect(&["run", "--hooks", "none", "--", "true"], 2);
    assert_no_programs_left();
}
