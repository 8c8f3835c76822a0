/* Case exec-same-pid of issue 10, standing for CodSpeedHQ/codspeed PR #392 (purge inherited mappings on execve), parca-dev/parca-agent#845. */
/* Built twice (-DSTAGE=1 and -DSTAGE=2) as non-PIE executables, so both map
   their code at the same addresses. Stage 1 works, then exec()s stage 2 in the
   same process (same pid), as launchers and shell wrappers do. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
static volatile double sink;
#define CAT(a, b) a##b
#define FN(n) CAT(stage_work_, n)
__attribute__((noinline)) void FN(STAGE)(long n) { double x = 0; for (long i = 0; i < n; i++) x += i * 0.75; sink += x; }
int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 2;
    struct timespec t0, t; clock_gettime(CLOCK_MONOTONIC, &t0);
    do { FN(STAGE)(1000000); clock_gettime(CLOCK_MONOTONIC, &t); }
    while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
#if STAGE == 1
    char *next[] = { "./stage2", argc > 2 ? argv[2] : "4", NULL };
    execv(next[0], next);
    perror("execv");
#endif
    return 0;
}
