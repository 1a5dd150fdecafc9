/* The record the kernel programs send to user space, shared with `velo_ebpf::Header`.
 * A test on the Rust side reads the _Static_asserts below and checks its layout against them.
 *
 * A record is a fixed header followed by its strings, each NUL-terminated and as long as it is:
 * `len[0]` bytes of the first path argument, `len[1]` of the second, `len[2]` of a returned
 * path (0 when absent). Variable length keeps a stat call's record near 150 bytes rather than
 * the 900 that three fixed path buffers took, so the ring holds six times the events and the
 * reader copies a sixth of the bytes. */
#ifndef VELO_EVENT_H
#define VELO_EVENT_H

#define VELO_PATH_LEN 256

enum velo_kind {
	VELO_SYSCALL = 1,
	VELO_FORK = 2,
	VELO_EXEC = 3,
	VELO_EXIT = 4,
	/* A descriptor changed (close, dup, dup2, dup3, fcntl F_DUPFD*, close_range): the header
	 * alone, so the reader can follow directory descriptors without asking /proc. */
	VELO_DESCRIPTOR = 5,
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
	__u16 len[3];   /* bytes of each string after the header, NUL included */
	__u16 pad;
};

_Static_assert(sizeof(struct velo_event) == 96, "size");
_Static_assert(__builtin_offsetof(struct velo_event, nr) == 16, "nr");
_Static_assert(__builtin_offsetof(struct velo_event, args) == 32, "args");
_Static_assert(__builtin_offsetof(struct velo_event, ip) == 80, "ip");
_Static_assert(__builtin_offsetof(struct velo_event, len) == 88, "len");

/* How user space describes a watched syscall (`watched` map, indexed by number):
 * bits 0-2: path argument + 1; bits 3-5: second path argument + 1;
 * bits 6-8: argument of a returned path + 1; bit 9: the returned path is `ret` bytes long
 * (readlink) rather than NUL-terminated (getcwd); bit 10: watched at all; bit 11: a descriptor
 * call, reported as VELO_DESCRIPTOR when it succeeds. */
#define VELO_SPEC_WATCHED (1u << 10)
#define VELO_SPEC_DESCRIPTOR (1u << 11)

#endif
