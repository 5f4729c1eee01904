/*
 * Benchmark workload for `cargo xtask bench deep` (lockpair): uncontended
 * pthread_mutex_lock + pthread_mutex_unlock pairs, the call the deep tier
 * (`observer --uprobes`) puts two uprobe hits on (lock entry, unlock
 * entry).
 *
 *   deep_lockpair [CPU]
 *
 * CPU, if given, pins the process to that CPU. A second, idle thread keeps
 * glibc on its multi-threaded path (glibc >= 2.35 skips the atomic
 * instructions while a process has a single thread, which no real user of
 * mutexes is).
 *
 * Protocol (stdin/stdout, line by line): prints "ready PID" once set up,
 * then waits for a go: for each line "N" read from stdin, runs N pairs and
 * prints "CPU WALL", the mean ns per pair in thread CPU time and in
 * CLOCK_MONOTONIC time. CPU time leaves out time the thread was preempted
 * (most of the noise on a shared machine); uprobe and BPF time is kernel
 * time of this thread, so it is counted. Exits 0 at end of input; the
 * parent's death kills it (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

pthread_mutex_t hot_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile uint64_t counter;

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *idle_thread(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

__attribute__((noinline)) static void pairs(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		pthread_mutex_lock(&hot_lock);
		counter++;
		pthread_mutex_unlock(&hot_lock);
	}
}

int main(int argc, char **argv)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (argc > 1) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(atoi(argv[1]), &set);
		if (sched_setaffinity(0, sizeof set, &set) != 0) {
			perror("sched_setaffinity");
			return 1;
		}
	}
	pthread_t idle;
	if (pthread_create(&idle, NULL, idle_thread, NULL) != 0) {
		perror("pthread_create");
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready %d\n", (int)getpid());
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		uint64_t n = strtoull(line, NULL, 10);
		if (n == 0)
			n = 20000;
		uint64_t c0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
		uint64_t w0 = now_ns(CLOCK_MONOTONIC);
		pairs(n);
		uint64_t w1 = now_ns(CLOCK_MONOTONIC);
		uint64_t c1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
		printf("%.3f %.3f\n", (double)(c1 - c0) / n, (double)(w1 - w0) / n);
	}
	return 0;
}
