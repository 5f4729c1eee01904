//! Frames and mappings as the core sees them: native frames, Python frames,
//! one stack in the order it ran, and /proc/PID/maps lines. Plain data: the
//! symbolizer that fills them lives in the binary.

use serde::{Deserialize, Serialize};

/// One native frame, innermost first. Inlined functions get their own
/// frames (`inlined: true`) before the function they were inlined into,
/// all with the same `addr`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The instruction pointer (first frame) or the return address.
    pub addr: u64,
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// The mapped file as /proc/PID/maps names it, or "[vdso]".
    pub module: Option<String>,
    /// `addr` as a virtual address of the module's ELF file (what
    /// `addr2line -e MODULE` and `objdump` take); `addr` itself when the
    /// address is in no known module.
    pub module_offset: u64,
    pub inlined: bool,
}

/// One Python frame, innermost first. `file` and `function` are target data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyFrame {
    pub function: String,
    pub file: String,
    pub line: i32,
}

/// One line of /proc/PID/maps. File mappings are also recorded (the
/// `mappings` event) so that addresses can be symbolized from the files
/// after the process is gone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub write: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exec: bool,
    /// MAP_SHARED ('s' in maps): futexes in it are keyed by the backing
    /// object, so other processes mapping it share them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
    pub offset: u64,
    pub dev: (u32, u32),
    pub inode: u64,
    /// The path column as the kernel prints it (may end in " (deleted)",
    /// may be a pseudo name like "[stack]"); empty for anonymous memory.
    pub path: String,
    /// The file's GNU build-id (hex), which tells whether the file found at
    /// `path` later is still the one that was mapped. Empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build_id: String,
}

impl MapEntry {
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.starts_with('/')
    }
}

/// Parses the text of /proc/PID/maps. Malformed lines are skipped.
pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MapEntry> {
    // "start-end perms offset major:minor inode   path"; the path may hold spaces.
    let mut rest = line;
    let mut field = || {
        let s = rest.trim_start_matches(' ');
        let end = s.find(' ').unwrap_or(s.len());
        let (f, r) = s.split_at(end);
        rest = r;
        f
    };
    let range = field();
    let perms = field().as_bytes().to_vec();
    let offset = field();
    let dev = field();
    let inode = field();
    let path = rest.trim_start_matches(' ').to_string();
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    if perms.len() < 3 {
        return None;
    }
    Some(MapEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms.get(3) == Some(&b's'),
        offset: u64::from_str_radix(offset, 16).ok()?,
        dev: (
            u32::from_str_radix(major, 16).ok()?,
            u32::from_str_radix(minor, 16).ok()?,
        ),
        inode: inode.parse().ok()?,
        path,
        build_id: String::new(),
    })
}

// One stack in the order it ran: a CPython thread's Python frames merged
// into its native stack, each Python frame where the interpreter's eval
// loop (`_PyEval_EvalFrameDefault`) runs it, as py-spy `--native` and
// PyStack show them.

/// One frame of a merged stack: `{"kind": "native", ...Frame}` or
/// `{"kind": "python", ...PyFrame}` in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StackFrame {
    Native(Frame),
    Python(PyFrame),
}

impl StackFrame {
    pub fn is_python(&self) -> bool {
        matches!(self, StackFrame::Python(_))
    }
}

/// Native frames only, each tagged `"kind": "native"` (for `frames`
/// fields that never hold Python frames, so every `frames` reads alike).
pub fn serialize_native<S: serde::Serializer>(frames: &[Frame], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    #[derive(Serialize)]
    struct Tagged<'a> {
        kind: &'static str,
        #[serde(flatten)]
        frame: &'a Frame,
    }
    let mut seq = s.serialize_seq(Some(frames.len()))?;
    for f in frames {
        seq.serialize_element(&Tagged {
            kind: "native",
            frame: f,
        })?;
    }
    seq.end()
}

/// The function name's tokens, split on `_` and `.` (py-spy's way: it
/// also covers `_PyEval_EvalFrameDefault.cold`).
fn tokens(name: &str) -> impl Iterator<Item = &str> {
    name.split(['_', '.']).filter(|t| !t.is_empty())
}

/// The interpreter's eval loop: one C call that runs Python frames.
pub fn is_eval_frame(f: &Frame) -> bool {
    let Some(name) = f.function.as_deref() else {
        return false;
    };
    let mut t = tokens(name);
    t.next() == Some("PyEval") && matches!(t.next(), Some("EvalFrameDefault" | "EvalFrameEx"))
}

