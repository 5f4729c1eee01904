//! Privileges, processes and file descriptors: small wrappers over libc.

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
pub fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// A small /proc file's text in one read (plus the one that sees its end):
/// `fs::read_to_string` would also stat it and probe with tiny reads, and
/// /proc files report size 0. Per-thread files are read on every scan.
pub fn read_proc(path: &str) -> Option<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    // Not File::read_to_end: it stats and seeks the file for a size hint.
    let mut buf = vec![0u8; 1024];
    let mut n = 0;
    loop {
        if n == buf.len() {
            buf.resize(n * 2, 0);
        }
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(n);
    String::from_utf8(buf).ok()
}

/// Fails with one clear line unless we may load tracing BPF programs.
pub fn check_privileges() -> Result<()> {
    let caps = effective_caps();
    let has = |c: u32| caps & (1u64 << c) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        bail!("permission denied: observer needs root, or CAP_BPF and CAP_PERFMON (try sudo)");
    }
    if !has(CAP_SYS_PTRACE) {
        tracing::warn!("no CAP_SYS_PTRACE: waits that began before attaching may be missed");
    }
    Ok(())
}

/// A pidfd for `pid`: readable once the process has exited.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned by us.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reaps child `pid`; returns the raw wait status.
pub fn waitpid(pid: u32) -> std::io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: status is ours; pid is our child.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if r >= 0 {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: sending a signal has no memory effects.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Shell-style exit code for a raw wait status.
pub fn exit_code_of(status: i32) -> u8 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else if libc::WIFSIGNALED(status) {
        (128 + libc::WTERMSIG(status)) as u8
    } else {
        1
    }
}

/// Finds `cmd` like execvp would, so a missing command fails before fork.
pub fn resolve_command(cmd: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &std::path::Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if cmd.contains('/') {
        let p = std::path::PathBuf::from(cmd);
        if ok(&p) {
            return Ok(p);
        }
        bail!("cannot run {cmd:?}: no such executable file");
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let p = dir.join(cmd);
        if ok(&p) {
            return Ok(p);
        }
    }
    bail!("command not found: {cmd:?}")
}

/// A child forked but held before exec until `release`, so the probes see
/// it from its first instruction (no ptrace).
pub struct GatedChild {
    pub pid: u32,
    gate: Option<OwnedFd>,
    err: Option<OwnedFd>,
}

fn pipe_cloexec() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a 2-element array, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl GatedChild {
    pub fn spawn(prog: &std::path::Path, argv: &[String]) -> Result<GatedChild> {
        use std::{ffi::CString, os::fd::AsRawFd, os::unix::ffi::OsStrExt};
        let cprog =
            CString::new(prog.as_os_str().as_bytes()).context("command path has a NUL byte")?;
        let cargs: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .context("argument has a NUL byte")?;
        let mut ptrs: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let (gate_r, gate_w) = pipe_cloexec()?;
        let (err_r, err_w) = pipe_cloexec()?;
        // SAFETY: between fork and exec the child only calls async-signal-safe
        // functions (read, write, execv, _exit) on memory prepared above.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("fork");
        }
        if pid == 0 {
            unsafe {
                // Only the parent may hold the gate's write end (else EOF never
                // comes if it dies), and the target dies with the observer
                // rather than run on unobserved (like `timeout`).
                libc::close(gate_w.as_raw_fd());
                libc::close(err_r.as_raw_fd());
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                );
                if libc::getppid() != parent {
                    libc::_exit(127);
                }
                let mut b = 0u8;
                let n = libc::read(gate_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
                if n != 1 {
                    libc::_exit(127); // the observer went away before releasing us
                }
                libc::execv(cprog.as_ptr(), ptrs.as_ptr());
                let e = *libc::__errno_location();
                libc::write(err_w.as_raw_fd(), (&e as *const i32).cast(), 4);
                libc::_exit(127);
            }
        }
        drop(gate_r);
        drop(err_w);
        Ok(GatedChild {
            pid: pid as u32,
            gate: Some(gate_w),
            err: Some(err_r),
        })
    }

    /// Lets the child exec; fails if exec failed.
    pub fn release(&mut self) -> Result<()> {
        use std::io::{Read, Write};
        let gate = self.gate.take().context("child already released")?;
        std::fs::File::from(gate)
            .write_all(&[1])
            .context("releasing the child")?;
        let mut errno = [0u8; 4];
        let mut f = std::fs::File::from(self.err.take().context("no exec pipe")?);
        match f.read(&mut errno) {
            Ok(4) => bail!(
                "exec failed: {}",
                std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno))
            ),
            _ => Ok(()),
        }
    }
}

impl Drop for GatedChild {
    fn drop(&mut self) {
        // Never released: closing the gate makes the child exit unexec'd.
        if self.gate.take().is_some() {
            let _ = waitpid(self.pid);
        }
    }
}
