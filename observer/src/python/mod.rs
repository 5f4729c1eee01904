//! The Python view of a CPython process, read from the interpreter's memory
//! without stopping it: every thread's `threading` name and Python stack,
//! the `threading` lock it waits for (cross-checked against its futex
//! wait), the locks its active `with` blocks hold, a pending `join()`, and
//! labelled waits (Queue.get, Condition.wait, ...), with lock names as the
//! program spells them. py-spy finds the interpreter; the walk is ours,
//! with per-version offsets checked against the headers (layout.rs).

pub mod asyncio;
mod futures;
#[cfg(test)]
mod fuzz_tests;
pub mod gil;
pub mod layout;
mod locks;
pub mod reader;
mod section;
mod walk;

use std::collections::HashMap;

use observer_core::vocab::frames::MapEntry;
pub use observer_core::vocab::python::*;
pub use walk::inspect;

/// Where a CPython process's interpreter is, and how to read it.
#[derive(Clone, Debug)]
pub struct Located {
    pub version: String,
    pub major: u64,
    pub minor: u64,
    /// The main `PyInterpreterState`.
    pub interp: u64,
    /// The offsets to read it with: this version's table, with every
    /// offset the target's `_Py_DebugOffsets` covers taken from the target.
    /// None: neither a table nor debug offsets know this version.
    pub layout: Option<layout::Layout>,
    /// How many offsets came from the target (0: the table alone).
    pub from_target: usize,
    /// The target says it is a free-threaded build (3.13+).
    pub free_threaded: bool,
    /// Set when only part of the view can be read (a version newer than
    /// the tables): what is left out, in one line.
    pub limited: Option<String>,
}

impl Located {
    fn new(version: String, major: u64, minor: u64, interp: u64) -> Self {
        let layout = layout::for_version(major, minor).copied();
        Located {
            version,
            major,
            minor,
            interp,
            layout,
            from_target: 0,
            free_threaded: false,
            limited: None,
        }
    }

    pub fn of_spy(spy: &py_spy::python_spy::PythonSpy) -> Self {
        Located::new(
            spy.version.to_string(),
            spy.version.major,
            spy.version.minor,
            spy.addresses.interpreter_address as u64,
        )
    }

    /// Takes what the target's debug offsets say. A minor version newer
    /// than the tables is read with the newest table under them, for
    /// names and stacks only (the lock objects' layout is not published).
    pub fn with_debug_offsets(&mut self, d: &layout::DebugOffsets) {
        if d.major() != self.major || d.minor() != self.minor {
            return;
        }
        self.free_threaded = d.free_threaded;
        if d.fields.is_empty() {
            return;
        }
        let newest = layout::newest();
        let mut l = self.layout.unwrap_or(*newest);
        self.from_target = l.apply_debug_offsets(d);
        if self.from_target == 0 {
            return;
        }
        if self.layout.is_none() {
            self.limited = Some(format!(
                "CPython {}: newer than the layouts known (3.11-3.{}): names and stacks are read from the runtime's debug offsets; the Python lock graph, GIL and asyncio are not read",
                self.version, newest.minor
            ));
        }
        self.layout = Some(l);
    }
}

/// What a file's symbols say about the interpreter, the same in every
/// process that maps the file: where `_PyRuntime` is (as an offset into
/// the file) and the version.
#[derive(Clone, Debug, PartialEq)]
pub struct FileFacts {
    runtime_off: u64,
    version: String,
    major: u64,
    minor: u64,
}

/// A mapped file, as the kernel names it: (device, inode).
pub type FileId = ((u32, u32), u64);

/// Finds the interpreter of a CPython 3.11+ process from its `_PyRuntime`
/// and `Py_Version` symbols (py-spy's binary parsing), without the stack
/// walk `PythonSpy::new` does to validate it: the walk that follows
/// validates it too (no threads: the caller falls back to py-spy). From
/// 3.13 on, the offsets come from the runtime's `_Py_DebugOffsets`.
///
/// What another process mapping the same interpreter file taught
/// (`known`) is used as is: the symbol tables of python and libpython are parsed
/// once per file, not once per process (a hundred workers starting at once
/// cost one parse). Returns what to remember when it parsed.
pub fn locate_known(
    pid: u32,
    maps: &[MapEntry],
    known: &HashMap<FileId, FileFacts>,
) -> anyhow::Result<(Located, Option<(FileId, FileFacts)>)> {
    for m in maps.iter().filter(|m| m.inode != 0) {
        let Some(f) = known.get(&(m.dev, m.inode)) else {
            continue;
        };
        if f.runtime_off >= m.offset && f.runtime_off - m.offset < m.end - m.start {
            let runtime = m.start + (f.runtime_off - m.offset);
            return Ok((finish_locate(pid, runtime, f)?, None));
        }
    }
    let (runtime, facts) = parse_interp(pid)?;
    let learned = maps
        .iter()
        .find(|m| m.inode != 0 && (m.start..m.end).contains(&runtime))
        .map(|m| {
            let f = FileFacts {
                runtime_off: runtime - m.start + m.offset,
                ..facts.clone()
            };
            ((m.dev, m.inode), f)
        });
    Ok((finish_locate(pid, runtime, &facts)?, learned))
}

/// `_PyRuntime`'s address in `pid` and the version, from the symbols of
/// the interpreter's files (py-spy's parser: the slow part).
fn parse_interp(pid: u32) -> anyhow::Result<(u64, FileFacts)> {
    use anyhow::Context;
    use py_spy::python_process_info::{PythonProcessInfo, get_python_version};
    let process = remoteprocess::Process::new(pid as remoteprocess::Pid)
        .with_context(|| format!("opening process {pid}"))?;
    let info = PythonProcessInfo::new(&process)?;
    let v = get_python_version(&info, &process)?;
    let runtime = *info
        .get_symbol("_PyRuntime")
        .context("no _PyRuntime symbol")?;
    Ok((
        runtime,
        FileFacts {
            runtime_off: 0,
            version: v.to_string(),
            major: v.major,
            minor: v.minor,
        },
    ))
}

