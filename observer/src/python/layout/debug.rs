//! `_Py_DebugOffsets` (3.13+): the field lists per version, reading the
//! struct from a target, and applying what it publishes to a layout.

use super::*;

/// `_Py_DebugOffsets` (3.13+): the runtime's own description of the structs
/// a reader walks, at the start of `_PyRuntime` (the `.PyRuntime` section),
/// behind the cookie `xdebugpy`, `PY_VERSION_HEX` and a `free_threaded`
/// flag. Its fields are all `uint64_t`; their order changes between minor
/// versions, so each version's list is checked against its headers.
const DEBUG_313: &[&str] = &[
    "runtime_state.size",
    "runtime_state.finalizing",
    "runtime_state.interpreters_head",
    "interpreter_state.size",
    "interpreter_state.id",
    "interpreter_state.next",
    "interpreter_state.threads_head",
    "interpreter_state.gc",
    "interpreter_state.imports_modules",
    "interpreter_state.sysdict",
    "interpreter_state.builtins",
    "interpreter_state.ceval_gil",
    "interpreter_state.gil_runtime_state",
    "interpreter_state.gil_runtime_state_enabled",
    "interpreter_state.gil_runtime_state_locked",
    "interpreter_state.gil_runtime_state_holder",
    "thread_state.size",
    "thread_state.prev",
    "thread_state.next",
    "thread_state.interp",
    "thread_state.current_frame",
    "thread_state.thread_id",
    "thread_state.native_thread_id",
    "thread_state.datastack_chunk",
    "thread_state.status",
    "interpreter_frame.size",
    "interpreter_frame.previous",
    "interpreter_frame.executable",
    "interpreter_frame.instr_ptr",
    "interpreter_frame.localsplus",
    "interpreter_frame.owner",
    "code_object.size",
    "code_object.filename",
    "code_object.name",
    "code_object.qualname",
    "code_object.linetable",
    "code_object.firstlineno",
    "code_object.argcount",
    "code_object.localsplusnames",
    "code_object.localspluskinds",
    "code_object.co_code_adaptive",
    "pyobject.size",
    "pyobject.ob_type",
    "type_object.size",
    "type_object.tp_name",
    "type_object.tp_repr",
    "type_object.tp_flags",
    "tuple_object.size",
    "tuple_object.ob_item",
    "tuple_object.ob_size",
    "list_object.size",
    "list_object.ob_item",
    "list_object.ob_size",
    "dict_object.size",
    "dict_object.ma_keys",
    "dict_object.ma_values",
    "float_object.size",
    "float_object.ob_fval",
    "long_object.size",
    "long_object.lv_tag",
    "long_object.ob_digit",
    "bytes_object.size",
    "bytes_object.ob_size",
    "bytes_object.ob_sval",
    "unicode_object.size",
    "unicode_object.state",
    "unicode_object.length",
    "unicode_object.asciiobject_size",
    "gc.size",
    "gc.collecting",
];

/// 3.14 and 3.15 insert fields into 3.13's sections and add sections: the
/// list of each is 3.13's with these edits, (after this field, these).
const DEBUG_314_EDITS: &[(&str, &[&str])] = &[
    (
        "interpreter_state.threads_head",
        &["interpreter_state.threads_main"],
    ),
    (
        "interpreter_state.gil_runtime_state_holder",
        &[
            "interpreter_state.code_object_generation",
            "interpreter_state.tlbc_generation",
        ],
    ),
    (
        "interpreter_frame.owner",
        &[
            "interpreter_frame.stackpointer",
            "interpreter_frame.tlbc_index",
        ],
    ),
    ("code_object.co_code_adaptive", &["code_object.co_tlbc"]),
    (
        "list_object.ob_size",
        &[
            "set_object.size",
            "set_object.used",
            "set_object.table",
            "set_object.mask",
        ],
    ),
    (
        "gc.collecting",
        &[
            "gen_object.size",
            "gen_object.gi_name",
            "gen_object.gi_iframe",
            "gen_object.gi_frame_state",
            "llist_node.next",
            "llist_node.prev",
            "debugger_support.eval_breaker",
            "debugger_support.remote_debugger_support",
            "debugger_support.remote_debugging_enabled",
            "debugger_support.debugger_pending_call",
            "debugger_support.debugger_script_path",
            "debugger_support.debugger_script_path_size",
        ],
    ),
];

const DEBUG_315_EDITS: &[(&str, &[&str])] = &[
    (
        "thread_state.current_frame",
        &[
            "thread_state.base_frame",
            "thread_state.last_profiled_frame",
            "thread_state.last_profiled_frame_seq",
        ],
    ),
    (
        "thread_state.status",
        &[
            "thread_state.holds_gil",
            "thread_state.gil_requested",
            "thread_state.current_exception",
            "thread_state.exc_state",
            "err_stackitem.exc_value",
        ],
    ),
    (
        "type_object.tp_flags",
        &[
            "type_object.tp_basicsize",
            "type_object.tp_dictoffset",
            "heap_type_object.size",
            "heap_type_object.ht_cached_keys",
        ],
    ),
    (
        "unicode_object.asciiobject_size",
        &["unicode_object.compactunicodeobject_size"],
    ),
    (
        "gc.collecting",
        &[
            "gc.frame",
            "gc.generation_stats_size",
            "gc.generation_stats",
        ],
    ),
];

fn edited(base: Vec<&'static str>, edits: &[(&str, &[&'static str])]) -> Vec<&'static str> {
    let mut out = Vec::with_capacity(base.len() + 32);
    for f in base {
        out.push(f);
        if let Some((_, add)) = edits.iter().find(|(after, _)| *after == f) {
            out.extend_from_slice(add);
        }
    }
    out
}

