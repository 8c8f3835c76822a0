/* Shared helpers of the test workloads: argv parsing, the "ready" handshake, a clock,
 * and the attributes that keep a function a real frame of its own (not inlined, not
 * cloned into a .constprop/.isra variant, not tail-called when callers do work after it). */
#ifndef DDWORK_WORKLOAD_H
#define DDWORK_WORKLOAD_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define FRAME __attribute__((noinline, noclone, noipa))
#define BARRIER() asm volatile("" ::: "memory")

static inline double ddw_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds to run, from argv[1] (default 5). */
static inline double ddw_seconds(int argc, char **argv)
{
	return argc > 1 ? atof(argv[1]) : 5.0;
}

static inline void ddw_ready(void)
{
	printf("ready\n");
	fflush(stdout);
}

/* About a millisecond of integer work the compiler cannot drop. */
#define DDW_BURN(x, iters)                                                     \
	do {                                                                   \
		for (long _i = 0; _i < (iters); _i++) {                        \
			(x) = (x) * 6364136223846793005UL + 1442695040888963407UL; \
			asm volatile("" : "+r"(x));                            \
		}                                                              \
	} while (0)

#endif
