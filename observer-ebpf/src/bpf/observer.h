/* SPDX-License-Identifier: (GPL-2.0-only OR MIT) */
/*
 * The one definition of every record and map value shared by the BPF
 * programs (observer.bpf.c) and userspace (Rust types are generated from
 * this file by bindgen in observer-ebpf/build.rs). Fixed-width types only;
 * every struct is padded by hand so that C and Rust agree on the layout.
 *
 * Records in the ring buffer are tagged (struct obs_hdr first, like
 * retsnoop's records); the per-thread wait table and the per-lock
 * aggregates are plain hash maps that userspace reads.
 */
#ifndef OBSERVER_H
#define OBSERVER_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define OBS_COMM_LEN 16
#define OBS_PATH_LEN 128
/* Bytes of target memory copied around a futex word at wait start:
 * from OBS_WORDS_BEFORE bytes below the (8-aligned) word to above it.
 * Covers pthread_mutex_t (__owner +8, __kind +16), pthread_rwlock_t
 * (__cur_writer at +12/+16 from the two futex words) and sem_t. */
#define OBS_WORDS_LEN 64
#define OBS_WORDS_BEFORE 24

/* futex(2) ops (uapi/linux/futex.h; #defines are not in BTF). */
#define OBS_FUTEX_WAIT 0
#define OBS_FUTEX_WAKE 1
#define OBS_FUTEX_LOCK_PI 6
#define OBS_FUTEX_UNLOCK_PI 7
#define OBS_FUTEX_WAIT_BITSET 9
#define OBS_FUTEX_WAIT_REQUEUE_PI 11
#define OBS_FUTEX_LOCK_PI2 13
#define OBS_FUTEX_PRIVATE_FLAG 128
#define OBS_FUTEX_CLOCK_REALTIME 256
#define OBS_FUTEX_CMD_MASK 0x7f
/* Synthetic op values for the futex2 syscalls (not futex(2) ops). */
#define OBS_OP_WAITV 0x10000    /* futex_waitv: uaddr/val of waiters[0] */
#define OBS_OP_FUTEX2_WAIT 0x20000 /* futex_wait (6.7+) */

/* enum obs_rec_kind: the tag of every ring buffer record. */
enum obs_rec_kind {
	OBS_REC_TASK_NEW = 1,
	OBS_REC_TASK_EXIT = 2,
	OBS_REC_TASK_RENAME = 3,
	OBS_REC_EXEC = 4,
	OBS_REC_WAIT_DONE = 5,
	OBS_REC_PTHREAD = 6,
	OBS_REC_LOCK_EDGE = 7,     /* deep tier: a lock-order edge seen for the first time */
	OBS_REC_EXIT_HELD = 8,     /* deep tier: a thread exited holding locks */
	OBS_REC_TASK_NEW_STACK = 9, /* obs_task_new_stack: a thread with its creator's stack */
	OBS_REC_JOIN_WAIT = 10,    /* a shared futex wait that may be a join */
	OBS_REC_JOIN_STATE = 11,   /* glibc's descriptor of an exited thread, read at exit_group */
	OBS_REC_LOOP_GAP = 12,     /* obs_loop_gap: a thread stayed out of epoll_wait too long */
};



/* obs_pthread.op: a libc thread call seen by a uprobe. */
enum obs_pthread_op {
	OBS_PT_JOIN = 1,    /* pthread_join (entry), or a try/timed join that succeeded */
	OBS_PT_DETACH = 2,  /* pthread_detach (entry) */
	OBS_PT_EXIT = 3,    /* pthread_exit (entry) */
};

/* obs_wait.flags */
#define OBS_WAIT_WORDS_OK 1     /* words[] holds target memory */
#define OBS_WAIT_REGS_OK 2      /* ip/sp/bp hold the user registers */
#define OBS_WAIT_SCHED 4        /* seen going to sleep (sched_switch): start_ns is the sleep */

