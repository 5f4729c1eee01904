/* Prints the GIL offsets gil.rs uses, from CPython's own headers, and the
 * glibc sizes of the condvar and mutex the GIL's waiters sleep on. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include <pthread.h>
#include "internal/pycore_runtime.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_gil.h"
#define P(name, expr) printf("%s %zu\n", name, (size_t)(expr));
int main(void) {
#ifdef Py_GIL_DISABLED
#error free-threaded headers
#endif
#if PY_VERSION_HEX < 0x030C0000
  P("interp_runtime", offsetof(PyInterpreterState, runtime));
  P("runtime_gil", offsetof(_PyRuntimeState, ceval.gil));
#else
  P("interp_gil_ptr", offsetof(PyInterpreterState, ceval.gil));
#endif
  P("gil_interval", offsetof(struct _gil_runtime_state, interval));
  P("gil_last_holder", offsetof(struct _gil_runtime_state, last_holder));
  P("gil_locked", offsetof(struct _gil_runtime_state, locked));
  P("gil_switch_number", offsetof(struct _gil_runtime_state, switch_number));
  P("gil_cond", offsetof(struct _gil_runtime_state, cond));
  P("gil_mutex", offsetof(struct _gil_runtime_state, mutex));
  P("gil_switch_cond", offsetof(struct _gil_runtime_state, switch_cond));
  P("gil_switch_mutex", offsetof(struct _gil_runtime_state, switch_mutex));
  P("gil_size", sizeof(struct _gil_runtime_state));
  P("cond_size", sizeof(pthread_cond_t));
  P("mutex_size", sizeof(pthread_mutex_t));
  return 0;
}
