use super::*;
use crate::python::{layout, section};
use std::path::{Path, PathBuf};

fn unpacked(minor: u64) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../target/pythons/3.{minor}/usr"))
}

/// Every interpreter the Python tests run, with its minor version.
fn interpreters() -> Vec<(PathBuf, u64)> {
    vec![
        ("/usr/bin/python3.11".into(), 11),
        ("/root/.pyenv/versions/3.11.7/bin/python3".into(), 11),
        ("/root/.pyenv/versions/3.12.1/bin/python3".into(), 12),
        ("/root/.pyenv/versions/3.13.0/bin/python3".into(), 13),
        (unpacked(14).join("bin/python3.14"), 14),
        (unpacked(15).join("bin/python3.15"), 15),
    ]
}

fn require_all() -> bool {
    std::env::var_os("OBSERVER_REQUIRE_ALL").is_some_and(|v| v != "0")
}

/// The file of a 3.14+ install that carries `.AsyncioDebug`: Debian
/// builds `_asyncio` as a shared module for 3.14, into the interpreter
/// for 3.15.
fn asyncio_debug_of(minor: u64) -> Option<AsyncioDebug> {
    let dynload = unpacked(minor).join(format!("lib/python3.{minor}/lib-dynload"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dynload)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("/_asyncio."))
        .collect();
    files.push(unpacked(minor).join(format!("bin/python3.{minor}")));
    files
        .iter()
        .find_map(|f| section::file_section(f, ".AsyncioDebug"))
        .and_then(|b| AsyncioDebug::parse(&b))
}

/// The offsets `_asyncio` publishes for the interpreter and thread
/// states, as parsed here, are the headers' (checked on every 3.14+
/// install); the Task's are measured below.
#[test]
fn asyncio_debug_sections_match_the_headers() {
    let mut checked = 0;
    for (dir, minor) in layout::header_dirs().into_iter().filter(|d| d.1 >= 14) {
        if !dir.join("internal/pycore_tstate.h").exists() {
            assert!(!require_all(), "no CPython headers at {}", dir.display());
            eprintln!("skip: no CPython headers at {}", dir.display());
            continue;
        }
        let d = asyncio_debug_of(minor)
            .unwrap_or_else(|| panic!("3.{minor}: no .AsyncioDebug section"));
        // compile_and_print adds the build's own -D flags (Debian's
        // `_Py_TIER2`, `_Py_JIT` add fields to the thread state).
        let program = include_str!("asyncio_debug.c");
        let Some(m) = layout::compile_and_print("asyncio_debug", program, &dir) else {
            eprintln!("skip: cannot build asyncio_debug.c (no gcc?)");
            return;
        };
        for (name, ours) in [
            ("interp_size", d.interp_size),
            ("interp_tasks_head", d.interp_tasks_head),
            ("ts_size", d.ts_size),
            ("ts_running_loop", d.ts_running_loop),
            ("ts_running_task", d.ts_running_task),
            ("ts_tasks_head", d.ts_tasks_head),
        ] {
            assert_eq!(m.get(name).copied(), Some(ours), "3.{minor}: {name}");
        }
        checked += 1;
    }
    eprintln!("checked {checked} .AsyncioDebug sections");
    assert!(!require_all() || checked == 2, "checked {checked} of 2");
}

/// The Task offsets of each layout table (and, from 3.14 on, those the
/// target's `.AsyncioDebug` gives) are where each interpreter keeps
/// them: measured by task_layout.py on live tasks.
#[test]
fn task_offsets_are_measured_on_every_interpreter() {
    let dir = std::env::temp_dir().join(format!("obs-task-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("task_layout.py");
    std::fs::write(&script, include_str!("task_layout.py")).unwrap();
    let (mut checked, mut present) = (0, 0);
    for (py, minor) in interpreters() {
        if !py.exists() {
            assert!(!require_all(), "{} is missing", py.display());
            eprintln!("skip: {} is not installed", py.display());
            continue;
        }
        present += 1;
        let out = std::process::Command::new(&py)
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", py.display());
        let m: HashMap<String, u64> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.parse::<i64>().ok()? as u64))
            })
            .collect();
        let t = layout::for_version(3, minor).unwrap().task;
        let d = (minor >= 14).then(|| asyncio_debug_of(minor).unwrap());
        let coro = t.coro.or(d.map(|d| d.task_coro));
        let name = t.name.or(d.map(|d| d.task_name));
        // The table says where to look only where the section does not.
        assert_eq!(t.coro.is_none(), minor >= 14);
        assert_eq!(t.name.is_none(), minor >= 14);
        if let Some(d) = d {
            assert_eq!(m.get("basicsize").copied(), Some(d.task_size), "3.{minor}");
        }
        for (field, ours) in [
            ("fut_loop", Some(t.fut_loop)),
            ("fut_state", Some(t.fut_state)),
            ("fut_waiter", Some(t.fut_waiter)),
            ("coro", coro),
            ("name", name),
        ] {
            assert_eq!(m.get(field).copied(), ours, "{}: {field}", py.display());
        }
        checked += 1;
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("measured the Task on {checked} interpreters");
    assert!(checked > 0 && checked == present);
}

