//! The GIL of a CPython process, found and watched from outside.
//!
//! Where it is: 3.11 embeds `struct _gil_runtime_state` in `_PyRuntime`
//! (`interp->runtime->ceval.gil`); 3.12 and 3.13 keep a pointer in
//! `interp->ceval.gil`. The struct holds interval, last_holder, locked,
//! switch_number, then the condvar and mutex a waiter sleeps on (and the
//! FORCE_SWITCHING pair the dropping thread sleeps on). A futex wait on any
//! word of those four is a GIL wait: this catches the forced switch every
//! interval, which calls the `static` take_gil/drop_gil that uprobes on
//! exported functions never see. Offsets are checked against each
//! version's headers by compiling `gil_offsets.c` (see the tests).
//!
//! The sampler reads `locked`/`last_holder` (24 bytes) and each Python
//! thread's current futex wait (the BPF wait table) at jittered instants,
//! and each thread's on-CPU and run-queue time from
//! /proc/PID/task/TID/schedstat: nothing runs in the target or in the
//! kernel per event. It hands cumulative tallies to the model as events;
//! `graph::gil` turns them into shares and a verdict.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::reader::{Live, Mem, Reader, u64_at};
use crate::event::{Event, Wait};
pub use observer_core::vocab::gil::{GilStatus, GilTally, ThreadTally};

/// Field offsets of `_gil_runtime_state` (x86_64/aarch64 glibc; identical
/// in 3.11-3.13 default builds, see gil_offsets.c).
pub const LAST_HOLDER: u64 = 8;
pub const LOCKED: u64 = 16;
pub const COND: u64 = 32;
/// End of `switch_mutex`: cond 32..80, mutex 80..120, switch_cond
/// 120..168, switch_mutex 168..208 (pthread_cond_t 48 B, pthread_mutex_t 40 B).
pub const SYNC_END: u64 = 208;

/// How to get from the interpreter state to its GIL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Find {
    /// 3.11: `*(interp + runtime) + gil` (embedded in `_PyRuntime`).
    Runtime {
        interp_runtime: u64,
        runtime_gil: u64,
    },
    /// 3.12+: `*(interp + gil_ptr)`.
    Pointer { interp_gil: u64 },
}

/// The way to the GIL in CPython 3.`minor` (default build), if known.
pub fn find_for(major: u64, minor: u64) -> Option<Find> {
    match (major, minor) {
        (3, 11) => Some(Find::Runtime {
            interp_runtime: 40,
            runtime_gil: 360,
        }),
        (3, 12) => Some(Find::Pointer { interp_gil: 384 }),
        (3, 13..=15) => Some(Find::Pointer { interp_gil: 16 }),
        _ => None,
    }
}

/// A located GIL: futex words in `[addr + COND, addr + SYNC_END)` are GIL waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GilAddr {
    pub addr: u64,
}

impl GilAddr {
    pub fn is_gil_word(&self, uaddr: u64) -> bool {
        (self.addr + COND..self.addr + SYNC_END).contains(&uaddr)
    }
}

/// Finds and sanity-checks the GIL of the interpreter at `interp`.
pub fn locate<M: Mem>(mem: &M, find: Find, interp: u64) -> Option<GilAddr> {
    let r = |a: u64| mem.read(a, 8).and_then(|b| u64_at(&b, 0));
    let addr = match find {
        Find::Runtime {
            interp_runtime,
            runtime_gil,
        } => r(interp + interp_runtime)? + runtime_gil,
        Find::Pointer { interp_gil } => r(interp + interp_gil)?,
    };
    if !Reader::<M>::ptr_ok(addr) {
        return None;
    }
    let b = mem.read(addr, 24)?;
    let interval = u64_at(&b, 0)?;
    let locked = i32::from_ne_bytes(b[16..20].try_into().ok()?);
    // interval is in microseconds (5000 by default; sys.setswitchinterval
    // accepts any positive float); locked is -1 before the GIL is created.
    ((1..=60_000_000).contains(&interval) && (-1..=1).contains(&locked)).then_some(GilAddr { addr })
}

