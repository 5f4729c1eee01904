//! Syscall names, for what a blocked thread sits in.

/// Names of the syscalls a thread is usually stuck in (x86_64 numbers).
pub fn syscall_name(nr: i64) -> String {
    #[cfg(target_arch = "x86_64")]
    let name = match nr {
        0 => "read",
        1 => "write",
        7 => "poll",
        17 => "pread64",
        19 => "readv",
        23 => "select",
        34 => "pause",
        35 => "nanosleep",
        43 => "accept",
        45 => "recvfrom",
        47 => "recvmsg",
        61 => "wait4",
        65 => "semop",
        70 => "msgrcv",
        72 => "fcntl",
        73 => "flock",
        128 => "rt_sigtimedwait",
        130 => "rt_sigsuspend",
        202 => "futex",
        208 => "io_getevents",
        230 => "clock_nanosleep",
        232 => "epoll_wait",
        247 => "waitid",
        270 => "pselect6",
        271 => "ppoll",
        281 => "epoll_pwait",
        288 => "accept4",
        299 => "recvmmsg",
        426 => "io_uring_enter",
        441 => "epoll_pwait2",
        449 => "futex_waitv",
        _ => return format!("syscall {nr}"),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let name = return format!("syscall {nr}");
    name.to_string()
}
