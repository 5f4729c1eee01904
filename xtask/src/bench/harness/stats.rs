//! Statistics: quantiles, medians, bootstrap intervals.

/// Quantile `q` in [0, 1], interpolating between closest ranks; NaN if empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

pub fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// Nearest-rank percentile `p` in [0, 100] (a value that was measured: the
/// p99 of 100 runs is the second worst); NaN if empty.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

pub fn min(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::min).unwrap_or(f64::NAN)
}

pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::max).unwrap_or(f64::NAN)
}

/// Visit order of pass `p` over `n` conditions: rotated, so that every
/// condition comes first, second, ... equally often and slow drifts of a
/// noisy machine hit all alike.
pub fn order(p: usize, n: usize) -> impl Iterator<Item = usize> {
    (0..n).map(move |k| (p + k) % n)
}

/// 90% bootstrap interval (5th, 95th percentile) of `stat` of the medians
/// of `groups`, each resampled with replacement.
pub fn bootstrap(groups: &[&[f64]], stat: impl Fn(&[f64]) -> f64) -> (f64, f64) {
    // xorshift64*: enough randomness for a bootstrap, fixed seed.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut below = |n: usize| {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    };
    let mut buf = Vec::new();
    let stats: Vec<f64> = (0..1000)
        .map(|_| {
            let med: Vec<f64> = groups
                .iter()
                .map(|v| {
                    buf.clear();
                    buf.extend((0..v.len()).map(|_| v[below(v.len())]));
                    median(&buf)
                })
                .collect();
            stat(&med)
        })
        .collect();
    (quantile(&stats, 0.05), quantile(&stats, 0.95))
}
