// SPDX-License-Identifier: GPL-2.0
/* observer: uprobes: libc thread calls, and the deep tier on lock functions (--uprobes).
 * Included by observer.bpf.c after common.h. */

/* ------------------------------------------------------------------ */
/* libc thread calls (uprobes, lifecycle: rare calls, entry probes)    */

/* At function entry *(u64 *)sp is the caller's return address. */
static __always_inline __u64 call_site(struct pt_regs *ctx)
{
	__u64 ra = 0;
	bpf_probe_read_user(&ra, sizeof(ra), (void *)PT_REGS_SP(ctx));
	return ra;
}

/* glibc's struct pthread_attr: flags at +8, ATTR_FLAG_DETACHSTATE = 1. */
#define ATTR_FLAGS_OFF 8
#define ATTR_FLAG_DETACHSTATE 1

static __always_inline int pthread_create_entry(struct pt_regs *ctx, void *thread_out, void *attr)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!watched(tgid))
		return 0;
	struct obs_creating c = { .site = call_site(ctx), .thread_out = (__u64)thread_out };
	if (attr) {
		__u32 flags = 0;
		bpf_probe_read_user(&flags, sizeof(flags), attr + ATTR_FLAGS_OFF);
		c.detached = flags & ATTR_FLAG_DETACHSTATE;
	}
	if (bpf_map_update_elem(&CREATING, &tid, &c, BPF_ANY))
		stat_inc(OBS_STAT_CREATING_FULL);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(up_pthread_create, void *thread_out, void *attr)
{
	return pthread_create_entry(ctx, thread_out, attr);
}

static __always_inline int pthread_rec(__u32 op, __u64 pthread, __u64 arg, __u64 site)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!watched(tgid))
		return 0;
	struct obs_pthread *r = rec_reserve(sizeof(*r), OBS_REC_PTHREAD, tgid, (__u32)id);
	if (!r)
		return 0;
	r->op = op;
	r->_pad = 0;
	r->pthread = pthread;
	r->arg = arg;
	r->site = site;
	rec_submit(r, false);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(up_pthread_join, __u64 th)
{
	return pthread_rec(OBS_PT_JOIN, th, 0, call_site(ctx));
}

SEC("uprobe")
int BPF_KPROBE(up_pthread_detach, __u64 th)
{
	return pthread_rec(OBS_PT_DETACH, th, 0, call_site(ctx));
}

SEC("uprobe")
int BPF_KPROBE(up_pthread_exit, void *retval)
{
	return pthread_rec(OBS_PT_EXIT, 0, (__u64)retval, call_site(ctx));
}

/* pthread_tryjoin_np / timedjoin_np / clockjoin_np may fail: count them
 * as joins only when they return 0. */
static __always_inline int tryjoin_entry(__u64 th)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	if (!watched(id >> 32))
		return 0;
	bpf_map_update_elem(&JOINING, &tid, &th, BPF_ANY);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(up_pthread_tryjoin, __u64 th)
{
	return tryjoin_entry(th);
}

static __always_inline int tryjoin_return(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *th = bpf_map_lookup_elem(&JOINING, &tid);
	if (!th)
		return 0;
	__u64 pt = *th;
	bpf_map_delete_elem(&JOINING, &tid);
	if (ret != 0)
		return 0;
	return pthread_rec(OBS_PT_JOIN, pt, 0, 0); /* no call site at return */
}

SEC("uretprobe")
int BPF_KRETPROBE(urp_pthread_tryjoin, long ret)
{
	return tryjoin_return(ret);
}

/* ------------------------------------------------------------------ */
/* deep tier: uprobes on lock functions (--uprobes)                    */

static __always_inline __u32 lock_gen(__u64 lock, __u32 tgid)
{
	struct obs_lock_key k = { .lock = lock, .tgid = tgid };
	__u32 *g = bpf_map_lookup_elem(&GEN, &k);
	return g ? *g : 0;
}

/* The calling thread's HELD entry, made if its process is watched. A
 * thread with an entry needs no WATCH lookup: its process was watched. */
