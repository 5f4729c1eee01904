// SPDX-License-Identifier: GPL-2.0
/* observer: futex waits: the wait table, per-lock totals, urgent outcomes.
 * Included by observer.bpf.c after common.h. */

/* ------------------------------------------------------------------ */
/* futex waits                                                         */

static __always_inline bool is_wait_cmd(__u32 op)
{
	__u32 cmd = op & OBS_FUTEX_CMD_MASK;
	return cmd == OBS_FUTEX_WAIT || cmd == OBS_FUTEX_WAIT_BITSET || cmd == OBS_FUTEX_LOCK_PI ||
	       cmd == OBS_FUTEX_LOCK_PI2 || cmd == OBS_FUTEX_WAIT_REQUEUE_PI;
}

struct sc_args {
	__u64 nr, a0, a1, a2, a4;
	__u64 ip, sp, bp;
	__u32 regs_ok;
};

struct futex_waitv_ {
	__u64 val;
	__u64 uaddr;
	__u32 flags;
	__u32 reserved;
};

/* A shared wait that will sleep on a nonzero word: pthread_join waits so on
 * the joined thread's CHILD_CLEARTID word (val = its TID). Shared waits
 * are rare (private is glibc's default), so this costs nothing elsewhere. */
static __always_inline void join_wait(__u32 tgid, __u32 tid, __u64 uaddr, __u32 val)
{
	struct obs_join_wait *r = rec_reserve(sizeof(*r), OBS_REC_JOIN_WAIT, tgid, tid);
	if (!r)
		return;
	r->uaddr = uaddr;
	r->val = val;
	r->_pad = 0;
	rec_submit(r, false);
}

static __always_inline int exit_group_enter(void);
static __always_inline void deep_wait_begin(__u32 tid, __u64 uaddr);
static __always_inline void deep_wait_end(__u32 tid, __u32 tgid, __u64 dur, __u64 now);
static __always_inline void cache_flush_all(struct obs_held *h, __u32 tgid, __u32 tid);
static __always_inline bool cache_has(struct obs_held *h, __u64 lock, __u32 gen);

/* A thread's entry stays in WAITS from its first wait to its exit (`tid`
 * is current: it is marked in TABLED); a wait
 * that ended has start_ns 0 (readers skip it). Each wait is then written in
 * place: a hash update (element allocated, bucket locked) and a delete per
 * wait cost twice what a lookup does, and a sleeping join pays both at every
 * thread created. start_ns goes to 0 first and gets its value last (w's is
 * cleared for the copy). A userspace copy may still straddle the write
 * (it is not ordered against it): readers take a wait only once it is old
 * (the live scan's minimum age) or after two equal reads (the GIL sampler). */
static __always_inline void wait_put(__u32 tid, struct obs_wait *w)
{
	struct obs_wait *e = bpf_map_lookup_elem(&WAITS, &tid);
	if (!e) {
		if (!tabled_mark() || bpf_map_update_elem(&WAITS, &tid, w, BPF_ANY))
			stat_inc(OBS_STAT_WAITS_FULL);
		return;
	}
	__u64 start = w->start_ns;
	*(volatile __u64 *)&e->start_ns = 0;
	w->start_ns = 0;
	asm volatile("" ::: "memory");
	__builtin_memcpy(e, w, sizeof(*w));
	asm volatile("" ::: "memory");
	*(volatile __u64 *)&e->start_ns = start;
}

/* A futex wait of current (tgid, tid) begins: into the wait table.
 * `slept`: seen going to sleep (sched_switch), not at syscall entry. */
