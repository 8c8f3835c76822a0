/* The contract between the BPF sampler and the Rust core.
 *
 * One record per sample goes through the ring buffer, exact-size:
 *   struct sample_header
 *   | user stack bytes from user_sp (ustack_len bytes, then zero padding to a multiple of 8)
 *   | kernel stack (kstack_len u64 addresses, leaf first)
 *   | user frame-pointer chain (ufp_len u64 addresses: ip, then return addresses), only for
 *     pids in the `fp_chain_pids` map (Go programs: their stacks switch between goroutine and
 *     system stacks, which the snapshot from sp cannot follow, while the chain does)
 * The user stack comes first so that its copy lands at a fixed offset of the scratch buffer,
 * which keeps the verifier's bounds simple.
 * Rust mirrors these types with #[repr(C)] structs and asserts their sizes at compile time;
 * change both sides together. No bool fields, explicit padding only.
 */
#ifndef DDPROF_SAMPLER_H
#define DDPROF_SAMPLER_H

#define DDPROF_ABI_VERSION 2

/* Kernel stack depth taken with bpf_get_stack (PERF_MAX_STACK_DEPTH is 127). */
#define DDPROF_MAX_KSTACK_DEPTH 127
/* Depth of the user frame-pointer chain, from the same helper. */
#define DDPROF_MAX_UFP_DEPTH 127
/* Largest user stack snapshot the program can copy; the runtime size is a load-time knob. */
#define DDPROF_MAX_USTACK_BYTES (64 * 1024)
#define DDPROF_COMM_LEN 16

/* Per-CPU counters, indices into the `counters` PERCPU_ARRAY map. */
enum ddprof_counter {
	DDPROF_CNT_SAMPLES = 0,       /* perf events that reached the program */
	DDPROF_CNT_FILTERED = 1,      /* skipped by the pid filter or idle task */
	DDPROF_CNT_RB_DROPPED = 2,    /* ring buffer full: record lost */
	DDPROF_CNT_USTACK_FAILED = 3, /* user stack copy failed entirely */
	DDPROF_CNT_KSTACK_FAILED = 4, /* bpf_get_stack failed */
	DDPROF_CNT_REGS_FAILED = 5,   /* no user registers (kernel thread or read failure) */
	DDPROF_CNT_USTACK_CLAMPED = 6,/* copy clamped to the end of the stack mapping */
	DDPROF_CNT_NEW_PIDS = 7,      /* first sample of a pid: the reader is woken at once */
	DDPROF_CNT_UFP_FAILED = 8,    /* the user frame-pointer chain was asked for and not taken */
	DDPROF_CNT_MAX = 9,
};

/* Bits of sample_header.flags. */
#define DDPROF_F_USER_REGS 0x1    /* user registers (ip/sp/bp) are valid */
#define DDPROF_F_KERNEL_MODE 0x2  /* the sample interrupted kernel mode */
#define DDPROF_F_USTACK_CUT 0x4   /* the snapshot stopped at the size limit, not the stack's end */

struct sample_header {
	unsigned long long ktime_ns;   /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	unsigned int pid;              /* tgid */
	unsigned int tid;
	unsigned int cpu;
	unsigned int flags;
	unsigned long long user_ip;
	unsigned long long user_sp;
	unsigned long long user_bp;
	unsigned int kstack_len;       /* number of u64 kernel addresses that follow */
	unsigned int ustack_len;       /* number of user stack bytes after the header */
	char comm[DDPROF_COMM_LEN];    /* thread name */
	unsigned int ufp_len;          /* number of u64 user frame-pointer chain entries that follow */
	unsigned int _pad;
};
/* sizeof(struct sample_header) == 80 */

#endif
