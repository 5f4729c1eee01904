//! `observer dump -p PID`: one look at a process through /proc, no BPF
//! (like jstack or py-spy dump): its threads, the futex waits they sit in,
//! judged once by the engine. A lock held by a thread of another process
//! (shared memory, or a copy inherited across fork) takes the dump into
//! that process too, so a cycle across processes is judged whole.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};

use super::{
    enrich::{all_stacks, python_events, stack_events, symbol_events},
    target::seeded_tids,
};
use crate::{
    detect::Limits,
    engine::Engine,
    event::Event,
    graph::{Holder, LockKind, WaitForGraph},
    model::{Model, shared::FutexKey},
    report,
    source::procfs,
    symbol::Symbolizer,
};

/// At most this many processes in one dump (the dumped one included).
const MAX_PROCESSES: usize = 8;

/// `observer dump -p PID`.
/// With `native`, every thread's native stack too (CPython threads: merged
/// with the Python stack), as `py-spy dump --native` does.
pub fn dump(pid: u32, json: bool, native: bool) -> Result<u8> {
    if let Some(tgid) = procfs::tgid_of(pid).filter(|&t| t != pid) {
        bail!("{pid} is a thread of process {tgid}: dump the process");
    }
    if !procfs::exists(pid) {
        bail!("no such process: {pid}");
    }
    let now = crate::sys::mono_ns();
    let mut engine = Engine::new(Limits::new(u64::MAX), ());
    let mut symbols = Symbolizer::new();
    let mut tried = HashSet::new();
    load(&mut engine, &mut symbols, &mut tried, pid, now)?;
    // Follow holders into their processes, a few hops at most.
    let mut todo = follow(&engine.model, |q| engine.model.process(q).is_some());
    while let Some(q) = todo.pop() {
        if engine.model.processes.len() >= MAX_PROCESSES {
            break;
        }
        if engine.model.process(q).is_some() {
            continue;
        }
        if let Err(e) = load(&mut engine, &mut symbols, &mut tried, q, now) {
            tracing::warn!("cannot follow into process {q}: {e:#}");
            continue;
        }
        todo.extend(follow(&engine.model, |q| engine.model.process(q).is_some()));
    }
    // What concerns the dumped process: a followed one's own findings are
    // not this dump's.
    let found: Vec<_> = engine
        .candidates(now)
        .into_iter()
        .filter(|f| f.pids().contains(&pid))
        .collect();
    let found = confirmed(&engine.model, found);
    let mut evs = stack_events(&engine.model, &mut symbols, None, &found, now, native);
    engine.apply_all(&mut evs)?;
    if native {
        let tgids: Vec<u32> = engine.model.processes.keys().copied().collect();
        for tgid in tgids {
            let mut evs = all_stacks(&engine.model, &mut symbols, tgid, now);
            engine.apply_all(&mut evs)?;
        }
    }
    engine.accept(found);
    if json {
        let r = report::dump::json(&engine.model, pid, engine.findings(), native);
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!(
            "{}",
            report::dump::text(&engine.model, pid, engine.findings(), native)
        );
    }
    Ok(crate::exit::of_findings(engine.findings()))
}

/// The hang findings whose threads still sit in the very waits judged
/// (same word, same memory around it), read again now: processes are read
/// one after the other, so a cycle across them could join moments that
/// never coexisted.
fn confirmed(model: &Model, found: Vec<crate::detect::Finding>) -> Vec<crate::detect::Finding> {
    found
        .into_iter()
        .filter(|f| {
            !f.kind.is_hang()
                || f.threads.iter().all(|t| {
                    let then = model
                        .process(t.pid)
                        .and_then(|p| p.thread(t.tid))
                        .and_then(|x| x.wait.as_ref());
                    let now = crate::source::snapshot::thread_wait(t.pid, t.tid, 0);
                    match (then, now) {
                        (Some(a), Some(b)) => {
                            a.uaddr == b.uaddr && a.val == b.val && a.words == b.words
                        }
                        (None, None) => true,
                        _ => false,
                    }
                })
        })
        .collect()
}

