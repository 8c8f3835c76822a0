// SPDX-License-Identifier: GPL-2.0
/* The ddprofiler sampler: one perf_event program, attached to a cpu-clock event per CPU, and
 * in off-CPU mode one sched_switch program (ddprof_switch).
 *
 * Input: the perf event context (registers at the interrupt); the switching tasks.
 * Output: one exact-size record per sample in the `samples` ring buffer (layout in
 * sampler.h): CPU samples, off-CPU stacks and their weights; per-CPU counters in `counters`.
 * Non-goals: unwinding, symbolization, aggregation. User space does all of that.
 */
#include <linux/bpf.h>
#include <linux/bpf_perf_event.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "sampler.h"

char LICENSE[] SEC("license") = "GPL";

/* The one architecture-specific part: whether the registers of a perf event are user
 * mode's, and how they go into the record (DWARF order, sampler.h). build.rs defines
 * __TARGET_ARCH_x86 or __TARGET_ARCH_arm64, the same choice as rust/ddprof-core/src/arch.rs. */
#if defined(__TARGET_ARCH_x86)
#define REGS_USER_MODE(r) (((r)->cs & 3) == 3)
#define REGS_SP(r) ((r)->rsp)
static __always_inline void copy_regs(__u64 *out, const struct pt_regs *r)
{
	out[0] = r->rax;
	out[1] = r->rdx;
	out[2] = r->rcx;
	out[3] = r->rbx;
	out[4] = r->rsi;
	out[5] = r->rdi;
	out[6] = r->rbp;
	out[7] = r->rsp;
	out[8] = r->r8;
	out[9] = r->r9;
	out[10] = r->r10;
	out[11] = r->r11;
	out[12] = r->r12;
	out[13] = r->r13;
	out[14] = r->r14;
	out[15] = r->r15;
	out[16] = r->rip;
}
/* pthread_self() of the current thread: the TCB, where fs points (glibc and musl). Read
 * through CO-RE: the kernel's own offset of thread.fsbase, found in its BTF at load. */
struct thread_struct {
	unsigned long fsbase;
} __attribute__((preserve_access_index));
struct task_struct {
	struct thread_struct thread;
} __attribute__((preserve_access_index));
#define HAVE_THREAD_POINTER 1
#define THREAD_POINTER(task) BPF_CORE_READ(task, thread.fsbase)
#elif defined(__TARGET_ARCH_arm64)
/* struct user_pt_regs { regs[31], sp, pc, pstate }: EL0t when pstate's mode bits are 0. */
#define REGS_USER_MODE(r) (((r)->pstate & 0xf) == 0)
#define REGS_SP(r) ((r)->sp)
/* user_pt_regs is regs[31], sp, pc: already DWARF order. */
static __always_inline void copy_regs(__u64 *out, const struct user_pt_regs *r)
{
	__builtin_memcpy(out, r, DDPROF_USER_REGS * 8);
}
/* pthread_self() is below TPIDR_EL0 by a libc-specific amount: not known here, so Python
 * 3.8-3.10 (whose thread states name their thread by pthread_self) get no Python frames. */
#define HAVE_THREAD_POINTER 0
#else
#error "the sampler supports x86_64 and arm64 only"
#endif

/* Load-time knobs, set by user space before loading. */
volatile const __u32 ustack_size = 16384;   /* bytes of user stack to copy, <= DDPROF_MAX_USTACK_BYTES */
volatile const __u32 filter_pids = 0;       /* 1: only pids present in pid_filter */
volatile const __u32 follow_children = 0;   /* 1: processes a filtered pid starts join the filter */
volatile const __u32 keep_idle = 0;         /* 1: samples of the idle task are kept */
volatile const __u64 wakeup_bytes = 1 << 20; /* wake the reader when this much is pending */
/* Off-CPU mode: a switch-out is recorded when bpf_get_prandom_u32() < offcpu_threshold
 * (2^32 or more: every one), at most offcpu_cap stacks a second on each CPU. */
volatile const __u64 offcpu_threshold = 1ULL << 32;
volatile const __u64 offcpu_cap = 250;

