//! `cargo xtask bench fuzz [--secs N] [--quick]`: the property tests over
//! bad input (observer/src/fuzz.rs, observer/src/python/fuzz_tests.rs)
//! for a fixed time instead of their short `cargo test` round: the
//! recording parser and replay, the daemon config loader, the BPF record
//! decoder, the CPython reader over adversarial memory. Debug build, so
//! arithmetic overflow panics too. Fails on the first panic, printing the
//! smallest input it shrank to.

use std::process::Command;

use anyhow::{Result, bail};

/// The properties (test names under `fuzz` in the observer's unit tests).
const PROPERTIES: usize = 9;
/// Tests run at once (the machine's cores are shared).
const THREADS: usize = 2;

pub fn main(args: &[String]) -> Result<()> {
    let mut secs: f64 = 600.0;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => secs = 60.0,
            "--secs" => {
                secs = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|s: &f64| *s > 0.0)
                    .ok_or_else(|| anyhow::anyhow!("--secs wants a number of seconds"))?
            }
            "--help" | "-h" => {
                println!(
                    "usage: cargo xtask bench fuzz [--secs TOTAL (default 600)] [--quick (60 s)]\n\
                     runs every bad-input property for about TOTAL seconds of wall time in all"
                );
                return Ok(());
            }
            other => bail!("bench fuzz: unknown argument {other:?} (see --help)"),
        }
    }
    // Each property runs `each` seconds; THREADS at a time.
    let each = (secs * THREADS as f64 / PROPERTIES as f64).max(1.0);
    eprintln!(
        "bench fuzz: {PROPERTIES} properties, {each:.0} s each, {THREADS} at a time (~{secs:.0} s)"
    );
    let t0 = std::time::Instant::now();
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(crate::root())
        .args(["test", "-p", "observer", "--bin", "observer", "fuzz", "--"])
        .arg(format!("--test-threads={THREADS}"))
        .env("OBSERVER_FUZZ_SECS", format!("{each}"))
        .status()?;
    eprintln!("bench fuzz: {:.0} s", t0.elapsed().as_secs_f64());
    if !st.success() {
        bail!("bench fuzz: a property failed (above: the input it shrank to)");
    }
    println!(
        "bench fuzz: no panic in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
