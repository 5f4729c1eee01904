/*
 * Benchmark target for `cargo xtask bench detect` (the latency benchmark):
 * fixtures/abba.c with the moment the cycle closes at a random phase.
 *
 *   detect_abba [MAX_DELAY_MS]
 *
 * main sleeps a random 0..MAX_DELAY_MS (default 50) milliseconds before it
 * starts alpha and beta, then it is the ABBA fixture: alpha takes lock_a then
 * lock_b, beta takes lock_b then lock_a, a barrier between the two locks,
 * main in pthread_join(alpha).
 *
 * Why: in fixtures/abba.c the cycle closes ~2 ms after exec, i.e. right
 * after the observer's first scan tick, every time; the measured latency is
 * then always about one scan interval. A delay spread uniformly over a
 * multiple of the scan interval (50 ms = 2 x 25 = 5 x 10) puts the cycle at
 * every phase of the scan period, which is what a real program does.
 *
 * Output: `thread NAME TID`, `blocking NAME LOCK`, `ready` (fixtures/README.md).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;

static pthread_barrier_t both_hold_first;
static int blocked;

static void *locker(void *arg)
{
	int second = (int)(size_t)arg;
	const char *name = second ? "beta" : "alpha";
	pthread_mutex_t *mine = second ? &lock_b : &lock_a;
	pthread_mutex_t *theirs = second ? &lock_a : &lock_b;
	pthread_setname_np(pthread_self(), name);
	printf("thread %s %d\n", name, gettid());
	pthread_mutex_lock(mine);
	pthread_barrier_wait(&both_hold_first);
	printf("blocking %s %s\n", name, second ? "lock_a" : "lock_b");
	__atomic_add_fetch(&blocked, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_lock(theirs); /* never returns */
	return NULL;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	long max_ms = argc > 1 ? atol(argv[1]) : 50;
	unsigned int r = 0;
	if (getrandom(&r, sizeof r, 0) != sizeof r)
		r = (unsigned int)time(NULL) ^ (unsigned int)getpid();
	if (max_ms > 0) {
		long us = (long)(r % (unsigned long)(max_ms * 1000));
		struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
		nanosleep(&ts, NULL);
	}
	pthread_setname_np(pthread_self(), "main");
	printf("thread main %d\n", gettid());
	pthread_barrier_init(&both_hold_first, NULL, 2);
	pthread_t a, b;
	if (pthread_create(&a, NULL, locker, (void *)0) || pthread_create(&b, NULL, locker, (void *)1))
		abort();
	while (__atomic_load_n(&blocked, __ATOMIC_SEQ_CST) < 2)
		usleep(1000);
	usleep(50000);
	printf("ready\n");
	pthread_join(a, NULL); /* hangs forever */
	return 0;
}
