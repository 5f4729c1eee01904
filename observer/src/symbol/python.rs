//! CPython awareness through py-spy used as a library: thread names
//! (`threading.Thread.name`), Python stacks and the GIL holder. py-spy reads
//! the interpreter's memory with `process_vm_readv`; with
//! `LockingStrategy::NonBlocking` it never pauses the target.

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::{MapEntry, PyFrame};
pub(super) use observer_core::vocab::frames::is_python_file;

/// A Python thread: its OS thread id, its `threading` name and its stack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PyThread {
    /// OS thread id (0 when the interpreter does not record it, < 3.8).
    pub tid: u32,
    pub name: Option<String>,
    pub owns_gil: bool,
    pub frames: Vec<PyFrame>,
    /// Per frame of `frames`: whether it is the first Python frame its
    /// eval-loop call (`_PyEval_EvalFrameDefault`) runs (3.11+ run
    /// Python-to-Python calls in one C call). Empty: not known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<bool>,
}

/// True when the interpreter is a free-threaded build (python3.13t).
pub(super) fn free_threaded(maps: &[MapEntry]) -> bool {
    maps.iter().any(|e| {
        e.exec
            && is_python_file(&e.path)
            && e.path.rsplit('/').next().is_some_and(|b| {
                b.trim_end_matches(" (deleted)")
                    .split(".so")
                    .next()
                    .is_some_and(|n| n.ends_with('t'))
            })
    })
}

/// True when the process maps a CPython interpreter.
pub(super) fn looks_like_python(maps: &[MapEntry]) -> bool {
    maps.iter().any(|e| e.exec && is_python_file(&e.path))
}

/// Runs a py-spy call on memory that changes under it: a torn read can
/// make py-spy panic (an index or a length from garbage), which must cost
/// this one read, not the observer.
fn guarded<T>(what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        Err(anyhow::anyhow!(
            "{what}: py-spy panicked on the process's memory"
        ))
    })
}

pub(super) fn new_spy(pid: u32) -> anyhow::Result<py_spy::PythonSpy> {
    let config = py_spy::Config {
        blocking: py_spy::config::LockingStrategy::NonBlocking,
        native: false,
        // Blocked threads are exactly the idle ones we want.
        include_idle: true,
        collect_thread_names: true,
        full_filenames: true,
        lineno: py_spy::config::LineNo::LastInstruction,
        ..Default::default()
    };
    guarded("finding the Python interpreter", || {
        py_spy::PythonSpy::new(pid as py_spy::Pid, &config)
    })
    .with_context(|| format!("reading the Python interpreter of {pid}"))
}

pub(super) fn threads(spy: &mut py_spy::PythonSpy) -> anyhow::Result<Vec<PyThread>> {
    // Reading a running interpreter without pausing it can catch a frame
    // mid-update: retry a few times before giving up.
    let mut last = None;
    for _ in 0..3 {
        match guarded("reading Python stacks", || spy.get_stack_traces()) {
            Ok(traces) => {
                return Ok(traces
                    .into_iter()
                    .map(|t| PyThread {
                        tid: t
                            .os_thread_id
                            .and_then(|t| u32::try_from(t).ok())
                            .unwrap_or(0),
                        name: t.thread_name,
                        owns_gil: t.owns_gil,
                        // py-spy: 3.11 marks entry frames, 3.12+ the frame
                        // above a shim (both end one eval-loop call).
                        entries: t
                            .frames
                            .iter()
                            .map(|f| f.is_entry || f.is_shim_entry)
                            .collect(),
                        frames: t
                            .frames
                            .into_iter()
                            .map(|f| PyFrame {
                                function: f.name,
                                file: f.filename,
                                line: f.line,
                            })
                            .collect(),
                    })
                    .collect());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one attempt")).context("reading Python stacks")
}

#[cfg(test)]
mod tests {
    use super::guarded;
    use super::is_python_file;

    #[test]
    fn python_file_names() {
        for p in [
            "/usr/bin/python3.11",
            "/root/.pyenv/versions/3.11.7/bin/python3.11",
            "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
            "/opt/python",
            "/x/python3.13t (deleted)",
        ] {
            assert!(is_python_file(p), "{p}");
        }
        for p in [
            "/usr/bin/pythonista",
            "/usr/lib/libc.so.6",
            "[vdso]",
            "",
            "/usr/lib/python3/dist-packages/_x.so",
        ] {
            assert!(!is_python_file(p), "{p}");
        }
    }

    #[test]
    fn a_panic_inside_a_py_spy_call_is_an_error() {
        let r: anyhow::Result<u32> = guarded("reading", || {
            let v: Vec<u32> = Vec::new();
            Ok(v[std::hint::black_box(3)])
        });
        let e = r.unwrap_err().to_string();
        assert!(e.contains("py-spy panicked"), "{e}");
        assert_eq!(guarded("reading", || Ok(7)).unwrap(), 7);
    }
}
