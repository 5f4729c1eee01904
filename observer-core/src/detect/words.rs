//! Words the detectors' one-line summaries share.

pub(super) use super::{Detail, WaitHolder};
use super::{Finding, LockInfo};
pub(super) use crate::vocab::text::{dur, escape};
use crate::{event::Tid, vocab::locks::LockKind};

/// A thread of the finding by TID, its name escaped ("?" if not in it).
pub(super) fn name(f: &Finding, tid: Tid) -> String {
    f.threads
        .iter()
        .find(|t| t.tid == tid)
        .map(|t| escape(&t.name))
        .unwrap_or_else(|| "?".into())
}

/// The thread a one-thread finding is about, and its name.
pub(super) fn first(f: &Finding) -> (Tid, String) {
    f.threads
        .first()
        .map(|t| (t.tid, escape(&t.name)))
        .unwrap_or((0, "?".into()))
}

/// The finding's first lock in words.
pub(super) fn first_lock(f: &Finding) -> String {
    f.locks.first().map(describe_lock).unwrap_or_default()
}

/// A lock's symbol, else its address.
pub(super) fn sym_or_addr(l: &LockInfo) -> String {
    l.symbol
        .as_deref()
        .map(escape)
        .unwrap_or_else(|| l.addr_hex.clone())
}

/// "3 from main.c:12, 1 from pool.c:40".
pub(super) fn counted(sites: &[(String, usize)], word: &str) -> String {
    let v: Vec<String> = sites
        .iter()
        .map(|(s, n)| format!("{n} {word} {}", escape(s)))
        .collect();
    v.join(", ")
}

/// "; thread 1 \"main\" waits for it" (joins it, or waits for a lock it
/// holds); "...waits for future fut (0x..), whose work item it runs".
pub(super) fn held_up_by(f: &Finding, by: &[Tid]) -> String {
    let future = |t: Tid| {
        f.threads
            .iter()
            .find(|x| x.tid == t)
            .and_then(|x| x.waits_for.as_ref())
            .filter(|l| l.kind == LockKind::Future)
    };
    match by {
        [] => String::new(),
        [one] => match future(*one) {
            Some(l) => format!(
                "; thread {one} \"{}\" waits for {}, whose work item it runs",
                name(f, *one),
                describe_lock(l)
            ),
            None => format!("; thread {one} \"{}\" waits for it", name(f, *one)),
        },
        many => {
            let v: Vec<String> = many
                .iter()
                .map(|&t| match future(t) {
                    Some(l) => format!("{t} \"{}\" (for {})", name(f, t), describe_lock(l)),
                    None => format!("{t} \"{}\"", name(f, t)),
                })
                .collect();
            format!("; threads {} wait for it", v.join(", "))
        }
    }
}

/// "mutex lock_b (0x5600...)" or "condvar 0x7ff0...".
pub fn describe_lock(l: &LockInfo) -> String {
    match &l.symbol {
        Some(s) => format!("{} {} ({})", l.kind.as_str(), escape(s), l.addr_hex),
        None => format!("{} {}", l.kind.as_str(), l.addr_hex),
    }
}
