/* The chain workload, plus an executable mapping of a file that is not a valid ELF
 * (argv[2]): the profiler must count the bad file and still unwind the chain.
 * argv[1]: seconds to run. */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include "chain.h"

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
	run_chain(ddw_seconds(argc, argv));
	munmap(m, 65536);
	return 0;
}
