//! The wheel `./x wheel` builds (issue 25): installed with `pip install
//! --no-index` into a fresh venv, it gives a self-contained `observer`
//! command (only libc, libm, libgcc_s; no glibc symbol newer than its
//! manylinux tag says), its man pages and completions under the venv's
//! share/, a `doctor` that attaches, and a `dump` that names a hung Python
//! program's deadlock: which threads, which locks. Root; every process has
//! a hard timeout and is killed.

mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(30);
/// Creating the venv and installing the wheel (no network: --no-index).
const PIP: Duration = Duration::from_secs(180);

/// Runs `c` to its end within `timeout` (killed and failed past it).
fn output(c: Command, timeout: Duration) -> (Option<i32>, String, String) {
    let shown = format!("{c:?}");
    let mut p = Proc::spawn(c);
    let st = p.wait_exit(timeout);
    let (out, err) = (p.stdout.join("\n"), p.stderr.join("\n"));
    eprintln!("{shown}: {st}");
    (st.code(), out, err)
}

fn ok(c: Command, timeout: Duration) -> String {
    let shown = format!("{c:?}");
    let (code, out, err) = output(c, timeout);
    assert_eq!(code, Some(0), "{shown}\n{out}\n{err}");
    out
}

/// Newest modification time of the files under `p` (a file or a tree).
fn newest(p: &Path) -> Option<(SystemTime, PathBuf)> {
    let m = std::fs::symlink_metadata(p).ok()?;
    if !m.is_dir() {
        return Some((m.modified().ok()?, p.to_path_buf()));
    }
    std::fs::read_dir(p)
        .ok()?
        .flatten()
        .filter_map(|e| newest(&e.path()))
        .max()
}

/// The wheel in target/wheels, if it is there and newer than everything
/// that goes into it; else `missing` (a failure under OBSERVER_REQUIRE_ALL).
fn built_wheel() -> Option<PathBuf> {
    let dir = repo().join("target/wheels");
    let whl = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("observer_hang-") && n.ends_with(".whl")
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    let Some(whl) = whl else {
        missing(&format!(
            "no observer_hang wheel in {}: `./x wheel` builds it (`./x test` does too)",
            dir.display()
        ));
        return None;
    };
    let built = whl.metadata().unwrap().modified().unwrap();
    let inputs = [
        "observer/src",
        "observer/Cargo.toml",
        "observer-core/src",
        "observer-core/Cargo.toml",
        "observer-abi/src",
        "observer-abi/Cargo.toml",
        "observer-ebpf/src",
        "observer-ebpf/build.rs",
        "observer-ebpf/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
        "man",
        "pyproject.toml",
    ];
    if let Some((t, p)) = inputs.iter().filter_map(|i| newest(&repo().join(i))).max()
        && t > built
    {
        missing(&format!(
            "{} is older than {}: `./x wheel` builds it again",
            whl.display(),
            p.display()
        ));
        return None;
    }
    Some(whl)
}