#define PAGE_SIZE 4096
#define KSTACK_BYTES (DDPROF_MAX_KSTACK_DEPTH * 8)
#define UFP_BYTES (DDPROF_MAX_UFP_DEPTH * 8)
#define PY_BYTES (DDPROF_MAX_PY_FRAMES * 16)
/* The Python frames start at most here (after the header), and every slot stays inside. */
#define PY_OFF_MAX (DDPROF_MAX_USTACK_BYTES + KSTACK_BYTES + UFP_BYTES)
/* The Go window starts at most here, after the Python frames. */
#define GO_OFF_MAX (PY_OFF_MAX + PY_BYTES)
#define HDR_BYTES sizeof(struct sample_header)
/* Room for the header, the largest snapshot plus one page of slack for the verifier's bound
 * on the page-by-page copy, the kernel stack, the user frame-pointer chain, the Python
 * frames and the Go window. */
#define SCRATCH_BYTES (HDR_BYTES + DDPROF_MAX_USTACK_BYTES + PAGE_SIZE + KSTACK_BYTES + UFP_BYTES + PY_BYTES + \
		       DDPROF_GO_WINDOW_BYTES)

struct scratch {
	__u8 data[SCRATCH_BYTES];
	/* One Python frame's fields, read at once (8 bytes of slack for the bounds). */
	__u8 pyblock[DDPROF_PY_FRAME_BLOCK + 8];
};

/* Per-CPU scratch: a PERCPU_ARRAY value cannot exceed 32 KiB, so this is a plain ARRAY with
 * one slot per CPU (max_entries set by user space to the number of possible CPUs). A perf
 * event program cannot re-enter itself on one CPU, so the slot is ours while we run. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_bufs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} samples SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DDPROF_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* The pids to sample when filter_pids is set; with follow_children, the processes they
 * start join and exited ones leave (ddprof_fork, ddprof_exit). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} pid_filter SEC(".maps");

/* Pids sampled before. The first sample of a pid wakes the reader at once, so that it reads
 * /proc/PID/maps while a short-lived process still lives (batched wake-ups alone leave up to
 * 50 ms, longer than many processes live). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} seen_pids SEC(".maps");

/* Pids whose samples also carry the user frame-pointer chain (set by user space for Go
 * programs; LRU, so exited pids age out). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} fp_chain_pids SEC(".maps");

/* CPython processes (set by user space when it recognizes one) and the thread state of
 * each of their threads (found by walking the interpreter's thread list, then kept). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct py_proc);
} py_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct py_tstate);
} py_tstates SEC(".maps");

/* Go programs whose samples take the Go window (set by user space when it knows the
 * binary's runtime: sampler.h's struct go_proc). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct go_proc);
} go_procs SEC(".maps");

/* The mappings generation of each sampled process (sample_header.map_gen): moved by exec()
 * and by munmap() of executable code, so that user space re-reads /proc/PID/maps exactly
 * when a sample says its copy is stale. Only pids in seen_pids get an entry. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u32);
} map_gens SEC(".maps");

static __always_inline void count(__u32 id)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &id);
	if (v)
		*v += 1;
}

/* Copy up to `len` bytes of user stack from `sp` into `dst`. A read that touches an
 * unmapped page fails whole, so try the whole length first (the common case), then fall
 * back to page by page and stop at the first page that does not read. */
static __always_inline __u32 copy_user_stack(__u8 *dst, __u64 sp, __u32 len, __u32 *clamped)
{
	if (len > DDPROF_MAX_USTACK_BYTES)
		len = DDPROF_MAX_USTACK_BYTES;
	if (len == 0)
		return 0;
	if (bpf_probe_read_user(dst, len, (void *)sp) == 0)
		return len;

	*clamped = 1;
	__u32 done = 0;
	for (int i = 0; i < DDPROF_MAX_USTACK_BYTES / PAGE_SIZE + 1; i++) {
		if (done >= len)
			break;
		__u32 chunk = PAGE_SIZE - ((sp + done) & (PAGE_SIZE - 1));
		if (chunk > len - done)
			chunk = len - done;
		if (chunk > PAGE_SIZE || chunk == 0)
			break;
		__u32 off = done & (DDPROF_MAX_USTACK_BYTES - 1);
		if (done >= DDPROF_MAX_USTACK_BYTES)
			break;
		if (bpf_probe_read_user(dst + off, chunk, (void *)(sp + done)) != 0)
			break;
		done += chunk;
	}
	return done;
}

