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

impl How {
    /// The call a per-syscall hook sits on (fentry and fexit on one kernel
    /// function; sys_enter_X and sys_exit_X: X): pairs a call side with
    /// its return side. None for the hooks every syscall passes.
    pub(super) fn call(&self) -> Option<&'static str> {
        match *self {
            How::Fentry(f) | How::Fexit(f) => Some(f),
            How::Tp(_, tp) => tp
                .strip_prefix("sys_enter_")
                .or_else(|| tp.strip_prefix("sys_exit_")),
            How::TpBtf(_) | How::RawTp(_) => None,
        }
    }

    /// Fires as a call returns (fexit, sys_exit): where a wait ends.
    pub(super) fn at_return(&self) -> bool {
        match *self {
            How::Fexit(_) => true,
            How::TpBtf(tp) | How::RawTp(tp) => tp == "sys_exit",
            How::Tp(_, tp) => tp.starts_with("sys_exit_"),
            How::Fentry(_) => false,
        }
    }
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

/// Learns futex and epoll waits at the scheduler (`Waits::Sched`): tp_btf
/// only, as it reads the sleeping task's registers (`bpf_task_pt_regs`).
pub(super) const SCHED_HOOK: Hook = req("btf_sched_switch", How::TpBtf("sched_switch"));

/// A group of hooks that serve one purpose, with its rungs in ladder order.
pub(super) struct Group {
    pub(super) name: &'static str,
    pub(super) rungs: Vec<(Rung, Vec<Hook>)>,
}

/// Builds a group rung by rung: `req`/`opt` add to the last `rung`.
impl Group {
    fn new(name: &'static str) -> Group {
        Group {
            name,
            rungs: Vec::new(),
        }
    }

    fn rung(mut self, rung: Rung) -> Group {
        self.rungs.push((rung, Vec::new()));
        self
    }

    /// Return-side hooks go before every call-side one: hooks are put on
    /// in this order (and taken off in the reverse), so no wait can begin
    /// while the hook that ends it is missing (it would never end).
    fn add(mut self, hook: Hook) -> Group {
        let hooks = &mut self.rungs.last_mut().expect("a hook before its rung").1;
        let at = if hook.how.at_return() {
            hooks.iter().take_while(|h| h.how.at_return()).count()
        } else {
            hooks.len()
        };
        hooks.insert(at, hook);
        self
    }

    fn req(self, prog: &'static str, how: How) -> Group {
        self.add(req(prog, how))
    }

    fn opt(self, prog: &'static str, how: How) -> Group {
        self.add(opt(prog, how))
    }

    /// One optional program on several syscall tracepoints.
    fn opt_syscalls(mut self, prog: &'static str, tps: &[&'static str]) -> Group {
        for tp in tps {
            self = self.opt(prog, How::Tp("syscalls", tp));
        }
        self
    }

    /// A kernel tracepoint on each rung: tp_btf, raw_tp, then the
    /// tracepoint itself (tracefs); the group is named after it.
    fn tracepoint(
        cat: &'static str,
        tp: &'static str,
        [btf, raw, trace]: [&'static str; 3],
    ) -> Group {
        Group::new(tp)
            .rung(Rung::TpBtf)
            .req(btf, How::TpBtf(tp))
            .rung(Rung::RawTp)
            .req(raw, How::RawTp(tp))
            .rung(Rung::Tracepoint)
            .req(trace, How::Tp(cat, tp))
    }
}

