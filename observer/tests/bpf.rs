//! Root integration tests: real fixtures observed by the real observer.
//! Ignored by default (they need root and load BPF); `./x test` runs them
//! one at a time with `--ignored --test-threads=1`.

mod common;

use std::{process::Command, time::Duration};

use common::*;

const T: Duration = Duration::from_secs(30);

fn observer() -> Command {
    Command::new(observer_bin())
}

/// Checks the thread table of the `threads` fixture in a report.
fn check_threads_report(r: &serde_json::Value, out: &[String]) {
    let main = tid_of(out, "main");
    let w1 = tid_of(out, "worker-1");
    let w2 = tid_of(out, "worker-2");
    let w3 = tid_of(out, "worker-3");
    let gc = tid_of(out, "grandchild");
    assert_eq!(tid_of(out, "renamed-3"), w3);
    // exactly those threads
    let mut tids: Vec<u64> = r["threads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tid"].as_u64().unwrap())
        .collect();
    tids.sort();
    let mut want = vec![main as u64, w1 as u64, w2 as u64, w3 as u64, gc as u64];
    want.sort();
    assert_eq!(tids, want, "{r:#}");
    for (tid, name) in [
        (w1, "worker-1"),
        (w2, "worker-2"),
        (w3, "renamed-3"),
        (gc, "grandchild"),
        (main, "main"),
    ] {
        let t = report_thread(r, tid);
        assert_eq!(t["name"], name, "{t:#}");
        assert!(
            t["exit_ns"].as_u64().unwrap() > t["start_ns"].as_u64().unwrap(),
            "{t:#}"
        );
        // the process ended with exit(7): every thread carries the status
        if tid == main {
            assert_eq!(t["exit_code"], 7 << 8, "{t:#}");
        }
    }
    assert!(
        report_thread(r, w3)["names"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n == "worker-3")
    );
    for w in [w1, w2, w3] {
        assert_eq!(report_thread(r, w)["parent_tid"], main, "parent of {w}");
    }
    assert_eq!(
        report_thread(r, gc)["parent_tid"],
        w3,
        "grandchild's parent is worker-3"
    );
    assert_eq!(r["processes"][0]["exit_status"], 7 << 8);
}

fn run_threads(hooks: &str) {
    let bin = fixture("threads");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--quiet", "--hooks", hooks, "--report"])
            .arg(&rep)
            .arg("--")
            .arg(&bin);
        c
    });
    let st = p.wait_exit(T);
    assert_eq!(
        st.code(),
        Some(7),
        "observer run exits with the command's status\n{:?}",
        p.stderr
    );
    let r = read_json(&rep);
    check_threads_report(&r, &p.stdout);
    if hooks != "auto" {
        assert!(
            r["hooks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| h["rung"] == hooks),
            "{:#}",
            r["hooks"]
        );
    }
    assert!(
        p.stdout.iter().any(|l| l.starts_with("THREADS: 5 seen")),
        "{:?}",
        p.stdout
    );
    assert_no_programs_left();
}

#[test]
#[ignore = "needs root and BPF"]
fn run_reports_thread_lifecycle() {
    run_threads("auto");
}

#[test]
#[ignore = "needs root and BPF"]
fn raw_tp_rung_works() {
    run_threads("raw_tp");
}

#[test]
#[ignore = "needs root and BPF"]
fn tracepoint_rung_works() {
    run_threads("tracepoint");
}

#[test]
#[ignore = "needs root and BPF"]
fn contended_mutex_is_in_waits() {
    contended(&["--hooks", "syscalls"]);
}

/// Waits learnt at the scheduler (the default here) count the same contention.
#[test]
#[ignore = "needs root and BPF"]
fn contended_mutex_is_in_waits_learnt_at_sched_switch() {
    contended(&["--hooks", "sched"]);
}