/* copy_user_stack into this CPU's record, after the header; the number of bytes copied,
 * bit 31 set when the copy was clamped. A global function: verified once, called twice. */
__attribute__((noinline)) __u32 copy_stack_global(__u64 from, __u32 len)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct scratch *s = bpf_map_lookup_elem(&scratch_bufs, &cpu);
	if (!s)
		return 0;
	__u32 clamped = 0;
	__u32 n = copy_user_stack(s->data + HDR_BYTES, from, len, &clamped);
	return n | (clamped << 31);
}

static __always_inline __u32 copy_stack(__u64 from, __u32 len, __u32 *clamped)
{
	__u32 r = copy_stack_global(from, len);
	*clamped = r >> 31;
	return r & 0x7fffffff;
}

/* bpf_get_stack into `dst`: the number of addresses taken, or 0 and `failed` counted. */
static __always_inline __u32 get_stack(void *ctx, void *dst, __u32 size, __u64 flags,
				       __u32 failed)
{
	long n = bpf_get_stack(ctx, dst, size, flags);
	if (n > 0)
		return (__u32)n / 8;
	count(failed);
	return 0;
}

/* The user registers the current task saved on entry to the kernel (zeros when there are
 * none to read: REGS_USER_MODE then says no). */
static __always_inline void saved_user_regs(bpf_user_pt_regs_t *regs)
{
	struct task_struct *task = bpf_get_current_task_btf();
	long uregs = bpf_task_pt_regs(task);
	if (!uregs || bpf_probe_read_kernel(regs, sizeof(*regs), (void *)uregs) != 0)
		__builtin_memset(regs, 0, sizeof(*regs));
}

/* The ring buffer flags of a `total`-byte record of `pid` (0: no pid of its own): the
 * reader is woken at once for a pid's first record (it reads /proc/PID/maps while a
 * short-lived process lives), else only when wakeup_bytes are pending. */
static __always_inline __u64 wake_flags(__u32 pid, __u64 total)
{
	int wake = 0;
	if (pid && !bpf_map_lookup_elem(&seen_pids, &pid)) {
		__u8 one = 1;
		bpf_map_update_elem(&seen_pids, &pid, &one, BPF_ANY);
		count(DDPROF_CNT_NEW_PIDS);
		wake = 1;
	}
	return wake || bpf_ringbuf_query(&samples, BPF_RB_AVAIL_DATA) + total >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
												: BPF_RB_NO_WAKEUP;
}

/* What py_find_tstate returns when the interpreter could not be read (never a real
 * thread state's address). */
#define PY_TSTATE_UNREADABLE 1

/* The current thread's PyThreadState: the one kept for it when it still names this thread,
 * else the one of the interpreter's thread list that does (`want`: the tid, or
 * pthread_self for 3.8-3.10). 0 when the thread has none (remembered for a second).
 * A global function: the verifier checks it once, apart from its caller (a loop verified
 * inside the sampler's own program would be verified again for every path into it). */
__attribute__((noinline)) __u64 py_find_tstate(__u32 pid, __u32 tid, __u64 want)
{
	struct py_proc *cfg = bpf_map_lookup_elem(&py_procs, &pid);
	if (!cfg)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct py_tstate *known = bpf_map_lookup_elem(&py_tstates, &tid);
	if (known) {
		if (known->tstate) {
			__u64 id = 0;
			if (bpf_probe_read_user(&id, sizeof(id), (void *)(known->tstate + cfg->tstate_id)) == 0 && id == want)
				return known->tstate;
		} else if (now - known->checked_ns < 1000000000ULL) {
			return 0;
		}
	}
	count(DDPROF_CNT_PY_SCANS);
	__u64 interp = 0, t = 0, found = 0;
	if (bpf_probe_read_user(&interp, sizeof(interp), (void *)(cfg->runtime + cfg->interp_head)) != 0 || !interp ||
	    bpf_probe_read_user(&t, sizeof(t), (void *)(interp + cfg->threads_head)) != 0)
		return PY_TSTATE_UNREADABLE;
	for (int i = 0; i < DDPROF_MAX_PY_THREADS && t; i++) {
		__u64 id = 0;
		if (bpf_probe_read_user(&id, sizeof(id), (void *)(t + cfg->tstate_id)) != 0)
			break;
		if (id == want) {
			found = t;
			break;
		}
		if (bpf_probe_read_user(&t, sizeof(t), (void *)(t + cfg->tstate_next)) != 0)
			break;
	}
	struct py_tstate entry = { .tstate = found, .checked_ns = now };
	bpf_map_update_elem(&py_tstates, &tid, &entry, BPF_ANY);
	return found;
}

