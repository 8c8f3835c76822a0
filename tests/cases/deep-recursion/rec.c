/* Case deep-recursion of issue 10, standing for open-telemetry/opentelemetry-ebpf-profiler#760 (max stack depth insufficient), parca-dev/opentelemetry-ebpf-profiler PR #64. */
/* A recursive descent that spends its CPU at the bottom of a deep call chain
   (parsers, tree walkers, recursive renderers). depth is argv[2]. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static volatile double sink;
__attribute__((noinline)) static void leaf_work(void) { double x = 0; for (int i = 0; i < 200000; i++) x += i * 0.5; sink += x; }
__attribute__((noinline)) static int descend(int depth) {
    volatile char pad[16]; pad[0] = (char)depth;          /* a small, real frame */
    if (depth == 0) { leaf_work(); return pad[0]; }
    return descend(depth - 1) + pad[0];
}
int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 6; int depth = argc > 2 ? atoi(argv[2]) : 400;
    struct timespec t0, t; clock_gettime(CLOCK_MONOTONIC, &t0);
    do { descend(depth); clock_gettime(CLOCK_MONOTONIC, &t); }
    while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
    return 0;
}
