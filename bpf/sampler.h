/* The contract between the BPF sampler and the Rust core.
 *
 * Every record starts with a u32 kind (enum ddprof_record_kind). Stack records (a CPU sample,
 * or an off-CPU switch-out) go through the ring buffer exact-size:
 *   struct sample_header (with every user register)
 *   | user stack bytes from sp - ustack_below_sp (ustack_len bytes, then zero padding to a
 *     multiple of 8): the red zone below sp too, where leaf functions and OpenSSL's CFA
 *     expressions (`*(rsp - 8) + 8`) keep data
 *   | kernel stack (kstack_len u64 addresses, leaf first)
 *   | user frame-pointer chain (ufp_len u64 addresses: ip, then return addresses), only for
 *     pids in the `fp_chain_pids` map (Go programs: their stacks switch between goroutine and
 *     system stacks, which the snapshot from sp cannot follow, while the chain does)
 *   | Python frames (py_len struct py_frame, leaf first), only for pids in the `py_procs`
 *     map (CPython processes: their Python stack is the interpreter's frame chain, read at
 *     the sample, since 3.11 Python calls do not grow the C stack); py_status says how the
 *     walk ended
 *   | the Go window (go_window_len bytes from go_sp), only for pids in the `go_procs` map (Go
 *     programs on x86_64): a copy of the thread's *other* stack, the one the snapshot from sp
 *     is not on. A Go thread runs goroutines on their own stacks and runtime and C code on
 *     its system stack (g0); where one calls the other the frames continue on the other
 *     stack. The sampler follows g (from TLS), g.m, m.g0 and m.curg: on g0 while a
 *     goroutine is off its stack (Go calling C, runtime.systemstack, morestack), the
 *     goroutine's stack from its saved curg.sched.sp, with its saved pc and bp; on a
 *     goroutine's stack in a cgo binary, g0's from m.g0.sched.sp (in a C -> Go callback,
 *     cgocallback's g0 frame: crosscall2 and the C frames above it). go_window says which.
 * The user stack comes first so that its copy lands at a fixed offset of the scratch buffer,
 * which keeps the verifier's bounds simple.
 * Rust mirrors these types with #[repr(C)] structs and asserts their sizes at compile time;
 * change both sides together. No bool fields, explicit padding only.
 */
#ifndef DDPROF_SAMPLER_H
#define DDPROF_SAMPLER_H

#define DDPROF_ABI_VERSION 6

/* Kernel stack depth taken with bpf_get_stack (PERF_MAX_STACK_DEPTH is 127). */
#define DDPROF_MAX_KSTACK_DEPTH 127
/* Depth of the user frame-pointer chain, from the same helper. */
#define DDPROF_MAX_UFP_DEPTH 127
/* Largest user stack snapshot the program can copy; the runtime size is a load-time knob. */
#define DDPROF_MAX_USTACK_BYTES (64 * 1024)
#define DDPROF_COMM_LEN 16
/* Python frames read per sample; a deeper Python stack keeps its leaf end (py_status CUT). */
#define DDPROF_MAX_PY_FRAMES 160
/* Bytes of a Python frame read at once: every field the walk uses lies in them. */
#define DDPROF_PY_FRAME_BLOCK 128
/* Thread states of a process looked through to find the current thread's. */
#define DDPROF_MAX_PY_THREADS 256
/* Bytes of a Go thread's other stack copied (the Go window), at most: its frames near the
 * switch (a callback's C frames, a goroutine's frames up to its cgo call) are what the
 * unwinder needs; a window cut by this size is flagged DDPROF_F_GO_WINDOW_CUT. */
#define DDPROF_GO_WINDOW_BYTES 4096

/* The user registers of a sample, in DWARF register order, so that the unwinder reads a CFI
 * rule's register by its number: x86_64 0-16 = rax rdx rcx rbx rsi rdi rbp rsp r8-r15 rip;
 * arm64 0-30 = x0-x30, 31 = sp, 32 = pc. Every general-purpose register, because hand-written
 * assembly (OpenSSL's) keeps its CFA in scratch registers, glibc's __vfork its return
 * address in rdi, and aarch64 leaf functions theirs in x30. */