/* A pointer-sized field of the frame block: offsets are multiples of 8 (aligned loads). */
static __always_inline __u64 block_u64(struct scratch *s, __u32 off)
{
	return *(__u64 *)(s->pyblock + (off & (DDPROF_PY_FRAME_BLOCK - 8)));
}

/* Walks the Python frames of thread state `tstate` of process `pid` into this CPU's record,
 * at `at` (bytes after the header), as read: one induction variable and no version logic;
 * user space decodes (versions, shims, instructions). Returns the number of frames written
 * and, shifted by 16, the status. A global function (see py_find_tstate). */
__attribute__((noinline)) __u32 py_walk(__u32 pid, __u64 tstate, __u32 at)
{
	struct py_proc *cfg = bpf_map_lookup_elem(&py_procs, &pid);
	__u32 cpu = bpf_get_smp_processor_id();
	struct scratch *s = bpf_map_lookup_elem(&scratch_bufs, &cpu);
	if (!cfg || !s)
		return DDPROF_PY_NONE << 16;
	if (at > PY_OFF_MAX)
		at = PY_OFF_MAX;
	__u64 frame = 0;
	if (bpf_probe_read_user(&frame, sizeof(frame), (void *)(tstate + cfg->tstate_frame)) != 0)
		return DDPROF_PY_READ_FAILED << 16;
	if (cfg->cframe_frame != 0xffff && frame &&
	    bpf_probe_read_user(&frame, sizeof(frame), (void *)(frame + cfg->cframe_frame)) != 0)
		return DDPROF_PY_READ_FAILED << 16;
	if (!frame)
		return DDPROF_PY_NO_FRAME << 16;
	__u32 len = cfg->block_len;
	if (len > DDPROF_PY_FRAME_BLOCK)
		len = DDPROF_PY_FRAME_BLOCK;
	if (len < 8)
		len = 8;
	__u32 code_off = cfg->frame_code, prev_off = cfg->frame_previous, instr_off = cfg->frame_instr;
	__u32 entry_off = cfg->frame_entry & (DDPROF_PY_FRAME_BLOCK - 1);
	__u32 status = DDPROF_PY_OK, n = 0;
	for (; n < DDPROF_MAX_PY_FRAMES; n++) {
		if (!frame)
			break;
		if (bpf_probe_read_user(s->pyblock, len, (void *)frame) != 0) {
			status = DDPROF_PY_READ_FAILED;
			break;
		}
		__u32 slot = at + n * 16;
		if (slot > PY_OFF_MAX + PY_BYTES - 16)
			break;
		struct py_frame *pf = (struct py_frame *)(s->data + HDR_BYTES + slot);
		pf->code = block_u64(s, code_off);
		pf->instr = (block_u64(s, instr_off) & 0x00ffffffffffffffULL) | ((__u64)s->pyblock[entry_off] << 56);
		frame = block_u64(s, prev_off);
	}
	if (frame && status == DDPROF_PY_OK)
		status = DDPROF_PY_CUT;
	return (status << 16) | n;
}

/* The Python frames of the sampled thread, for CPython processes: written at `at` after the
 * header; returns how many, and sets the header's status. */
