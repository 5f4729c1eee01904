// SPDX-License-Identifier: GPL-2.0
/* observer: thread lifecycle: clone, creation stacks, exit (held locks, joins), rename, exec.
 * Included by observer.bpf.c after common.h. */

/* ------------------------------------------------------------------ */
/* thread lifecycle                                                    */

/* If the clone comes from a pthread_create we saw, add what its uprobe
 * learned. glibc stores *newthread before it clones, so the pthread_t is
 * already there. */
static __always_inline void creating_fill(struct obs_task_new *r, __u32 creator)
{
	r->pthread = 0;
	r->create_site = 0;
	r->detached = 0;
	r->stack_sig = 0;
	struct obs_creating *c = bpf_map_lookup_elem(&CREATING, &creator);
	if (!c)
		return;
	__u64 pt = 0;
	bpf_probe_read_user(&pt, sizeof(pt), (void *)c->thread_out);
	r->pthread = pt;
	r->create_site = c->site;
	r->detached = c->detached;
	bpf_map_delete_elem(&CREATING, &creator);
}

/* x86_64 glibc: pthread_t is the new thread's TLS base, and the clone's
 * CHILD_CLEARTID word is its descriptor's tid field. joinid == pd means
 * created detached (pthread_create sets it before cloning). */
static __always_inline void thread_pthread(struct task_struct *task, struct obs_task_new *r,
					   bool btf)
{
#if defined(__TARGET_ARCH_x86)
	if (r->pthread || !(r->clone_flags & CLONE_SETTLS_) || !PT_TID_OFF)
		return;
	__u64 pd = btf ? task->thread.fsbase : BPF_CORE_READ(task, thread.fsbase);
	if (!pd || r->child_tid_addr != pd + PT_TID_OFF)
		return;
	r->pthread = pd;
	__u64 joinid = 0;
	if (PT_JOINID_OFF &&
	    bpf_probe_read_user(&joinid, sizeof(joinid), (void *)(pd + PT_JOINID_OFF)) == 0 &&
	    joinid == pd)
		r->detached = 1;
#endif
}

/* Wake the reader for the first creation stack of a process (userspace
 * must read its mappings while it lives: a short program may be gone by
 * the next drain; bit 1 of its WATCH value remembers), and when the ring
 * was a quarter full before this record (`avail`, `size`: queried once per
 * clone): a burst of clones must not wait for the periodic drain. */
static __always_inline __u64 stack_wakeup(__u8 *w, __u64 avail, __u64 size)
{
	if (!(*w & 2)) {
		*w |= 2;
		return BPF_RB_FORCE_WAKEUP;
	}
	return avail > size / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* The creating thread's user registers at the clone syscall and the top of
 * its stack (current is the creator). bpf_task_pt_regs gives a pointer the
 * verifier trusts: plain loads in every rung. */
static __always_inline void clone_stack(struct obs_task_new_stack *b)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	b->ip = regs->F_IP;
	b->sp = regs->F_SP;
	b->bp = regs->F_BP;
	b->_pad = 0;
	b->stack_len = 0;
	/* one read of the whole copy; a stack that ends sooner gets a smaller one */
	if (bpf_probe_read_user(b->stack, OBS_CLONE_STACK, (void *)b->sp) == 0)
		b->stack_len = OBS_CLONE_STACK;
	else if (bpf_probe_read_user(b->stack, 1024, (void *)b->sp) == 0)
		b->stack_len = 1024;
}

/* Whether the creator's registers and stack words are those of signature
 * `s` (a stable copy): its id, or 0. */
static __always_inline __u32 stack_sig_check(struct obs_stack_sig *s)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (regs->F_IP != s->ip || regs->F_SP != s->sp ||
	    (!(s->flags & OBS_SIG_ANY_BP) && regs->F_BP != s->bp))
		return 0;
	__u32 span = s->span, n = s->n, z = 0;
	if (!span || span > OBS_SIG_SPAN || n > OBS_SIG_WORDS)
		return 0;
	__u8 *buf = bpf_map_lookup_elem(&SIG_SCRATCH, &z);
	if (!buf || bpf_probe_read_user(buf, span, (void *)s->sp))
		return 0;
	/* Every word compared, without branches: unrolled with constant
	 * indexes (a rolled loop lets clang drop the bound the verifier
	 * needs); words past n compare nothing. */
	__u64 diff = 0;
