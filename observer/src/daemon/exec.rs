//! Exec notifications: the daemon checks each new program against its
//! rules right after exec. From BPF programs on exec and fork that send
//! only the execs a rule may select (by name, in the kernel) and forks of
//! watched processes (`SpawnWatch`); or, where those cannot attach, from
//! the kernel's process events connector (netlink, CN_IDX_PROC), which
//! sends every exec and fork of the host (`ExecWatch`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use aya::maps::{MapData, RingBuf};
use observer_ebpf::bindings::{
    obs_spawn_kind_OBS_SPAWN_EXEC, obs_spawn_kind_OBS_SPAWN_FORK, obs_spawn_kind_OBS_SPAWN_RENAME,
};
use tokio::io::{Interest, unix::AsyncFd};

use super::config::Config;
use crate::probe::{
    Probes, decode,
    spawn::{SpawnCounts, SpawnMaps},
};

/// Exec and fork notes filtered in the kernel.
pub struct SpawnWatch {
    ring: AsyncFd<RingBuf<MapData>>,
    maps: SpawnMaps,
    drops_seen: u64,
}

/// The names the kernel filters execs by, and whether it cannot (a rule
/// without a comm key selects by exe, cgroup or user, which only
/// userspace checks). Excludes are userspace's: they only ever remove.
pub fn kernel_names(cfg: &Config) -> (Vec<String>, bool) {
    let mut names: Vec<String> = cfg.rules.iter().filter_map(|r| r.comm.clone()).collect();
    names.sort();
    names.dedup();
    (names, cfg.rules.iter().any(|r| r.comm.is_none()))
}

impl SpawnWatch {
    pub fn open(probes: &mut Probes, cfg: &Config) -> Result<SpawnWatch, String> {
        let (ring, mut maps) = probes.attach_spawns().map_err(|e| e.to_string())?;
        let (names, all) = kernel_names(cfg);
        maps.set_names(&names, all)?;
        // SAFETY: the RingBuf owns its map fd and keeps it open while the
        // AsyncFd owns the RingBuf.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.to_string())?;
        Ok(SpawnWatch {
            ring,
            maps,
            drops_seen: 0,
        })
    }

    /// SIGHUP: the new config's names.
    pub fn set_rules(&mut self, cfg: &Config) -> Result<(), String> {
        let (names, all) = kernel_names(cfg);
        self.maps.set_names(&names, all)
    }

    pub fn counts(&self) -> SpawnCounts {
        self.maps.counts()
    }

    /// Waits for notes and returns what is queued (a note lost in the
    /// kernel sets `overrun`).
    pub async fn next(&mut self) -> std::io::Result<Batch> {
        let mut out = Batch::default();
        let mut g = self.ring.readable_mut().await?;
        g.clear_ready();
        let rb = g.get_inner_mut();
        while let Some(item) = rb.next() {
            if let Some(s) = decode::spawn(&item) {
                #[allow(non_upper_case_globals)]
                match s.kind {
                    obs_spawn_kind_OBS_SPAWN_EXEC | obs_spawn_kind_OBS_SPAWN_RENAME => {
                        out.execs.push(s.tgid)
                    }
                    obs_spawn_kind_OBS_SPAWN_FORK => out.forks.push((s.parent, s.tgid)),
                    _ => {}
                }
            }
        }
        drop(g);
        let drops = self.maps.counts().drops;
        if drops > self.drops_seen {
            self.drops_seen = drops;
            out.overrun = true;
        }
        Ok(out)
    }
}

const NETLINK_CONNECTOR: i32 = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const NLMSG_HDR: usize = 16;
const CN_MSG: usize = 20;
/// proc_event: what, cpu, timestamp_ns, then the event data.
const EV_DATA: usize = 16;
/// Datagrams read per call of `next` (one event each).
const MAX_READS: usize = 256;

/// Where the notifications come from.
pub enum Notes {
    Kernel(Box<SpawnWatch>),
    Connector(ExecWatch),
}

impl Notes {
    /// The kernel filter, else the connector, else None (the daemon then
    /// reads /proc every second). `OBSERVER_EXEC_FILTER=0` skips the
    /// kernel filter (to compare the two).
    pub fn open(probes: &mut Probes, cfg: &Config) -> Option<Notes> {
        if std::env::var_os("OBSERVER_EXEC_FILTER").is_none_or(|v| v != "0") {
            match SpawnWatch::open(probes, cfg) {
                Ok(w) => {
                    let (names, all) = kernel_names(cfg);
                    tracing::info!(
                        "exec notifications from BPF, {}",
                        if all {
                            "every exec (a rule has no comm key)".to_owned()
                        } else {
                            format!("filtered in the kernel by name ({})", names.len())
                        }
                    );
                    return Some(Notes::Kernel(Box::new(w)));
                }
                Err(e) => tracing::info!(
                    "no kernel exec filter ({e}): using the process events connector"
                ),
            }
        }
        match ExecWatch::open() {
            Ok(w) => Some(Notes::Connector(w)),
            Err(e) => {
                tracing::warn!(
                    "no exec notifications ({e}): new processes are found by reading /proc every second"
                );
                None
            }
        }
    }

    pub async fn next(&mut self) -> std::io::Result<Batch> {
        match self {
            Notes::Kernel(w) => w.next().await,
            Notes::Connector(w) => w.next().await,
        }
    }

    /// After a reload: the kernel filters by the new rules' names.
    pub fn set_rules(&mut self, cfg: &Config) {
        if let Notes::Kernel(w) = self
            && let Err(e) = w.set_rules(cfg)
        {
            tracing::error!("exec filter: cannot set the new names ({e}): every exec is sent");
        }
    }