static __always_inline struct obs_held *held_get(__u32 tid, __u32 tgid)
{
	struct obs_held *h = bpf_map_lookup_elem(&HELD, &tid);
	if (h)
		return h;
	if (!watched(tgid))
		return NULL;
	struct obs_held *z = bpf_map_lookup_elem(&HELD_SCRATCH, &(__u32){ 0 });
	if (!z)
		return NULL;
	z->n = 0;
	z->in_call = 0;
	z->tgid = tgid;
	z->cache_next = 0;
	for (int i = 0; i < OBS_HOLD_CACHE; i++) {
		z->cache[i].count = 0;
		z->cache[i].lock = 0;
	}
	bpf_map_update_elem(&HELD, &tid, z, BPF_NOEXIST);
	return bpf_map_lookup_elem(&HELD, &tid);
}

static __always_inline __u32 log2_bucket(__u64 us)
{
	__u32 b = 0;
	for (int i = 0; i < OBS_HOLD_HIST - 1; i++) {
		if (us < 2)
			break;
		us >>= 1;
		b++;
	}
	return b;
}

static __always_inline struct obs_lock_stats *lstats(__u64 lock, __u32 tgid, __u32 gen, __u32 kind)
{
	struct obs_lock_key k = { .lock = lock, .tgid = tgid, .gen = gen };
	struct obs_lock_stats *s = bpf_map_lookup_elem(&LSTATS, &k);
	if (s)
		return s;
	struct obs_lock_stats *z = bpf_map_lookup_elem(&HELD_SCRATCH, &(__u32){ 0 });
	if (!z)
		return NULL;
	__builtin_memset(z, 0, sizeof(struct obs_lock_stats)); /* scratch is larger than stats */
	z->kind = kind;
	if (bpf_map_update_elem(&LSTATS, &k, z, BPF_NOEXIST) && !bpf_map_lookup_elem(&LSTATS, &k)) {
		stat_inc(OBS_STAT_LSTATS_FULL);
		return NULL;
	}
	return bpf_map_lookup_elem(&LSTATS, &k);
}

static __always_inline void count_wait(struct obs_lock_stats *st, __u64 wait, bool first)
{
	if (first)
		__sync_fetch_and_add(&st->contended, 1);
	__sync_fetch_and_add(&st->wait_total_ns, wait);
	if (wait > st->wait_max_ns)
		st->wait_max_ns = wait; /* racy max: good enough for a profile */
}

/* Futex words of a lock lie in its first 16 bytes: a mutex's __lock (+0),
 * an rwlock's __readers, __wrphase_futex, __writers_futex (+0, +8, +12), a
 * semaphore's value (+0). A wait elsewhere is not for that lock. */
#define LOCK_WORDS 16

/* A futex wait begins (deep tier): inside a return-probed lock call, that
 * call is contended; else, if the thread's newest held entry was taken at
 * its lock call's entry and the futex word lies in that lock, the thread
 * is still waiting for it. */
static __always_inline void deep_wait_begin(__u32 tid, __u64 uaddr)
{
	struct obs_held *h = bpf_map_lookup_elem(&HELD, &tid);
	if (!h)
		return;
	if (h->in_call) {
		struct obs_acquire *a = bpf_map_lookup_elem(&PENDING, &tid);
		if (a && uaddr - a->lock < LOCK_WORDS)
			a->flags |= OBS_ACQ_CONTENDED;
		return;
	}
	__u32 n = h->n;
	if (n == 0 || n > OBS_MAX_HELD)
		return;
	struct obs_held_lock *l = &h->locks[HI(n - 1)];
	if (l->lock && uaddr - l->lock < LOCK_WORDS && l->count == 1)
		l->flags |= OBS_HL_WAITING;
}

/* The futex wait ended: the lock it was for counts it as contention, and
 * its hold starts no sooner than now. */
