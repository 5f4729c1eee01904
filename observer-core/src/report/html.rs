//! One self-contained HTML page (no script, no network, no external
//! assets): the findings with each cycle drawn as inline SVG, the threads
//! and the contended locks. Every piece of target data is escaped.

use std::{f64::consts::PI, fmt::Write as _, io::Write};

use crate::{
    detect::{Finding, FindingKind, LockInfo},
    model::{Model, Process},
    report::{dur, perfetto::thread_label},
};

/// Rows of a process's thread table (a churning program has thousands).
const MAX_THREAD_ROWS: usize = 2_000;

/// Target text made printable, then safe inside HTML text and attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in crate::report::escape(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222;max-width:75em}\
h1{font-size:1.4em}h2{font-size:1.2em;border-bottom:1px solid #ccc;margin-top:2em}\
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}\
th{background:#f0f0f0}.hang{color:#b00}.finding{border-left:4px solid #b00;padding-left:1em;margin:1em 0}\
.warn{border-left-color:#d80}pre{background:#f7f7f7;padding:.5em;overflow-x:auto;font-size:.85em}\
code,td.m{font-family:monospace}svg text{font-family:monospace;font-size:12px}";

struct Node {
    label: String,
    thread: bool,
}

/// An edge between nodes (by index) with its label.
pub type Arc = (usize, usize, String);

/// Draws a cycle: nodes on a circle, edges as arcs bent outward (so a pair
/// of opposite edges stays apart), red arrows with labels.
pub fn cycle_svg(nodes: &[(String, bool)], edges: &[Arc]) -> String {
    let n = nodes.len().max(1);
    let nodes: Vec<Node> = nodes
        .iter()
        .map(|(l, t)| Node {
            label: clip(l, 34),
            thread: *t,
        })
        .collect();
    let r = 110.0 + 28.0 * n as f64;
    let w = 2.0 * r + 420.0;
    let h = 2.0 * r + 120.0;
    let (cx, cy) = (w / 2.0, h / 2.0);
    let pos: Vec<(f64, f64)> = (0..n)
        .map(|i| {
            let a = -PI / 2.0 + 2.0 * PI * i as f64 / n as f64;
            (cx + r * a.cos(), cy + r * a.sin())
        })
        .collect();
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" role=\"img\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\">\
<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"8\" markerHeight=\"8\" orient=\"auto-start-reverse\">\
<path d=\"M0,0 L10,5 L0,10 z\" fill=\"#c00\"/></marker></defs>"
    );
    let half = |i: usize| -> (f64, f64) {
        let l = nodes.get(i).map(|x| x.label.chars().count()).unwrap_or(4) as f64;
        (l * 3.8 + 14.0, 16.0)
    };
    for (a, b, label) in edges {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (pos.get(*a), pos.get(*b)) else {
            continue;
        };
        // Bend outward from the centre: control point pushed away from it.
        let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let (dx, dy) = (mx - cx, my - cy);
        let d = (dx * dx + dy * dy).sqrt().max(1.0);
        let bend = if n <= 2 { 0.55 * r } else { 0.25 * r };
        // Two nodes sit one above the other: one edge bends right, the other left.
        let (qx, qy) = if n <= 2 {
            (if a < b { mx + bend } else { mx - bend }, my)
        } else {
            (mx + dx / d * bend, my + dy / d * bend)
        };
        // Start and end at the node boxes' edges along the curve.
        let (s1, e1) = (
            trim(x1, y1, qx, qy, half(*a)),
            trim(x2, y2, qx, qy, half(*b)),
        );
        let _ = write!(
            s,
            "<path d=\"M{:.1},{:.1} Q{qx:.1},{qy:.1} {:.1},{:.1}\" fill=\"none\" stroke=\"#c00\" stroke-width=\"2.5\" marker-end=\"url(#arrow)\"/>",
            s1.0, s1.1, e1.0, e1.1
        );
        let (mut lx, ly) = (
            0.25 * x1 + 0.5 * qx + 0.25 * x2,
            0.25 * y1 + 0.5 * qy + 0.25 * y2,
        );
        // Beside the curve's apex, on its outer side.
        let anchor = if lx > cx + 1.0 {
            lx += 6.0;
            "start"
        } else if lx < cx - 1.0 {
            lx -= 6.0;
            "end"
        } else {
            "middle"
        };
        let _ = write!(
            s,
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" text-anchor=\"{anchor}\" fill=\"#c00\" stroke=\"#fff\" stroke-width=\"4\" paint-order=\"stroke\">{}</text>",
            esc(label)
        );
    }
    for (i, node) in nodes.iter().enumerate() {
        let (x, y) = pos[i];
        let (hw, hh) = half(i);
        if node.thread {
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"4\" fill=\"#fff4f4\" stroke=\"#c00\" stroke-width=\"2\"/>",
                x - hw,
                y - hh,
                2.0 * hw,
                2.0 * hh
            );
        } else {
            let _ = write!(
                s,
                "<ellipse cx=\"{x:.1}\" cy=\"{y:.1}\" rx=\"{hw:.1}\" ry=\"{hh:.1}\" fill=\"#f4f4ff\" stroke=\"#333\" stroke-width=\"1.5\"/>"
            );
        }
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            y + 4.0,
            esc(&node.label)
        );
    }
    s.push_str("</svg>");
    s
}