/// Where waits are learnt, by the hook links the observer holds: the
/// default (`auto`) and `--hooks sched` attach the scheduler hook and no
/// syscall hook (no syscall of any process pays) on a C program;
/// `--hooks syscalls` the syscall hooks only. `auto` moves to the syscall
/// hooks once the watched process turns out to be Python (an asyncio loop
/// under load may never sleep in epoll_wait), and says so.
#[test]
#[ignore = "needs root and BPF"]
fn wait_hooks_follow_the_choice_and_the_target() {
    let bin = fixture("sleeper");
    let (label, py) = pythons()[0];
    let py_cmd = || {
        let mut c = Command::new(py);
        c.arg(python_fixture("py_idle_service"));
        c
    };
    // (target, --hooks, sched_switch links, syscall hooks attached, "runs Python" said)
    for (python, hooks, sched, sys, said) in [
        (false, None, 1, false, false),
        (false, Some("sched"), 1, false, false),
        (false, Some("syscalls"), 0, true, false),
        (true, None, 0, true, true),
        (true, Some("sched"), 1, false, false),
    ] {
        let mut target = Proc::spawn(if python { py_cmd() } else { Command::new(&bin) });
        let what = format!("python {python} ({label}), --hooks {hooks:?}");
        target.wait_stdout(T, |l| l == "ready");
        let dir = tmp();
        let rep = dir.path().join("r.json");
        let mut obs = Proc::spawn({
            let mut c = observer();
            c.args(["-v", "attach", "-p", &target.pid().to_string()])
                .arg("--report")
                .arg(&rep);
            if let Some(h) = hooks {
                c.args(["--hooks", h]);
            }
            c
        });
        obs.wait_stderr(T, |l| l.contains("observing pid"));
        if said {
            obs.wait_stderr(T, |l| l.contains("runs Python"));
        } else {
            // Python names are read about once a second: give a switch
            // that should not happen the time to happen.
            std::thread::sleep(Duration::from_millis(1500));
        }
        assert_eq!(sched_links(obs.pid()), sched, "{what}: {:?}", obs.stderr);
        assert_eq!(
            syscall_links(obs.pid()) > 0,
            sys,
            "{what}: {:?}",
            obs.stderr
        );
        assert_eq!(
            obs.stderr.iter().any(|l| l.contains("runs Python")),
            said,
            "{what}: {:?}",
            obs.stderr
        );
        if hooks.is_none() || hooks == Some("sched") {
            assert!(
                obs.stderr
                    .iter()
                    .any(|l| l == "observer: hook sched_switch: tp_btf"),
                "{what}: {:?}",
                obs.stderr
            );
        }
        obs.signal(libc::SIGINT);
        assert_eq!(obs.wait_exit(T).code(), Some(0), "{what}: {:?}", obs.stderr);
        // The report says where waits were learnt, move by move.
        let r = read_json(&rep);
        let moves = r["wait_hooks"].as_array().unwrap();
        let at: Vec<&str> = moves.iter().map(|m| m["at"].as_str().unwrap()).collect();
        let want: &[&str] = match (sched, said) {
            (1, _) => &["sched"],
            (_, true) => &["sched", "syscalls"],
            _ => &["syscalls"],
        };
        assert_eq!(at, want, "{what}: {moves:?}");
        assert!(
            moves
                .windows(2)
                .all(|m| m[0]["since_ns"].as_u64() < m[1]["since_ns"].as_u64()),
            "{what}: {moves:?}"
        );
        drop(target);
        assert_no_programs_left();
    }
}

