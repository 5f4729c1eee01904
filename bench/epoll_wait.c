/* Per-call cost of epoll_wait(timeout 0) in a tight loop: run it bare, under
 * `observer run` (watched: the event-loop bookkeeping in the kernel), and
 * beside an `observer run` of another program (unwatched). Prints ns per
 * call for each round. Usage: epoll_wait [calls] [rounds] */
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 500000;
	int rounds = argc > 2 ? atoi(argv[2]) : 7;
	int ep = epoll_create1(0);
	struct epoll_event ev;
	for (int r = 0; r < rounds; r++) {
		double t0 = now();
		for (long i = 0; i < n; i++)
			epoll_wait(ep, &ev, 1, 0);
		printf("%.1f\n", (now() - t0) / n);
		fflush(stdout);
	}
	return 0;
}