/// A section whose offsets fall outside the sizes it gives is refused.
#[test]
fn torn_asyncio_debug_sections_are_refused() {
    let words = |v: [u64; 13]| v.iter().flat_map(|w| w.to_ne_bytes()).collect::<Vec<u8>>();
    let good = [
        168, 136, 96, 108, 109, 128, 152, 225864, 10880, 936, 864, 872, 880,
    ];
    let d = AsyncioDebug::parse(&words(good)).unwrap();
    assert_eq!((d.task_coro, d.task_node, d.ts_tasks_head), (128, 152, 880));
    let mut bad = good;
    bad[6] = 168; // the node past the task's end
    assert_eq!(AsyncioDebug::parse(&words(bad)), None);
    let mut bad = good;
    bad[12] = 4096; // the list head past the thread state's end
    assert_eq!(AsyncioDebug::parse(&words(bad)), None);
    assert_eq!(AsyncioDebug::parse(&[0; 40]), None);
}

fn task(addr: u64, name: &str, waits: &[u64]) -> TaskView {
    TaskView {
        addr,
        name: name.into(),
        coro: "work".into(),
        state: TaskState::Pending,
        chain: Vec::new(),
        waits_for: waits
            .iter()
            .map(|&t| TaskEdge {
                task: t,
                why: Why::Awaits,
            })
            .collect(),
        waits_lock: None,
        holds: Vec::new(),
        label: None,
        running: false,
        fut_waiter: None,
        executor: None,
        thread_locks: Vec::new(),
    }
}

#[test]
fn cycles_are_found_once_and_only_among_pending_tasks() {
    let mut v = AsyncView {
        loops: vec![LoopView {
            addr: 1,
            tasks: vec![
                task(30, "c", &[10]),
                task(10, "a", &[20]),
                task(20, "b", &[10]),
                task(40, "d", &[30]),
                task(50, "e", &[50]),
            ],
            ..Default::default()
        }],
        note: None,
    };
    let c = v.cycles();
    let ids: Vec<Vec<u64>> = c.iter().map(|c| c.iter().map(|e| e.0).collect()).collect();
    assert_eq!(ids, vec![vec![10, 20], vec![50]]);
    v.loops[0].tasks[2].state = TaskState::Done;
    assert_eq!(v.cycles().len(), 1);
}

#[test]
fn a_future_has_an_owner_only_when_one_other_task_keeps_it() {
    let refs = |v: &[(u64, &[u64], &[u64], u64)]| {
        Owners::new(
            v.iter()
                .map(|&(t, locals, reach, awaits)| {
                    let r = Refs {
                        locals: locals.iter().copied().collect(),
                        reach: reach.iter().copied().collect(),
                        awaits,
                    };
                    (t, r)
                })
                .collect(),
        )
    };
    // Task 1 awaits future 100, which task 2 keeps in a local; task 2
    // awaits 101, which task 1 keeps: an await cycle's two edges.
    let mut base = vec![
        (1, &[101, 7][..], &[][..], 100),
        (2, &[100, 8][..], &[][..], 101),
        (3, &[9][..], &[][..], 0),
    ];
    assert_eq!(refs(&base).owner(1, 100), Some(2));
    assert_eq!(refs(&base).owner(2, 101), Some(1));
    // A future no task refers to.
    assert_eq!(refs(&base).owner(1, 102), None);
    // A third task keeps it in a list (say the main task's pending
    // futures): it could complete it too.
    base[2].2 = &[100];
    assert_eq!(refs(&base).owner(1, 100), None);
    // Reached only through a list or attribute: no owner named.
    base[2].2 = &[];
    base[1].1 = &[8];
    base[1].2 = &[100];
    assert_eq!(refs(&base).owner(1, 100), None);
    // Two tasks awaiting the same future, both keeping it: neither
    // can complete it, so neither is the other's owner.
    let both = [(1, &[100][..], &[][..], 100), (2, &[100][..], &[][..], 100)];
    assert_eq!(refs(&both).owner(1, 100), None);
    assert_eq!(refs(&both).owner(2, 100), None);
}