#pragma clang loop unroll(full)
	for (int i = 0; i < OBS_SIG_WORDS; i++) {
		/* userspace keeps off + 8 <= span; the mask bounds it for the verifier */
		__u32 off = s->off[i] & (OBS_SIG_SPAN - 8);
		__u64 used = i < n ? ~0ULL : 0;
		diff |= (*(__u64 *)(buf + off) ^ s->val[i]) & used;
	}
	return diff ? 0 : s->id;
}

/* The signature of process `tgid` the creator's stack matches (its id),
 * or 0: its registers, then the words its unwinding depended on, from one
 * read of the top of the stack. `*miss`: the process has a signature this
 * clone missed and that has not woken the reader yet (see stack_woke).
 *
 * A replaced element of a non-preallocated hash map may be reused at once
 * for another process's signature: the value is copied first, between two
 * reads of its id (ids are unique per observer and change with every put),
 * and the copy is checked. The reads are ordered as x86 orders loads; on
 * arm64 a copy torn by a reuse in those few nanoseconds could pass. */
static __always_inline __u32 stack_sig_match(__u32 tgid, struct obs_stack_sig **miss)
{
	struct obs_stack_sig *s = bpf_map_lookup_elem(&STACK_SIG, &tgid);
	__u32 z = 0;
	struct obs_stack_sig *c = bpf_map_lookup_elem(&SIG_COPY, &z);
	if (!s || !c)
		return 0;
	__u32 id = *(volatile __u32 *)&s->id;
	asm volatile("" ::: "memory");
	__builtin_memcpy(c, s, sizeof(*c));
	asm volatile("" ::: "memory");
	if (*(volatile __u32 *)&s->id != id || c->id != id || c->tgid != tgid)
		return 0;
	id = stack_sig_check(c);
	if (!id && !c->woke)
		*miss = s;
	return id;
}

/* A copy is sent for a clone that missed signature `s`: the first such
 * copy wakes the reader, so that the new path's signature is learnt at once
 * (not at the periodic drain: a storm would send thousands of copies). */
static __always_inline bool stack_woke(struct obs_stack_sig *s)
{
	/* racy: two CPUs may both wake it, which costs a wakeup */
	if (!s || s->woke)
		return false;
	s->woke = 1;
	return true;
}

/* `btf`: task is a tp_btf argument the verifier trusts, read with plain
 * loads (a helper call each otherwise: this runs at every clone). */
static __always_inline void task_new_fill(struct obs_task_new *r, struct task_struct *task,
					  __u64 clone_flags, __u32 creator, __u32 child_tgid,
					  bool btf)
{
	r->clone_flags = clone_flags;
	/* copy_process() has set it by the time the tracepoint fires */
	r->child_tid_addr =
		btf ? (__u64)task->clear_child_tid : (__u64)BPF_CORE_READ(task, clear_child_tid);
	r->child_tid = btf ? task->pid : BPF_CORE_READ(task, pid);
	r->child_tgid = child_tgid;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	/* copy_process() copied it from the creator (current) */
	__builtin_memcpy(r->child_comm, r->comm, sizeof(r->child_comm));
	creating_fill(r, creator);
	thread_pthread(task, r, btf);
}

