//! One line per thread lifecycle event and long wait, printed as they happen.

use super::{dur, escape};
use crate::{
    event::{Event, futex},
    model::{Model, describe_exit},
};

/// The line for `ev`, rendered with the model as it is after applying it.
pub fn line(model: &Model, ev: &Event) -> Option<String> {
    let name = |tgid: u32, tid: u32| escape(model.thread_name(tgid, tid).unwrap_or("?"));
    let rel = |ts: u64| {
        let t0 = model.first_ns.unwrap_or(ts);
        format!("{:>9.3}s", ts.saturating_sub(t0) as f64 / 1e9)
    };
    Some(match ev {
        Event::ThreadNew {
            ts_ns,
            tgid,
            creator,
            tid,
            child_tgid,
            ..
        } if tgid == child_tgid => format!(
            "{} + thread {tid} \"{}\" created by {creator} \"{}\"",
            rel(*ts_ns),
            name(*child_tgid, *tid),
            name(*tgid, *creator)
        ),
        Event::ThreadNew {
            ts_ns,
            creator,
            child_tgid,
            tgid,
            ..
        } => format!(
            "{} + process {child_tgid} forked by {creator} \"{}\"",
            rel(*ts_ns),
            name(*tgid, *creator)
        ),
        Event::ThreadExit {
            ts_ns,
            tgid,
            tid,
            exit_code,
            ..
        } => {
            let p = model.process(*tgid)?;
            let t = p.threads.iter().rev().find(|t| t.tid == *tid)?;
            let life = t
                .start_ns
                .map(|s| format!(" after {}", dur(ts_ns.saturating_sub(s))))
                .unwrap_or_default();
            format!(
                "{} - thread {tid} \"{}\" exited ({}){life}",
                rel(*ts_ns),
                escape(t.name()),
                describe_exit(*exit_code)
            )
        }
        Event::HeldAtAttach {
            ts_ns,
            tgid,
            lock,
            kind,
            holder,
            waiter,
            ..
        } => {
            // The holder may be another observed process's thread (a lock
            // in shared memory).
            let holder_name = |h: u32| {
                model
                    .thread_name(*tgid, h)
                    .or_else(|| model.live_thread(h).map(|(_, t)| t.name()))
                    .map(escape)
                    .unwrap_or_else(|| "?".into())
            };
            let by = match holder {
                Some(h) => format!("{h} \"{}\"", holder_name(*h)),
                None => "a thread the lock does not record".into(),
            };
            format!(
                "{} ! {} {lock:#x} was held before attach, by {by}; {waiter} \"{}\" waits for it",
                rel(*ts_ns),
                kind.as_str(),
                name(*tgid, *waiter)
            )
        }
        Event::ThreadRename {
            ts_ns,
            tid,
            name: n,
            ..
        } => {
            format!("{} ~ thread {tid} renamed \"{}\"", rel(*ts_ns), escape(n))
        }
        Event::Exec {
            ts_ns,
            tgid,
            filename,
            ..
        } => {
            format!("{} * process {tgid} exec {}", rel(*ts_ns), escape(filename))
        }
        Event::WaitDone {
            ts_ns,
            tgid,
            tid,
            wait,
            ret,
        } => format!(
            "{} ! thread {tid} \"{}\" waited {} on futex {:#x} ({}) -> {}",
            rel(*ts_ns),
            name(*tgid, *tid),
            dur(ts_ns.saturating_sub(wait.start_ns)),
            wait.uaddr,
            futex::name(wait.op),
            errno_name(*ret)
        ),
        _ => return None,
    })
}

pub fn errno_name(ret: i64) -> String {
    match ret.saturating_neg() {
        0 if ret == 0 => "0".into(),
        4 => "EINTR".into(),
        11 => "EAGAIN".into(),
        35 => "EDEADLK".into(),
        110 => "ETIMEDOUT".into(),
        130 => "EOWNERDEAD".into(),
        131 => "ENOTRECOVERABLE".into(),
        _ if ret >= 0 => ret.to_string(),
        e => format!("errno {e}"),
    }
}