/// The rest of `locate`, read from `pid` itself: the debug offsets and
/// the interpreter list.
fn finish_locate(pid: u32, runtime: u64, f: &FileFacts) -> anyhow::Result<Located> {
    use anyhow::Context;
    let v = &f.version;
    let mem = reader::Live(pid);
    let mut loc = Located::new(v.clone(), f.major, f.minor, 0);
    if let Some(d) = layout::DebugOffsets::read(&mem, runtime) {
        loc.with_debug_offsets(&d);
    }
    let l = loc
        .layout
        .with_context(|| format!("CPython {v}: layout not known"))?;
    loc.interp = reader::Mem::read(&mem, runtime + l.runtime_interp_head, 8)
        .and_then(|b| reader::u64_at(&b, 0))
        .filter(|&p| reader::Reader::<reader::Live>::ptr_ok(p))
        .context("reading _PyRuntime.interpreters.head")?;
    Ok(loc)
}

/// The Python view of live process `pid`, whose interpreter is at `loc`.
/// An unknown layout or a free-threaded build gives a view that says so
/// and nothing else; a version newer than the tables read through its
/// debug offsets gives names and stacks only.
pub fn view(
    pid: u32,
    loc: &Located,
    free_threaded: bool,
    waits: &std::collections::HashMap<u32, u64>,
) -> PyView {
    let vs = loc.version.clone();
    let unsupported = |why: String| PyView {
        version: vs.clone(),
        unsupported: Some(why),
        ..Default::default()
    };
    if free_threaded || loc.free_threaded {
        return unsupported(format!(
            "CPython {vs} is a free-threaded build: its Python locks are not read (native view only)"
        ));
    }
    let Some(layout) = &loc.layout else {
        return unsupported(format!(
            "CPython {vs}: interpreter layout not known (3.11-3.{} are, and later versions through their debug offsets): Python locks are not read (native view only)",
            layout::newest().minor
        ));
    };
    let t0 = std::time::Instant::now();
    let reads = reader::READS.load(std::sync::atomic::Ordering::Relaxed);
    let mut v = inspect(
        &reader::Paged::new(pid),
        layout,
        vs.clone(),
        loc.interp,
        waits,
    );
    if let Some(why) = &loc.limited {
        v.names_and_stacks_only(why);
    }
    tracing::debug!(
        "python walk of {pid}: {} threads in {:?}, {} memory reads, {} offsets from the target",
        v.threads.len(),
        t0.elapsed(),
        reader::READS.load(std::sync::atomic::Ordering::Relaxed) - reads,
        loc.from_target
    );
    v
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        path::PathBuf,
        process::{Command, Stdio},
        time::{Duration, Instant},
    };

    /// The interpreters that publish `_Py_DebugOffsets` (3.13+).
    fn debug_pythons() -> Vec<(u64, PathBuf)> {
        let unpacked = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pythons");
        let mut v = vec![(
            13,
            PathBuf::from("/root/.pyenv/versions/3.13.0/bin/python3"),
        )];
        for minor in [14, 15] {
            v.push((
                minor,
                unpacked.join(format!("3.{minor}/usr/bin/python3.{minor}")),
            ));
        }
        v
    }

    /// A live interpreter's debug offsets agree with the table of its
    /// version for every field they cover, and name its threads.
    #[test]
    fn live_debug_offsets_agree_with_the_tables() {
        let mut checked = 0;
        for (minor, py) in debug_pythons() {
            if !py.exists() {
                assert!(
                    std::env::var_os("OBSERVER_REQUIRE_ALL").is_none(),
                    "CPython 3.{minor} is missing: {}",
                    py.display()
                );
                continue;
            }
            let mut child = Command::new(&py)
                .args([
                    "-c",
                    "import sys, time; print(1, flush=True); time.sleep(60)",
                ])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            std::io::BufRead::read_line(
                &mut std::io::BufReader::new(child.stdout.take().unwrap()),
                &mut line,
            )
            .unwrap();
            let pid = child.id();
            let end = Instant::now() + Duration::from_secs(10);
            let maps = || {
                observer_core::vocab::frames::parse_maps(
                    &std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap(),
                )
            };
            let none = HashMap::new();
            let (loc, learned) = loop {
                match super::locate_known(pid, &maps(), &none) {
                    Ok(l) => break l,
                    Err(e) if Instant::now() > end => panic!("3.{minor}: {e:#}"),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            // What it learned locates the interpreter again without a parse.
            let known: HashMap<_, _> = learned.into_iter().collect();
            assert_eq!(known.len(), 1, "3.{minor}: _PyRuntime is in a mapped file");
            let (again, none_learned) = super::locate_known(pid, &maps(), &known).unwrap();
            assert!(none_learned.is_none());
            assert_eq!(
                (again.interp, &again.version, &again.layout),
                (loc.interp, &loc.version, &loc.layout)
            );
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(loc.minor, minor);
            assert!(
                loc.from_target > 25,
                "3.{minor}: {} offsets taken",
                loc.from_target
            );
            assert!(!loc.free_threaded && loc.limited.is_none());
            assert_eq!(
                loc.layout.as_ref(),
                super::layout::for_version(3, minor),
                "3.{minor}: the table and the runtime's debug offsets disagree"
            );
            checked += 1;
        }
        assert!(checked > 0, "no CPython 3.13+ found");
    }
}
