//! uprobe_multi links (Linux >= 6.6): every probed function of a library in
//! one link, attached in one syscall and released after one grace period
//! (perf-event uprobes cost one each: 50 took ~6 s to release here).
//!
//! aya 0.14 cannot load a program with the expected attach type the kernel
//! requires (BPF_TRACE_UPROBE_MULTI), so the two dispatching programs
//! (`upm_entry`, `upm_return`) are relocated with aya-obj's public API
//! against the maps aya already created (same fds, so the same state) and
//! loaded with raw BPF_PROG_LOAD; links are made with BPF_LINK_CREATE.

use std::{
    collections::{HashMap, HashSet},
    ffi::CString,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::Path,
};

use aya::{Btf, Ebpf, maps::Map};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_KPROBE: u32 = 2;
const BPF_TRACE_UPROBE_MULTI: u32 = 48;
const BPF_F_UPROBE_MULTI_RETURN: u32 = 1;

/// The uprobe_multi programs: thread lifecycle (entry, return) and the
/// deep tier's locks (entry, return), told apart by attach cookies.
pub(super) const THREAD_PROGS: [&str; 2] = ["upm_thread_entry", "upm_thread_return"];
pub(super) const LOCK_PROGS: [&str; 2] = ["upm_entry", "upm_return"];

/// The loaded programs: thread lifecycle (entry, return), and the lock
/// ones when wanted (their return program takes the verifier longest).
pub struct Multi {
    thread: [OwnedFd; 2],
    locks: Option<[OwnedFd; 2]>,
}