/* obs_hdr.flags */
#define OBS_F_URGENT 1          /* submitted with a wakeup */

/* Indices of the per-CPU STATS counters. */
enum obs_stat {
	OBS_STAT_RB_DROPS = 0,     /* ring buffer full: record lost */
	OBS_STAT_WAITS_FULL = 1,   /* wait table full (or no task storage): a wait not tracked */
	OBS_STAT_AGG_FULL = 2,     /* aggregate table full: a wait not counted */
	OBS_STAT_WATCH_FULL = 3,   /* watch set full: a forked child not followed */
	OBS_STAT_RECORDS = 4,      /* records submitted */
	OBS_STAT_CREATING_FULL = 5, /* pthread_create in flight table full */
	OBS_STAT_HELD_FULL = 6,    /* more locks held than OBS_MAX_HELD */
	OBS_STAT_ORDER_FULL = 7,   /* lock-order table full: an edge not tracked */
	OBS_STAT_LSTATS_FULL = 8,  /* per-lock statistics table full */
	OBS_STAT_EXITED_FULL = 9,  /* exited-thread table full: its join state not read */
	OBS_STAT_MAX = 10,
};

/* Value of WAITS (key: __u32 tid): the wait a thread is in right now, or
 * (start_ns 0) none: the entry stays from its first wait to its exit. */
struct obs_wait {
	__u64 uaddr;      /* futex word (waitv: waiters[0].uaddr) */
	__u64 uaddr2;     /* WAIT_REQUEUE_PI: the PI mutex; waitv: the array */
	__u64 start_ns;   /* bpf_ktime_get_ns() at syscall entry; 0: wait ended */
	__u64 ip;         /* user registers at the syscall */
	__u64 sp;
	__u64 bp;
	__u64 words_addr; /* target address of words[0] */
	__u32 tgid;
	__u32 op;         /* futex(2) op, or OBS_OP_* */
	__u32 val;        /* expected futex value */
	__u32 flags;      /* OBS_WAIT_* */
	__u32 nr;         /* waitv: number of futexes; else 1 */
	__u32 _pad;
	__u8 words[OBS_WORDS_LEN];
};

/* Key and value of AGG: completed waits that really slept, per lock. */
struct obs_agg_key {
	__u64 uaddr;
	__u32 tgid;
	__u32 _pad;
};

struct obs_agg {
	__u64 count;
	__u64 total_ns;
	__u64 max_ns;
	__u32 op;         /* op of the last wait counted */
	__u32 _pad;
};

struct obs_hdr {
	__u32 kind;       /* enum obs_rec_kind */
	__u32 tgid;
	__u32 tid;
	__u32 flags;      /* OBS_F_* */
	__u64 ts_ns;
};

/* A task was created by hdr.tid (the creator runs the tracepoint). */
struct obs_task_new {
	struct obs_hdr hdr;
	__u64 clone_flags;
	__u64 child_tid_addr; /* CLONE_CHILD_CLEARTID address: pthread_join waits on it */
	__u32 child_tid;
	__u32 child_tgid;
	char comm[OBS_COMM_LEN];       /* creator */
	char child_comm[OBS_COMM_LEN];
	/* The new thread's pthread_t: its TLS base (x86_64 glibc), or what the
	 * pthread_create uprobe saw; 0 if unknown. */
	__u64 pthread;
	__u64 create_site;    /* pthread_create uprobe: return address of the call */
	__u32 detached;       /* created with PTHREAD_CREATE_DETACHED */
	/* The creator's stack matched this signature (obs_stack_sig.id) of
	 * the process: its frames are the ones that signature was made from,
	 * and no copy is sent. 0: none. */
	__u32 stack_sig;
};

/* Bytes of the creating thread's user stack copied at clone: enough for
 * libc's pthread_create/clone frames and the caller's first frames (see
 * BENCHMARKS.md for the size chosen against unwinding success and cost). */
