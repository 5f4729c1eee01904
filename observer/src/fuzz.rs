//! Property tests over bad input: nothing the observer reads from outside
//! may make it panic. The recording parser (and replay of what it
//! accepts), the daemon's config loader and the BPF record decoder here;
//! the CPython reader over adversarial memory in `python/fuzz_tests.rs`.
//!
//! `cargo test` runs a short, deterministic round of each. `./x bench fuzz`
//! runs them for a fixed time instead: `OBSERVER_FUZZ_SECS` seconds each,
//! fresh random seeds every round; a failure prints the smallest input
//! proptest shrank it to.

use std::{fmt::Debug, io::Write as _, time::Instant};

use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};

use crate::{detect::Limits, event::Event};

/// Seconds each property runs for (`OBSERVER_FUZZ_SECS`); 0: one short,
/// deterministic round of `cases`.
fn secs() -> f64 {
    std::env::var("OBSERVER_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

/// Runs `test` over `strategy`: one deterministic round of `cases`, or
/// rounds with fresh seeds for `OBSERVER_FUZZ_SECS`. Panics inside `test`
/// are failures (proptest catches and shrinks them).
pub(crate) fn run<S>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S: Strategy,
    S::Value: Debug,
{
    let secs = secs();
    let t0 = Instant::now();
    let mut total = 0u64;
    let mut round = 0u64;
    loop {
        let config = Config {
            cases,
            failure_persistence: None,
            // Panics are what is looked for: shrink them a while, not forever.
            max_shrink_iters: 2048,
            ..Config::default()
        };
        let rng = if secs > 0.0 {
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed(name, round))
        } else {
            TestRng::deterministic_rng(RngAlgorithm::ChaCha)
        };
        let mut runner = TestRunner::new_with_rng(config, rng);
        let r = runner.run(&strategy, |v| {
            test(v);
            Ok::<(), TestCaseError>(())
        });
        if let Err(e) = r {
            panic!("{name}: {e}");
        }
        total += cases as u64;
        round += 1;
        if t0.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    if secs > 0.0 {
        let _ = writeln!(
            std::io::stderr().lock(),
            "fuzz {name}: {total} cases in {:.0} s, no panic",
            t0.elapsed().as_secs_f64()
        );
    }
}

/// A 32-byte seed from the property's name, the round and the clock.
fn seed(name: &str, round: u64) -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write(name.as_bytes());
        h.write_u64(round);
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

// --- recordings ---------------------------------------------------------

fn recordings() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/recordings");
    [
        "abba",
        "pi_abba",
        "orphan_exit",
        "lost_wakeup",
        "exit_held",
        "stuck_read",
    ]
    .iter()
    .map(|n| std::fs::read_to_string(format!("{dir}/{n}.jsonl")).unwrap())
    .collect()
}

/// Numbers a mutation puts in place of a recorded one.
fn odd_number() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::json!(0)),
        Just(serde_json::json!(1)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(u64::MAX - 1)),
        Just(serde_json::json!(i64::MIN)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(u32::MAX)),
        Just(serde_json::json!(i32::MIN)),
        any::<u64>().prop_map(|v| serde_json::json!(v)),
        any::<u32>().prop_map(|v| serde_json::json!(v)),
        (0u64..64).prop_map(|v| serde_json::json!(v)),
    ]
}

/// Replaces the `n`th number in `v` (counting depth first) with `with`.
fn replace_number(v: &mut serde_json::Value, n: &mut usize, with: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Number(_) => {
            if *n == 0 {
                // Keep the type the field takes where the value fits it.
                *v = with.clone();
                return true;
            }
            *n -= 1;
            false
        }
        serde_json::Value::Array(a) => a.iter_mut().any(|x| replace_number(x, n, with)),
        serde_json::Value::Object(o) => o.values_mut().any(|x| replace_number(x, n, with)),
        _ => false,
    }
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Set the `which`th number of line `line` to `to`.
    Number {
        line: usize,
        which: usize,
        to: serde_json::Value,
    },
    /// Drop a line.
    Drop(usize),
    /// Repeat a line later.
    Copy { from: usize, to: usize },
    /// Swap two lines.
    Swap(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<usize>(), odd_number())
            .prop_map(|(line, which, to)| Mutation::Number { line, which, to }),
        1 => any::<usize>().prop_map(Mutation::Drop),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(from, to)| Mutation::Copy { from, to }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::Swap(a, b)),
    ]
}