/// A native frame of the interpreter's call machinery (vectorcall, the
/// generic call paths, eval-loop frames left over, frames without a name),
/// which a merged stack in text leaves out as py-spy `--native` does. The
/// interpreter's frames that do work stay: a lock's acquire, `time.sleep`,
/// `list.sort` calling back into Python, the thread's start.
pub fn is_interpreter_frame(f: &Frame) -> bool {
    let in_python = f.module.as_deref().is_some_and(is_python_file);
    if !in_python {
        return false;
    }
    let Some(name) = f.function.as_deref() else {
        return true;
    };
    let lower = name.to_ascii_lowercase();
    lower.contains("call") || lower.contains("pyeval") || lower.contains("evalframe")
}

/// Merges a thread's native stack and its Python stack (both innermost
/// first) into one list, innermost first: each eval-loop frame is replaced
/// by the Python frames it runs. `entries[i]` tells whether Python frame
/// `i` is the first its eval-loop call ran (from the interpreter; empty
/// when unknown). Without it, the Python frames go one per eval-loop frame
/// when the counts match (each call runs one frame), else all at the
/// innermost eval-loop frame (the innermost C call under the innermost
/// Python line is what is certain). A stack without a named eval-loop
/// frame gets the Python frames after its last interpreter frame (or after
/// all its native frames: a short unwind). Nothing is dropped: eval-loop
/// frames left over stay as native frames.
pub fn merge(native: &[Frame], python: &[PyFrame], entries: &[bool]) -> Vec<StackFrame> {
    let mut out = Vec::with_capacity(native.len() + python.len());
    let evals = native.iter().filter(|f| is_eval_frame(f)).count();
    let known = entries.len() == python.len() && !python.is_empty();
    let one_each = !known && evals == python.len();
    let mut next = 0;
    for f in native {
        if !is_eval_frame(f) || next >= python.len() {
            out.push(StackFrame::Native(f.clone()));
            continue;
        }
        let end = if known {
            // Up to and including the entry frame.
            (next..python.len())
                .find(|&i| entries[i])
                .map_or(python.len(), |i| i + 1)
        } else if one_each {
            next + 1
        } else {
            python.len()
        };
        out.extend(python[next..end].iter().cloned().map(StackFrame::Python));
        next = end;
    }
    if evals == 0 {
        // No eval-loop frame has a name (an interpreter stripped of its
        // local symbols) or the unwinding stopped early: the Python frames
        // go below the interpreter's innermost-to-outermost frames, above
        // the thread's start (`start_thread`, `__libc_start_main`).
        let at = out
            .iter()
            .rposition(|f| match f {
                StackFrame::Native(n) => n.module.as_deref().is_some_and(is_python_file),
                StackFrame::Python(_) => false,
            })
            .map_or(out.len(), |i| i + 1);
        out.splice(at..at, python.iter().cloned().map(StackFrame::Python));
        return out;
    }
    out.extend(python[next..].iter().cloned().map(StackFrame::Python));
    out
}

