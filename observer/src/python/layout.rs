//! Per-version offsets of the CPython structures the reader walks. Each
//! number is checked against the installed headers by a test that compiles
//! a C program with `offsetof` (see `tests::offsets_match_the_headers`).
//! x86_64 / aarch64 (LP64) builds with the GIL; anything else is unknown.

/// Offsets in bytes; names follow the C fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub minor: u32,
    /// `_PyRuntime.interpreters.head`: the main interpreter.
    pub runtime_interp_head: u64,
    pub interp_threads_head: u64,
    pub ts_next: u64,
    pub ts_thread_id: u64,
    pub ts_native_thread_id: u64,
    /// 3.11/3.12: `tstate->cframe`, then `_PyCFrame.current_frame`.
    pub ts_cframe: Option<u64>,
    pub cframe_current_frame: u64,
    /// 3.13: `tstate->current_frame`.
    pub ts_current_frame: Option<u64>,
    pub frame_code: u64,
    pub frame_instr: u64,
    pub frame_previous: u64,
    pub frame_globals: u64,
    pub frame_locals: u64,
    pub frame_stacktop: u64,
    pub frame_owner: u64,
    pub frame_localsplus: u64,
    /// The first frame owner that is not Python code (3.12/3.13
    /// `FRAME_OWNED_BY_CSTACK`, 3.14+ `FRAME_OWNED_BY_INTERPRETER`): frames
    /// owned by it or a later value are shims, skipped.
    pub owned_by_cstack: Option<u8>,
    /// 3.14+: value-stack and frame slots are `_PyStackRef`s whose low bits
    /// are tags (`Py_TAG_BITS`), and `frame_stacktop` is the offset of the
    /// `stackpointer` pointer rather than of an `int` depth.
    pub stackref_tag: u64,
    pub code_nlocalsplus: u64,
    pub code_stacksize: u64,
    pub code_firstlineno: u64,
    pub code_localsplusnames: u64,
    pub code_filename: u64,
    pub code_name: u64,
    pub code_qualname: u64,
    pub code_linetable: u64,
    pub code_exceptiontable: u64,
    pub code_adaptive: u64,
    pub type_name: u64,
    pub type_basicsize: u64,
    pub type_flags: u64,
    pub heaptype_cached_keys: u64,
    pub ascii_size: u64,
    pub compact_size: u64,
    pub unicode_state: u64,
    pub bytes_sval: u64,
    pub tuple_item: u64,
    pub dict_keys: u64,
    pub dict_values: u64,
    pub keys_log2_index_bytes: u64,
    pub keys_kind: u64,
    pub keys_nentries: u64,
    pub keys_indices: u64,
    pub dictvalues_values: u64,
    pub cfunc_ml: u64,
    pub cfunc_self: u64,
    pub method_func: u64,
    pub method_self: u64,
    pub func_qualname: u64,
    pub long_digits: u64,
    /// The `BEFORE_WITH` opcode: a frame stopped on it is entering a `with`
    /// (3.14+: `LOAD_SPECIAL`, which leaves `__exit__` and its `self` on
    /// the stack as two slots).
    pub before_with: u8,
    /// Where an instance's attributes live (managed dict, 3.11+).
    pub attrs: Attrs,
    /// `threading.Lock`: how its state is kept.
    pub lock: LockLayout,
    /// `threading.RLock`: how its owner and count are kept.
    pub rlock: RLockLayout,
    /// asyncio (see asyncio.rs): coroutine objects, `sys.modules`, sets,
    /// weak references.
    pub gen_iframe: u64,
    pub gen_frame_state: u64,
    /// `FRAME_SUSPENDED`, 3.13+'s `FRAME_SUSPENDED_YIELD_FROM` and
    /// `FRAME_EXECUTING` (3.15 renumbered them: suspended states are > 0).
    pub frame_suspended: i8,
    pub frame_suspended_yield_from: Option<i8>,
    /// 3.15's `FRAME_SUSPENDED_YIELD_FROM_LOCKED`: suspended in `await`
    /// too, while another thread looks at what it awaits.
    pub frame_suspended_yield_from_locked: Option<i8>,
    pub frame_executing: i8,
    pub resume_op: u8,
    pub interp_modules: u64,
    pub module_dict: u64,
    pub set_mask: u64,
    pub set_table: u64,
    pub weakref_object: u64,
    /// The C `_asyncio` Future and Task objects (private structs, in no
    /// header: measured on each version, see asyncio.rs's tests).
    pub task: TaskLayout,
}

