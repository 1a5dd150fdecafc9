// SPDX-License-Identifier: GPL-2.0
/* velo's tracer, kernel side.
 *
 * - raw_tracepoint sys_enter / sys_exit: for a traced process and a watched syscall, the entry
 *   saves the arguments (and execve's path, whose memory is gone at exit) per thread; the exit
 *   reads the path arguments (paged in by then) and any returned path, and sends one event.
 * - tp_btf sched_process_fork / exec / exit: keep the set of traced processes (the command and
 *   its descendants) and report the process tree.
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

/* Only the fields used, relocated against the kernel's BTF (CO-RE). */
struct task_struct {
	int pid;
	int tgid;
	int exit_code;
} __attribute__((preserve_access_index));

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

struct pending {
	__u64 args[6];
	__u64 ip;
	__u32 nr;
	__u32 spec;
	char exec_path[VELO_PATH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* allocated per process, not 65536 up front */
	__type(key, __u32);
	__type(value, __u8);
} traced SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u32);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* 65536 × 320 bytes preallocated cost ~50 ms */
	__type(key, __u32);
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pending);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 26); /* 64 MiB: ~77,000 records of headroom */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

/* Waking the reader for every record costs a context switch each, which a build on two cores
 * feels. Records are submitted silently; the reader polls every few milliseconds, and is woken
 * early only when the buffer is a quarter full. */
static __always_inline __u64 wakeup_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > (1 << 24) ? BPF_RB_FORCE_WAKEUP
									     : BPF_RB_NO_WAKEUP;
}

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *d = bpf_map_lookup_elem(&dropped, &zero);
	if (d)
		__sync_fetch_and_add(d, 1);
}

#define NR_EXECVE 59
#define NR_EXECVEAT 322

SEC("raw_tracepoint/sys_enter")
int velo_sys_enter(void *ctx)
{
	/* The context read as a plain u64 array: aya cannot relocate CO-RE accesses to
	 * bpf_raw_tracepoint_args. args[0] = struct pt_regs *, args[1] = syscall number. */
	__u64 *a = ctx;
	__u32 nr = (__u32)a[1];
	if (nr >= 512)
		return 0;
	__u32 *spec = bpf_map_lookup_elem(&watched, &nr);
	if (!spec || !(*spec & VELO_SPEC_WATCHED))
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	if (!bpf_map_lookup_elem(&traced, &tgid))
		return 0;
	__u32 zero = 0;
	struct pending *p = bpf_map_lookup_elem(&scratch, &zero);
	if (!p)
		return 0;
	struct velo_pt_regs *regs = (struct velo_pt_regs *)a[0];
	p->nr = nr;
	p->spec = *spec;
	bpf_probe_read_kernel(&p->args[0], 8, &regs->di);
	bpf_probe_read_kernel(&p->args[1], 8, &regs->si);
	bpf_probe_read_kernel(&p->args[2], 8, &regs->dx);
	bpf_probe_read_kernel(&p->args[3], 8, &regs->r10);
	bpf_probe_read_kernel(&p->args[4], 8, &regs->r8);
	bpf_probe_read_kernel(&p->args[5], 8, &regs->r9);
	bpf_probe_read_kernel(&p->ip, 8, &regs->ip);
	p->exec_path[0] = 0;
	if (nr == NR_EXECVE)
		bpf_probe_read_user_str(p->exec_path, sizeof(p->exec_path), (void *)p->args[0]);
	else if (nr == NR_EXECVEAT)
		bpf_probe_read_user_str(p->exec_path, sizeof(p->exec_path), (void *)p->args[1]);
	bpf_map_update_elem(&pending, &tid, p, BPF_ANY);
	return 0;
}

static __always_inline __u64 arg(struct pending *p, __u32 i)
{
	switch (i) {
	case 0: return p->args[0];
	case 1: return p->args[1];
	case 2: return p->args[2];
	case 3: return p->args[3];
	case 4: return p->args[4];
	default: return p->args[5];
	}
}

SEC("raw_tracepoint/sys_exit")
int velo_sys_exit(void *ctx)
{
	__u64 *a = ctx;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	struct pending *p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	struct velo_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop();
		bpf_map_delete_elem(&pending, &tid);
		return 0;
	}
	__s64 ret = (__s64)a[1];
	__u32 spec = p->spec;
	e->kind = VELO_SYSCALL;
	e->pid = tgid;
	e->tid = tid;
	e->aux = 0;
	e->nr = p->nr;
	e->ret = ret;
	for (int i = 0; i < 6; i++)
		e->args[i] = p->args[i];
	e->ip = p->ip;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->path0[0] = 0;
	e->path1[0] = 0;
	e->returned[0] = 0;
	__u32 a0 = spec & 7, a1 = (spec >> 3) & 7, r = (spec >> 6) & 7;
	if (p->exec_path[0])
		bpf_probe_read_kernel_str(e->path0, sizeof(e->path0), p->exec_path);
	else if (a0)
		bpf_probe_read_user_str(e->path0, sizeof(e->path0), (void *)arg(p, a0 - 1));
	if (a1)
		bpf_probe_read_user_str(e->path1, sizeof(e->path1), (void *)arg(p, a1 - 1));
	if (r && ret > 0) {
		void *buf = (void *)arg(p, r - 1);
		if (spec & (1u << 9)) {
			__u32 len = ret < VELO_PATH_LEN - 1 ? (__u32)ret : VELO_PATH_LEN - 1;
			len &= VELO_PATH_LEN - 1;
			if (bpf_probe_read_user(e->returned, len, buf) == 0)
				e->returned[len & (VELO_PATH_LEN - 1)] = 0;
		} else {
			bpf_probe_read_user_str(e->returned, sizeof(e->returned), buf);
		}
	}
	bpf_ringbuf_submit(e, wakeup_flags());
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

static __always_inline void send_process(__u32 kind, __u32 pid, __u32 tid, __u32 aux, __s64 nr,
					 const char *path)
{
	struct velo_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count_drop();
		return;
	}
	e->kind = kind;
	e->pid = pid;
	e->tid = tid;
	e->aux = aux;
	e->nr = nr;
	e->ret = 0;
	e->ip = 0;
	e->path0[0] = 0;
	e->path1[0] = 0;
	e->returned[0] = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (path)
		bpf_probe_read_kernel_str(e->path0, sizeof(e->path0), path);
	bpf_ringbuf_submit(e, wakeup_flags());
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(velo_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid;
	if (!bpf_map_lookup_elem(&traced, &ptgid))
		return 0;
	__u32 ctgid = child->tgid, cpid = child->pid;
	__u8 one = 1;
	bpf_map_update_elem(&traced, &ctgid, &one, BPF_ANY);
	send_process(VELO_FORK, ptgid, cpid, ctgid, ctgid == ptgid, 0);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(velo_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	__u32 tgid = p->tgid;
	if (!bpf_map_lookup_elem(&traced, &tgid))
		return 0;
	send_process(VELO_EXEC, tgid, p->pid, 0, 0, bprm->filename);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(velo_exit, struct task_struct *p)
{
	__u32 tgid = p->tgid;
	if ((__u32)p->pid != tgid || !bpf_map_lookup_elem(&traced, &tgid))
		return 0;
	send_process(VELO_EXIT, tgid, tgid, (__u32)p->exit_code, 0, 0);
	bpf_map_delete_elem(&traced, &tgid);
	return 0;
}
