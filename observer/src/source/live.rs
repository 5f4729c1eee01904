//! The live source: drains the ring buffer and scans the BPF wait table,
//! turning both into typed events.

use std::collections::HashMap;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    event::{Event, Tid, WaitOrigin},
    probe::{Probes, decode},
};

pub struct LiveSource {
    pub probes: Probes,
    ring: AsyncFd<RingBuf<MapData>>,
    /// Waits already reported as `WaitBegin`: tid -> (tgid, start_ns).
    seen: HashMap<Tid, (u32, u64)>,
    /// A wait is reported once it is at least this old (transient
    /// contention never becomes an event).
    pub min_age_ns: u64,
    pub decode_errors: u64,
}

impl LiveSource {
    pub fn new(mut probes: Probes, min_age_ns: u64) -> anyhow::Result<Self> {
        let rb = probes.take_ringbuf()?;
        // SAFETY: the RingBuf owns its map fd and keeps it open while the
        // AsyncFd owns the RingBuf (tokio >= 1.54 marks this constructor unsafe).
        let ring = unsafe { AsyncFd::register_with_interest(rb, Interest::READABLE)? };
        Ok(LiveSource {
            probes,
            ring,
            seen: HashMap::new(),
            min_age_ns,
            decode_errors: 0,
        })
    }

    /// Resolves when the kernel woke us for an urgent record.
    pub async fn urgent(&mut self, out: &mut Vec<Event>) -> std::io::Result<()> {
        let mut g = self.ring.readable_mut().await?;
        g.clear_ready();
        drop(g);
        self.drain(out);
        Ok(())
    }

    pub fn drain(&mut self, out: &mut Vec<Event>) {
        let rb = self.ring.get_mut();
        while let Some(item) = rb.next() {
            match decode::decode_record(&item) {
                Ok(ev) => {
                    if let Event::WaitDone { tid, wait, .. } = &ev {
                        if self.seen.get(tid).is_some_and(|&(_, s)| s == wait.start_ns) {
                            self.seen.remove(tid);
                        }
                    }
                    out.push(ev)
                }
                Err(e) => {
                    self.decode_errors += 1;
                    tracing::warn!("dropping ring buffer record: {e}");
                }
            }
        }
    }

    /// Compares the wait table with what was reported before.
    pub fn scan(&mut self, now: u64, out: &mut Vec<Event>) {
        let waits = self.probes.waits();
        let mut present: HashMap<Tid, u64> = HashMap::with_capacity(waits.len());
        for (tid, w) in &waits {
            present.insert(*tid, w.start_ns);
        }
        // Ended (or replaced by a newer wait) since the last scan.
        let ended: Vec<(Tid, u32, u64)> = self
            .seen
            .iter()
            .filter(|(tid, (_, start))| present.get(tid) != Some(start))
            .map(|(&tid, &(tgid, start))| (tid, tgid, start))
            .collect();
        for (tid, tgid, start_ns) in ended {
            self.seen.remove(&tid);
            out.push(Event::WaitEnd {
                ts_ns: now,
                tgid,
                tid,
                start_ns,
                ret: None,
            });
        }
        for (tid, w) in waits {
            if self.seen.contains_key(&tid) || now.saturating_sub(w.start_ns) < self.min_age_ns {
                continue;
            }
            self.seen.insert(tid, (w.tgid, w.start_ns));
            out.push(Event::WaitBegin {
                ts_ns: now,
                tgid: w.tgid,
                tid,
                wait: decode::wait_from_raw(&w, WaitOrigin::Kernel),
            });
        }
    }

    /// Everything left at the end: records, per-lock totals, drop counters.
    pub fn finish(&mut self, now: u64, out: &mut Vec<Event>) {
        self.drain(out);
        for (k, a) in self.probes.aggregates() {
            out.push(Event::LockStats {
                tgid: k.tgid,
                uaddr: k.uaddr,
                op: a.op,
                count: a.count,
                total_ns: a.total_ns,
                max_ns: a.max_ns,
            });
        }
        out.push(Event::Drops {
            ts_ns: now,
            drops: self.probes.drops(),
        });
    }
}
