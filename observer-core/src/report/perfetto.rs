//! The timeline as a Chrome trace-event JSON file, which Perfetto UI
//! (ui.perfetto.dev) and chrome://tracing open.
//!
//! What is drawn, per process (pid = tgid):
//! - one track per thread (tid), named, ordered by creation, with a
//!   lifetime slice from its creation (or the start of observation) to its
//!   exit (or the end of observation);
//! - a slice inside it for each futex wait that slept long enough to be
//!   seen (found in progress by a wait-table scan once older than
//!   min(scan interval, 10 ms), or reported by the kernel as long or with
//!   an outcome): labelled with the lock and its holder when known.
//!   Shorter waits are counted per lock in the kernel and never reach user
//!   space one by one: they appear only as the totals on the lock's track;
//! - flow arrows from the holder's track to the waiter's wait slice;
//! - instants for thread creation, rename and exit, and one per finding;
//! - one track per lock with the intervals its holders are known to have
//!   held it (while someone waited for it; with `--uprobes` also the owners
//!   the uprobes reported and locks held at thread exit).
//!
//! Timestamps are microseconds from the origin: the earliest of the first
//! event and the first wait start seen. `otherData.origin_monotonic_ns` is
//! the origin in CLOCK_MONOTONIC nanoseconds. The trace is bounded; what a
//! bound dropped is stated in `otherData.dropped` and as an instant.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write,
};

use serde_json::{Value, json};

use crate::{
    detect::Finding,
    event::Tid,
    graph::{Holder, LockKind, Target},
    model::{Model, Process, Thread},
};

/// Wait slices kept in one trace (the newest are kept).
pub const MAX_WAIT_SLICES: usize = 200_000;
/// Hold slices kept in one trace (the newest are kept).
pub const MAX_HOLD_SLICES: usize = 100_000;
/// Lock tracks get TIDs above any real one (PID_MAX_LIMIT is 2^22).
const LOCK_TRACK_BASE: u64 = 1 << 30;

/// "mutex lock_b" or "condvar 0x7f00..." (target data, unescaped).
pub fn lock_label(model: &Model, tgid: u32, kind: LockKind, addr: u64) -> String {
    match model.symbols.get(&(tgid, addr)) {
        Some(s) => format!("{} {s}", kind.as_str()),
        None => format!("{} {addr:#x}", kind.as_str()),
    }
}

/// "alpha [1234]" (target data, unescaped).
pub fn thread_label(p: &Process, tid: Tid) -> String {
    match p.threads.iter().rev().find(|t| t.tid == tid) {
        Some(t) => label_of(t),
        None => format!("[{tid}]"),
    }
}

fn label_of(t: &Thread) -> String {
    if t.name().is_empty() {
        format!("[{}]", t.tid)
    } else {
        format!("{} [{}]", t.name(), t.tid)
    }
}

fn us(ns: u64, origin: u64) -> f64 {
    ns.saturating_sub(origin) as f64 / 1e3
}

/// Earliest time anything in the model refers to.
pub fn origin(model: &Model) -> u64 {
    let mut o = model.first_ns.unwrap_or(0);
    for p in model.processes.values() {
        let cur = p
            .live_threads()
            .filter_map(|t| t.wait.as_ref())
            .map(|w| w.start_ns);
        let past = p.history.waits.iter().map(|w| w.start_ns);
        if let Some(m) = cur.chain(past).filter(|&s| s > 0).min() {
            o = o.min(m);
        }
    }
    o
}

struct WaitSlice {
    tid: Tid,
    start: u64,
    end: u64,
    target: Target,
    op: u32,
    ret: Option<i64>,
    unfinished: bool,
    before_observation: bool,
}

/// The holder a wait names, if it is a thread of this process that was
/// alive when the wait began (it may have exited since).
fn holder_of(t: &Target, at: u64, life: &HashMap<Tid, Vec<(u64, u64)>>) -> Option<Tid> {
    match t.holder {
        Holder::Thread(h) | Holder::Gone(h) => life
            .get(&h)
            .is_some_and(|v| v.iter().any(|(b, e)| at >= *b && at <= *e))
            .then_some(h),
        _ => None,
    }
}

