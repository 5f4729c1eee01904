//! Exit codes, the same for every subcommand (README "Exit codes"):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done, no hang found |
//! | 1 | error (cannot read, cannot attach, no privileges, bad recording, ...) |
//! | 2 | usage: a bad command line, or a daemon config that does not pass `--check-config` |
//! | 3 | a hang was found: a deadlock, a PI deadlock or an orphaned lock; or the hang watchdog (`--hang-after`) saw no thread run |
//!
//! `run` without `--kill-on-deadlock` or `--kill-on-hang` exits with its command's status
//! instead (128+N when a signal N killed it), as a shell would.

/// Done, and no hang was found (other findings may have been printed).
pub const OK: u8 = 0;
/// Something went wrong; one `observer: error: ...` line says what.
pub const ERROR: u8 = 1;
/// A bad command line (clap's own code) or a bad daemon config.
pub const USAGE: u8 = 2;
/// A hang (deadlock, PI deadlock, orphaned lock) was found.
pub const HANG: u8 = 3;

/// An error that is the user's input, not a failure: exits `USAGE`.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The code of a run that judged `findings`: `HANG` if one is a hang.
pub fn of_findings(findings: &[crate::detect::Finding]) -> u8 {
    if findings.iter().any(|f| f.kind.is_hang()) {
        HANG
    } else {
        OK
    }
}

/// The code an error exits with.
pub fn of_error(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Usage>().is_some() {
        USAGE
    } else {
        ERROR
    }
}