fn contended(extra: &[&str]) {
    let bin = fixture("contended");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--quiet", "--report"])
            .arg(&rep)
            .args(extra)
            .arg("--")
            .arg(&bin);
        c
    });
    assert_eq!(p.wait_exit(T).code(), Some(0));
    let locks = fixture_locks(&p.stdout);
    let hot = locks.iter().find(|(n, _)| n == "hot_lock").unwrap().1;
    let cold = locks.iter().find(|(n, _)| n == "cold_lock").unwrap().1;
    let r = read_json(&rep);
    let waits = r["waits"].as_array().unwrap();
    let w = waits
        .iter()
        .find(|w| w["addr"] == hot)
        .unwrap_or_else(|| panic!("hot_lock {hot:#x} not in {waits:#?}"));
    let count = w["count"].as_u64().unwrap();
    // 4 threads x 2000 iterations with a 50us critical section: most acquisitions contend
    assert!(
        (100..=8000).contains(&count),
        "implausible wait count {count}"
    );
    assert_eq!(w["op"], "WAIT_PRIVATE");
    assert!(w["total_ns"].as_u64().unwrap() >= w["max_ns"].as_u64().unwrap());
    assert!(
        !waits.iter().any(|w| w["addr"] == cold),
        "cold_lock never contends"
    );
    assert_eq!(waits[0]["addr"], hot, "hot_lock has the most total wait");
    assert_eq!(r["drops"]["ringbuf"], 0);
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_sees_existing_and_new_threads() {
    let bin = fixture("sleeper");
    let mut target = Proc::spawn(Command::new(&bin));
    target.wait_stdout(T, |l| l == "ready");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args(["-v", "attach", "-p", &target.pid().to_string(), "--report"])
            .arg(&rep);
        c
    });
    obs.wait_stderr(T, |l| l.contains("observing pid"));
    target.signal(libc::SIGUSR1);
    target.wait_stdout(T, |l| l == "post-done");
    obs.signal(libc::SIGINT);
    assert_eq!(obs.wait_exit(T).code(), Some(0), "{:?}", obs.stderr);
    let r = read_json(&rep);
    let out = &target.stdout;
    let main = tid_of(out, "main");
    for name in ["main", "pre-1", "pre-2"] {
        let t = report_thread(&r, tid_of(out, name));
        assert_eq!(t["name"], name);
        assert_eq!(t["preexisting"], true);
        assert!(t["exit_ns"].is_null());
    }
    let post = report_thread(&r, tid_of(out, "post-1"));
    assert_eq!(post["name"], "post-1");
    assert_eq!(post["preexisting"], false);
    assert_eq!(post["parent_tid"], main);
    assert!(post["exit_ns"].as_u64().is_some());
    assert_eq!(r["processes"][0]["attached"], true);
    // the live line for the new thread was printed
    assert!(obs.stderr.iter().any(
        |l| l.contains("+ thread") && l.contains("post-1") || l.contains("renamed \"post-1\"")
    ));
    drop(target);
    assert_no_programs_left();
}

/// A wait-table entry whose end was never seen (the hook that ends it was
/// off at that moment) must not become a finding: before one is reported,
/// /proc shows each of its threads elsewhere. Entries are put into the
/// running observer's table for every thread of a process in nanosleep and
/// sigwait; without the check, it would be `process_hung`.
#[test]
#[ignore = "needs root and BPF"]
fn a_wait_entry_that_outlived_its_wait_is_no_finding() {
    use observer_ebpf::bindings::obs_wait;
    use std::mem::{offset_of, size_of};
    let mut target = Proc::spawn(Command::new(fixture("sleeper")));
    target.wait_stdout(T, |l| l == "ready");
    let pid = target.pid();
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args([
            "-vv",
            "attach",
            "--long-wait",
            "0.5",
            "-p",
            &pid.to_string(),
        ])
        .arg("--report")
        .arg(&rep);
        c
    });
    obs.wait_stderr(T, |l| l.contains("observing pid"));
    let waits = map_of(obs.pid(), "WAITS");
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    let start = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64 - 5_000_000_000;
    let tids: Vec<u32> = ["main", "pre-1", "pre-2"]
        .iter()
        .map(|n| tid_of(&target.stdout, n))
        .collect();
    for &tid in &tids {
        let mut v = vec![0u8; size_of::<obs_wait>()];
        let mut put = |at: usize, b: &[u8]| v[at..at + b.len()].copy_from_slice(b);
        put(
            offset_of!(obs_wait, uaddr),
            &0x7000_0000_1000u64.to_ne_bytes(),
        );
        put(offset_of!(obs_wait, start_ns), &start.to_ne_bytes());
        put(offset_of!(obs_wait, tgid), &pid.to_ne_bytes());
        put(offset_of!(obs_wait, op), &128u32.to_ne_bytes()); // FUTEX_WAIT_PRIVATE
        put(offset_of!(obs_wait, nr), &1u32.to_ne_bytes());
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>();
        let st = Command::new("bpftool")
            .args(["map", "update", "id", &waits.to_string(), "key", "hex"])
            .args(hex(&tid.to_ne_bytes()))
            .args(["value", "hex"])
            .args(hex(&v))
            .status()
            .expect("bpftool");
        assert!(st.success(), "bpftool map update");
    }
    for tid in &tids {
        let line = format!("thread {tid}: its wait-table entry outlived its wait");
        obs.wait_stderr(T, |l| l.ends_with(&line));
    }
    obs.signal(libc::SIGINT);
    assert_eq!(obs.wait_exit(T).code(), Some(0), "{:?}", obs.stderr);
    let r = read_json(&rep);
    assert_eq!(r["findings"], serde_json::json!([]), "{:#}", r["findings"]);
    drop(target);
    assert_no_programs_left();
}

