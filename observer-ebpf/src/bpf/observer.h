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

/* obs_hdr.flags */
#define OBS_F_URGENT 1          /* submitted with a wakeup */

/* Indices of the per-CPU STATS counters. */
enum obs_stat {
	OBS_STAT_RB_DROPS = 0,     /* ring buffer full: record lost */
	OBS_STAT_WAITS_FULL = 1,   /* wait table full: a wait not tracked */
	OBS_STAT_AGG_FULL = 2,     /* aggregate table full: a wait not counted */
	OBS_STAT_WATCH_FULL = 3,   /* watch set full: a forked child not followed */
	OBS_STAT_RECORDS = 4,      /* records submitted */
	OBS_STAT_CREATING_FULL = 5, /* pthread_create in flight table full */
	OBS_STAT_MAX = 6,
};

/* Value of WAITS (key: __u32 tid): the wait a thread is in right now. */
struct obs_wait {
	__u64 uaddr;      /* futex word (waitv: waiters[0].uaddr) */
	__u64 uaddr2;     /* WAIT_REQUEUE_PI: the PI mutex; waitv: the array */
	__u64 start_ns;   /* bpf_ktime_get_ns() at syscall entry */
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
	/* From the pthread_create uprobe, when the clone came from it (else 0). */
	__u64 pthread;        /* the new thread's pthread_t */
	__u64 create_site;    /* return address of the pthread_create call */
	__u32 detached;       /* created with PTHREAD_CREATE_DETACHED */
	__u32 _pad;
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
	__u32 _pad;
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

#endif /* OBSERVER_H */
