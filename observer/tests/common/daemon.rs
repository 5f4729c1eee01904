//! Starting `observer daemon` and reading what it leaves: one copy for the
//! daemon, idle and soak tests.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

use super::*;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `observer daemon --config CFG`, once it says it started.
pub fn spawn_daemon(cfg: &Path) -> Proc {
    let mut d = Proc::spawn({
        let mut c = Command::new(observer_bin());
        c.args(["daemon", "--config"]).arg(cfg);
        c
    });
    d.wait_stderr(T, |l| l.contains("observer daemon started"));
    d
}

/// Writes DIR/observer.toml: `extra` keys (thresholds, metrics_listen:
/// none means ""), then one rule per comm. Returns the file.
pub fn daemon_config(dir: &Path, reports: &Path, extra: &str, comms: &[&str]) -> PathBuf {
    let cfg = dir.join("observer.toml");
    let mut s = format!("report_dir = {:?}\n", reports.to_str().unwrap());
    if !extra.contains("metrics_listen") {
        s.push_str("metrics_listen = \"\"\n");
    }
    s.push_str(extra);
    if !extra.is_empty() && !extra.ends_with('\n') {
        s.push('\n');
    }
    for c in comms {
        s.push_str(&format!("[[rule]]\ncomm = \"{c}\"\n"));
    }
    std::fs::write(&cfg, s).unwrap();
    cfg
}

/// Report ids (file names without `.json`) in `dir`, oldest first.
pub fn report_ids(dir: &Path) -> Vec<String> {
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

/// Report ids of process `pid`.
pub fn reports_of(dir: &Path, pid: u32) -> Vec<String> {
    report_ids(dir)
        .into_iter()
        .filter(|id| id.split('-').nth(1) == Some(&pid.to_string()))
        .collect()
}

/// The body of GET /metrics on the daemon's endpoint (asserting 200 OK).
pub fn http_get(port: u16, accept: Option<&str>) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let extra = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.to_owned()
}

/// `observer_idle_threads` of `pid`, if the metrics have it.
pub fn idle_metric(body: &str, pid: u32) -> Option<f64> {
    let name = format!("observer_idle_threads{{pid=\"{pid}\",comm=\"");
    body.lines()
        .find_map(|l| l.strip_prefix(&name)?.split_once("} ").map(|x| x.1))
        .map(|v| v.trim().parse().unwrap())
}

/// A copy of a fixture binary at DIR/NAME, so its comm is NAME.
pub fn copy_as(fixture_name: &str, dir: &Path, name: &str) -> PathBuf {
    let src = fixture(fixture_name);
    std::fs::create_dir_all(dir).unwrap();
    let dst = dir.join(name);
    std::fs::copy(&src, &dst).unwrap();
    dst
}

/// A link DIR/NAME to the interpreter `py`: run through it, its comm is NAME.
pub fn python_link(dir: &Path, py: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let link = dir.join(name);
    std::os::unix::fs::symlink(py, &link).unwrap();
    link
}

/// The venv's interpreter `venv/bin/python` run as DIR/bin/NAME, so its comm
/// is NAME: a venv finds its packages from its interpreter's path
/// (`pyvenv.cfg` one level up), so DIR gets the venv's `pyvenv.cfg` and
/// `lib`.
pub fn venv_link(dir: &Path, venv_python: &Path, name: &str) -> PathBuf {
    let venv = venv_python.parent().and_then(Path::parent).unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(venv.join("pyvenv.cfg"), dir.join("pyvenv.cfg")).unwrap();
    std::os::unix::fs::symlink(venv.join("lib"), dir.join("lib")).unwrap();
    python_link(&dir.join("bin"), venv_python, name)
}

/// A comm for a daemon rule that only this test process's programs have
/// ("ob4242-py"; at most 15 bytes with a tag of up to 5): a daemon selects
/// by comm host-wide, and other test runs on the host use the fixed names.
pub fn own_comm(tag: &str) -> String {
    let c = format!("ob{}-{tag}", std::process::id());
    assert!(c.len() <= 15, "{c}: longer than a comm");
    c
}

// What the daemon tests share: reports, cycles, metrics.

