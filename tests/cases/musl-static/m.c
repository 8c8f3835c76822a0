/* Case musl-static of issue 10, standing for async-profiler/async-profiler#1317 (musl functions without FDEs), reliforp/reli-prof PR #610. */
/* Static musl program (as on Alpine, or Rust/Go-style static builds): the hot
   path is in musl's hand-written memcpy/memset, in the main thread and in a
   pthread. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static char src[1 << 18], dst[1 << 18];
static double secs = 6;
__attribute__((noinline)) void copy_block(void) { memcpy(dst, src, sizeof dst); memset(src, dst[7], sizeof src); }
__attribute__((noinline)) void pump(void) {
    struct timespec t0, t; clock_gettime(CLOCK_MONOTONIC, &t0);
    do { for (int i = 0; i < 50; i++) copy_block(); clock_gettime(CLOCK_MONOTONIC, &t); }
    while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
}
void *worker(void *arg) { (void)arg; pump(); return NULL; }
int main(int argc, char **argv) {
    if (argc > 1) secs = atof(argv[1]);
    pthread_t th; pthread_create(&th, NULL, worker, NULL);
    pump();
    pthread_join(th, NULL);
    return 0;
}
