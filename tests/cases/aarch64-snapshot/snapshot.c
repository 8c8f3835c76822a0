/* aarch64 only: main -> outer -> middle -> leaf; leaf takes what the BPF sampler takes on
 * arm64 at a sample (x0-x30, sp, pc: bpf/sampler.h's register order, the DWARF numbers
 * of AAPCS64 with the pc in slot 32) and the stack from sp upwards (16 KiB, clamped at the
 * end of the stack's mapping), and writes them with its own /proc/self/maps (the guest's
 * view under qemu-user) to argv[1]; then prints "ready" and sleeps, so that the unwinder
 * can open its files through /proc/PID. Built with -O2 -fomit-frame-pointer: the walk
 * must go by CFI (.eh_frame).
 *
 * File: "pid <pid>\nregs <33 hex words>\nstack <base hex> <len>\n<len bytes>maps\n<text>". */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STACK_BYTES 16384
volatile unsigned long sink;

static uint64_t stack_end(uint64_t sp)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	uint64_t lo, hi, end = sp + STACK_BYTES;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo <= sp && sp < hi)
			end = hi;
	if (f)
		fclose(f);
	return end;
}

static __attribute__((noinline)) void dump(const char *path, const uint64_t *regs)
{
	uint64_t sp = regs[31], end = stack_end(sp);
	size_t len = end - sp < STACK_BYTES ? end - sp : STACK_BYTES;
	FILE *out = fopen(path, "w");
	if (!out) {
		perror(path);
		exit(1);
	}
	fprintf(out, "pid %d\nregs", (int)getpid());
	for (int i = 0; i < 33; i++)
		fprintf(out, " %lx", (unsigned long)regs[i]);
	fprintf(out, "\nstack %lx %zu\n", (unsigned long)sp, len);
	fwrite((const void *)(uintptr_t)sp, 1, len, out);
	fprintf(out, "maps\n");
	FILE *maps = fopen("/proc/self/maps", "r");
	char buf[4096];
	size_t n;
	while (maps && (n = fread(buf, 1, sizeof buf, maps)) > 0)
		fwrite(buf, 1, n, out);
	if (maps)
		fclose(maps);
	fclose(out);
}

__attribute__((noinline)) unsigned long leaf(const char *path, unsigned long x)
{
	uint64_t regs[33];
	/* Every register as it is here, then sp and this instruction's address as the pc. */
	__asm__ volatile(
		"stp x0, x1, [%0, #0]\n\t"
		"stp x2, x3, [%0, #16]\n\t"
		"stp x4, x5, [%0, #32]\n\t"
		"stp x6, x7, [%0, #48]\n\t"
		"stp x8, x9, [%0, #64]\n\t"
		"stp x10, x11, [%0, #80]\n\t"
		"stp x12, x13, [%0, #96]\n\t"
		"stp x14, x15, [%0, #112]\n\t"
		"stp x16, x17, [%0, #128]\n\t"
		"stp x18, x19, [%0, #144]\n\t"
		"stp x20, x21, [%0, #160]\n\t"
		"stp x22, x23, [%0, #176]\n\t"
		"stp x24, x25, [%0, #192]\n\t"
		"stp x26, x27, [%0, #208]\n\t"
		"stp x28, x29, [%0, #224]\n\t"
		"str x30, [%0, #240]\n\t"
		"mov x9, sp\n\t"
		"str x9, [%0, #248]\n\t"
		"adr x9, .\n\t"
		"str x9, [%0, #256]\n\t"
		: : "r"(regs) : "x9", "memory");
	dump(path, regs);
	sink = x;
	return x * 3;
}

__attribute__((noinline)) unsigned long middle(const char *path, unsigned long x)
{
	unsigned long r = leaf(path, x + 1);
	sink = r;
	return r ^ x;
}

__attribute__((noinline)) unsigned long outer(const char *path, unsigned long x)
{
	unsigned long r = middle(path, x * 2);
	sink = r;
	return r + 7;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s SNAPSHOT\n", argv[0]);
		return 2;
	}
	sink = outer(argv[1], (unsigned long)argc);
	printf("ready\n");
	fflush(stdout);
	sleep(120);
	return 0;
}
