//! Root integration tests of `attach`'s "held at attach" report: locks a
//! process held before the observer came, named with their holder.

mod common;

use std::{process::Command, time::Duration};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

/// Attaches to fixtures/held_at_attach.c (`extra`: observer options),
/// sends SIGUSR1 once attached, stops the observer (SIGINT) once its live
/// line `until` names a lock, returns (JSON report, text report, the
/// fixture's stdout).
fn attach_held(extra: &[&str], until: &str) -> (Value, String, Vec<String>) {
    let mut fx = Proc::spawn(Command::new(fixture("held_at_attach")));
    fx.wait_stdout(Duration::from_secs(20), |l| l == "ready");
    let dir = tmp();
    let rep = dir.path().join("r.json");
    let mut obs = Proc::spawn({
        let mut c = Command::new(observer_bin());
        c.args(["-v", "attach", "-p"])
            .arg(fx.pid().to_string())
            .arg("--report")
            .arg(&rep)
            .args(extra);
        c
    });
    obs.wait_stderr(T, |l| l.contains("observing pid"));
    fx.signal(libc::SIGUSR1);
    for name in ["late_holder", "late_waiter", "waiter_b"] {
        fx.wait_stdout(Duration::from_secs(20), |l| {
            l.starts_with(&format!("thread {name} "))
        });
    }
    let lines = fx.stdout.clone();
    let lock = format!(" {:#x} was held before attach", addr(&lines, until));
    obs.wait_stderr(T, |l| l.contains(&lock));
    obs.signal(libc::SIGINT);
    let st = obs.wait_exit(T);
    drop(fx);
    assert_eq!(st.code(), Some(0), "{:?}", obs.stderr);
    assert_no_programs_left();
    (read_json(&rep), obs.stdout.join("\n"), lines)
}

/// The report's held-at-attach entry for `lock` (by address).
fn entry(r: &Value, addr: u64) -> Option<&Value> {
    r["held_at_attach"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["lock"] == addr)
}

fn addr(lines: &[String], sym: &str) -> u64 {
    fixture_locks(lines)
        .into_iter()
        .find(|(s, _)| s == sym)
        .unwrap_or_else(|| panic!("fixture printed no lock {sym}: {lines:?}"))
        .1
}

fn assert_held(r: &Value, lines: &[String], sym: &str, waiter: &str, evidence: &str) {
    let holder = tid_of(lines, "holder");
    let waiter = tid_of(lines, waiter);
    let h = entry(r, addr(lines, sym))
        .unwrap_or_else(|| panic!("{sym} not held at attach: {:#}", r["held_at_attach"]));
    assert_eq!(h["symbol"], sym, "{h:#}");
    assert_eq!(h["kind"], "mutex", "{h:#}");
    assert_eq!(h["holder"], holder, "{h:#}");
    assert_eq!(h["holder_name"], "holder", "{h:#}");
    assert_eq!(h["waiters"], serde_json::json!([waiter]), "{h:#}");
    assert_eq!(h["evidence"], evidence, "{h:#}");
}

#[test]
#[ignore = "needs root (BPF)"]
fn attach_names_locks_held_before_it_and_their_holder() {
    let (r, text, lines) = attach_held(&["--uprobes"], "early_b");
    assert_uprobes_attached(&r);
    assert_held(&r, &lines, "early_a", "waiter_a", "waiting_at_attach");
    assert_held(&r, &lines, "early_b", "waiter_b", "no_acquisition_seen");
    // late_c was taken while observed: its holder was seen taking it.
    assert!(
        entry(&r, addr(&lines, "late_c")).is_none(),
        "{:#}",
        r["held_at_attach"]
    );
    assert_eq!(r["held_at_attach"].as_array().unwrap().len(), 2);
    let holder = tid_of(&lines, "holder");
    let want = format!(
        "mutex early_b ({:#x}): held by {holder} \"holder\"; waited for by {} \"waiter_b\" (no acquisition seen since attach)",
        addr(&lines, "early_b"),
        tid_of(&lines, "waiter_b")
    );
    assert!(text.contains("HELD AT ATTACH: 2 lock(s)"), "{text}");
    assert!(text.contains(&want), "want {want:?} in\n{text}");
}

#[test]
#[ignore = "needs root (BPF)"]
fn attach_without_uprobes_names_locks_waited_for_at_attach() {
    let (r, _, lines) = attach_held(&[], "early_a");
    assert_held(&r, &lines, "early_a", "waiter_a", "waiting_at_attach");
    // Without the lock uprobes, a wait that began later cannot tell.
    assert_eq!(
        r["held_at_attach"].as_array().unwrap().len(),
        1,
        "{:#}",
        r["held_at_attach"]
    );
}
