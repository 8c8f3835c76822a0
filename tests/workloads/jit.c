/* Runs a busy loop from anonymous executable memory, as a JIT does, and names it in
 * /tmp/perf-PID.map: main -> jit_caller -> jitted_busy_loop (in no file).
 * The generated code keeps a frame pointer, as JITs that publish perf maps do.
 * argv[1]: seconds to run. */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "workload.h"

typedef void (*loop_fn)(void);

/* push rbp; mov rbp,rsp; mov ecx,0x200000; 1: dec ecx; jnz 1b; pop rbp; ret */
static const unsigned char code[] = {0x55, 0x48, 0x89, 0xe5, 0xb9, 0x00, 0x00, 0x20, 0x00,
				     0xff, 0xc9, 0x75, 0xfc, 0x5d, 0xc3};

FRAME void jit_caller(loop_fn f)
{
	f();
	BARRIER();
}

int main(int argc, char **argv)
{
	unsigned char *mem = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 3;
	memcpy(mem + 64, code, sizeof(code));
	char path[64];
	snprintf(path, sizeof(path), "/tmp/perf-%d.map", getpid());
	FILE *map = fopen(path, "w");
	if (!map)
		return 4;
	fprintf(map, "%lx %zx jitted_busy_loop\n", (unsigned long)(uintptr_t)(mem + 64), sizeof(code));
	fclose(map);
	double end = ddw_now() + ddw_seconds(argc, argv);
	ddw_ready();
	while (ddw_now() < end) {
		jit_caller((loop_fn)(mem + 64));
		BARRIER();
	}
	unlink(path);
	return 0;
}
