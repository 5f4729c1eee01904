//! The wait-for graph as Graphviz DOT (`dot -Tsvg graph.dot > graph.svg`).
//!
//! Per process: boxes are threads, ellipses are locks; `thread -> lock`
//! means "waits for", `lock -> thread` means "held by". The edges are the
//! waits in progress when the report is written plus the edges of every
//! cycle a finding reported (a deadlock found earlier stays drawn after
//! its threads were killed). Cycle edges are red and bold. With
//! `--uprobes`, a second cluster holds the lock-order graph
//! (`a -> b`: b was taken while a was held); inverted pairs are red.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    io::Write,
};

use crate::{
    detect::{Finding, FindingKind},
    graph::{Holder, LockKind, WaitForGraph},
    model::{Model, Process},
    report::perfetto::{lock_label, thread_label},
};

/// Lock-order edges drawn per process (an interpreter takes hundreds).
const MAX_ORDER_EDGES: usize = 300;

fn kind_of(k: crate::event::AcqKind) -> LockKind {
    use crate::event::AcqKind as A;
    match k {
        A::Mutex => LockKind::Mutex,
        A::RwRead | A::RwWrite => LockKind::Rwlock,
        A::Semaphore => LockKind::Semaphore,
        A::PyLock => LockKind::PyLock,
        A::Unknown => LockKind::Unknown,
    }
}

/// A DOT string literal's contents: target text made printable, then quoted.
pub fn quote(s: &str) -> String {
    crate::report::escape(s)
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

#[derive(Default)]
struct Cluster {
    /// id -> (label lines, is thread, gone)
    nodes: BTreeMap<String, (Vec<String>, bool, bool)>,
    /// (from, to) -> (label, on a cycle)
    edges: BTreeMap<(String, String), (String, bool)>,
}

impl Cluster {
    fn edge(&mut self, a: &str, b: &str, label: String, cycle: bool) {
        let e = self
            .edges
            .entry((a.to_string(), b.to_string()))
            .or_insert((label, cycle));
        e.1 |= cycle;
    }
}

fn tnode(p: &Process, c: &mut Cluster, tid: u32) -> String {
    let id = format!("t{}_{tid}", p.tgid);
    let gone = !p.thread(tid).is_some_and(|t| t.alive());
    let mut label = vec![thread_label(p, tid)];
    if gone {
        label.push("(exited)".into());
    }
    c.nodes.entry(id.clone()).or_insert((label, true, gone));
    id
}

fn lnode(m: &Model, p: &Process, c: &mut Cluster, kind: LockKind, addr: u64) -> String {
    let id = format!("l{}_{addr:x}", p.tgid);
    let label = match m.symbols.get(&(p.tgid, addr)) {
        Some(_) => vec![lock_label(m, p.tgid, kind, addr), format!("{addr:#x}")],
        None => vec![lock_label(m, p.tgid, kind, addr)],
    };
    c.nodes.entry(id.clone()).or_insert((label, false, false));
    id
}

/// The graph as DOT text.
pub fn render(model: &Model, findings: &[Finding]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "digraph observer {{\n  rankdir=LR;\n  node [fontname=\"monospace\", fontsize=11];\n  edge [fontname=\"monospace\", fontsize=9];"
    );
    for p in model.processes.values() {
        let mut waits = Cluster::default();
        let mut order = Cluster::default();
        for f in findings.iter().filter(|f| f.tgid == p.tgid) {
            for e in &f.cycle {
                if f.kind == FindingKind::LockOrderInversion {
                    let Some(h) = &e.held else { continue };
                    let a = lnode(model, p, &mut order, h.kind, h.addr);
                    let b = lnode(model, p, &mut order, e.lock.kind, e.lock.addr);
                    order.edge(
                        &a,
                        &b,
                        format!("by {}", thread_label(p, e.waiter_tid)),
                        true,
                    );
                } else {
                    let w = tnode(p, &mut waits, e.waiter_tid);
                    let l = lnode(model, p, &mut waits, e.lock.kind, e.lock.addr);
                    let h = tnode(p, &mut waits, e.holder_tid);
                    waits.edge(&w, &l, "waits for".into(), true);
                    waits.edge(&l, &h, "held by".into(), true);
                }
            }
        }
        let g = WaitForGraph::build(p);
        for w in g.waits.values() {
            let t = tnode(p, &mut waits, w.tid);
            let l = lnode(model, p, &mut waits, w.target.kind, w.target.lock);
            let since = model.last_ns.saturating_sub(w.start_ns);
            waits.edge(
                &t,
                &l,
                format!("waits {}", crate::report::dur(since)),
                false,
            );
            match w.target.holder {
                Holder::Thread(h) | Holder::Gone(h) => {
                    let h = tnode(p, &mut waits, h);
                    waits.edge(&l, &h, "held by".into(), false);
                }
                Holder::Readers => {
                    let id = format!("r{}_{:x}", p.tgid, w.target.lock);
                    waits
                        .nodes
                        .insert(id.clone(), (vec!["readers".into()], true, false));
                    waits.edge(&l, &id, "read-held".into(), false);
                }
                Holder::Unknown => {}
            }
        }
        for (e, info) in p.lock_edges.iter().take(MAX_ORDER_EDGES) {
            let a = lnode(model, p, &mut order, kind_of(info.from_kind), e.from);
            let b = lnode(model, p, &mut order, kind_of(info.to_kind), e.to);
            order.edge(&a, &b, format!("by {}", thread_label(p, info.tid)), false);
        }
        if p.lock_edges.len() > MAX_ORDER_EDGES {
            let id = format!("more{}", p.tgid);
            let more = p.lock_edges.len() - MAX_ORDER_EDGES;
            order.nodes.insert(
                id,
                (
                    vec![format!("{more} more lock-order edges not drawn")],
                    true,
                    true,
                ),
            );
        }
        let cmd = p.cmdline.join(" ");
        emit(
            &mut s,
            &format!("cluster_wait_{}", p.tgid),
            &format!("process {} {cmd}: wait-for graph", p.tgid),
            &waits,
        );
        if !order.nodes.is_empty() {
            emit(
                &mut s,
                &format!("cluster_order_{}", p.tgid),
                &format!(
                    "process {} {cmd}: lock order (b taken while a held)",
                    p.tgid
                ),
                &order,
            );
        }
    }
    s.push_str("}\n");
    s
}

