/* Prints the interpreter and thread-state offsets 3.14+'s `_asyncio`
 * publishes in `.AsyncioDebug`, from CPython's own headers. */
#ifndef Py_BUILD_CORE
#define Py_BUILD_CORE 1
#endif
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include "internal/pycore_interp.h"
#include "internal/pycore_tstate.h"
#define P(name, expr) printf("%s %lld\n", name, (long long)(expr));
int main(void) {
  P("interp_size", sizeof(PyInterpreterState));
  P("interp_tasks_head", offsetof(PyInterpreterState, asyncio_tasks_head));
  P("ts_size", sizeof(_PyThreadStateImpl));
  P("ts_running_loop", offsetof(_PyThreadStateImpl, asyncio_running_loop));
  P("ts_running_task", offsetof(_PyThreadStateImpl, asyncio_running_task));
  P("ts_tasks_head", offsetof(_PyThreadStateImpl, asyncio_tasks_head));
  return 0;
}