static __always_inline int task_new(struct task_struct *task, __u64 clone_flags, bool btf)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u8 *w = bpf_map_lookup_elem(&WATCH, &tgid);
	if (!w)
		return 0;
	__u32 child_tgid = btf ? task->tgid : BPF_CORE_READ(task, tgid);
	if (!(clone_flags & CLONE_THREAD_) && FOLLOW_FORKS) {
		__u8 one = 1;
		if (bpf_map_update_elem(&WATCH, &child_tgid, &one, BPF_ANY))
			stat_inc(OBS_STAT_WATCH_FULL);
	}
	/* Over half full, the reader is behind: send the thread without its
	 * stack rather than lose records (its creation site is then unknown). */
	__u64 avail = 0, size = 0;
	if (clone_flags & CLONE_THREAD_) {
		avail = bpf_ringbuf_query(&EVENTS, BPF_RB_AVAIL_DATA);
		size = bpf_ringbuf_query(&EVENTS, BPF_RB_RING_SIZE);
	}
	struct obs_stack_sig *miss = NULL;
	__u32 sig = (clone_flags & CLONE_THREAD_) ? stack_sig_match(tgid, &miss) : 0;
	if ((clone_flags & CLONE_THREAD_) && !sig && avail < size / 2) {
		struct obs_task_new_stack *b =
			rec_reserve(sizeof(*b), OBS_REC_TASK_NEW_STACK, tgid, (__u32)id);
		if (b) {
			task_new_fill(&b->t, task, clone_flags, (__u32)id, child_tgid, btf);
			clone_stack(b);
			stat_inc(OBS_STAT_RECORDS);
			bpf_ringbuf_submit(b, stack_woke(miss) ? BPF_RB_FORCE_WAKEUP
							       : stack_wakeup(w, avail, size));
			return 0;
		}
		/* no room for the stack: the thread still gets its small record */
	}
	struct obs_task_new *r = rec_reserve(sizeof(*r), OBS_REC_TASK_NEW, tgid, (__u32)id);
	if (!r)
		return 0;
	task_new_fill(r, task, clone_flags, (__u32)id, child_tgid, btf);
	r->stack_sig = sig;
	rec_submit(r, false);
	return 0;
}

static __always_inline bool owned_by(__u64 lock, __u32 tgid, __u32 tid)
{
	struct obs_lock_key k = { .lock = lock, .tgid = tgid };
	struct obs_owner *o = bpf_map_lookup_elem(&OWNERS, &k);
	return o && o->tid == tid;
}

/* Kinds whose memory names no owner and that any thread may release
 * (semaphores, CPython locks): OWNERS says who holds them. A mutex or an
 * rwlock is released by its holder: the holder's HELD entry is enough. */
static __always_inline bool owner_tracked(__u32 kind)
{
	return kind == OBS_LK_SEM || kind == OBS_LK_PYLOCK;
}

/* A HELD entry the thread really holds now. */
static __always_inline bool still_held(struct obs_held_lock *l, __u32 tgid, __u32 tid)
{
	if (!l->lock || (l->flags & OBS_HL_WAITING))
		return false;
	return !owner_tracked(l->kind) || owned_by(l->lock, tgid, tid);
}

/* Drops released entries (holes) from the top of the held set. */
static __always_inline void held_trim(struct obs_held *h)
{
	__u32 n = h->n;
	for (int i = 0; i < OBS_MAX_HELD; i++) {
		if (n == 0 || n > OBS_MAX_HELD || h->locks[HI(n - 1)].lock)
			break;
		n--;
	}
	h->n = n;
}

struct exit_ctx {
	struct obs_held *h;
	struct obs_exit_held *r; /* per-CPU scratch */
	__u32 n, tgid, tid, _pad;
};

/* One entry of an exiting thread's held set into its record (a bpf_loop
 * callback: verified once, not once per entry). */
static long exit_one(__u32 i, struct exit_ctx *c)
{
	if (i >= c->n || i >= OBS_MAX_HELD)
		return 1;
	struct obs_held_lock l = c->h->locks[HI(i)];
	/* a hole, a lock it was still waiting for, or released by another thread */
	if (!still_held(&l, c->tgid, c->tid))
		return 0;
	__u32 k = c->r->n;
	if (k < OBS_MAX_HELD) {
		c->r->locks[HI(k)] = l;
		c->r->n = k + 1;
	}
	return 0;
}

