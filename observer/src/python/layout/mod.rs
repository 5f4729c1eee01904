//! Per-version offsets of the CPython structures the reader walks. Each
//! number is checked against the installed headers by a test that compiles
//! a C program with `offsetof` (see `tests::offsets_match_the_headers`).
//! x86_64 / aarch64 (LP64) builds with the GIL; anything else is unknown.

mod debug;
#[cfg(test)]
mod probe;
#[cfg(test)]
mod tests;

pub use debug::DebugOffsets;
#[cfg(test)]
use debug::debug_fields;
#[cfg(test)]
pub(crate) use probe::{compile_and_print, header_dirs};

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