fn map_fd(m: &Map) -> RawFd {
    let d = match m {
        Map::Array(d)
        | Map::ArrayOfMaps(d)
        | Map::BloomFilter(d)
        | Map::CgroupArray(d)
        | Map::CgroupStorage(d)
        | Map::CgrpStorage(d)
        | Map::CpuMap(d)
        | Map::DevMap(d)
        | Map::DevMapHash(d)
        | Map::HashMap(d)
        | Map::HashOfMaps(d)
        | Map::InodeStorage(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::PerCpuCgroupStorage(d)
        | Map::PerCpuHashMap(d)
        | Map::PerCpuLruHashMap(d)
        | Map::PerfEventArray(d)
        | Map::ProgramArray(d)
        | Map::Queue(d)
        | Map::ReusePortSockArray(d)
        | Map::RingBuf(d)
        | Map::SockHash(d)
        | Map::SockMap(d)
        | Map::SkStorage(d)
        | Map::Stack(d)
        | Map::StackTraceMap(d)
        | Map::Unsupported(d)
        | Map::XskMap(d) => d,
    };
    d.fd().as_fd().as_raw_fd()
}

fn bpf(cmd: libc::c_long, attr: &mut [u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a zero-padded bpf_attr of attr.len() bytes whose
    // pointers (set by the callers) outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: these commands return a new file descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

fn put32(a: &mut [u8], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put64(a: &mut [u8], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}

const BPF_BTF_LOAD: libc::c_long = 18;

/// Loads the object's BTF (the programs' func_info points into it: the
/// kernel requires it for programs with callbacks, e.g. bpf_loop's).
fn btf_load(o: &mut aya_obj::Object) -> Result<Option<OwnedFd>, String> {
    // uprobe_multi needs Linux >= 6.6, which has every BTF feature.
    let features = aya_obj::btf::BtfFeatures::new(true, true, true, true, true, true, true, true);
    let Some(btf) = o
        .fixup_and_sanitize_btf(&features)
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let bytes = btf.to_bytes();
    // union bpf_attr, BPF_BTF_LOAD part
    let mut a = [0u8; 32];
    put64(&mut a, 0, bytes.as_ptr() as u64);
    put32(&mut a, 16, bytes.len() as u32);
    bpf(BPF_BTF_LOAD, &mut a)
        .map(Some)
        .map_err(|e| format!("loading BTF: {e}"))
}

/// A program's instructions and its BTF func_info (record size, records).
struct Prog {
    insns: Vec<aya_obj::generated::bpf_insn>,
    func_info: Vec<u8>,
    func_info_rec_size: u32,
    func_info_cnt: u32,
}

fn prog_load(name: &str, p: &Prog, btf: Option<&OwnedFd>) -> Result<OwnedFd, String> {
    let insns = &p.insns;
    let license = CString::new("GPL").expect("no NUL");
    let load = |log: &mut Vec<u8>, level: u32| {
        // union bpf_attr, BPF_PROG_LOAD part (include/uapi/linux/bpf.h)
        let mut a = [0u8; 128];
        put32(&mut a, 0, BPF_PROG_TYPE_KPROBE);
        put32(&mut a, 4, insns.len() as u32);
        put64(&mut a, 8, insns.as_ptr() as u64);
        put64(&mut a, 16, license.as_ptr() as u64);
        if !log.is_empty() {
            put32(&mut a, 24, level);
            put32(&mut a, 28, log.len() as u32);
            put64(&mut a, 32, log.as_mut_ptr() as u64);
        }
        let n = name.as_bytes();
        a[48..48 + n.len().min(15)].copy_from_slice(&n[..n.len().min(15)]);
        put32(&mut a, 68, BPF_TRACE_UPROBE_MULTI);
        if let Some(btf) = btf.filter(|_| p.func_info_cnt > 0) {
            put32(&mut a, 72, btf.as_raw_fd() as u32);
            put32(&mut a, 76, p.func_info_rec_size);
            put64(&mut a, 80, p.func_info.as_ptr() as u64);
            put32(&mut a, 88, p.func_info_cnt);
        }
        bpf(BPF_PROG_LOAD, &mut a)
    };
    // BPF_LOG_STATS (4): the verifier's cost, for -v
    let mut stats = vec![0u8; 1024];
    let r = load(&mut stats, 4);
    if r.is_ok() {
        let end = stats.iter().position(|&b| b == 0).unwrap_or(0);
        let text = String::from_utf8_lossy(&stats[..end]);
        tracing::debug!("verifier, {name}: {}", text.trim().replace('\n', "; "));
    }
    r.map_err(|e| {
        let mut log = vec![0u8; 1 << 20];
        let _ = load(&mut log, 1);
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        tracing::debug!(
            "verifier log of {name}:\n{}",
            String::from_utf8_lossy(&log[..end])
        );
        format!("loading {name}: {e}")
    })
}

impl Multi {
    /// Relocates and loads the dispatching programs against `bpf`'s maps
    /// (call before any map is taken out of `bpf`). Fails on kernels
    /// without uprobe_multi.
    pub fn load(bpf: &Ebpf, btf: &Btf, obj: &[u8], locks: bool) -> Result<Multi, String> {
        let mut o = aya_obj::Object::parse(obj).map_err(|e| e.to_string())?;
        let obj_btf = btf_load(&mut o)?;
        o.relocate_btf(btf).map_err(|e| e.to_string())?;
        let text: HashSet<usize> = o.functions.keys().map(|(s, _)| *s).collect();
        let defs = o.maps.clone();
        let mut fds = HashMap::new();
        for name in defs.keys() {
            let m = bpf
                .map(name)
                .ok_or_else(|| format!("map {name} is not loaded"))?;
            fds.insert(name.clone(), map_fd(m));
        }
        o.relocate_maps(defs.iter().map(|(n, d)| (n.as_str(), fds[n], d)), &text)
            .map_err(|e| e.to_string())?;
        o.relocate_calls(&text).map_err(|e| e.to_string())?;
        let prog = |name: &str| -> Result<Prog, String> {
            let p = o
                .programs
                .get(name)
                .ok_or_else(|| format!("no program {name}"))?;
            let f = &o.functions[&p.function_key()];
            Ok(Prog {
                insns: f.instructions.clone(),
                func_info: f.func_info.func_info_bytes(),
                func_info_rec_size: f.func_info_rec_size as u32,
                func_info_cnt: f.func_info.len() as u32,
            })
        };
        let load = |name: &str| prog_load(name, &prog(name)?, obj_btf.as_ref());
        Ok(Multi {
            thread: [load(THREAD_PROGS[0])?, load(THREAD_PROGS[1])?],
            locks: if locks {
                Some([load(LOCK_PROGS[0])?, load(LOCK_PROGS[1])?])
            } else {
                None
            },
        })
    }

    /// Whether the lock programs are loaded.
    pub fn has_locks(&self) -> bool {
        self.locks.is_some()
    }

    /// One link: the entry (or return) program of the thread (or lock) set
    /// on `offsets` (file offsets) of `path`, each with its cookie, firing
    /// only in process `pid`.
    pub fn attach(
        &self,
        path: &Path,
        offsets: &[u64],
        cookies: &[u64],
        (thread, ret): (bool, bool),
        pid: u32,
    ) -> Result<OwnedFd, String> {
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(offsets.len(), cookies.len());
        let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let set = if thread {
            &self.thread
        } else {
            self.locks.as_ref().ok_or("lock programs not loaded")?
        };
        let prog = &set[usize::from(ret)];
        // union bpf_attr, BPF_LINK_CREATE with uprobe_multi
        let mut a = [0u8; 64];
        put32(&mut a, 0, prog.as_raw_fd() as u32);
        put32(&mut a, 8, BPF_TRACE_UPROBE_MULTI);
        put64(&mut a, 16, cpath.as_ptr() as u64);
        put64(&mut a, 24, offsets.as_ptr() as u64);
        put64(&mut a, 40, cookies.as_ptr() as u64);
        put32(&mut a, 48, offsets.len() as u32);
        put32(&mut a, 52, if ret { BPF_F_UPROBE_MULTI_RETURN } else { 0 });
        put32(&mut a, 56, pid);
        bpf(BPF_LINK_CREATE, &mut a).map_err(|e| e.to_string())
    }
}

/// Releases links in parallel: each waits out its own grace period.
pub fn release(links: Vec<OwnedFd>) {
    std::thread::scope(|s| {
        for l in links {
            // Without a thread the closure, and so the link, drops here.
            let _ = std::thread::Builder::new().spawn_scoped(s, move || drop(l));
        }
    });
}

/// Releases links on a thread of its own: a process's exit costs the
/// caller nothing, and what piles up meanwhile goes in one parallel batch
/// (one grace period). Dropping the reaper waits until all are released.
#[derive(Default)]
pub struct Reaper {
    tx: Option<std::sync::mpsc::Sender<Vec<Box<dyn Send>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reaper {
    pub fn release(&mut self, links: Vec<Box<dyn Send>>) {
        if links.is_empty() {
            return;
        }
        if self.tx.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<Box<dyn Send>>>();
            let spawned = std::thread::Builder::new()
                .name("uprobe-reaper".into())
                .spawn(move || {
                    while let Ok(mut batch) = rx.recv() {
                        while let Ok(more) = rx.try_recv() {
                            batch.extend(more);
                        }
                        release_all(batch);
                    }
                });
            match spawned {
                Ok(t) => {
                    self.tx = Some(tx);
                    self.thread = Some(t);
                }
                // No thread: release here.
                Err(_) => return release_all(links),
            }
        }
        if let Some(tx) = &self.tx
            && let Err(e) = tx.send(links)
        {
            release_all(e.0);
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `release` for links of any kind.
fn release_all(links: Vec<Box<dyn Send>>) {
    std::thread::scope(|s| {
        for l in links {
            let _ = std::thread::Builder::new().spawn_scoped(s, move || drop(l));
        }
    });
}
