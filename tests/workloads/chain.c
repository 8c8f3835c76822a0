/* main -> outer -> middle -> leaf, burning CPU in leaf. argv[1]: seconds to run. */
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

int main(int argc, char **argv)
{
	double end = ddw_now() + ddw_seconds(argc, argv);
	unsigned long x = 1;
	ddw_ready();
	while (ddw_now() < end) {
		x = outer(x);
		BARRIER();
	}
	sink = x;
	return 0;
}
