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

/// The live thread count at each of the (sorted) times, in one pass over
/// the threads: each adds one over the run of times inside its life.
fn live_at(p: &Process, times: &[u64]) -> Vec<i64> {
    let mut diff = vec![0i64; times.len() + 1];
    for t in &p.threads {
        let lo = t.start_ns.map_or(0, |s| times.partition_point(|&x| x < s));
        let hi = t
            .exit_ns
            .map_or(times.len(), |e| times.partition_point(|&x| x < e));
        if lo < hi {
            diff[lo] += 1;
            diff[hi] -= 1;
        }
    }
    diff.iter()
        .take(times.len())
        .scan(0, |n, d| {
            *n += d;
            Some(*n)
        })
        .collect()
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
        // Growing by MIN_GROWTH needs that many alive at t1. With no thread
        // ended after t1, those are among the live ones now (a churning
        // program ends most scans here).
        if p.last_exit_ns() <= t1 && p.live_threads().nth(MIN_GROWTH as usize - 1).is_none() {
            return Vec::new();
        }
        // u128: a span of any length (a corrupt recording's) times i.
        let times: Vec<u64> = (0..=SAMPLES)
            .map(|i| t0 + ((t1 - t0) as u128 * i as u128 / SAMPLES as u128) as u64)
            .collect();
        let pts: Vec<(f64, f64)> = times
            .iter()
            .zip(live_at(p, &times))
            .map(|(&ts, n)| ((ts - t0) as f64 / 1e9, n as f64))
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
    /// The one-pass count is the count of each time's live threads.
    #[test]
    fn live_counts_match_a_count_per_time() {
        use crate::event::Event;
        let mut m = crate::model::Model::default();
        let tgid = 100;
        // Lives of [start, exit): some overlapping, one never ending, one
        // ending exactly on a sample time, one starting on one.
        let lives = [
            (0, Some(50)),
            (10, Some(20)),
            (20, None),
            (30, Some(30)),
            (40, Some(90)),
            (60, None),
        ];
        for (i, (s, e)) in lives.iter().enumerate() {
            let tid = tgid + 1 + i as u32;
            m.apply(&Event::test_thread_new(*s, tgid, tid, ""));
            if let Some(e) = e {
                m.apply(&Event::test_thread_exit(*e, tgid, tid, 0));
            }
        }
        let p = m.process(tgid).unwrap();
        let times: Vec<u64> = (0..=10).map(|i| i * 10).collect();
        let each: Vec<i64> = times
            .iter()
            .map(|&ts| {
                p.threads
                    .iter()
                    .filter(|t| {
                        t.start_ns.is_none_or(|s| s <= ts) && t.exit_ns.is_none_or(|e| e > ts)
                    })
                    .count() as i64
            })
            .collect();
        assert_eq!(super::live_at(p, &times), each);
        assert_eq!(each, [1, 2, 2, 2, 3, 2, 3, 3, 3, 2, 2]);
        assert_eq!(p.live_threads().count(), 2);
    }

    #[test]
    fn fit_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 + 2.0 * i as f64)).collect();
        let (slope, r2) = super::fit(&pts);
        assert!((slope - 2.0).abs() < 1e-9 && (r2 - 1.0).abs() < 1e-9);
        assert_eq!(super::fit(&[(0.0, 1.0), (1.0, 1.0)]), (0.0, 0.0));
    }
}
