/* The chain outer -> middle -> leaf, burning CPU in leaf, and a loop that runs it for a
 * while: shared by the workloads whose stacks must read main -> outer -> middle -> leaf. */
#ifndef DDWORK_CHAIN_H
#define DDWORK_CHAIN_H
#include "workload.h"

volatile unsigned long sink;

FRAME unsigned long leaf(unsigned long x)
{
	DDW_BURN(x, 1000000);
	BARRIER();
	return x;
}

FRAME unsigned long middle(unsigned long x)
{
	unsigned long r = leaf(x);
	BARRIER();
	return r ^ (x + 1);
}

FRAME unsigned long outer(unsigned long x)
{
	unsigned long r = middle(x);
	BARRIER();
	return r + 3;
}

/* Says "ready", then calls outer() until `seconds` have passed. Inlined into main. */
static inline __attribute__((always_inline)) void run_chain(double seconds)
{
	double end = ddw_now() + seconds;
	unsigned long x = 1;
	ddw_ready();
	while (ddw_now() < end) {
		x = outer(x);
		BARRIER();
	}
	sink = x;
}
#endif