    /// The daemon has decided on `tgid` (see `SpawnMaps::settled`).
    pub fn settled(&mut self, tgid: u32) {
        if let Notes::Kernel(w) = self {
            w.maps.settled(tgid);
        }
    }

    pub fn counts(&self) -> Option<SpawnCounts> {
        match self {
            Notes::Kernel(w) => Some(w.counts()),
            Notes::Connector(_) => None,
        }
    }
}

/// What one read of the socket gave.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// TGIDs that exec'd.
    pub execs: Vec<u32>,
    /// New processes: (parent TGID, child TGID). Threads are left out.
    pub forks: Vec<(u32, u32)>,
    /// The kernel dropped notifications (socket buffer overrun): rescan /proc.
    pub overrun: bool,
}

pub struct ExecWatch {
    fd: AsyncFd<OwnedFd>,
}

impl ExecWatch {
    /// Subscribes to process events (needs CAP_NET_ADMIN).
    pub fn open() -> std::io::Result<ExecWatch> {
        // SAFETY: plain syscalls on a socket this function owns.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                NETLINK_CONNECTOR,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        sa.nl_groups = CN_IDX_PROC;
        sa.nl_pid = 0;
        // SAFETY: sa is a valid sockaddr_nl of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // A bigger buffer rides out exec storms (best effort).
        let size: libc::c_int = 4 << 20;
        // SAFETY: valid option pointer and length.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &size as *const _ as *const libc::c_void,
                4,
            )
        };
        let msg = listen_message();
        // SAFETY: msg is a valid buffer of its length.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the AsyncFd owns the socket and keeps it open while registered.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        Ok(ExecWatch { fd })
    }

    /// Waits for notifications and returns what is queued, at most
    /// `MAX_READS` datagrams at a time: a fork storm never runs dry, and
    /// the rest of the loop must get its turn.
    pub async fn next(&mut self) -> std::io::Result<Batch> {
        let mut out = Batch::default();
        let mut guard = self.fd.readable_mut().await?;
        let mut buf = [0u8; 8192];
        for _ in 0..MAX_READS {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    guard.get_inner().as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        guard.clear_ready();
                        break;
                    }
                    Some(libc::ENOBUFS) => out.overrun = true,
                    Some(libc::EINTR) => {}
                    _ => return Err(e),
                }
                continue;
            }
            parse(&buf[..n as usize], &mut out);
        }
        Ok(out)
    }
}

fn listen_message() -> Vec<u8> {
    let len = NLMSG_HDR + CN_MSG + 4;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes()); // nlmsg_len
    m.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes()); // nlmsg_type
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&std::process::id().to_ne_bytes()); // pid
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // ack
    m.extend_from_slice(&4u16.to_ne_bytes()); // len
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    m
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_ne_bytes(s.try_into().unwrap()))
}

/// Walks the netlink messages of one datagram: exec and fork events.
pub fn parse(mut b: &[u8], out: &mut Batch) {
    while b.len() >= NLMSG_HDR {
        let Some(len) = u32_at(b, 0).map(|l| l as usize) else {
            return;
        };
        if len < NLMSG_HDR || len > b.len() {
            return;
        }
        let msg = &b[..len];
        let ev = NLMSG_HDR + CN_MSG;
        let data = ev + EV_DATA;
        if u32_at(msg, NLMSG_HDR) == Some(CN_IDX_PROC) {
            match u32_at(msg, ev) {
                Some(PROC_EVENT_EXEC) => out.execs.extend(u32_at(msg, data + 4)),
                Some(PROC_EVENT_FORK) => {
                    if let (Some(ptgid), Some(cpid), Some(ctgid)) = (
                        u32_at(msg, data + 4),
                        u32_at(msg, data + 8),
                        u32_at(msg, data + 12),
                    ) && cpid == ctgid
                        && ctgid != ptgid
                    {
                        out.forks.push((ptgid, ctgid));
                    }
                }
                _ => {}
            }
        }
        let step = (len + 3) & !3;
        b = &b[step.min(b.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_msg(pid: u32, tgid: u32, what: u32) -> Vec<u8> {
        event(what, &[pid, tgid])
    }

    fn event(what: u32, data: &[u32]) -> Vec<u8> {
        let mut m = listen_message();
        m.truncate(NLMSG_HDR + CN_MSG);
        m.extend_from_slice(&what.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes()); // cpu
        m.extend_from_slice(&0u64.to_ne_bytes()); // timestamp
        for d in data {
            m.extend_from_slice(&d.to_ne_bytes());
        }
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn parses_exec_events_only() {
        let mut buf = exec_msg(10, 10, PROC_EVENT_EXEC);
        buf.extend(event(PROC_EVENT_FORK, &[5, 5, 20, 20])); // a process
        buf.extend(event(PROC_EVENT_FORK, &[5, 5, 21, 5])); // a thread
        buf.extend(exec_msg(11, 12, 0x8000_0000)); // exit
        buf.extend(exec_msg(13, 14, PROC_EVENT_EXEC));
        let mut out = Batch::default();
        parse(&buf, &mut out);
        assert_eq!(out.execs, vec![10, 14]);
        assert_eq!(out.forks, vec![(5, 20)]);
        // Truncated or garbage input stops quietly.
        let mut out = Batch::default();
        parse(&buf[..30], &mut out);
        parse(&[0xff; 64], &mut out);
        assert_eq!(out, Batch::default());
    }
}