/// Where the segment from a node's centre toward (tx, ty) leaves its box.
fn trim(x: f64, y: f64, tx: f64, ty: f64, (hw, hh): (f64, f64)) -> (f64, f64) {
    let (dx, dy) = (tx - x, ty - y);
    if dx == 0.0 && dy == 0.0 {
        return (x, y);
    }
    let t = (hw / dx.abs().max(1e-9))
        .min(hh / dy.abs().max(1e-9))
        .min(1.0);
    (x + dx * t, y + dy * t)
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// "mutex lock_b": the finding's symbol, or one learnt later.
fn lock_text(m: &Model, tgid: u32, l: &LockInfo) -> String {
    match l.symbol.as_ref().or(m.symbols.get(&(tgid, l.addr))) {
        Some(s) => format!("{} {s}", l.kind.as_str()),
        None => format!("{} {}", l.kind.as_str(), l.addr_hex),
    }
}

/// The nodes and edges of a finding's cycle (empty if it has none).
fn cycle_of(m: &Model, p: Option<&Process>, f: &Finding) -> (Vec<(String, bool)>, Vec<Arc>) {
    let mut nodes: Vec<(String, bool)> = Vec::new();
    let mut edges = Vec::new();
    let idx = |label: String, thread: bool, nodes: &mut Vec<(String, bool)>| -> usize {
        match nodes.iter().position(|n| n.0 == label && n.1 == thread) {
            Some(i) => i,
            None => {
                nodes.push((label, thread));
                nodes.len() - 1
            }
        }
    };
    let name = |tid: u32| match p {
        Some(p) => thread_label(p, tid),
        None => f
            .threads
            .iter()
            .find(|t| t.tid == tid)
            .map(|t| format!("{} [{tid}]", t.name))
            .unwrap_or_else(|| format!("[{tid}]")),
    };
    for e in &f.cycle {
        if f.kind == FindingKind::LockOrderInversion {
            let Some(h) = &e.held else { continue };
            let a = idx(lock_text(m, f.tgid, h), false, &mut nodes);
            let b = idx(lock_text(m, f.tgid, &e.lock), false, &mut nodes);
            edges.push((a, b, format!("then, by {}", name(e.waiter_tid))));
        } else {
            let w = idx(name(e.waiter_tid), true, &mut nodes);
            let l = idx(lock_text(m, f.tgid, &e.lock), false, &mut nodes);
            let h = idx(name(e.holder_tid), true, &mut nodes);
            edges.push((w, l, "waits for".into()));
            edges.push((l, h, "held by".into()));
        }
    }
    (nodes, edges)
}

fn finding_html(s: &mut String, m: &Model, f: &Finding) {
    let kind = serde_json::to_value(f.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let class = if f.kind.is_hang() {
        "finding"
    } else {
        "finding warn"
    };
    let _ = write!(
        s,
        "<div class=\"{class}\" id=\"finding-{}\"><h3 class=\"{}\">{} in process {}</h3><p>{}</p>",
        esc(&kind),
        if f.kind.is_hang() { "hang" } else { "" },
        esc(&kind.replace('_', " ")),
        f.tgid,
        esc(&f.summary())
    );
    let p = m.process(f.tgid);
    let (nodes, edges) = cycle_of(m, p, f);
    if !edges.is_empty() {
        s.push_str(&cycle_svg(&nodes, &edges));
    }
    if !f.threads.is_empty() {
        s.push_str("<table><tr><th>tid</th><th>thread</th><th>waits for</th><th>waited</th><th>stack (innermost first)</th></tr>");
        for t in &f.threads {
            let waits = t
                .waits_for
                .as_ref()
                .map(|l| lock_text(m, f.tgid, l))
                .unwrap_or_default();
            let waited = t
                .waited_ns
                .map(|n| {
                    if t.waited_since_before_observation {
                        format!(">= {}", dur(n))
                    } else {
                        dur(n)
                    }
                })
                .unwrap_or_default();
            // One stack in the order it ran (Python frames where the eval
            // loop runs them), as the text report shows it.
            let stack = super::python::stack_lines(&t.frames, true).join("\n");
            let _ = write!(
                s,
                "<tr><td class=\"m\">{}</td><td>{}</td><td class=\"m\">{}</td><td>{}</td><td>{}</td></tr>",
                t.tid,
                esc(&t.name),
                esc(&waits),
                esc(&waited),
                if stack.is_empty() {
                    String::new()
                } else {
                    let lines: Vec<String> = stack.lines().map(esc).collect();
                    format!("<pre>{}</pre>", lines.join("\n"))
                }
            );
        }
        s.push_str("</table>");
    }
    s.push_str("</div>");
}

fn threads_html(s: &mut String, m: &Model, p: &Process) {
    let origin = p.observed_from_ns;
    let rel = |ns: u64| format!("+{}", dur(ns.saturating_sub(origin)));
    let _ = write!(
        s,
        "<h2>Threads of process {} <code>{}</code></h2><table><tr><th>tid</th><th>name</th><th>created</th><th>by</th><th>ended</th><th>state at the end</th></tr>",
        p.tgid,
        esc(&p.cmdline.join(" "))
    );
    let g = crate::graph::WaitForGraph::build(p);
    for t in p.threads.iter().take(MAX_THREAD_ROWS) {
        let created = match (t.preexisting, t.start_ns) {
            (true, _) => "before observation".to_string(),
            (false, Some(s)) => rel(s),
            (false, None) => String::new(),
        };
        let by = t.parent_tid.map(|x| thread_label(p, x)).unwrap_or_default();
        let ended = t.exit_ns.map(rel).unwrap_or_default();
        let state = match (t.exit_code, g.waits.get(&t.tid)) {
            (Some(c), _) => format!("exited ({})", crate::model::describe_exit(c)),
            (None, Some(w)) => format!(
                "waiting for {}",
                crate::report::perfetto::lock_label(m, p.tgid, w.target.kind, w.target.lock)
            ),
            (None, None) if t.stuck.is_some() => "not running (stuck)".into(),
            (None, None) => "alive".into(),
        };
        let _ = write!(
            s,
            "<tr><td class=\"m\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            t.tid,
            esc(t.name()),
            esc(&created),
            esc(&by),
            esc(&ended),
            esc(&state)
        );
    }
    s.push_str("</table>");
    if p.threads.len() > MAX_THREAD_ROWS {
        let _ = write!(
            s,
            "<p>{} more threads not listed (the JSON report has them all).</p>",
            p.threads.len() - MAX_THREAD_ROWS
        );
    }
    if !p.locks.is_empty() {
        s.push_str("<h3>Contended futexes (kernel totals of waits that slept)</h3><table><tr><th>address</th><th>symbol</th><th>op</th><th>waits</th><th>total</th><th>max</th></tr>");
        let mut locks: Vec<_> = p.locks.values().collect();
        locks.sort_by_key(|l| std::cmp::Reverse(l.total_ns));
        for l in locks.iter().take(50) {
            let sym = m
                .symbols
                .get(&(p.tgid, l.uaddr))
                .cloned()
                .unwrap_or_default();
            let _ = write!(
                s,
                "<tr><td class=\"m\">{:#x}</td><td class=\"m\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                l.uaddr,
                esc(&sym),
                esc(&crate::event::futex::name(l.op)),
                l.count,
                dur(l.total_ns),
                dur(l.max_ns)
            );
        }
        s.push_str("</table>");
    }
}

/// The page.
pub fn render(model: &Model, findings: &[Finding]) -> String {
    let title = model
        .processes
        .values()
        .next()
        .map(|p| p.cmdline.join(" "))
        .unwrap_or_default();
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">\
<link rel=\"icon\" href=\"data:,\"><title>observer: {}</title><style>{STYLE}</style></head><body>\
<h1>observer report: <code>{}</code></h1>",
        esc(&title),
        esc(&title)
    );
    let span = model
        .first_ns
        .map(|f| dur(model.last_ns.saturating_sub(f)))
        .unwrap_or_default();
    let _ = write!(
        s,
        "<p>observer {} &middot; observed for {} &middot; {} finding(s)</p>",
        env!("CARGO_PKG_VERSION"),
        esc(&span),
        findings.len()
    );
    s.push_str("<h2>Findings</h2>");
    if findings.is_empty() {
        s.push_str("<p>No findings.</p>");
    }
    // Hangs first.
    let mut fs: Vec<&Finding> = findings.iter().collect();
    fs.sort_by_key(|f| !f.kind.is_hang());
    for f in fs {
        finding_html(&mut s, model, f);
    }
    for p in model.processes.values() {
        threads_html(&mut s, model, p);
    }
    if model.drops.any() {
        let _ = write!(
            s,
            "<p class=\"hang\">The kernel side dropped data: {}</p>",
            esc(&serde_json::to_string(&model.drops).unwrap_or_default())
        );
    }
    s.push_str("</body></html>\n");
    s
}

pub fn write(model: &Model, findings: &[Finding], w: &mut impl Write) -> std::io::Result<()> {
    w.write_all(render(model, findings).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::pictures_tests::{abba_model, abba_model_named};

    #[test]
    fn abba_page_has_the_cycle_and_threads() {
        let (m, f) = abba_model();
        let h = render(&m, &f);
        assert!(h.contains("<svg"), "{h}");
        assert!(h.contains(">alpha [11]</text>"), "{h}");
        assert!(h.contains(">mutex lock_b</text>"), "{h}");
        assert_eq!(h.matches("marker-end").count(), 4, "{h}");
        assert!(!h.contains("http://") || !h.contains("src=\"http"));
    }

    #[test]
    fn two_node_cycle_edges_bend_apart() {
        let svg = cycle_svg(
            &[("self [1]".into(), true), ("mutex m".into(), false)],
            &[(0, 1, "waits for".into()), (1, 0, "held by".into())],
        );
        let qx: Vec<f64> = svg
            .match_indices(" Q")
            .map(|(i, _)| {
                let rest = &svg[i + 2..];
                rest[..rest.find(',').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(qx.len(), 2);
        assert!((qx[0] - qx[1]).abs() > 100.0, "{svg}");
    }

    #[test]
    fn target_text_is_escaped() {
        let (m, f) = abba_model_named("<script>alert(1)</script>");
        let h = render(&m, &f);
        assert!(!h.contains("<script>"), "{h}");
        assert!(h.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }
}
