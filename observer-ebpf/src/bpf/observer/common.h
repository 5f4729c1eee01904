// SPDX-License-Identifier: GPL-2.0
/*
 * observer: what every section shares: register access, settings set
 * before load, the maps, record and statistics helpers. Included once,
 * by observer.bpf.c (one translation unit, one object).
 */
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

/* tid -> the futex wait the thread is in now (start_ns 0: none). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct obs_wait);
} WAITS SEC(".maps");

/* Threads (current, at the time) that got an entry in WAITS or EPOLL:
 * their exit frees it. Task storage: the exit of a thread that never
 * waited, the usual short thread, costs a pointer test instead of two
 * hash lookups (~100 ns a thread, measured). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
} TABLED SEC(".maps");

/* Before current gets an entry keyed by its TID: false if it cannot be
 * marked (the entry would then never be freed: the caller drops it). */
static __always_inline bool tabled_mark(void)
{
	return bpf_task_storage_get(&TABLED, bpf_get_current_task_btf(), 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE) != NULL;
}

/* (tgid, uaddr) -> completed waits that slept. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct obs_agg_key);
	__type(value, struct obs_agg);
} AGG SEC(".maps");

/* tgid -> its creation-stack signature (userspace writes it; see
 * stack_sig_match for how a program reads it while it is replaced). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct obs_stack_sig);
} STACK_SIG SEC(".maps");

/* The copy of a signature being checked. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct obs_stack_sig);
} SIG_COPY SEC(".maps");

/* The stack words a signature is checked against (too big for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[OBS_SIG_SPAN]);
} SIG_SCRATCH SEC(".maps");

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

/* (descriptor, tgid) -> tid of a thread that ended by itself; its join
 * state is read at exit_group. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct obs_exited);
	__type(value, __u32);
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
