/*
 * Benchmark target for `cargo xtask bench detect` (the `dump` benchmark):
 * a hung process with many threads, two of them deadlocked.
 *
 *   dump_1000 [THREADS]
 *
 * THREADS (default 1000) threads besides main: THREADS-2 idle pool workers
 * ("pool-N") parked in pthread_cond_wait on `pool_cond` (a realistic idle
 * thread pool: nobody ever signals it), and two threads in an ABBA deadlock:
 * alpha takes lock_a then lock_b, beta takes lock_b then lock_a. main then
 * sits in pthread_join(alpha), like the abba fixture.
 *
 * Output (stdout, line-buffered), following fixtures/README.md:
 *   thread alpha TID / thread beta TID   the deadlocked threads
 *   ready                                every one of the THREADS threads is
 *                                        asleep in futex(2) (checked through
 *                                        /proc/self/task/TID/syscall)
 * The process never exits on its own; PR_SET_PDEATHSIG(SIGKILL) makes it die
 * with the bench that started it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

pthread_mutex_t lock_a = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t lock_b = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;

static pthread_barrier_t both_hold_first;
static int parked; /* pool workers inside pthread_cond_wait (under pool_lock) */
static int work;   /* the predicate nobody ever sets */

static void *pool_worker(void *arg)
{
	char name[16];
	snprintf(name, sizeof name, "pool-%ld", (long)(size_t)arg);
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&pool_lock);
	parked++;
	while (!work)
		pthread_cond_wait(&pool_cond, &pool_lock); /* never returns */
	pthread_mutex_unlock(&pool_lock);
	return NULL;
}

static void *abba(void *arg)
{
	int first = (int)(size_t)arg;
	const char *name = first ? "beta" : "alpha";
	pthread_mutex_t *mine = first ? &lock_b : &lock_a;
	pthread_mutex_t *theirs = first ? &lock_a : &lock_b;
	pthread_setname_np(pthread_self(), name);
	printf("thread %s %d\n", name, gettid());
	pthread_mutex_lock(mine);
	pthread_barrier_wait(&both_hold_first);
	pthread_mutex_lock(theirs); /* never returns */
	return NULL;
}

/* Threads of this process (main excluded) asleep in a futex syscall (nr 202 on x86_64). */
static int asleep_in_futex(void)
{
	DIR *d = opendir("/proc/self/task");
	if (!d)
		return -1;
	int n = 0;
	char path[300], buf[64];
	pid_t me = getpid();
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.' || atoi(e->d_name) == me)
			continue;
		snprintf(path, sizeof path, "/proc/self/task/%s/syscall", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof buf, f) && atol(buf) == SYS_futex)
			n++;
		fclose(f);
	}
	closedir(d);
	return n;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	long threads = argc > 1 ? atol(argv[1]) : 1000;
	if (threads < 3) {
		fprintf(stderr, "dump_1000: THREADS must be >= 3\n");
		return 2;
	}
	pthread_setname_np(pthread_self(), "main");
	printf("lock lock_a %p\n", (void *)&lock_a);
	printf("lock lock_b %p\n", (void *)&lock_b);

	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 * 1024);
	pthread_t t;
	for (long i = 0; i < threads - 2; i++) {
		if (pthread_create(&t, &attr, pool_worker, (void *)(size_t)i)) {
			perror("pthread_create");
			return 1;
		}
		pthread_detach(t);
	}
	pthread_barrier_init(&both_hold_first, NULL, 2);
	pthread_t a, b;
	if (pthread_create(&a, &attr, abba, (void *)0) || pthread_create(&b, &attr, abba, (void *)1)) {
		perror("pthread_create");
		return 1;
	}
	for (;;) {
		pthread_mutex_lock(&pool_lock);
		int p = parked;
		pthread_mutex_unlock(&pool_lock);
		if (p == threads - 2 && asleep_in_futex() == threads)
			break;
		usleep(2000);
	}
	usleep(50000);
	printf("ready\n");
	pthread_join(a, NULL); /* hangs forever */
	return 0;
}
