//! The manual pages in man/ (observer.1 and one page per subcommand) are
//! generated from the command line's definition and committed. These tests
//! fail when they are stale (`./x man` writes them again), check that `man`
//! renders each one, and that the completion scripts parse.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
};

use clap::CommandFactory;

use crate::{cli::Cli, testenv};

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../man")
}

/// Every page, by file name (`observer.1`, `observer-run.1`, ...).
fn pages() -> BTreeMap<String, Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    clap_mangen::generate_to(Cli::command(), dir.path()).unwrap();
    read_pages(dir.path())
}

fn read_pages(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("observer") && n.ends_with(".1"))
        .map(|n| {
            let text = std::fs::read(dir.join(&n)).unwrap();
            (n, text)
        })
        .collect()
}

/// With `OBSERVER_WRITE_MAN=1` (`./x man`) the pages are written instead.
#[test]
fn committed_pages_are_current() {
    let want = pages();
    let dir = man_dir();
    let have = read_pages(&dir);
    if std::env::var_os("OBSERVER_WRITE_MAN").is_some_and(|v| v != "0") {
        std::fs::create_dir_all(&dir).unwrap();
        for name in have.keys().filter(|n| !want.contains_key(*n)) {
            std::fs::remove_file(dir.join(name)).unwrap();
        }
        for (name, text) in &want {
            if have.get(name) != Some(text) {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        return;
    }
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&have),
        names(&want),
        "man/ has other pages than the command line: run `./x man` and commit man/"
    );
    for (name, text) in &want {
        assert!(
            have[name] == *text,
            "man/{name} is stale: run `./x man` and commit man/"
        );
    }
    for sub in [
        "run", "attach", "dump", "record", "replay", "doctor", "daemon",
    ] {
        assert!(want.contains_key(&format!("observer-{sub}.1")), "{sub}");
    }
}

/// `man -l` renders every committed page without a warning.
#[test]
fn man_renders_the_pages() {
    if Command::new("man").arg("--version").output().is_err() {
        testenv::missing("man (the man-db package)");
        return;
    }
    let have = read_pages(&man_dir());
    assert!(have.contains_key("observer.1"), "no man/observer.1");
    for name in have.keys() {
        let path = man_dir().join(name);
        let out = Command::new("man")
            .args(["--warnings", "-P", "cat", "-l"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "man -l {name}: {}\n{err}", out.status);
        assert!(err.trim().is_empty(), "man -l {name} warns:\n{err}");
        let title = name.trim_end_matches(".1");
        for want in ["NAME", "SYNOPSIS", title] {
            assert!(text.contains(want), "man -l {name}: no {want:?} in\n{text}");
        }
    }
    let main = String::from_utf8_lossy(
        &Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(man_dir().join("observer.1"))
            .env("MANWIDTH", "80")
            .output()
            .unwrap()
            .stdout,
    )
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ");
    for sub in ["observer-run(1)", "observer-completions(1)", "Exit status"] {
        assert!(main.contains(sub), "no {sub:?} in observer(1):\n{main}");
    }
}

fn completion(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    crate::completions(shell, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// `observer completions bash|zsh|fish` prints a script its shell parses
/// (zsh and fish are checked where they are installed).
#[test]
fn completion_scripts_parse() {
    use clap_complete::Shell;
    for (shell, exe, marker) in [
        (Shell::Bash, "bash", "complete -F _observer"),
        (Shell::Zsh, "zsh", "#compdef observer"),
        (Shell::Fish, "fish", "complete -c observer"),
    ] {
        let script = completion(shell);
        assert!(script.contains(marker), "{exe}: no {marker:?}");
        for sub in ["run", "attach", "dump", "completions"] {
            assert!(script.contains(sub), "{exe}: no {sub}");
        }
        assert!(script.contains("kill-on-deadlock"), "{exe}");
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), &script).unwrap();
        let flag = if exe == "fish" { "--no-execute" } else { "-n" };
        match Command::new(exe).arg(flag).arg(f.path()).output() {
            Ok(o) => assert!(
                o.status.success(),
                "{exe} {flag}: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) if exe == "bash" => panic!("no bash"),
            Err(_) => testenv::skip(&format!("{exe} is not installed: its script is not parsed")),
        }
    }
}
