// SPDX-License-Identifier: GPL-2.0
/* observer: the syscall hooks on every rung (tp_btf, raw_tp, tracepoint, fentry): futex and epoll_wait enter/exit, exit_group.
 * Included by observer.bpf.c after common.h. */

/* Fill sc_args from user pt_regs. `btf`: a pointer the verifier trusts
 * (tp_btf arguments, bpf_task_pt_regs), read with plain loads; raw_tp and
 * fentry go through CO-RE reads (a helper call each). */
#define REG(regs, f, btf) ((btf) ? (regs)->f : BPF_CORE_READ(regs, f))
static __always_inline void args_from_regs(struct sc_args *a, struct pt_regs *regs, bool btf)
{
	a->a0 = REG(regs, F_ARG0, btf);
	a->a1 = REG(regs, F_ARG1, btf);
	a->a2 = REG(regs, F_ARG2, btf);
	a->a4 = REG(regs, F_ARG4, btf);
	a->ip = REG(regs, F_IP, btf);
	a->sp = REG(regs, F_SP, btf);
	a->bp = REG(regs, F_BP, btf);
	a->regs_ok = 1;
}

/* --- rung 1: fentry/fexit on the syscall entry points (only futex calls pay) */
#if defined(__TARGET_ARCH_x86)
#define SYS_FUTEX "__x64_sys_futex"
#define SYS_FUTEX_WAITV "__x64_sys_futex_waitv"
#define SYS_FUTEX_WAIT "__x64_sys_futex_wait"
#else
#define SYS_FUTEX "__arm64_sys_futex"
#define SYS_FUTEX_WAITV "__arm64_sys_futex_waitv"
#define SYS_FUTEX_WAIT "__arm64_sys_futex_wait"
#endif

#define FENTRY_PAIR(name, fn, nrv)                                              \
	SEC("fentry/" fn)                                                       \
	int BPF_PROG(fentry_##name, struct pt_regs *regs)                       \
	{                                                                       \
		struct sc_args a = { .nr = nrv };                               \
		args_from_regs(&a, regs, false);                                \
		return futex_enter(&a);                                         \
	}                                                                       \
	SEC("fexit/" fn)                                                        \
	int BPF_PROG(fexit_##name, struct pt_regs *regs, long ret)              \
	{                                                                       \
		if (!exit_interesting(nrv, BPF_CORE_READ(regs, F_ARG1)))        \
			return 0;                                               \
		return futex_exit(ret);                                         \
	}

FENTRY_PAIR(futex, SYS_FUTEX, NR_futex)
FENTRY_PAIR(futex_waitv, SYS_FUTEX_WAITV, NR_futex_waitv)
FENTRY_PAIR(futex_wait, SYS_FUTEX_WAIT, NR_futex_wait)

/* --- rung 2: tp_btf on sys_enter/sys_exit (every syscall pays a compare) */
SEC("tp_btf/sys_enter")
int BPF_PROG(btf_sys_enter, struct pt_regs *regs, long id)
{
	if (!is_futex_nr(id)) {
		if (is_epoll_nr(id))
			return epoll_enter();
		return id == NR_exit_group ? exit_group_enter() : 0;
	}
	struct sc_args a = { .nr = id };
	args_from_regs(&a, regs, true);
	return futex_enter(&a);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(btf_sys_exit, struct pt_regs *regs, long ret)
{
	if (is_epoll_nr(regs->F_NR))
		return epoll_exit();
	if (!exit_interesting(regs->F_NR, regs->F_ARG1))
		return 0;
	return futex_exit(ret);
}

/* --- rung 3: raw_tp. ctx is indexed as a plain array: aya rejects CO-RE
 * relocations into bpf_raw_tracepoint_args.args[]. */
SEC("raw_tp/sys_enter")
int raw_sys_enter(__u64 *ctx)
{
	__u64 id = ctx[1];
	if (!is_futex_nr(id)) {
		if (is_epoll_nr(id))
			return epoll_enter();
		return id == NR_exit_group ? exit_group_enter() : 0;
	}
	struct sc_args a = { .nr = id };
	args_from_regs(&a, (struct pt_regs *)ctx[0], false);
	return futex_enter(&a);
}

SEC("raw_tp/sys_exit")
int raw_sys_exit(__u64 *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx[0];
	__u64 nr = BPF_CORE_READ(regs, F_NR);
	if (is_epoll_nr(nr))
		return epoll_exit();
	if (!exit_interesting(nr, BPF_CORE_READ(regs, F_ARG1)))
		return 0;
	return futex_exit((long)ctx[1]);
}

/* --- rung 4: syscall tracepoints (need tracefs). No user registers here:
 * userspace reads sp/pc of blocked threads from /proc instead. */
static __always_inline int tp_enter(struct trace_event_raw_sys_enter *ctx, __u64 nr)
{
	struct sc_args a = {
		.nr = nr,
		.a0 = ctx->args[0],
		.a1 = ctx->args[1],
		.a2 = ctx->args[2],
		.a4 = ctx->args[4],
	};
	return futex_enter(&a);
}

SEC("tracepoint/syscalls/sys_enter_futex")
int tp_sys_enter_futex(struct trace_event_raw_sys_enter *ctx)
{
	return tp_enter(ctx, NR_futex);
}

SEC("tracepoint/syscalls/sys_enter_futex_waitv")
int tp_sys_enter_futex_waitv(struct trace_event_raw_sys_enter *ctx)
{
	return tp_enter(ctx, NR_futex_waitv);
}

SEC("tracepoint/syscalls/sys_enter_futex_wait")
int tp_sys_enter_futex_wait(struct trace_event_raw_sys_enter *ctx)
{
	return tp_enter(ctx, NR_futex_wait);
}

/* One program serves the three exit tracepoints: the wait table decides. */
SEC("tracepoint/syscalls/sys_exit_futex")
int tp_sys_exit_futex(struct trace_event_raw_sys_exit *ctx)
{
	return futex_exit(ctx->ret);
}

/* epoll waits (event loops); one exit program serves the three. */
SEC("tracepoint/syscalls/sys_enter_epoll_wait")
int tp_sys_enter_epoll(void *ctx)
{
	return epoll_enter();
}

SEC("tracepoint/syscalls/sys_exit_epoll_wait")
int tp_sys_exit_epoll(void *ctx)
{
	return epoll_exit();
}

/* exit_group in the rungs without a generic sys_enter (see exit_group_enter). */
SEC("tracepoint/syscalls/sys_enter_exit_group")
int tp_sys_enter_exit_group(void *ctx)
{
	return exit_group_enter();
}

#if defined(__TARGET_ARCH_x86)
SEC("fentry/__x64_sys_exit_group")
#else
SEC("fentry/__arm64_sys_exit_group")
#endif
int BPF_PROG(fentry_exit_group, struct pt_regs *regs)
{
	return exit_group_enter();
}