static __always_inline void deep_wait_end(__u32 tid, __u32 tgid, __u64 dur, __u64 now)
{
	struct obs_held *h = bpf_map_lookup_elem(&HELD, &tid);
	if (!h)
		return;
	__u32 n = h->n;
	if (n == 0 || n > OBS_MAX_HELD)
		return;
	struct obs_held_lock *l = &h->locks[HI(n - 1)];
	if (!(l->flags & OBS_HL_WAITING))
		return;
	bool first = !(l->flags & OBS_HL_COUNTED);
	l->flags = (l->flags & ~OBS_HL_WAITING) | OBS_HL_COUNTED;
	l->acquired_ns = now;
	struct obs_lock_stats *st = lstats(l->lock, tgid, l->gen, l->kind);
	if (st)
		count_wait(st, dur, first);
}

/* Return-probed lock calls (try, timed, cond waits, semaphores, CPython):
 * the call is kept in PENDING from entry to return. */
/* The deep tier's entry points are global functions: the verifier walks
 * each once per program, not once per call site and caller state. */
__noinline int acq_entry(struct pt_regs *ctx, __u64 lock, __u32 kind, __u32 flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct obs_held *h = held_get(tid, tgid);
	if (!h)
		return 0;
	if (h->in_call) {
		/* a lock function called inside another (Python -> sem_wait) */
		struct obs_acquire *p = bpf_map_lookup_elem(&PENDING, &tid);
		if (p) {
			__u32 d = p->depth;
			if (d < 3)
				p->inner_site[d] = call_site(ctx);
			p->depth = d + 1;
		}
		return 0;
	}
	struct obs_acquire a = {
		.lock = lock,
		.start_ns = bpf_ktime_get_ns(),
		.site = call_site(ctx),
		.kind = kind,
		.flags = flags,
	};
	if (bpf_map_update_elem(&PENDING, &tid, &a, BPF_ANY) == 0)
		h->in_call = 1;
	return 0;
}

/* The first time an edge is seen, userspace gets its sites and a copy of
 * the stack (it unwinds it with DWARF later). ip is the lock call's
 * return address and sp the caller's stack pointer after the call. */
static __always_inline void edge_record(struct obs_edge_key *k, struct obs_held_lock *from,
					__u64 to_site, __u32 to_kind, __u64 sp, __u64 bp, __u64 gate)
{
	struct obs_lock_edge *r = rec_reserve(sizeof(*r), OBS_REC_LOCK_EDGE, k->tgid,
					      (__u32)bpf_get_current_pid_tgid());
	if (!r)
		return;
	r->key = *k;
	r->from_site = from->site;
	r->to_site = to_site;
	r->from_kind = from->kind;
	r->to_kind = to_kind;
	r->ip = to_site;
	r->sp = sp;
	r->bp = bp;
	r->_pad = 0;
	r->gate = gate;
	r->stack_len = 0;
	if (bpf_probe_read_user(r->stack, OBS_STACK_COPY, (void *)sp) == 0)
		r->stack_len = OBS_STACK_COPY;
	else if (bpf_probe_read_user(r->stack, 512, (void *)sp) == 0)
		r->stack_len = 512;
	rec_submit(r, false);
}

struct edge_ctx {
	struct obs_held *h;
	__u64 lock, site, sp, bp, outer;
	__u32 n, tgid, tid, gen, kind, _pad;
};

/* One held lock `from` -> the lock being taken: an edge of ORDER. A
 * bpf_loop callback: the verifier walks it once (an open-coded loop over
 * this body took it a million instructions). */
