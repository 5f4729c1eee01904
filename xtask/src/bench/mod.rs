//! `cargo xtask bench [SUITE] ...`: benchmarks, as ratios against baselines
//! measured in the same run and PASS/MISS lines against targets. A MISS
//! does not fail the command (benchmarks inform; they are not tests);
//! setup errors do.
//!
//! Every suite is one module with a `main(args)`, built on `harness`
//! (arguments, process guards, the observer under test, statistics,
//! verdicts). A new suite is a module and one line in `SUITES`.

mod deep;
mod detect;
mod fleet;
mod fuzz;
mod gil;
mod harness;
mod kernel;
mod python;
mod soak;
mod tax;

use anyhow::Result;

/// A suite: its name, what it measures, its entry point.
type Suite = (&'static str, &'static str, fn(&[String]) -> Result<()>);

/// The first is the default.
const SUITES: &[Suite] = &[
    (
        "kernel",
        "what the kernel hooks cost: mutex loop, futex wake/wait (also: ./x bench [mutex|wake|wait|futex])",
        kernel::main,
    ),
    (
        "detect",
        "deadlock detection latency; observer dump of 1000 threads vs gdb",
        detect::main,
    ),
    (
        "deep",
        "deep-tier lock pairs, 64-thread stacks vs gdb, thread create+join, run startup, philosophers",
        deep::main,
    ),
    (
        "fuzz",
        "bad input for a fixed time (--secs, default 600): recordings, daemon config, BPF records, CPython reader",
        fuzz::main,
    ),
    (
        "fleet",
        "observer daemon on 10 and 100 healthy Python workers: CPU share, RSS growth, reports",
        fleet::main,
    ),
    (
        "tax",
        "what observer daemon costs every syscall on the host: idle, watching another process, watching this one",
        tax::main,
    ),
    (
        "gil",
        "GIL accounting: a CPU-bound 4-thread Python program observed vs unobserved",
        gil::main,
    ),
    (
        "python",
        "observer dump of a hung 50-thread Python process vs py-spy dump, on every CPython (target <= 1.0)",
        python::main,
    ),
    (
        "soak",
        "observer daemon under stress-ng for 10 minutes (RSS, reports, drops, CPU)",
        soak::main,
    ),
    (
        "execs",
        "an exec storm under the daemon: what exec notifications cost",
        soak::exec_storm,
    ),
];

pub fn main(args: &[String]) -> Result<()> {
    let first = args.first().map(String::as_str);
    if first == Some("list") {
        println!(
            "usage: cargo xtask bench [SUITE] [BENCH...] [options]   (SUITE --help for more)\n"
        );
        for (name, about, _) in SUITES {
            println!("  {name:<8} {about}");
        }
        println!(
            "\nEvery suite takes --quick (a subset in a minute or two); all but fuzz --observer PATH."
        );
        return Ok(());
    }
    match SUITES.iter().find(|s| Some(s.0) == first) {
        Some((_, _, run)) => run(&args[1..]),
        None => kernel::main(args),
    }
}
