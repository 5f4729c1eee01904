//! The live thread count grows without bound over the observation: a pool
//! that spawns per request and never reaps. Judged by a least-squares line
//! through the live count over time.

use std::collections::BTreeMap;

use super::{Ctx, Detail, Detector, Finding, FindingKind};
use crate::model::Process;

pub struct ThreadLeak;

/// Observation shorter than this says nothing about a trend.
const MIN_SPAN_NS: u64 = 1_500_000_000;
const SAMPLES: u64 = 30;
/// Growth that counts: at least this many more threads, this fast, this steadily.
const MIN_GROWTH: i64 = 10;
const MIN_SLOPE_PER_S: f64 = 2.0;
const MIN_R2: f64 = 0.8;

fn live_at(p: &Process, ts: u64) -> i64 {
    p.threads
        .iter()
        .filter(|t| t.start_ns.is_none_or(|s| s <= ts) && t.exit_ns.is_none_or(|e| e > ts))
        .count() as i64
}

/// (slope per second, r^2) of the points.
fn fit(pts: &[(f64, f64)]) -> (f64, f64) {
    let n = pts.len() as f64;
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let syy: f64 = pts.iter().map(|p| (p.1 - my).powi(2)).sum();
    if sxx == 0.0 || syy == 0.0 {
        return (0.0, 0.0);
    }
    let slope = sxy / sxx;
    (slope, (sxy * sxy) / (sxx * syy))
}

impl Detector for ThreadLeak {
    fn check(&self, cx: &Ctx) -> Vec<Finding> {
        let p = cx.process;
        // From the start of the running image: `run` holds the child before
        // its exec (while the probes attach), a flat stretch that is not the
        // program's.
        let t0 = p
            .exec_ns
            .map_or(p.observed_from_ns, |e| e.max(p.observed_from_ns));
        let t1 = p.observed_to_ns.unwrap_or(cx.now_ns).min(cx.now_ns);
        if t1 <= t0 || t1 - t0 < MIN_SPAN_NS {
            return Vec::new();
        }
        let pts: Vec<(f64, f64)> = (0..=SAMPLES)
            .map(|i| {
                // u128: a span of any length (a corrupt recording's) times i.
                let ts = t0 + ((t1 - t0) as u128 * i as u128 / SAMPLES as u128) as u64;
                ((ts - t0) as f64 / 1e9, live_at(p, ts) as f64)
            })
            .collect();
        let (slope, r2) = fit(&pts);
        let growth = pts.last().unwrap().1 as i64 - pts[0].1 as i64;
        if growth < MIN_GROWTH || slope < MIN_SLOPE_PER_S || r2 < MIN_R2 {
            return Vec::new();
        }
        // Survivors: created during observation and alive at the end.
        let survivors: Vec<_> = p
            .threads
            .iter()
            .filter(|t| t.start_ns.is_some_and(|s| s > t0) && t.exit_ns.is_none_or(|e| e > t1))
            .collect();
        let mut by_site: BTreeMap<String, usize> = BTreeMap::new();
        for t in &survivors {
            *by_site
                .entry(
                    cx.site(t.create_site)
                        .unwrap_or_else(|| "unknown site".into()),
                )
                .or_default() += 1;
        }
        let mut sites: Vec<(String, usize)> = by_site.into_iter().collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.1));
        sites.truncate(3);
        vec![Finding {
            kind: FindingKind::ThreadLeak,
            tgid: p.tgid,
            detected_ns: cx.now_ns,
            detail: Detail::ThreadLeak {
                from: pts[0].1,
                to: pts.last().unwrap().1,
                span_ns: t1 - t0,
                slope_per_s: slope,
                r2,
                survivors: survivors.len(),
                sites,
            },
            threads: survivors
                .iter()
                .map(|t| cx.with_creation_stack(cx.thread(t.tid), t))
                .collect(),
            locks: Vec::new(),
            cycle: Vec::new(),
            tasks: Vec::new(),
            key: format!("leak:{}", p.tgid),
        }]
    }
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    match &f.detail {
        Detail::ThreadLeak {
            from,
            to,
            span_ns,
            slope_per_s,
            r2,
            survivors,
            sites,
        } => format!(
            "live threads grew from {from} to {to} in {:.1}s ({slope_per_s:.1} threads/s, r2 {r2:.2}); {survivors} survivors: {}",
            *span_ns as f64 / 1e9,
            counted(sites, "from")
        ),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fit_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        let (slope, r2) = super::fit(&pts);
        assert!((slope - 2.0).abs() < 1e-9 && (r2 - 1.0).abs() < 1e-9);
        assert_eq!(super::fit(&[(0.0, 1.0), (1.0, 1.0)]), (0.0, 0.0));
    }
}
