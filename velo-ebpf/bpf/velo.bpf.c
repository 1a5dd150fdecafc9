// SPDX-License-Identifier: GPL-2.0
/* velo's tracer, kernel side.
 *
 * - tp_btf sys_exit: for a traced process and a watched syscall, reads the arguments from the
 *   register frame (typed by the kernel's BTF, so plain loads), the path arguments (paged in by
 *   then) and any returned path, and sends one record. Nothing is hooked at syscall entry: the
 *   one call whose arguments are gone at exit, a successful exec, gets its path from the exec
 *   record sched_process_exec sent just before, and a hook on entry cost every syscall of the
 *   machine a program run.
 * - tp_btf sched_process_fork / exec / exit: keep the set of traced processes (the command and
 *   its descendants) and report the process tree. The few kernel struct fields they read sit
 *   at offsets user space found in the kernel's BTF (the `layout` map), not at CO-RE
 *   relocations: resolving those made the loader parse all of the kernel's BTF, which took
 *   most of the tracer's start-up.
 * - a ring buffer for events and a counter of events dropped when it is full.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "event.h"

char LICENSE[] SEC("license") = "GPL";

/* The x86_64 register frame, an ABI (arch/x86/include/uapi/asm/ptrace.h). */
struct velo_pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

/* Byte offsets of the kernel struct fields read, filled by user space (`velo_ebpf::Layout`). */
struct layout {
	__u32 task_pid;
	__u32 task_tgid;
	__u32 task_exit_code;
	__u32 bprm_filename;
};

/* A record being put together: the header, then its strings at variable offsets. Each string
 * is read with at most VELO_PATH_LEN - 1 bytes, so a string starts below 2 × 256 and ends below
 * 3 × 256: offsets masked with 511 and 1023 are no-ops the verifier can see as bounds. */
struct record {
	struct velo_event h;
	char data[4 * VELO_PATH_LEN];
};
#define STR_MAX (VELO_PATH_LEN - 1)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	/* Live processes of the traced tree; the buckets are allocated up front (65536 of them took
	 * ~0.7 ms of start-up), the entries per process. */
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u8);
} traced SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u32);
} watched SEC(".maps");

/* Per-CPU scratch: index 0 for syscall records, 1 for process records, which
 * the scheduler's tracepoints may send while a syscall record is being built on this CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct record);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	/* Sized by user space (`velo trace --buffer`, 8 MiB by default: ~50,000 records, as a stat
	 * call's record is ~150 bytes); each 16 MiB costs ~10 ms of start-up. */
	__uint(max_entries, 1 << 23);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct layout);
} layout SEC(".maps");

/* Bytes this CPU queued since it last woke the reader. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unwoken SEC(".maps");

/* Waking the reader for every record costs a context switch each, which a build on two cores
 * feels. Records are submitted silently; the reader polls every few milliseconds, and each CPU
 * wakes it early once it has queued an eighth of the ring since it last did. The count is per
 * CPU: asking the ring how full it is (BPF_RB_AVAIL_DATA) reads the positions every CPU
 * writes, a cache line bounced between cores on every syscall. */
static __always_inline __u64 wakeup_flags(__u32 size)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&unwoken, &zero);
	if (!n)
		return 0;
	*n += size;
	if (*n < bpf_ringbuf_query(&events, BPF_RB_RING_SIZE) / 8)
		return BPF_RB_NO_WAKEUP;
	*n = 0;
	return BPF_RB_FORCE_WAKEUP;
}

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *d = bpf_map_lookup_elem(&dropped, &zero);
	if (d)
		__sync_fetch_and_add(d, 1);
}

/* Sends the header and the `len` bytes of strings after it. */
static __always_inline void send(struct record *r, __u32 len)
{
	__u32 size = sizeof(r->h) + len;
	if (size > sizeof(*r))
		size = sizeof(*r);
	if (bpf_ringbuf_output(&events, r, size, wakeup_flags(size)))
		count_drop();
}

/* Reads a user string to data[off]; returns its length with the NUL, 0 when unreadable. */
static __always_inline __u32 user_str(struct record *r, __u32 off, const void *src)
{
	long n = bpf_probe_read_user_str(&r->data[off & (2 * VELO_PATH_LEN - 1)], STR_MAX, src);
	return n > 0 ? (__u32)n & STR_MAX : 0;
}

