//! The text summary printed when observation ends.

use std::fmt::Write as _;

use super::{dur, escape};
use crate::{
    event::futex,
    model::{Model, Process, describe_exit},
};

pub const TOP_LOCKS: usize = 10;

pub fn summary(model: &Model, long_wait_ns: u64) -> String {
    let mut s = String::new();
    for p in model.processes.values() {
        process(&mut s, model, p, long_wait_ns);
    }
    s.push_str(&super::gil::summary(model));
    let d = &model.drops;
    if d.any() {
        let mut lost: Vec<String> = d
            .full_tables()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(table, n)| format!("{table} table full {n}"))
            .collect();
        if d.ringbuf > 0 {
            lost.insert(0, format!("ring buffer {}", d.ringbuf));
        }
        let _ = writeln!(
            s,
            "DROPS: {} (of {} records): the report may miss events",
            lost.join(", "),
            d.records
        );
    } else {
        let _ = writeln!(s, "DROPS: none ({} records)", d.records);
    }
    s
}

fn process(s: &mut String, model: &Model, p: &Process, long_wait_ns: u64) {
    let t0 = p.observed_from_ns;
    let end = p.observed_to_ns.unwrap_or(model.last_ns);
    let leader = p
        .threads
        .iter()
        .find(|t| t.tid == p.tgid)
        .map(|t| t.name())
        .unwrap_or("?");
    let _ = writeln!(
        s,
        "== observer: process {} \"{}\" ==",
        p.tgid,
        escape(leader)
    );
    if !p.cmdline.is_empty() {
        let cmd: Vec<String> = p.cmdline.iter().map(|a| escape(a)).collect();
        let _ = writeln!(s, "command: {}", cmd.join(" "));
    }
    if let Some(exe) = &p.exe {
        let _ = writeln!(s, "exe: {}", escape(exe));
    }
    let status = p
        .exit_status
        .map(describe_exit)
        .unwrap_or_else(|| "still running".into());
    let _ = writeln!(
        s,
        "observed {} ({}), exit status: {status}",
        dur(end.saturating_sub(t0)),
        if p.attached { "attached" } else { "from start" }
    );

    let alive = p.live_threads().count();
    let _ = writeln!(
        s,
        "\nTHREADS: {} seen, {alive} alive at end",
        p.threads.len()
    );
    let (listed, folded) = listed_threads(p);
    let rows: Vec<[String; 6]> = listed.iter().map(|t| thread_row(t, t0, end)).collect();
    // What a live thread is doing when nobody waits for it: idle (state).
    let idle: std::collections::HashMap<u32, String> = if p.exit_status.is_none() {
        let g = crate::graph::WaitForGraph::build(p);
        crate::graph::idle::idle_threads(model, p, &g)
            .into_iter()
            .collect()
    } else {
        Default::default()
    };
    let w = rows
        .iter()
        .map(|r| r[1].chars().count())
        .max()
        .unwrap_or(0)
        .clamp(16, 48);
    let _ = writeln!(
        s,
        "  {:>8}  {:<w$}  {:>8}  {:>9}  {:>10}  EXIT",
        "TID", "NAME", "PARENT", "START", "LIFETIME"
    );
    for (t, [tid, name, parent, start, life, exit]) in listed.iter().zip(rows) {
        let state = match idle.get(&t.tid) {
            Some(what) if t.alive() => format!("  idle: {}", escape(what)),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "  {tid:>8}  {name:<w$}  {parent:>8}  {start:>9}  {life:>10}  {exit}{state}"
        );
    }
    if !folded.is_empty() {
        let lives: Vec<u64> = folded
            .iter()
            .filter_map(|t| Some(t.exit_ns?.saturating_sub(t.start_ns?)))
            .collect();
        let range = match (lives.iter().min(), lives.iter().max()) {
            (Some(a), Some(b)) => format!(", lifetimes {}-{}", dur(*a), dur(*b)),
            _ => String::new(),
        };
        let _ = writeln!(
            s,
            "  ... {} more threads that exited with status 0{range} (the JSON of --report lists every thread)",
            folded.len()
        );
    }

    let lc = crate::model::lifecycle::lifecycle(p);
    let _ = writeln!(
        s,
        "\nLIFECYCLE: {} created, {} exited, {} alive at end, peak {} concurrent, median lifetime {}",
        lc.created,
        lc.exited,
        lc.alive_at_end,
        lc.peak_concurrent,
        lc.median_lifetime_ns.map(dur).unwrap_or_else(|| "-".into())
    );
    let j = &lc.join_waits;
    if j.count > 0 {
        let _ = writeln!(
            s,
            "  joins that waited for their thread to end: {}, {} in all, longest {}",
            j.count,
            dur(j.total_ns),
            dur(j.max_ns)
        );
    }
    if lc.sites.iter().any(|x| x.site != 0) {
        let site = |a: u64| match a {
            0 => "(not from pthread_create)".to_string(),
            a => model
                .code_symbols
                .get(&(p.tgid, a))
                .map(|x| escape(x))
                .unwrap_or_else(|| format!("{a:#x}")),
        };
        let w = lc
            .sites
            .iter()
            .take(TOP_LOCKS)
            .map(|x| site(x.site).chars().count())
            .max()
            .unwrap_or(0)
            .clamp(12, 60);
        let _ = writeln!(
            s,
            "  {:<w$}  {:>8}  {:>8}  {:>15}",
            "CREATION SITE", "CREATED", "ALIVE", "MEDIAN LIFETIME"
        );
        for x in lc.sites.iter().take(TOP_LOCKS) {
            let med = x.median_lifetime_ns.map(dur).unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "  {:<w$}  {:>8}  {:>8}  {med:>15}",
                site(x.site),
                x.created,
                x.alive_at_end
            );
        }
    }

    if !p.lock_profiles.is_empty() {
        let mut prof: Vec<_> = p.lock_profiles.iter().collect();
        prof.sort_by_key(|x| std::cmp::Reverse(x.1.1.hold_total_ns));
        let name = |a: u64| {
            model
                .symbols
                .get(&(p.tgid, a))
                .map(|x| escape(x))
                .unwrap_or_else(|| format!("{a:#x}"))
        };
        let w = prof
            .iter()
            .take(TOP_LOCKS)
            .map(|((a, _), _)| name(*a).chars().count())
            .max()
            .unwrap_or(0)
            .clamp(8, 40);
        let _ = writeln!(
            s,
            "\nLOCKS (--uprobes): top {} of {} by total hold time",
            prof.len().min(TOP_LOCKS),
            prof.len()
        );
        let _ = writeln!(
            s,
            "  {:<w$}  {:<9}  {:>8}  {:>9}  {:>10}  {:>10}  {:>10}  TOP HOLDER",
            "LOCK", "KIND", "ACQUIRED", "CONTENDED", "WAIT", "HOLD", "HOLD MAX"
        );
        for ((addr, _), (kind, pr)) in prof.iter().take(TOP_LOCKS) {
            let top = pr
                .top_holders
                .first()
                .map(|(tid, n, ns)| {
                    let tn = p
                        .threads
                        .iter()
                        .rev()
                        .find(|t| t.tid == *tid)
                        .map(|t| escape(t.name()))
                        .unwrap_or_default();
                    format!("{tid} \"{tn}\" ({n}x, {})", dur(*ns))
                })
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "  {:<w$}  {:<9}  {:>8}  {:>9}  {:>10}  {:>10}  {:>10}  {top}",
                name(*addr),
                format!("{kind:?}").to_lowercase(),
                pr.acquired,
                pr.contended,
                dur(pr.wait_total_ns),
                dur(pr.hold_total_ns),
                dur(pr.hold_max_ns)
            );
        }
    }

    super::held::text(s, model, p);

    let mut locks: Vec<_> = p.locks.values().collect();
    locks.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.uaddr.cmp(&b.uaddr)));
    if locks.is_empty() {
        let _ = writeln!(s, "\nCONTENDED FUTEXES: none");
    } else {
        let _ = writeln!(
            s,
            "\nCONTENDED FUTEXES: top {} of {} by total wait",
            locks.len().min(TOP_LOCKS),
            locks.len()
        );
        let sym = |a: u64| {
            model
                .symbols
                .get(&(p.tgid, a))
                .map(|s| escape(s))
                .unwrap_or_else(|| "-".into())
        };
        let w = locks
            .iter()
            .take(TOP_LOCKS)
            .map(|l| sym(l.uaddr).chars().count())
            .max()
            .unwrap_or(0)
            .clamp(6, 40);
        let _ = writeln!(
            s,
            "  {:<18}  {:<w$}  {:<20}  {:>8}  {:>10}  {:>10}",
            "ADDRESS", "SYMBOL", "OP", "WAITS", "TOTAL", "MAX"
        );
        for l in locks.iter().take(TOP_LOCKS) {
            let _ = writeln!(
                s,
                "  {:<18}  {:<w$}  {:<20}  {:>8}  {:>10}  {:>10}",
                format!("{:#x}", l.uaddr),
                sym(l.uaddr),
                futex::name(l.op),
                l.count,
                dur(l.total_ns),
                dur(l.max_ns)
            );
        }
    }
    if !p.long_waits.is_empty() {
        let _ = writeln!(
            s,
            "\nLONG WAITS (>= {}): {}",
            dur(long_wait_ns),
            p.long_waits.len()
        );
        for lw in p.long_waits.iter().take(20) {
            let name = p
                .threads
                .iter()
                .rev()
                .find(|t| t.tid == lw.tid)
                .map(|t| t.name())
                .unwrap_or("?");
            let _ = writeln!(
                s,
                "  thread {} \"{}\" waited {} on {:#x} ({}) -> {}",
                lw.tid,
                escape(name),
                dur(lw.end_ns.saturating_sub(lw.wait.start_ns)),
                lw.wait.uaddr,
                futex::name(lw.wait.op),
                super::live::errno_name(lw.ret)
            );
        }
    }
    let _ = writeln!(s);
}

