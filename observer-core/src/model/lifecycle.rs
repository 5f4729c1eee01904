//! Thread lifecycle statistics of a process: counts, peak concurrency,
//! lifetimes, per creation site.

use serde::Serialize;

use super::Process;

#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteStats {
    /// Return address of the pthread_create call (0: unknown).
    pub site: u64,
    pub created: usize,
    pub alive_at_end: usize,
    pub median_lifetime_ns: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Lifecycle {
    /// Created during observation (threads that existed at its start are not counted).
    pub created: usize,
    pub exited: usize,
    pub alive_at_end: usize,
    pub peak_concurrent: usize,
    /// Of threads whose start and exit were both seen.
    pub median_lifetime_ns: Option<u64>,
    pub sites: Vec<SiteStats>,
    /// pthread_join waits that slept until their thread ended.
    pub join_waits: JoinWaits,
}

/// Completed joins' waits, all join words together.
#[derive(Clone, Debug, Default, Serialize)]
pub struct JoinWaits {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

pub fn lifecycle(p: &Process) -> Lifecycle {
    let created = p.threads.iter().filter(|t| !t.preexisting).count();
    let exited = p.threads.iter().filter(|t| t.exit_ns.is_some()).count();
    let alive_at_end = p.threads.iter().filter(|t| t.alive()).count();
    // Peak: sweep starts (+1) and exits (-1) in time order.
    let mut edges: Vec<(u64, i64)> = Vec::new();
    for t in &p.threads {
        edges.push((t.start_ns.unwrap_or(0), 1));
        if let Some(e) = t.exit_ns {
            edges.push((e, -1));
        }
    }
    edges.sort_unstable_by_key(|&(ts, d)| (ts, d));
    let (mut cur, mut peak) = (0i64, 0i64);
    for (_, d) in edges {
        cur += d;
        peak = peak.max(cur);
    }
    let life = |t: &&super::Thread| Some(t.exit_ns?.saturating_sub(t.start_ns?));
    let mut sites: Vec<SiteStats> = Vec::new();
    let mut keys: Vec<u64> = p
        .threads
        .iter()
        .filter(|t| !t.preexisting && t.tid != p.tgid)
        .map(|t| t.create_site)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for site in keys {
        let of: Vec<_> = p
            .threads
            .iter()
            .filter(|t| !t.preexisting && t.tid != p.tgid && t.create_site == site)
            .collect();
        sites.push(SiteStats {
            site,
            created: of.len(),
            alive_at_end: of.iter().filter(|t| t.alive()).count(),
            median_lifetime_ns: median(of.iter().filter_map(life).collect()),
        });
    }
    sites.sort_by_key(|s| std::cmp::Reverse(s.created));
    Lifecycle {
        created,
        exited,
        alive_at_end,
        peak_concurrent: peak.max(0) as usize,
        median_lifetime_ns: median(p.threads.iter().filter_map(|t| life(&t)).collect()),
        sites,
        join_waits: p
            .joins
            .values()
            .fold(JoinWaits::default(), |a, j| JoinWaits {
                count: a.count + j.count,
                total_ns: a.total_ns + j.total_ns,
                max_ns: a.max_ns.max(j.max_ns),
            }),
    }
}