static __always_inline __u32 kernel_str(struct record *r, __u32 off, const void *src)
{
	long n = bpf_probe_read_kernel_str(&r->data[off & (2 * VELO_PATH_LEN - 1)], STR_MAX, src);
	return n > 0 ? (__u32)n & STR_MAX : 0;
}

#define NR_FCNTL 72
#define NR_EXECVE 59
#define NR_EXECVEAT 322
#define F_DUPFD 0
#define F_DUPFD_CLOEXEC 1030

/* sys_exit(struct pt_regs *regs, long ret). A tp_btf program: `regs` is typed by the kernel's
 * BTF, so the verifier lets its fields be read by plain loads (checked against the kernel's
 * struct pt_regs, whose x86_64 layout is an ABI) rather than a bpf_probe_read_kernel of the
 * frame on every syscall of the machine. A call that is not wanted (the `fcntl`s other than
 * F_DUPFD*, which `find` makes twice per directory) leaves after two loads and an array
 * lookup. */
SEC("tp_btf/sys_exit")
int velo_sys_exit(__u64 *ctx)
{
	const struct velo_pt_regs *regs = (const void *)ctx[0];
	__u64 nr = regs->orig_ax;
	if (nr >= 512)
		return 0;
	__u32 key = nr;
	__u32 *specp = bpf_map_lookup_elem(&watched, &key);
	if (!specp || !(*specp & VELO_SPEC_WATCHED))
		return 0;
	__u32 spec = *specp;
	if (nr == NR_FCNTL && regs->si != F_DUPFD && regs->si != F_DUPFD_CLOEXEC)
		return 0;
	__s64 ret = (__s64)ctx[1];
	if ((spec & VELO_SPEC_DESCRIPTOR) && ret < 0)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!bpf_map_lookup_elem(&traced, &tgid))
		return 0;
	if (spec & VELO_SPEC_DESCRIPTOR) {
		/* The header alone, built in place in the ring: the reader wants the descriptors,
		 * not a name. (`find` closes a descriptor for every file it stats.) */
		struct velo_event *d = bpf_ringbuf_reserve(&events, sizeof(*d), 0);
		if (!d) {
			count_drop();
			return 0;
		}
		__builtin_memset(d, 0, sizeof(*d));
		d->kind = VELO_DESCRIPTOR;
		d->pid = tgid;
		d->tid = tid;
		d->nr = nr;
		d->ret = ret;
		d->args[0] = regs->di;
		d->args[1] = regs->si;
		d->args[2] = regs->dx;
		bpf_ringbuf_submit(d, wakeup_flags(sizeof(*d)));
		return 0;
	}
	__u32 zero = 0;
	struct record *r = bpf_map_lookup_elem(&scratch, &zero);
	if (!r)
		return 0;
	struct velo_event *h = &r->h;
	h->args[0] = regs->di;
	h->args[1] = regs->si;
	h->args[2] = regs->dx;
	h->args[3] = regs->r10;
	h->args[4] = regs->r8;
	h->args[5] = regs->r9;
	h->ip = regs->ip;
	h->kind = VELO_SYSCALL;
	h->pid = tgid;
	h->tid = tid;
	h->aux = 0;
	h->nr = nr;
	h->ret = ret;
	h->len[0] = h->len[1] = h->len[2] = 0;
	h->pad = 0;
	/* Arguments are picked by index into args[] (masked: the verifier sees the bound), not
	 * by a switch per string, whose branches multiplied the states the verifier explores. */
	if ((nr == NR_EXECVE || nr == NR_EXECVEAT) && ret == 0) {
		/* The exec replaced the registers and the memory the arguments were in (args[] and
		 * ip are the new program's): the header alone, after the exec record with the path. */
		send(r, 0);
		return 0;
	}
	__u32 a0 = spec & 7, a1 = (spec >> 3) & 7, rarg = (spec >> 6) & 7;
	const __u64 *args = h->args;
	__u32 off = 0, n = 0;
	if (a0)
		n = user_str(r, off, (void *)args[(a0 - 1) & 7]);
	h->len[0] = n;
	off += n;
	if (a1) {
		n = user_str(r, off, (void *)args[(a1 - 1) & 7]);
		h->len[1] = n;
		off += n;
	}
	if (rarg && ret > 0) {
		void *buf = (void *)args[(rarg - 1) & 7];
		if (spec & (1u << 9)) {
			/* readlink: `ret` bytes, no NUL. */
			__u32 len = ret < STR_MAX - 1 ? (__u32)ret : STR_MAX - 1;
			len &= STR_MAX;
			off &= 2 * VELO_PATH_LEN - 1;
			if (len && bpf_probe_read_user(&r->data[off], len, buf) == 0) {
				r->data[(off + len) & (4 * VELO_PATH_LEN - 1)] = 0;
				h->len[2] = len + 1;
				off += len + 1;
			}
		} else {
			n = user_str(r, off, buf);
			h->len[2] = n;
			off += n;
		}
	}
	send(r, off & (4 * VELO_PATH_LEN - 1));
	return 0;
}