/// Past this many threads, a text report lists one by one only the live
/// ones, the leader, those there before observation, those that ended
/// badly, unjoined or holding locks, and the newest; the rest (a churn's
/// short threads) are counted in one line.
const THREAD_ROWS: usize = 64;
const NEWEST_EXITED: usize = 16;

/// (listed, folded) threads of the THREADS table.
fn listed_threads(
    p: &crate::model::Process,
) -> (Vec<&crate::model::Thread>, Vec<&crate::model::Thread>) {
    if p.threads.len() <= THREAD_ROWS {
        return (p.threads.iter().collect(), Vec::new());
    }
    let newest = p.threads.len() - NEWEST_EXITED;
    let held: std::collections::HashSet<u32> = p.exit_held.iter().map(|(tid, ..)| *tid).collect();
    let (mut listed, mut folded) = (Vec::new(), Vec::new());
    for (i, t) in p.threads.iter().enumerate() {
        let plain = !t.alive()
            && t.exit_code == Some(0)
            && !t.unjoined_at_exit
            && !t.preexisting
            && t.tid != p.tgid
            && !held.contains(&t.tid)
            && i < newest;
        if plain {
            folded.push(t);
        } else {
            listed.push(t);
        }
    }
    (listed, folded)
}

/// TID, name (with earlier names), parent, start, lifetime, exit.
fn thread_row(t: &crate::model::Thread, t0: u64, end: u64) -> [String; 6] {
    let start = match t.start_ns {
        Some(st) if st >= t0 => format!("+{:.3}s", (st - t0) as f64 / 1e9),
        Some(st) => format!("-{:.3}s", (t0 - st) as f64 / 1e9),
        None => "?".into(),
    };
    let life = match (t.start_ns, t.exit_ns) {
        (Some(a), Some(b)) => dur(b.saturating_sub(a)),
        (Some(a), None) => format!("{}+", dur(end.saturating_sub(a))),
        _ => "?".into(),
    };
    let exit = t.exit_code.map(describe_exit).unwrap_or_else(|| "-".into());
    let mut name = escape(t.name());
    // names[0] is inherited from the creator (or the observer, for `run`).
    if t.names.len() > 2 {
        let earlier: Vec<String> = t.names[1..t.names.len() - 1]
            .iter()
            .filter(|(_, n)| !n.is_empty())
            .map(|(_, n)| escape(n))
            .collect();
        if !earlier.is_empty() {
            name = format!("{name} (was {})", earlier.join(", "));
        }
    }
    let parent = t
        .parent_tid
        .map(|x| x.to_string())
        .unwrap_or_else(|| "?".into());
    [t.tid.to_string(), name, parent, start, life, exit]
}

