//! Replay: a recorded event stream through the model and the
//! detectors, judged where the live session judged (its `scan` events).
//! Addresses the live session could not name are symbolized from the
//! recorded mappings and the files they name, when those are still here.

use crate::{detect::Limits, engine::Engine, event::Event, model::Model, vocab::frames::MapEntry};

/// Names the live run could not give, from the recorded mappings: the
/// binary's offline symbolizer. `()` names nothing.
pub trait Namer {
    /// A process's file mappings as recorded.
    fn mappings(&mut self, tgid: u32, maps: &[MapEntry]);
    /// Events naming what the model holds unnamed (symbols, frames).
    fn names(&mut self, model: &Model) -> Vec<Event>;
}

impl Namer for () {
    fn mappings(&mut self, _: u32, _: &[MapEntry]) {}
    fn names(&mut self, _: &Model) -> Vec<Event> {
        Vec::new()
    }
}

/// How often replay runs the detectors, in event time, for streams
/// without `scan` events and without a header (the live scan period).
pub const REPLAY_CHECK_NS: u64 = 25_000_000;

/// Replays `events`, judging every `check_ns` of event time when the stream
/// has no `scan` events; returns the engine with its model and findings.
pub fn replay(events: &[Event], limits: Limits, check_ns: u64, names: &mut dyn Namer) -> Engine {
    let scans = events.iter().any(|e| matches!(e, Event::Scan { .. }));
    let mut engine = Engine::new(limits, ());
    let mut have_maps = false;
    // Names the live run could not give, from the recorded mappings.
    let name = |e: &mut Engine, names: &mut dyn Namer, have_maps: bool| {
        if have_maps {
            for ev in names.names(&e.model) {
                apply(e, &ev);
            }
        }
    };
    let mut last_check = 0u64;
    // The live run fed what it learnt while judging a scan (symbols, lock
    // owners, stacks: stamped with the scan's time, or not at all, or
    // mappings) before it accepted findings: judge once those are applied
    // too. A wait that ended or changed at the scan's time after it means
    // the live confirmation failed: it reported nothing there.
    let mut pending: Option<(u64, bool)> = None;
    for ev in events {
        if let Some((at, rejected)) = pending {
            // Mappings are stamped when read (the model ignores them).
            let later =
                ev.ts_ns().is_some_and(|t| t != at) && !matches!(ev, Event::Mappings { .. });
            if matches!(ev, Event::Scan { .. }) || later {
                if !rejected {
                    name(&mut engine, names, have_maps);
                    engine.check(at);
                }
                pending = None;
            } else if matches!(ev, Event::WaitEnd { .. } | Event::WaitWords { .. }) {
                pending = Some((at, true));
            }
        }
        if let Event::Mappings { tgid, maps, .. } = ev {
            names.mappings(*tgid, maps);
            have_maps = true;
        }
        match ev {
            Event::Scan { ts_ns } => {
                apply(&mut engine, ev);
                pending = Some((*ts_ns, false));
            }
            _ if !scans => {
                if let Some(ts) = ev
                    .ts_ns()
                    .filter(|&ts| ts >= last_check.saturating_add(check_ns))
                {
                    if last_check != 0 {
                        name(&mut engine, names, have_maps);
                        let now = engine.model.last_ns;
                        engine.check(now);
                    }
                    last_check = ts;
                }
                apply(&mut engine, ev);
            }
            _ => apply(&mut engine, ev),
        }
    }
    if let Some((at, false)) = pending {
        name(&mut engine, names, have_maps);
        engine.check(at);
    }
    name(&mut engine, names, have_maps);
    let end = engine.model.last_ns;
    engine.finish(end);
    engine
}

/// Replay feeds the engine as a live run does (`Engine::apply`); its sink
/// is `()`, which cannot fail.
fn apply(engine: &mut Engine, ev: &Event) {
    let _ = engine.apply(ev);
}