/// Parses `text` as a recording; what parses is replayed and reported.
fn parse_and_judge(text: &[u8]) {
    let Ok(rec) = crate::recording::parse_all(text, "fuzz") else {
        return;
    };
    let limits = rec
        .header
        .as_ref()
        .map_or(Limits::new(5_000_000_000), |h| h.limits());
    let check = rec.header.as_ref().map_or(25_000_000, |h| h.check_ns());
    let long_wait_ns = limits.long_wait_ns;
    let (m, findings) = crate::recording::judge(&rec.events, limits, check, &mut ());
    let _ = crate::report::findings::all(&findings);
    let _ = crate::report::text::summary(&m, long_wait_ns);
    let r = crate::report::json::build(&m, "replay", &[], &findings);
    let _ = serde_json::to_string(&r);
}

#[test]
fn recording_parser_and_replay_never_panic_on_mutated_recordings() {
    let recs = recordings();
    let lines: Vec<Vec<serde_json::Value>> = recs
        .iter()
        .map(|r| {
            r.lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        })
        .collect();
    let n = lines.len();
    run(
        "recording (mutated)",
        32,
        (
            0..n,
            prop::collection::vec(mutation(), 1..8),
            any::<Option<usize>>(),
        ),
        |(which, muts, cut)| {
            let mut ls = lines[which].clone();
            for m in muts {
                let len = ls.len();
                if len == 0 {
                    break;
                }
                match m {
                    Mutation::Number { line, which, to } => {
                        let mut k = which % 64;
                        replace_number(&mut ls[line % len], &mut k, &to);
                    }
                    Mutation::Drop(i) => {
                        ls.remove(i % len);
                    }
                    Mutation::Copy { from, to } => {
                        let l = ls[from % len].clone();
                        ls.insert(to % (len + 1), l);
                    }
                    Mutation::Swap(a, b) => ls.swap(a % len, b % len),
                }
            }
            let mut text = String::new();
            for l in &ls {
                text.push_str(&l.to_string());
                text.push('\n');
            }
            let bytes = text.as_bytes();
            let end = cut.map_or(bytes.len(), |c| c % (bytes.len() + 1));
            parse_and_judge(&bytes[..end]);
        },
    );
}

#[test]
fn recording_parser_never_panics_on_bytes() {
    let recs = recordings();
    run(
        "recording (bytes)",
        256,
        (
            0..recs.len(),
            prop::collection::vec((any::<usize>(), any::<u8>()), 0..16),
            prop::collection::vec(any::<u8>(), 0..256),
        ),
        |(which, flips, tail)| {
            let mut b = recs[which].clone().into_bytes();
            for (at, v) in flips {
                let i = at % b.len();
                b[i] = v;
            }
            b.extend(tail);
            parse_and_judge(&b);
        },
    );
}