static __always_inline int futex_begin(struct sc_args *a, __u32 tgid, __u32 tid, bool slept)
{
	struct obs_wait w = {};
	if (a->nr == NR_futex) {
		__u32 cmd = (__u32)a->a1 & OBS_FUTEX_CMD_MASK;
		/* A WAIT whose word already differs returns EAGAIN at once: no
		 * sleep, nothing to record (the word changing back before the
		 * kernel's own check is the rare miss). Asleep, it waits. */
		if (cmd == OBS_FUTEX_WAIT || cmd == OBS_FUTEX_WAIT_BITSET) {
			__u32 cur;
			if (!slept &&
			    bpf_probe_read_user(&cur, sizeof(cur), (void *)a->a0) == 0 &&
			    cur != (__u32)a->a2)
				return 0;
			if (!((__u32)a->a1 & OBS_FUTEX_PRIVATE_FLAG) && (__u32)a->a2)
				join_wait(tgid, tid, a->a0, (__u32)a->a2);
		}
		w.uaddr = a->a0;
		w.op = (__u32)a->a1;
		w.val = (__u32)a->a2;
		w.nr = 1;
		if ((w.op & OBS_FUTEX_CMD_MASK) == OBS_FUTEX_WAIT_REQUEUE_PI)
			w.uaddr2 = a->a4;
	} else if (a->nr == NR_futex_waitv) {
		struct futex_waitv_ fw = {};
		bpf_probe_read_user(&fw, sizeof(fw), (void *)a->a0);
		w.uaddr = fw.uaddr;
		w.val = (__u32)fw.val;
		w.op = OBS_OP_WAITV;
		w.uaddr2 = a->a0;
		w.nr = (__u32)a->a1;
	} else {
		w.uaddr = a->a0;
		w.val = (__u32)a->a1;
		w.op = OBS_OP_FUTEX2_WAIT;
		w.nr = 1;
	}
	w.tgid = tgid;
	w.start_ns = bpf_ktime_get_ns();
	if (slept)
		w.flags |= OBS_WAIT_SCHED;
	if (a->regs_ok) {
		w.ip = a->ip;
		w.sp = a->sp;
		w.bp = a->bp;
		w.flags |= OBS_WAIT_REGS_OK;
	}
	__u64 base = (w.uaddr & ~7ULL) - OBS_WORDS_BEFORE;
	if (bpf_probe_read_user(w.words, sizeof(w.words), (void *)base) == 0) {
		w.words_addr = base;
		w.flags |= OBS_WAIT_WORDS_OK;
	} else if (bpf_probe_read_user(w.words, 32, (void *)(w.uaddr & ~7ULL)) == 0) {
		/* the bytes below the word are unmapped (start of a mapping) */
		w.words_addr = w.uaddr & ~7ULL;
		w.flags |= OBS_WAIT_WORDS_OK;
	}
	wait_put(tid, &w);
	if (DEEP)
		deep_wait_begin(tid, w.uaddr);
	return 0;
}

static __always_inline int futex_enter(struct sc_args *a)
{
	/* Non-waiting futex ops (WAKE, ...) leave before the map lookup. */
	if (a->nr == NR_futex && !is_wait_cmd((__u32)a->a1))
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!watched(tgid))
		return 0;
	return futex_begin(a, tgid, tid, false);
}

/* Thread `tid`'s futex wait ends (`ret`: the syscall's return; 0 when
 * seen at its wake-up, which does not know it). */
static __always_inline int futex_end(__u32 tid, long ret)
{
	struct obs_wait *w = bpf_map_lookup_elem(&WAITS, &tid);
	if (!w || !w->start_ns)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__u64 dur = now - w->start_ns;

	/* EAGAIN: the word had changed, the thread never slept. */
	if (ret != -EAGAIN_) {
		struct obs_agg_key k = { .uaddr = w->uaddr, .tgid = w->tgid };
		struct obs_agg *g = bpf_map_lookup_elem(&AGG, &k);
		if (g) {
			__sync_fetch_and_add(&g->count, 1);
			__sync_fetch_and_add(&g->total_ns, dur);
			if (dur > g->max_ns)
				g->max_ns = dur; /* racy max: good enough for a summary */
			g->op = w->op;
		} else {
			struct obs_agg n = { .count = 1, .total_ns = dur, .max_ns = dur, .op = w->op };
			if (bpf_map_update_elem(&AGG, &k, &n, BPF_NOEXIST) &&
			    !bpf_map_lookup_elem(&AGG, &k))
				stat_inc(OBS_STAT_AGG_FULL);
		}
	}

	if (DEEP)
		deep_wait_end(tid, w->tgid, dur, now);
	bool urgent = ret == -EDEADLK_ || ret == -EOWNERDEAD_ || ret == -ENOTRECOVERABLE_;
	if (urgent || dur >= LONG_WAIT_NS) {
		struct obs_wait_done *r =
			rec_reserve(sizeof(*r), OBS_REC_WAIT_DONE, w->tgid, tid);
		if (r) {
			__builtin_memcpy(&r->wait, w, sizeof(r->wait));
			r->ret = ret;
			r->end_ns = now;
			rec_submit(r, urgent);
		}
	}
	w->start_ns = 0; /* ended: the entry stays for the next wait */
	return 0;
}

static __always_inline int futex_exit(long ret)
{
	return futex_end((__u32)bpf_get_current_pid_tgid(), ret);
}

static __always_inline bool is_futex_nr(__u64 nr)
{
	return nr == NR_futex || nr == NR_futex_waitv || nr == NR_futex_wait;
}

/* Only futex(2) calls that can sleep, and the futex2 waits, need work on exit. */
static __always_inline bool exit_interesting(__u64 nr, __u64 op)
{
	if (nr == NR_futex)
		return is_wait_cmd((__u32)op);
	return nr == NR_futex_waitv || nr == NR_futex_wait;
}
