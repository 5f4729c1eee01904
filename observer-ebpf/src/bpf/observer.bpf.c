// SPDX-License-Identifier: GPL-2.0
/*
 * observer: kernel tier. Futex waits of watched processes go into a
 * per-thread wait table (WAITS) and, once finished, into per-lock
 * aggregates (AGG); the ring buffer carries only thread lifecycle and the
 * wait outcomes userspace must see (EDEADLK, EOWNERDEAD, long waits).
 *
 * Every hook exists in several flavours (fentry, tp_btf, raw_tp,
 * tracepoint); userspace attaches the first flavour the kernel accepts.
 * The license is GPL because bpf_probe_read_user and friends are GPL-only.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "observer.h"

char LICENSE[] SEC("license") = "GPL";

/* Syscall argument and user register fields of struct pt_regs. */
#if defined(__TARGET_ARCH_x86)
#define NR_futex 202
#define NR_epoll_wait 232
#define NR_epoll_pwait 281
#define NR_epoll_pwait2 441
#define NR_futex_waitv 449
#define NR_futex_wait 455
#define F_ARG0 di
#define F_ARG1 si
#define F_ARG2 dx
#define F_ARG4 r8
#define F_NR orig_ax
#define NR_exit_group 231
#define F_IP ip
#define F_SP sp
#define F_BP bp
#elif defined(__TARGET_ARCH_arm64)
#define NR_futex 98
#define NR_epoll_wait 0xffffffff /* none on arm64 */
#define NR_epoll_pwait 22
#define NR_epoll_pwait2 441
#define NR_futex_waitv 449
#define NR_futex_wait 455
#define F_ARG0 orig_x0
#define F_ARG1 regs[1]
#define F_ARG2 regs[2]
#define F_ARG4 regs[4]
#define F_NR syscallno
#define NR_exit_group 94
#define F_IP pc
#define F_SP sp
#define F_BP regs[29]
#else
#error "unsupported architecture"
#endif

#define CLONE_THREAD_ 0x00010000
#define CLONE_SETTLS_ 0x00080000
#define SIGNAL_GROUP_EXIT_ 0x00000004
/* Held-set index the verifier can bound: the barrier stops clang from
 * reusing an unmasked copy of the index. */
static __always_inline __u32 HI(__u32 i)
{
	asm volatile("" : "+r"(i));
	return i & (OBS_MAX_HELD - 1);
}
#define EAGAIN_ 11
#define EDEADLK_ 35
#define EOWNERDEAD_ 130
#define ENOTRECOVERABLE_ 131

/* Set by userspace before load. */
volatile const __u64 LONG_WAIT_NS = 1000000000ULL;
volatile const __u8 FOLLOW_FORKS = 0;
/* Deep tier (--uprobes) is on: futex waits mark the pending lock call contended. */
volatile const __u8 DEEP = 0;
/* glibc's struct pthread (2.36, x86_64; libc6-dbg): tid and joinid offsets.
 * A clone whose CHILD_CLEARTID address is not pthread + PT_TID_OFF is not
 * a glibc thread of this layout, and its descriptor is never read. */
#if defined(__TARGET_ARCH_x86)
volatile const __u32 PT_TID_OFF = 720;
volatile const __u32 PT_JOINID_OFF = 1568;
#else
volatile const __u32 PT_TID_OFF = 0;
volatile const __u32 PT_JOINID_OFF = 0;
#endif
/* Stop a watched process at exec (SIGSTOP) until userspace has put the
 * deep tier's uprobes on what it will map, then continues it (`run`). */
volatile const __u8 STOP_ON_EXEC = 0;
/* Event loops: a return to epoll_wait this long after the last one is recorded. */
volatile const __u64 LOOP_BLOCKED_NS = 100000000ULL;
#define SIGSTOP_ 19

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* userspace may resize */
} EVENTS SEC(".maps");

/* Watched TGIDs. Checked before anything else is done for a task. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} WATCH SEC(".maps");

/* tid -> its last epoll_wait entry and return (watched processes only). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct obs_epoll);
} EPOLL SEC(".maps");

/* tid -> the futex wait the thread is in now. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct obs_wait);
} WAITS SEC(".maps");

/* (tgid, uaddr) -> completed waits that slept. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct obs_agg_key);
	__type(value, struct obs_agg);
} AGG SEC(".maps");

/* creator tid -> pthread_create in progress (uprobe tier, lifecycle). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct obs_creating);
} CREATING SEC(".maps");

/* tid -> pthread_t of a try/timed join in progress. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} JOINING SEC(".maps");

/* tid -> a thread that ended by itself; its join state is read at exit_group. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct obs_exited);
} EXITED SEC(".maps");

/* ---- deep tier maps (empty unless --uprobes) ---- */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct obs_acquire);
} PENDING SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct obs_held);
} HELD SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct obs_edge_key);
	__type(value, struct obs_edge);
} ORDER SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct obs_lock_key);
	__type(value, struct obs_lock_stats);
} LSTATS SEC(".maps");

