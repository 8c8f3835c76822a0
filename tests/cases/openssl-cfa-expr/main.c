/* Case openssl-cfa-expr of issue 10, standing for libunwind/libunwind#263 (OpenSSL bn_mul_mont CFA expressions), openssl/openssl#2291 and #2305. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
long spin_asm(long n);
static volatile long sink;
__attribute__((noinline)) void crypto_like_work(void) { sink += spin_asm(2000000); }
__attribute__((noinline)) void request_handler(void) { crypto_like_work(); }
int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 6;
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do { request_handler(); clock_gettime(CLOCK_MONOTONIC, &t); }
    while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
    printf("%ld\n", sink);
    return 0;
}
