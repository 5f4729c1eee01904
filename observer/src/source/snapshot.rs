//! Waits that began before we looked: /proc/PID/task/*/syscall names the
//! futex call each blocked thread is in, process_vm_readv reads the memory
//! around its futex word. Serves `attach` (waits older than the probes)
//! and `dump` (no BPF at all).

use observer_ebpf::bindings::{OBS_OP_WAITV, OBS_WORDS_BEFORE, OBS_WORDS_LEN};

use crate::event::{Event, Tid, Wait, WaitOrigin, futex};

/// futex_waitv and futex2's futex_wait (one number on x86_64 and arm64).
const NR_FUTEX_WAITV: i64 = 449;
const NR_FUTEX_WAIT: i64 = 455;

/// What /proc says a blocked thread is doing (one parser, the symbolizer's).
pub use crate::symbol::proc_syscall;

/// Reads `len` bytes of process `pid` at `addr` without stopping it.
pub fn read_mem(pid: u32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` points into `buf`, which outlives the call; the
    // remote side is only read by the kernel.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    (n == len as isize).then_some(buf)
}

/// Reads the `n` pages of `size` bytes from `addr` on, one remote iovec
/// per page (the kernel splits no iovec, so a hole costs only its pages):
/// the pages from `addr` up to the first unreadable one.
pub fn read_pages(pid: u32, addr: u64, size: usize, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; size * n];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote: Vec<libc::iovec> = (0..n)
        .map(|i| libc::iovec {
            iov_base: (addr + (i * size) as u64) as *mut libc::c_void,
            iov_len: size,
        })
        .collect();
    // SAFETY: as in `read_mem`; `remote` outlives the call.
    let got = unsafe {
        libc::process_vm_readv(
            pid as libc::pid_t,
            &local,
            1,
            remote.as_ptr(),
            remote.len() as libc::c_ulong,
            0,
        )
    };
    buf.truncate(got.max(0) as usize);
    buf
}

/// The words around a futex word, laid out as the BPF side copies them.
pub fn read_words(pid: u32, uaddr: u64) -> Option<(u64, Vec<u8>)> {
    let base = (uaddr & !7) - OBS_WORDS_BEFORE as u64;
    if let Some(b) = read_mem(pid, base, OBS_WORDS_LEN as usize) {
        return Some((base, b));
    }
    read_mem(pid, uaddr & !7, 32).map(|b| (uaddr & !7, b))
}

/// Whether /proc lets a wait-table entry on `uaddr` (futex op `op`) stand:
/// false when the thread is seen elsewhere (another syscall, none, or
/// futex(2) on another word) or running: the entry outlived its wait,
/// whose end was not seen. Only a PI wait may run (the kernel spins while
/// the owner is on a CPU). A thread gone or unreadable says nothing.
pub fn may_wait_on(pid: u32, tid: Tid, uaddr: u64, op: u32) -> bool {
    let Some(s) = crate::sys::read_proc(&format!("/proc/{pid}/task/{tid}/syscall")) else {
        return true;
    };
    if s.starts_with("running") {
        return futex::is_pi(op);
    }
    match crate::symbol::parse_syscall(&s) {
        None => true,
        Some((nr, a, ..)) if nr == libc::SYS_futex => a[0] == uaddr,
        Some((nr, ..)) => nr == NR_FUTEX_WAITV || nr == NR_FUTEX_WAIT,
    }
}

/// The wait a thread is in now according to /proc, if it is a futex wait.
pub fn thread_wait(pid: u32, tid: Tid, now_ns: u64) -> Option<Wait> {
    let (nr, a, sp, pc) = proc_syscall(pid, tid)?;
    let (uaddr, op, val, uaddr2) = if nr == libc::SYS_futex {
        let op = a[1] as u32;
        let cmd = futex::cmd(op);
        let waits = [0, 9, 6, 13, 11].contains(&cmd);
        if !waits {
            return None;
        }
        (a[0], op, a[2] as u32, if cmd == 11 { a[4] } else { 0 })
    } else if nr == NR_FUTEX_WAITV {
        // struct futex_waitv { u64 val; u64 uaddr; u32 flags; u32 reserved; }
        let fw = read_mem(pid, a[0], 16)?;
        let val = u64::from_ne_bytes(fw[0..8].try_into().ok()?) as u32;
        let uaddr = u64::from_ne_bytes(fw[8..16].try_into().ok()?);
        (uaddr, OBS_OP_WAITV, val, a[0])
    } else {
        return None;
    };
    let (words_addr, words) = read_words(pid, uaddr).unwrap_or_default();
    Some(Wait {
        uaddr,
        uaddr2,
        op,
        val,
        start_ns: now_ns,
        ip: pc,
        sp,
        bp: 0,
        words_addr,
        words,
        origin: WaitOrigin::Snapshot,
    })
}

/// One `WaitBegin` per thread of `pid` blocked in a futex wait now.
pub fn snapshot_waits(pid: u32, tids: impl IntoIterator<Item = Tid>, now_ns: u64) -> Vec<Event> {
    tids.into_iter()
        .filter_map(|tid| {
            thread_wait(pid, tid, now_ns).map(|wait| Event::WaitBegin {
                ts_ns: now_ns,
                tgid: pid,
                tid,
                wait,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory() {
        let x: u64 = 0x1122_3344_5566_7788;
        let b = read_mem(std::process::id(), &x as *const u64 as u64, 8).unwrap();
        assert_eq!(u64::from_ne_bytes(b.try_into().unwrap()), x);
    }

    /// The calling thread's tid (/proc/thread-self is PID/task/TID).
    fn gettid() -> Tid {
        let l = std::fs::read_link("/proc/thread-self").unwrap();
        l.file_name().unwrap().to_str().unwrap().parse().unwrap()
    }

    /// Runs `f` on a new thread and returns its tid once /proc shows it
    /// in syscall `nr`.
    fn thread_in(nr: i64, f: impl FnOnce() + Send + 'static) -> Tid {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            f()
        });
        let tid = rx.recv().unwrap();
        let pid = std::process::id();
        for _ in 0..1000 {
            if proc_syscall(pid, tid).is_some_and(|s| s.0 == nr) {
                return tid;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        panic!("thread {tid} never in syscall {nr}");
    }

    /// What /proc lets a table wait stand on: a thread in futex(2) on that
    /// word; not one on another word, in another syscall, or in user space.
    #[test]
    fn proc_says_whether_a_table_wait_stands() {
        let pid = std::process::id();
        let word: &'static std::sync::atomic::AtomicU32 = Box::leak(Box::default());
        let addr = word.as_ptr() as u64;
        let waiter = thread_in(libc::SYS_futex, move || {
            loop {
                // SAFETY: a futex wait on a word this test leaked (lives forever).
                unsafe {
                    libc::syscall(
                        libc::SYS_futex,
                        addr,
                        libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                        0u32,
                        std::ptr::null::<libc::timespec>(),
                    )
                };
            }
        });
        let op = (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u32;
        assert!(may_wait_on(pid, waiter, addr, op));
        assert!(!may_wait_on(pid, waiter, addr + 4, op));
        let sleeper = thread_in(libc::SYS_clock_nanosleep, || {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        });
        assert!(!may_wait_on(pid, sleeper, addr, op));
        // A thread spinning in user space (running, or preempted there).
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinner = {
            let (tx, rx) = std::sync::mpsc::channel();
            let stop = stop.clone();
            std::thread::spawn(move || {
                tx.send(gettid()).unwrap();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
            rx.recv().unwrap()
        };
        for _ in 0..100 {
            assert!(!may_wait_on(pid, spinner, addr, op));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Gone: nothing known.
        assert!(may_wait_on(pid, u32::MAX - 1, addr, op));
    }
}
