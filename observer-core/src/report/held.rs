//! The "held at attach" section: locks held since before `attach`, whose
//! acquisition (and so, for primitives that record no owner, whose holder)
//! observation could not see.

use std::fmt::Write as _;

use serde::Serialize;

use super::escape;
use crate::{
    event::{HeldEvidence, Tid},
    graph::LockKind,
    model::{Model, Process},
};

#[derive(Serialize)]
pub struct HeldOut {
    pub tgid: u32,
    pub lock: u64,
    pub lock_hex: String,
    pub symbol: Option<String>,
    pub kind: LockKind,
    /// The holder the lock's memory names (null: it records none).
    pub holder: Option<Tid>,
    pub holder_name: Option<String>,
    /// Threads seen waiting for it.
    pub waiters: Vec<Tid>,
    pub evidence: HeldEvidence,
    pub first_ns: u64,
}

fn name_of(p: &Process, tid: Tid) -> Option<String> {
    p.threads
        .iter()
        .rev()
        .find(|t| t.tid == tid)
        .map(|t| t.name().to_string())
}

/// Every process's held-at-attach locks, for the JSON report.
pub fn json(model: &Model) -> Vec<HeldOut> {
    let mut out = Vec::new();
    for p in model.processes.values() {
        for (&lock, h) in &p.held_at_attach {
            out.push(HeldOut {
                tgid: p.tgid,
                lock,
                lock_hex: format!("{lock:#x}"),
                symbol: model.symbols.get(&(p.tgid, lock)).cloned(),
                kind: h.kind,
                holder: h.holder,
                holder_name: h.holder.and_then(|t| name_of(p, t)),
                waiters: h.waiters.clone(),
                evidence: h.evidence,
                first_ns: h.first_ns,
            });
        }
    }
    out
}

/// The text section of process `p` (nothing when it has none).
pub fn text(s: &mut String, model: &Model, p: &Process) {
    if p.held_at_attach.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\nHELD AT ATTACH: {} lock(s) held before observation began (acquisition not seen: \
         no hold time or lock order for them)",
        p.held_at_attach.len()
    );
    let thread = |t: Tid| match name_of(p, t) {
        Some(n) => format!("{t} \"{}\"", escape(&n)),
        None => t.to_string(),
    };
    for (&lock, h) in &p.held_at_attach {
        let name = match model.symbols.get(&(p.tgid, lock)) {
            Some(sym) => format!("{} ({lock:#x})", escape(sym)),
            None => format!("{lock:#x}"),
        };
        let holder = match h.holder {
            Some(t) if p.thread(t).is_some_and(|x| x.alive()) => format!("held by {}", thread(t)),
            Some(t) => format!("held by {t} (no longer a live thread)"),
            None => "holder unknown (the lock records no owner)".into(),
        };
        let waiters: Vec<String> = h.waiters.iter().map(|&t| thread(t)).collect();
        let how = match h.evidence {
            HeldEvidence::WaitingAtAttach => "waiting at attach",
            HeldEvidence::NoAcquisitionSeen => "no acquisition seen since attach",
        };
        let _ = writeln!(
            s,
            "  {} {name}: {holder}; waited for by {} ({how})",
            h.kind.as_str(),
            waiters.join(", ")
        );
    }
}
