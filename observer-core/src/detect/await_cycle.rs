//! asyncio await cycles: tasks that each wait for the next (an awaited task,
//! a gather child, an `asyncio.Lock` another task holds, a future only
//! another task refers to). None of them can ever finish: a deadlock, though
//! no thread is blocked (the loop sleeps in its selector).

use serde::Serialize;

use super::{Ctx, Detail, Detector, Finding, FindingKind};
use crate::{
    vocab::asyncio::{AsyncView, TaskState},
    vocab::frames::PyFrame,
};

/// A task named by an asyncio finding.
#[derive(Clone, Debug, Serialize)]
pub struct TaskInfo {
    pub name: String,
    pub addr: u64,
    pub coro: String,
    pub state: TaskState,
    /// The thread running its event loop, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_tid: Option<u32>,
    /// What it waits for, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waits: Option<String>,
    /// The asyncio locks it holds, as the program names them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
    /// Where it awaits, innermost first.
    pub frames: Vec<PyFrame>,
}

pub fn task_info(v: &AsyncView, addr: u64) -> Option<TaskInfo> {
    let (l, t) = v.task(addr)?;
    Some(TaskInfo {
        name: t.name.clone(),
        addr,
        coro: t.coro.clone(),
        state: t.state,
        loop_tid: l.tid,
        waits: crate::report::asyncio::wait_line(v, t),
        holds: t
            .holds
            .iter()
            .map(|h| h.name.clone().unwrap_or_else(|| format!("{:#x}", h.addr)))
            .collect(),
        frames: t.chain.iter().rev().cloned().collect(),
    })
}

pub struct AwaitCycle;

impl Detector for AwaitCycle {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let Some(v) = cx.process.python.as_ref().and_then(|p| p.asyncio.as_ref()) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for cycle in v.cycles() {
            let tasks: Vec<TaskInfo> = cycle.iter().filter_map(|e| task_info(v, e.0)).collect();
            let mut tids: Vec<u32> = tasks.iter().filter_map(|t| t.loop_tid).collect();
            tids.dedup();
            let mut key: Vec<String> = cycle.iter().map(|e| format!("{:x}", e.0)).collect();
            key.sort();
            out.push(Finding {
                kind: FindingKind::Deadlock,
                tgid: cx.process.tgid,
                detected_ns: cx.now_ns,
                detail: Detail::AwaitCycle,
                threads: tids.iter().map(|&t| cx.thread(t)).collect(),
                locks: Vec::new(),
                cycle: Vec::new(),
                tasks,
                key: format!("await:{}:{}", cx.process.tgid, key.join(",")),
            });
        }
        out
    }
}
