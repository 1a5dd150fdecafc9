/* Hidden stand-ins for the unwinder entry points that Rust's std links against, so that
 * libvelo_shim.so does not need libgcc_s.so.1.
 *
 * Why: the shim is loaded into every process of a projected build, and most C programs there
 * (cc, collect2, as, make, sh) do not load libgcc_s themselves. Mapping and relocating it cost
 * each of them about 50 us of CPU on this machine kind (a spawn loop of /bin/true with the shim
 * preloaded: 0.80 ms per spawn with libgcc_s, 0.74 ms without; 0.57 ms without the shim).
 *
 * Why it is safe: the shim never unwinds. Every hook is an `extern "C"` function, so a panic in
 * one must abort the process rather than unwind into C frames, and the shim calls nothing that
 * unwinds. With these stubs a panic still aborts: `_Unwind_RaiseException` reports that no
 * handler was found and std aborts the process; `_Unwind_Backtrace` yields an empty backtrace.
 *
 * They are hidden (not in the dynamic symbol table), so they stand in only for the shim's own
 * references: a C++ program that throws, or glibc's thread cancellation, keeps using the real
 * libgcc_s it loads itself. The end-to-end test `shim_does_not_need_libgcc_s` checks both the
 * missing dependency and the missing exports.
 *
 * Linked whole (`+whole-archive` in build.rs), so the linker sees these definitions before std's
 * references whatever the order of the link.
 */
#include <stdint.h>
#include <stdlib.h>

#define HIDDEN __attribute__((visibility("hidden")))

/* _Unwind_Reason_Code values (unwind.h): the Itanium C++ ABI's. */
#define URC_END_OF_STACK 5

struct _Unwind_Context;
struct _Unwind_Exception;

HIDDEN int _Unwind_RaiseException(struct _Unwind_Exception *e) {
  (void)e;
  return URC_END_OF_STACK;
}

HIDDEN void _Unwind_Resume(struct _Unwind_Exception *e) {
  (void)e;
  abort();
}

HIDDEN int _Unwind_Backtrace(int (*trace)(struct _Unwind_Context *, void *), void *arg) {
  (void)trace;
  (void)arg;
  return URC_END_OF_STACK;
}

HIDDEN uintptr_t _Unwind_GetIP(struct _Unwind_Context *c) {
  (void)c;
  return 0;
}

HIDDEN uintptr_t _Unwind_GetIPInfo(struct _Unwind_Context *c, int *before) {
  (void)c;
  *before = 0;
  return 0;
}

HIDDEN uintptr_t _Unwind_GetCFA(struct _Unwind_Context *c) {
  (void)c;
  return 0;
}

HIDDEN uintptr_t _Unwind_GetDataRelBase(struct _Unwind_Context *c) {
  (void)c;
  return 0;
}

HIDDEN uintptr_t _Unwind_GetTextRelBase(struct _Unwind_Context *c) {
  (void)c;
  return 0;
}

HIDDEN uintptr_t _Unwind_GetRegionStart(struct _Unwind_Context *c) {
  (void)c;
  return 0;
}

HIDDEN void *_Unwind_GetLanguageSpecificData(struct _Unwind_Context *c) {
  (void)c;
  return NULL;
}

HIDDEN void *_Unwind_FindEnclosingFunction(void *pc) {
  (void)pc;
  return NULL;
}

HIDDEN void _Unwind_SetGR(struct _Unwind_Context *c, int index, uintptr_t value) {
  (void)c;
  (void)index;
  (void)value;
}

HIDDEN void _Unwind_SetIP(struct _Unwind_Context *c, uintptr_t value) {
  (void)c;
  (void)value;
}

HIDDEN void _Unwind_DeleteException(struct _Unwind_Exception *e) {
  (void)e;
}