static long edge_one(__u32 i, struct edge_ctx *c)
{
	if (i >= c->n || i >= OBS_MAX_HELD)
		return 1;
	struct obs_held_lock from = c->h->locks[HI(i)];
	if (!still_held(&from, c->tgid, c->tid))
		return 0;
	/* the outermost lock held is the gate of the edges from the others */
	__u64 gate = c->outer;
	if (!gate)
		c->outer = from.lock;
	struct obs_edge_key k = {
		.from = from.lock, .to = c->lock, .from_gen = from.gen, .to_gen = c->gen, .tgid = c->tgid,
	};
	struct obs_edge *e = bpf_map_lookup_elem(&ORDER, &k);
	if (e) {
		__sync_fetch_and_add(&e->count, 1);
		if (e->gate != gate)
			e->gate = 0;
		return 0;
	}
	struct obs_edge ne = {
		.count = 1,
		.gate = gate,
		.from_read = from.kind == OBS_LK_RWLOCK_READ,
		.to_read = c->kind == OBS_LK_RWLOCK_READ,
		.gate_valid = 1,
	};
	if (bpf_map_update_elem(&ORDER, &k, &ne, BPF_NOEXIST) == 0)
		edge_record(&k, &from, c->site, c->kind, c->sp, c->bp, gate);
	else if (!bpf_map_lookup_elem(&ORDER, &k))
		stat_inc(OBS_STAT_ORDER_FULL);
	return 0;
}

/* glibc's pthread_mutex_t.__kind (x86_64 and aarch64): PTHREAD_MUTEX_ERRORCHECK
 * refuses a relock by its owner (EDEADLK) instead of counting it. */
#define MUTEX_KIND_OFF 16
#define MUTEX_KIND_ERRORCHECK 2

/* Thread `tid` takes lock a->lock (at the call's return, or at the entry
 * of a blocking call: `entry`). Adds lock-order edges from what it holds
 * (not for trylocks) and the lock to its held set. sp/bp: the caller's
 * frame after the call, for the edge's stack. */
static __always_inline void acquire(struct obs_held *h, struct obs_acquire *a, __u32 tgid,
				    __u32 tid, __u64 now, __u64 sp, __u64 bp, bool entry)
{
	__u32 gen = lock_gen(a->lock, tgid);
	if (a->flags & OBS_ACQ_CONTENDED) {
		struct obs_lock_stats *st = lstats(a->lock, tgid, gen, a->kind);
		if (st)
			count_wait(st, now - a->start_ns, true);
	}
	__u32 n = h->n;
	if (n > OBS_MAX_HELD)
		n = OBS_MAX_HELD;
	/* a relock of a lock it holds: no edge, no new entry (the loop only
	 * searches: the verifier walks the rest once) */
	int j = -1;
	for (int i = 0; i < OBS_MAX_HELD; i++) {
		if (i >= n)
			break;
		if (h->locks[HI(i)].lock == a->lock && h->locks[HI(i)].gen == gen) {
			j = i;
			break;
		}
	}
	if (j >= 0 && !still_held(&h->locks[HI(j)], tgid, tid)) {
		h->locks[HI(j)].lock = 0; /* released by another thread: a hole now */
		j = -1;
	}
	if (j >= 0) {
		struct obs_held_lock *l = &h->locks[HI(j)];
		{
			bool counts = true;
			if (entry && a->kind == OBS_LK_RWLOCK_WRITE)
				counts = false; /* EDEADLK */
			if (entry && a->kind == OBS_LK_MUTEX) {
				__u32 mk = 0;
				bpf_probe_read_user(&mk, sizeof(mk), (void *)(a->lock + MUTEX_KIND_OFF));
				counts = (mk & 3) != MUTEX_KIND_ERRORCHECK;
			}
			if (counts)
				l->count++;
			return;
		}
	}
	/* The lock's LSTATS entry exists from its first acquisition (userspace
	 * names the locks it lists while the process lives); a thread taking
	 * the lock it released last skips the lookup. */
	if (!cache_has(h, a->lock, gen))
		lstats(a->lock, tgid, gen, a->kind);
	held_trim(h);
	n = h->n;
	if (n > OBS_MAX_HELD)
		n = OBS_MAX_HELD;
	if (!(a->flags & OBS_ACQ_TRY) && n) {
		struct edge_ctx c = {
			.h = h, .lock = a->lock, .site = a->site, .sp = sp, .bp = bp,
			.n = n, .tgid = tgid, .tid = tid, .gen = gen, .kind = a->kind,
		};
		bpf_loop(OBS_MAX_HELD, edge_one, &c, 0);
	}
	if (n < OBS_MAX_HELD) {
		struct obs_held_lock l = {
			.lock = a->lock, .acquired_ns = now, .site = a->site, .gen = gen, .count = 1, .kind = a->kind,
		};
		h->locks[HI(n)] = l;
		h->n = n + 1;
	} else {
		stat_inc(OBS_STAT_HELD_FULL);
	}
	if (owner_tracked(a->kind)) {
		struct obs_lock_key ok_ = { .lock = a->lock, .tgid = tgid };
		struct obs_owner o = { .acquired_ns = now, .site = a->site, .tid = tid, .kind = a->kind };
		bpf_map_update_elem(&OWNERS, &ok_, &o, BPF_ANY);
	}
}