/// The hook groups, in attach order.
pub(super) fn groups() -> Vec<Group> {
    use sysfn::*;
    let futex = Group::new("futex")
        // Only futex calls pay; futex_waitv/futex_wait are newer syscalls.
        .rung(Rung::Fentry)
        .req("fentry_futex", How::Fentry(FUTEX))
        .req("fexit_futex", How::Fexit(FUTEX))
        .opt("fentry_futex_waitv", How::Fentry(FUTEX_WAITV))
        .opt("fexit_futex_waitv", How::Fexit(FUTEX_WAITV))
        .opt("fentry_futex_wait", How::Fentry(FUTEX_WAIT))
        .opt("fexit_futex_wait", How::Fexit(FUTEX_WAIT))
        .opt("fentry_exit_group", How::Fentry(EXIT_GROUP))
        // Every syscall pays a compare.
        .rung(Rung::TpBtf)
        .req("btf_sys_enter", How::TpBtf("sys_enter"))
        .req("btf_sys_exit", How::TpBtf("sys_exit"))
        .rung(Rung::RawTp)
        .req("raw_sys_enter", How::RawTp("sys_enter"))
        .req("raw_sys_exit", How::RawTp("sys_exit"))
        .rung(Rung::Tracepoint)
        .req("tp_sys_enter_futex", How::Tp("syscalls", "sys_enter_futex"))
        .req("tp_sys_exit_futex", How::Tp("syscalls", "sys_exit_futex"))
        .opt_syscalls("tp_sys_enter_futex_waitv", &["sys_enter_futex_waitv"])
        .opt_syscalls("tp_sys_exit_futex", &["sys_exit_futex_waitv"])
        .opt_syscalls("tp_sys_enter_futex_wait", &["sys_enter_futex_wait"])
        .opt_syscalls("tp_sys_exit_futex", &["sys_exit_futex_wait"])
        .opt_syscalls(
            "tp_sys_enter_epoll",
            &[
                "sys_enter_epoll_wait",
                "sys_enter_epoll_pwait",
                "sys_enter_epoll_pwait2",
            ],
        )
        .opt_syscalls(
            "tp_sys_exit_epoll",
            &[
                "sys_exit_epoll_wait",
                "sys_exit_epoll_pwait",
                "sys_exit_epoll_pwait2",
            ],
        )
        .opt_syscalls("tp_sys_enter_exit_group", &["sys_enter_exit_group"]);
    vec![
        futex,
        Group::tracepoint(
            "task",
            "task_newtask",
            ["btf_task_newtask", "raw_task_newtask", "tp_task_newtask"],
        ),
        Group::tracepoint(
            "sched",
            "sched_process_exit",
            ["btf_process_exit", "raw_process_exit", "tp_process_exit"],
        ),
        Group::tracepoint(
            "task",
            "task_rename",
            ["btf_task_rename", "raw_task_rename", "tp_task_rename"],
        ),
        Group::tracepoint(
            "sched",
            "sched_process_exec",
            ["btf_process_exec", "raw_process_exec", "tp_process_exec"],
        ),
    ]
}

/// Every program userspace names: the hook groups, the daemon's spawn
/// programs, the uprobe tables and the uprobe_multi programs.
pub(super) fn named_programs() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = groups()
        .iter()
        .flat_map(|g| g.rungs.iter())
        .flat_map(|(_, hooks)| hooks.iter().map(|h| h.prog))
        .collect();
    v.push(SCHED_HOOK.prog);
    v.extend(super::spawn::SPAWN_HOOKS.iter().map(|t| t.0));
    v.extend(super::uprobes::THREAD_UPROBES.iter().map(|t| t.0));
    for t in super::uprobes::LOCK_UPROBES
        .iter()
        .chain(super::uprobes::PY_UPROBES)
    {
        v.push(t.0);
        v.extend(t.1);
    }
    v.extend(super::uprobes::BARE);
    v.extend(super::multi::THREAD_PROGS);
    v.extend(super::multi::LOCK_PROGS);
    v.sort_unstable();
    v.dedup();
    v
}

