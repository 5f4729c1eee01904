// SPDX-License-Identifier: GPL-2.0
/* observer: `observer daemon`: exec and fork notes filtered by rule names.
 * Included by observer.bpf.c after common.h. */

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