/* (lock, tgid, gen 0) -> current owner */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct obs_lock_key);
	__type(value, struct obs_owner);
} OWNERS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct obs_holder_key);
	__type(value, struct obs_holder);
} HOLDERS SEC(".maps");

/* (lock, tgid, gen 0) -> identity generation, bumped by destroy */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct obs_lock_key);
	__type(value, __u32);
} GEN SEC(".maps");

/* Per-lock stack buffer for a held-set copy (too big for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct obs_held);
} HELD_SCRATCH SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OBS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} STATS SEC(".maps");

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&STATS, &idx);
	if (v)
		(*v)++;
}

static __always_inline bool watched(__u32 tgid)
{
	return bpf_map_lookup_elem(&WATCH, &tgid) != NULL;
}

static __always_inline void *rec_reserve(__u64 size, __u32 kind, __u32 tgid, __u32 tid)
{
	struct obs_hdr *h = bpf_ringbuf_reserve(&EVENTS, size, 0);
	if (!h) {
		stat_inc(OBS_STAT_RB_DROPS);
		return NULL;
	}
	h->kind = kind;
	h->tgid = tgid;
	h->tid = tid;
	h->flags = 0;
	h->ts_ns = bpf_ktime_get_ns();
	return h;
}

/* Lifecycle records are not urgent: userspace drains on a short timer. */
static __always_inline void rec_submit(void *rec, bool urgent)
{
	stat_inc(OBS_STAT_RECORDS);
	if (urgent)
		((struct obs_hdr *)rec)->flags |= OBS_F_URGENT;
	bpf_ringbuf_submit(rec, urgent ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

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

static __always_inline int futex_enter(struct sc_args *a)
{
	/* Non-waiting futex ops (WAKE, ...) leave before the map lookup. */
	if (a->nr == NR_futex && !is_wait_cmd((__u32)a->a1))
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!watched(tgid))
		return 0;

	struct obs_wait w = {};
	if (a->nr == NR_futex) {
		__u32 cmd = (__u32)a->a1 & OBS_FUTEX_CMD_MASK;
		/* A WAIT whose word already differs returns EAGAIN at once: no
		 * sleep, nothing to record (the word changing back before the
		 * kernel's own check is the rare miss). */
		if (cmd == OBS_FUTEX_WAIT || cmd == OBS_FUTEX_WAIT_BITSET) {
			__u32 cur;
			if (bpf_probe_read_user(&cur, sizeof(cur), (void *)a->a0) == 0 &&
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
	if (bpf_map_update_elem(&WAITS, &tid, &w, BPF_ANY))
		stat_inc(OBS_STAT_WAITS_FULL);
	if (DEEP)
		deep_wait_begin(tid, w.uaddr);
	return 0;
}

static __always_inline int futex_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct obs_wait *w = bpf_map_lookup_elem(&WAITS, &tid);
	if (!w)
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
	bpf_map_delete_elem(&WAITS, &tid);
	return 0;
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

static __always_inline int epoll_exit(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct obs_epoll *e = bpf_map_lookup_elem(&EPOLL, &tid);
	if (!e)
		return 0;
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	e->exit_delay = BPF_CORE_READ(t, sched_info.run_delay);
	e->exit_cpu = BPF_CORE_READ(t, se.sum_exec_runtime);
	e->exit_ns = bpf_ktime_get_ns();
	return 0;
}

/* Fill sc_args from user pt_regs. tp_btf may read regs directly; raw_tp
 * and fentry go through CO-RE reads, which work for both. */
static __always_inline void args_from_regs(struct sc_args *a, struct pt_regs *regs)
{
	a->a0 = BPF_CORE_READ(regs, F_ARG0);
	a->a1 = BPF_CORE_READ(regs, F_ARG1);
	a->a2 = BPF_CORE_READ(regs, F_ARG2);
	a->a4 = BPF_CORE_READ(regs, F_ARG4);
	a->ip = BPF_CORE_READ(regs, F_IP);
	a->sp = BPF_CORE_READ(regs, F_SP);
	a->bp = BPF_CORE_READ(regs, F_BP);
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
		args_from_regs(&a, regs);                                       \
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
	struct sc_args a = {
		.nr = id,
		.a0 = regs->F_ARG0,
		.a1 = regs->F_ARG1,
		.a2 = regs->F_ARG2,
		.a4 = regs->F_ARG4,
		.ip = regs->F_IP,
		.sp = regs->F_SP,
		.bp = regs->F_BP,
		.regs_ok = 1,
	};
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
	args_from_regs(&a, (struct pt_regs *)ctx[0]);
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
	r->_pad = 0;
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
static __always_inline void thread_pthread(struct task_struct *task, struct obs_task_new *r)
{
#if defined(__TARGET_ARCH_x86)
	if (r->pthread || !(r->clone_flags & CLONE_SETTLS_) || !PT_TID_OFF)
		return;
	__u64 pd = BPF_CORE_READ(task, thread.fsbase);
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
 * is a quarter full: a burst of clones must not wait for the periodic drain. */
static __always_inline __u64 stack_wakeup(__u8 *w)
{
	if (!(*w & 2)) {
		*w |= 2;
		return BPF_RB_FORCE_WAKEUP;
	}
	__u64 avail = bpf_ringbuf_query(&EVENTS, BPF_RB_AVAIL_DATA);
	__u64 size = bpf_ringbuf_query(&EVENTS, BPF_RB_RING_SIZE);
	return avail > size / 4 ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* The creating thread's user registers at the clone syscall and the top of
 * its stack (current is the creator). */
static __always_inline void clone_stack(struct obs_task_new_stack *b)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	b->ip = BPF_CORE_READ(regs, F_IP);
	b->sp = BPF_CORE_READ(regs, F_SP);
	b->bp = BPF_CORE_READ(regs, F_BP);
	b->_pad = 0;
	b->stack_len = 0;
	/* one read of the whole copy; a stack that ends sooner gets a smaller one */
	if (bpf_probe_read_user(b->stack, OBS_CLONE_STACK, (void *)b->sp) == 0)
		b->stack_len = OBS_CLONE_STACK;
	else if (bpf_probe_read_user(b->stack, 1024, (void *)b->sp) == 0)
		b->stack_len = 1024;
}

static __always_inline void task_new_fill(struct obs_task_new *r, struct task_struct *task,
					  __u64 clone_flags, __u32 creator, __u32 child_tgid)
{
	r->clone_flags = clone_flags;
	/* copy_process() has set it by the time the tracepoint fires */
	r->child_tid_addr = (__u64)BPF_CORE_READ(task, clear_child_tid);
	r->child_tid = BPF_CORE_READ(task, pid);
	r->child_tgid = child_tgid;
	bpf_get_current_comm(r->comm, sizeof(r->comm));
	BPF_CORE_READ_STR_INTO(&r->child_comm, task, comm);
	creating_fill(r, creator);
	thread_pthread(task, r);
}

static __always_inline int task_new(struct task_struct *task, __u64 clone_flags)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u8 *w = bpf_map_lookup_elem(&WATCH, &tgid);
	if (!w)
		return 0;
	__u32 child_tgid = BPF_CORE_READ(task, tgid);
	if (!(clone_flags & CLONE_THREAD_) && FOLLOW_FORKS) {
		__u8 one = 1;
		if (bpf_map_update_elem(&WATCH, &child_tgid, &one, BPF_ANY))
			stat_inc(OBS_STAT_WATCH_FULL);
	}
	/* Over half full, the reader is behind: send the thread without its
	 * stack rather than lose records (its creation site is then unknown). */
	if ((clone_flags & CLONE_THREAD_) &&
	    bpf_ringbuf_query(&EVENTS, BPF_RB_AVAIL_DATA) <
		    bpf_ringbuf_query(&EVENTS, BPF_RB_RING_SIZE) / 2) {
		struct obs_task_new_stack *b =
			rec_reserve(sizeof(*b), OBS_REC_TASK_NEW_STACK, tgid, (__u32)id);
		if (b) {
			task_new_fill(&b->t, task, clone_flags, (__u32)id, child_tgid);
			clone_stack(b);
			stat_inc(OBS_STAT_RECORDS);
			bpf_ringbuf_submit(b, stack_wakeup(w));
			return 0;
		}
		/* no room for the stack: the thread still gets its small record */
	}
	struct obs_task_new *r = rec_reserve(sizeof(*r), OBS_REC_TASK_NEW, tgid, (__u32)id);
	if (!r)
		return 0;
	task_new_fill(r, task, clone_flags, (__u32)id, child_tgid);
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
static __always_inline void exited_remember(struct task_struct *t, __u32 tgid, __u32 tid)
{
#if defined(__TARGET_ARCH_x86)
	if (!PT_TID_OFF)
		return;
	struct obs_exited e = { .pthread = BPF_CORE_READ(t, thread.fsbase), .tgid = tgid };
	if (e.pthread && bpf_map_update_elem(&EXITED, &tid, &e, BPF_ANY))
		stat_inc(OBS_STAT_EXITED_FULL);
#endif
}

struct js_ctx {
	__u32 tgid;
};

static long join_state_one(struct bpf_map *map, __u32 *tid, struct obs_exited *e,
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
	bpf_map_delete_elem(map, tid);
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

/* The exiting task is always current. */
static __always_inline int task_exit(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!watched(tgid))
		return 0;
	/* a delete takes the bucket lock even for a missing key; a lookup
	 * does not, and a thread rarely exits inside a wait */
	if (bpf_map_lookup_elem(&WAITS, &tid))
		bpf_map_delete_elem(&WAITS, &tid);
	if (bpf_map_lookup_elem(&EPOLL, &tid))
		bpf_map_delete_elem(&EPOLL, &tid);
	if (DEEP)
		exit_held(tgid, tid);
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	/* do_exit() decremented signal->live before the tracepoint */
	__u32 group_dead = BPF_CORE_READ(t, signal, live.counter) == 0;
	if (group_dead && FOLLOW_FORKS)
		bpf_map_delete_elem(&WATCH, &tgid);
	struct obs_task_exit *r = rec_reserve(sizeof(*r), OBS_REC_TASK_EXIT, tgid, tid);
	if (!r)
		return 0;
	r->exit_code = BPF_CORE_READ(t, exit_code);
	r->group_dead = group_dead;
	r->group_exit = (BPF_CORE_READ(t, signal, flags) & SIGNAL_GROUP_EXIT_) != 0;
	if (!r->group_exit && tid != tgid)
		exited_remember(t, tgid, tid);
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
	return task_new(task, clone_flags);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(btf_process_exit)
{
	return task_exit();
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
	return task_new((struct task_struct *)ctx[0], ctx[1]);
}

SEC("raw_tp/sched_process_exit")
int raw_process_exit(__u64 *ctx)
{
	return task_exit();
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
	return task_exit();
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

/* ------------------------------------------------------------------ */
/* `observer daemon`: new programs a rule may select, forks of watched  */
/* processes. Attached by the daemon only; tp_btf only (without it the  */
/* daemon falls back to the process events connector).                 */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} SPAWNS SEC(".maps");

/* Names some rule's comm key has (the daemon fills it). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OBS_MAX_RULE_COMMS);
	__type(key, struct obs_comm);
	__type(value, __u8);
} RULE_COMMS SEC(".maps");

/* [0]: enum obs_spawn_mode. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} SPAWN_CFG SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OBS_SPAWN_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} SPAWN_STATS SEC(".maps");

/* Processes whose exec or rename note is on its way: their forks are sent
 * too until the daemon has decided on them (it deletes the entry once it
 * watches the process, or not), so a fork right after exec is not lost. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u8);
} SPAWN_PENDING SEC(".maps");

static __always_inline void spawn_pending(__u32 tgid)
{
	__u8 one = 1;
	bpf_map_update_elem(&SPAWN_PENDING, &tgid, &one, BPF_ANY);
}

/* argv[0] at exec (too big for the stack next to the rest). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, char[OBS_ARGV0_LEN]);
} ARGV0_SCRATCH SEC(".maps");

static __always_inline void spawn_stat(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&SPAWN_STATS, &idx);
	if (v)
		(*v)++;
}

static __always_inline void spawn_note(__u32 kind, __u32 tgid, __u32 parent)
{
	struct obs_spawn *r = bpf_ringbuf_reserve(&SPAWNS, sizeof(*r), 0);
	if (!r) {
		spawn_stat(OBS_SPAWN_STAT_DROPS);
		return;
	}
	r->kind = kind;
	r->tgid = tgid;
	r->parent = parent;
	r->_pad = 0;
	bpf_ringbuf_submit(r, 0);
}

static __always_inline __u32 spawn_mode(void)
{
	__u32 zero = 0;
	__u32 *m = bpf_map_lookup_elem(&SPAWN_CFG, &zero);
	return m ? *m : OBS_SPAWN_OFF;
}

/* Userspace cuts a file name to 15 bytes at a character boundary: a name
 * whose 15th byte is not ASCII may be cut shorter there, so such names are
 * sent rather than guessed at. */
static __always_inline bool name_sure(const struct obs_comm *c)
{
	return (unsigned char)c->comm[OBS_COMM_LEN - 2] < 0x80;
}

static __always_inline bool rule_name(const struct obs_comm *c)
{
	return bpf_map_lookup_elem(&RULE_COMMS, c) != NULL;
}

/* argv[0] index the verifier can bound (as HI). */
static __always_inline __u32 AI(__u32 i)
{
	asm volatile("" : "+r"(i));
	return i & (OBS_ARGV0_LEN - 1);
}

/* Finds where argv[0]'s file name starts (after its last '/'). One
 * callback for the verifier, not a path per byte. */
struct argv0_scan {
	const char *a;
	__u32 n;
	__u32 base;
};

static long argv0_step(__u64 i, void *ctx)
{
	struct argv0_scan *c = ctx;
	if (i >= c->n)
		return 1;
	if (c->a[i & (OBS_ARGV0_LEN - 1)] == '/')
		c->base = i + 1;
	return 0;
}

/* Whether a rule's comm key can match the program that just started:
 * userspace compares it with the comm and with the file names of the
 * executable and of argv[0]. Never false when one of them could match. */
static __always_inline bool spawn_named(struct task_struct *t)
{
	struct obs_comm c = {};
	bpf_get_current_comm(c.comm, sizeof(c.comm));
	if (rule_name(&c))
		return true;
	struct obs_comm e = {};
	const unsigned char *name = BPF_CORE_READ(t, mm, exe_file, f_path.dentry, d_name.name);
	if (bpf_probe_read_kernel_str(e.comm, sizeof(e.comm), name) < 0)
		return true;
	if (!name_sure(&e) || rule_name(&e))
		return true;
	__u32 zero = 0;
	char *a = bpf_map_lookup_elem(&ARGV0_SCRATCH, &zero);
	if (!a)
		return true;
	__u64 arg = BPF_CORE_READ(t, mm, arg_start);
	long n = bpf_probe_read_user_str(a, OBS_ARGV0_LEN, (void *)arg);
	/* unreadable, or longer than we look at: cannot tell */
	if (n <= 0 || n >= OBS_ARGV0_LEN)
		return true;
	struct argv0_scan sc = { .a = a, .n = n, .base = 0 };
	bpf_loop(OBS_ARGV0_LEN, argv0_step, &sc, 0);
	__u32 base = sc.base;
	struct obs_comm v = {};
	for (__u32 i = 0; i < OBS_COMM_LEN - 1; i++) {
		__u32 j = base + i;
		if (j >= OBS_ARGV0_LEN)
			break;
		char ch = a[AI(j)];
		if (!ch)
			break;
		v.comm[i] = ch;
	}
	return !name_sure(&v) || rule_name(&v);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(spawn_exec, struct task_struct *p)
{
	__u32 mode = spawn_mode();
	if (mode == OBS_SPAWN_OFF)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	/* a watched process's exec is on the main ring (exec_rec) */
	if (watched(tgid))
		return 0;
	spawn_stat(OBS_SPAWN_STAT_EXECS);
	struct task_struct *t = (struct task_struct *)bpf_get_current_task_btf();
	if (mode == OBS_SPAWN_COMMS && !spawn_named(t))
		return 0;
	spawn_stat(OBS_SPAWN_STAT_SENT);
	spawn_pending(tgid);
	spawn_note(OBS_SPAWN_EXEC, tgid, 0);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(spawn_fork, struct task_struct *parent, struct task_struct *child)
{
	if (spawn_mode() == OBS_SPAWN_OFF)
		return 0;
	__u32 ptgid = parent->tgid;
	if (!watched(ptgid) && !bpf_map_lookup_elem(&SPAWN_PENDING, &ptgid))
		return 0;
	__u32 ctgid = child->tgid;
	/* threads are the main ring's business */
	if (child->pid != ctgid || ctgid == ptgid)
		return 0;
	spawn_stat(OBS_SPAWN_STAT_FORKS);
	spawn_note(OBS_SPAWN_FORK, ctgid, ptgid);
	return 0;
}

/* A main thread renamed to a name a rule has ("comm: at exec, or now"). */
SEC("tp_btf/task_rename")
int BPF_PROG(spawn_rename, struct task_struct *task, const char *comm)
{
	if (spawn_mode() == OBS_SPAWN_OFF)
		return 0;
	__u32 tgid = task->tgid;
	if (task->pid != tgid || watched(tgid))
		return 0;
	struct obs_comm c = {};
	bpf_probe_read_kernel_str(c.comm, sizeof(c.comm), comm);
	if (!rule_name(&c))
		return 0;
	spawn_pending(tgid);
	spawn_note(OBS_SPAWN_RENAME, tgid, 0);
	return 0;
}

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
