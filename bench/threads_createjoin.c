/*
 * Benchmark workload for `cargo xtask bench deep` (threads): thread
 * lifecycle cost, pthread_create + pthread_join of short threads one by one.
 *
 *   threads_createjoin [CPU]
 *
 * CPU, if given, pins the process (and so every thread it creates) to that
 * CPU.
 *
 * Protocol (stdin/stdout, line by line): prints "ready PID" once set up,
 * then waits for a go: for each line "N" read from stdin (0 or no number:
 * 10000), creates and joins N threads one after the other (each does
 * nothing but return) and prints "WALL CPU": the elapsed CLOCK_MONOTONIC
 * time of the whole round and the process CPU time (all threads, user +
 * system) it used, both in ns. Exits 0 at end of input; the parent's death
 * kills it (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static volatile uint64_t ran;

static uint64_t now_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *short_thread(void *arg)
{
	(void)arg;
	__atomic_fetch_add(&ran, 1, __ATOMIC_RELAXED);
	return NULL;
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
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready %d\n", (int)getpid());
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		uint64_t n = strtoull(line, NULL, 10);
		if (n == 0)
			n = 10000;
		uint64_t c0 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
		uint64_t w0 = now_ns(CLOCK_MONOTONIC);
		for (uint64_t i = 0; i < n; i++) {
			pthread_t t;
			int e = pthread_create(&t, NULL, short_thread, NULL);
			if (e != 0) {
				fprintf(stderr, "pthread_create: %s\n", strerror(e));
				return 1;
			}
			pthread_join(t, NULL);
		}
		uint64_t w1 = now_ns(CLOCK_MONOTONIC);
		uint64_t c1 = now_ns(CLOCK_PROCESS_CPUTIME_ID);
		printf("%llu %llu\n", (unsigned long long)(w1 - w0),
		       (unsigned long long)(c1 - c0));
	}
	return 0;
}
