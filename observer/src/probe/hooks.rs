//! The hook table: every kernel program, the hook it goes on for each
//! rung of the ladder, grouped as they are attached together.

use super::*;

#[derive(Clone, Copy)]
pub(super) enum How {
    Fentry(&'static str),
    Fexit(&'static str),
    TpBtf(&'static str),
    RawTp(&'static str),
    Tp(&'static str, &'static str),
}

#[derive(Clone, Copy)]
pub(super) struct Hook {
    pub(super) prog: &'static str,
    pub(super) how: How,
    /// Optional hooks (syscalls newer kernels added) may be missing.
    pub(super) required: bool,
}

pub(super) const fn req(prog: &'static str, how: How) -> Hook {
    Hook {
        prog,
        how,
        required: true,
    }
}

pub(super) const fn opt(prog: &'static str, how: How) -> Hook {
    Hook {
        prog,
        how,
        required: false,
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod sysfn {
    pub const FUTEX: &str = "__x64_sys_futex";
    pub const FUTEX_WAITV: &str = "__x64_sys_futex_waitv";
    pub const FUTEX_WAIT: &str = "__x64_sys_futex_wait";
    pub const EXIT_GROUP: &str = "__x64_sys_exit_group";
}

#[cfg(target_arch = "aarch64")]
pub(super) mod sysfn {
    pub const FUTEX: &str = "__arm64_sys_futex";
    pub const FUTEX_WAITV: &str = "__arm64_sys_futex_waitv";
    pub const FUTEX_WAIT: &str = "__arm64_sys_futex_wait";
    pub const EXIT_GROUP: &str = "__arm64_sys_exit_group";
}

/// A group of hooks that serve one purpose, with its rungs.
pub(super) struct Group {
    pub(super) name: &'static str,
    pub(super) rungs: &'static [(Rung, &'static [Hook])],
}

pub(super) const GROUPS: &[Group] = &[
    Group {
        name: "futex",
        rungs: &[
            (
                Rung::Fentry,
                &[
                    req("fentry_futex", How::Fentry(sysfn::FUTEX)),
                    req("fexit_futex", How::Fexit(sysfn::FUTEX)),
                    opt("fentry_futex_waitv", How::Fentry(sysfn::FUTEX_WAITV)),
                    opt("fexit_futex_waitv", How::Fexit(sysfn::FUTEX_WAITV)),
                    opt("fentry_futex_wait", How::Fentry(sysfn::FUTEX_WAIT)),
                    opt("fexit_futex_wait", How::Fexit(sysfn::FUTEX_WAIT)),
                    opt("fentry_exit_group", How::Fentry(sysfn::EXIT_GROUP)),
                ],
            ),
            (
                Rung::TpBtf,
                &[
                    req("btf_sys_enter", How::TpBtf("sys_enter")),
                    req("btf_sys_exit", How::TpBtf("sys_exit")),
                ],
            ),
            (
                Rung::RawTp,
                &[
                    req("raw_sys_enter", How::RawTp("sys_enter")),
                    req("raw_sys_exit", How::RawTp("sys_exit")),
                ],
            ),
            (
                Rung::Tracepoint,
                &[
                    req("tp_sys_enter_futex", How::Tp("syscalls", "sys_enter_futex")),
                    req("tp_sys_exit_futex", How::Tp("syscalls", "sys_exit_futex")),
                    opt(
                        "tp_sys_enter_futex_waitv",
                        How::Tp("syscalls", "sys_enter_futex_waitv"),
                    ),
                    opt(
                        "tp_sys_exit_futex",
                        How::Tp("syscalls", "sys_exit_futex_waitv"),
                    ),
                    opt(
                        "tp_sys_enter_futex_wait",
                        How::Tp("syscalls", "sys_enter_futex_wait"),
                    ),
                    opt(
                        "tp_sys_exit_futex",
                        How::Tp("syscalls", "sys_exit_futex_wait"),
                    ),
                    opt(
                        "tp_sys_enter_epoll",
                        How::Tp("syscalls", "sys_enter_epoll_wait"),
                    ),
                    opt(
                        "tp_sys_enter_epoll",
                        How::Tp("syscalls", "sys_enter_epoll_pwait"),
                    ),
                    opt(
                        "tp_sys_enter_epoll",
                        How::Tp("syscalls", "sys_enter_epoll_pwait2"),
                    ),
                    opt(
                        "tp_sys_exit_epoll",
                        How::Tp("syscalls", "sys_exit_epoll_wait"),
                    ),
                    opt(
                        "tp_sys_exit_epoll",
                        How::Tp("syscalls", "sys_exit_epoll_pwait"),
                    ),
                    opt(
                        "tp_sys_exit_epoll",
                        How::Tp("syscalls", "sys_exit_epoll_pwait2"),
                    ),
                    opt(
                        "tp_sys_enter_exit_group",
                        How::Tp("syscalls", "sys_enter_exit_group"),
                    ),
                ],
            ),
        ],
    },
    Group {
        name: "task_newtask",
        rungs: &[
            (
                Rung::TpBtf,
                &[req("btf_task_newtask", How::TpBtf("task_newtask"))],
            ),
            (
                Rung::RawTp,
                &[req("raw_task_newtask", How::RawTp("task_newtask"))],
            ),
            (
                Rung::Tracepoint,
                &[req("tp_task_newtask", How::Tp("task", "task_newtask"))],
            ),
        ],
    },
    Group {
        name: "sched_process_exit",
        rungs: &[
            (
                Rung::TpBtf,
                &[req("btf_process_exit", How::TpBtf("sched_process_exit"))],
            ),
            (
                Rung::RawTp,
                &[req("raw_process_exit", How::RawTp("sched_process_exit"))],
            ),
            (
                Rung::Tracepoint,
                &[req(
                    "tp_process_exit",
                    How::Tp("sched", "sched_process_exit"),
                )],
            ),
        ],
    },
    Group {
        name: "task_rename",
        rungs: &[
            (
                Rung::TpBtf,
                &[req("btf_task_rename", How::TpBtf("task_rename"))],
            ),
            (
                Rung::RawTp,
                &[req("raw_task_rename", How::RawTp("task_rename"))],
            ),
            (
                Rung::Tracepoint,
                &[req("tp_task_rename", How::Tp("task", "task_rename"))],
            ),
        ],
    },
    Group {
        name: "sched_process_exec",
        rungs: &[
            (
                Rung::TpBtf,
                &[req("btf_process_exec", How::TpBtf("sched_process_exec"))],
            ),
            (
                Rung::RawTp,
                &[req("raw_process_exec", How::RawTp("sched_process_exec"))],
            ),
            (
                Rung::Tracepoint,
                &[req(
                    "tp_process_exec",
                    How::Tp("sched", "sched_process_exec"),
                )],
            ),
        ],
    },
];

/// Every program the tables name, for the check that the object has them.
#[cfg(test)]
pub(super) fn named_programs() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = GROUPS
        .iter()
        .flat_map(|g| g.rungs.iter())
        .flat_map(|(_, hooks)| hooks.iter().map(|h| h.prog))
        .collect();
    v.extend(super::uprobes::THREAD_UPROBES.iter().map(|t| t.0));
    for t in super::uprobes::LOCK_UPROBES
        .iter()
        .chain(super::uprobes::PY_UPROBES)
    {
        v.push(t.0);
        v.extend(t.1);
    }
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    /// A program the hook and uprobe tables name that the BPF object lacks
    /// (renamed or removed in the C) fails here, not at attach time.
    #[test]
    fn every_program_the_tables_name_is_in_the_object() {
        let have = observer_ebpf::program_functions(observer_ebpf::OBSERVER_OBJ);
        if have.is_empty() {
            crate::testenv::missing("the BPF object (built without clang-19)");
            return;
        }
        let named = super::named_programs();
        assert!(named.len() > 30, "{named:?}");
        let missing: Vec<_> = named
            .iter()
            .filter(|p| !have.iter().any(|h| h == *p))
            .collect();
        assert!(missing.is_empty(), "not in the object: {missing:?}");
    }
}
