/*
 * Benchmark workload for `cargo xtask bench deep` (philosophers): the
 * classic lock-order test of race detectors. Five philosophers run at once;
 * philosopher i takes fork i, then fork (i+1) % 5, eats (nothing), puts
 * both down, ROUNDS times. All five can hold their first fork at the same
 * moment, so it can deadlock, but the window is a few nanoseconds: an
 * observer that slows lock calls down widens it and changes the program.
 * Every run has the 5-lock order inversion fork0 -> fork1 -> ... -> fork0.
 *
 *   philosophers_rounds [ROUNDS]     (default 1000)
 *
 * Prints "lock forks[i] ADDR" for each fork, then "done" and exits 0 when
 * every philosopher has eaten ROUNDS times. The parent's death kills it
 * (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>

#define N 5

pthread_mutex_t forks[N] = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER,
                            PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER};
static pthread_barrier_t start;
static long rounds = 1000;

static void *philosopher(void *arg)
{
	long i = (long)arg;
	pthread_barrier_wait(&start);
	for (long r = 0; r < rounds; r++) {
		pthread_mutex_lock(&forks[i]);
		pthread_mutex_lock(&forks[(i + 1) % N]);
		pthread_mutex_unlock(&forks[(i + 1) % N]);
		pthread_mutex_unlock(&forks[i]);
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
	pthread_barrier_init(&start, NULL, N);
	pthread_t t[N];
	for (long i = 0; i < N; i++)
		if (pthread_create(&t[i], NULL, philosopher, (void *)i))
			abort();
	for (int i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	printf("done\n");
	return 0;
}
