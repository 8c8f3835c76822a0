/* Case vfork-register-ra of issue 10, standing for open-telemetry/opentelemetry-ebpf-profiler#876 (and PR #1203, issue #1750). */
/* A process that spawns children with vfork() in a loop. It holds many open
   file descriptors, so the kernel spends its time copying the fd table inside
   the vfork() system call, with the user registers parked in glibc's __vfork. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
__attribute__((noinline)) static pid_t spawn_child(void) {
    pid_t pid = vfork();
    if (pid == 0) _exit(0);
    return pid;
}
__attribute__((noinline)) static void supervisor_loop(double secs) {
    struct timespec t0, t; clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        pid_t pid = spawn_child();
        if (pid > 0) waitpid(pid, NULL, 0);
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < secs);
}
int main(int argc, char **argv) {
    double secs = argc > 1 ? atof(argv[1]) : 6;
    struct rlimit rl; getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl);   /* as many fds as allowed */
    int nfd = (int)rl.rlim_cur - 64;
    for (int i = 0; i < nfd; i++) if (dup(2) < 0) { perror("dup"); break; }
    supervisor_loop(secs);
    return 0;
}