static __always_inline __u32 read_python(struct sample_header *h, __u32 at)
{
	struct py_proc *cfg = bpf_map_lookup_elem(&py_procs, &h->pid);
	if (!cfg)
		return 0;
	__u64 want = h->tid;
	if (cfg->id_is_pthread) {
#if HAVE_THREAD_POINTER
		struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
		want = THREAD_POINTER(task);
#else
		h->py_status = DDPROF_PY_NO_THREAD;
		return 0;
#endif
	}
	__u64 tstate = py_find_tstate(h->pid, h->tid, want);
	if (tstate == 0 || tstate == PY_TSTATE_UNREADABLE) {
		h->py_status = tstate ? DDPROF_PY_READ_FAILED : DDPROF_PY_NO_THREAD;
		return 0;
	}
	__u32 r = py_walk(h->pid, tstate, at);
	h->py_status = r >> 16;
	return r & 0xffff;
}

/* Unused where the Go window is not taken (no thread pointer: arm64). */
static __always_inline __attribute__((unused)) int read_user_u64(__u64 *dst, __u64 addr)
{
	return bpf_probe_read_user(dst, sizeof(*dst), (void *)addr);
}

/* The Go window (sampler.h): the sampled thread's other stack, written at `at` after the
 * header of this CPU's record, with the header's go_* fields; returns its length.
 *
 * g is the thread's current goroutine as the runtime keeps it in TLS (the runtime switches
 * it with the stack: g0 on the system stack, m.curg on the goroutine's). On g0 with a
 * goroutine set (Go calling C, systemstack, morestack: each saved the goroutine's state in
 * curg.sched first), the goroutine's stack from curg.sched.sp. On the goroutine's stack of a
 * cgo binary, g0's stack from m.g0.sched.sp, which runtime.cgocallback sets to its own
 * frame on g0 for the length of a callback (outside one it is the top of g0: a few hundred
 * bytes, as the copy stops at the stack's top, g.stack.hi). The signal stack (gsignal), a
 * thread with no g (C threads) or memory that does not read: no window. Nothing read here
 * is trusted: user space walks the window and joins it only where its frames fit.
 * A global function (see py_find_tstate). */
__attribute__((noinline)) __u32 go_window(__u32 pid, __u32 at)
{
#if HAVE_THREAD_POINTER
	struct go_proc *cfg = bpf_map_lookup_elem(&go_procs, &pid);
	__u32 cpu = bpf_get_smp_processor_id();
	struct scratch *s = bpf_map_lookup_elem(&scratch_bufs, &cpu);
	if (!cfg || !s)
		return 0;
	struct sample_header *h = (struct sample_header *)s->data;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	__u64 tp = THREAD_POINTER(task);
	__u64 g = 0, m = 0, g0 = 0, curg = 0, sp = 0, pc = 0, bp = 0, hi = 0, g0_sp = 0, stack_g;
	__u32 kind;
	if (!tp || read_user_u64(&g, tp + cfg->tls_g) || !g || read_user_u64(&m, g + cfg->g_m) || !m ||
	    read_user_u64(&g0, m + cfg->m_g0))
		return 0;
	/* Most samples of a pure Go program are on goroutines: nothing more to read. */
	if ((g != g0 && !cfg->cgo) || read_user_u64(&curg, m + cfg->m_curg))
		return 0;
	if (g == g0 && curg && curg != g0) {
		__u64 sched = curg + cfg->g_sched;
		if (read_user_u64(&sp, sched) || read_user_u64(&pc, sched + cfg->gobuf_pc) ||
		    read_user_u64(&bp, sched + cfg->gobuf_bp) || read_user_u64(&g0_sp, g0 + cfg->g_sched))
			return 0;
		stack_g = curg;
		kind = DDPROF_GO_WINDOW_CURG;
	} else if (g == curg && g0 && cfg->cgo) {
		if (read_user_u64(&sp, g0 + cfg->g_sched))
			return 0;
		g0_sp = sp;
		stack_g = g0;
		kind = DDPROF_GO_WINDOW_G0;
	} else {
		return 0;
	}
	if (!sp)
		return 0;
	__u32 len = DDPROF_GO_WINDOW_BYTES, cut = 1;
	if (read_user_u64(&hi, stack_g + cfg->g_stack_hi) == 0 && hi > sp && hi - sp <= DDPROF_GO_WINDOW_BYTES) {
		len = hi - sp;
		cut = 0;
	}
	if (at > GO_OFF_MAX)
		at = GO_OFF_MAX;
	__u8 *dst = s->data + HDR_BYTES + at;
	if (len > DDPROF_GO_WINDOW_BYTES)
		len = DDPROF_GO_WINDOW_BYTES;
	if (bpf_probe_read_user(dst, len, (void *)sp) != 0) {
		/* A page that does not read: what comes before it. */
		__u32 part = PAGE_SIZE - (sp & (PAGE_SIZE - 1));
		if (part > len)
			part = len;
		if (part > DDPROF_GO_WINDOW_BYTES || bpf_probe_read_user(dst, part, (void *)sp) != 0)
			return 0;
		len = part;
		cut = 1;
	}
	h->go_sp = sp;
	h->go_pc = pc;
	h->go_bp = bp;
	h->go_g0_sp = g0_sp;
	h->go_window = kind;
	if (cut)
		h->flags |= DDPROF_F_GO_WINDOW_CUT;
	return len;
#else
	/* arm64: g lives in a register (x28) in Go code and at a libc-specific TLS slot: not yet. */
	return 0;
#endif
}

