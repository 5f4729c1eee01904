// SPDX-License-Identifier: GPL-2.0
/* Do-nothing programs on the same hooks as observer.bpf.c: the baseline the
 * benchmarks compare the observer's per-syscall cost against. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/sys_enter")
int BPF_PROG(bare_sys_enter, struct pt_regs *regs, long id)
{
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(bare_sys_exit, struct pt_regs *regs, long ret)
{
	return 0;
}

SEC("raw_tp/sys_enter")
int bare_raw_sys_enter(void *ctx)
{
	return 0;
}

SEC("raw_tp/sys_exit")
int bare_raw_sys_exit(void *ctx)
{
	return 0;
}