/// The per-thread wait tables (WAITS, EPOLL) hold a thread's entries while
/// it lives and none after it exits (freed by its exit, which looks them up
/// only for threads marked when they got one), with waits learnt at the
/// scheduler and at the syscall hooks.
#[test]
#[ignore = "needs root and BPF"]
fn a_threads_wait_entries_go_with_it() {
    for hooks in ["sched", "syscalls"] {
        let mut target = Proc::spawn(Command::new(fixture("waiters_exit")));
        target.wait_stdout(T, |l| l == "ready");
        let pid = target.pid();
        let mut obs = Proc::spawn({
            let mut c = observer();
            c.args(["-v", "attach", "--hooks", hooks, "-p", &pid.to_string()]);
            c
        });
        obs.wait_stderr(T, |l| l.contains("observing pid"));
        let (waits, epoll) = (map_of(obs.pid(), "WAITS"), map_of(obs.pid(), "EPOLL"));
        target.signal(libc::SIGUSR1);
        target.wait_stdout(T, |l| l == "waited");
        let main = tid_of(&target.stdout, "main");
        let waiters: Vec<u32> = (1..=4)
            .map(|i| tid_of(&target.stdout, &format!("waiter-{i}")))
            .collect();
        let poller = tid_of(&target.stdout, "poller");
        // each slept in epoll_wait; each sleeps at the barrier now (soon);
        // the poller has an EPOLL entry only
        let end = std::time::Instant::now() + T;
        loop {
            let (w, e) = (map_keys(waits), map_keys(epoll));
            if waiters.iter().all(|t| w.contains(t) && e.contains(t))
                && e.contains(&poller)
                && !w.contains(&poller)
            {
                break;
            }
            assert!(
                std::time::Instant::now() < end,
                "--hooks {hooks}: waiters {waiters:?}, poller {poller}, WAITS {w:?}, EPOLL {e:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        target.signal(libc::SIGUSR2);
        target.wait_stdout(T, |l| l == "done");
        let (w, e) = (map_keys(waits), map_keys(epoll));
        assert!(
            waiters
                .iter()
                .chain([&poller])
                .all(|t| !w.contains(t) && !e.contains(t)),
            "--hooks {hooks}: exited {waiters:?} and {poller}, WAITS {w:?}, EPOLL {e:?}"
        );
        assert!(w.contains(&main), "--hooks {hooks}: main joined: {w:?}");
        obs.signal(libc::SIGINT);
        assert_eq!(obs.wait_exit(T).code(), Some(0), "{:?}", obs.stderr);
        drop(target);
    }
    assert_no_programs_left();
}

/// The (u32) keys of BPF map `id` (bpftool prints them as hex bytes).
fn map_keys(id: u32) -> Vec<u32> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "id", &id.to_string()])
        .output()
        .expect("bpftool");
    assert!(out.status.success(), "bpftool map dump id {id}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool json");
    let byte = |x: &serde_json::Value| {
        u8::from_str_radix(x.as_str().expect("hex").trim_start_matches("0x"), 16).expect("hex")
    };
    v.as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let b: Vec<u8> = e["key"].as_array().expect("key").iter().map(byte).collect();
            u32::from_ne_bytes(b[..4].try_into().expect("a u32 key"))
        })
        .collect()
}

/// The id of the BPF map called `name` that process `pid` holds.
fn map_of(pid: u32, name: &str) -> u32 {
    let ids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let info = std::fs::read_to_string(e.path()).ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("map_id:"))?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    ids.into_iter()
        .find(|id| {
            let out = Command::new("bpftool")
                .args(["map", "show", "id", &id.to_string(), "-j"])
                .output()
                .expect("bpftool");
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .is_ok_and(|m| m["name"] == name)
        })
        .unwrap_or_else(|| panic!("pid {pid} holds no map {name}"))
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_ends_when_target_exits_and_duration_works() {
    let mut target = Proc::spawn({
        let mut c = Command::new("sleep");
        c.arg("1");
        c
    });
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args(["attach", "--quiet", "-p", &target.pid().to_string()]);
        c
    });
    assert_eq!(obs.wait_exit(T).code(), Some(0));
    target.wait_exit(T);
    let target = Proc::spawn({
        let mut c = Command::new("sleep");
        c.arg("30");
        c
    });
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args([
            "attach",
            "--quiet",
            "--duration",
            "0.5",
            "-p",
            &target.pid().to_string(),
        ]);
        c
    });
    assert_eq!(obs.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(
        obs.stdout.iter().any(|l| l.contains("still running")),
        "{:?}",
        obs.stdout
    );
    assert_no_programs_left();
}