/* A blocking lock call (pthread_mutex_lock, rwlock rd/wrlock): it returns
 * 0 or never, so the lock is taken at entry and no return probe (a second
 * trap per call) is needed. A futex wait on it meanwhile marks it WAITING. */
__noinline int lock_now(struct pt_regs *ctx, __u64 lock, __u32 kind)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct obs_held *h = held_get(tid, tgid);
	if (!h || h->in_call)
		return 0; /* inside another lock call: that one is the acquire */
	__u64 now = bpf_ktime_get_ns();
	struct obs_acquire a = { .lock = lock, .start_ns = now, .site = call_site(ctx), .kind = kind };
	acquire(h, &a, tgid, tid, now, PT_REGS_SP(ctx) + 8, PT_REGS_FP(ctx), true);
	return 0;
}

__noinline int acq_return(struct pt_regs *ctx, __u32 ok)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct obs_held *h = bpf_map_lookup_elem(&HELD, &tid);
	if (!h || !h->in_call)
		return 0;
	struct obs_acquire *p = bpf_map_lookup_elem(&PENDING, &tid);
	if (!p) {
		h->in_call = 0;
		return 0;
	}
	if (p->depth) {
		p->depth--;
		return 0;
	}
	struct obs_acquire a = *p;
	bpf_map_delete_elem(&PENDING, &tid);
	h->in_call = 0;
	if (!ok)
		return 0;
	acquire(h, &a, tgid, tid, bpf_ktime_get_ns(), PT_REGS_SP(ctx), PT_REGS_FP(ctx), false);
	return 0;
}

static __always_inline void holders_add(__u64 lock, __u32 tgid, __u32 holder, __u64 count,
					__u64 hold_total)
{
	struct obs_holder_key hk = { .lock = lock, .tgid = tgid, .tid = holder };
	struct obs_holder *ho = bpf_map_lookup_elem(&HOLDERS, &hk);
	if (ho) {
		__sync_fetch_and_add(&ho->count, count);
		__sync_fetch_and_add(&ho->hold_total_ns, hold_total);
	} else {
		struct obs_holder nh = { .count = count, .hold_total_ns = hold_total };
		bpf_map_update_elem(&HOLDERS, &hk, &nh, BPF_NOEXIST);
	}
}

/* Hold statistics of one completed hold ("acquired" counts them). */
static __always_inline void hold_done(__u64 lock, __u32 tgid, __u32 gen, __u32 kind, __u32 holder,
				      __u64 hold)
{
	struct obs_lock_stats *st = lstats(lock, tgid, gen, kind);
	if (st) {
		__sync_fetch_and_add(&st->acquired, 1);
		__sync_fetch_and_add(&st->hold_total_ns, hold);
		if (hold > st->hold_max_ns)
			st->hold_max_ns = hold;
		__u32 b = log2_bucket(hold / 1000);
		if (b < OBS_HOLD_HIST)
			__sync_fetch_and_add(&st->hold_hist[b], 1);
	}
	holders_add(lock, tgid, holder, 1, hold);
}

