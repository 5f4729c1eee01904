//! The one engine every mode drives: events in, findings out.
//!
//! `run`, `attach`, `dump`, `replay` and the daemon are sources of events
//! and sinks of findings around it. The engine applies each event to the
//! model and hands it to its event sink (a recording, the live echo, the
//! daemon's flight recorder); it judges once per scan (`candidates`), and
//! remembers what it reported (`accept`). A `Scan` event marks in the
//! stream where the live run judged, and the recording's header carries
//! its limits, so replay judges the same state with the same limits.

use anyhow::Result;

use crate::{
    detect::{Detectors, Finding, Limits},
    event::Event,
    model::Model,
};

/// Where the engine's events go besides the model.
pub trait Sink {
    /// Called with each event after the model applied it.
    fn event(&mut self, model: &Model, ev: &Event) -> Result<()>;

    /// Called at every scan, fed or not: time passed (`now_ns`).
    fn tick(&mut self, _now_ns: u64) -> Result<()> {
        Ok(())
    }
}

/// No sink: replay, dump.
impl Sink for () {
    fn event(&mut self, _: &Model, _: &Event) -> Result<()> {
        Ok(())
    }
}

/// A sink that may be absent (the daemon's flight recorder, when off).
impl<S: Sink> Sink for Option<S> {
    fn event(&mut self, model: &Model, ev: &Event) -> Result<()> {
        match self {
            Some(s) => s.event(model, ev),
            None => Ok(()),
        }
    }

    fn tick(&mut self, now_ns: u64) -> Result<()> {
        match self {
            Some(s) => s.tick(now_ns),
            None => Ok(()),
        }
    }
}

pub struct Engine<S: Sink = ()> {
    pub model: Model,
    pub detectors: Detectors,
    pub sink: S,
    /// Events were applied since the last `Scan` marked.
    fed_since_scan: bool,
    /// Time of the last `Scan` marked.
    scan_marked_ns: u64,
}

impl<S: Sink> Engine<S> {
    pub fn new(limits: Limits, sink: S) -> Engine<S> {
        Engine {
            model: Model::new(),
            detectors: Detectors::new(limits),
            sink,
            fed_since_scan: false,
            scan_marked_ns: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.detectors.limits
    }

    /// Every finding reported so far.
    pub fn findings(&self) -> &[Finding] {
        &self.detectors.findings
    }

    pub fn apply(&mut self, ev: &Event) -> Result<()> {
        self.fed_since_scan = true;
        self.model.apply(ev);
        self.sink.event(&self.model, ev)
    }

    pub fn apply_all(&mut self, evs: &mut Vec<Event>) -> Result<()> {
        for ev in evs.drain(..) {
            self.apply(&ev)?;
        }
        Ok(())
    }

    /// The one judgement of a scan: findings not reported yet, nothing
    /// recorded. Thread details (names, stacks) are filled from the model
    /// again by `accept`, once the live run has taken the stacks.
    pub fn candidates(&self, now_ns: u64) -> Vec<Finding> {
        self.detectors.candidates(&self.model, now_ns)
    }

    /// Marks where the detectors judged, after the events fed for that
    /// judgement (names, owners, stacks), so that replay judges the same
    /// state: always when something is reported (time alone may have made
    /// it: a wait grew long), else when events came since the last mark.
    pub fn mark_scan(&mut self, now_ns: u64, reporting: bool) -> Result<()> {
        self.sink.tick(now_ns)?;
        if (reporting || self.fed_since_scan) && self.scan_marked_ns != now_ns {
            self.apply(&Event::Scan { ts_ns: now_ns })?;
            self.scan_marked_ns = now_ns;
            self.fed_since_scan = false;
        }
        Ok(())
    }

    /// Fills the candidates' threads from the model as it is now (names,
    /// stacks taken since they were judged) and records them as reported;
    /// returns those that are new.
    pub fn accept(&mut self, mut found: Vec<Finding>) -> Vec<Finding> {
        for f in &mut found {
            crate::detect::refresh_threads(&self.model, f);
        }
        self.detectors.accept(found)
    }

    /// Judges and accepts in one step (replay, dump).
    pub fn check(&mut self, now_ns: u64) -> Vec<Finding> {
        let c = self.candidates(now_ns);
        self.accept(c)
    }

    /// The last judgement, with what only the end of observation can tell.
    pub fn finish(&mut self, now_ns: u64) -> Vec<Finding> {
        let c = self.detectors.candidates_at_end(&self.model, now_ns);
        self.accept(c)
    }
}
