/* Two pthreads named worker-a and worker-b, each burning CPU in its own chain:
 * thread_a_start -> thread_a_outer -> thread_a_leaf, and the same with b.
 * The main thread sleeps in pthread_join. argv[1]: seconds. */
#define _GNU_SOURCE
#include <pthread.h>
#include "workload.h"

static double end;
static pthread_barrier_t named;
volatile unsigned long sink;

FRAME unsigned long thread_a_leaf(unsigned long x)
{
	DDW_BURN(x, 1000000);
	BARRIER();
	return x;
}

FRAME unsigned long thread_a_outer(unsigned long x)
{
	unsigned long r = thread_a_leaf(x);
	BARRIER();
	return r + 1;
}

FRAME unsigned long thread_b_leaf(unsigned long x)
{
	DDW_BURN(x, 1000000);
	BARRIER();
	return x ^ 5;
}

FRAME unsigned long thread_b_outer(unsigned long x)
{
	unsigned long r = thread_b_leaf(x);
	BARRIER();
	return r + 2;
}

FRAME void *thread_a_start(void *arg)
{
	unsigned long x = (unsigned long)arg;
	pthread_setname_np(pthread_self(), "worker-a");
	pthread_barrier_wait(&named);
	while (ddw_now() < end) {
		x = thread_a_outer(x);
		BARRIER();
	}
	sink = x;
	return NULL;
}

FRAME void *thread_b_start(void *arg)
{
	unsigned long x = (unsigned long)arg;
	pthread_setname_np(pthread_self(), "worker-b");
	pthread_barrier_wait(&named);
	while (ddw_now() < end) {
		x = thread_b_outer(x);
		BARRIER();
	}
	sink = x;
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t a, b;
	end = ddw_now() + ddw_seconds(argc, argv);
	pthread_barrier_init(&named, NULL, 3);
	pthread_create(&a, NULL, thread_a_start, (void *)1);
	pthread_create(&b, NULL, thread_b_start, (void *)2);
	pthread_barrier_wait(&named);
	ddw_ready();
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	return 0;
}
