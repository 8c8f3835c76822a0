/* main -> recurse(200) -> ... -> recurse(0) -> recurse_leaf, burning CPU in recurse_leaf.
 * Each recurse frame holds a 192-byte local array, so the whole stack (about 45 KiB)
 * does not fit a 16 KiB snapshot but fits a 64 KiB one. argv[1]: seconds, argv[2]: depth. */
#include "workload.h"

volatile unsigned long sink;

FRAME unsigned long recurse_leaf(unsigned long x)
{
	DDW_BURN(x, 1000000);
	BARRIER();
	return x;
}

FRAME unsigned long recurse(int n, unsigned long x)
{
	volatile unsigned long pad[24];
	unsigned long r;
	pad[n % 24] = x;
	if (n == 0)
		r = recurse_leaf(x);
	else
		r = recurse(n - 1, x);
	BARRIER();
	return r + pad[n % 24];
}

int main(int argc, char **argv)
{
	double end = ddw_now() + ddw_seconds(argc, argv);
	int depth = argc > 2 ? atoi(argv[2]) : 200;
	unsigned long x = 1;
	ddw_ready();
	while (ddw_now() < end) {
		x = recurse(depth, x);
		BARRIER();
	}
	sink = x;
	return 0;
}