/// The trace as a JSON value.
pub fn build(model: &Model, findings: &[Finding]) -> Value {
    let origin = origin(model);
    let end_all = model.last_ns.max(origin);
    let mut ev: Vec<Value> = Vec::new();
    let mut dropped_waits = 0u64;
    let mut dropped_holds = 0u64;
    let mut history_waits = 0u64;
    let mut history_holds = 0u64;
    let mut flow_id = 0u64;
    for (pi, p) in model.processes.values().enumerate() {
        let pid = p.tgid;
        history_waits += p.history.waits_dropped;
        history_holds += p.history.holds_dropped;
        let pname = p
            .exe
            .as_deref()
            .or(p.cmdline.first().map(String::as_str))
            .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
            .unwrap_or_else(|| format!("process {pid}"));
        ev.push(json!({"ph":"M","name":"process_name","pid":pid,"tid":0,"args":{"name":pname}}));
        ev.push(json!({"ph":"M","name":"process_sort_index","pid":pid,"tid":0,"args":{"sort_index":pi}}));
        ev.push(json!({"ph":"M","name":"process_labels","pid":pid,"tid":0,
            "args":{"labels":p.cmdline.join(" ")}}));
        let p_from = p.observed_from_ns.max(origin);
        let p_to = p.observed_to_ns.unwrap_or(end_all).max(p_from);
        // Lifetimes, per thread record (a reused TID shares the track).
        let mut life: HashMap<Tid, Vec<(u64, u64)>> = HashMap::new();
        let mut named: HashMap<Tid, usize> = HashMap::new();
        // Labels by TID (the newest thread of a reused TID, as thread_label).
        let labels: HashMap<Tid, String> = p.threads.iter().map(|t| (t.tid, label_of(t))).collect();
        let thread_label = |_: &Process, tid: Tid| {
            labels
                .get(&tid)
                .cloned()
                .unwrap_or_else(|| format!("[{tid}]"))
        };
        for (i, t) in p.threads.iter().enumerate() {
            let begin = t.start_ns.filter(|&s| s >= p_from).unwrap_or(p_from);
            let end = t.exit_ns.unwrap_or(p_to).max(begin);
            life.entry(t.tid).or_default().push((begin, end));
            if let std::collections::hash_map::Entry::Vacant(v) = named.entry(t.tid) {
                v.insert(i);
                let name = if t.name().is_empty() {
                    format!("thread {}", t.tid)
                } else {
                    t.name().to_string()
                };
                ev.push(json!({"ph":"M","name":"thread_name","pid":pid,"tid":t.tid,"args":{"name":name}}));
                ev.push(json!({"ph":"M","name":"thread_sort_index","pid":pid,"tid":t.tid,"args":{"sort_index":i}}));
            }
            let mut args = json!({"tid":t.tid});
            if t.preexisting {
                args["existed_before_observation"] = json!(true);
            }
            if let Some(c) = t.exit_code {
                args["exit"] = json!(crate::model::describe_exit(c));
            }
            if let Some(pt) = t.parent_tid {
                args["created_by"] = json!(thread_label(p, pt));
            }
            ev.push(
                json!({"ph":"X","cat":"thread","name":format!("{} (lifetime)", name_or_tid(t)),
                "pid":pid,"tid":t.tid,"ts":us(begin, origin),"dur":us(end, begin),"args":args}),
            );
            if !t.preexisting && t.start_ns.is_some() {
                ev.push(json!({"ph":"i","s":"t","cat":"lifecycle","name":"created","pid":pid,"tid":t.tid,
                    "ts":us(begin, origin),"args":{"created_by":t.parent_tid.map(|x| thread_label(p, x))}}));
            }
            for (ts, n) in t.names.iter().skip(1) {
                ev.push(json!({"ph":"i","s":"t","cat":"lifecycle","name":format!("renamed {n}"),
                    "pid":pid,"tid":t.tid,"ts":us((*ts).clamp(begin, end), origin),"args":{"name":n}}));
            }
            if let Some(e) = t.exit_ns {
                ev.push(
                    json!({"ph":"i","s":"t","cat":"lifecycle","name":"exit","pid":pid,"tid":t.tid,
                    "ts":us(e, origin),"args":{"exit":t.exit_code.map(crate::model::describe_exit),
                    "by_process_exit":t.ended_by_group_exit}}),
                );
            }
        }
        // Wait slices: finished ones, then those still in progress.
        let mut waits: Vec<WaitSlice> = p
            .history
            .waits
            .iter()
            .map(|w| WaitSlice {
                tid: w.tid,
                start: w.start_ns,
                end: w.end_ns.max(w.start_ns),
                target: w.target,
                op: w.op,
                ret: w.ret,
                unfinished: false,
                before_observation: w.before_observation,
            })
            .collect();
        for t in p.live_threads() {
            if let Some(w) = &t.wait {
                waits.push(WaitSlice {
                    tid: t.tid,
                    start: w.start_ns,
                    end: p_to.max(w.start_ns),
                    target: crate::graph::classify(w, p),
                    op: w.op,
                    ret: None,
                    unfinished: true,
                    before_observation: w.origin == crate::event::WaitOrigin::Snapshot,
                });
            }
        }
        waits.sort_by_key(|w| (w.start, w.tid));
        if waits.len() > MAX_WAIT_SLICES {
            let cut = waits.len() - MAX_WAIT_SLICES;
            dropped_waits += cut as u64;
            waits.drain(..cut);
        }
        // Keep each slice inside its thread's lifetime and after the
        // previous wait on the same track (slices must nest).
        let mut last_end: HashMap<Tid, u64> = HashMap::new();
        let mut holds: Vec<(u64, Tid, u64, u64, &'static str)> = Vec::new();
        for w in &waits {
            let Some(&(b, e)) = life
                .get(&w.tid)
                .and_then(|v| v.iter().find(|(b, e)| w.start <= *e && w.end >= *b))
            else {
                continue;
            };
            let start = w.start.clamp(b, e).max(*last_end.get(&w.tid).unwrap_or(&0));
            let end = w.end.clamp(start, e);
            last_end.insert(w.tid, end);
            let lock = lock_label(model, pid, w.target.kind, w.target.lock);
            let holder = holder_of(&w.target, w.start, &life);
            let name = match holder {
                Some(h) => format!("wait {lock} (held by {})", thread_label(p, h)),
                None => format!("wait {lock}"),
            };
            let mut args = json!({
                "lock": lock,
                "lock_addr": format!("{:#x}", w.target.lock),
                "kind": w.target.kind.as_str(),
                "op": crate::event::futex::name(w.op),
            });
            if let Some(h) = holder {
                args["holder"] = json!(thread_label(p, h));
            }
            if let Some(r) = w.ret {
                args["ret"] = json!(r);
            }
            if w.unfinished {
                args["still_waiting_at_end"] = json!(true);
            }
            if w.before_observation {
                args["began_before_observation"] = json!(true);
            }
            ev.push(
                json!({"ph":"X","cat":"wait","name":name,"pid":pid,"tid":w.tid,
                "ts":us(start, origin),"dur":us(end, start),"args":args}),
            );
            if let Some(h) = holder {
                // The arrow leaves the holder's track when the wait began
                // (inside its lifetime slice) and ends on the wait slice.
                let hs = start;
                if life
                    .get(&h)
                    .is_some_and(|v| v.iter().any(|(b, e)| hs >= *b && hs <= *e))
                {
                    flow_id += 1;
                    ev.push(
                        json!({"ph":"s","cat":"holds","name":"holds","id":flow_id,"pid":pid,"tid":h,
                        "ts":us(hs, origin)}),
                    );
                    ev.push(json!({"ph":"f","bp":"e","cat":"holds","name":"holds","id":flow_id,"pid":pid,
                        "tid":w.tid,"ts":us(start, origin)}));
                }
                holds.push((w.target.lock, h, start, end, w.target.kind.as_str()));
            }
        }
        for h in &p.history.holds {
            let to = h.to_ns.unwrap_or(p_to);
            holds.push((h.lock, h.tid, h.from_ns.max(p_from), to, acq_kind(h.kind)));
        }
        // Lock tracks: merged intervals per holder, no overlap between holders.
        let mut by_lock: BTreeMap<u64, Vec<(Tid, u64, u64, &'static str)>> = BTreeMap::new();
        for (lock, tid, a, b, k) in holds {
            by_lock.entry(lock).or_default().push((tid, a, b.max(a), k));
        }
        for l in p.locks.keys() {
            by_lock.entry(*l).or_default();
        }
        let mut hold_slices = 0usize;
        for (li, (lock, mut iv)) in by_lock.into_iter().enumerate() {
            let track = LOCK_TRACK_BASE + li as u64;
            iv.sort_by_key(|x| (x.1, x.0));
            let mut merged: Vec<(Tid, u64, u64, &'static str)> = Vec::new();
            for x in iv {
                match merged.last_mut() {
                    Some(m) if m.0 == x.0 && x.1 <= m.2 => m.2 = m.2.max(x.2),
                    Some(m) if x.1 < m.2 => {
                        m.2 = x.1;
                        merged.push(x);
                    }
                    _ => merged.push(x),
                }
            }
            let kind = merged
                .iter()
                .map(|m| m.3)
                .next()
                .or_else(|| p.locks.get(&lock).map(|_| "futex"))
                .unwrap_or("lock");
            let label = match model.symbols.get(&(pid, lock)) {
                Some(s) => format!("{kind} {s}"),
                None => format!("{kind} {lock:#x}"),
            };
            ev.push(json!({"ph":"M","name":"thread_name","pid":pid,"tid":track,
                "args":{"name":format!("lock: {label}")}}));
            ev.push(
                json!({"ph":"M","name":"thread_sort_index","pid":pid,"tid":track,
                "args":{"sort_index":1_000_000 + li}}),
            );
            for (tid, a, b, _) in merged {
                if hold_slices >= MAX_HOLD_SLICES {
                    dropped_holds += 1;
                    continue;
                }
                hold_slices += 1;
                ev.push(
                    json!({"ph":"X","cat":"hold","name":format!("held by {}", thread_label(p, tid)),
                    "pid":pid,"tid":track,"ts":us(a, origin),"dur":us(b, a),
                    "args":{"lock":label,"holder":thread_label(p, tid)}}),
                );
            }
            if let Some(s) = p.locks.get(&lock) {
                ev.push(json!({"ph":"i","s":"t","cat":"contention",
                    "name":format!("{} waits slept, {} in total (kernel totals: short waits are not drawn one by one)",
                        s.count, crate::report::dur(s.total_ns)),
                    "pid":pid,"tid":track,"ts":us(p_to, origin),
                    "args":{"waits":s.count,"total_ns":s.total_ns,"max_ns":s.max_ns,
                        "op":crate::event::futex::name(s.op)}}));
            }
        }
        for f in findings.iter().filter(|f| f.tgid == pid) {
            let tids: Vec<Value> = f.threads.iter().map(|t| json!(t.tid)).collect();
            let summary = f.summary();
            ev.push(json!({"ph":"i","s":"p","cat":"finding",
                "name":format!("{}: {}", kind_name(f), summary),
                "pid":pid,"tid":0,"ts":us(f.detected_ns.max(origin), origin),
                "args":{"kind":kind_name(f),"summary":summary,"threads":tids}}));
        }
    }
    let k = model.drops;
    let mut dropped = json!({
        "wait_slices_over_limit": dropped_waits,
        "hold_slices_over_limit": dropped_holds,
        "oldest_waits_not_kept": history_waits,
        "oldest_holds_not_kept": history_holds,
    });
    if k.any() {
        dropped["kernel"] = serde_json::to_value(k).unwrap_or(Value::Null);
    }
    let anything = dropped_waits + dropped_holds + history_waits + history_holds > 0 || k.any();
    if anything {
        ev.push(
            json!({"ph":"i","s":"g","cat":"limits","name":format!("trace incomplete: {dropped}"),
            "pid":0,"tid":0,"ts":0.0}),
        );
    }
    json!({
        "traceEvents": ev,
        "displayTimeUnit": "ms",
        "otherData": {
            "generator": format!("observer {}", env!("CARGO_PKG_VERSION")),
            "origin_monotonic_ns": origin,
            "time_unit": "microseconds since origin_monotonic_ns (CLOCK_MONOTONIC)",
            "short_waits": "waits no scan found in progress (younger than min(scan interval, 10 ms)) and the kernel did not report are counted per lock in the kernel: totals on the lock tracks",
            "truncated": anything,
            "dropped": dropped,
        }
    })
}

fn name_or_tid(t: &Thread) -> String {
    if t.name().is_empty() {
        format!("thread {}", t.tid)
    } else {
        t.name().to_string()
    }
}

fn acq_kind(k: crate::event::AcqKind) -> &'static str {
    use crate::event::AcqKind as A;
    match k {
        A::Mutex => "mutex",
        A::RwRead | A::RwWrite => "rwlock",
        A::Semaphore => "semaphore",
        A::PyLock => "Python lock",
        A::Unknown => "lock",
    }
}

fn kind_name(f: &Finding) -> String {
    serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Writes the trace.
pub fn write(model: &Model, findings: &[Finding], w: &mut impl Write) -> std::io::Result<()> {
    serde_json::to_writer(&mut *w, &build(model, findings))?;
    w.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::pictures_tests::abba_model;

    #[test]
    fn abba_trace_follows_the_format_rules() {
        let (m, findings) = abba_model();
        let v = build(&m, &findings);
        crate::report::pictures_tests::check_trace(&v);
        let evs = v["traceEvents"].as_array().unwrap();
        // both cycle waits are drawn with their holder, and an arrow each
        let waits: Vec<&Value> = evs.iter().filter(|e| e["cat"] == "wait").collect();
        assert_eq!(waits.len(), 3, "{waits:?}");
        assert!(
            waits
                .iter()
                .any(|w| w["name"] == "wait mutex lock_b (held by beta [12])")
        );
        assert_eq!(evs.iter().filter(|e| e["ph"] == "s").count(), 3);
        assert!(evs.iter().any(|e| e["cat"] == "finding"));
        assert!(
            evs.iter()
                .any(|e| e["name"] == "thread_name" && e["args"]["name"] == "lock: mutex lock_a")
        );
        assert_eq!(v["otherData"]["truncated"], false);
    }
}