#if defined(__TARGET_ARCH_x86) || defined(__x86_64__)
#define DDPROF_USER_REGS 17
#define DDPROF_REG_IP 16
#define DDPROF_REG_SP 7
#define DDPROF_REG_FP 6
#define DDPROF_RED_ZONE 128        /* psABI 3.2.2: 128 bytes below rsp are the function's */
#else
#define DDPROF_USER_REGS 33
#define DDPROF_REG_IP 32
#define DDPROF_REG_SP 31
#define DDPROF_REG_FP 29
#define DDPROF_RED_ZONE 0          /* AAPCS64 has none */
#endif

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
	DDPROF_CNT_PY_SCANS = 9,      /* walks of an interpreter's thread list for a thread state */
	DDPROF_CNT_EXECS = 10,        /* exec() by a sampled process: its mappings generation moved */
	DDPROF_CNT_CODE_UNMAPS = 11,  /* munmap() of executable code by a sampled process: the same */
	DDPROF_CNT_FOLLOWED = 12,     /* processes started by a followed one, added to the pid filter */
	DDPROF_CNT_FOLLOW_FULL = 13,  /* ... that the full pid filter could not take */
	DDPROF_CNT_OFFCPU_SWITCHES = 14, /* off-CPU: switch-outs of targeted user threads seen */
	DDPROF_CNT_OFFCPU_RECORDED = 15, /* ... whose stack was recorded (the rest: rate, cap, ring) */
	DDPROF_CNT_OFFCPU_CAPPED = 16,   /* ... picked by the rate but over the per-CPU cap a second */
	DDPROF_CNT_OFFCPU_WEIGHT_LOST = 17, /* switch-ins whose weight record the full ring lost */
	DDPROF_CNT_MAX = 18,
};

/* What a ring buffer record is: its first u32. */
enum ddprof_record_kind {
	DDPROF_REC_CPU = 0,            /* struct sample_header...: a CPU sample */
	DDPROF_REC_OFFCPU_STACK = 1,   /* struct sample_header...: a thread's stack as it switched out */
	DDPROF_REC_OFFCPU_WEIGHT = 2,  /* struct offcpu_weight: how long that thread stayed out */
};

/* Bits of sample_header.flags. */
#define DDPROF_F_USER_REGS 0x1    /* user registers are valid */
#define DDPROF_F_KERNEL_MODE 0x2  /* the sample interrupted kernel mode */
#define DDPROF_F_USTACK_CUT 0x4   /* the snapshot stopped at the size limit, not the stack's end */
#define DDPROF_F_GO_WINDOW_CUT 0x8 /* the Go window stopped at its size limit below its stack's top */
#define DDPROF_F_PREEMPTED 0x10   /* off-CPU stack: the thread left the CPU still runnable
                                     (preempted, or a yield), not blocked by its own choice */

struct sample_header {
	unsigned int kind;             /* enum ddprof_record_kind: CPU or OFFCPU_STACK */
	unsigned int cpu;
	unsigned long long ktime_ns;   /* bpf_ktime_get_ns: CLOCK_MONOTONIC (an off-CPU stack: the
	                                  switch-out, the key its weight record names) */
	unsigned int pid;              /* tgid */
	unsigned int tid;
	unsigned int flags;
	unsigned int kstack_len;       /* number of u64 kernel addresses that follow */
	unsigned int ustack_len;       /* number of user stack bytes after the header */
	unsigned int ufp_len;          /* number of u64 user frame-pointer chain entries that follow */
	/* The process's mappings generation when sampled: exec() and munmap() of code move it
	 * (the `map_gens` map), so user space knows when its copy of /proc/PID/maps is stale
	 * before it unwinds, in the order the samples were taken. */
	unsigned int map_gen;
	char comm[DDPROF_COMM_LEN];    /* thread name */
	unsigned short py_len;         /* number of struct py_frame that follow */
	unsigned short py_status;      /* enum ddprof_py_status */
	unsigned int ustack_below_sp;  /* the snapshot starts this many bytes below sp */
	unsigned int _pad;
	unsigned long long regs[DDPROF_USER_REGS]; /* user registers, DWARF order (above) */
	/* The Go window (after the Python frames): go_window_len bytes from go_sp. go_sp is the
	 * saved sp of its stack (curg.sched.sp, or m.g0.sched.sp); go_pc and go_bp the
	 * goroutine's saved pc and bp (CURG only, else 0); go_g0_sp is m.g0.sched.sp (both
	 * kinds): where a switch to g0 put sp, so that user space tells the switch that saved
	 * curg.sched from a call made on g0 already (asmcgocall's no-switch path). */
	unsigned long long go_sp;
	unsigned long long go_pc;
	unsigned long long go_bp;
	unsigned long long go_g0_sp;
	unsigned int go_window_len;
	unsigned int go_window;        /* enum ddprof_go_window */
};
/* sizeof(struct sample_header) == 112 + 8 * DDPROF_USER_REGS (248 on x86_64, 376 on arm64) */

