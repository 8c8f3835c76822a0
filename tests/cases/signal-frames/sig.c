/* Case signal-frames of issue 10, standing for parca-dev/parca-agent#793 (unwinding signal handlers, sigaltstack), libunwind/libunwind#924. */
/* CPU time spent inside a signal handler, on the thread's own stack or on a
   sigaltstack (argv[1] == "alt"). A timer fires every 10 ms; the handler burns
   ~6 ms; main burns the rest in a different function. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
static volatile double sink;
__attribute__((noinline)) static void burn(long n) { double x = 0; for (long i = 0; i < n; i++) x += i * 0.5; sink += x; }
__attribute__((noinline)) static void handler_work(void) { burn(3000000); }
__attribute__((noinline)) static void on_tick(int sig) { (void)sig; handler_work(); }
__attribute__((noinline)) static void main_loop_work(void) { burn(200000); }
__attribute__((noinline)) static void app_main_loop(double secs) {
    struct timespec t0, t; clock_gettime(CLOCK_MONOTONIC, &t0);
    do { main_loop_work(); clock_gettime(CLOCK_MONOTONIC, &t); }
    while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
}
int main(int argc, char **argv) {
    int alt = argc > 1 && strcmp(argv[1], "alt") == 0;
    double secs = argc > 2 ? atof(argv[2]) : 6;
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_tick; sa.sa_flags = SA_RESTART;
    if (alt) {
        stack_t ss; ss.ss_size = 256 * 1024; ss.ss_sp = malloc(ss.ss_size); ss.ss_flags = 0;
        if (sigaltstack(&ss, NULL)) { perror("sigaltstack"); return 1; }
        sa.sa_flags |= SA_ONSTACK;
    }
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval it = { { 0, 10000 }, { 0, 10000 } };
    setitimer(ITIMER_PROF, &it, NULL);
    app_main_loop(secs);
    return 0;
}
