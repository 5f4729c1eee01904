//! GIL accounting as the sampler hands it over: per process, per thread.

use serde::{Deserialize, Serialize};

/// What the observer could say about a process's GIL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum GilStatus {
    Located {
        addr: u64,
    },
    /// A free-threaded build.
    NoGil,
    /// A layout not known (another version) or a GIL that did not look right.
    Unknown {
        why: String,
    },
}

/// One thread's cumulative tally since it was first sampled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadTally {
    pub tid: u32,
    /// Samples taken while the thread was a Python thread.
    pub samples: u64,
    /// ...in which it sat in a futex wait on the GIL.
    pub gil_wait: u64,
    /// ...in which it held the GIL (`locked` and `last_holder` its tstate).
    pub held: u64,
    /// ...in which it waited on another futex: (lock, samples). For a
    /// 3.13 parking-lot wait the lock is the parked-on address.
    pub lock_waits: Vec<(u64, u64)>,
    /// schedstat deltas since `sched_from_ns`.
    pub sched_from_ns: u64,
    pub sched_to_ns: u64,
    pub cpu_ns: u64,
    pub runq_ns: u64,
    /// Times it was scheduled in: 0 means it never woke.
    pub slices: u64,
}

/// A CPython process's cumulative tally (the payload of `Event::PyGil`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GilTally {
    /// "3.12.1".
    pub version: String,
    pub status: GilStatus,
    pub samples: u64,
    pub threads: Vec<ThreadTally>,
}