pub const T: Duration = Duration::from_secs(30);
/// The promise: a report within 5 s of the hang.
pub const REPORT_WITHIN: Duration = Duration::from_secs(5);

pub fn observer() -> Command {
    Command::new(observer_bin())
}

pub fn start(bin: &Path) -> Proc {
    Proc::spawn(Command::new(bin))
}

pub fn write_config(path: &Path, reports: &Path, port: u16, comm: &str) {
    std::fs::write(
        path,
        format!(
            "report_dir = {:?}\nmetrics_listen = \"127.0.0.1:{port}\"\nflight_recorder_secs = 30\n\
             [[rule]]\ncomm = \"{comm}\"\n[[exclude]]\nuser = \"65534\"\n",
            reports.to_str().unwrap()
        ),
    )
    .unwrap();
}

/// Waits (hard timeout) until `pid` has a report; returns its id.
pub fn wait_report(dir: &Path, pid: u32, within: Duration, daemon: &mut Proc) -> String {
    let end = Instant::now() + within;
    loop {
        if let Some(id) = reports_of(dir, pid).into_iter().next() {
            return id;
        }
        if Instant::now() > end {
            let _ = daemon.child.kill();
            let _ = daemon.wait_exit(T);
            panic!(
                "no report for pid {pid} within {within:?}\ndaemon stderr:\n{}",
                daemon.stderr.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (hard timeout) until `pid` has a report of `kind`; returns its id.
pub fn wait_report_of(
    dir: &Path,
    pid: u32,
    kind: &str,
    within: Duration,
    daemon: &mut Proc,
) -> String {
    let end = Instant::now() + within;
    let suffix = format!("-{kind}");
    loop {
        if let Some(id) = reports_of(dir, pid)
            .into_iter()
            .find(|id| id.ends_with(&suffix))
        {
            return id;
        }
        if Instant::now() > end {
            let _ = daemon.child.kill();
            let _ = daemon.wait_exit(T);
            panic!(
                "no {kind} report for pid {pid} within {within:?} (reports: {:?})\ndaemon stderr:\n{}",
                reports_of(dir, pid),
                daemon.stderr.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The cycle of the (only) finding of a report as (waiter, holder, lock
/// symbol), checked against the fixture's own names.
pub fn check_cycle(r: &Value, out: &[String], want: &[(&str, &str, &str)]) {
    assert_eq!(r["schema"], "observer.report/1");
    assert_eq!(r["mode"], "daemon");
    let f = r["findings"].as_array().unwrap();
    assert_eq!(f.len(), 1, "one finding per report: {f:#?}");
    assert_eq!(f[0]["kind"], "deadlock", "{:#}", f[0]);
    let got: BTreeSet<(u32, u32, String)> = f[0]["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["waiter_tid"].as_u64().unwrap() as u32,
                c["holder_tid"].as_u64().unwrap() as u32,
                c["lock"]["symbol"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(u32, u32, String)> = want
        .iter()
        .map(|(w, h, l)| (tid_of(out, w), tid_of(out, h), l.to_string()))
        .collect();
    assert_eq!(got, want, "{:#}", f[0]);
    // The process's threads and context come with it.
    assert!(!r["threads"].as_array().unwrap().is_empty());
    assert_eq!(r["processes"].as_array().unwrap().len(), 1);
}

pub fn check_pair(dir: &Path, id: &str, out: &[String], want: &[(&str, &str, &str)]) {
    use std::os::unix::fs::PermissionsExt;
    let r = read_json(&dir.join(format!("{id}.json")));
    check_cycle(&r, out, want);
    let txt = std::fs::read_to_string(dir.join(format!("{id}.txt"))).unwrap();
    assert!(txt.starts_with("Found one deadlock"), "{txt}");
    for (w, _, l) in want {
        assert!(
            txt.contains(&format!("\"{w}\" waits for mutex {l}")),
            "{txt}"
        );
    }
    for ext in ["json", "txt", "events.jsonl"] {
        let m = std::fs::metadata(dir.join(format!("{id}.{ext}"))).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o640, "{id}.{ext}");
    }
}

pub fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{body}"))
        .trim()
        .parse()
        .unwrap()
}
