//! The live source: drains the ring buffer and scans the BPF wait table,
//! turning both into typed events. Waits that began before attaching come
//! from a /proc snapshot and are followed through /proc until they end.

use std::collections::HashMap;

use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use super::snapshot;
use crate::{
    event::{Event, Tid, WaitOrigin},
    probe::{Probes, decode},
};

/// Re-read the memory around a waiter's futex word at most this often:
/// owners change while a thread waits.
const REREAD_EVERY_NS: u64 = 500_000_000;
/// ...and only once the wait is this old.
const REREAD_AFTER_NS: u64 = 100_000_000;
/// How often a scan looks whether a wait older than the probes (a snapshot
/// wait: no table entry ends it) is still there. Its end is seen this late
/// at most; a finding built on it is checked at once (`confirm`).
const SNAPSHOT_CHECK_NS: u64 = 1_000_000_000;

/// A wait reported as `WaitBegin`.
struct Tracked {
    tgid: u32,
    start_ns: u64,
    uaddr: u64,
    op: u32,
    words: Vec<u8>,
    read_ns: u64,
    origin: WaitOrigin,
    /// Snapshot waits: the thread's timeslices when it was last seen in
    /// that call. Unchanged, it has not run since: still there.
    slices: Option<u64>,
    /// Snapshot waits: when a scan last looked (`SNAPSHOT_CHECK_NS`).
    checked_ns: u64,
}