/// A CPython interpreter as py-spy found it.
pub struct PyInterp {
    pub major: u64,
    pub minor: u64,
    pub version: String,
    /// `PyInterpreterState *` of the main interpreter.
    pub interp: u64,
    pub free_threaded: bool,
}

/// Xorshift for jitter (no need for a crate).
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Mean sampling period. Samples are spread uniformly over
/// [MEAN/2, 3*MEAN/2]: a fixed period that is a multiple of the switch
/// interval (5 ms) would alias with the GIL's hand-offs.
pub const MEAN_PERIOD_MS: u64 = 10;
/// schedstat and the thread list are re-read this often.
const REFRESH_NS: u64 = 250_000_000;

struct Proc {
    gil: Option<GilAddr>,
    interp: u64,
    layout: Option<&'static super::layout::Layout>,
    parking_lot: bool,
    /// tstate -> tid (Python threads).
    tstates: HashMap<u64, u32>,
    /// tid -> schedstat at first sight (cpu, runq, slices).
    base: HashMap<u32, (u64, u64, u64)>,
    tally: GilTally,
    idx: HashMap<u32, usize>,
    refreshed_ns: u64,
}

/// The live sampler of every located CPython target.
pub struct Sampler {
    procs: HashMap<u32, Proc>,
    jitter: Jitter,
    /// Processes tried (located or not): (tgid, when to try again).
    tried: HashMap<u32, u64>,
    /// The image each process had when last looked at.
    images: HashMap<u32, Option<u64>>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}

impl Sampler {
    pub fn new() -> Sampler {
        let seed = crate::sys::mono_ns() | 1;
        Sampler {
            procs: HashMap::new(),
            jitter: Jitter(seed),
            tried: HashMap::new(),
            images: HashMap::new(),
        }
    }

    /// Whether `tgid` should be (re)tried for a GIL now. `image`: when its
    /// running image began (an exec starts over).
    pub fn wants(&mut self, tgid: u32, now: u64, image: Option<u64>) -> bool {
        if self
            .images
            .insert(tgid, image)
            .is_some_and(|was| was != image)
        {
            self.procs.remove(&tgid);
            self.tried.remove(&tgid);
        }
        !self.procs.contains_key(&tgid) && self.tried.get(&tgid).is_none_or(|&t| now >= t)
    }

    /// Gives up on `tgid` until `retry_at` (interpreter not ready, not Python).
    pub fn defer(&mut self, tgid: u32, retry_at: u64) {
        self.tried.insert(tgid, retry_at);
    }

    /// Starts sampling CPython process `tgid`.
    pub fn add(&mut self, tgid: u32, found: PyInterp) {
        let PyInterp {
            major,
            minor,
            version: vs,
            interp,
            free_threaded: free,
        } = found;
        let mem = Live(tgid);
        let (status, gil) = if free {
            (GilStatus::NoGil, None)
        } else {
            match find_for(major, minor) {
                None => (
                    GilStatus::Unknown {
                        why: format!("CPython {vs}: GIL layout not known (3.11-3.15 are)"),
                    },
                    None,
                ),
                Some(f) => match locate(&mem, f, interp) {
                    Some(g) => (GilStatus::Located { addr: g.addr }, Some(g)),
                    None => (
                        GilStatus::Unknown {
                            why: format!(
                                "CPython {vs}: the GIL did not look right where the layout puts it"
                            ),
                        },
                        None,
                    ),
                },
            }
        };
        match &status {
            GilStatus::Located { addr } => {
                tracing::info!("pid {tgid}: CPython {vs}: GIL at {addr:#x}")
            }
            s => tracing::info!("pid {tgid}: CPython {vs}: GIL not accounted: {s:?}"),
        }
        self.procs.insert(
            tgid,
            Proc {
                gil,
                interp,
                layout: super::layout::for_version(major, minor),
                parking_lot: minor >= 13,
                tstates: HashMap::new(),
                base: HashMap::new(),
                tally: GilTally {
                    version: vs,
                    status,
                    samples: 0,
                    threads: Vec::new(),
                },
                idx: HashMap::new(),
                refreshed_ns: 0,
            },
        );
    }

