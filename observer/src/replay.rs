//! `observer replay`: a recorded event stream through the model and the
//! detectors, judged where the live session judged (its `scan` events).
//! Addresses the live session could not name are symbolized from the
//! recorded mappings and the files they name, when those are still here.

use std::collections::HashSet;

use crate::{
    detect::{Engine, Limits},
    event::Event,
    model::Model,
    symbol::Symbolizer,
};

/// How often replay runs the detectors, in event time, for streams
/// without `scan` events (the live scan period).
const REPLAY_CHECK_NS: u64 = 25_000_000;

/// Replays `events`; returns the model and the engine with its findings.
pub fn replay(events: &[Event], limits: Limits) -> (Model, Engine) {
    let scans = events.iter().any(|e| matches!(e, Event::Scan { .. }));
    let mut m = Model::new();
    let mut engine = Engine::new(limits);
    let mut symbols = Symbolizer::offline();
    let mut tried = HashSet::new();
    let mut have_maps = false;
    let mut name = |m: &mut Model, symbols: &mut Symbolizer, have_maps: bool| {
        if have_maps {
            for e in crate::session::symbol_events(m, symbols, &mut tried) {
                m.apply(&e);
            }
        }
    };
    let mut last_check = 0u64;
    for ev in events {
        if let Event::Mappings { tgid, maps, .. } = ev {
            symbols.add_recorded(*tgid, maps.clone());
            have_maps = true;
        }
        match ev {
            Event::Scan { ts_ns } => {
                m.apply(ev);
                name(&mut m, &mut symbols, have_maps);
                engine.check(&m, *ts_ns);
            }
            _ if !scans => {
                if let Some(ts) = ev.ts_ns().filter(|&ts| ts >= last_check + REPLAY_CHECK_NS) {
                    if last_check != 0 {
                        name(&mut m, &mut symbols, have_maps);
                        engine.check(&m, m.last_ns);
                    }
                    last_check = ts;
                }
                m.apply(ev);
            }
            _ => m.apply(ev),
        }
    }
    name(&mut m, &mut symbols, have_maps);
    engine.finish(&m, m.last_ns);
    (m, engine)
}

/// Reads a recording (JSON lines, as `--record` writes them).
pub fn read(text: &str) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let ev: Event = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("line {}: not an observer event: {e}", i + 1))?;
        events.push(ev);
    }
    Ok(events)
}