/* Off-CPU mode: at a thread's switch-in, how long it was out since the switch-out whose stack
 * record (kind DDPROF_REC_OFFCPU_STACK, the same tid and ktime_ns) came before it in the ring
 * buffer (one buffer for all CPUs: the stack was committed before its time was stored, so
 * before this record was reserved). User space joins the two by (tid, ktime_ns). */
struct offcpu_weight {
	unsigned int kind;             /* DDPROF_REC_OFFCPU_WEIGHT */
	unsigned int cpu;              /* where the thread switched in */
	unsigned long long ktime_ns;   /* its switch-out: the stack record's ktime_ns */
	unsigned int pid;
	unsigned int tid;
	unsigned long long blocked_ns; /* switch-in minus switch-out */
};
/* sizeof(struct offcpu_weight) == 32 */

/* Which stack the Go window holds. */
enum ddprof_go_window {
	DDPROF_GO_WINDOW_NONE = 0, /* none: not a Go pid, not a Go thread (or its gsignal), unreadable */
	DDPROF_GO_WINDOW_G0 = 1,   /* sampled on a goroutine's stack of a cgo binary: g0's stack */
	DDPROF_GO_WINDOW_CURG = 2, /* sampled on g0 while m.curg is set: the goroutine's stack */
};

/* How the walk of a sample's Python frames ended. */
enum ddprof_py_status {
	DDPROF_PY_NONE = 0,        /* not a CPython process: nothing was read */
	DDPROF_PY_OK = 1,          /* read to the thread's first frame */
	DDPROF_PY_NO_THREAD = 2,   /* the thread has no thread state (not a Python thread) */
	DDPROF_PY_NO_FRAME = 3,    /* the thread runs no Python code now */
	DDPROF_PY_READ_FAILED = 4, /* the interpreter's memory could not be read */
	DDPROF_PY_CUT = 5,         /* deeper than DDPROF_MAX_PY_FRAMES: the leaf end is kept */
};

/* One Python frame, as read: user space knows the version and decodes it. */
struct py_frame {
	unsigned long long code;       /* the frame's code pointer field (tag bits included) */
	unsigned long long instr;      /* bits 0-55: the instruction field (f_lasti, or a
	                                  pointer into the code object); bits 56-63: the entry
	                                  byte (is_entry 3.11, owner 3.12+) */
};
/* sizeof(struct py_frame) == 16 */

/* What the walk needs to know of a process's interpreter (value of the `py_procs` map,
 * set by user space): where its runtime is and the offsets of the fields read. */
struct py_proc {
	unsigned long long runtime;      /* address of _PyRuntime */
	unsigned int interp_head;        /* _PyRuntimeState.interpreters.head */
	unsigned short threads_head;     /* PyInterpreterState: first thread state */
	unsigned short tstate_next;
	unsigned short tstate_id;        /* native_thread_id (3.11+) or thread_id (pthread_self) */
	unsigned short tstate_frame;     /* frame (3.8-3.10), cframe (3.11-3.12), current_frame */
	unsigned short cframe_frame;     /* _PyCFrame.current_frame; 0xffff: no CFrame */
	unsigned short frame_code;       /* the offsets in a frame: multiples of 8 below */
	unsigned short frame_previous;   /* DDPROF_PY_FRAME_BLOCK, but frame_entry (a byte) */
	unsigned short frame_instr;
	unsigned short frame_entry;
	unsigned short block_len;        /* bytes read per frame, <= DDPROF_PY_FRAME_BLOCK */
	unsigned char id_is_pthread;     /* tstate_id holds pthread_self(), not the tid */
	unsigned char _pad[7];
};
/* sizeof(struct py_proc) == 40 */

/* What the Go window needs of a process's runtime (value of the `go_procs` map, set by user
 * space from the binary: g's TLS slot from its code, the offsets from its Go version). */
struct go_proc {
	long long tls_g;                 /* g's address minus the thread pointer (fs base) */
	unsigned short g_stack_hi;       /* g.stack.hi: the window stops there */
	unsigned short g_m;              /* g.m */
	unsigned short g_sched;          /* g.sched, a gobuf whose sp is at +0 */
	unsigned short gobuf_pc;         /* in the gobuf */
	unsigned short gobuf_bp;
	unsigned short m_g0;             /* m.g0 */
	unsigned short m_curg;           /* m.curg */
	unsigned char cgo;               /* the binary calls C: goroutine samples take g0's window */
	unsigned char _pad;
};
/* sizeof(struct go_proc) == 24 */

/* Thread state of a thread (value of the `py_tstates` map): 0 when the thread had none
 * when looked for at checked_ns (looked for again a second later). */
struct py_tstate {
	unsigned long long tstate;
	unsigned long long checked_ns;
};

#endif
