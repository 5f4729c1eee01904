//! Threads created faster than a threshold (per second, in any one-second
//! window): thread-per-task code that pays clone, stack setup and teardown
//! on every task. Reported when observation ends.

use std::collections::BTreeMap;

use super::{Ctx, Detail, Detector, Finding, FindingKind};

pub struct ThreadChurn;

const WINDOW_NS: u64 = 1_000_000_000;

impl Detector for ThreadChurn {
    fn check(&self, _cx: &Ctx) -> Vec<Finding> {
        Vec::new()
    }

    /// Judged over the whole observation, so the counts are complete.
    fn at_end(&self, cx: &Ctx) -> Vec<Finding> {
        let p = cx.process;
        let mut starts: Vec<(u64, u64)> = p
            .threads
            .iter()
            .filter(|t| !t.preexisting && t.tid != p.tgid)
            .filter_map(|t| Some((t.start_ns?, t.create_site)))
            .collect();
        if (starts.len() as u64) < cx.limits.churn_per_s {
            return Vec::new();
        }
        starts.sort_unstable();
        // Densest one-second window.
        let (mut best, mut best_at, mut j) = (0usize, 0usize, 0usize);
        for i in 0..starts.len() {
            while starts[i].0 - starts[j].0 > WINDOW_NS {
                j += 1;
            }
            if i + 1 - j > best {
                best = i + 1 - j;
                best_at = j;
            }
        }
        if (best as u64) < cx.limits.churn_per_s {
            return Vec::new();
        }
        let mut by_site: BTreeMap<String, usize> = BTreeMap::new();
        for &(_, site) in &starts[best_at..best_at + best] {
            *by_site
                .entry(cx.site(site).unwrap_or_else(|| "unknown site".into()))
                .or_default() += 1;
        }
        let mut sites: Vec<(String, usize)> = by_site.into_iter().collect();
        sites.sort_by_key(|s| std::cmp::Reverse(s.1));
        sites.truncate(3);
        vec![Finding {
            kind: FindingKind::ThreadChurn,
            tgid: p.tgid,
            detected_ns: cx.now_ns,
            detail: Detail::ThreadChurn {
                in_window: best,
                total: starts.len(),
                threshold_per_s: cx.limits.churn_per_s,
                sites,
            },
            threads: Vec::new(),
            locks: Vec::new(),
            cycle: Vec::new(),
            tasks: Vec::new(),
            key: format!("churn:{}", p.tgid),
        }]
    }
}

/// The finding in one line, in this detector's words (text and JSON).
pub(super) fn describe(f: &Finding) -> String {
    use super::words::*;
    match &f.detail {
        Detail::ThreadChurn {
            in_window,
            total,
            threshold_per_s,
            sites,
        } => format!(
            "{in_window} threads created within one second ({total} in all; threshold {threshold_per_s}/s); top creation sites: {}",
            counted(sites, "at")
        ),
        _ => String::new(),
    }
}
