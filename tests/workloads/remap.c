/* A program that moves its own code into anonymous memory at the same addresses, as
 * huge-page tuned servers do (copy .text into an anonymous mapping, mremap it over the
 * original): afterwards /proc/PID/maps shows the code as nameless executable memory.
 * Usage: remap SECONDS. Prints "ready" once remapped. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long sink;

__attribute__((noinline)) void remap_leaf(void)
{
	for (unsigned long i = 0; i < 200000; i++)
		sink += i * i;
}

__attribute__((noinline)) void remap_outer(void)
{
	remap_leaf();
	__asm__ volatile("" ::: "memory");
}

/* The executable mapping of this program's own file, from /proc/self/maps. */
static int own_text(unsigned long *start, unsigned long *end)
{
	char exe[4096], line[4600], path[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n <= 0)
		return -1;
	exe[n] = 0;
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return -1;
	int found = -1;
	while (fgets(line, sizeof(line), f)) {
		char perms[8];
		path[0] = 0;
		if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %4095s", start, end, perms, path) >= 3 && perms[2] == 'x' &&
		    strcmp(path, exe) == 0) {
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 5;
	unsigned long start, end;
	if (own_text(&start, &end) != 0) {
		fprintf(stderr, "no text mapping\n");
		return 1;
	}
	size_t len = end - start;
	void *copy = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (copy == MAP_FAILED)
		return 1;
	memcpy(copy, (void *)start, len);
	if (mprotect(copy, len, PROT_READ | PROT_EXEC) != 0)
		return 1;
	/* The same bytes at the same addresses: execution goes on in the copy. */
	if (mremap(copy, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)start) == MAP_FAILED)
		return 1;
	printf("ready\n");
	fflush(stdout);
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		remap_outer();
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (t.tv_sec - t0.tv_sec + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
	return 0;
}