pub struct LiveSource {
    pub probes: Probes,
    ring: AsyncFd<RingBuf<MapData>>,
    seen: HashMap<Tid, Tracked>,
    /// Table entries /proc showed outliving their wait (tid: start), not
    /// reported again while the table holds them (`confirm`).
    stale: HashMap<Tid, u64>,
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
            stale: HashMap::new(),
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
            let first = out.len();
            match decode::decode_into(&item, out) {
                Ok(()) => {
                    if let Some(Event::WaitDone { tid, wait, .. }) = out.get(first)
                        && self
                            .seen
                            .get(tid)
                            .is_some_and(|t| t.start_ns == wait.start_ns)
                    {
                        self.seen.remove(tid);
                    }
                }
                Err(e) => {
                    self.decode_errors += 1;
                    tracing::warn!("dropping ring buffer record: {e}");
                }
            }
        }
    }

    /// Waits already in progress in `pid` (from /proc), for `attach`.
    pub fn add_snapshot(&mut self, pid: u32, tids: &[Tid], now: u64, out: &mut Vec<Event>) {
        for ev in snapshot::snapshot_waits(pid, tids.iter().copied(), now) {
            if let Event::WaitBegin { tid, wait, .. } = &ev {
                if self.probes.wait(*tid).is_some() {
                    continue; // entered its wait after the probes: the table has it
                }
                self.track(*tid, pid, wait, now);
            }
            out.push(ev);
        }
    }

    fn track(&mut self, tid: Tid, tgid: u32, w: &crate::event::Wait, now: u64) {
        self.seen.insert(
            tid,
            Tracked {
                tgid,
                start_ns: w.start_ns,
                uaddr: w.uaddr,
                op: w.op,
                words: w.words.clone(),
                read_ns: now,
                origin: w.origin,
                slices: match w.origin {
                    WaitOrigin::Snapshot => super::activity::slices(tgid, tid),
                    WaitOrigin::Kernel => None,
                },
                checked_ns: now,
            },
        );
    }

    /// Whether a tracked wait is still in progress.
    fn still_waiting(tid: Tid, t: &mut Tracked, table: Option<u64>) -> bool {
        match t.origin {
            WaitOrigin::Kernel => table == Some(t.start_ns),
            // A snapshot wait ends when the thread leaves that futex call.
            // A thread that has not run since it was last seen there has
            // not (schedstat is cheap; the syscall file waits for the task).
            WaitOrigin::Snapshot => {
                if table.is_some() {
                    return false;
                }
                let slices = super::activity::slices(t.tgid, tid);
                if slices.is_some() && slices == t.slices {
                    return true;
                }
                let there = snapshot::proc_syscall(t.tgid, tid).is_some_and(|(nr, a, _, _)| {
                    let addr = if nr == libc::SYS_futex { a[0] } else { t.uaddr };
                    addr == t.uaddr
                });
                if there {
                    t.slices = slices;
                }
                there
            }
        }
    }

    /// Re-reads the words around a tracked wait; emits `WaitWords` if they changed.
    fn reread(&mut self, tid: Tid, now: u64, out: &mut Vec<Event>) {
        let Some(t) = self.seen.get_mut(&tid) else {
            return;
        };
        t.read_ns = now;
        if let Some((words_addr, words)) = snapshot::read_words(t.tgid, t.uaddr)
            && words != t.words
        {
            t.words = words.clone();
            out.push(Event::WaitWords {
                ts_ns: now,
                tgid: t.tgid,
                tid,
                start_ns: t.start_ns,
                words_addr,
                words,
            });
        }
    }

    /// Compares the wait table with what was reported before.
    pub fn scan(&mut self, now: u64, out: &mut Vec<Event>) {
        let waits = self.probes.waits();
        let table: HashMap<Tid, u64> = waits.iter().map(|(t, w)| (*t, w.start_ns)).collect();
        let ended: Vec<Tid> = self
            .seen
            .iter_mut()
            .filter_map(|(tid, t)| {
                let table = table.get(tid).copied();
                if t.origin == WaitOrigin::Snapshot && table.is_none() {
                    if now.saturating_sub(t.checked_ns) < SNAPSHOT_CHECK_NS {
                        return None;
                    }
                    t.checked_ns = now;
                }
                (!Self::still_waiting(*tid, t, table)).then_some(*tid)
            })
            .collect();
        for tid in ended {
            let t = self.seen.remove(&tid).expect("tracked");
            out.push(Event::WaitEnd {
                ts_ns: now,
                tgid: t.tgid,
                tid,
                start_ns: t.start_ns,
                ret: None,
            });
        }
        self.stale
            .retain(|tid, start| table.get(tid) == Some(start));
        for (tid, w) in waits {
            if self.seen.contains_key(&tid)
                || now.saturating_sub(w.start_ns) < self.min_age_ns
                || self.stale.get(&tid) == Some(&w.start_ns)
            {
                continue;
            }
            let wait = decode::wait_from_raw(&w, WaitOrigin::Kernel);
            self.track(tid, w.tgid, &wait, now);
            out.push(Event::WaitBegin {
                ts_ns: now,
                tgid: w.tgid,
                tid,
                wait,
            });
        }
        let due: Vec<Tid> = self
            .seen
            .iter()
            .filter(|(_, t)| {
                now.saturating_sub(t.start_ns) >= REREAD_AFTER_NS
                    && now.saturating_sub(t.read_ns) >= REREAD_EVERY_NS
            })
            .map(|(tid, _)| *tid)
            .collect();
        for tid in due {
            self.reread(tid, now, out);
        }
    }

    /// The threads of `tgids` with a wait followed.
    pub fn waiting_in(&self, tgids: &[u32]) -> Vec<Tid> {
        (self.seen.iter())
            .filter(|(_, t)| tgids.contains(&t.tgid))
            .map(|(tid, _)| *tid)
            .collect()
    }

    /// Checks that the waits of `tids` are still as the model has them
    /// before a finding is reported. Returns false if anything changed
    /// (the change is in `out`). A table wait is also checked against
    /// /proc: an entry whose end was never seen (a hook missing at that
    /// moment) must not make a finding.
    pub fn confirm(&mut self, tids: &[Tid], now: u64, out: &mut Vec<Event>) -> bool {
        let before = out.len();
        for &tid in tids {
            let table = self.probes.wait(tid).map(|w| w.start_ns);
            let Some(t) = self.seen.get_mut(&tid) else {
                continue;
            };
            let ended = !Self::still_waiting(tid, t, table);
            let stale = !ended
                && t.origin == WaitOrigin::Kernel
                && !snapshot::may_wait_on(t.tgid, tid, t.uaddr, t.op);
            if stale {
                tracing::debug!("thread {tid}: its wait-table entry outlived its wait");
                self.stale.insert(tid, t.start_ns);
            }
            if ended || stale {
                let t = self.seen.remove(&tid).expect("tracked");
                out.push(Event::WaitEnd {
                    ts_ns: now,
                    tgid: t.tgid,
                    tid,
                    start_ns: t.start_ns,
                    ret: None,
                });
                continue;
            }
            self.reread(tid, now, out);
        }
        out.len() == before
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
