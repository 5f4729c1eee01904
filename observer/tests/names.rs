//! Root integration tests of lock names: locks are named as the source
//! spells them (fixtures/names.c): one-letter globals (`a` is not the C++
//! type `signed char`), an array element (`table_locks[2]`), a struct member
//! in an array in a struct (`bank.accounts[3].lock`) and a heap struct's
//! member reached through a global pointer (`savings->lock`), in `dump`
//! (text and JSON) and in `run`'s report (text and JSON). Every fixture runs
//! under a hard timeout and is killed.

mod common;

use std::{collections::BTreeSet, process::Command, time::Duration};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
const EXIT_HANG: i32 = 3;

/// (thread, what it waits for, the lock's name) off the fixture's protocol.
const WAITS: &[(&str, &str, &str)] = &[
    ("t-a", "mutex", "table_locks[2]"),
    ("t-t", "mutex", "bank.accounts[3].lock"),
    ("t-k", "mutex", "savings->lock"),
    ("t-h", "mutex", "a"),
    ("t-c", "condvar", "c"),
    ("t-b", "mutex", "b"),
];
/// The ring's locks.
const RING: &[&str] = &[
    "table_locks[2]",
    "bank.accounts[3].lock",
    "savings->lock",
    "a",
];

fn addr(out: &[String], sym: &str) -> u64 {
    fixture_locks(out)
        .into_iter()
        .find(|(n, _)| n == sym)
        .unwrap_or_else(|| panic!("fixture printed no lock {sym}: {out:?}"))
        .1
}

fn start() -> Proc {
    let mut p = Proc::spawn(Command::new(fixture("names")));
    p.wait_stdout(T, |l| l == "ready");
    // let the last waiter reach the kernel
    std::thread::sleep(Duration::from_millis(100));
    p
}

#[test]
#[ignore = "needs root"]
fn dump_names_locks_as_the_source_spells_them() {
    let mut p = start();
    let pid = p.pid().to_string();
    let text = Command::new(observer_bin())
        .args(["dump", "-p", &pid])
        .output()
        .unwrap();
    assert_eq!(text.status.code(), Some(EXIT_HANG));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let json = Command::new(observer_bin())
        .args(["dump", "--format", "json", "-p", &pid])
        .output()
        .unwrap();
    let d: Value = serde_json::from_slice(&json.stdout).unwrap();
    let out = p.stdout.clone();
    p.signal(libc::SIGKILL);
    p.wait_exit(T);
    for (thread, kind, sym) in WAITS {
        let tid = tid_of(&out, thread);
        // a condvar is named by its address, not the futex word inside it
        let lock = addr(&out, sym);
        // THREADS: "  <tid>  t-a  waits for mutex table_locks[2] (0x...)"
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{tid} ")))
            .unwrap_or_else(|| panic!("no THREADS line for {thread}:\n{text}"));
        let want = format!("waits for {kind} {sym} ({lock:#x})");
        assert!(
            line.contains(&want),
            "{thread}: want {want:?} in {line:?}\n{text}"
        );
        let t = d["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == tid)
            .unwrap_or_else(|| panic!("{thread} not in {d:#}"));
        assert_eq!(t["wait"]["symbol"], *sym, "{t:#}");
        assert_eq!(t["wait"]["lock"], lock, "{t:#}");
    }
    // The finding names the ring's locks the same way.
    let f = &d["findings"][0];
    assert_eq!(f["kind"], "deadlock", "{d:#}");
    let got: BTreeSet<&str> = f["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["lock"]["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(got, RING.iter().copied().collect::<BTreeSet<_>>(), "{f:#}");
    // No C++ type for a C name, no symbol+offset where DWARF has the type.
    for l in text.lines().filter(|l| l.contains("waits for")) {
        for bad in [" char ", " signed char ", " bool ", "+0x"] {
            assert!(!l.contains(bad), "{bad:?} in {l:?}\n{text}");
        }
    }
}

#[test]
#[ignore = "needs root and BPF"]
fn run_report_names_locks_as_the_source_spells_them() {
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut p = Proc::spawn({
        let mut c = Command::new(observer_bin());
        c.args(["run", "--quiet", "--kill-on-deadlock", "--report"])
            .arg(&rep)
            .arg("--")
            .arg(fixture("names"));
        c
    });
    let st = p.wait_exit(T);
    assert_eq!(st.code(), Some(EXIT_HANG), "{:?}\n{:?}", p.stdout, p.stderr);
    let out = p.stdout.clone();
    let text = out.join("\n");
    let r = read_json(&rep);
    let f = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "deadlock")
        .unwrap_or_else(|| panic!("no deadlock: {:#}", r["findings"]));
    let mut got = BTreeSet::new();
    for c in f["cycle"].as_array().unwrap() {
        let sym = c["lock"]["symbol"].as_str().unwrap();
        assert_eq!(c["lock"]["addr"], addr(&out, sym), "{c:#}");
        got.insert(sym);
    }
    assert_eq!(got, RING.iter().copied().collect::<BTreeSet<_>>(), "{f:#}");
    // The text report: "thread N "t-a" waits for mutex table_locks[2] (0x...)".
    for (thread, kind, sym) in WAITS.iter().filter(|w| RING.contains(&w.2)) {
        let want = format!(
            "thread {} \"{thread}\" waits for {kind} {sym} ({:#x})",
            tid_of(&out, thread),
            addr(&out, sym)
        );
        assert!(text.contains(&want), "want {want:?} in\n{text}");
    }
    assert_no_programs_left();
}