fn emit(s: &mut String, id: &str, label: &str, c: &Cluster) {
    let _ = writeln!(s, "  subgraph {id} {{\n    label=\"{}\";", quote(label));
    let cyc: BTreeSet<&String> = c
        .edges
        .iter()
        .filter(|(_, v)| v.1)
        .flat_map(|((a, b), _)| [a, b])
        .collect();
    for (nid, (label, thread, gone)) in &c.nodes {
        let shape = if *thread { "box" } else { "ellipse" };
        let text: Vec<String> = label.iter().map(|l| quote(l)).collect();
        let mut attrs = format!("shape={shape}, label=\"{}\"", text.join("\\n"));
        if *gone {
            attrs.push_str(", style=dashed");
        }
        if cyc.contains(nid) {
            attrs.push_str(", color=red");
        }
        let _ = writeln!(s, "    \"{}_{nid}\" [{attrs}];", id_prefix(id));
    }
    for ((a, b), (label, cycle)) in &c.edges {
        let style = if *cycle {
            ", color=red, fontcolor=red, penwidth=2.5"
        } else {
            ""
        };
        let _ = writeln!(
            s,
            "    \"{p}_{a}\" -> \"{p}_{b}\" [label=\"{}\"{style}];",
            quote(label),
            p = id_prefix(id)
        );
    }
    s.push_str("  }\n");
}

/// Node ids are per cluster: a lock can be in both graphs.
fn id_prefix(cluster: &str) -> &str {
    cluster.trim_start_matches("cluster_")
}

pub fn write(model: &Model, findings: &[Finding], w: &mut impl Write) -> std::io::Result<()> {
    w.write_all(render(model, findings).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::pictures_tests::{abba_model, abba_model_named};

    #[test]
    fn abba_cycle_edges_are_red() {
        let (m, f) = abba_model();
        let d = render(&m, &f);
        assert!(
            d.contains(
                "\"wait_10_t10_11\" -> \"wait_10_l10_5028\" [label=\"waits for\", color=red"
            ),
            "{d}"
        );
        assert!(
            d.contains("\"wait_10_l10_5028\" -> \"wait_10_t10_12\" [label=\"held by\", color=red"),
            "{d}"
        );
        assert!(d.contains("label=\"mutex lock_a\\n0x5000\""), "{d}");
        assert!(d.contains("label=\"beta [12]\""), "{d}");
    }

    #[test]
    fn target_names_cannot_break_out_of_a_label() {
        let (m, f) = abba_model_named("x\"];evil[\"\n");
        let d = render(&m, &f);
        assert!(d.contains("label=\"x\\\"];evil[\\\"\\\\x0a [12]\""), "{d}");
    }
}