/// The programs of `named` that `have` (an object's program names) lacks:
/// a program renamed or removed in the C that the tables still name.
pub(super) fn missing_programs<'a>(
    named: &[&'static str],
    have: impl IntoIterator<Item = &'a str>,
) -> Vec<&'static str> {
    let have: HashSet<&str> = have.into_iter().collect();
    named
        .iter()
        .copied()
        .filter(|p| !have.contains(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The program names aya will see in the object: aya_obj's parse is
    /// what `Ebpf::programs()` is built from (and it needs no root).
    fn object_programs() -> Option<Vec<String>> {
        if !observer_ebpf::has_programs() {
            return None;
        }
        let o = aya_obj::Object::parse(observer_ebpf::OBSERVER_OBJ).expect("parse the object");
        Some(o.programs.keys().cloned().collect())
    }

    /// A program the tables name that the object lacks (renamed or removed
    /// in the C) fails here, not at attach time.
    #[test]
    fn every_program_the_tables_name_is_in_the_object() {
        let Some(have) = object_programs() else {
            crate::testenv::missing("the BPF object (built without clang-19)");
            return;
        };
        let named = named_programs();
        assert!(named.len() > 40, "{named:?}");
        let missing = missing_programs(&named, have.iter().map(String::as_str));
        assert!(missing.is_empty(), "not in the object: {missing:?}");
    }

    /// The check catches a rename: the same object with one program
    /// renamed, as if the C had renamed it.
    #[test]
    fn a_renamed_program_is_caught() {
        let Some(have) = object_programs() else {
            crate::testenv::missing("the BPF object (built without clang-19)");
            return;
        };
        let renamed = have.iter().map(|p| match p.as_str() {
            "btf_sys_enter" => "btf_sys_entry",
            "upm_return" => "upm_ret",
            p => p,
        });
        assert_eq!(
            missing_programs(&named_programs(), renamed),
            ["btf_sys_enter", "upm_return"]
        );
    }

    /// The builder keeps the ladder's order and the groups' names.
    #[test]
    fn groups_in_ladder_order() {
        let g = groups();
        let names: Vec<_> = g.iter().map(|g| g.name).collect();
        assert_eq!(
            names,
            [
                "futex",
                "task_newtask",
                "sched_process_exit",
                "task_rename",
                "sched_process_exec"
            ]
        );
        let rungs: Vec<_> = g[0].rungs.iter().map(|r| r.0).collect();
        assert_eq!(
            rungs,
            [Rung::Fentry, Rung::TpBtf, Rung::RawTp, Rung::Tracepoint]
        );
        assert_eq!(g[0].rungs[3].1.len(), 13);
        assert!(g[1..].iter().all(|g| g.rungs.len() == 3));
    }

    /// Call and return sides pair up by the call they sit on.
    #[test]
    fn hooks_pair_by_call() {
        let tp = |t| How::Tp("syscalls", t).call();
        assert_eq!(tp("sys_enter_futex_waitv"), Some("futex_waitv"));
        assert_eq!(tp("sys_exit_futex_waitv"), Some("futex_waitv"));
        assert_eq!(How::Fexit("f").call(), How::Fentry("f").call());
        assert_eq!(How::TpBtf("sys_exit").call(), None);
        assert!(How::Tp("syscalls", "sys_exit_epoll_wait").at_return());
        assert!(!How::Tp("syscalls", "sys_enter_exit_group").at_return());
    }

    /// On every rung, the hooks that end waits come before those that begin
    /// them, in the order the table gave them.
    #[test]
    fn return_hooks_are_put_on_first() {
        let futex = &groups()[0];
        for (rung, hooks) in &futex.rungs {
            let first_call = hooks.iter().position(|h| !h.how.at_return()).unwrap();
            assert!(
                hooks[first_call..].iter().all(|h| !h.how.at_return()),
                "{rung}: {:?}",
                hooks.iter().map(|h| h.prog).collect::<Vec<_>>()
            );
            assert!(first_call > 0, "{rung}: no return hook");
        }
        let progs = |r: usize| -> Vec<&str> { futex.rungs[r].1.iter().map(|h| h.prog).collect() };
        assert_eq!(progs(1), ["btf_sys_exit", "btf_sys_enter"]);
        assert_eq!(
            progs(0),
            [
                "fexit_futex",
                "fexit_futex_waitv",
                "fexit_futex_wait",
                "fentry_futex",
                "fentry_futex_waitv",
                "fentry_futex_wait",
                "fentry_exit_group"
            ]
        );
    }
}
