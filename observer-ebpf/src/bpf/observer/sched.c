// SPDX-License-Identifier: GPL-2.0
/* observer: futex and epoll waits learnt at the scheduler instead of at
 * every syscall. A watched thread going to sleep inside futex(2) or
 * epoll_wait is a wait beginning (its syscall number and arguments are in
 * its saved user registers); its next switch-in is the wait's end. The
 * cost is per context switch, and no syscall of any process pays. Lost
 * against the syscall hooks: the syscall's return (EDEADLK, EOWNERDEAD),
 * waits that never sleep (an event loop whose epoll_wait always finds
 * work) and the time between the call and its sleep.
 * Included by observer.bpf.c after futex.c, epoll.c and syscalls.c. */

#define TASK_RUNNING_ 0
#define ASLEEP_FUTEX 1
#define ASLEEP_EPOLL 2

/* What a watched thread went to sleep in, until its switch-in. Task
 * storage: every other task's switch-in costs a pointer test, not a hash
 * lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} ASLEEP SEC(".maps");

SEC("tp_btf/sched_switch")
int BPF_PROG(btf_sched_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	/* current is still prev here: its user memory is the one mapped. */
	if (!preempt && prev_state != TASK_RUNNING_) {
		/* Direct loads (trusted BTF pointers): no helper call per switch. */
		struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(prev);
		__u64 nr = regs->F_NR;
		__u32 kind = 0;
		if (nr == NR_futex)
			kind = is_wait_cmd((__u32)regs->F_ARG1) ? ASLEEP_FUTEX : 0;
		else if (nr == NR_futex_waitv || nr == NR_futex_wait)
			kind = ASLEEP_FUTEX;
		else if (is_epoll_nr(nr))
			kind = ASLEEP_EPOLL;
		__u32 tgid = prev->tgid;
		if (kind && watched(tgid)) {
			/* The mark first: a wait begun without it would never end. */
			__u32 *m = bpf_task_storage_get(&ASLEEP, prev, 0,
							BPF_LOCAL_STORAGE_GET_F_CREATE);
			if (!m) {
				stat_inc(OBS_STAT_WAITS_FULL); /* a wait not tracked */
			} else if (kind == ASLEEP_FUTEX) {
				*m = kind;
				struct sc_args a = { .nr = nr };
				args_from_regs(&a, regs, true);
				futex_begin(&a, tgid, prev->pid, true);
			} else {
				*m = kind;
				epoll_enter();
			}
		}
	}
	__u32 *m = bpf_task_storage_get(&ASLEEP, next, 0, 0);
	if (!m || !*m)
		return 0;
	__u32 kind = *m;
	*m = 0;
	if (kind == ASLEEP_FUTEX)
		futex_end(next->pid, 0);
	else
		epoll_end(next, next->pid);
	return 0;
}
