/* The record the kernel programs send to user space, shared with `velo_ebpf::RawEvent`.
 * A test on the Rust side reads the _Static_asserts below and checks its layout against them. */
#ifndef VELO_EVENT_H
#define VELO_EVENT_H

#define VELO_PATH_LEN 256

enum velo_kind {
	VELO_SYSCALL = 1,
	VELO_FORK = 2,
	VELO_EXEC = 3,
	VELO_EXIT = 4,
};

struct velo_event {
	__u32 kind;     /* enum velo_kind */
	__u32 pid;      /* thread group id */
	__u32 tid;
	__u32 aux;      /* fork: the child's tgid; exit: the exit code */
	__s64 nr;       /* syscall number; fork: 1 for a thread */
	__s64 ret;      /* syscall return value */
	__u64 args[6];
	__u64 ip;       /* user instruction pointer at the syscall */
	char comm[16];
	char path0[VELO_PATH_LEN];
	char path1[VELO_PATH_LEN];
	char returned[VELO_PATH_LEN];
};

_Static_assert(sizeof(struct velo_event) == 872, "size");
_Static_assert(__builtin_offsetof(struct velo_event, nr) == 16, "nr");
_Static_assert(__builtin_offsetof(struct velo_event, args) == 32, "args");
_Static_assert(__builtin_offsetof(struct velo_event, ip) == 80, "ip");
_Static_assert(__builtin_offsetof(struct velo_event, comm) == 88, "comm");
_Static_assert(__builtin_offsetof(struct velo_event, path0) == 104, "path0");
_Static_assert(__builtin_offsetof(struct velo_event, path1) == 360, "path1");
_Static_assert(__builtin_offsetof(struct velo_event, returned) == 616, "returned");

/* How user space describes a watched syscall (`watched` map, indexed by number):
 * bits 0-2: path argument + 1; bits 3-5: second path argument + 1;
 * bits 6-8: argument of a returned path + 1; bit 9: the returned path is `ret` bytes long
 * (readlink) rather than NUL-terminated (getcwd); bit 10: watched at all. */
#define VELO_SPEC_WATCHED (1u << 10)

#endif
