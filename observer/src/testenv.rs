//! What the unit tests need from the machine: tools and interpreters that
//! `./x` installs. `OBSERVER_REQUIRE_ALL` (on in `./x`) turns a missing one
//! into a failure; without it the test says what it skipped, in one line
//! the test harness shows (written to stderr directly, not captured).

/// Whether every tool and interpreter must be present.
pub fn require_all() -> bool {
    std::env::var_os("OBSERVER_REQUIRE_ALL").is_some_and(|v| v != "0")
}

/// One visible `skip: ...` line.
pub fn skip(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "skip: {what}");
}

/// Something the test needs is missing: a failure under `require_all()`,
/// else one visible skip line. Return from the test (or the part) after it.
#[track_caller]
pub fn missing(what: &str) {
    if require_all() {
        panic!("{what} (./x installs it; OBSERVER_REQUIRE_ALL is set)");
    }
    skip(what);
}

/// The interpreter of a CPython include directory
/// (`PREFIX/include/pythonX.Y` -> `PREFIX/bin/pythonX.Y`).
pub fn interpreter_of(include_dir: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(include_dir);
    let name = dir.file_name().unwrap_or_default();
    let prefix = dir.parent().and_then(|p| p.parent()).unwrap_or(dir);
    prefix.join("bin").join(name)
}

/// An offset check ran over `checked` header sets of `dirs`: each CPython
/// installed here (of those `dirs` belong to) must have had its headers
/// checked, and at least one must have been. Otherwise `missing`.
#[track_caller]
pub fn assert_headers_checked<'a>(checked: usize, dirs: impl IntoIterator<Item = &'a str>) {
    let found: Vec<String> = dirs
        .into_iter()
        .map(interpreter_of)
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if checked == 0 {
        missing(
            "no CPython header set was checked (libpython3.11-dev gives /usr/include/python3.11)",
        );
    } else if checked != found.len() {
        missing(&format!(
            "{checked} CPython header sets checked for {} interpreters ({}): one has no headers",
            found.len(),
            found.join(", ")
        ));
    }
    say(&format!("checked {checked} CPython header sets"));
}

/// A visible line that is not a skip (what a check covered).
fn say(what: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{what}");
}

#[test]
fn include_dirs_name_their_interpreters() {
    assert_eq!(
        interpreter_of("/usr/include/python3.11"),
        std::path::Path::new("/usr/bin/python3.11")
    );
    assert_eq!(
        interpreter_of("/root/.pyenv/versions/3.12.1/include/python3.12"),
        std::path::Path::new("/root/.pyenv/versions/3.12.1/bin/python3.12")
    );
}