    /// Next sampling delay, jittered around the mean.
    pub fn next_delay(&mut self) -> std::time::Duration {
        let span = MEAN_PERIOD_MS * 1000;
        let us = span / 2 + self.jitter.next() % (span + 1);
        std::time::Duration::from_micros(us)
    }

    pub fn is_empty(&self) -> bool {
        self.procs.values().all(|p| p.gil.is_none())
    }

    /// One sample of every located process. `wait_of`: a thread's current
    /// futex wait (from the BPF wait table).
    pub fn sample(&mut self, now: u64, wait_of: &dyn Fn(u32) -> Option<Wait>) {
        let mut gone = Vec::new();
        for (&tgid, p) in &mut self.procs {
            let Some(gil) = p.gil else { continue };
            if (now.saturating_sub(p.refreshed_ns) >= REFRESH_NS || p.refreshed_ns == 0)
                && !p.refresh(tgid, now)
            {
                gone.push(tgid);
                continue;
            }
            let mem = Live(tgid);
            let Some(b) = mem.read(gil.addr + LAST_HOLDER, (LOCKED + 4 - LAST_HOLDER) as usize)
            else {
                continue;
            };
            let holder = u64_at(&b, 0).unwrap_or(0);
            let lo = (LOCKED - LAST_HOLDER) as usize;
            let locked = i32::from_ne_bytes(b[lo..lo + 4].try_into().unwrap_or([0; 4])) == 1;
            let holder_tid = if locked {
                p.tstates.get(&holder).copied()
            } else {
                None
            };
            p.tally.samples += 1;
            let parking = p.parking_lot;
            for &tid in p.tstates.values() {
                let Some(&i) = p.idx.get(&tid) else { continue };
                let t = &mut p.tally.threads[i];
                t.samples += 1;
                if holder_tid == Some(tid) {
                    t.held += 1;
                }
                if let Some(w) = wait_of(tid) {
                    if gil.is_gil_word(w.uaddr) {
                        t.gil_wait += 1;
                    } else {
                        let key = lock_key(&w, parking);
                        match t.lock_waits.iter_mut().find(|x| x.0 == key) {
                            Some(x) => x.1 += 1,
                            None => t.lock_waits.push((key, 1)),
                        }
                    }
                }
            }
        }
        for g in gone {
            if let Some(p) = self.procs.get_mut(&g) {
                p.gil = None;
            }
        }
    }

    /// The cumulative tally of every process as events (schedstat read now
    /// when the process is still there).
    pub fn events(&mut self, now: u64) -> Vec<Event> {
        let mut out = Vec::new();
        for (&tgid, p) in &mut self.procs {
            if p.gil.is_some() && now.saturating_sub(p.refreshed_ns) >= REFRESH_NS / 4 {
                p.refresh(tgid, now);
            }
            out.push(Event::PyGil {
                ts_ns: now,
                tgid,
                tally: p.tally.clone(),
            });
        }
        out
    }
}

/// The lock a futex wait is on: the futex word, or for a 3.13 parking-lot
/// wait (a semaphore in a `wait_entry` on the waiter's own stack, the
/// parked-on address 8 bytes below it) that address.
fn lock_key(w: &Wait, parking_lot: bool) -> u64 {
    let on_own_stack = w.sp != 0 && w.uaddr > w.sp && w.uaddr - w.sp < (1 << 20);
    if parking_lot && on_own_stack && w.words_addr != 0 {
        let off = (w.uaddr - 8).wrapping_sub(w.words_addr) as usize;
        if let Some(b) = w.words.get(off..off + 8) {
            let a = u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
            if Reader::<Live>::ptr_ok(a) {
                return a;
            }
        }
    }
    w.uaddr
}

