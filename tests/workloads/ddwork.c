/* libddwork.so: lib_middle -> lib_leaf, the shared-library half of the shlib workload. */
#include "workload.h"

FRAME unsigned long lib_leaf(unsigned long x)
{
	DDW_BURN(x, 1000000);
	BARRIER();
	return x;
}

FRAME unsigned long lib_middle(unsigned long x)
{
	unsigned long r = lib_leaf(x);
	BARRIER();
	return r ^ (x + 1);
}
