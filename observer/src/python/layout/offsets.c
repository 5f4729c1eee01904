/* Prints the offsets layout.rs uses, from CPython's own headers. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <stddef.h>
#include <stdio.h>
#include "internal/pycore_frame.h"
#include "internal/pycore_interp.h"
#include "internal/pycore_runtime.h"
#include "internal/pycore_code.h"
#include "internal/pycore_dict.h"
#include "internal/pycore_long.h"
#include "opcode.h"
#include "internal/pycore_moduleobject.h"
#if PY_VERSION_HEX >= 0x030E0000
#include "internal/pycore_stackref.h"
#include "internal/pycore_lock.h"
#endif
#define P(name, expr) printf("%s %lld\n", name, (long long)(expr));
int main(void) {
  P("runtime_interp_head", offsetof(_PyRuntimeState, interpreters.head));
  P("interp_threads_head", offsetof(PyInterpreterState, threads.head));
  P("ts_next", offsetof(PyThreadState, next));
  P("ts_thread_id", offsetof(PyThreadState, thread_id));
  P("ts_native_thread_id", offsetof(PyThreadState, native_thread_id));
#if PY_VERSION_HEX < 0x030D0000
  P("ts_cframe", offsetof(PyThreadState, cframe));
  P("cframe_current_frame", offsetof(_PyCFrame, current_frame));
  P("frame_code", offsetof(_PyInterpreterFrame, f_code));
  P("frame_instr", offsetof(_PyInterpreterFrame, prev_instr));
#else
  P("ts_current_frame", offsetof(PyThreadState, current_frame));
  P("frame_code", offsetof(_PyInterpreterFrame, f_executable));
  P("frame_instr", offsetof(_PyInterpreterFrame, instr_ptr));
  P("inline_values_flag", Py_TPFLAGS_INLINE_VALUES);
#endif
  P("frame_previous", offsetof(_PyInterpreterFrame, previous));
  P("frame_globals", offsetof(_PyInterpreterFrame, f_globals));
  P("frame_locals", offsetof(_PyInterpreterFrame, f_locals));
#if PY_VERSION_HEX < 0x030E0000
  P("frame_stacktop", offsetof(_PyInterpreterFrame, stacktop));
#else
  /* 3.14+: a pointer past the top of the value stack. */
  P("frame_stacktop", offsetof(_PyInterpreterFrame, stackpointer));
#endif
  P("frame_owner", offsetof(_PyInterpreterFrame, owner));
  P("frame_localsplus", offsetof(_PyInterpreterFrame, localsplus));
#ifdef Py_GIL_DISABLED
#error free-threaded headers
#endif
#if PY_VERSION_HEX >= 0x030E0000
  P("stackref_tag", Py_TAG_BITS);
#endif
#if PY_VERSION_HEX >= 0x030E0000
  /* The first owner that is not Python code (interpreter, C stack). */
  P("owned_by_cstack", FRAME_OWNED_BY_INTERPRETER);
#elif PY_VERSION_HEX >= 0x030C0000
  P("owned_by_cstack", FRAME_OWNED_BY_CSTACK);
