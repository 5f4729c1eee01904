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

/* The sections, in dependency order (one translation unit). */
#include "observer/common.h"
#include "observer/futex.c"
#include "observer/epoll.c"
#include "observer/syscalls.c"
#include "observer/sched.c"
#include "observer/lifecycle.c"
#include "observer/spawn.c"
#include "observer/deep.c"
