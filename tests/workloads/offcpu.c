/* Off-CPU workload: main -> wait_here, which sleeps in nanosleep (blocked, off CPU; argv[2]
 * ms, default 200), then main -> burn_here, which burns CPU (argv[3] ms, default 100);
 * argv[1] rounds of both (default 10). At exit it prints "blocked_ns N": the wall time spent
 * inside nanosleep, measured here, which the profile's off-CPU time under wait_here should
 * match. */
#include <time.h>
#include "workload.h"

volatile unsigned long sink;

FRAME long wait_here(long ms)
{
	struct timespec t0, t1, d = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000 * 1000 };
	clock_gettime(CLOCK_MONOTONIC, &t0);
	nanosleep(&d, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	BARRIER();
	return (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec);
}

FRAME void burn_here(long ms)
{
	unsigned long x = sink;
	double end = ddw_now() + ms / 1000.0;
	while (ddw_now() < end)
		DDW_BURN(x, 10000);
	sink = x;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 10;
	long sleep_ms = argc > 2 ? atol(argv[2]) : 200, burn_ms = argc > 3 ? atol(argv[3]) : 100;
	long blocked = 0;
	for (int i = 0; i < rounds; i++) {
		blocked += wait_here(sleep_ms);
		burn_here(burn_ms);
		BARRIER();
	}
	printf("blocked_ns %ld\n", blocked);
	return 0;
}
