//! What /proc tells about a process without BPF: its threads (to seed the
//! model when attaching) and its command line.

use crate::{
    event::{Event, Tid},
    sys::{clock_ns, mono_ns},
};

/// Converts a /proc starttime (ticks since boot) to CLOCK_MONOTONIC ns.
fn start_ticks_to_mono(ticks: u64) -> u64 {
    let hz = procfs::ticks_per_second().max(1);
    let start_boot = ticks.saturating_mul(1_000_000_000) / hz;
    let (boot, mono) = (clock_ns(libc::CLOCK_BOOTTIME), mono_ns());
    mono.saturating_sub(boot.saturating_sub(start_boot))
}

pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The executable of `pid` as /proc/PID/exe names it (a path in the
/// process's mount namespace; " (deleted)" when replaced since).
pub fn exe(pid: u32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// When `pid` started (/proc/PID/stat `starttime`), in ns since boot.
pub fn start_time_ns(pid: u32) -> Option<u64> {
    let stat = procfs::process::Process::new(pid as i32)
        .ok()?
        .stat()
        .ok()?;
    let hz = procfs::ticks_per_second().max(1);
    Some(stat.starttime.saturating_mul(1_000_000_000) / hz)
}

/// The `Start` of observing a process found in /proc: its command line,
/// executable and start time as /proc shows them now.
pub fn start_event(pid: u32, ts_ns: u64, attached: bool) -> Event {
    Event::Start {
        ts_ns,
        tgid: pid,
        cmdline: cmdline(pid),
        attached,
        exe: exe(pid),
        start_time_ns: start_time_ns(pid),
    }
}

/// Whether `pid` is in the middle of an exec: its new memory is mapped but
/// its arguments are not set up yet (/proc/PID/stat `arg_start` is 0), so
/// /proc shows an empty command line. A rename note comes from that window
/// (exec sets the new name before it copies the arguments).
pub fn mid_exec(pid: u32) -> bool {
    procfs::process::Process::new(pid as i32)
        .and_then(|p| p.stat())
        .is_ok_and(|s| s.arg_start == Some(0))
}

/// A thread's name (/proc/PID/task/TID/comm), if it is there.
pub fn thread_comm(pid: u32, tid: u32) -> Option<String> {
    crate::sys::read_proc(&format!("/proc/{pid}/task/{tid}/comm")).map(|s| s.trim_end().to_string())
}

pub fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task")).exists()
}

/// The TGID of a TID, or None when the task is gone.
pub fn tgid_of(tid: u32) -> Option<u32> {
    let s = crate::sys::read_proc(&format!("/proc/{tid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// One `ThreadSeen` event per thread of `pid` right now.
pub fn seed_threads(pid: u32) -> std::io::Result<Vec<Event>> {
    let now = mono_ns();
    let proc_ = procfs::process::Process::new(pid as i32).map_err(std::io::Error::other)?;
    let ppid = proc_.stat().ok().map(|s| s.ppid as Tid);
    let mut out = Vec::new();
    for task in proc_.tasks().map_err(std::io::Error::other)?.flatten() {
        let Ok(stat) = task.stat() else { continue };
        let tid = task.tid as Tid;
        // stat's comm is the comm file's text (one read fewer per thread).
        let name = stat.comm.clone();
        out.push(Event::ThreadSeen {
            ts_ns: now,
            tgid: pid,
            tid,
            name,
            parent_tid: if tid == pid { ppid } else { None },
            start_ns: Some(start_ticks_to_mono(stat.starttime)),
        });
    }
    Ok(out)
}

/// Whether a file name is a library holding libc's thread and lock
/// functions (glibc >= 2.34 has pthread in libc; older ones libpthread).
pub fn is_thread_lib(file: &str) -> bool {
    file.starts_with("libc.so") || file.starts_with("libc-2.") || file.starts_with("libpthread")
}

/// Whether a file name is a CPython interpreter or libpython.
pub fn is_python(file: &str) -> bool {
    file.starts_with("libpython")
        || (file.starts_with("python") && !file.contains(".so") && !file.ends_with(".py"))
}

/// Libraries of `pid` that hold the libc thread functions, as paths that
/// resolve in the target's mount namespace (through /proc/PID/root): libc
/// (glibc >= 2.34 has pthread in it), libpthread for older glibc, or the
/// executable itself when it is static (no dynamic loader mapped).
pub fn thread_libs(pid: u32) -> Vec<std::path::PathBuf> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut libs: Vec<String> = Vec::new();
    let mut has_loader = false;
    for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
        let file = path.rsplit('/').next().unwrap_or(path);
        if file.starts_with("ld-linux")
            || file.starts_with("ld-musl")
            || file.starts_with("ld64.so")
        {
            has_loader = true;
        }
        if is_thread_lib(file) && path.starts_with('/') && !libs.iter().any(|l| l == path) {
            libs.push(path.to_string());
        }
    }
    if libs.is_empty()
        && !has_loader
        && let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe"))
    {
        libs.push(exe.display().to_string());
    }
    libs.into_iter()
        .map(|l| std::path::PathBuf::from(format!("/proc/{pid}/root{l}")))
        .collect()
}

/// CPython's lock functions live in libpython, or in the interpreter
/// executable itself when it is linked statically (the common default).
pub fn python_libs(pid: u32) -> Vec<std::path::PathBuf> {
    let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let mut libs: Vec<String> = Vec::new();
    for path in maps.lines().filter_map(|l| l.split_whitespace().nth(5)) {
        let file = path.rsplit('/').next().unwrap_or(path);
        if is_python(file) && path.starts_with('/') && !libs.iter().any(|l| l == path) {
            libs.push(path.to_string());
        }
    }
    libs.into_iter()
        .map(|l| std::path::PathBuf::from(format!("/proc/{pid}/root{l}")))
        .collect()
}

/// The live descendants of `pid` (children first, then theirs), from the
/// parent pid of every process in /proc.
pub fn descendants(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| {
            let st = procfs::process::Process::new(p as i32).ok()?.stat().ok()?;
            Some((p, u32::try_from(st.ppid).ok()?))
        })
        .collect();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 1024 {
        let up = out[i];
        out.extend(
            parents
                .iter()
                .filter(|&&(p, pp)| pp == up && !out.contains(&p))
                .map(|x| x.0)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    out.remove(0);
    out
}

/// The processes other than `except` that map the object (device, inode)
/// shared (`MAP_SHARED`): who else can take a lock that lives in it, as
/// fuser(1) finds them.
pub fn sharing(dev: (u32, u32), inode: u64, except: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != except)
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|t| {
                observer_core::vocab::frames::parse_maps(&t)
                    .iter()
                    .any(|m| m.shared && m.dev == dev && m.inode == inode)
            })
        })
        .collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    /// A running process has its arguments (arg_start set); a missing one
    /// is not mid-exec either.
    #[test]
    fn a_settled_process_is_not_mid_exec() {
        assert!(!super::mid_exec(std::process::id()));
        assert!(!super::mid_exec(u32::MAX));
    }
}
