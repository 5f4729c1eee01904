//! `cargo xtask bench gil`: what GIL accounting costs a CPU-bound Python
//! program. One process per CPython (4 threads of pure Python work, the
//! GIL-bound case) answers rounds of fixed work; rounds alternate between
//! unobserved and observed by `observer attach` (attached before the
//! round, once it has located the GIL, and stopped after). Target:
//! median observed / median unobserved wall time of a round <= 1.05. The
//! observer's own CPU time per second of round is printed beside it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::harness::{self as h, Check, Observer, Programs, Verdicts, Workload, cpu_secs};

const USAGE: &str = "\
usage: cargo xtask bench gil [--rounds N] [--work N] [--quick] [--observer PATH]   (as root: sudo ./x bench gil)

A 4-thread CPU-bound Python program (GIL-bound) under `observer attach` (GIL sampler,
kernel tier) against the same process unobserved, rounds alternating, for each CPython
installed (--quick: the first one). Target: observed / unobserved wall <= 1.05.";

const WORKLOAD: &str = r#"
import sys
import threading
import time


def spin(n):
    x = 0
    for _ in range(n):
        x += 1


print("ready", flush=True)
for line in sys.stdin:
    n = int(line)
    t0 = time.monotonic()
    ts = [threading.Thread(target=spin, args=(n,), name=f"cpu-{i}") for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print(f"{time.monotonic() - t0:.6f}", flush=True)
"#;

pub fn main(args: &[String]) -> Result<()> {
    let mut rounds: usize = 5;
    let mut work: u64 = 5_000_000;
    let Some(c) = h::parse(args, USAGE, false, |a, it| {
        match a {
            "--rounds" => rounds = it.number("--rounds")?,
            "--work" => work = it.number("--work")?,
            _ => return Ok(false),
        }
        Ok(true)
    })?
    else {
        return Ok(());
    };
    h::require_root("bench gil")?;
    if c.quick {
        rounds = rounds.min(3);
    }
    let observer = h::observer_binary(&c)?;
    let dir = h::out_dir("bench-gil")?;
    let script = dir.join("gil_cpu.py");
    std::fs::write(&script, WORKLOAD).context("writing the workload")?;
    println!(
        "{}",
        h::header(
            "GIL accounting overhead on a CPU-bound 4-thread Python program",
            &format!("{rounds} rounds each, {work} iterations per thread per round")
        )
    );
    let mut verdicts = Verdicts::default();
    let mut progs = Programs::default();
    let all = super::python::pythons();
    let mut pythons: Vec<(&str, &str)> = all
        .iter()
        .filter(|(l, p)| {
            let ok = std::path::Path::new(p).exists();
            if !ok {
                println!("  skip CPython {l}: {p} is not installed");
            }
            ok
        })
        .map(|(l, p)| (*l, p.as_str()))
        .collect();
    if c.quick {
        pythons.truncate(1);
    }
    let timeout = Duration::from_secs(600);
    for (label, py) in pythons {
        let mut w = Workload::start(py.as_ref(), &[script.display().to_string()])?;
        let (mut bare, mut seen, mut obs_cpu) = (Vec::new(), Vec::new(), Vec::new());
        // A warm-up round: bytecode caches, thread stacks.
        w.round(work / 4, timeout)?;
        for i in (0..rounds).flat_map(|pass| h::order(pass, 2)) {
            if i == 0 {
                bare.push(w.round(work, timeout)?[0] * 1e3);
                continue;
            }
            let mut o = Observer::attach(&observer, w.pid(), &[], None, &mut progs)?;
            // Measure the steady state: wait until the sampler runs.
            let t0 = Instant::now();
            while !o.log.iter().any(|l| l.contains("GIL at")) {
                if t0.elapsed() > Duration::from_secs(60) {
                    anyhow::bail!(
                        "observer did not locate the GIL of {py}:\n{}",
                        o.log.join("\n")
                    );
                }
                o.poll(Duration::from_millis(100));
            }
            let c0 = cpu_secs(o.pid());
            let ms = w.round(work, timeout)?[0] * 1e3;
            let c1 = cpu_secs(o.pid());
            if let (Some(a), Some(b)) = (c0, c1) {
                obs_cpu.push((b - a) * 1e3 / (ms / 1e3));
            }
            seen.push(ms);
            if let Some(p) = o.stop().problem() {
                println!("  {label}: {p}");
            }
        }
        w.finish()?;
        println!(
            "{}",
            h::ms_table(
                &format!("CPython {label}"),
                22,
                &[("unobserved", &bare), ("observed (attach)", &seen)],
                true
            )
        );
        println!(
            "  observer CPU while observing: median {:.1} ms per second of round",
            h::median(&obs_cpu)
        );
        let ratio = h::median(&seen) / h::median(&bare);
        println!(
            "{}\n",
            verdicts.add(Check::at_most(
                format!("{label}: observed / unobserved wall (median)"),
                ratio,
                1.05,
                h::ratio
            ))
        );
    }
    h::finish(&verdicts, &progs, &observer, false)
}