/// Offsets in `_asyncio.Future` / `_asyncio.Task` objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskLayout {
    pub fut_loop: u64,
    pub fut_state: u64,
    /// The instance dict pointer (3.11/3.12); 3.13 uses a managed dict.
    pub fut_dict: Option<u64>,
    pub fut_waiter: u64,
    /// `task_coro` and `task_name`: None from 3.14 on, where the target's
    /// `_asyncio` module publishes them (with the task lists) in its
    /// `.AsyncioDebug` section (`_Py_AsyncioModuleDebugOffsets`).
    pub coro: Option<u64>,
    pub name: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attrs {
    /// 3.11: values pointer at obj-32, dict pointer at obj-24.
    ValuesOrDict311,
    /// 3.12: one word at obj-24: values pointer - 1 when its low bit is set.
    DictOrValues312,
    /// 3.13: values inline after the object (`Py_TPFLAGS_INLINE_VALUES`),
    /// a dict pointer at obj-24.
    Inline313,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockLayout {
    /// `sem_t*` at +16, `char locked` at +32 (3.11, 3.12).
    Sem,
    /// `PyMutex` byte at +16 (3.14+; its waiters park with the mutex
    /// address just below their futex word).
    Mutex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RLockLayout {
    /// `sem_t*` at +16, owner ident at +24, count at +32 (3.11-3.13).
    Sem,
    /// `_PyRecursiveMutex` at +16: `PyMutex` byte, owner ident at +24,
    /// extra recursion levels at +32 (3.14+: held once is level 0).
    Recursive,
}

/// `Py_TPFLAGS_MANAGED_DICT`.
pub const MANAGED_DICT: u64 = 1 << 4;
/// `Py_TPFLAGS_INLINE_VALUES` (3.13).
pub const INLINE_VALUES: u64 = 1 << 2;
/// `Py_TPFLAGS_HEAPTYPE`.
pub const HEAPTYPE: u64 = 1 << 9;

pub const PY311: Layout = Layout {
    minor: 11,
    runtime_interp_head: 40,
    interp_threads_head: 16,
    ts_next: 8,
    ts_thread_id: 152,
    ts_native_thread_id: 160,
    ts_cframe: Some(56),
    cframe_current_frame: 8,
    ts_current_frame: None,
    frame_code: 32,
    frame_instr: 56,
    frame_previous: 48,
    frame_globals: 8,
    frame_locals: 24,
    frame_stacktop: 64,
    frame_owner: 69,
    frame_localsplus: 72,
    owned_by_cstack: None,
    code_nlocalsplus: 76,
    code_stacksize: 68,
    code_firstlineno: 72,
    code_localsplusnames: 96,
    code_filename: 112,
    code_name: 120,
    code_qualname: 128,
    code_linetable: 136,
    code_exceptiontable: 40,
    code_adaptive: 184,
    type_name: 24,
    type_basicsize: 32,
    type_flags: 168,
    heaptype_cached_keys: 872,
    ascii_size: 48,
    compact_size: 72,
    unicode_state: 32,
    bytes_sval: 32,
    tuple_item: 24,
    dict_keys: 32,
    dict_values: 40,
    keys_log2_index_bytes: 9,
    keys_kind: 10,
    keys_nentries: 24,
    keys_indices: 32,
    dictvalues_values: 0,
    cfunc_ml: 16,
    cfunc_self: 24,
    method_func: 16,
    method_self: 24,
    func_qualname: 40,
    long_digits: 24,
    before_with: 53,
    attrs: Attrs::ValuesOrDict311,
    stackref_tag: 0,
    lock: LockLayout::Sem,
    rlock: RLockLayout::Sem,
    gen_iframe: 80,
    gen_frame_state: 75,
    frame_suspended: -1,
    frame_suspended_yield_from: None,
    frame_suspended_yield_from_locked: None,
    frame_executing: 0,
    resume_op: 151,
    interp_modules: 888,
    module_dict: 16,
    set_mask: 32,
    set_table: 40,
    weakref_object: 16,
    task: TaskLayout {
        fut_loop: 16,
        fut_state: 88,
        fut_dict: Some(104),
        fut_waiter: 128,
        coro: Some(136),
        name: Some(144),
    },
};

pub const PY312: Layout = Layout {
    minor: 12,
    interp_threads_head: 72,
    ts_next: 8,
    ts_thread_id: 136,
    ts_native_thread_id: 144,
    ts_cframe: Some(56),
    cframe_current_frame: 0,
    ts_current_frame: None,
    frame_code: 0,
    frame_instr: 56,
    frame_previous: 8,
    frame_globals: 24,
    frame_locals: 40,
    frame_stacktop: 64,
    frame_owner: 70,
    frame_localsplus: 72,
    owned_by_cstack: Some(3),
    code_nlocalsplus: 72,
    code_stacksize: 64,
    code_firstlineno: 68,
    code_localsplusnames: 96,
    code_filename: 112,
    code_name: 120,
    code_qualname: 128,
    code_linetable: 136,
    code_adaptive: 192,
    heaptype_cached_keys: 880,
    ascii_size: 40,
    compact_size: 56,
    attrs: Attrs::DictOrValues312,
    gen_iframe: 72,
    gen_frame_state: 67,
    interp_modules: 944,
    ..PY311
};

pub const PY313: Layout = Layout {
    minor: 13,
    runtime_interp_head: 632,
    interp_threads_head: 7344,
    ts_thread_id: 152,
    ts_native_thread_id: 160,
    ts_cframe: None,
    ts_current_frame: Some(72),
    code_adaptive: 200,
    dictvalues_values: 8,
    before_with: 2,
    attrs: Attrs::Inline313,
    // Measured on 3.13.0: `_thread.lock` still keeps a `sem_t*` at +16 and
    // `locked` at +32 (the PyMutex-based lock object is newer).
    lock: LockLayout::Sem,
    frame_suspended: -2,
    frame_suspended_yield_from: Some(-1),
    resume_op: 149,
    interp_modules: 7656,
    task: TaskLayout {
        fut_loop: 16,
        fut_state: 96,
        fut_dict: None,
        fut_waiter: 112,
        coro: Some(120),
        name: Some(128),
    },
    ..PY312
};

pub const PY314: Layout = Layout {
    minor: 14,
    runtime_interp_head: 808,
    frame_owner: 74,
    frame_localsplus: 80,
    stackref_tag: 3,
    code_adaptive: 208,
    tuple_item: 32,
    before_with: 95,
    lock: LockLayout::Mutex,
    rlock: RLockLayout::Recursive,
    resume_op: 128,
    interp_modules: 7688,
    // What `.AsyncioDebug` lacks, measured on 3.14.10 (3.14 adds
    // `fut_awaited_by` before the state; asyncio.rs's tests).
    task: TaskLayout {
        fut_loop: 16,
        fut_state: 104,
        fut_dict: None,
        fut_waiter: 120,
        coro: None,
        name: None,
    },
    ..PY313
};

pub const PY315: Layout = Layout {
    minor: 15,
    runtime_interp_head: 936,
    interp_threads_head: 7336,
    ts_thread_id: 176,
    ts_native_thread_id: 184,
    heaptype_cached_keys: 888,
    before_with: 94,
    frame_suspended: 1,
    frame_suspended_yield_from: Some(2),
    frame_suspended_yield_from_locked: Some(3),
    frame_executing: 4,
    interp_modules: 7592,
    ..PY314
};

/// The newest layout known: the base under a newer version's debug offsets.
pub fn newest() -> &'static Layout {
    &PY315
}

/// The layout of CPython 3.`minor` (default GIL build), if known.
pub fn for_version(major: u64, minor: u64) -> Option<&'static Layout> {
    match (major, minor) {
        (3, 11) => Some(&PY311),
        (3, 12) => Some(&PY312),
        (3, 13) => Some(&PY313),
        (3, 14) => Some(&PY314),
        (3, 15) => Some(&PY315),
        _ => None,
    }
}

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
    pub fn read(mem: &impl super::reader::Mem, runtime: u64) -> Option<DebugOffsets> {
        let head = mem.read(runtime, 24)?;
        if &head[..8] != b"xdebugpy" {
            return None;
        }
        let version = super::reader::u64_at(&head, 8)?;
        let free_threaded = super::reader::u64_at(&head, 16)? != 0;
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
                d.fields.insert(n, super::reader::u64_at(&b, i as u64 * 8)?);
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

/// Test support: the CPython header directories the offset checks compile
/// against (Debian's and pyenv's 3.11-3.13, 3.14/3.15 from target/pythons),
/// with the minor version of each.
#[cfg(test)]
pub(super) fn header_dirs() -> Vec<(std::path::PathBuf, u64)> {
    let unpacked = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pythons");
    let mut v: Vec<(std::path::PathBuf, u64)> = vec![
        ("/usr/include/python3.11".into(), 11),
        ("/root/.pyenv/versions/3.11.7/include/python3.11".into(), 11),
        ("/root/.pyenv/versions/3.12.1/include/python3.12".into(), 12),
        ("/root/.pyenv/versions/3.13.0/include/python3.13".into(), 13),
    ];
    for minor in [14, 15] {
        v.push((
            unpacked.join(format!("3.{minor}/usr/include/python3.{minor}")),
            minor,
        ));
    }
    v
}

/// Test support: compiles `program` (a C file printing "name value" lines)
/// against the CPython headers in `include`, runs it and returns the values.
#[cfg(test)]
pub(super) fn compile_and_print(
    what: &str,
    program: &str,
    include: &std::path::Path,
) -> Option<std::collections::HashMap<String, u64>> {
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("obs-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let src = dir.join(format!("{what}.c"));
    let bin = dir.join(format!("{what}-{}", include.file_name()?.to_string_lossy()));
    std::fs::write(&src, program).ok()?;
    let ok = Command::new("gcc")
        .arg("-I")
        .arg(include)
        // Debian's multiarch pyconfig.h lives one level up.
        .arg("-I")
        .arg(include.parent()?)
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
        .ok()?
        .success();
    assert!(
        ok,
        "{what}.c does not compile against {}",
        include.display()
    );
    let out = Command::new(&bin).output().ok()?;
    Some(
        String::from_utf8(out.stdout)
            .ok()?
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.parse::<i64>().ok()? as u64))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashMap, path::Path};

    const PROGRAM: &str = include_str!("offsets.c");

    /// Compiles offsets.c against `include` and returns name -> value.
    fn measured(include: &Path) -> Option<HashMap<String, u64>> {
        compile_and_print("offsets", PROGRAM, include)
    }

    fn ours(l: &Layout) -> Vec<(&'static str, Option<u64>)> {
        vec![
            ("runtime_interp_head", Some(l.runtime_interp_head)),
            ("interp_threads_head", Some(l.interp_threads_head)),
            ("ts_next", Some(l.ts_next)),
            ("ts_thread_id", Some(l.ts_thread_id)),
            ("ts_native_thread_id", Some(l.ts_native_thread_id)),
            ("ts_cframe", l.ts_cframe),
            (
                "cframe_current_frame",
                l.ts_cframe.map(|_| l.cframe_current_frame),
            ),
            ("ts_current_frame", l.ts_current_frame),
            ("frame_code", Some(l.frame_code)),
            ("frame_instr", Some(l.frame_instr)),
            ("frame_previous", Some(l.frame_previous)),
            ("frame_globals", Some(l.frame_globals)),
            ("frame_locals", Some(l.frame_locals)),
            ("frame_stacktop", Some(l.frame_stacktop)),
            ("frame_owner", Some(l.frame_owner)),
            ("frame_localsplus", Some(l.frame_localsplus)),
            ("owned_by_cstack", l.owned_by_cstack.map(u64::from)),
            ("stackref_tag", (l.minor >= 14).then_some(l.stackref_tag)),
            ("code_nlocalsplus", Some(l.code_nlocalsplus)),
            ("code_stacksize", Some(l.code_stacksize)),
            ("code_firstlineno", Some(l.code_firstlineno)),
            ("code_localsplusnames", Some(l.code_localsplusnames)),
            ("code_filename", Some(l.code_filename)),
            ("code_name", Some(l.code_name)),
            ("code_qualname", Some(l.code_qualname)),
            ("code_linetable", Some(l.code_linetable)),
            ("code_exceptiontable", Some(l.code_exceptiontable)),
            ("code_adaptive", Some(l.code_adaptive)),
            ("type_name", Some(l.type_name)),
            ("type_basicsize", Some(l.type_basicsize)),
            ("type_flags", Some(l.type_flags)),
            ("heaptype_cached_keys", Some(l.heaptype_cached_keys)),
            ("ascii_size", Some(l.ascii_size)),
            ("compact_size", Some(l.compact_size)),
            ("unicode_state", Some(l.unicode_state)),
            ("bytes_sval", Some(l.bytes_sval)),
            ("tuple_item", Some(l.tuple_item)),
            ("dict_keys", Some(l.dict_keys)),
            ("dict_values", Some(l.dict_values)),
            ("keys_log2_index_bytes", Some(l.keys_log2_index_bytes)),
            ("keys_kind", Some(l.keys_kind)),
            ("keys_nentries", Some(l.keys_nentries)),
            ("keys_indices", Some(l.keys_indices)),
            ("dictvalues_values", Some(l.dictvalues_values)),
            ("cfunc_ml", Some(l.cfunc_ml)),
            ("cfunc_self", Some(l.cfunc_self)),
            ("method_func", Some(l.method_func)),
            ("method_self", Some(l.method_self)),
            ("func_qualname", Some(l.func_qualname)),
            ("long_digits", Some(l.long_digits)),
            ("before_with", Some(u64::from(l.before_with))),
            ("lock_mutex", (l.lock == LockLayout::Mutex).then_some(16)),
            ("managed_dict_flag", Some(MANAGED_DICT)),
            ("heaptype_flag", Some(HEAPTYPE)),
            (
                "inline_values_flag",
                (l.minor >= 13).then_some(INLINE_VALUES),
            ),
            ("gen_iframe", Some(l.gen_iframe)),
            ("gen_frame_state", Some(l.gen_frame_state)),
            ("frame_suspended", Some(l.frame_suspended as i64 as u64)),
            (
                "frame_suspended_yield_from",
                l.frame_suspended_yield_from.map(|v| v as i64 as u64),
            ),
            (
                "frame_suspended_yield_from_locked",
                l.frame_suspended_yield_from_locked.map(|v| v as i64 as u64),
            ),
            ("frame_executing", Some(l.frame_executing as i64 as u64)),
            ("resume_op", Some(u64::from(l.resume_op))),
            ("interp_modules", Some(l.interp_modules)),
            ("module_dict", Some(l.module_dict)),
            ("set_mask", Some(l.set_mask)),
            ("set_table", Some(l.set_table)),
            ("weakref_object", Some(l.weakref_object)),
            ("dict_keys_unicode", Some(1)),
            ("dict_keys_split", Some(2)),
        ]
    }

    #[test]
    fn offsets_match_the_headers() {
        let dirs = header_dirs()
            .into_iter()
            .map(|(dir, minor)| (dir, for_version(3, minor).unwrap()));
        let mut checked = 0;
        for (dir, layout) in dirs {
            let dir = dir.as_path();
            if !dir.join("internal/pycore_frame.h").exists() {
                eprintln!("skip: no CPython headers at {}", dir.display());
                continue;
            }
            let Some(m) = measured(dir) else {
                eprintln!("skip: cannot build offsets.c (no gcc?)");
                return;
            };
            for (name, want) in ours(layout) {
                assert_eq!(m.get(name).copied(), want, "{name} in {}", dir.display());
            }
            checked += 1;
        }
        eprintln!("checked {checked} header sets");
    }

    /// Each version's `_Py_DebugOffsets` field list is the struct of its
    /// headers: every field at its place, none missing.
    #[test]
    fn debug_offset_fields_match_the_headers() {
        let mut checked = 0;
        for (dir, minor) in header_dirs() {
            if minor < 13 || !dir.join("internal/pycore_frame.h").exists() {
                continue;
            }
            let fields = debug_fields(minor).unwrap();
            let mut c = String::from(
                "#define Py_BUILD_CORE 1\n#include <Python.h>\n#include <stddef.h>\n#include <stdio.h>\n#include \"internal/pycore_runtime.h\"\n#define P(n, e) printf(\"%s %lld\\n\", n, (long long)(e));\nint main(void) {\n",
            );
            for f in &fields {
                c.push_str(&format!("  P(\"{f}\", offsetof(_Py_DebugOffsets, {f}));\n"));
            }
            c.push_str("  P(\"size\", sizeof(_Py_DebugOffsets));\n  return 0;\n}\n");
            let m = compile_and_print(&format!("debug_offsets{minor}"), &c, &dir)
                .expect("running the debug offsets program");
            for (i, f) in fields.iter().enumerate() {
                assert_eq!(m.get(*f), Some(&(24 + 8 * i as u64)), "{f} in 3.{minor}");
            }
            assert_eq!(
                m.get("size"),
                Some(&(24 + 8 * fields.len() as u64)),
                "3.{minor}: fields missing from the list"
            );
            checked += 1;
        }
        assert!(checked >= 3, "checked {checked} header sets of 3.13+");
    }

    /// Synthetic `_Py_DebugOffsets` memory (the reader's `Mem` trait).
    struct Fake(u64, Vec<u8>);
    impl crate::python::reader::Mem for Fake {
        fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
            let o = addr.checked_sub(self.0)? as usize;
            self.1.get(o..o + len).map(|b| b.to_vec())
        }
    }

    /// The debug offsets of layout `l` as a 3.`minor` runtime lays them out.
    fn debug_image(l: &Layout, minor: u64, free_threaded: bool, tweak: &[(&str, u64)]) -> Fake {
        let mut b = b"xdebugpy".to_vec();
        b.extend_from_slice(&(0x0300_00f0u64 | (minor << 16)).to_ne_bytes());
        b.extend_from_slice(&u64::from(free_threaded).to_ne_bytes());
        let mut d = DebugOffsets {
            version: 0,
            free_threaded,
            fields: HashMap::new(),
        };
        for f in debug_fields(minor).unwrap() {
            d.fields.insert(f, 7);
        }
        // What the runtime would publish for the fields we take.
        let mut probe = *l;
        probe.apply_debug_offsets(&d);
        let names = debug_fields(minor).unwrap();
        for f in &names {
            let v = tweak
                .iter()
                .find(|(n, _)| n == f)
                .map(|x| x.1)
                .or_else(|| published(l, f))
                .unwrap_or(1);
            b.extend_from_slice(&v.to_ne_bytes());
        }
        Fake(0x10000, b)
    }

    fn published(l: &Layout, f: &str) -> Option<u64> {
        Some(match f {
            "runtime_state.interpreters_head" => l.runtime_interp_head,
            "interpreter_state.threads_head" => l.interp_threads_head,
            "interpreter_state.imports_modules" => l.interp_modules,
            "thread_state.next" => l.ts_next,
            "thread_state.thread_id" => l.ts_thread_id,
            "thread_state.native_thread_id" => l.ts_native_thread_id,
            "thread_state.current_frame" => l.ts_current_frame?,
            "interpreter_frame.previous" => l.frame_previous,
            "interpreter_frame.executable" => l.frame_code,
            "interpreter_frame.instr_ptr" => l.frame_instr,
            "interpreter_frame.localsplus" => l.frame_localsplus,
            "interpreter_frame.owner" => l.frame_owner,
            "interpreter_frame.stackpointer" => l.frame_stacktop,
            "code_object.filename" => l.code_filename,
            "code_object.name" => l.code_name,
            "code_object.qualname" => l.code_qualname,
            "code_object.linetable" => l.code_linetable,
            "code_object.firstlineno" => l.code_firstlineno,
            "code_object.localsplusnames" => l.code_localsplusnames,
            "code_object.co_code_adaptive" => l.code_adaptive,
            "type_object.tp_name" => l.type_name,
            "type_object.tp_flags" => l.type_flags,
            "type_object.tp_basicsize" => l.type_basicsize,
            "heap_type_object.ht_cached_keys" => l.heaptype_cached_keys,
            "tuple_object.ob_item" => l.tuple_item,
            "set_object.table" => l.set_table,
            "set_object.mask" => l.set_mask,
            "dict_object.ma_keys" => l.dict_keys,
            "dict_object.ma_values" => l.dict_values,
            "long_object.ob_digit" => l.long_digits,
            "bytes_object.ob_sval" => l.bytes_sval,
            "unicode_object.state" => l.unicode_state,
            "unicode_object.asciiobject_size" => l.ascii_size,
            "unicode_object.compactunicodeobject_size" => l.compact_size,
            "gen_object.gi_iframe" => l.gen_iframe,
            "gen_object.gi_frame_state" => l.gen_frame_state,
            _ => return None,
        })
    }

    #[test]
    fn debug_offsets_override_the_table_and_bad_ones_are_refused() {
        for (minor, l) in [(13, &PY313), (14, &PY314), (15, &PY315)] {
            let img = debug_image(l, minor, false, &[]);
            let d = DebugOffsets::read(&img, img.0).unwrap();
            assert_eq!((d.major(), d.minor(), d.free_threaded), (3, minor, false));
            let mut same = *l;
            assert!(same.apply_debug_offsets(&d) > 25, "3.{minor}");
            assert_eq!(
                &same, l,
                "3.{minor}: the table agrees with what it publishes"
            );
            // A patch release that moved a field: the target wins.
            let img = debug_image(l, minor, false, &[("thread_state.native_thread_id", 200)]);
            let d = DebugOffsets::read(&img, img.0).unwrap();
            let mut moved = *l;
            moved.apply_debug_offsets(&d);
            assert_eq!(moved.ts_native_thread_id, 200);
            // A torn read: nothing is taken.
            let img = debug_image(l, minor, false, &[("code_object.name", 1 << 40)]);
            let d = DebugOffsets::read(&img, img.0).unwrap();
            let mut torn = *l;
            assert_eq!(torn.apply_debug_offsets(&d), 0);
            assert_eq!(&torn, l);
        }
        // No cookie: no debug offsets.
        let mut img = debug_image(&PY314, 14, false, &[]);
        img.1[0] = b'X';
        assert!(DebugOffsets::read(&img, img.0).is_none());
    }

    /// A free-threaded build says so in its debug offsets, and a version
    /// newer than the tables is read for names and stacks only.
    #[test]
    fn free_threaded_and_newer_versions_from_debug_offsets() {
        let img = debug_image(&PY314, 14, true, &[]);
        let d = DebugOffsets::read(&img, img.0).unwrap();
        assert!(d.free_threaded);
        let mut loc = crate::python::Located {
            version: "3.14.0".into(),
            major: 3,
            minor: 14,
            interp: 0x1000,
            layout: Some(PY314),
            from_target: 0,
            free_threaded: false,
            limited: None,
        };
        loc.with_debug_offsets(&d);
        assert!(loc.free_threaded);
        let v = crate::python::view(u32::MAX, &loc, false, &HashMap::new());
        assert!(v.unsupported.unwrap().contains("free-threaded build"));
        // 3.16: its struct is not known, so only the header is read.
        let mut img = debug_image(&PY315, 15, false, &[]);
        img.1[8..16].copy_from_slice(&0x0310_00a0u64.to_ne_bytes());
        let d = DebugOffsets::read(&img, img.0).unwrap();
        assert_eq!(d.minor(), 16);
        assert!(d.fields.is_empty());
        let mut loc = crate::python::Located {
            version: "3.16.0a1".into(),
            major: 3,
            minor: 16,
            interp: 0x1000,
            layout: for_version(3, 16).copied(),
            from_target: 0,
            free_threaded: false,
            limited: None,
        };
        loc.with_debug_offsets(&d);
        assert!(loc.layout.is_none(), "no table and no fields: not read");
        let v = crate::python::view(u32::MAX, &loc, false, &HashMap::new());
        assert!(v.unsupported.unwrap().contains("3.16.0a1"));
    }
}
