/* main -> outer -> lib_middle -> lib_leaf, the last two in libddwork.so. argv[1]: seconds. */
#include "workload.h"

unsigned long lib_middle(unsigned long x);
volatile unsigned long sink;

FRAME unsigned long outer(unsigned long x)
{
	unsigned long r = lib_middle(x);
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