/* The stack record of the current task into this CPU's scratch slot, then the ring buffer:
 * the kernel stack (when `kernel_mode`), the user stack snapshot from `regs` (user mode's:
 * the interrupt's, or the task's saved ones), the frame-pointer chain, the Python frames and
 * the Go window, as sampler.h lays them out. Shared by the CPU sampler and the off-CPU
 * switch-out (inlined into each: `ctx` is the program's own, which bpf_get_stack needs);
 * `kskip` kernel frames are left off the leaf end of the kernel stack. Returns 0 when the
 * record reached the ring buffer. */
static __always_inline int emit_stack(void *ctx, struct scratch *s, __u32 kind, __u32 pid, __u32 tid, __u32 cpu,
				      __u64 now, bpf_user_pt_regs_t *regs, __u32 flags, __u64 kskip)
{
	struct sample_header *h = (struct sample_header *)s->data;

	h->kind = kind;
	h->cpu = cpu;
	h->ktime_ns = now;
	h->pid = pid;
	h->tid = tid;
	h->flags = flags;
	h->kstack_len = 0;
	h->ustack_len = 0;
	h->ufp_len = 0;
	h->py_len = 0;
	h->py_status = DDPROF_PY_NONE;
	h->ustack_below_sp = 0;
	h->_pad = 0;
	h->go_sp = 0;
	h->go_pc = 0;
	h->go_bp = 0;
	h->go_g0_sp = 0;
	h->go_window_len = 0;
	h->go_window = DDPROF_GO_WINDOW_NONE;
	__u32 *gen = bpf_map_lookup_elem(&map_gens, &pid);
	h->map_gen = gen ? *gen : 0;
	bpf_get_current_comm(h->comm, sizeof(h->comm));

	__u32 ulen = 0;
	if (REGS_USER_MODE(regs) && REGS_SP(regs) != 0) {
		h->flags |= DDPROF_F_USER_REGS;
		copy_regs(h->regs, regs);
		__u32 clamped = 0;
		/* The red zone first; where it is not mapped (a stack used to its lowest page),
		 * from sp. */
		__u64 sp = REGS_SP(regs);
		ulen = copy_stack(sp - DDPROF_RED_ZONE, ustack_size, &clamped);
		if (ulen > DDPROF_RED_ZONE) {
			h->ustack_below_sp = DDPROF_RED_ZONE;
		} else {
			clamped = 0;
			ulen = copy_stack(sp, ustack_size, &clamped);
		}
		if (clamped)
			count(DDPROF_CNT_USTACK_CLAMPED);
		if (ulen >= ustack_size)
			h->flags |= DDPROF_F_USTACK_CUT;
		if (ulen == 0)
			count(DDPROF_CNT_USTACK_FAILED);
	} else {
		__builtin_memset(h->regs, 0, sizeof(h->regs));
		count(DDPROF_CNT_REGS_FAILED);
	}
	ulen &= DDPROF_MAX_USTACK_BYTES * 2 - 1;
	if (ulen > DDPROF_MAX_USTACK_BYTES)
		ulen = DDPROF_MAX_USTACK_BYTES;
	h->ustack_len = ulen;

	__u32 kstack_off = (ulen + 7) & ~7U;
	if (kstack_off > DDPROF_MAX_USTACK_BYTES)
		kstack_off = DDPROF_MAX_USTACK_BYTES;
	__u32 klen = 0;
	if (h->flags & DDPROF_F_KERNEL_MODE)
		klen = get_stack(ctx, s->data + HDR_BYTES + kstack_off, KSTACK_BYTES, kskip & BPF_F_SKIP_FIELD_MASK,
				 DDPROF_CNT_KSTACK_FAILED);
	if (klen > DDPROF_MAX_KSTACK_DEPTH)
		klen = DDPROF_MAX_KSTACK_DEPTH;
	h->kstack_len = klen;

	/* The kernel's own user frame-pointer walker (what perf --call-graph fp uses) follows
	 * the chain wherever it leads, across stacks, where the snapshot stops. */
	__u32 ufp_off = kstack_off + klen * 8;
	if (ufp_off > DDPROF_MAX_USTACK_BYTES + KSTACK_BYTES)
		ufp_off = DDPROF_MAX_USTACK_BYTES + KSTACK_BYTES;
	__u32 flen = 0;
	if ((h->flags & DDPROF_F_USER_REGS) && bpf_map_lookup_elem(&fp_chain_pids, &pid))
		flen = get_stack(ctx, s->data + HDR_BYTES + ufp_off, UFP_BYTES, BPF_F_USER_STACK, DDPROF_CNT_UFP_FAILED);
	if (flen > DDPROF_MAX_UFP_DEPTH)
		flen = DDPROF_MAX_UFP_DEPTH;
	h->ufp_len = flen;

	/* Python frames, for CPython processes, after the chain. */
	__u32 py_off = ufp_off + flen * 8;
	if (py_off > PY_OFF_MAX)
		py_off = PY_OFF_MAX;
	h->py_status = DDPROF_PY_NONE;
	__u32 plen = read_python(h, py_off);
	if (plen > DDPROF_MAX_PY_FRAMES)
		plen = DDPROF_MAX_PY_FRAMES;
	h->py_len = plen;

	/* The Go window, for Go programs, last. */
	__u32 go_off = py_off + plen * 16;
	if (go_off > GO_OFF_MAX)
		go_off = GO_OFF_MAX;
	__u32 glen = 0;
	if ((h->flags & DDPROF_F_USER_REGS) && bpf_map_lookup_elem(&go_procs, &pid))
		glen = go_window(pid, go_off);
	/* clang knows the bound from go_window's body and would drop the check the verifier,
	 * which checks a global function apart, needs. */
	barrier_var(glen);
	if (glen > DDPROF_GO_WINDOW_BYTES)
		glen = DDPROF_GO_WINDOW_BYTES;
	h->go_window_len = glen;

	__u64 total = HDR_BYTES + go_off + glen;
	if (total > SCRATCH_BYTES)
		total = SCRATCH_BYTES;
	if (bpf_ringbuf_output(&samples, s->data, total, wake_flags(pid, total)) != 0) {
		count(DDPROF_CNT_RB_DROPPED);
		return -1;
	}
	return 0;
}

