/* caller() with inlined_fn() forced inline into it: the symbolizer must report inlined_fn
 * (its file:line) above caller (the call site), as addr2line -i does. */
#include <stdio.h>
#include <stdlib.h>
static inline __attribute__((always_inline)) unsigned long inlined_fn(unsigned long x)
{
	for (int i = 0; i < 1000; i++)
		x = x * 6364136223846793005UL + 1442695040888963407UL;
	return x;
}
__attribute__((noinline)) unsigned long caller(unsigned long x)
{
	unsigned long r = inlined_fn(x);
	return r ^ 7;
}
int main(int argc, char **argv) { printf("%lu\n", caller(argc)); return 0; }
