/* The C-variadic exec entry points of libvelo_shim.so.
 *
 * glibc's own execl* build an argv and call its *internal* execve, which no LD_PRELOAD hook can
 * see; so the shim provides them itself. Each gathers its arguments exactly as glibc does (an
 * argv array on the stack, never the heap) and calls execv, execve or execvp: those resolve to the
 * shim's hooks, which translate the path and carry the projection into the new program.
 *
 * These functions are hidden: Rust exports the public names (execl, ...) as naked trampolines
 * that jump here, because a cdylib only exports symbols defined in Rust.
 */
#include <stdarg.h>
#include <stddef.h>
#include <unistd.h>

#define HIDDEN __attribute__((visibility("hidden")))

/* Counts the arguments after `arg` up to and including the terminating NULL. */
#define COUNT_ARGS(arg, argc)                                          \
  do {                                                                 \
    va_list count_ap;                                                  \
    va_start(count_ap, arg);                                           \
    argc = 0;                                                          \
    if (arg != NULL) {                                                 \
      argc = 1;                                                        \
      while (va_arg(count_ap, const char *) != NULL) argc++;           \
    }                                                                  \
    va_end(count_ap);                                                  \
  } while (0)

/* Fills argv[0..argc] and leaves `ap` just after the terminating NULL. */
static void fill_args(char **argv, const char *arg, size_t argc, va_list *ap) {
  argv[0] = (char *)arg;
  for (size_t i = 1; i < argc; i++) argv[i] = va_arg(*ap, char *);
  if (argc > 0) (void)va_arg(*ap, char *); /* the NULL */
  argv[argc] = NULL;
}

HIDDEN int velo_shim_execl(const char *path, const char *arg, ...) {
  size_t argc;
  COUNT_ARGS(arg, argc);
  char *argv[argc + 1];
  va_list ap;
  va_start(ap, arg);
  fill_args(argv, arg, argc, &ap);
  va_end(ap);
  return execv(path, argv);
}

HIDDEN int velo_shim_execlp(const char *file, const char *arg, ...) {
  size_t argc;
  COUNT_ARGS(arg, argc);
  char *argv[argc + 1];
  va_list ap;
  va_start(ap, arg);
  fill_args(argv, arg, argc, &ap);
  va_end(ap);
  return execvp(file, argv);
}

HIDDEN int velo_shim_execle(const char *path, const char *arg, ...) {
  size_t argc;
  COUNT_ARGS(arg, argc);
  char *argv[argc + 1];
  va_list ap;
  va_start(ap, arg);
  fill_args(argv, arg, argc, &ap);
  char *const *envp = va_arg(ap, char *const *);
  va_end(ap);
  return execve(path, argv, envp);
}
