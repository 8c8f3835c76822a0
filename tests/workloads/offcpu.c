/* Off-CPU workload: main -> wait_here, which sleeps 200 ms in nanosleep (blocked, off CPU),
 * then main -> burn_here, which burns about 100 ms of CPU; argv[1] rounds of both. At exit
 * it prints "blocked_ns N": the wall time spent inside nanosleep, measured here, which the
 * profile's off-CPU time under wait_here should match. */
#include <time.h>
#include "workload.h"

volatile unsigned long sink;

FRAME long wait_here(void)
{
	struct timespec t0, t1, d = { .tv_sec = 0, .tv_nsec = 200 * 1000 * 1000 };
	clock_gettime(CLOCK_MONOTONIC, &t0);
	nanosleep(&d, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	BARRIER();
	return (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec);
}

FRAME void burn_here(void)
{
	unsigned long x = sink;
	double end = ddw_now() + 0.1;
	while (ddw_now() < end)
		DDW_BURN(x, 100000);
	sink = x;
}

int main(int argc, char **argv)
{
	int rounds = argc > 1 ? atoi(argv[1]) : 10;
	long blocked = 0;
	for (int i = 0; i < rounds; i++) {
		blocked += wait_here();
		burn_here();
		BARRIER();
	}
	printf("blocked_ns %ld\n", blocked);
	return 0;
}