/// The manylinux tag's glibc (2, X) from the wheel's file name; a
/// `linux_x86_64` wheel promises nothing (None).
fn tag_glibc(whl: &Path) -> Option<(u32, u32)> {
    let name = whl.file_name().unwrap().to_string_lossy().into_owned();
    let plat = name.trim_end_matches(".whl").rsplit('-').next().unwrap();
    let rest = plat.strip_prefix("manylinux_")?;
    let mut it = rest.split('_');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// A fresh venv (Debian's python3: what `./x` installs) with the wheel in it.
fn venv_with(whl: &Path, dir: &Path) -> Option<PathBuf> {
    let py = Path::new("/usr/bin/python3");
    let ensurepip = Command::new(py)
        .args(["-c", "import ensurepip"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ensurepip {
        missing("/usr/bin/python3 with venv (Debian packages python3, python3-venv)");
        return None;
    }
    let venv = dir.join("venv");
    ok(
        {
            let mut c = Command::new(py);
            c.args(["-m", "venv"]).arg(&venv);
            c
        },
        PIP,
    );
    ok(
        {
            let mut c = Command::new(venv.join("bin/pip"));
            c.args([
                "install",
                "--no-index",
                "--disable-pip-version-check",
                "--no-cache-dir",
            ])
            .arg(whl);
            c
        },
        PIP,
    );
    Some(venv)
}

/// The installed command in a venv: the wheel's files, and what it needs
/// of the system.
fn check_install(whl: &Path, venv: &Path) {
    let bin = venv.join("bin/observer");
    assert!(bin.is_file(), "no {}", bin.display());
    let show = ok(
        {
            let mut c = Command::new(venv.join("bin/pip"));
            c.args(["show", "--disable-pip-version-check", "observer-hang"]);
            c
        },
        T,
    );
    let version = format!("Version: {}", env!("CARGO_PKG_VERSION"));
    assert!(show.lines().any(|l| l == version), "{show}");
    let v = ok(
        {
            let mut c = Command::new(&bin);
            c.arg("--version");
            c
        },
        T,
    );
    assert_eq!(v, format!("observer {}", env!("CARGO_PKG_VERSION")));

    // Self-contained: the BPF programs are in the binary; libc and the
    // compiler's runtime are all it links.
    let ldd = ok(
        {
            let mut c = Command::new("ldd");
            c.arg(&bin);
            c
        },
        T,
    );
    for l in ldd.lines() {
        let lib = l.split_whitespace().next().unwrap_or_default();
        let lib = lib.rsplit('/').next().unwrap();
        assert!(
            ["linux-vdso.so.1", "libgcc_s.so.1", "libm.so.6", "libc.so.6"].contains(&lib)
                || lib.starts_with("ld-linux"),
            "the installed observer links {lib}:\n{ldd}"
        );
    }
    // The platform tag is honest: no glibc symbol newer than it says.
    if let Some(max) = tag_glibc(whl)
        && let Some(objdump) = tool("objdump", "binutils", "the wheel's glibc symbol versions")
    {
        let syms = ok(
            {
                let mut c = Command::new(objdump);
                c.arg("-T").arg(&bin);
                c
            },
            T,
        );
        let newest = syms
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .filter_map(|w| w.strip_prefix("GLIBC_"))
            .filter_map(|v| {
                let mut it = v.split('.');
                Some((it.next()?.parse::<u32>().ok()?, it.next()?.parse().ok()?))
            })
            .max()
            .expect("the binary refers to no versioned glibc symbol");
        assert!(
            newest <= max,
            "{} claims glibc {max:?} but the binary needs GLIBC_{}.{}",
            whl.display(),
            newest.0,
            newest.1
        );
    }

    // The man pages, as man/ has them, and `man` finds them from PATH.
    let share = venv.join("share");
    let pages: Vec<PathBuf> = std::fs::read_dir(repo().join("man"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    assert!(pages.len() > 5, "{pages:?}");
    for p in &pages {
        let installed = share.join("man/man1").join(p.file_name().unwrap());
        let got =
            std::fs::read(&installed).unwrap_or_else(|e| panic!("{}: {e}", installed.display()));
        assert!(
            got == std::fs::read(p).unwrap(),
            "{} differs from {}",
            installed.display(),
            p.display()
        );
    }
    if let Some(man) = tool("man", "man-db", "finding the venv's man pages") {
        let path = format!("{}:/usr/bin:/bin", venv.join("bin").display());
        let found = ok(
            {
                let mut c = Command::new(man);
                c.args(["-w", "observer-dump"])
                    .env("PATH", &path)
                    .env_remove("MANPATH");
                c
            },
            T,
        );
        let manpath = Command::new("manpath")
            .env("PATH", &path)
            .env_remove("MANPATH")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        assert_eq!(
            Path::new(found.trim()),
            share.join("man/man1/observer-dump.1"),
            "man -w found another page; manpath: {manpath}"
        );
    }
    for (file, marker) in [
        (
            "bash-completion/completions/observer",
            "complete -F _observer",
        ),
        ("zsh/site-functions/_observer", "#compdef observer"),
        (
            "fish/vendor_completions.d/observer.fish",
            "complete -c observer",
        ),
    ] {
        let text =
            std::fs::read_to_string(share.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains(marker), "{file}: no {marker:?}");
        assert!(text.contains("kill-on-deadlock"), "{file}");
    }
}

/// `observer doctor` of the installed command: the programs load and attach.
fn check_doctor(bin: &Path) {
    let text = ok(
        {
            let mut c = Command::new(bin);
            c.arg("doctor");
            c
        },
        T,
    );
    for want in ["BTF: yes", "privileges: ok"] {
        assert!(text.lines().any(|l| l == want), "no {want:?} in\n{text}");
    }
    assert!(!text.contains("FAILED"), "{text}");
    for group in ["futex", "task_newtask", "sched_process_exit"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("auto: {group}: "))),
            "no hook for {group} in\n{text}"
        );
    }
}

/// `observer dump` of the installed command, on two threads deadlocked on
/// two `threading.Lock`s (fixtures/py_abba_globals.py under the venv's own
/// python): the cycle alpha -> audit_lock (held by beta) -> beta ->
/// ledger_lock (held by alpha), with the `with` lines.
fn check_dump(bin: &Path, venv: &Path) {
    let script = python_fixture("py_abba_globals");
    let mut p = Proc::spawn({
        let mut c = Command::new(venv.join("bin/python"));
        c.arg(&script);
        c
    });
    p.wait_stdout(T, |l| l == "ready");
    let pid = p.pid().to_string();
    let tid = |name: &str| u64::from(tid_of(&p.stdout, name));
    // The threads are blocked in their second `with` shortly after `ready`.
    let end = Instant::now() + T;
    let r = loop {
        let (code, out, err) = output(
            {
                let mut c = Command::new(bin);
                c.args(["dump", "--format", "json", "-p", &pid]);
                c
            },
            T,
        );
        if code == Some(3) {
            break serde_json::from_str::<Value>(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        }
        assert_eq!(code, Some(0), "{err}");
        assert!(Instant::now() < end, "no deadlock found in {T:?}: {out}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let dl: Vec<&Value> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "deadlock")
        .collect();
    assert_eq!(dl.len(), 1, "{:#}", r["findings"]);
    let cycle: BTreeSet<(u64, u64, String, String)> = dl[0]["cycle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["waiter_tid"].as_u64().unwrap(),
                c["holder_tid"].as_u64().unwrap(),
                c["lock"]["symbol"].as_str().unwrap_or("?").to_owned(),
                c["lock"]["kind"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(u64, u64, String, String)> = [
        (tid("alpha"), tid("beta"), "audit_lock", "py_lock"),
        (tid("beta"), tid("alpha"), "ledger_lock", "py_lock"),
    ]
    .into_iter()
    .map(|(w, h, l, k)| (w, h, l.to_owned(), k.to_owned()))
    .collect();
    assert_eq!(cycle, want, "{:#}", dl[0]);
    // Each waits in its second `with` for the lock the other holds.
    let line = |needle: &str| {
        let src = std::fs::read_to_string(&script).unwrap();
        let n = src.lines().position(|l| l.contains(needle)).unwrap() + 1;
        format!("py_abba_globals.py:{n}")
    };
    for (who, waits, holds, site) in [
        (
            "alpha",
            "audit_lock",
            "ledger_lock",
            "        with audit_lock:",
        ),
        (
            "beta",
            "ledger_lock",
            "audit_lock",
            "        with ledger_lock:",
        ),
    ] {
        let t = dl[0]["threads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["tid"] == tid(who))
            .unwrap_or_else(|| panic!("{who} not in {:#}", dl[0]));
        assert_eq!(t["name"], who, "{t:#}");
        let py = &t["python"];
        assert_eq!(py["waits"]["name"], waits, "{t:#}");
        assert_eq!(py["waits"]["how"], "with", "{t:#}");
        assert!(
            py["waits"]["site"]
                .as_str()
                .unwrap_or_default()
                .ends_with(&line(site)),
            "{who} waits at {}: {t:#}",
            line(site)
        );
        let held: Vec<&str> = py["holds"]
            .as_array()
            .map(|v| v.iter().filter_map(|h| h["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(held, [holds], "{t:#}");
    }
    // The text says it as a person reads it.
    let (code, text, err) = output(
        {
            let mut c = Command::new(bin);
            c.args(["dump", "-p", &pid]);
            c
        },
        T,
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(
        text.contains("Found one Python-level deadlock (2 threads)"),
        "{text}"
    );
    for (who, lock, holder) in [
        ("alpha", "audit_lock", "beta"),
        ("beta", "ledger_lock", "alpha"),
    ] {
        let want = format!(
            "\"{who}\" (thread {}):\n  waits for Lock {lock} (",
            tid(who)
        );
        assert!(text.contains(&want), "no {want:?} in\n{text}");
        let held = format!("which is held by \"{holder}\" (thread {})", tid(holder));
        assert!(text.contains(&held), "no {held:?} in\n{text}");
    }
}

#[test]
#[ignore = "needs root and the wheel (./x wheel)"]
fn the_wheel_installs_a_working_observer() {
    let Some(whl) = built_wheel() else {
        return;
    };
    let name = whl.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!(
            "observer_hang-{}-py3-none-",
            env!("CARGO_PKG_VERSION")
        )) && (tag_glibc(&whl).is_some() || name.ends_with("-linux_x86_64.whl")),
        "{name}"
    );
    let dir = tmp();
    let Some(venv) = venv_with(&whl, dir.path()) else {
        return;
    };
    check_install(&whl, &venv);
    let bin = venv.join("bin/observer");
    check_doctor(&bin);
    check_dump(&bin, &venv);
    assert_no_programs_left();
}
