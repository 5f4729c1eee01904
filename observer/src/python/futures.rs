//! `concurrent.futures`: a thread blocked in `Future.result()` or
//! `Future.exception()` waits for whoever completes that future. When a
//! ThreadPoolExecutor worker is running its work item (`_WorkItem.run`,
//! whose `future` is that future), that worker is who: the waiter is held
//! up by it, as by a thread it joins. A future nobody runs yet (queued, or
//! completed by other means) names no one.

use std::collections::HashMap;

use super::{
    PyFutureWait, PyView,
    reader::Mem,
    walk::{RawFrame, RawThread, Walk},
};

/// Python frames of `threading` a blocked `result()` sits under
/// (`Condition.wait`), at most.
const MAX_INNER: usize = 3;

fn in_file(f: &RawFrame, tail: &str) -> bool {
    f.frame.file.ends_with(tail)
}

fn self_of(f: &RawFrame) -> Option<u64> {
    f.locals
        .iter()
        .find(|(n, _)| n == "self")
        .map(|x| x.1)
        .filter(|&v| v != 0)
}

/// The future `t` waits for in `Future.result`/`exception` (just above
/// `threading`'s frames), as (frame index, method, future).
fn awaited(t: &RawThread) -> Option<(usize, &'static str, u64)> {
    for (i, f) in t.frames.iter().enumerate().take(MAX_INNER + 1) {
        if in_file(f, "concurrent/futures/_base.py") {
            let m = match f.frame.function.as_str() {
                "Future.result" => "Future.result",
                "Future.exception" => "Future.exception",
                _ => return None,
            };
            return Some((i, m, self_of(f)?));
        }
        if !in_file(f, "/threading.py") {
            return None;
        }
    }
    None
}

/// For each thread blocked (in `waits`) in a Future's result or exception:
/// the future, its name, and the thread running its work item.
pub(super) fn read<M: Mem>(
    w: &mut Walk<M>,
    raw: &[RawThread],
    waits: &HashMap<u32, u64>,
) -> Vec<(u32, PyFutureWait)> {
    let mut out = Vec::new();
    let waiting: Vec<(&RawThread, usize, &'static str, u64)> = raw
        .iter()
        .filter(|t| waits.contains_key(&t.tid))
        .filter_map(|t| awaited(t).map(|(i, m, f)| (t, i, m, f)))
        .collect();
    if waiting.is_empty() {
        return out;
    }
    // Work items running now: future -> the thread running it.
    let mut running: HashMap<u64, u32> = HashMap::new();
    for t in raw {
        for f in &t.frames {
            if f.frame.function != "_WorkItem.run" || !in_file(f, "concurrent/futures/thread.py") {
                continue;
            }
            let Some(item) = self_of(f) else { continue };
            if let Some(fut) = w
                .attrs(item)
                .and_then(|a| a.into_iter().find(|(n, _)| n == "future"))
                .map(|x| x.1)
            {
                running.entry(fut).or_insert(t.tid);
            }
        }
    }
    for (t, i, method, fut) in waiting {
        let runner = running.get(&fut).copied();
        // As the caller spells it (`fut`).
        let name = t
            .frames
            .get(i + 1)
            .and_then(|f| w.local_name(f, fut))
            .filter(|n| n != "self");
        out.push((
            t.tid,
            PyFutureWait {
                addr: fut,
                method: method.to_string(),
                runner,
                name,
            },
        ));
    }
    out
}

/// Puts what `read` found on the view's threads, labelled as library waits
/// are ("Future.result on fut").
pub(super) fn apply(view: &mut PyView, found: Vec<(u32, PyFutureWait)>) {
    for (tid, f) in found {
        let Some(t) = view.threads.iter_mut().find(|t| t.tid == tid) else {
            continue;
        };
        let on = f.name.clone().unwrap_or_else(|| format!("{:#x}", f.addr));
        t.label = Some(format!("{} on {on}", f.method));
        t.future = Some(f);
    }
}
