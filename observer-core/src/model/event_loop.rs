//! Event loops: when a thread stayed out of its selector (epoll_wait), and
//! its Python stack while it did.

use serde::{Deserialize, Serialize};

use super::Process;
use crate::{event::Tid, vocab::frames::PyFrame};

/// At most this many episodes are kept per process (the oldest go).
const MAX_STALLS: usize = 1024;

/// One stretch a thread spent outside epoll_wait.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopStall {
    pub tid: Tid,
    pub start_ns: u64,
    /// When it came back to its selector; None while it has not.
    pub end_ns: Option<u64>,
    /// Last time it was seen still out.
    pub seen_ns: u64,
    /// Of that time, runnable but waiting for a CPU (not the loop's doing).
    #[serde(default)]
    pub runq_ns: u64,
    /// Its Python stack (innermost first), read while it was out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub python: Vec<PyFrame>,
    /// The asyncio task running then, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

impl LoopStall {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns
            .unwrap_or(self.seen_ns)
            .saturating_sub(self.start_ns)
    }

    /// The time the loop itself kept the thread (running or sleeping).
    pub fn blocked_ns(&self) -> u64 {
        self.duration_ns().saturating_sub(self.runq_ns)
    }
}

/// The thread's frames show an asyncio event loop (`run_forever`, `_run_once`).
pub fn is_loop_stack(frames: &[PyFrame]) -> bool {
    frames.iter().any(|f| {
        f.function.ends_with("BaseEventLoop._run_once")
            || f.function.ends_with("BaseEventLoop.run_forever")
    })
}

impl Process {
    pub(super) fn loop_blocked(
        &mut self,
        ts_ns: u64,
        tid: Tid,
        start_ns: u64,
        end: Option<u64>,
        runq_ns: u64,
    ) -> &mut LoopStall {
        let at = self
            .loop_stalls
            .iter()
            .rposition(|s| s.tid == tid && s.start_ns == start_ns);
        let i = match at {
            Some(i) => {
                let s = &mut self.loop_stalls[i];
                if s.end_ns.is_none() {
                    s.end_ns = end;
                    s.runq_ns = runq_ns;
                }
                s.seen_ns = s.seen_ns.max(ts_ns);
                i
            }
            None => {
                if self.loop_stalls.len() >= MAX_STALLS {
                    self.loop_stalls.remove(0);
                }
                self.loop_stalls.push(LoopStall {
                    tid,
                    start_ns,
                    end_ns: end,
                    seen_ns: ts_ns,
                    runq_ns,
                    ..Default::default()
                });
                self.loop_stalls.len() - 1
            }
        };
        &mut self.loop_stalls[i]
    }
}