#define OBS_CLONE_STACK 2048

/* A thread created with CLONE_THREAD, with the creator's user registers at
 * the clone syscall and the top of its stack: userspace unwinds it to the
 * creation stack (as perf's DWARF call graphs do). */
struct obs_task_new_stack {
	struct obs_task_new t;
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u32 stack_len;      /* bytes valid in stack[] (copied from sp) */
	__u32 _pad;
	__u8 stack[OBS_CLONE_STACK];
};

/* Value of STACK_SIG (key: __u32 tgid): the registers and stack words
 * userspace's last unwinding of a creation stack of the process depended on
 * (what it read, less saved registers it never used). A clone whose
 * registers and words match unwinds to the same frames, so it is sent
 * without a stack copy: a thread storm from one call site pays one read of
 * the words, not a 2.2 KiB record per thread. */
#define OBS_SIG_WORDS 24
#define OBS_SIG_SPAN OBS_CLONE_STACK /* the words lie within the copy a clone would send */
#define OBS_SIG_ANY_BP 1
struct obs_stack_sig {
	__u64 ip;
	__u64 sp;
	__u64 bp;
	__u32 id;             /* nonzero, unique per observer; names it in obs_task_new */
	__u32 n;              /* words used */
	__u32 span;           /* bytes read from sp: every off[i] + 8 <= span <= OBS_SIG_SPAN */
	__u32 flags;          /* OBS_SIG_ANY_BP: the unwinding does not depend on bp */
	__u32 woke;           /* BPF: a clone missed it and woke the reader (once per signature) */
	__u32 tgid;           /* the process it is of (checked against the key) */
	__u16 off[OBS_SIG_WORDS]; /* byte offsets above sp, multiples of 8 */
	__u64 val[OBS_SIG_WORDS];
};

/* A futex wait that would sleep on a shared (not PRIVATE) word: glibc's
 * pthread_join waits so on the joined thread's CLONE_CHILD_CLEARTID word
 * with val = its TID. Userspace matches it against the clone records. */
struct obs_join_wait {
	struct obs_hdr hdr;
	__u64 uaddr;
	__u32 val;
	__u32 _pad;
};

/* Key of EXITED (value: __u32 tid): the descriptor of a thread that ended
 * by itself (not by the process's exit), whose join state is read at
 * exit_group. Keyed by descriptor: glibc gives a joined or detached
 * thread's descriptor to a later thread, whose exit overwrites the entry,
 * so a process that churns threads holds one entry per descriptor, not one
 * per thread it ever ended. */
struct obs_exited {
	__u64 pthread;
	__u32 tgid;
	__u32 _pad;
};

/* obs_join_state.flags */
#define OBS_JS_READ 1         /* tid_word and joinid hold target memory */

/* glibc's descriptor of an exited thread, read at the process's exit_group
 * (hdr.tid: the exited thread; hdr is stamped by the exiting thread's CPU). */
struct obs_join_state {
	struct obs_hdr hdr;
	__u64 pthread;
	__u64 joinid;         /* struct pthread.joinid: pd = detached, other = its joiner */
	__s32 tid_word;       /* struct pthread.tid: 0 exited, -1 joined, else reused */
	__u32 flags;          /* OBS_JS_* */
};

/* Value of CREATING (key: creator tid): a pthread_create in progress. */
struct obs_creating {
	__u64 site;
	__u64 thread_out;     /* pthread_t * argument */
	__u32 detached;
	__u32 _pad;
};

struct obs_pthread {
	struct obs_hdr hdr;
	__u32 op;             /* enum obs_pthread_op */
	__u32 _pad;
	__u64 pthread;        /* JOIN, DETACH: the target thread's pthread_t */
	__u64 arg;            /* EXIT: the retval pointer */
	__u64 site;           /* return address of the call */
};