/// (on-CPU ns, run-queue ns, timeslices) of a thread.
fn schedstat(tgid: u32, tid: u32) -> Option<(u64, u64, u64)> {
    let s = crate::sys::read_proc(&format!("/proc/{tgid}/task/{tid}/schedstat"))?;
    let mut it = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    Some((it.next()??, it.next()??, it.next()??))
}

impl Proc {
    /// Re-reads the Python thread list and schedstat. False: process gone.
    fn refresh(&mut self, tgid: u32, now: u64) -> bool {
        if !std::path::Path::new(&format!("/proc/{tgid}")).exists() {
            return false;
        }
        self.refreshed_ns = now;
        if let Some(l) = self.layout {
            let mem = Live(tgid);
            let r = Reader::new(&mem, l);
            let mut ts = r.u64(self.interp + l.interp_threads_head).unwrap_or(0);
            let mut seen = HashMap::new();
            while Reader::<Live>::ptr_ok(ts) && seen.len() < 4096 && !seen.contains_key(&ts) {
                let Some(b) = r.bytes(ts, (l.ts_native_thread_id + 8) as usize) else {
                    break;
                };
                let tid = u64_at(&b, l.ts_native_thread_id).unwrap_or(0) as u32;
                seen.insert(ts, tid);
                ts = u64_at(&b, l.ts_next).unwrap_or(0);
            }
            if !seen.is_empty() {
                self.tstates = seen;
            }
        }
        for &tid in self.tstates.values() {
            if tid == 0 {
                continue;
            }
            let Some(s) = schedstat(tgid, tid) else {
                continue;
            };
            let base = *self.base.entry(tid).or_insert(s);
            let i = *self.idx.entry(tid).or_insert_with(|| {
                self.tally.threads.push(ThreadTally {
                    tid,
                    sched_from_ns: now,
                    sched_to_ns: now,
                    ..Default::default()
                });
                self.tally.threads.len() - 1
            });
            let t = &mut self.tally.threads[i];
            t.sched_to_ns = now;
            t.cpu_ns = s.0.saturating_sub(base.0);
            t.runq_ns = s.1.saturating_sub(base.1);
            t.slices = s.2.saturating_sub(base.2);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashMap as Map, path::Path};

    const PROGRAM: &str = include_str!("gil_offsets.c");

    fn measured(include: &Path) -> Option<Map<String, u64>> {
        crate::python::layout::compile_and_print("gil_offsets", PROGRAM, include)
    }

    #[test]
    fn gil_offsets_match_the_headers() {
        let mut checked = 0;
        let dirs = crate::python::layout::header_dirs();
        for (dir, minor) in dirs.clone() {
            let dir = dir.as_path();
            if !dir.join("internal/pycore_gil.h").exists() {
                crate::testenv::skip(&format!("no CPython headers at {}", dir.display()));
                continue;
            }
            let Some(m) = measured(dir) else {
                crate::testenv::missing("cannot build gil_offsets.c (no gcc?)");
                return;
            };
            let g = |k: &str| m.get(k).copied();
            match find_for(3, minor).unwrap() {
                Find::Runtime {
                    interp_runtime,
                    runtime_gil,
                } => {
                    assert_eq!(g("interp_runtime"), Some(interp_runtime));
                    assert_eq!(g("runtime_gil"), Some(runtime_gil));
                }
                Find::Pointer { interp_gil } => assert_eq!(g("interp_gil_ptr"), Some(interp_gil)),
            }
            assert_eq!(g("gil_last_holder"), Some(LAST_HOLDER));
            assert_eq!(g("gil_locked"), Some(LOCKED));
            assert_eq!(g("gil_cond"), Some(COND));
            // The four sync objects are contiguous and end the struct.
            assert_eq!(g("gil_mutex"), Some(COND + g("cond_size").unwrap()));
            assert_eq!(
                g("gil_switch_cond"),
                Some(g("gil_mutex").unwrap() + g("mutex_size").unwrap())
            );
            assert_eq!(
                g("gil_switch_mutex"),
                Some(g("gil_switch_cond").unwrap() + g("cond_size").unwrap())
            );
            assert_eq!(
                g("gil_switch_mutex").unwrap() + g("mutex_size").unwrap(),
                SYNC_END
            );
            assert_eq!(g("gil_size"), Some(SYNC_END));
            checked += 1;
        }
        crate::testenv::assert_headers_checked(
            checked,
            dirs.iter().map(|d| d.0.to_str().unwrap_or_default()),
        );
    }

    struct Fake(Map<u64, Vec<u8>>);
    impl Mem for Fake {
        fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
            for (&base, b) in &self.0 {
                if addr >= base && addr + len as u64 <= base + b.len() as u64 {
                    let o = (addr - base) as usize;
                    return Some(b[o..o + len].to_vec());
                }
            }
            None
        }
    }