/// One process into the engine: its threads, their waits, lock names, the
/// Python view.
fn load(
    engine: &mut Engine,
    symbols: &mut Symbolizer,
    tried: &mut HashSet<(u32, u64)>,
    pid: u32,
    now: u64,
) -> Result<()> {
    let seed =
        procfs::seed_threads(pid).with_context(|| format!("cannot read the threads of {pid}"))?;
    let tids = seeded_tids(&seed);
    // Without ptrace rights /proc/PID/task/TID/syscall is unreadable.
    if let Some(&t) = tids.first() {
        std::fs::read_to_string(format!("/proc/{pid}/task/{t}/syscall")).with_context(|| {
            format!("cannot read /proc/{pid}/task/{t}/syscall (needs root or CAP_SYS_PTRACE)")
        })?;
    }
    engine.apply(&procfs::start_event(pid, now, true))?;
    let mut evs = seed;
    evs.extend(crate::source::snapshot::snapshot_waits(pid, tids, now));
    engine.apply_all(&mut evs)?;
    let mut evs = symbol_events(&engine.model, symbols, tried);
    // The mappings (shared memory keys locks across processes) even when
    // no lock had a name to look up.
    if !evs
        .iter()
        .any(|e| matches!(e, Event::Mappings { tgid, .. } if *tgid == pid))
    {
        symbols.read_maps_now(pid);
        evs.extend(super::enrich::maps_events(symbols));
    }
    for mut e in python_events(&engine.model, symbols, pid, now).unwrap_or_default() {
        // Whether each loop's thread sits in its selector now.
        if let Event::PyState { view, .. } = &mut e
            && let Some(a) = &mut view.asyncio
        {
            for l in &mut a.loops {
                l.polling = l
                    .tid
                    .and_then(|t| crate::source::event_loop::in_selector(pid, t));
            }
        }
        evs.push(e);
    }
    engine.apply_all(&mut evs)
}

/// Processes the dump should look at next: those of lock owners that are
/// no thread of the waiter's process, those sharing the semaphore of a
/// multiprocessing lock no thread of the waiter's process holds, and the parent of a process waiting
/// for a Python lock no thread of it holds (a fork copied it locked).
/// `seen(pid)`: the process is observed already.
pub(super) fn follow(model: &Model, seen: impl Fn(u32) -> bool) -> Vec<u32> {
    let mut out = Vec::new();
    for p in model.processes.values() {
        let g = WaitForGraph::build(p);
        for w in g.waits.values() {
            if let Holder::Gone(o) = w.target.holder
                && let Some(q) = procfs::tgid_of(o)
                && !seen(q)
                && !out.contains(&q)
            {
                out.push(q);
            }
        }
        let Some(view) = &p.python else { continue };
        // A multiprocessing lock no thread of `p` holds: the processes
        // that map its semaphore.
        for w in g.waits.values() {
            if w.target.kind != LockKind::MpLock || w.target.holder != Holder::Unknown {
                continue;
            }
            if let FutexKey::Shared { dev, inode, .. } = p.futex_key(w.uaddr, w.op) {
                for q in procfs::sharing(dev, inode, p.tgid) {
                    if !seen(q) && !out.contains(&q) {
                        out.push(q);
                    }
                }
            }
        }
        let orphan = view.threads.iter().any(|t| {
            t.wait
                .as_ref()
                .is_some_and(|pw| view.holder(pw.lock).is_none())
        });
        let ppid = p
            .threads
            .iter()
            .find(|t| t.tid == p.tgid)
            .and_then(|t| t.parent_tid);
        // Forked, not exec'd: the parent runs the same program.
        if orphan
            && let Some(pp) = ppid
            && !seen(pp)
            && procfs::exe(pp).is_some_and(|e| Some(e) == p.exe)
            && !out.contains(&pp)
        {
            out.push(pp);
        }
    }
    out
}