#[cfg(test)]
mod tests {
    use crate::{event::Drops, model::Model};

    #[test]
    fn drops_name_every_full_table_that_lost_something() {
        let mut m = Model {
            drops: Drops {
                records: 9,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(super::summary(&m, 1).contains("DROPS: none (9 records)"));
        m.drops.ringbuf = 2;
        m.drops.exited_full = 3;
        m.drops.held_full = 1;
        let text = super::summary(&m, 1);
        assert!(
            text.contains(
                "DROPS: ring buffer 2, held table full 1, exited table full 3 (of 9 records)"
            ),
            "{text}"
        );
    }

    /// A churn's short threads are counted in one line; the leader, a
    /// thread that failed, one left alive and the newest are listed.
    #[test]
    fn a_churn_is_folded_in_the_threads_table() {
        use crate::event::Event;
        let mut m = Model::default();
        let tgid = 50;
        m.apply(&Event::ThreadSeen {
            ts_ns: 0,
            tgid,
            tid: tgid,
            name: "server".into(),
            parent_tid: Some(1),
            start_ns: Some(0),
        });
        for i in 0..200u32 {
            let (tid, ts) = (1000 + i, 1_000_000 * (u64::from(i) + 1));
            m.apply(&Event::test_thread_new(ts, tgid, tid, "server"));
            if i != 7 {
                let code = if i == 3 { 1 << 8 } else { 0 };
                m.apply(&Event::test_thread_exit(ts + 10_000, tgid, tid, code));
            }
        }
        let text = super::summary(&m, 1);
        let rows: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("THREADS:"))
            .skip(2)
            .take_while(|l| !l.is_empty())
            .collect();
        let tids: Vec<u32> = rows
            .iter()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        let newest: Vec<u32> = (1184..1200).collect();
        assert_eq!(tids[..3], [tgid, 1003, 1007], "{text}");
        assert_eq!(tids[3..], newest[..], "{text}");
        assert_eq!(
            rows.last().unwrap().trim(),
            "... 182 more threads that exited with status 0, lifetimes 10.0us-10.0us (the JSON of --report lists every thread)"
        );
    }
}