#[test]
#[ignore = "needs root and BPF"]
fn record_then_replay_gives_the_same_threads() {
    let bin = fixture("threads");
    let dir = tmp();
    let (rep, rec, rep2) = (
        dir.path().join("r.json"),
        dir.path().join("e.jsonl"),
        dir.path().join("r2.json"),
    );
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["run", "--quiet", "--report"])
            .arg(&rep)
            .arg("--record")
            .arg(&rec)
            .arg("--")
            .arg(&bin);
        c
    });
    assert_eq!(p.wait_exit(T).code(), Some(7));
    let st = observer()
        .arg("replay")
        .arg(&rec)
        .arg("--report")
        .arg(&rep2)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let (a, b) = (read_json(&rep), read_json(&rep2));
    assert_eq!(a["threads"], b["threads"]);
    assert_eq!(a["waits"], b["waits"]);
    check_threads_report(&b, &p.stdout);
}

#[test]
#[ignore = "needs root and BPF"]
fn sigkill_of_the_observer_leaves_nothing_loaded() {
    let target = Proc::spawn({
        let mut c = Command::new("sleep");
        c.arg("30");
        c
    });
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args(["-v", "attach", "-p", &target.pid().to_string()]);
        c
    });
    obs.wait_stderr(T, |l| l.contains("observing pid"));
    obs.signal(libc::SIGKILL);
    obs.wait_exit(T);
    assert_no_programs_left();
}

/// Runs the observer and expects one clear error line and exit code 1.
fn expect_error(args: &[&str], needle: &str) {
    let out = observer().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected for {args:?}: {err}");
    assert!(lines[0].starts_with("observer: error: "), "{err}");
    assert!(lines[0].contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"));
}

#[test]
#[ignore = "needs root and BPF"]
fn bad_input_gives_one_line_errors() {
    expect_error(&["attach", "-p", "999999999"], "no such process");
    expect_error(&["run", "--", "/nonexistent/cmd"], "no such executable");
    expect_error(&["run", "--", "no-such-command-xyz"], "command not found");
    expect_error(
        &["run", "--report", "/proc/nonexistent/r.json", "--", "true"],
        "cannot write report",
    );
    expect_error(&["replay", "/nonexistent.jsonl"], "cannot read");
    // a thread id is not a process
    let target = fixture("sleeper");
    let mut p = Proc::spawn(Command::new(&target));
    p.wait_stdout(T, |l| l == "ready");
    let pre = tid_of(&p.stdout, "pre-1");
    expect_error(
        &["attach", "-p", &pre.to_string()],
        "is a thread of process",
    );
    // not root: drop every capability
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(observer_bin())
        .args(["attach", "-p", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("permission denied") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
#[ignore = "needs root and BPF"]
fn target_names_are_escaped_in_text() {
    // A thread name with a terminal escape sequence must not reach the terminal raw.
    let dir = tmp();
    let script = dir.path().join("evil.py");
    std::fs::write(
        &script,
        "import ctypes, threading\n\
         libc = ctypes.CDLL(None)\n\
         def f():\n    libc.prctl(15, b'ev\\x1b[31mil', 0, 0, 0)\n\
         t = threading.Thread(target=f); t.start(); t.join()\n",
    )
    .unwrap();
    let out = observer()
        .args(["run", "--", "python3"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = [out.stdout, out.stderr].concat();
    assert!(!all.contains(&0x1b), "raw ESC reached the terminal");
    assert!(String::from_utf8_lossy(&all).contains("ev\\x1b[31mil"));
}

#[test]
#[ignore = "needs root and BPF"]
fn sigkill_of_run_takes_the_target_along() {
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args(["-v", "run", "--", "sleep", "30"]);
        c
    });
    obs.wait_stderr(T, |l| l.contains("observing pid"));
    let child: u32 = obs
        .stderr
        .iter()
        .find_map(|l| l.split("observing pid ").nth(1))
        .and_then(|p| p.trim().parse().ok())
        .expect("target pid");
    obs.signal(libc::SIGKILL);
    obs.wait_exit(T);
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{child}/stat")).exists()
        && !std::fs::read_to_string(format!("/proc/{child}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            std::time::Instant::now() < end,
            "the target outlived the observer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_no_programs_left();
}
