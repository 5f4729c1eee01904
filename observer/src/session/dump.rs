//! `observer dump -p PID`: one look at a process through /proc, no BPF
//! (like jstack or py-spy dump): its threads, the futex waits they sit in,
//! judged once by the engine.

use std::collections::HashSet;

use anyhow::{Context, Result, bail};

use super::{
    enrich::{all_stacks, python_events, stack_events, symbol_events},
    target::seeded_tids,
};
use crate::{
    detect::Limits, engine::Engine, event::Event, report, source::procfs, symbol::Symbolizer,
};

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
    let now = procfs::mono_ns();
    let seed =
        procfs::seed_threads(pid).with_context(|| format!("cannot read the threads of {pid}"))?;
    let tids = seeded_tids(&seed);
    // Without ptrace rights /proc/PID/task/TID/syscall is unreadable.
    if let Some(&t) = tids.first() {
        std::fs::read_to_string(format!("/proc/{pid}/task/{t}/syscall")).with_context(|| {
            format!("cannot read /proc/{pid}/task/{t}/syscall (needs root or CAP_SYS_PTRACE)")
        })?;
    }
    let mut engine = Engine::new(Limits::new(u64::MAX), ());
    engine.apply(&procfs::start_event(pid, now, true))?;
    let mut evs = seed;
    evs.extend(crate::source::snapshot::snapshot_waits(pid, tids, now));
    engine.apply_all(&mut evs)?;
    let mut symbols = Symbolizer::new();
    let mut evs = symbol_events(&engine.model, &mut symbols, &mut HashSet::new());
    for mut e in python_events(&engine.model, &mut symbols, pid, now).unwrap_or_default() {
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
    engine.apply_all(&mut evs)?;
    let found = engine.candidates(now);
    let mut evs = stack_events(&engine.model, &mut symbols, None, &found, now, native);
    engine.apply_all(&mut evs)?;
    if native {
        let mut evs = all_stacks(&engine.model, &mut symbols, pid, now);
        engine.apply_all(&mut evs)?;
    }
    engine.accept(found);
    if json {
        let r = report::dump::json(&engine.model, engine.findings(), native);
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!(
            "{}",
            report::dump::text(&engine.model, engine.findings(), native)
        );
    }
    Ok(crate::exit::of_findings(engine.findings()))
}