/* Adds one slot of a thread's cached hold statistics to LSTATS and HOLDERS. */
static __always_inline void cache_flush(struct obs_hold_cache *c, __u32 tgid, __u32 tid)
{
	if (!c->count)
		return;
	struct obs_lock_stats *st = lstats(c->lock, tgid, c->gen, c->kind);
	if (st) {
		__sync_fetch_and_add(&st->acquired, c->count);
		__sync_fetch_and_add(&st->hold_total_ns, c->hold_total_ns);
		if (c->hold_max_ns > st->hold_max_ns)
			st->hold_max_ns = c->hold_max_ns;
		for (int b = 0; b < OBS_HOLD_HIST; b++)
			if (c->hold_hist[b])
				__sync_fetch_and_add(&st->hold_hist[b], c->hold_hist[b]);
	}
	holders_add(c->lock, tgid, tid, c->count, c->hold_total_ns);
	c->count = 0;
}

static __always_inline void cache_flush_all(struct obs_held *h, __u32 tgid, __u32 tid)
{
	for (int i = 0; i < OBS_HOLD_CACHE; i++)
		cache_flush(&h->cache[i], tgid, tid);
}

/* A cache slot names the lock: its LSTATS entry exists already. */
static __always_inline bool cache_has(struct obs_held *h, __u64 lock, __u32 gen)
{
	for (int i = 0; i < OBS_HOLD_CACHE; i++)
		if (h->cache[i].lock == lock && h->cache[i].gen == gen)
			return true;
	return false;
}

/* One completed hold by this thread, into its cache (no shared map
 * update while it keeps releasing the same one or two locks). */
static __always_inline void cache_add(struct obs_held *h, __u64 lock, __u32 gen, __u32 kind,
				      __u32 tgid, __u32 tid, __u64 hold)
{
	struct obs_hold_cache *c = NULL;
	for (int i = 0; i < OBS_HOLD_CACHE; i++) {
		if (h->cache[i].count && h->cache[i].lock == lock && h->cache[i].gen == gen) {
			c = &h->cache[i];
			break;
		}
	}
	if (!c) {
		for (int i = 0; i < OBS_HOLD_CACHE; i++) {
			if (!h->cache[i].count) {
				c = &h->cache[i];
				break;
			}
		}
	}
	if (!c) {
		c = &h->cache[h->cache_next % OBS_HOLD_CACHE];
		h->cache_next++;
		cache_flush(c, tgid, tid);
	}
	if (!c->count) {
		c->lock = lock;
		c->gen = gen;
		c->kind = kind;
		c->hold_total_ns = 0;
		c->hold_max_ns = 0;
		__builtin_memset(c->hold_hist, 0, sizeof(c->hold_hist));
	}
	c->count++;
	c->hold_total_ns += hold;
	if (hold > c->hold_max_ns)
		c->hold_max_ns = hold;
	__u32 b = log2_bucket(hold / 1000);
	if (b < OBS_HOLD_HIST)
		c->hold_hist[b]++;
}

