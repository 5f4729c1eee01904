//! What every bench suite shares: argument parsing, building, process
//! guards with hard timeouts, the observer under test, other people's BPF
//! programs on a shared machine, statistics, and PASS/MISS verdicts.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    fmt::Write as _,
    io::{BufRead, BufReader, Read, Write},
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

mod daemon;
mod observer;
mod procs;
mod programs;
mod stats;
mod verdicts;

pub use daemon::*;
pub use observer::*;
pub use procs::*;
pub use programs::*;
pub use stats::*;
pub use verdicts::*;

// ---------------------------------------------------------------------------
// Arguments

/// Options every suite takes.
pub struct Common {
    /// A prebuilt observer to use instead of building target/release/observer.
    pub observer: Option<PathBuf>,
    /// A quick subset: fewer rounds and runs.
    pub quick: bool,
    /// The CPU workloads are pinned to (suites that pin).
    pub cpu: Option<usize>,
}

pub const COMMON_OPTIONS: &str =
    "  --quick           a quick subset (fewer rounds and runs; rougher numbers)
  --observer PATH   use this observer binary instead of building target/release/observer
  -h, --help        this text";

pub const PIN_OPTIONS: &str =
    "  --cpu N           pin the workloads to CPU N (default: the last CPU)
  --no-pin          do not pin the workloads";

pub fn cpus() -> usize {
    thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The arguments of one suite, read left to right.
pub struct Args<'a> {
    it: std::slice::Iter<'a, String>,
}

impl<'a> Args<'a> {
    /// The value after `flag`, as a number (`_` separators allowed).
    pub fn number<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T> {
        self.it
            .next()
            .and_then(|s| s.replace('_', "").parse().ok())
            .with_context(|| format!("{flag} needs a number (see --help)"))
    }

    /// The value after `flag`.
    pub fn value(&mut self, flag: &str) -> Result<&'a str> {
        self.it
            .next()
            .map(String::as_str)
            .with_context(|| format!("{flag} needs a value (see --help)"))
    }
}

/// Parses `args`: the common options (and `--cpu`/`--no-pin` if `pin`),
/// the rest through `own`, which returns false for an argument it does not
/// know. None after printing the usage.
pub fn parse(
    args: &[String],
    usage: &str,
    pin: bool,
    mut own: impl FnMut(&str, &mut Args) -> Result<bool>,
) -> Result<Option<Common>> {
    let mut c = Common {
        observer: None,
        quick: false,
        cpu: pin.then(|| cpus() - 1),
    };
    let mut a = Args { it: args.iter() };
    while let Some(x) = a.it.next() {
        match x.as_str() {
            "-h" | "--help" | "help" => {
                println!("{usage}");
                return Ok(None);
            }
            "--quick" => c.quick = true,
            "--observer" => {
                let p = a.value("--observer")?;
                c.observer =
                    Some(std::fs::canonicalize(p).with_context(|| format!("--observer {p}"))?);
            }
            "--cpu" if pin => {
                let n: usize = a.number("--cpu")?;
                if n >= cpus() {
                    bail!("--cpu {n}: this machine has {} CPUs", cpus());
                }
                c.cpu = Some(n);
            }
            "--no-pin" if pin => c.cpu = None,
            _ => {
                if !own(x, &mut a)? {
                    bail!("unknown argument {x:?} (see --help)");
                }
            }
        }
    }
    Ok(Some(c))
}

// ---------------------------------------------------------------------------
// Setting up

pub fn require_root(cmd: &str) -> Result<()> {
    if !crate::is_root() {
        bail!("the benchmarks load BPF programs and read other processes: run `sudo ./x {cmd}`");
    }
    Ok(())
}

/// The observer binary: `--observer PATH`, or a fresh release build.
pub fn observer_binary(c: &Common) -> Result<PathBuf> {
    let p = match &c.observer {
        Some(p) => p.clone(),
        None => {
            crate::build_release().context("building the observer")?;
            crate::root().join("target/release/observer")
        }
    };
    if !p.is_file() {
        bail!("observer binary not found at {}", p.display());
    }
    Ok(p)
}

/// target/NAME, created.
pub fn out_dir(name: &str) -> Result<PathBuf> {
    let out = crate::root().join("target").join(name);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    Ok(out)
}

/// `gcc -O2 -g -pthread -Wall` of SRC (relative to the checkout) into OUT/NAME.
pub fn compile(out: &Path, src: &str, name: &str) -> Result<PathBuf> {
    let bin = out.join(name);
    let st = Command::new("gcc")
        .args(["-O2", "-g", "-pthread", "-Wall", "-o"])
        .arg(&bin)
        .arg(crate::root().join(src))
        .status()
        .context("running gcc")?;
    if !st.success() {
        bail!("gcc could not build {src} ({st})");
    }
    Ok(bin)
}

pub fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// "TITLE\ndate ..., kernel ..., N CPUs (model), load ...\n" and `extra`.
pub fn header(title: &str, extra: &str) -> String {
    let sh = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "{title}\ndate {}, kernel {}, {} CPUs ({model}), load average {}\n{extra}",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        sh("uname", &["-r"]),
        cpus(),
        load.join(" "),
    )
}

/// "pinned to CPU N" or "not pinned".
pub fn pinning(cpu: Option<usize>) -> String {
    cpu.map_or("not pinned".into(), |c| format!("pinned to CPU {c}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!((min(&v), max(&v)), (1.0, 100.0));
        assert!(min(&[]).is_nan());
    }

    #[test]
    fn rotating_order() {
        let o: Vec<usize> = order(1, 4).collect();
        assert_eq!(o, vec![1, 2, 3, 0]);
    }

    #[test]
    fn bootstrap_brackets_the_statistic() {
        let a: Vec<f64> = (0..30).map(|i| 100.0 + f64::from(i % 7)).collect();
        let b: Vec<f64> = (0..30).map(|i| 200.0 + f64::from(i % 5)).collect();
        let (lo, hi) = bootstrap(&[&a, &b], |m| m[1] / m[0]);
        let r = median(&b) / median(&a);
        assert!(lo <= r && r <= hi, "{lo} {r} {hi}");
    }

    #[test]
    fn checks() {
        let c = Check::at_most("x", 120.0, 150.0, ms);
        assert_eq!(c.pass, Some(true));
        assert!(c.line().contains("<= 150.0 ms") && c.line().ends_with("PASS"));
        assert_eq!(Check::at_least("y", 0.5, 0.99, ratio).pass, Some(false));
        assert_eq!(Check::at_most("z", f64::NAN, 1.0, ratio).pass, None);
        assert_eq!(Check::every("w", 19, 20).pass, Some(false));
        let mut v = Verdicts::default();
        v.add(Check::every("w", 20, 20));
        assert!(v.summary().contains("all 1 targets met"));
        v.add(Check::every("w", 0, 0));
        assert!(v.summary().contains("1 of 2 target(s) MISSED"));
    }

    #[test]
    fn live_holders() {
        let me = std::process::id();
        assert!(held_by_live_process(&format!(
            "7: tracing  name btf_sys_enter  tag 67  gpl (held by [{me}, {me}])"
        )));
        assert!(!held_by_live_process(
            "7: tracing  name btf_sys_enter  tag 67  gpl"
        ));
        assert!(!held_by_live_process(
            "7: tracing  name btf_sys_enter  gpl (held by [4194304])"
        ));
    }
}
