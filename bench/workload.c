/*
 * Benchmark workload driven by `cargo xtask bench` over a pipe.
 *
 *   workload MODE [CPU]
 *
 * MODE is one of
 *   mutex  uncontended pthread_mutex_lock + unlock (one op = one pair), with a
 *          second, idle thread: glibc >= 2.35 skips the atomic instructions
 *          while a process has only one thread, which no real user of
 *          mutexes is
 *   wake   futex(FUTEX_WAKE_PRIVATE) with no waiters (returns 0 at once)
 *   wait   futex(FUTEX_WAIT_PRIVATE) with a wrong expected value (EAGAIN at once)
 *   getppid  getppid(2): a syscall no hook of ours wants (what every syscall
 *          on the host pays for the observer's syscall hooks)
 *   idle   do nothing: a stand-in process for the observer to watch
 *   pingpong  two threads hand a token back and forth through a futex (one op
 *          = one round trip: two sleeps, two wake-ups, two context switches
 *          when pinned to one CPU); CPU time is the whole process's, as
 *          both threads and the switches between them are the cost
 * CPU, if given, pins the process to that CPU (less migration noise).
 *
 * Protocol: prints "ready" once set up, then for each line "N" read from
 * stdin runs N ops and prints "CPU WALL": the mean ns per op in thread CPU
 * time and in CLOCK_MONOTONIC time. CPU time leaves out the time the thread
 * was preempted, which on a shared machine is most of the noise; syscall
 * and BPF time is kernel time of this thread, so it is counted. Exits 0 at
 * end of input, so the process never outlives the driver (idle mode too).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mtx = PTHREAD_MUTEX_INITIALIZER;
static uint32_t word; /* the futex word: stays 0, nobody waits on it */

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static long futex(uint32_t *uaddr, int op, uint32_t val)
{
	return syscall(SYS_futex, uaddr, op, val, NULL, NULL, 0);
}

static void *idle_thread(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static void die(const char *what)
{
	fprintf(stderr, "workload: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void run_mutex(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		pthread_mutex_lock(&mtx);
		pthread_mutex_unlock(&mtx);
	}
}

static void run_wake(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		futex(&word, FUTEX_WAKE_PRIVATE, 1);
}

static void run_wait(uint64_t n)
{
	/* word is 0, we expect 1: the kernel compares and returns EAGAIN. */
	for (uint64_t i = 0; i < n; i++)
		futex(&word, FUTEX_WAIT_PRIVATE, 1);
}

/* pingpong: turn 0 is the main thread's, 1 the partner's. */
static uint32_t turn;

static void pass_to(uint32_t to)
{
	__atomic_store_n(&turn, to, __ATOMIC_SEQ_CST);
	futex(&turn, FUTEX_WAKE_PRIVATE, 1);
	while (__atomic_load_n(&turn, __ATOMIC_SEQ_CST) == to)
		futex(&turn, FUTEX_WAIT_PRIVATE, to);
}

static void *partner_thread(void *arg)
{
	(void)arg;
	for (;;) {
		while (__atomic_load_n(&turn, __ATOMIC_SEQ_CST) == 0)
			futex(&turn, FUTEX_WAIT_PRIVATE, 0);
		pass_to(0);
	}
	return NULL;
}

static void run_pingpong(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		pass_to(1);
}

static void run_getppid(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++)
		syscall(SYS_getppid);
}

/* One call outside the timed loop, so a broken setup fails loudly. */
static void check(const char *mode)
{
	if (!strcmp(mode, "wake") && futex(&word, FUTEX_WAKE_PRIVATE, 1) != 0)
		die("FUTEX_WAKE_PRIVATE");
	if (!strcmp(mode, "wait")) {
		errno = 0;
		if (futex(&word, FUTEX_WAIT_PRIVATE, 1) != -1 || errno != EAGAIN)
			die("FUTEX_WAIT_PRIVATE did not return EAGAIN");
	}
}

int main(int argc, char **argv)
{
	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: workload mutex|wake|wait|getppid|pingpong|idle [CPU]\n");
		return 2;
	}
	const char *mode = argv[1];
	void (*run)(uint64_t);
	if (!strcmp(mode, "mutex"))
		run = run_mutex;
	else if (!strcmp(mode, "wake"))
		run = run_wake;
	else if (!strcmp(mode, "wait"))
		run = run_wait;
	else if (!strcmp(mode, "getppid"))
		run = run_getppid;
	else if (!strcmp(mode, "pingpong"))
		run = run_pingpong;
	else if (!strcmp(mode, "idle"))
		run = NULL;
	else {
		fprintf(stderr, "workload: unknown mode %s\n", mode);
		return 2;
	}
	if (argc == 3) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(atoi(argv[2]), &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			die("sched_setaffinity");
	}
	if (run == run_mutex || run == run_pingpong) {
		pthread_t t;
		if (pthread_create(&t, NULL, run == run_mutex ? idle_thread : partner_thread, NULL))
			die("pthread_create");
	}
	clockid_t cpu_clock = run == run_pingpong ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_THREAD_CPUTIME_ID;
	check(mode);
	printf("ready\n");
	fflush(stdout);

	char line[64];
	while (fgets(line, sizeof(line), stdin)) {
		uint64_t n = strtoull(line, NULL, 10);
		if (!run || n == 0) {
			printf("0 0\n");
			fflush(stdout);
			continue;
		}
		uint64_t w0 = now_ns(CLOCK_MONOTONIC);
		uint64_t c0 = now_ns(cpu_clock);
		run(n);
		uint64_t c1 = now_ns(cpu_clock);
		uint64_t w1 = now_ns(CLOCK_MONOTONIC);
		printf("%.3f %.3f\n", (double)(c1 - c0) / (double)n, (double)(w1 - w0) / (double)n);
		fflush(stdout);
	}
	return 0;
}