struct obs_task_exit {
	struct obs_hdr hdr;
	__s32 exit_code;  /* task->exit_code: status << 8 | signal */
	__u32 group_dead; /* last thread of the process */
	char comm[OBS_COMM_LEN];
	__u32 group_exit; /* killed by the process's exit (exit_group, fatal signal) */
	__u32 _pad;
};

/* hdr.tid is the renamed thread, which need not be the writer. */
struct obs_task_rename {
	struct obs_hdr hdr;
	char oldcomm[OBS_COMM_LEN];
	char newcomm[OBS_COMM_LEN];
};

struct obs_exec {
	struct obs_hdr hdr;
	__u32 old_tid;    /* a non-leader thread that exec'd takes the TGID */
	/* The new executable (device in the kernel's encoding, inode) and where
	 * its code was mapped (mm->start_code, end_code): enough to symbolize
	 * its addresses when the process is gone before userspace looks. */
	__u32 exe_dev;
	__u64 exe_ino;
	__u64 start_code;
	__u64 end_code;
	char comm[OBS_COMM_LEN];
	char filename[OBS_PATH_LEN];
};

/* A wait ended with an outcome userspace must see: EDEADLK, EOWNERDEAD,
 * or longer than LONG_WAIT_NS. */
struct obs_wait_done {
	struct obs_hdr hdr;
	struct obs_wait wait;
	__s64 ret;
	__u64 end_ns;
};

/* Event loops: per thread, its last entry into and return from
 * epoll_wait/epoll_pwait/epoll_pwait2 (map EPOLL, key tid). A thread whose
 * exit_ns > enter_ns is outside its selector since exit_ns. */
struct obs_epoll {
	__u64 enter_ns;
	__u64 exit_ns;
	__u64 exit_delay; /* sched_info.run_delay at exit_ns */
	__u64 exit_cpu;   /* se.sum_exec_runtime at exit_ns */
	__u32 tgid;
	__u32 _pad;
};

/* A thread came back to epoll_wait LOOP_BLOCKED_NS or more after it last
 * returned from it (an event loop that ran that long without polling),
 * not counting the time it waited for a CPU (a busy machine is not a
 * blocked loop). */
struct obs_loop_gap {
	struct obs_hdr hdr;
	__u64 start_ns; /* return from the previous epoll_wait */
	__u64 end_ns;   /* entry into the next one */
	__u64 runq_ns;  /* of which runnable, waiting for a CPU */
};

/* Deep tier (uprobes on lock functions). */

/* What kind of lock an acquire/release is about. */
enum obs_lock_kind {
	OBS_LK_MUTEX = 1,
	OBS_LK_RWLOCK_READ = 2,
	OBS_LK_RWLOCK_WRITE = 3,
	OBS_LK_SEM = 4,
	OBS_LK_PYLOCK = 5,  /* CPython PyThread_type_lock (3.11/3.12: a sem_t) */
};

/* obs_acquire.flags */
/* uprobe_multi links (one per library and direction) run one program that
 * dispatches on the attach cookie: class << 16 | lock kind << 8 | OBS_ACQ_*. */
#define OBS_UP_BARE 0           /* do nothing (benchmark baseline) */
#define OBS_UP_ACQ 1            /* lock call entry: acquire of arg 1 */
#define OBS_UP_REL 2            /* unlock / post: release of arg 1 */
#define OBS_UP_DESTROY 3        /* lock destroyed: new generation */
#define OBS_UP_COND_WAIT 4      /* cond wait: releases then reacquires arg 2 */
#define OBS_UP_PY_ACQ 5         /* PyThread_acquire_lock_timed(lock, us, intr) */
#define OBS_UP_PT_CREATE 6      /* pthread_create */
#define OBS_UP_PT_JOIN 7
#define OBS_UP_PT_DETACH 8
#define OBS_UP_PT_EXIT 9
#define OBS_UP_PT_TRYJOIN 10    /* tryjoin / timedjoin entry */
#define OBS_UP_LOCK 11          /* blocking lock call entry: acquire of arg 1, taken at
				 * entry (no return probe: it succeeds or never returns) */