SEC("perf_event")
int ddprof_sample(struct bpf_perf_event_data *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	__u32 tid = (__u32)pid_tgid;

	count(DDPROF_CNT_SAMPLES);
	if (tid == 0 && !keep_idle) { /* the idle task is not CPU time anyone spent */
		count(DDPROF_CNT_FILTERED);
		return 0;
	}
	if (filter_pids && !bpf_map_lookup_elem(&pid_filter, &pid)) {
		count(DDPROF_CNT_FILTERED);
		return 0;
	}

	__u32 cpu = bpf_get_smp_processor_id();
	struct scratch *s = bpf_map_lookup_elem(&scratch_bufs, &cpu);
	if (!s)
		return 0;

	/* User registers: from the interrupt when it hit user mode, else the task's saved ones. */
	bpf_user_pt_regs_t regs;
	__u32 flags = 0;
	if (REGS_USER_MODE(&ctx->regs)) {
		__builtin_memcpy(&regs, &ctx->regs, sizeof(regs));
	} else {
		flags |= DDPROF_F_KERNEL_MODE;
		saved_user_regs(&regs);
	}
	emit_stack(ctx, s, DDPROF_REC_CPU, pid, tid, cpu, bpf_ktime_get_ns(), &regs, flags, 0);
	return 0;
}