/// Whether a mapping names a CPython interpreter binary or libpython.
pub fn is_python_file(path: &str) -> bool {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.strip_suffix(" (deleted)").unwrap_or(base);
    // python, python3, python3.11, python3.13t, libpython3.11.so.1.0, ...
    let rest = base.strip_prefix("lib").unwrap_or(base);
    let Some(ver) = rest.strip_prefix("python") else {
        return false;
    };
    ver.is_empty() || ver.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(name: &str, module: &str) -> Frame {
        Frame {
            addr: 1,
            function: Some(name.into()),
            file: None,
            line: None,
            module: Some(module.into()),
            module_offset: 0,
            inlined: false,
        }
    }

    fn p(name: &str) -> PyFrame {
        PyFrame {
            function: name.into(),
            file: "t.py".into(),
            line: 1,
        }
    }

    fn names(v: &[StackFrame]) -> Vec<String> {
        v.iter()
            .map(|f| match f {
                StackFrame::Native(f) => f.function.clone().unwrap(),
                StackFrame::Python(f) => format!("py:{}", f.function),
            })
            .collect()
    }

    const PY: &str = "/usr/bin/python3.11";
    const LIBC: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";

    fn native() -> Vec<Frame> {
        vec![
            n("futex_wait", LIBC),
            n("sem_clockwait", LIBC),
            n("PyThread_acquire_lock_timed", PY),
            n("lock_PyThread_acquire_lock", PY),
            n("_PyEval_EvalFrameDefault", PY),
            n("_PyFunction_Vectorcall", PY),
            n("PyObject_Call", PY),
            n("_PyEval_EvalFrameDefault", PY),
            n("thread_run", PY),
            n("start_thread", LIBC),
        ]
    }

    #[test]
    fn python_frames_sit_at_their_eval_loop() {
        // worker and its caller run in the inner eval call; run and
        // _bootstrap_inner in the outer one (entry frames end a call).
        let py = [p("take"), p("worker"), p("run"), p("_bootstrap_inner")];
        let m = merge(&native(), &py, &[false, true, false, true]);
        assert_eq!(
            names(&m),
            [
                "futex_wait",
                "sem_clockwait",
                "PyThread_acquire_lock_timed",
                "lock_PyThread_acquire_lock",
                "py:take",
                "py:worker",
                "_PyFunction_Vectorcall",
                "PyObject_Call",
                "py:run",
                "py:_bootstrap_inner",
                "thread_run",
                "start_thread",
            ]
        );
        assert_eq!(m.iter().filter(|f| f.is_python()).count(), 4);
    }

    #[test]
    fn without_entries() {
        // As many eval calls as Python frames: one each.
        let m = merge(&native(), &[p("worker"), p("run")], &[]);
        assert_eq!(names(&m)[4], "py:worker");
        assert_eq!(names(&m)[7], "py:run");
        // Fewer: all at the innermost, the outer eval frame kept.
        let m = merge(&native(), &[p("a"), p("b"), p("c")], &[]);
        let v = names(&m);
        assert_eq!(&v[4..7], ["py:a", "py:b", "py:c"]);
        assert!(v.contains(&"_PyEval_EvalFrameDefault".to_string()));
        // No eval frame (a short unwind): Python after native.
        let m = merge(&native()[..2], &[p("a")], &[true]);
        assert_eq!(names(&m), ["futex_wait", "sem_clockwait", "py:a"]);
        // No named eval frame (a stripped interpreter): after the
        // interpreter's frames, above the thread's start.
        let mut stripped = native();
        for f in &mut stripped[4..9] {
            f.function = None;
        }
        stripped[4].function = Some("x".into());
        let m = merge(&stripped, &[p("a"), p("b")], &[]);
        let v: Vec<String> = m
            .iter()
            .map(|f| match f {
                StackFrame::Native(f) => f.function.clone().unwrap_or_default(),
                StackFrame::Python(f) => format!("py:{}", f.function),
            })
            .collect();
        assert_eq!(&v[9..], ["py:a", "py:b", "start_thread"]);
        // More Python frames than the entries say run: the rest at the end.
        let m = merge(&native(), &[p("a"), p("b"), p("c")], &[true, true, true]);
        assert_eq!(names(&m).last().unwrap(), "py:c");
        // Nothing Python: the native stack as it is.
        assert_eq!(merge(&native(), &[], &[]).len(), native().len());
        assert_eq!(names(&merge(&[], &[p("a")], &[])), ["py:a"]);
    }

    #[test]
    fn eval_and_interpreter_frames() {
        assert!(is_eval_frame(&n("_PyEval_EvalFrameDefault", PY)));
        assert!(is_eval_frame(&n("_PyEval_EvalFrameDefault.cold", PY)));
        assert!(is_eval_frame(&n("PyEval_EvalFrameEx", PY)));
        // The inlined wrapper is not the loop.
        assert!(!is_eval_frame(&n("_PyEval_EvalFrame", PY)));
        assert!(is_interpreter_frame(&n("_PyFunction_Vectorcall", PY)));
        assert!(is_interpreter_frame(&n(
            "method_vectorcall_VARARGS_KEYWORDS",
            "/usr/lib/libpython3.12.so.1.0"
        )));
        assert!(!is_interpreter_frame(&n("PyThread_acquire_lock_timed", PY)));
        assert!(!is_interpreter_frame(&n("lock_PyThread_acquire_lock", PY)));
        assert!(!is_interpreter_frame(&n("time_sleep", PY)));
        assert!(!is_interpreter_frame(&n("list_sort_impl", PY)));
        assert!(is_interpreter_frame(&n("_PyObject_MakeTpCall", PY)));
        assert!(is_interpreter_frame(&n("PyObject_Vectorcall", PY)));
        assert!(is_interpreter_frame(&n("_PyEval_Vector", PY)));
        assert!(!is_interpreter_frame(&n("futex_wait", LIBC)));
        assert!(!is_interpreter_frame(&n(
            "ffi_call",
            "/usr/lib/libffi.so.8"
        )));
    }

    #[test]
    fn json_kinds() {
        let m = merge(&native()[..1], &[p("a")], &[]);
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(v[0]["kind"], "native");
        assert_eq!(v[0]["function"], "futex_wait");
        assert_eq!(v[1]["kind"], "python");
        assert_eq!(v[1]["function"], "a");
        let back: Vec<StackFrame> = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }
}
