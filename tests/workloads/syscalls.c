/* main -> sys_leaf, which reads 64 KiB from /dev/zero in a loop: most CPU time is spent
 * in the kernel, under read() called from sys_leaf. argv[1]: seconds. */
#include <fcntl.h>
#include <unistd.h>
#include "workload.h"

static char buf[65536];
volatile unsigned long sink;

FRAME unsigned long sys_leaf(int fd)
{
	unsigned long total = 0;
	for (int i = 0; i < 64; i++) {
		ssize_t n = read(fd, buf, sizeof(buf));
		BARRIER();
		if (n > 0)
			total += (unsigned long)n;
	}
	return total;
}

int main(int argc, char **argv)
{
	double end = ddw_now() + ddw_seconds(argc, argv);
	unsigned long total = 0;
	int fd = open("/dev/zero", O_RDONLY);
	if (fd < 0) {
		perror("open /dev/zero");
		return 1;
	}
	ddw_ready();
	while (ddw_now() < end) {
		total += sys_leaf(fd);
		BARRIER();
	}
	sink = total;
	close(fd);
	return 0;
}