#include "offcpu.bpf.inc"

static __always_inline void bump_map_gen(__u32 pid)
{
	__u32 *gen = bpf_map_lookup_elem(&map_gens, &pid);
	if (gen) {
		__sync_fetch_and_add(gen, 1);
		return;
	}
	__u32 one = 1;
	bpf_map_update_elem(&map_gens, &pid, &one, BPF_NOEXIST);
}

/* exec() replaced the process's program: its mappings are new from the next sample on. */
SEC("raw_tp/sched_process_exec")
int ddprof_exec(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&seen_pids, &pid))
		return 0;
	count(DDPROF_CNT_EXECS);
	bump_map_gen(pid);
	return 0;
}

/* The two ids of a task (CO-RE: the kernel's own layout; the ___ids suffix is dropped when
 * relocating). */
struct task_struct___ids {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

/* A followed process started another (fork, clone without CLONE_THREAD): sample it too,
 * from its first instruction, whatever it execs. Runs in the parent. */
SEC("raw_tp/sched_process_fork")
int ddprof_fork(struct bpf_raw_tracepoint_args *ctx)
{
	if (!follow_children)
		return 0;
	struct task_struct___ids *child = (struct task_struct___ids *)ctx->args[1];
	__u32 pid = BPF_CORE_READ(child, pid), tgid = BPF_CORE_READ(child, tgid);
	__u32 parent = bpf_get_current_pid_tgid() >> 32;
	if (pid != tgid || !bpf_map_lookup_elem(&pid_filter, &parent))
		return 0; /* a thread (its process is in already), or not ours */
	__u8 one = 1;
	count(bpf_map_update_elem(&pid_filter, &tgid, &one, BPF_ANY) ? DDPROF_CNT_FOLLOW_FULL : DDPROF_CNT_FOLLOWED);
	return 0;
}

/* A followed process's main thread exited: its pid leaves the filter, which stays bounded
 * however many children come and go (and a reused pid is not sampled by mistake). */
SEC("raw_tp/sched_process_exit")
int ddprof_exit(void *ctx)
{
	if (!follow_children)
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 pid = pid_tgid >> 32;
	if (pid == (__u32)pid_tgid)
		bpf_map_delete_elem(&pid_filter, &pid);
	return 0;
}

/* Only what the unmap test reads of a VMA (CO-RE: the kernel's own layout). */
struct vm_area_struct {
	unsigned long vm_start;
	unsigned long vm_end;
	unsigned long vm_flags;
} __attribute__((preserve_access_index));
#define VM_EXEC 0x4
/* VMAs of one munmap() looked at: a library's are four or five. */
#define UNMAP_VMAS 8

struct unmap_scan {
	__u64 next;
	__u64 end;
	__u32 exec;
};

static long unmap_vma(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct unmap_scan *scan = data;
	if (vma->vm_start < scan->end && (vma->vm_flags & VM_EXEC))
		scan->exec = 1;
	scan->next = vma->vm_end;
	return 0;
}

struct sys_enter_munmap_args {
	__u64 common;
	long id;
	unsigned long args[6];
};

/* munmap() of executable code (dlclose): a library loaded later at the same addresses must
 * not keep the first one's names. Data unmaps (large frees) leave the generation alone. */
SEC("tracepoint/syscalls/sys_enter_munmap")
int ddprof_munmap(struct sys_enter_munmap_args *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (!bpf_map_lookup_elem(&seen_pids, &pid))
		return 0;
	struct unmap_scan scan = { .next = ctx->args[0], .end = ctx->args[0] + ctx->args[1], .exec = 0 };
	struct task_struct *task = bpf_get_current_task_btf();
	for (int i = 0; i < UNMAP_VMAS && scan.next < scan.end && !scan.exec; i++) {
		__u64 at = scan.next;
		if (bpf_find_vma(task, at, unmap_vma, &scan, 0) != 0 || scan.next <= at)
			break;
	}
	if (scan.exec) {
		count(DDPROF_CNT_CODE_UNMAPS);
		bump_map_gen(pid);
	}
	return 0;
}
