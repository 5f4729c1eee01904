/*
 * Benchmark workload for `cargo xtask bench deep` (philosophers): the
 * classic lock-order test of race detectors. Five philosophers run at once;
 * philosopher i takes fork i, then fork (i+1) % 5, eats (nothing), puts
 * both down, ROUNDS times. All five can hold their first fork at the same
 * moment, so it can deadlock: it does when a philosopher is descheduled
 * between its two forks, so the longer it runs, the likelier. Unobserved,
 * 1000 rounds take well under a scheduler tick here and rarely deadlock;
 * an observer that slows lock calls down makes it run longer and deadlock
 * more. Every run has the 5-lock order inversion fork0 -> ... -> fork0.
 *
 *   philosophers_rounds [ROUNDS]     (default 1000)
 *
 * Prints "lock forks[i] ADDR" for each fork; when every philosopher has
 * eaten ROUNDS times, "elapsed_ns N" (from the start barrier to the last
 * join) and "done", and exits 0. A watchdog thread that sees no round end
 * for 2 s prints "deadlocked" and exits 4 (an unobserved run then needs no
 * long timeout). The parent's death kills it (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define N 5

pthread_mutex_t forks[N] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                            PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};
static pthread_barrier_t start;
static long rounds = 1000;
/* rounds eaten, one cache line per philosopher: the watchdog reads them */
static struct {
	long n;
	char pad[56];
} eaten[N];

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *watchdog(void *arg)
{
	(void)arg;
	long last = -1;
	int still = 0;
	for (;;) {
		usleep(100000);
		long sum = 0;
		for (int i = 0; i < N; i++)
			sum += __atomic_load_n(&eaten[i].n, __ATOMIC_RELAXED);
		still = sum == last ? still + 1 : 0;
		last = sum;
		if (still >= 20) {
			printf("deadlocked\n");
			_exit(4);
		}
	}
	return NULL;
}

static void *philosopher(void *arg)
{
	long i = (long)arg;
	pthread_barrier_wait(&start);
	for (long r = 0; r < rounds; r++) {
		pthread_mutex_lock(&forks[i]);
		pthread_mutex_lock(&forks[(i + 1) % N]);
		pthread_mutex_unlock(&forks[(i + 1) % N]);
		pthread_mutex_unlock(&forks[i]);
		__atomic_store_n(&eaten[i].n, r + 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && (rounds = atol(argv[1])) < 1) {
		fprintf(stderr, "philosophers_rounds: ROUNDS must be >= 1\n");
		return 2;
	}
	for (int i = 0; i < N; i++)
		printf("lock forks[%d] %p\n", i, (void *)&forks[i]);
	pthread_barrier_init(&start, NULL, N + 1);
	pthread_t t[N], w;
	if (pthread_create(&w, NULL, watchdog, NULL))
		abort();
	for (long i = 0; i < N; i++)
		if (pthread_create(&t[i], NULL, philosopher, (void *)i))
			abort();
	pthread_barrier_wait(&start);
	uint64_t t0 = now_ns();
	for (int i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	printf("elapsed_ns %llu\n", (unsigned long long)(now_ns() - t0));
	printf("done\n");
	return 0;
}