static __always_inline void send_process(__u32 kind, __u32 pid, __u32 tid, __u32 aux, __s64 nr,
					 const char *path)
{
	__u32 one = 1;
	struct record *r = bpf_map_lookup_elem(&scratch, &one);
	if (!r)
		return;
	struct velo_event *h = &r->h;
	h->kind = kind;
	h->pid = pid;
	h->tid = tid;
	h->aux = aux;
	h->nr = nr;
	h->ret = 0;
	for (int i = 0; i < 6; i++)
		h->args[i] = 0;
	h->ip = 0;
	h->len[0] = h->len[1] = h->len[2] = 0;
	h->pad = 0;
	__u32 n = path ? kernel_str(r, 0, path) : 0;
	h->len[0] = n;
	send(r, n);
}

/* A kernel u32 at `base + off`, 0 when unreadable. */
static __always_inline __u32 kernel_u32(const void *base, __u32 off)
{
	__u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), base + off);
	return v;
}

static __always_inline const struct layout *fields(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&layout, &zero);
}

/* sched_process_fork(struct task_struct *parent, struct task_struct *child); a tp_btf
 * program's context is its tracepoint's arguments, as u64s. */
SEC("tp_btf/sched_process_fork")
int velo_fork(__u64 *ctx)
{
	const struct layout *l = fields();
	if (!l)
		return 0;
	/* In the parent's context. */
	__u32 ptgid = bpf_get_current_pid_tgid() >> 32;
	const void *child = (const void *)ctx[1];
	if (!bpf_map_lookup_elem(&traced, &ptgid))
		return 0;
	__u32 ctgid = kernel_u32(child, l->task_tgid), cpid = kernel_u32(child, l->task_pid);
	__u8 one = 1;
	bpf_map_update_elem(&traced, &ctgid, &one, BPF_ANY);
	send_process(VELO_FORK, ptgid, cpid, ctgid, ctgid == ptgid, 0);
	return 0;
}

/* sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm), in the
 * context of the process that exec'd. */
SEC("tp_btf/sched_process_exec")
int velo_exec(__u64 *ctx)
{
	const struct layout *l = fields();
	if (!l)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if (!bpf_map_lookup_elem(&traced, &tgid))
		return 0;
	const char *filename = 0;
	bpf_probe_read_kernel(&filename, sizeof(filename), (const void *)ctx[2] + l->bprm_filename);
	send_process(VELO_EXEC, tgid, (__u32)id, 0, 0, filename);
	return 0;
}

/* sched_process_exit(struct task_struct *p, ...), in the context of the exiting thread. */
SEC("tp_btf/sched_process_exit")
int velo_exit(__u64 *ctx)
{
	const struct layout *l = fields();
	if (!l)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if ((__u32)id != tgid || !bpf_map_lookup_elem(&traced, &tgid))
		return 0;
	__u32 code = kernel_u32((const void *)ctx[0], l->task_exit_code);
	send_process(VELO_EXIT, tgid, tgid, code, 0, 0);
	bpf_map_delete_elem(&traced, &tgid);
	return 0;
}
