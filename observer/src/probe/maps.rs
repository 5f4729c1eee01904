//! Reading the kernel side's maps: the wait table, lock owners, edges,
//! per-lock statistics, aggregates and drop counters; the watch set.

use super::*;

impl Probes {
    /// Current owners of locks (deep tier): (tgid, lock) -> owner.
    pub fn lock_owner(&self, tgid: u32, lock: u64) -> Option<obs_owner> {
        let m =
            BpfHashMap::<_, Pod<obs_lock_key>, Pod<obs_owner>>::try_from(self.bpf.map("OWNERS")?)
                .ok()?;
        let k = obs_lock_key {
            lock,
            tgid,
            gen_: 0,
        };
        m.get(&Pod(k), 0).ok().map(|v| v.0)
    }

    /// Locks threads of `tgid` hold by an acquisition the deep tier saw
    /// (their held sets; a lock a thread still sleeps in is not held).
    pub fn held_locks(&self, tgid: u32) -> HashSet<u64> {
        let Some(m) = self
            .bpf
            .map("HELD")
            .and_then(|m| BpfHashMap::<_, u32, Pod<obs_held>>::try_from(m).ok())
        else {
            return HashSet::new();
        };
        m.iter()
            .filter_map(Result::ok)
            .filter(|(_, h)| h.0.tgid == tgid)
            .flat_map(|(_, h)| {
                let n = (h.0.n as usize).min(h.0.locks.len());
                h.0.locks[..n]
                    .iter()
                    .filter(|l| l.lock != 0 && u32::from(l.flags) & OBS_HL_WAITING == 0)
                    .map(|l| l.lock)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The lock-order edge table (deep tier).
    pub fn lock_edges(&self) -> Vec<(obs_edge_key, obs_edge)> {
        let Some(m) = self.bpf.map("ORDER") else {
            return Vec::new();
        };
        let Ok(m) = BpfHashMap::<_, Pod<obs_edge_key>, Pod<obs_edge>>::try_from(m) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.0, v.0))
            .collect()
    }

    /// Per-lock statistics and per-holder hold times (deep tier).
    #[allow(clippy::type_complexity)]
    pub fn lock_stats(
        &self,
    ) -> (
        Vec<(obs_lock_key, obs_lock_stats)>,
        Vec<(obs_holder_key, obs_holder)>,
    ) {
        let stats = self
            .bpf
            .map("LSTATS")
            .and_then(|m| BpfHashMap::<_, Pod<obs_lock_key>, Pod<obs_lock_stats>>::try_from(m).ok())
            .map(|m| {
                m.iter()
                    .filter_map(Result::ok)
                    .map(|(k, v)| (k.0, v.0))
                    .collect()
            })
            .unwrap_or_default();
        let holders = self
            .bpf
            .map("HOLDERS")
            .and_then(|m| BpfHashMap::<_, Pod<obs_holder_key>, Pod<obs_holder>>::try_from(m).ok())
            .map(|m| {
                m.iter()
                    .filter_map(Result::ok)
                    .map(|(k, v)| (k.0, v.0))
                    .collect()
            })
            .unwrap_or_default();
        let cached = self
            .bpf
            .map("HELD")
            .and_then(|m| BpfHashMap::<_, u32, Pod<obs_held>>::try_from(m).ok())
            .map(|m| {
                m.iter()
                    .filter_map(Result::ok)
                    .map(|(tid, h)| (tid, h.0))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        decode::add_hold_caches(stats, holders, &cached)
    }

    /// Starts observing process `tgid` (checked first by every program).
    pub fn watch(&mut self, tgid: u32) -> Result<(), ProbeError> {
        let mut m: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(self.bpf.map_mut("WATCH").expect("WATCH"))
                .map_err(|e| ProbeError::Map("WATCH", short(&e)))?;
        m.insert(tgid, 1, 0)
            .map_err(|e| ProbeError::Map("WATCH", short(&e)))
    }

    /// Stops observing process `tgid` (the daemon, when it exits or no
    /// longer matches) and forgets its waits and futex totals: once it is
    /// unwatched no program removes them, and the tables would fill.
    pub fn unwatch(&mut self, tgid: u32) {
        if let Some(m) = self.bpf.map_mut("WATCH")
            && let Ok(mut m) = BpfHashMap::<_, u32, u8>::try_from(m)
        {
            let _ = m.remove(&tgid);
        }
        self.remove_tids_of::<obs_wait>("WAITS", |w| w.tgid == tgid);
        self.set_stack_sig(tgid, None);
        if let Some(m) = self.bpf.map_mut("AGG")
            && let Ok(mut m) = BpfHashMap::<_, Pod<obs_agg_key>, Pod<obs_agg>>::try_from(m)
        {
            let keys: Vec<Pod<obs_agg_key>> = m
                .keys()
                .filter_map(Result::ok)
                .filter(|k| k.0.tgid == tgid)
                .collect();
            for k in keys {
                let _ = m.remove(&k);
            }
        }
    }

    /// Puts (or, None, removes) process `tgid`'s creation-stack signature:
    /// a clone whose stack matches it is sent without a copy.
    pub fn set_stack_sig(&mut self, tgid: u32, sig: Option<&obs_stack_sig>) {
        let Some(m) = self.bpf.map_mut("STACK_SIG") else {
            return;
        };
        let Ok(mut m) = BpfHashMap::<_, u32, Pod<obs_stack_sig>>::try_from(m) else {
            return;
        };
        let r = match sig {
            Some(s) => m.insert(tgid, Pod(*s), 0).map_err(|e| short(&e)),
            None => {
                let _ = m.remove(&tgid);
                Ok(())
            }
        };
        if let Err(e) = r {
            // the table is full (4096 processes): full stack copies go on
            tracing::debug!("pid {tgid}: creation-stack signature not kept: {e}");
        }
    }

    pub fn take_ringbuf(&mut self) -> Result<RingBuf<MapData>, ProbeError> {
        let m = self
            .bpf
            .take_map("EVENTS")
            .ok_or(ProbeError::Map("EVENTS", "already taken".into()))?;
        RingBuf::try_from(m).map_err(|e| ProbeError::Map("EVENTS", short(&e)))
    }

    /// The wait table now: (tid, wait), waits in progress only (a thread's
    /// entry outlives its wait, with start_ns 0). Entries that vanish
    /// mid-walk are skipped. Read in batches: the daemon reads it ten times
    /// a second, with an entry for every thread of every watched process
    /// that waits.
    pub fn waits(&self) -> Vec<(u32, obs_wait)> {
        let Some(m) = self.bpf.map("WAITS") else {
            return Vec::new();
        };
        if let aya::maps::Map::HashMap(d) = m
            && let Some(v) =
                decode::hash_entries::<u32, Pod<obs_wait>>(std::os::fd::AsFd::as_fd(d.fd()))
        {
            return v
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .filter(|(_, w)| waiting(w))
                .collect();
        }
        let Ok(m) = BpfHashMap::<_, u32, Pod<obs_wait>>::try_from(m) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.0))
            .filter(|(_, w)| waiting(w))
            .collect()
    }

    /// An owned handle on the wait table, for a thread that samples it
    /// while the event loop is busy (the GIL sampler).
    pub fn wait_table(&self) -> Option<WaitTable> {
        let m = self.bpf.map("WAITS")?;
        let id = match m {
            aya::maps::Map::HashMap(d) => d.info().ok()?.id(),
            _ => return None,
        };
        let d = aya::maps::MapData::from_id(id).ok()?;
        BpfHashMap::try_from(aya::maps::Map::HashMap(d))
            .ok()
            .map(WaitTable)
    }

    /// The wait a thread is in, from the wait table.
    pub fn wait(&self, tid: u32) -> Option<obs_wait> {
        let m = BpfHashMap::<_, u32, Pod<obs_wait>>::try_from(self.bpf.map("WAITS")?).ok()?;
        m.get(&tid, 0).ok().map(|v| v.0).filter(waiting)
    }

    /// Threads of watched processes that call epoll_wait: tid -> their
    /// last entry and return.
    pub fn epoll_threads(&self) -> Vec<(u32, obs_epoll)> {
        let Some(m) = self.bpf.map("EPOLL") else {
            return Vec::new();
        };
        let Ok(m) = BpfHashMap::<_, u32, Pod<obs_epoll>>::try_from(m) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k, v.0))
            .collect()
    }

    /// Drops `tgid`'s threads that are out of their selector from the
    /// EPOLL map (waits move from the scheduler hook to the syscall hooks:
    /// their last return is stale, a busy loop's calls that did not sleep
    /// were not seen). A thread asleep in epoll_wait keeps its entry: the
    /// syscall exit ends it, and an idle loop is still read.
    pub fn forget_epoll(&mut self, tgid: u32) {
        self.remove_tids_of::<obs_epoll>("EPOLL", |v| v.tgid == tgid && v.exit_ns >= v.enter_ns);
    }

    /// Removes the entries of a tid-keyed map whose record `drop` picks.
    fn remove_tids_of<V>(&mut self, map: &str, drop: impl Fn(&V) -> bool)
    where
        Pod<V>: aya::Pod,
    {
        let Some(m) = self.bpf.map_mut(map) else {
            return;
        };
        let Ok(mut m) = BpfHashMap::<_, u32, Pod<V>>::try_from(m) else {
            return;
        };
        let tids: Vec<u32> = m
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| drop(&v.0))
            .map(|(t, _)| t)
            .collect();
        for t in tids {
            let _ = m.remove(&t);
        }
    }

    pub fn aggregates(&self) -> Vec<(obs_agg_key, obs_agg)> {
        let Some(m) = self.bpf.map("AGG") else {
            return Vec::new();
        };
        let Ok(m) = BpfHashMap::<_, Pod<obs_agg_key>, Pod<obs_agg>>::try_from(m) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (k.0, v.0))
            .collect()
    }

    pub fn drops(&self) -> Drops {
        let Some(m) = self.bpf.map("STATS") else {
            return Drops::default();
        };
        let Ok(a) = PerCpuArray::<_, u64>::try_from(m) else {
            return Drops::default();
        };
        let get = |i: obs_stat| {
            a.get(&(i as u32), 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        Drops {
            ringbuf: get(obs_stat::OBS_STAT_RB_DROPS),
            wait_table_full: get(obs_stat::OBS_STAT_WAITS_FULL),
            aggregate_full: get(obs_stat::OBS_STAT_AGG_FULL),
            watch_full: get(obs_stat::OBS_STAT_WATCH_FULL),
            records: get(obs_stat::OBS_STAT_RECORDS),
            held_full: get(obs_stat::OBS_STAT_HELD_FULL),
            order_full: get(obs_stat::OBS_STAT_ORDER_FULL),
            lock_stats_full: get(obs_stat::OBS_STAT_LSTATS_FULL),
            creating_full: get(obs_stat::OBS_STAT_CREATING_FULL),
            exited_full: get(obs_stat::OBS_STAT_EXITED_FULL),
        }
    }
}

/// See [`Probes::wait_table`].
pub struct WaitTable(BpfHashMap<aya::maps::MapData, u32, Pod<obs_wait>>);

impl WaitTable {
    /// One thread's current futex wait.
    /// Read until two reads agree: BPF writes a thread's entry in place, and
    /// a wait sampled as it begins may be caught half written.
    pub fn get(&self, tid: u32) -> Option<crate::event::Wait> {
        let mut prev = self.0.get(&tid, 0).ok()?.0;
        for _ in 0..3 {
            let w = self.0.get(&tid, 0).ok()?.0;
            if same_wait(&prev, &w) {
                return waiting(&w)
                    .then(|| decode::wait_from_raw(&w, crate::event::WaitOrigin::Kernel));
            }
            prev = w;
        }
        None
    }
}

/// Two reads of one wait-table entry that agree.
fn same_wait(a: &obs_wait, b: &obs_wait) -> bool {
    (
        a.start_ns, a.uaddr, a.uaddr2, a.op, a.val, a.flags, a.nr, a.tgid,
    ) == (
        b.start_ns, b.uaddr, b.uaddr2, b.op, b.val, b.flags, b.nr, b.tgid,
    ) && (a.ip, a.sp, a.bp, a.words_addr, a.words) == (b.ip, b.sp, b.bp, b.words_addr, b.words)
}

/// A wait-table entry of a wait in progress: the BPF side keeps a thread's
/// entry after its wait ends, with start_ns 0.
fn waiting(w: &obs_wait) -> bool {
    w.start_ns != 0
}
