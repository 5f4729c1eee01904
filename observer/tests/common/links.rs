//! BPF links a process holds, read from /proc/PID/fdinfo: which hooks an
//! observer has attached right now.

/// Links of `pid` whose fdinfo has a line `pred` accepts.
pub fn links(pid: u32, pred: impl Fn(&str) -> bool) -> usize {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    rd.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .any(&pred)
        })
        .count()
}

/// Tracepoint links of `pid` on any of `tps` (`sys_enter`, `sched_switch`...).
pub fn tp_links(pid: u32, tps: &[&str]) -> usize {
    links(pid, |l| {
        l.strip_prefix("tp_name:")
            .is_some_and(|t| tps.contains(&t.trim()))
    })
}

/// The syscall hooks: every syscall on the host pays while they are on.
pub fn syscall_links(pid: u32) -> usize {
    tp_links(pid, &["sys_enter", "sys_exit"])
}

/// The scheduler hook that learns waits instead.
pub fn sched_links(pid: u32) -> usize {
    tp_links(pid, &["sched_switch"])
}

pub fn uprobe_multi_links(pid: u32) -> usize {
    links(pid, |l| {
        l.starts_with("link_type:") && l.ends_with("uprobe_multi")
    })
}
