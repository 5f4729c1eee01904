//! Joinable threads that exited and were never joined or detached by the
//! end of observation: each keeps its stack and descriptor until joined
//! (TSan's thread_leak). Judged from glibc's thread descriptors, read by
//! BPF when the process calls exit_group (a join of a thread that had
//! already exited leaves no other trace): only threads whose descriptor
//! was read then are judged. Threads killed by the process's exit do not
//! count; a process that dies by a signal or whose last thread calls
//! pthread_exit is not judged.

use super::{Ctx, Detail, Detector, Finding, FindingKind};

pub struct UnjoinedThread;

impl Detector for UnjoinedThread {
    fn check(&self, _cx: &Ctx) -> Vec<Finding> {
        Vec::new()
    }

    fn at_end(&self, cx: &Ctx) -> Vec<Finding> {
        let p = cx.process;
        let unjoined: Vec<_> = p
            .threads
            .iter()
            .filter(|t| {
                t.pthread != 0
                    && t.tid != p.tgid
                    && t.exit_ns.is_some()
                    && !t.ended_by_group_exit
                    && t.unjoined_at_exit
                    && !t.detached
                    && !t.joined
                    && !t.released
            })
            .collect();
        if unjoined.is_empty() {
            return Vec::new();
        }
        let threads: Vec<_> = unjoined
            .iter()
            .map(|t| cx.with_creation_stack(cx.thread(t.tid), t))
            .collect();
        vec![Finding {
            kind: FindingKind::UnjoinedThread,
            tgid: p.tgid,
            detected_ns: cx.now_ns,
            detail: Detail::UnjoinedThread,
            threads,
            locks: Vec::new(),
            cycle: Vec::new(),
            tasks: Vec::new(),
            key: format!("unjoined:{}", p.tgid),
        }]
    }
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    match &f.detail {
        Detail::UnjoinedThread => {
            let names: Vec<String> = f
                .threads
                .iter()
                .take(5)
                .map(|t| format!("{} \"{}\"", t.tid, escape(&t.name)))
                .collect();
            let more = if f.threads.len() > 5 {
                format!(" and {} more", f.threads.len() - 5)
            } else {
                String::new()
            };
            let mut sites: Vec<&String> = f
                .threads
                .iter()
                .filter_map(|t| t.created_at.as_ref())
                .collect();
            sites.sort();
            sites.dedup();
            let at = if sites.is_empty() {
                String::new()
            } else {
                let v: Vec<String> = sites.iter().map(|s| escape(s)).collect();
                format!("; created at {}", v.join(", "))
            };
            format!(
                "{} joinable thread(s) exited and were never joined or detached: {}{more}{at}",
                f.threads.len(),
                names.join(", ")
            )
        }
        _ => String::new(),
    }
}