/// The field list of 3.`minor`'s `_Py_DebugOffsets` (after cookie,
/// version and free_threaded), if known.
pub fn debug_fields(minor: u64) -> Option<Vec<&'static str>> {
    let v313 = DEBUG_313.to_vec();
    match minor {
        13 => Some(v313),
        14 => Some(edited(v313, DEBUG_314_EDITS)),
        15 => Some(edited(edited(v313, DEBUG_314_EDITS), DEBUG_315_EDITS)),
        _ => None,
    }
}

/// What a target's `_Py_DebugOffsets` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugOffsets {
    /// `PY_VERSION_HEX` of the running interpreter.
    pub version: u64,
    pub free_threaded: bool,
    /// Field values by name; empty when the struct of this minor version
    /// is not known (only the header is then trusted).
    pub fields: std::collections::HashMap<&'static str, u64>,
}

impl DebugOffsets {
    pub fn major(&self) -> u64 {
        (self.version >> 24) & 0xff
    }

    pub fn minor(&self) -> u64 {
        (self.version >> 16) & 0xff
    }

    pub fn get(&self, name: &str) -> Option<u64> {
        self.fields.get(name).copied()
    }

    /// Reads the debug offsets at `runtime` (`_PyRuntime`). None: no
    /// cookie there (before 3.13, or not a runtime).
    pub fn read(mem: &impl crate::python::reader::Mem, runtime: u64) -> Option<DebugOffsets> {
        let head = mem.read(runtime, 24)?;
        if &head[..8] != b"xdebugpy" {
            return None;
        }
        let version = crate::python::reader::u64_at(&head, 8)?;
        let free_threaded = crate::python::reader::u64_at(&head, 16)? != 0;
        let mut d = DebugOffsets {
            version,
            free_threaded,
            fields: Default::default(),
        };
        if d.major() != 3 {
            return None;
        }
        if let Some(names) = debug_fields(d.minor()) {
            let b = mem.read(runtime + 24, names.len() * 8)?;
            for (i, n) in names.into_iter().enumerate() {
                d.fields
                    .insert(n, crate::python::reader::u64_at(&b, i as u64 * 8)?);
            }
        }
        Some(d)
    }
}

/// Offsets larger than this are not believed (a torn or foreign read).
const MAX_DEBUG_OFFSET: u64 = 1 << 20;

impl Layout {
    /// This layout with every offset the target's `_Py_DebugOffsets`
    /// covers taken from it. Returns how many were taken; a value out of
    /// bounds rejects the whole struct (nothing taken).
    pub fn apply_debug_offsets(&mut self, d: &DebugOffsets) -> usize {
        let mut l = *self;
        let mut n = 0;
        let mut bad = false;
        {
            let mut set = |name: &str, field: &mut u64| {
                if let Some(v) = d.get(name) {
                    if v >= MAX_DEBUG_OFFSET {
                        bad = true;
                    }
                    *field = v;
                    n += 1;
                }
            };
            set(
                "runtime_state.interpreters_head",
                &mut l.runtime_interp_head,
            );
            set("interpreter_state.threads_head", &mut l.interp_threads_head);
            set("interpreter_state.imports_modules", &mut l.interp_modules);
            set("thread_state.next", &mut l.ts_next);
            set("thread_state.thread_id", &mut l.ts_thread_id);
            set("thread_state.native_thread_id", &mut l.ts_native_thread_id);
            set("interpreter_frame.previous", &mut l.frame_previous);
            set("interpreter_frame.executable", &mut l.frame_code);
            set("interpreter_frame.instr_ptr", &mut l.frame_instr);
            set("interpreter_frame.localsplus", &mut l.frame_localsplus);
            set("interpreter_frame.owner", &mut l.frame_owner);
            set("interpreter_frame.stackpointer", &mut l.frame_stacktop);
            set("code_object.filename", &mut l.code_filename);
            set("code_object.name", &mut l.code_name);
            set("code_object.qualname", &mut l.code_qualname);
            set("code_object.linetable", &mut l.code_linetable);
            set("code_object.firstlineno", &mut l.code_firstlineno);
            set("code_object.localsplusnames", &mut l.code_localsplusnames);
            set("code_object.co_code_adaptive", &mut l.code_adaptive);
            set("type_object.tp_name", &mut l.type_name);
            set("type_object.tp_flags", &mut l.type_flags);
            set("type_object.tp_basicsize", &mut l.type_basicsize);
            set(
                "heap_type_object.ht_cached_keys",
                &mut l.heaptype_cached_keys,
            );
            set("tuple_object.ob_item", &mut l.tuple_item);
            set("set_object.table", &mut l.set_table);
            set("set_object.mask", &mut l.set_mask);
            set("dict_object.ma_keys", &mut l.dict_keys);
            set("dict_object.ma_values", &mut l.dict_values);
            set("long_object.ob_digit", &mut l.long_digits);
            set("bytes_object.ob_sval", &mut l.bytes_sval);
            set("unicode_object.state", &mut l.unicode_state);
            set("unicode_object.asciiobject_size", &mut l.ascii_size);
            set(
                "unicode_object.compactunicodeobject_size",
                &mut l.compact_size,
            );
            set("gen_object.gi_iframe", &mut l.gen_iframe);
            set("gen_object.gi_frame_state", &mut l.gen_frame_state);
        }
        if let Some(cur) = d.get("thread_state.current_frame") {
            bad |= cur >= MAX_DEBUG_OFFSET;
            l.ts_current_frame = Some(cur);
            l.ts_cframe = None;
            n += 1;
        }
        if bad {
            return 0;
        }
        *self = l;
        n
    }
}
