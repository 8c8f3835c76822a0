/* Case debug-frame-only of issue 10, standing for mstange/framehop#9 (DWARF unwinding truncated with ModuleUnwindData::DebugFrame). */
/* Built without .eh_frame (-fno-asynchronous-unwind-tables -fno-unwind-tables)
   and without frame pointers, as some size-conscious C projects are: the only
   unwind tables are DWARF .debug_frame, either in the binary (-g) or, once
   stripped, only in the separate debug file. */
#include <stdlib.h>
#include <time.h>
static volatile double sink;
__attribute__((noinline)) double df_leaf(long n) { volatile double buf[8]; double x = 0; for (long i = 0; i < n; i++) { buf[i & 7] = i * 0.5; x += buf[(i + 3) & 7]; } return x; }
__attribute__((noinline)) double df_middle(long n) { volatile long pad[4]; pad[0] = n; double r = df_leaf(pad[0]); return r + pad[0]; }
__attribute__((noinline)) double df_outer(long n) { volatile long pad[6]; pad[1] = n; double r = df_middle(pad[1]); return r * 2; }
int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 6;
    struct timespec t0, t; clock_gettime(CLOCK_MONOTONIC, &t0);
    do { sink += df_outer(1000000); clock_gettime(CLOCK_MONOTONIC, &t); }
    while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
    return 0;
}