#endif
  P("code_nlocalsplus", offsetof(PyCodeObject, co_nlocalsplus));
  P("code_stacksize", offsetof(PyCodeObject, co_stacksize));
  P("code_firstlineno", offsetof(PyCodeObject, co_firstlineno));
  P("code_localsplusnames", offsetof(PyCodeObject, co_localsplusnames));
  P("code_filename", offsetof(PyCodeObject, co_filename));
  P("code_name", offsetof(PyCodeObject, co_name));
  P("code_qualname", offsetof(PyCodeObject, co_qualname));
  P("code_linetable", offsetof(PyCodeObject, co_linetable));
  P("code_exceptiontable", offsetof(PyCodeObject, co_exceptiontable));
  P("code_adaptive", offsetof(PyCodeObject, co_code_adaptive));
  P("type_name", offsetof(PyTypeObject, tp_name));
  P("type_basicsize", offsetof(PyTypeObject, tp_basicsize));
  P("type_flags", offsetof(PyTypeObject, tp_flags));
  P("heaptype_cached_keys", offsetof(PyHeapTypeObject, ht_cached_keys));
  P("ascii_size", sizeof(PyASCIIObject));
  P("compact_size", sizeof(PyCompactUnicodeObject));
  P("unicode_state", offsetof(PyASCIIObject, state));
  P("bytes_sval", offsetof(PyBytesObject, ob_sval));
  P("tuple_item", offsetof(PyTupleObject, ob_item));
  P("dict_keys", offsetof(PyDictObject, ma_keys));
  P("dict_values", offsetof(PyDictObject, ma_values));
  P("keys_log2_index_bytes", offsetof(PyDictKeysObject, dk_log2_index_bytes));
  P("keys_kind", offsetof(PyDictKeysObject, dk_kind));
  P("keys_nentries", offsetof(PyDictKeysObject, dk_nentries));
  P("keys_indices", offsetof(PyDictKeysObject, dk_indices));
  P("dictvalues_values", offsetof(PyDictValues, values));
  P("dict_keys_unicode", DICT_KEYS_UNICODE);
  P("dict_keys_split", DICT_KEYS_SPLIT);
  P("cfunc_ml", offsetof(PyCFunctionObject, m_ml));
  P("cfunc_self", offsetof(PyCFunctionObject, m_self));
  P("method_func", offsetof(PyMethodObject, im_func));
  P("method_self", offsetof(PyMethodObject, im_self));
  P("func_qualname", offsetof(PyFunctionObject, func_qualname));
#if PY_VERSION_HEX < 0x030C0000
  P("long_digits", offsetof(PyLongObject, ob_digit));
#else
  P("long_digits", offsetof(PyLongObject, long_value.ob_digit));
#endif
#if PY_VERSION_HEX < 0x030E0000
  P("before_with", BEFORE_WITH);
#else
  /* 3.14+: `with` loads `__exit__` and `__enter__` with LOAD_SPECIAL. */
  P("before_with", LOAD_SPECIAL);
#endif
  /* asyncio: coroutines, sys.modules, sets and weak references. */
  P("gen_iframe", offsetof(PyGenObject, gi_iframe));
  P("gen_frame_state", offsetof(PyGenObject, gi_frame_state));
  P("frame_suspended", FRAME_SUSPENDED);
#if PY_VERSION_HEX >= 0x030D0000
  P("frame_suspended_yield_from", FRAME_SUSPENDED_YIELD_FROM);
#endif
#if PY_VERSION_HEX >= 0x030F0000
  P("frame_suspended_yield_from_locked", FRAME_SUSPENDED_YIELD_FROM_LOCKED);
#endif
  P("frame_executing", FRAME_EXECUTING);
#if PY_VERSION_HEX >= 0x030C0000
  P("interp_modules", offsetof(PyInterpreterState, imports.modules));
#else
  P("interp_modules", offsetof(PyInterpreterState, modules));
#endif
  P("resume_op", RESUME);
  P("module_dict", offsetof(PyModuleObject, md_dict));
  P("set_mask", offsetof(PySetObject, mask));
  P("set_table", offsetof(PySetObject, table));
  P("weakref_object", offsetof(PyWeakReference, wr_object));
#if PY_VERSION_HEX >= 0x030E0000
  /* _thread.lock is { PyObject_HEAD; PyMutex lock; ... }: measured by the
   * lock tests; here only that a PyMutex sits right after the header. */
  P("lock_mutex", sizeof(PyObject));
#endif
  P("managed_dict_flag", Py_TPFLAGS_MANAGED_DICT);
  P("heaptype_flag", Py_TPFLAGS_HEAPTYPE);
  return 0;
}