/* Deep tier: report the locks a thread still holds when it exits. */
static __always_inline void exit_held(__u32 tgid, __u32 tid)
{
	bpf_map_delete_elem(&PENDING, &tid);
	struct obs_held *h = bpf_map_lookup_elem(&HELD, &tid);
	if (!h)
		return;
	/* the record is built in scratch (obs_held is the larger) and copied */
	struct obs_exit_held *r = bpf_map_lookup_elem(&HELD_SCRATCH, &(__u32){ 0 });
	if (r && h->n) {
		r->hdr.kind = OBS_REC_EXIT_HELD;
		r->hdr.tgid = tgid;
		r->hdr.tid = tid;
		r->hdr.flags = 0;
		r->hdr.ts_ns = bpf_ktime_get_ns();
		r->n = 0;
		r->_pad = 0;
		struct exit_ctx c = { .h = h, .r = r, .n = h->n, .tgid = tgid, .tid = tid };
		bpf_loop(OBS_MAX_HELD, exit_one, &c, 0);
		if (r->n) {
			if (bpf_ringbuf_output(&EVENTS, r, sizeof(*r), BPF_RB_NO_WAKEUP))
				stat_inc(OBS_STAT_RB_DROPS);
			else
				stat_inc(OBS_STAT_RECORDS);
		}
	}
	cache_flush_all(h, tgid, tid);
	bpf_map_delete_elem(&HELD, &tid);
}

/* A thread that ended by itself: whether it was joined or detached is in
 * its glibc descriptor, read when the process calls exit_group. */
static __always_inline void exited_remember(struct task_struct *t, __u32 tgid, __u32 tid, bool btf)
{
#if defined(__TARGET_ARCH_x86)
	if (!PT_TID_OFF)
		return;
	struct obs_exited e = { .pthread = btf ? t->thread.fsbase : BPF_CORE_READ(t, thread.fsbase),
				.tgid = tgid };
	if (!e.pthread)
		return;
	/* The entry of the descriptor's last owner is overwritten: that thread
	 * was joined or detached, or its descriptor would not be in use again.
	 * In place: no bucket lock, no element swap (the usual case, a pool or
	 * a loop reusing cached stacks). */
	__u32 *old = bpf_map_lookup_elem(&EXITED, &e);
	if (old)
		*old = tid;
	else if (bpf_map_update_elem(&EXITED, &e, &tid, BPF_ANY))
		stat_inc(OBS_STAT_EXITED_FULL);
#endif
}

struct js_ctx {
	__u32 tgid;
};

static long join_state_one(struct bpf_map *map, struct obs_exited *e, __u32 *tid,
			   struct js_ctx *c)
{
	if (e->tgid != c->tgid)
		return 0;
	struct obs_join_state *r = rec_reserve(sizeof(*r), OBS_REC_JOIN_STATE, e->tgid, *tid);
	if (r) {
		r->pthread = e->pthread;
		r->joinid = 0;
		r->tid_word = 0;
		r->flags = 0;
		if (bpf_probe_read_user(&r->tid_word, sizeof(r->tid_word),
					(void *)(e->pthread + PT_TID_OFF)) == 0 &&
		    bpf_probe_read_user(&r->joinid, sizeof(r->joinid),
					(void *)(e->pthread + PT_JOINID_OFF)) == 0)
			r->flags = OBS_JS_READ;
		rec_submit(r, false);
	}
	bpf_map_delete_elem(map, e);
	return 0;
}

/* exit_group of a watched process: its memory is still there. Read the
 * descriptors of the threads that ended by themselves (joins that never
 * waited, because the thread had already exited, leave no other trace). */
static __always_inline int exit_group_enter(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!PT_TID_OFF || !watched(tgid))
		return 0;
	struct js_ctx c = { .tgid = tgid };
	bpf_for_each_map_elem(&EXITED, join_state_one, &c, 0);
	return 0;
}

