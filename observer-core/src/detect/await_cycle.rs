//! asyncio await cycles: tasks that each wait for the next (an awaited task,
//! a gather child, an `asyncio.Lock` another task holds, a future only
//! another task refers to). None of them can ever finish: a deadlock, though
//! no thread is blocked (the loop sleeps in its selector).

use serde::Serialize;

use super::{Ctx, Detail, Detector, Finding, FindingKind};
use crate::{
    vocab::asyncio::{AsyncView, TaskState, TaskView, Why},
    vocab::frames::PyFrame,
    vocab::text::escape,
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
        waits: wait_line(v, t),
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

/// A task as text: its name quoted, else its address.
pub fn task_name(v: &AsyncView, addr: u64) -> String {
    v.task(addr)
        .map(|(_, t)| format!("\"{}\"", escape(&t.name)))
        .unwrap_or_else(|| format!("task {addr:#x}"))
}

/// "waits for task \"b\"", "waits for Lock audit_lock held by task \"a\"".
pub fn wait_line(v: &AsyncView, t: &TaskView) -> Option<String> {
    if let Some(e) = t.waits_for.first() {
        let who = task_name(v, e.task);
        return Some(match &e.why {
            Why::Awaits => format!("awaits task {who}"),
            Why::Gather => {
                let all: Vec<String> = t.waits_for.iter().map(|e| task_name(v, e.task)).collect();
                format!("awaits gather of {}", all.join(", "))
            }
            Why::Lock { lock, name } => format!(
                "waits for asyncio.Lock {} ({lock:#x}), held by task {who}",
                escape(name.as_deref().unwrap_or("?"))
            ),
            Why::Future { fut, name } => format!(
                "awaits future {} ({fut:#x}) that only task {who} refers to",
                escape(name.as_deref().unwrap_or("?"))
            ),
        });
    }
    if let Some(l) = &t.waits_lock {
        return Some(format!(
            "waits for asyncio.Lock {} ({:#x}), holder unknown (taken outside `async with`)",
            escape(l.name.as_deref().unwrap_or("?")),
            l.addr
        ));
    }
    t.label.as_ref().map(|l| format!("waits in {}", escape(l)))
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    match &f.detail {
        Detail::AwaitCycle => {
            let names: Vec<String> = f
                .tasks
                .iter()
                .map(|t| format!("\"{}\"", escape(&t.name)))
                .collect();
            match f.tasks.as_slice() {
                [t] => format!(
                    "asyncio task {} waits for itself: {}",
                    names[0],
                    t.waits.as_deref().map(escape).unwrap_or_default()
                ),
                _ => format!(
                    "{} asyncio tasks await each other in a cycle: {}",
                    f.tasks.len(),
                    names.join(" -> ")
                ),
            }
        }
        _ => String::new(),
    }
}
