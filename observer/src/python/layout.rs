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
    /// `FRAME_OWNED_BY_CSTACK` (3.12+): shim frames, not Python code.
    pub owned_by_cstack: Option<u8>,
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
    /// The `BEFORE_WITH` opcode: a frame stopped on it is entering a `with`.
    pub before_with: u8,
    /// Where an instance's attributes live (managed dict, 3.11+).
    pub attrs: Attrs,
    /// `threading.Lock`: how its state is kept.
    pub lock: LockLayout,
    /// asyncio (see asyncio.rs): coroutine objects, `sys.modules`, sets,
    /// weak references.
    pub gen_iframe: u64,
    pub gen_frame_state: u64,
    /// `-FRAME_SUSPENDED` (and 3.13's `-FRAME_SUSPENDED_YIELD_FROM`).
    pub frame_suspended_neg: u8,
    pub frame_suspended_yield_from_neg: Option<u8>,
    pub resume_op: u8,
    pub interp_modules: u64,
    pub module_dict: u64,
    pub set_mask: u64,
    pub set_table: u64,
    pub weakref_object: u64,
    /// The C `_asyncio` Future and Task objects (private structs: measured
    /// on each version by the asyncio tests, not in any header).
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
    pub coro: u64,
    pub name: u64,
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
    /// `PyMutex` byte at +16 (builds whose lock object embeds a PyMutex;
    /// its waiters park with the mutex address just below their futex word).
    #[allow(dead_code)]
    Mutex,
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
    lock: LockLayout::Sem,
    gen_iframe: 80,
    gen_frame_state: 75,
    frame_suspended_neg: 1,
    frame_suspended_yield_from_neg: None,
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
        coro: 136,
        name: 144,
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
    frame_suspended_neg: 2,
    frame_suspended_yield_from_neg: Some(1),
    resume_op: 149,
    interp_modules: 7656,
    task: TaskLayout {
        fut_loop: 16,
        fut_state: 96,
        fut_dict: None,
        fut_waiter: 112,
        coro: 120,
        name: 128,
    },
    ..PY312
};

/// The layout of CPython 3.`minor` (default GIL build), if known.
pub fn for_version(major: u64, minor: u64) -> Option<&'static Layout> {
    match (major, minor) {
        (3, 11) => Some(&PY311),
        (3, 12) => Some(&PY312),
        (3, 13) => Some(&PY313),
        _ => None,
    }
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
                Some((k.to_string(), v.parse().ok()?))
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
            ("managed_dict_flag", Some(MANAGED_DICT)),
            ("heaptype_flag", Some(HEAPTYPE)),
            (
                "inline_values_flag",
                (l.minor >= 13).then_some(INLINE_VALUES),
            ),
            ("gen_iframe", Some(l.gen_iframe)),
            ("gen_frame_state", Some(l.gen_frame_state)),
            (
                "frame_suspended_neg",
                Some(u64::from(l.frame_suspended_neg)),
            ),
            (
                "frame_suspended_yield_from_neg",
                l.frame_suspended_yield_from_neg.map(u64::from),
            ),
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
        let dirs = [
            ("/usr/include/python3.11", &PY311),
            ("/root/.pyenv/versions/3.11.7/include/python3.11", &PY311),
            ("/root/.pyenv/versions/3.12.1/include/python3.12", &PY312),
            ("/root/.pyenv/versions/3.13.0/include/python3.13", &PY313),
        ];
        let mut checked = 0;
        for (dir, layout) in dirs {
            let dir = Path::new(dir);
            if !dir.join("internal/pycore_frame.h").exists() {
                crate::testenv::skip(&format!("no CPython headers at {}", dir.display()));
                continue;
            }
            let Some(m) = measured(dir) else {
                crate::testenv::missing("cannot build offsets.c (no gcc?)");
                return;
            };
            for (name, want) in ours(layout) {
                assert_eq!(m.get(name).copied(), want, "{name} in {}", dir.display());
            }
            checked += 1;
        }
        crate::testenv::assert_headers_checked(checked, dirs.iter().map(|d| d.0));
    }
}