/* The exiting task is always current. `btf`: read it with plain loads
 * (tp_btf); the other rungs keep CO-RE reads. */
static __always_inline int task_exit(bool btf)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!watched(tgid))
		return 0;
	struct task_struct *cur = bpf_get_current_task_btf();
	/* its entries stay from its first wait on; only a thread marked when
	 * it got one can have one (a delete of a missing key takes the bucket
	 * lock too: look first) */
	if (bpf_task_storage_get(&TABLED, cur, 0, 0)) {
		if (bpf_map_lookup_elem(&WAITS, &tid))
			bpf_map_delete_elem(&WAITS, &tid);
		if (bpf_map_lookup_elem(&EPOLL, &tid))
			bpf_map_delete_elem(&EPOLL, &tid);
	}
	if (DEEP)
		exit_held(tgid, tid);
	struct task_struct *t = btf ? cur : (struct task_struct *)bpf_get_current_task();
	/* do_exit() decremented signal->live before the tracepoint */
	__u32 group_dead =
		(btf ? t->signal->live.counter : BPF_CORE_READ(t, signal, live.counter)) == 0;
	if (group_dead && FOLLOW_FORKS)
		bpf_map_delete_elem(&WATCH, &tgid);
	if (group_dead)
		bpf_map_delete_elem(&STACK_SIG, &tgid);
	bool group_exit =
		((btf ? t->signal->flags : BPF_CORE_READ(t, signal, flags)) & SIGNAL_GROUP_EXIT_) != 0;
	/* Waits learnt at sched_switch have no exit_group hook: the last
	 * thread of an exit_group reads the descriptors instead (the
	 * tracepoint runs before exit_mm; after exit_group_enter, nothing of
	 * this process is left in EXITED). */
	if (group_dead && group_exit && PT_TID_OFF) {
		struct js_ctx c = { .tgid = tgid };
		bpf_for_each_map_elem(&EXITED, join_state_one, &c, 0);
	}
	struct obs_task_exit *r = rec_reserve(sizeof(*r), OBS_REC_TASK_EXIT, tgid, tid);
	if (!r)
		return 0;
	r->exit_code = btf ? t->exit_code : BPF_CORE_READ(t, exit_code);
	r->group_dead = group_dead;
	r->group_exit = group_exit;
	if (!r->group_exit && tid != tgid)
		exited_remember(t, tgid, tid, btf);
	r->_pad = 0;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	/* the leader's exit is what `attach` waits for: do not let it sit */
	rec_submit(r, group_dead);
	return 0;
}

static __always_inline int task_rename(__u32 tgid, __u32 tid, const char *oldcomm,
				       const char *newcomm)
{
	if (!watched(tgid))
		return 0;
	struct obs_task_rename *r = rec_reserve(sizeof(*r), OBS_REC_TASK_RENAME, tgid, tid);
	if (!r)
		return 0;
	bpf_probe_read_kernel_str(r->oldcomm, sizeof(r->oldcomm), oldcomm);
	bpf_probe_read_kernel_str(r->newcomm, sizeof(r->newcomm), newcomm);
	rec_submit(r, false);
	return 0;
}

static __always_inline int exec_rec(__u32 old_tid, const char *filename)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!watched(tgid))
		return 0;
	/* The new image's clones are not the old one's; a thread other than
	 * the leader that execs takes the leader's TID and leaves its own. */
	bpf_map_delete_elem(&STACK_SIG, &tgid);
	if (old_tid != (__u32)id) {
		bpf_map_delete_elem(&WAITS, &old_tid);
		bpf_map_delete_elem(&EPOLL, &old_tid);
	}
	struct obs_exec *r = rec_reserve(sizeof(*r), OBS_REC_EXEC, tgid, (__u32)id);
	if (!r)
		return 0;
	r->old_tid = old_tid;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = BPF_CORE_READ(t, mm);
	r->start_code = BPF_CORE_READ(mm, start_code);
	r->end_code = BPF_CORE_READ(mm, end_code);
	r->exe_ino = BPF_CORE_READ(mm, exe_file, f_inode, i_ino);
	r->exe_dev = BPF_CORE_READ(mm, exe_file, f_inode, i_sb, s_dev);
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	bpf_probe_read_kernel_str(r->filename, sizeof(r->filename), filename);
	if (STOP_ON_EXEC) {
		/* delivered before the new image's first instruction */
		bpf_send_signal(SIGSTOP_);
	}
	/* urgent: userspace reads the new image's mappings while it runs */
	rec_submit(r, true);
	return 0;
}