__noinline int rel_entry(__u64 lock)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct obs_held *h = bpf_map_lookup_elem(&HELD, &tid);
	if (h && h->in_call)
		return 0; /* inside another lock call (Python release -> sem_post) */
	__u64 now = bpf_ktime_get_ns();
	if (h) {
		__u32 n = h->n;
		if (n > OBS_MAX_HELD)
			n = OBS_MAX_HELD;
		/* most recent first; the loop only searches, so that the
		 * verifier walks the work below once */
		int j = -1;
		for (int i = OBS_MAX_HELD - 1; i >= 0; i--) {
			if (i < n && h->locks[HI(i)].lock == lock) {
				j = i;
				break;
			}
		}
		if (j >= 0) {
			struct obs_held_lock *l = &h->locks[HI(j)];
			if (l->count > 1) {
				l->count--;
				return 0;
			}
			__u64 acquired_ns = l->acquired_ns;
			__u32 gen = l->gen, kind = l->kind;
			l->lock = 0;
			held_trim(h);
			if (!owner_tracked(kind)) {
				cache_add(h, lock, gen, kind, tgid, tid, now - acquired_ns);
				return 0;
			}
			if (owned_by(lock, tgid, tid)) {
				cache_add(h, lock, gen, kind, tgid, tid, now - acquired_ns);
				struct obs_lock_key ok_ = { .lock = lock, .tgid = tgid };
				bpf_map_delete_elem(&OWNERS, &ok_);
				return 0;
			}
			/* released by another thread meanwhile: stale; OWNERS has the holder */
		}
	} else if (!watched(tgid)) {
		return 0;
	}
	/* not held by this thread: a semaphore posted by another thread, or a
	 * lock taken before the probes were in place */
	struct obs_lock_key ok_ = { .lock = lock, .tgid = tgid };
	struct obs_owner *o = bpf_map_lookup_elem(&OWNERS, &ok_);
	if (!o)
		return 0; /* never seen acquired (a semaphore used as a signal) */
	hold_done(lock, tgid, lock_gen(lock, tgid), o->kind, o->tid, now - o->acquired_ns);
	bpf_map_delete_elem(&OWNERS, &ok_);
	return 0;
}

#define ACQ(name, kind, flags)                                   \
	SEC("uprobe")                                            \
	int BPF_KPROBE(name, void *lock)                         \
	{                                                        \
		return acq_entry(ctx, (__u64)lock, kind, flags); \
	}

ACQ(up_mutex_lock, OBS_LK_MUTEX, 0)
ACQ(up_mutex_trylock, OBS_LK_MUTEX, OBS_ACQ_TRY)
ACQ(up_rw_rdlock, OBS_LK_RWLOCK_READ, 0)
ACQ(up_rw_tryrdlock, OBS_LK_RWLOCK_READ, OBS_ACQ_TRY)
ACQ(up_rw_wrlock, OBS_LK_RWLOCK_WRITE, 0)
ACQ(up_rw_trywrlock, OBS_LK_RWLOCK_WRITE, OBS_ACQ_TRY)
ACQ(up_sem_wait, OBS_LK_SEM, 0)
ACQ(up_sem_trywait, OBS_LK_SEM, OBS_ACQ_TRY)

#define LOCK_NOW(name, kind)                             \
	SEC("uprobe")                                    \
	int BPF_KPROBE(name, void *lock)                 \
	{                                                \
		return lock_now(ctx, (__u64)lock, kind); \
	}

LOCK_NOW(up_mutex_lock_now, OBS_LK_MUTEX)
LOCK_NOW(up_rw_rdlock_now, OBS_LK_RWLOCK_READ)
LOCK_NOW(up_rw_wrlock_now, OBS_LK_RWLOCK_WRITE)

/* pthread_mutex_*lock, rwlock, sem: 0 is success; a robust mutex whose
 * owner died is acquired too (EOWNERDEAD). */
SEC("uretprobe")
int BPF_KRETPROBE(urp_lock_ret0, long ret)
{
	return acq_return(ctx, ret == 0 || ret == EOWNERDEAD_);
}

