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
    let dirs = header_dirs();
    let mut checked = 0;
    for (dir, minor) in dirs.clone() {
        let layout = for_version(3, minor).unwrap();
        let dir = dir.as_path();
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
    crate::testenv::assert_headers_checked(
        checked,
        dirs.iter().map(|d| d.0.to_str().unwrap_or_default()),
    );
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