/* return classes */
#define OBS_URP_RET0 16         /* lock calls: 0 (or EOWNERDEAD) is acquired */
#define OBS_URP_COND 17         /* cond wait: the mutex is held again */
#define OBS_URP_PY 18           /* PyThread: 1 is acquired */
#define OBS_URP_TRYJOIN 19      /* tryjoin: 0 is joined */
#define OBS_ACQ_TRY 1        /* trylock: adds no edge into the tried lock */
#define OBS_ACQ_CONTENDED 2  /* the thread entered a futex wait during the call */

/* Value of PENDING (key: tid): a lock call between entry and return. */
struct obs_acquire {
	__u64 lock;
	__u64 start_ns;
	__u64 site;       /* return address of the lock call */
	__u32 kind;       /* enum obs_lock_kind */
	__u32 flags;      /* OBS_ACQ_* */
	__u32 depth;      /* nested lock calls inside this one (Python -> sem_wait) */
	__u32 _pad;
	/* Return addresses of the nested calls (depth 1..3): a uretprobe hides
	 * each on the stack behind the [uprobes] trampoline. */
	__u64 inner_site[3];
};

/* Why 16: lockdep allows 48, but real code nests a handful of locks; 16
 * keeps the per-thread value small and the verifier's loops short.
 * Deeper nesting is counted in OBS_STAT_HELD_FULL. */
#define OBS_MAX_HELD 16

/* obs_held_lock.flags */
#define OBS_HL_WAITING 1     /* taken at a lock call's entry; the thread sleeps in it */
#define OBS_HL_COUNTED 2     /* its contention is counted in LSTATS */

struct obs_held_lock {
	__u64 lock;       /* 0: released (a hole, dropped once at the top) */
	__u64 acquired_ns;
	__u64 site;
	__u32 gen;        /* identity generation: bumped by destroy */
	__u16 count;      /* recursive acquisitions */
	__u8 kind;
	__u8 flags;       /* OBS_HL_* */
};

#define OBS_HOLD_HIST 24     /* log2 buckets of hold time in microseconds */

/* Hold statistics of the locks a thread released last, not yet added to
 * LSTATS and HOLDERS: a thread that takes the same lock (or the same
 * nested pair: lock A, lock B, unlock B, unlock A) again and again pays no
 * shared-map update per release. A slot is added when a third lock needs
 * it or the thread exits; userspace adds what is still here when it reads
 * them. */
#define OBS_HOLD_CACHE 2
struct obs_hold_cache {
	__u64 lock;
	__u32 gen;
	__u32 kind;
	__u64 count;
	__u64 hold_total_ns;
	__u64 hold_max_ns;
	__u64 hold_hist[OBS_HOLD_HIST];
};

/* Value of HELD (key: tid): the deep tier's per-thread state. */
struct obs_held {
	__u32 n;          /* entries used in locks[], holes included */
	__u32 in_call;    /* a return-probed lock call is in progress (PENDING) */
	__u32 tgid;
	__u32 cache_next; /* the cache slot to reuse next when all are taken */
	struct obs_held_lock locks[OBS_MAX_HELD];
	struct obs_hold_cache cache[OBS_HOLD_CACHE];
};

/* Key of ORDER: lock `from` was held when `to` was acquired. */
struct obs_edge_key {
	__u64 from;
	__u64 to;
	__u32 from_gen;
	__u32 to_gen;
	__u32 tgid;
	__u32 _pad;
};

struct obs_edge {
	__u64 count;
	/* The outermost lock held at every observation of the edge (0: none):
	 * a cycle whose edges all share one gate cannot deadlock. */
	__u64 gate;
	__u8 from_read;
	__u8 to_read;
	__u8 gate_valid;  /* gate has been set once */
	__u8 _pad[5];
};

