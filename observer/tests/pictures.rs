//! Root integration tests of recordings and pictures: scenarios are
//! recorded live (`observer record`), replayed offline to the same
//! findings, and the pictures (Perfetto trace, DOT, HTML) written live and
//! by replay are checked: the trace against the trace-event format rules,
//! the DOT by rendering it with Graphviz, the HTML by loading it in a
//! headless Chromium. Graphviz and Chromium come from `./x` (skip line
//! when missing).

mod common;

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
// Python under --uprobes starts slowly (a uprobe hit per GIL lock call) and
// stopping takes ~0.1-0.2 s per uprobe: as generous as the deep-tier tests.
const T_PY: Duration = Duration::from_secs(180);

fn observer() -> Command {
    Command::new(observer_bin())
}

struct Recorded {
    dir: tempfile::TempDir,
    stdout: Vec<String>,
}

impl Recorded {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `observer record` of ARGV with every picture written live, then
/// `observer replay` of the recording writing them again.
fn record_and_replay(argv: &[String], extra: &[&str], code: i32, timeout: Duration) -> Recorded {
    let dir = tmp();
    let d = dir.path();
    let mut p = Proc::spawn({
        let mut c = observer();
        c.args(["record", "--quiet", "-o"])
            .arg(d.join("rec.jsonl"))
            .args(extra)
            .arg("--report")
            .arg(d.join("live.json"))
            .arg("--perfetto")
            .arg(d.join("live.trace.json"))
            .arg("--dot")
            .arg(d.join("live.dot"))
            .arg("--html")
            .arg(d.join("live.html"))
            .arg("--")
            .args(argv);
        c
    });
    let st = p.wait_exit(timeout);
    assert_eq!(st.code(), Some(code), "{:?}\n{:?}", p.stdout, p.stderr);
    let out = observer()
        .arg("replay")
        .arg(d.join("rec.jsonl"))
        .arg("--report")
        .arg(d.join("replay.json"))
        .arg("--perfetto")
        .arg(d.join("replay.trace.json"))
        .arg("--dot")
        .arg(d.join("replay.dot"))
        .arg("--html")
        .arg(d.join("replay.html"))
        .output()
        .unwrap();
    // A hang in the live report replays to exit 3, like `run --kill-on-deadlock`.
    assert_eq!(
        out.status.code(),
        Some(hang_code(&read_json(&d.join("live.json")))),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_no_programs_left();
    Recorded {
        dir,
        stdout: p.stdout.clone(),
    }
}

/// Replay reports exactly what the live run reported, and draws the same.
fn assert_replay_matches(r: &Recorded) {
    let (live, replay) = (
        read_json(&r.path("live.json")),
        read_json(&r.path("replay.json")),
    );
    assert!(
        !live["findings"].as_array().unwrap().is_empty(),
        "the scenario has findings"
    );
    assert_eq!(live["findings"], replay["findings"]);
    assert_eq!(live["threads"], replay["threads"]);
    for f in ["trace.json", "dot", "html"] {
        let (a, b) = (
            std::fs::read(r.path(&format!("live.{f}"))).unwrap(),
            std::fs::read(r.path(&format!("replay.{f}"))).unwrap(),
        );
        assert!(a == b, "live.{f} and replay.{f} differ");
    }
    // The recording says what it is and the limits it was judged with.
    let rec = std::fs::read_to_string(r.path("rec.jsonl")).unwrap();
    let header: Value = serde_json::from_str(rec.lines().next().unwrap()).unwrap();
    assert_eq!(header["schema"], "observer.recording/1");
    assert_eq!(header["limits"]["scan_interval_ms"], 25);
    println!(
        "recording: {} events, {} bytes, {:.0} bytes/event",
        rec.lines().count() - 1,
        rec.len(),
        rec.len() as f64 / (rec.lines().count() - 1) as f64
    );
}

/// The trace-event format rules: valid JSON, known phases, every track
/// named, complete slices with non-negative durations, each wait slice
/// inside its thread's lifetime slice, each flow start paired with an end.
/// Returns the trace's events.
fn check_trace(path: &Path) -> Vec<Value> {
    let v = read_json(path);
    let evs = v["traceEvents"].as_array().expect("traceEvents").clone();
    assert!(v["otherData"]["origin_monotonic_ns"].as_u64().unwrap() > 0);
    let mut named: HashSet<(u64, u64)> = HashSet::new();
    for e in &evs {
        let ph = e["ph"].as_str().expect("ph");
        assert!(["M", "X", "i", "s", "f"].contains(&ph), "{e}");
        assert!(e["pid"].is_u64() && e["tid"].is_u64(), "{e}");
        if ph == "M" && e["name"] == "thread_name" {
            assert!(!e["args"]["name"].as_str().unwrap().is_empty(), "{e}");
            named.insert((e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap()));
        }
        if ph != "M" {
            assert!(e["ts"].as_f64().unwrap() >= 0.0, "{e}");
        }
        if ph == "X" {
            assert!(e["dur"].as_f64().unwrap() >= 0.0, "{e}");
        }
        if ph == "i" {
            assert!(["t", "p", "g"].contains(&e["s"].as_str().unwrap()), "{e}");
        }
    }
    for e in evs.iter().filter(|e| e["ph"] != "M" && e["tid"] != 0) {
        let k = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
        assert!(named.contains(&k), "track {k:?} has no name: {e}");
    }
    let lifetimes: Vec<&Value> = evs.iter().filter(|e| e["cat"] == "thread").collect();
    for w in evs.iter().filter(|e| e["cat"] == "wait") {
        let (start, end) = (ts(w), ts(w) + w["dur"].as_f64().unwrap());
        assert!(
            lifetimes.iter().any(|l| l["pid"] == w["pid"]
                && l["tid"] == w["tid"]
                && ts(l) <= start
                && ts(l) + l["dur"].as_f64().unwrap() >= end - 0.001),
            "wait slice outside its thread's lifetime: {w}"
        );
    }
    let ends: HashMap<u64, &Value> = evs
        .iter()
        .filter(|e| e["ph"] == "f")
        .map(|e| (e["id"].as_u64().unwrap(), e))
        .collect();
    for s in evs.iter().filter(|e| e["ph"] == "s") {
        assert!(ends.contains_key(&s["id"].as_u64().unwrap()), "{s}");
    }
    evs
}

fn ts(e: &Value) -> f64 {
    e["ts"].as_f64().unwrap()
}

/// Flows as (from tid, to tid).
fn flows(evs: &[Value]) -> BTreeSet<(u64, u64)> {
    let ends: HashMap<u64, u64> = evs
        .iter()
        .filter(|e| e["ph"] == "f")
        .map(|e| (e["id"].as_u64().unwrap(), e["tid"].as_u64().unwrap()))
        .collect();
    evs.iter()
        .filter(|e| e["ph"] == "s")
        .map(|e| (e["tid"].as_u64().unwrap(), ends[&e["id"].as_u64().unwrap()]))
        .collect()
}

fn thread_names(evs: &[Value]) -> HashMap<u64, String> {
    evs.iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "thread_name")
        .map(|e| {
            (
                e["tid"].as_u64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A wait slice of `tid` labelled with `lock` and held by `holder`.
fn assert_wait_slice(evs: &[Value], tid: u32, lock: &str, holder: u32) {
    assert!(
        evs.iter().any(|e| e["cat"] == "wait"
            && e["tid"] == tid
            && e["args"]["lock"].as_str().unwrap().ends_with(lock)
            && e["args"]["holder"]
                .as_str()
                .is_some_and(|h| h.ends_with(&format!("[{holder}]")))),
        "no wait slice of {tid} on {lock} held by {holder}"
    );
}

fn tool(name: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

/// Renders the DOT with Graphviz; returns the SVG (None: not installed).
fn render_dot(path: &Path) -> Option<String> {
    let Some(dot) = tool("dot") else {
        println!("skipping the Graphviz check: `dot` is not installed (./x installs graphviz)");
        return None;
    };
    let out = Command::new(dot).arg("-Tsvg").arg(path).output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "dot -Tsvg {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// Loads a page in headless Chromium: (console messages, DOM) and a
/// screenshot at `shot`. None if Chromium is not installed.
fn chromium(page: &Path, shot: &Path) -> Option<(Vec<String>, String)> {
    let Some(bin) = tool("chromium") else {
        println!("skipping the browser check: `chromium` is not installed (./x installs it)");
        return None;
    };
    let profile = tmp();
    let base = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1000,1300",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let url = format!("file://{}", page.display());
    let mut c = Command::new(&bin);
    base(&mut c);
    c.arg("--dump-dom").arg(&url);
    let mut p = Proc::spawn(c);
    assert!(
        p.wait_exit(Duration::from_secs(60)).success(),
        "{:?}",
        p.stderr
    );
    let dom = p.stdout.join("\n");
    let console: Vec<String> = p
        .stderr
        .iter()
        .filter(|l| l.contains("CONSOLE"))
        .cloned()
        .collect();
    let mut c = Command::new(&bin);
    base(&mut c);
    c.arg(format!("--screenshot={}", shot.display())).arg(&url);
    let mut p = Proc::spawn(c);
    assert!(
        p.wait_exit(Duration::from_secs(60)).success(),
        "{:?}",
        p.stderr
    );
    Some((console, dom))
}

#[test]
#[ignore = "needs root and BPF"]
fn deadlock_recording_replays_to_the_live_findings_and_pictures() {
    let bin = fixture("abba");
    let r = record_and_replay(&[bin.display().to_string()], &["--kill-on-deadlock"], 3, T);
    assert_replay_matches(&r);
    let (alpha, beta) = (tid_of(&r.stdout, "alpha"), tid_of(&r.stdout, "beta"));
    let evs = check_trace(&r.path("replay.trace.json"));
    let names = thread_names(&evs);
    assert_eq!(names[&(alpha as u64)], "alpha");
    assert_eq!(names[&(beta as u64)], "beta");
    assert_wait_slice(&evs, alpha, "lock_b", beta);
    assert_wait_slice(&evs, beta, "lock_a", alpha);
    let fl = flows(&evs);
    assert!(fl.contains(&(beta as u64, alpha as u64)), "{fl:?}");
    assert!(fl.contains(&(alpha as u64, beta as u64)), "{fl:?}");
    assert!(
        evs.iter()
            .any(|e| e["cat"] == "finding" && e["args"]["kind"] == "deadlock"),
        "finding instant"
    );
    // Tracks are ordered by creation: main, alpha, beta.
    let order = |tid: u32| {
        evs.iter()
            .find(|e| e["name"] == "thread_sort_index" && e["tid"] == tid)
            .unwrap()["args"]["sort_index"]
            .as_u64()
            .unwrap()
    };
    assert!(order(alpha) < order(beta));

    let dot = std::fs::read_to_string(r.path("replay.dot")).unwrap();
    for (w, l) in [(alpha, "lock_b"), (beta, "lock_a")] {
        let line = dot
            .lines()
            .find(|x| {
                x.contains(&format!("_t{0}_{w}\" -> ", bin_pid(&evs))) && x.contains("waits for")
            })
            .unwrap_or_else(|| panic!("no edge from {w}: {dot}"));
        assert!(line.contains("color=red"), "{line}");
        assert!(dot.contains(&format!("label=\"mutex {l}\\n")), "{dot}");
    }
    if let Some(svg) = render_dot(&r.path("replay.dot")) {
        assert!(svg.contains("<svg"));
        assert!(svg.contains("alpha ["), "{svg}");
        assert!(svg.contains("mutex lock_b"), "{svg}");
    }

    let html = std::fs::read_to_string(r.path("replay.html")).unwrap();
    for needle in ["<svg", "http://", "https://", "src="] {
        let n = html.matches(needle).count();
        match needle {
            "<svg" => assert_eq!(n, 1, "one cycle drawn"),
            // only the SVG namespace, which is a name, not a fetch
            "http://" => assert_eq!(n, 1, "{html}"),
            _ => assert_eq!(n, 0, "no external asset: {needle}"),
        }
    }
    let shot = r.path("shot.png");
    // A page that logs an error: the console check must see it.
    let control = r.path("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><body><script>console.error('control-error')</script></body></html>",
    )
    .unwrap();
    if let Some((console, _)) = chromium(&control, &r.path("control.png")) {
        assert!(
            console.iter().any(|l| l.contains("control-error")),
            "the console check sees console errors: {console:?}"
        );
        let (console, dom) = chromium(&r.path("replay.html"), &shot).unwrap();
        assert!(console.is_empty(), "console messages: {console:?}");
        assert!(dom.contains(&format!("alpha [{alpha}]</text>")), "{dom}");
        assert!(dom.contains("mutex lock_a</text>"), "{dom}");
        let png = std::fs::read(&shot).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
        let keep = std::env::var_os("OBSERVER_KEEP_SCREENSHOT");
        if let Some(k) = keep {
            std::fs::copy(&shot, k).unwrap();
        }
    }
}

/// The target's pid: the process track of the trace.
fn bin_pid(evs: &[Value]) -> u64 {
    evs.iter().find(|e| e["name"] == "process_name").unwrap()["pid"]
        .as_u64()
        .unwrap()
}

#[test]
#[ignore = "needs root and BPF"]
fn lifecycle_recording_replays_to_the_live_findings() {
    let bin = fixture("unjoined");
    let r = record_and_replay(&[bin.display().to_string()], &[], 0, T);
    assert_replay_matches(&r);
    let live = read_json(&r.path("live.json"));
    assert!(
        live["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "unjoined_thread"),
        "{:#}",
        live["findings"]
    );
    let evs = check_trace(&r.path("replay.trace.json"));
    let names = thread_names(&evs);
    let mut leaky = 0;
    for (name, tid) in fixture_threads(&r.stdout) {
        assert_eq!(names[&(tid as u64)], name);
        for what in ["created", "exit"] {
            assert!(
                evs.iter()
                    .any(|e| e["ph"] == "i" && e["tid"] == tid && e["name"] == what),
                "{what} instant of {name}"
            );
        }
        assert!(
            evs.iter().any(|e| e["ph"] == "i"
                && e["tid"] == tid
                && e["name"] == format!("renamed {name}")),
            "rename instant of {name}"
        );
        leaky += name.starts_with("leaky") as usize;
    }
    assert_eq!(leaky, 5);
    assert!(
        evs.iter()
            .any(|e| e["cat"] == "finding" && e["args"]["kind"] == "unjoined_thread")
    );
    render_dot(&r.path("replay.dot"));
}

#[test]
#[ignore = "needs root and BPF"]
fn python_recording_replays_to_the_live_findings_with_hold_slices() {
    let script = python_fixture("abba").display().to_string();
    let r = record_and_replay(
        &["python3".into(), script],
        &["--uprobes", "--kill-on-deadlock"],
        3,
        T_PY,
    );
    assert_replay_matches(&r);
    let (alpha, beta) = (tid_of(&r.stdout, "alpha"), tid_of(&r.stdout, "beta"));
    let evs = check_trace(&r.path("replay.trace.json"));
    let names = thread_names(&evs);
    // Python's threading names, not the OS name
    assert_eq!(names[&(alpha as u64)], "alpha");
    assert_eq!(names[&(beta as u64)], "beta");
    assert_wait_slice(&evs, alpha, "", beta);
    assert_wait_slice(&evs, beta, "", alpha);
    let fl = flows(&evs);
    assert!(fl.contains(&(beta as u64, alpha as u64)), "{fl:?}");
    // hold slices on lock tracks, by both threads
    let holds: BTreeSet<String> = evs
        .iter()
        .filter(|e| e["cat"] == "hold")
        .map(|e| e["args"]["holder"].as_str().unwrap().to_string())
        .collect();
    assert!(holds.contains(&format!("alpha [{alpha}]")), "{holds:?}");
    assert!(holds.contains(&format!("beta [{beta}]")), "{holds:?}");
    if let Some(svg) = render_dot(&r.path("replay.dot")) {
        assert!(svg.contains(&format!("alpha [{alpha}]")), "{svg}");
        assert!(svg.contains(&format!("beta [{beta}]")), "{svg}");
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn attach_draws_waits_that_began_before_observation() {
    let mut p = Proc::spawn(Command::new(fixture("abba")));
    p.wait_stdout(T, |l| l == "ready");
    // let the last waiter reach the kernel
    std::thread::sleep(Duration::from_millis(100));
    let (alpha, beta) = (tid_of(&p.stdout, "alpha"), tid_of(&p.stdout, "beta"));
    let dir = tmp();
    let (trace, html) = (dir.path().join("t.json"), dir.path().join("p.html"));
    let mut obs = Proc::spawn({
        let mut c = observer();
        c.args(["attach", "--quiet", "--kill-on-deadlock", "-p"])
            .arg(p.pid().to_string())
            .arg("--perfetto")
            .arg(&trace)
            .arg("--html")
            .arg(&html);
        c
    });
    assert_eq!(obs.wait_exit(T).code(), Some(3), "{:?}", obs.stderr);
    assert!(
        p.wait_exit(T).code().is_none(),
        "the hung target was killed"
    );
    assert_no_programs_left();
    let evs = check_trace(&trace);
    assert_wait_slice(&evs, alpha, "lock_b", beta);
    assert_wait_slice(&evs, beta, "lock_a", alpha);
    for tid in [alpha, beta] {
        let w = evs
            .iter()
            .find(|e| e["cat"] == "wait" && e["tid"] == tid)
            .unwrap();
        assert_eq!(w["args"]["began_before_observation"], true, "{w}");
        let life = evs
            .iter()
            .find(|e| e["cat"] == "thread" && e["tid"] == tid)
            .unwrap();
        assert_eq!(life["args"]["existed_before_observation"], true, "{life}");
    }
    assert!(
        evs.iter()
            .any(|e| e["cat"] == "finding" && e["args"]["kind"] == "deadlock")
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains(&format!(">alpha [{alpha}]</text>")), "{page}");
}

#[test]
fn replay_rejects_bad_input_with_one_line() {
    let dir = tmp();
    let p = dir.path().join("bad.jsonl");
    for (text, want) in [
        ("{\"schema\":\"observer.recording/99\"}\n", "not supported"),
        ("{\"ev\":\"nonsense\"}\n", "not an observer event"),
        ("\u{1}garbage\n", "not an observer event"),
    ] {
        std::fs::write(&p, text).unwrap();
        let out = observer().arg("replay").arg(&p).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
    // a header-less recording (older observers) still replays
    std::fs::write(
        &p,
        "{\"ev\":\"start\",\"ts_ns\":5,\"tgid\":7,\"cmdline\":[\"x\"],\"attached\":false}\n",
    )
    .unwrap();
    let out = observer()
        .args(["replay", "--format", "json"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["mode"], "replay");
}