    fn gil_bytes(interval: u64, locked: i32) -> Vec<u8> {
        let mut g = vec![0u8; SYNC_END as usize];
        g[0..8].copy_from_slice(&interval.to_ne_bytes());
        g[16..20].copy_from_slice(&locked.to_ne_bytes());
        g
    }

    #[test]
    fn locates_the_gil_per_version() {
        let interp = 0x10000u64;
        let gil = 0x20000u64;
        // 3.12/3.13: a pointer in the interpreter state.
        let mut i = vec![0u8; 512];
        i[384..392].copy_from_slice(&gil.to_ne_bytes());
        let m = Fake(Map::from([(interp, i), (gil, gil_bytes(5000, 1))]));
        let g = locate(&m, find_for(3, 12).unwrap(), interp).unwrap();
        assert_eq!(g.addr, gil);
        assert!(g.is_gil_word(gil + 32 + 40)); // cond.__g_signals[0]
        assert!(g.is_gil_word(gil + 80)); // mutex.__lock
        assert!(!g.is_gil_word(gil + 16)); // locked is not a futex word
        assert!(!g.is_gil_word(gil + SYNC_END));
        // 3.11: embedded in the runtime the interpreter points to.
        let rt = 0x30000u64;
        let mut i = vec![0u8; 64];
        i[40..48].copy_from_slice(&rt.to_ne_bytes());
        let mut r = vec![0u8; 360];
        r.extend(gil_bytes(5000, 0));
        let m = Fake(Map::from([(interp, i), (rt, r)]));
        assert_eq!(
            locate(&m, find_for(3, 11).unwrap(), interp).map(|g| g.addr),
            Some(rt + 360)
        );
        // Garbage where the GIL should be: not located, not guessed.
        let mut i = vec![0u8; 512];
        i[384..392].copy_from_slice(&gil.to_ne_bytes());
        let m = Fake(Map::from([(interp, i), (gil, gil_bytes(0, 7))]));
        assert_eq!(locate(&m, find_for(3, 12).unwrap(), interp), None);
        assert_eq!(find_for(3, 16), None);
    }

    #[test]
    fn parking_lot_waits_key_by_the_parked_address() {
        let lock = 0x7f00_0000_1000u64;
        let sp = 0x7ffd_0000_0000u64;
        let uaddr = sp + 0x100 + 16; // wait_entry at sp+0x100, its sem at +16
        let words_addr = (uaddr & !7) - 24;
        let mut words = vec![0u8; 64];
        let off = (uaddr - 8 - words_addr) as usize;
        words[off..off + 8].copy_from_slice(&lock.to_ne_bytes());
        let w = Wait {
            uaddr,
            uaddr2: 0,
            op: 0x89,
            val: 0,
            start_ns: 0,
            ip: 0,
            sp,
            bp: 0,
            words_addr,
            words,
            origin: crate::event::WaitOrigin::Kernel,
        };
        assert_eq!(lock_key(&w, true), lock);
        assert_eq!(lock_key(&w, false), uaddr);
        let heap = Wait {
            uaddr: 0x5555_0000_0010,
            ..w
        };
        assert_eq!(lock_key(&heap, true), 0x5555_0000_0010);
    }
}