/* Key and value of LSTATS: per-lock statistics (deep tier). */
struct obs_lock_key {
	__u64 lock;
	__u32 tgid;
	__u32 gen;
};

/* acquired counts completed holds (releases), hold_* their times. */
struct obs_lock_stats {
	__u64 acquired;
	__u64 contended;
	__u64 wait_total_ns;
	__u64 wait_max_ns;
	__u64 hold_total_ns;
	__u64 hold_max_ns;
	__u64 hold_hist[OBS_HOLD_HIST];
	__u32 kind;
	__u32 _pad;
};

/* Key of OWNERS: who holds a lock now (any thread may release a semaphore). */
struct obs_owner {
	__u64 acquired_ns;
	__u64 site;
	__u32 tid;
	__u32 kind;
};

#define OBS_STACK_COPY 2048

struct obs_lock_edge {
	struct obs_hdr hdr;
	struct obs_edge_key key;
	__u64 from_site;  /* where `from` was acquired */
	__u64 to_site;    /* where `to` was acquired (this call) */
	__u64 ip;         /* user registers at the lock call's entry */
	__u64 sp;
	__u64 bp;
	__u32 from_kind;
	__u32 to_kind;
	__u32 stack_len;  /* bytes valid in stack[] (copied from sp) */
	__u32 _pad;
	__u64 gate;       /* the edge's gate at first sight (see obs_edge) */
	__u8 stack[OBS_STACK_COPY];
};

/* Key/value of HOLDERS: hold time per (lock, thread), for "top holders". */
struct obs_holder_key {
	__u64 lock;
	__u32 tgid;
	__u32 tid;
};

struct obs_holder {
	__u64 count;
	__u64 hold_total_ns;
};

struct obs_exit_held {
	struct obs_hdr hdr;
	__u32 n;
	__u32 _pad;
	struct obs_held_lock locks[OBS_MAX_HELD];
};

/* `observer daemon`: what the kernel tells it about processes it does not
 * watch yet, on a ring buffer of its own (SPAWNS). The exec path filters
 * by name so that a storm of unrelated execs never reaches userspace. */
enum obs_spawn_kind {
	OBS_SPAWN_EXEC = 1,   /* a program started that a rule may select */
	OBS_SPAWN_FORK = 2,   /* a watched process forked (parent set) */
	OBS_SPAWN_RENAME = 3, /* a main thread took a name some rule has */
};

struct obs_spawn {
	__u32 kind;       /* enum obs_spawn_kind */
	__u32 tgid;
	__u32 parent;
	__u32 _pad;
};

/* SPAWN_CFG[0]: which execs are sent. */
enum obs_spawn_mode {
	OBS_SPAWN_OFF = 0,    /* none */
	OBS_SPAWN_ALL = 1,    /* every exec (a rule has no comm key) */
	OBS_SPAWN_COMMS = 2,  /* execs whose comm, executable or argv[0] file
			       * name (15 bytes) is in RULE_COMMS */
};

/* RULE_COMMS key: a name as the kernel stores comm, NUL-padded. */
struct obs_comm {
	char comm[OBS_COMM_LEN];
};

#define OBS_MAX_RULE_COMMS 1024
/* argv[0] bytes read at exec to find its file name. */
#define OBS_ARGV0_LEN 256

/* Indices of the per-CPU SPAWN_STATS counters. */
enum obs_spawn_stat {
	OBS_SPAWN_STAT_EXECS = 0,   /* execs of unwatched processes seen */
	OBS_SPAWN_STAT_SENT = 1,    /* exec notes sent */
	OBS_SPAWN_STAT_FORKS = 2,   /* fork notes sent */
	OBS_SPAWN_STAT_DROPS = 3,   /* SPAWNS full: a note lost */
	OBS_SPAWN_STAT_MAX = 4,
};

#endif /* OBSERVER_H */