/// JSON-ish lines from event-like pieces: every event tag with fields of
/// odd types and values.
#[test]
fn recording_parser_never_panics_on_event_shaped_lines() {
    let tags = [
        "start",
        "thread_seen",
        "thread_new",
        "thread_exit",
        "exec",
        "wait_begin",
        "wait_end",
        "wait_done",
        "wait_words",
        "scan",
        "end",
        "symbol",
        "lock_edge",
        "py_state",
        "loop_blocked",
        "loop_seen",
    ];
    let fields = [
        "ts_ns",
        "tgid",
        "tid",
        "start_ns",
        "uaddr",
        "val",
        "op",
        "ret",
        "exit_code",
        "words",
        "wait",
        "cmdline",
        "name",
        "filename",
        "origin",
        "holder",
    ];
    let value = prop_oneof![
        odd_number(),
        Just(serde_json::json!(null)),
        Just(serde_json::json!("")),
        Just(serde_json::json!("zz")),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!(true)),
    ];
    let line = (
        0..tags.len(),
        prop::collection::vec((0..fields.len(), value), 0..10),
    )
        .prop_map(move |(t, fs)| {
            let mut o = serde_json::Map::new();
            o.insert("ev".into(), serde_json::json!(tags[t]));
            for (f, v) in fs {
                o.insert(fields[f].into(), v);
            }
            serde_json::Value::Object(o).to_string()
        });
    run(
        "recording (event-shaped)",
        256,
        prop::collection::vec(line, 0..20),
        |lines| parse_and_judge((lines.join("\n") + "\n").as_bytes()),
    );
}

// --- the daemon's config ------------------------------------------------

fn config_check(text: &str) {
    if let Ok(cfg) = crate::daemon::config::Config::parse(text) {
        let _ = cfg.check_static();
        let _ = cfg.metrics_addr();
        let _ = crate::daemon::select::Selector::new(&cfg);
    }
}

#[test]
fn config_loader_never_panics_on_text() {
    run("config (text)", 256, ".{0,300}", |s: String| {
        config_check(&s)
    });
}

#[test]
fn config_loader_never_panics_on_config_shaped_text() {
    let keys = [
        "report_dir",
        "metrics_listen",
        "max_reports",
        "max_report_age_days",
        "flight_recorder_secs",
        "flight_recorder_events",
        "max_processes",
        "max_threads",
        "max_locks",
        "max_waits",
        "long_wait",
        "stuck",
        "comm",
        "exe",
        "cgroup",
        "user",
        "uprobes",
        "kill_on_deadlock",
        "hang_after",
        "kill_on_hang",
    ];
    let value = prop_oneof![
        Just("\"\"".to_string()),
        Just("\"/\"".to_string()),
        Just("\"[\"".to_string()),
        Just("\"{a,\"".to_string()),
        Just("\"**/***\"".to_string()),
        Just("\"127.0.0.1:99999\"".to_string()),
        Just("\":\"".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("-1".to_string()),
        Just("1e308".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        "\"[^\"\\\\]{0,20}\"",
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
    ];
    let line = prop_oneof![
        3 => (0..keys.len(), value).prop_map(move |(k, v)| format!("{} = {v}", keys[k])),
        1 => Just("[[rule]]".to_string()),
        1 => Just("[[exclude]]".to_string()),
        1 => Just("[rule]".to_string()),
    ];
    run(
        "config (shaped)",
        256,
        prop::collection::vec(line, 0..16),
        |lines| config_check(&lines.join("\n")),
    );
}

// --- BPF records --------------------------------------------------------

#[test]
fn record_decoder_never_panics() {
    // A header whose kind is a real one (or not), then any bytes, at the
    // lengths around the real records' sizes.
    run(
        "decode",
        512,
        (
            0u32..16,
            prop::collection::vec(any::<u8>(), 0..4096),
            any::<bool>(),
        ),
        |(kind, mut b, keep_kind)| {
            if keep_kind && b.len() >= 4 {
                b[..4].copy_from_slice(&kind.to_le_bytes());
            }
            let mut out = Vec::new();
            let _ = crate::probe::decode::decode_into(&b, &mut out);
            // What decodes goes through the model like any event.
            let mut m = crate::model::Model::new();
            for e in &out {
                m.apply(e);
                let _ = serde_json::to_string::<Event>(e);
            }
            let _ = crate::probe::decode::spawn(&b);
        },
    );
}