/* pthread_cond_*wait(cond, mutex) releases the mutex and takes it again. */
SEC("uprobe")
int BPF_KPROBE(up_cond_wait, void *cond, void *mutex)
{
	rel_entry((__u64)mutex);
	return acq_entry(ctx, (__u64)mutex, OBS_LK_MUTEX, 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(urp_cond_wait, long ret)
{
	return acq_return(ctx, true); /* the mutex is held again, even on timeout */
}

SEC("uprobe")
int BPF_KPROBE(up_unlock, void *lock)
{
	return rel_entry((__u64)lock);
}

static __always_inline int destroy_entry(void *lock)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!watched(tgid))
		return 0;
	struct obs_lock_key k = { .lock = (__u64)lock, .tgid = tgid };
	__u32 *g = bpf_map_lookup_elem(&GEN, &k);
	__u32 next = g ? *g + 1 : 1;
	bpf_map_update_elem(&GEN, &k, &next, BPF_ANY);
	bpf_map_delete_elem(&OWNERS, &k);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(up_destroy, void *lock)
{
	return destroy_entry(lock);
}

/* CPython: PyThread_acquire_lock_timed(lock, microseconds, intr_flag);
 * a zero timeout is a trylock. Returns PY_LOCK_ACQUIRED (1) on success. */
SEC("uprobe")
int BPF_KPROBE(up_py_acquire, void *lock, long long us)
{
	return acq_entry(ctx, (__u64)lock, OBS_LK_PYLOCK, us == 0 ? OBS_ACQ_TRY : 0);
}

SEC("uretprobe")
int BPF_KRETPROBE(urp_py_acquire, int ret)
{
	return acq_return(ctx, ret == 1);
}

SEC("uprobe")
int BPF_KPROBE(up_py_release, void *lock)
{
	return rel_entry((__u64)lock);
}

/* Bare programs on the same probes: the benchmark's baseline. */
SEC("uprobe")
int up_bare(void *ctx)
{
	return 0;
}

SEC("uretprobe")
int urp_bare(void *ctx)
{
	return 0;
}

/* uprobe_multi: one entry and one return program for every probed
 * function of a library, told apart by the attach cookie (OBS_UP_*). */
SEC("uprobe")
int BPF_KPROBE(upm_entry, void *a0, void *a1)
{
	__u64 c = bpf_get_attach_cookie(ctx);
	__u64 lock = (__u64)a0;
	__u32 flags = c & 0xff, kind = (c >> 8) & 0xff;
	/* one inlined acq_entry and rel_entry: the verifier walks each once */
	switch (c >> 16) {
	case OBS_UP_LOCK:
		return lock_now(ctx, lock, kind);
	case OBS_UP_ACQ:
		break;
	case OBS_UP_PY_ACQ:
		kind = OBS_LK_PYLOCK;
		flags = a1 == 0 ? OBS_ACQ_TRY : 0;
		break;
	case OBS_UP_COND_WAIT:
		lock = (__u64)a1;
		kind = OBS_LK_MUTEX;
		flags = 0;
		rel_entry(lock);
		break;
	case OBS_UP_REL:
		return rel_entry(lock);
	case OBS_UP_DESTROY:
		return destroy_entry(a0);
	default:
		return 0;
	}
	return acq_entry(ctx, lock, kind, flags);
}

/* The thread lifecycle probes have programs of their own: small ones, quick
 * to verify, for when the lock probes are not wanted. */
SEC("uprobe")
int BPF_KPROBE(upm_thread_entry, void *a0, void *a1)
{
	switch (bpf_get_attach_cookie(ctx) >> 16) {
	case OBS_UP_PT_CREATE:
		return pthread_create_entry(ctx, a0, a1);
	case OBS_UP_PT_JOIN:
		return pthread_rec(OBS_PT_JOIN, (__u64)a0, 0, call_site(ctx));
	case OBS_UP_PT_DETACH:
		return pthread_rec(OBS_PT_DETACH, (__u64)a0, 0, call_site(ctx));
	case OBS_UP_PT_EXIT:
		return pthread_rec(OBS_PT_EXIT, 0, (__u64)a0, call_site(ctx));
	case OBS_UP_PT_TRYJOIN:
		return tryjoin_entry((__u64)a0);
	}
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(upm_thread_return, long ret)
{
	if (bpf_get_attach_cookie(ctx) >> 16 == OBS_URP_TRYJOIN)
		return tryjoin_return(ret);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(upm_return, long ret)
{
	bool ok;
	/* one inlined acq_return: the verifier walks it once */
	switch (bpf_get_attach_cookie(ctx) >> 16) {
	case OBS_URP_RET0:
		ok = ret == 0 || ret == EOWNERDEAD_;
		break;
	case OBS_URP_COND:
		ok = true;
		break;
	case OBS_URP_PY:
		ok = (int)ret == 1;
		break;
	default:
		return 0;
	}
	return acq_return(ctx, ok);
}
