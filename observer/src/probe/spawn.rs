//! `observer daemon`'s kernel-side selection: programs on exec, fork and
//! rename that tell the daemon about new programs a rule may select (the
//! rest are filtered in the kernel by name) and about forks of watched
//! processes, on a ring buffer of their own.

use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use observer_ebpf::bindings::{
    OBS_MAX_RULE_COMMS, obs_comm, obs_spawn_mode_OBS_SPAWN_ALL, obs_spawn_mode_OBS_SPAWN_COMMS,
    obs_spawn_stat_OBS_SPAWN_STAT_DROPS, obs_spawn_stat_OBS_SPAWN_STAT_EXECS,
    obs_spawn_stat_OBS_SPAWN_STAT_FORKS, obs_spawn_stat_OBS_SPAWN_STAT_SENT,
};

use super::{How, ProbeError, Probes, decode::Pod, req, short};

/// The spawn programs' maps (but the ring), taken out of the object.
pub struct SpawnMaps {
    comms: BpfHashMap<MapData, Pod<obs_comm>, u8>,
    cfg: Array<MapData, u32>,
    stats: PerCpuArray<MapData, u64>,
    pending: BpfHashMap<MapData, u32, u8>,
}

/// The kernel's spawn counters (cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SpawnCounts {
    /// Execs of unwatched processes the kernel looked at.
    pub execs: u64,
    /// Of those, sent to userspace (a rule may select them).
    pub sent: u64,
    pub forks: u64,
    /// Notes lost (ring full).
    pub drops: u64,
}

fn comm_key(name: &str) -> Option<Pod<obs_comm>> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= obs_comm::default().comm.len() {
        return None;
    }
    let mut k = Pod(obs_comm::default());
    for (d, s) in k.0.comm.iter_mut().zip(b) {
        *d = *s as std::os::raw::c_char;
    }
    Some(k)
}

/// The daemon's programs and their tp_btf hooks. (program, tracepoint)
pub(super) const SPAWN_HOOKS: &[(&str, &str)] = &[
    ("spawn_exec", "sched_process_exec"),
    ("spawn_fork", "sched_process_fork"),
    ("spawn_rename", "task_rename"),
];

impl Probes {
    /// Attaches the spawn programs (tp_btf only) and takes their maps.
    /// Nothing is sent until `SpawnMaps::set_names`.
    pub fn attach_spawns(&mut self) -> Result<(RingBuf<MapData>, SpawnMaps), ProbeError> {
        for &(prog, tp) in SPAWN_HOOKS {
            self.attach_one(&req(prog, How::TpBtf(tp)))
                .inspect_err(|e| tracing::debug!("{prog}: {}", short(e)))
                .map_err(|e| ProbeError::Attach {
                    group: "spawn",
                    // the verifier's log is long: its first line says enough
                    why: format!("{prog}: {}", short(&e).lines().next().unwrap_or("")),
                })?;
        }
        let mut take = |name: &'static str| {
            self.bpf
                .take_map(name)
                .ok_or(ProbeError::Map(name, "already taken".into()))
        };
        let (ring, comms, cfg, stats) = (
            take("SPAWNS")?,
            take("RULE_COMMS")?,
            take("SPAWN_CFG")?,
            take("SPAWN_STATS")?,
        );
        let pending = take("SPAWN_PENDING")?;
        let err = |n: &'static str| move |e: aya::maps::MapError| ProbeError::Map(n, short(&e));
        Ok((
            RingBuf::try_from(ring).map_err(err("SPAWNS"))?,
            SpawnMaps {
                comms: BpfHashMap::try_from(comms).map_err(err("RULE_COMMS"))?,
                cfg: Array::try_from(cfg).map_err(err("SPAWN_CFG"))?,
                stats: PerCpuArray::try_from(stats).map_err(err("SPAWN_STATS"))?,
                pending: BpfHashMap::try_from(pending).map_err(err("SPAWN_PENDING"))?,
            },
        ))
    }
}

impl SpawnMaps {
    /// Which execs the kernel sends: those whose comm, executable or argv[0]
    /// file name is in `names` (`all`: every exec, when some rule has no
    /// name). Renames to one of `names` are sent either way. Too many
    /// names: every exec.
    pub fn set_names(&mut self, names: &[String], all: bool) -> Result<(), String> {
        let keys: Vec<Pod<obs_comm>> = names.iter().filter_map(|n| comm_key(n)).collect();
        let all = all || keys.len() != names.len() || keys.len() > OBS_MAX_RULE_COMMS as usize;
        // Every exec while the names change: none is dropped in between.
        self.cfg
            .set(0, obs_spawn_mode_OBS_SPAWN_ALL, 0)
            .map_err(|e| short(&e))?;
        let old: Vec<Pod<obs_comm>> = self.comms.keys().filter_map(Result::ok).collect();
        for k in old {
            let _ = self.comms.remove(&k);
        }
        for k in keys.iter().take(OBS_MAX_RULE_COMMS as usize) {
            self.comms.insert(k, 1, 0).map_err(|e| short(&e))?;
        }
        if !all {
            self.cfg
                .set(0, obs_spawn_mode_OBS_SPAWN_COMMS, 0)
                .map_err(|e| short(&e))?;
        }
        Ok(())
    }

    /// The daemon has decided on `tgid` (watched or not): its forks need
    /// no longer be sent on its account.
    pub fn settled(&mut self, tgid: u32) {
        let _ = self.pending.remove(&tgid);
    }

    pub fn counts(&self) -> SpawnCounts {
        let get = |i: u32| {
            self.stats
                .get(&i, 0)
                .map(|v| v.iter().sum::<u64>())
                .unwrap_or(0)
        };
        SpawnCounts {
            execs: get(obs_spawn_stat_OBS_SPAWN_STAT_EXECS),
            sent: get(obs_spawn_stat_OBS_SPAWN_STAT_SENT),
            forks: get(obs_spawn_stat_OBS_SPAWN_STAT_FORKS),
            drops: get(obs_spawn_stat_OBS_SPAWN_STAT_DROPS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_keys_are_nul_padded_and_short() {
        let k = comm_key("pytest").unwrap();
        let bytes: Vec<u8> = k.0.comm.iter().map(|&c| c as u8).collect();
        assert_eq!(&bytes[..6], b"pytest");
        assert!(bytes[6..].iter().all(|&b| b == 0));
        assert!(comm_key("").is_none());
        assert!(comm_key("0123456789abcdef").is_none());
        assert!(comm_key("0123456789abcde").is_some());
    }
}
