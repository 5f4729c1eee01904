/*
 * Benchmark target for `cargo xtask bench deep` (stacks): a hung process of
 * exactly THREADS threads (default 64) in one deadlock ring, so that the
 * single deadlock finding of `observer dump` names every thread and every
 * thread's stack is unwound and symbolized (dump unwinds only the threads
 * that findings name).
 *
 *   stacks_64 [THREADS]
 *
 * Thread i (main is thread 0; the others are "ring-NN") locks ring[i],
 * waits until every thread holds its own lock (a barrier), then locks
 * ring[(i + 1) % THREADS]: a THREADS-long cycle in the wait-for graph.
 * The waits go through a few noinline functions so that stacks have some
 * depth (worker -> take_pair -> take_next -> pthread_mutex_lock).
 *
 * Output (stdout, line-buffered): "ready PID THREADS" just before main
 * blocks; the driver then checks /proc/PID/task/TID/syscall until every
 * thread is asleep in futex(2). The process never exits on its own;
 * PR_SET_PDEATHSIG(SIGKILL) makes it die with the driver that started it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

#define MAX_THREADS 1024

pthread_mutex_t ring[MAX_THREADS];
static pthread_barrier_t all_hold_own;
static int nthreads = 64;
static volatile int never; /* keeps the compiler from merging the calls */

__attribute__((noinline)) static void take_next(int i)
{
	pthread_mutex_lock(&ring[(i + 1) % nthreads]); /* never returns */
	never++;
}

__attribute__((noinline)) static void take_pair(int i)
{
	pthread_mutex_lock(&ring[i]);
	pthread_barrier_wait(&all_hold_own);
	if (i == 0)
		printf("ready %d %d\n", (int)getpid(), nthreads);
	take_next(i);
	never++;
}

static void *worker(void *arg)
{
	int i = (int)(size_t)arg;
	char name[16];
	snprintf(name, sizeof name, "ring-%02d", i);
	pthread_setname_np(pthread_self(), name);
	take_pair(i);
	return NULL;
}

int main(int argc, char **argv)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (argc > 1)
		nthreads = atoi(argv[1]);
	if (nthreads < 2 || nthreads > MAX_THREADS) {
		fprintf(stderr, "THREADS must be 2..%d\n", MAX_THREADS);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (int i = 0; i < nthreads; i++)
		pthread_mutex_init(&ring[i], NULL);
	pthread_barrier_init(&all_hold_own, NULL, nthreads);
	for (int i = 1; i < nthreads; i++) {
		pthread_t t;
		if (pthread_create(&t, NULL, worker, (void *)(size_t)i) != 0) {
			perror("pthread_create");
			return 1;
		}
	}
	take_pair(0);
	return 0;
}
