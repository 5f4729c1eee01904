// SPDX-License-Identifier: GPL-2.0
/* observer: event loops: time spent outside epoll_wait (asyncio, uvloop).
 * Included by observer.bpf.c after common.h. */

/* ------------------------------------------------------------------ */
/* event loops: time spent outside epoll_wait                          */

static __always_inline bool is_epoll_nr(__u64 nr)
{
	return nr == NR_epoll_wait || nr == NR_epoll_pwait || nr == NR_epoll_pwait2;
}

/* A map update per call; a record only when the thread stayed out of its
 * selector LOOP_BLOCKED_NS or more. */
static __always_inline int epoll_enter(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!watched(tgid))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct obs_epoll *e = bpf_map_lookup_elem(&EPOLL, &tid);
	if (!e) {
		struct obs_epoll n = { .enter_ns = now, .tgid = tgid };
		if (tabled_mark())
			bpf_map_update_elem(&EPOLL, &tid, &n, BPF_ANY);
		return 0;
	}
	if (e->exit_ns > e->enter_ns && now - e->exit_ns >= LOOP_BLOCKED_NS) {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		__u64 runq = BPF_CORE_READ(t, sched_info.run_delay) - e->exit_delay;
		__u64 gap = now - e->exit_ns;
		if (runq < gap && gap - runq >= LOOP_BLOCKED_NS) {
			struct obs_loop_gap *r =
				rec_reserve(sizeof(*r), OBS_REC_LOOP_GAP, tgid, tid);
			if (r) {
				r->start_ns = e->exit_ns;
				r->end_ns = now;
				r->runq_ns = runq;
				rec_submit(r, false);
			}
		}
	}
	e->enter_ns = now;
	return 0;
}

/* Thread `t` (`tid`) returns from epoll_wait. */
static __always_inline int epoll_end(struct task_struct *t, __u32 tid)
{
	struct obs_epoll *e = bpf_map_lookup_elem(&EPOLL, &tid);
	if (!e)
		return 0;
	e->exit_delay = BPF_CORE_READ(t, sched_info.run_delay);
	e->exit_cpu = BPF_CORE_READ(t, se.sum_exec_runtime);
	e->exit_ns = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int epoll_exit(void)
{
	return epoll_end((struct task_struct *)bpf_get_current_task(),
			 (__u32)bpf_get_current_pid_tgid());
}
