/* The chain workload, plus an executable mapping of a file that is not a valid ELF
 * (argv[2]): the profiler must count the bad file and still unwind the chain.
 * argv[1]: seconds to run. */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
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
	if (argc < 3)
		return 2;
	int fd = open(argv[2], O_RDONLY);
	if (fd < 0)
		return 3;
	void *m = mmap(NULL, 65536, PROT_READ | PROT_EXEC, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		return 4;
	double end = ddw_now() + ddw_seconds(argc, argv);
	unsigned long x = 1;
	ddw_ready();
	while (ddw_now() < end) {
		x = outer(x);
		BARRIER();
	}
	sink = x + (unsigned long)m;
	return 0;
}
