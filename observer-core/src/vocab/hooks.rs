//! Which attach method ("rung") each group of kernel hooks ended on.

use std::fmt;

/// How a group of hooks is attached, cheapest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rung {
    Fentry,
    TpBtf,
    RawTp,
    Tracepoint,
}

impl Rung {
    pub const ALL: [Rung; 4] = [Rung::Fentry, Rung::TpBtf, Rung::RawTp, Rung::Tracepoint];

    pub fn parse(s: &str) -> Option<Rung> {
        Some(match s {
            "fentry" => Rung::Fentry,
            "tp_btf" => Rung::TpBtf,
            "raw_tp" => Rung::RawTp,
            "tracepoint" => Rung::Tracepoint,
            _ => return None,
        })
    }
}

impl fmt::Display for Rung {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rung::Fentry => "fentry",
            Rung::TpBtf => "tp_btf",
            Rung::RawTp => "raw_tp",
            Rung::Tracepoint => "tracepoint",
        })
    }
}

/// Which rung each hook group ended on, and why the cheaper ones failed.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HookUse {
    pub group: &'static str,
    pub rung: Option<Rung>,
    pub skipped: Vec<(Rung, String)>,
}

impl fmt::Display for HookUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rung {
            Some(r) => write!(f, "{}: {r}", self.group)?,
            None => write!(f, "{}: NOT ATTACHED", self.group)?,
        }
        for (r, why) in &self.skipped {
            write!(f, " ({r} failed: {why})")?;
        }
        Ok(())
    }
}

/// Where futex and epoll waits are learnt: at every syscall's entry and
/// exit (exact: sees each call and its return), or when a watched thread
/// goes to sleep inside one and wakes (`sched_switch`: costs per context
/// switch instead of per syscall of every process; misses the return
/// value, and waits that never sleep).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Waits {
    Syscalls,
    Sched,
}

impl fmt::Display for Waits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Waits::Syscalls => "syscalls",
            Waits::Sched => "sched",
        })
    }
}

/// Where waits were learnt from a moment on (`None`: nowhere, the daemon
/// watching no process). A report lists the moves of its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WaitMove {
    /// CLOCK_MONOTONIC, as every `*_ns` of a report.
    pub since_ns: u64,
    pub at: Option<Waits>,
}