/* rung: tp_btf */
SEC("tp_btf/task_newtask")
int BPF_PROG(btf_task_newtask, struct task_struct *task, __u64 clone_flags)
{
	return task_new(task, clone_flags, true);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(btf_process_exit)
{
	return task_exit(true);
}

SEC("tp_btf/task_rename")
int BPF_PROG(btf_task_rename, struct task_struct *task, const char *comm)
{
	return task_rename(BPF_CORE_READ(task, tgid), BPF_CORE_READ(task, pid), task->comm, comm);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(btf_process_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return exec_rec(old_pid, BPF_CORE_READ(bprm, filename));
}

/* rung: raw_tp */
SEC("raw_tp/task_newtask")
int raw_task_newtask(__u64 *ctx)
{
	return task_new((struct task_struct *)ctx[0], ctx[1], false);
}

SEC("raw_tp/sched_process_exit")
int raw_process_exit(__u64 *ctx)
{
	return task_exit(false);
}

SEC("raw_tp/task_rename")
int raw_task_rename(__u64 *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx[0];
	return task_rename(BPF_CORE_READ(task, tgid), BPF_CORE_READ(task, pid), task->comm,
			   (const char *)ctx[1]);
}

SEC("raw_tp/sched_process_exec")
int raw_process_exec(__u64 *ctx)
{
	struct linux_binprm *bprm = (struct linux_binprm *)ctx[2];
	return exec_rec((__u32)ctx[1], BPF_CORE_READ(bprm, filename));
}

/* rung: tracepoint. task_newtask has no task pointer here, so the clone
 * child_tid address (join edges) is not known in this rung. */
SEC("tracepoint/task/task_newtask")
int tp_task_newtask(struct trace_event_raw_task_newtask *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!watched(tgid))
		return 0;
	__u64 flags = ctx->clone_flags;
	__u32 child = ctx->pid;
	__u32 child_tgid = (flags & CLONE_THREAD_) ? tgid : child;
	if (!(flags & CLONE_THREAD_) && FOLLOW_FORKS) {
		__u8 one = 1;
		if (bpf_map_update_elem(&WATCH, &child_tgid, &one, BPF_ANY))
			stat_inc(OBS_STAT_WATCH_FULL);
	}
	struct obs_task_new *r = rec_reserve(sizeof(*r), OBS_REC_TASK_NEW, tgid, (__u32)id);
	if (!r)
		return 0;
	r->clone_flags = flags;
	r->child_tid_addr = 0;
	r->child_tid = child;
	r->child_tgid = child_tgid;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	bpf_probe_read_kernel_str(r->child_comm, sizeof(r->child_comm), ctx->comm);
	creating_fill(r, (__u32)id);
	rec_submit(r, false);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int tp_process_exit(void *ctx)
{
	return task_exit(false);
}

SEC("tracepoint/task/task_rename")
int tp_task_rename(struct trace_event_raw_task_rename *ctx)
{
	/* the renamed task's TGID is not in the record: writers are almost
	 * always threads of the same process (prctl, pthread_setname_np) */
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	return task_rename(tgid, ctx->pid, ctx->oldcomm, ctx->newcomm);
}

SEC("tracepoint/sched/sched_process_exec")
int tp_process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	unsigned short off = ctx->__data_loc_filename & 0xFFFF;
	return exec_rec(ctx->old_pid, (const char *)ctx + off);
}
