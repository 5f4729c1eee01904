//! Test helpers: the machine's CPython headers, compiled into small C
//! programs that print offsets, to check the tables against.

/// Test support: the CPython header directories the offset checks compile
/// against (Debian's and pyenv's 3.11-3.13, 3.14/3.15 from target/pythons),
/// with the minor version of each.
pub(crate) fn header_dirs() -> Vec<(std::path::PathBuf, u64)> {
    let unpacked = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pythons");
    let mut v: Vec<(std::path::PathBuf, u64)> = vec![
        ("/usr/include/python3.11".into(), 11),
        ("/root/.pyenv/versions/3.11.7/include/python3.11".into(), 11),
        ("/root/.pyenv/versions/3.12.1/include/python3.12".into(), 12),
        ("/root/.pyenv/versions/3.13.0/include/python3.13".into(), 13),
    ];
    for minor in [14, 15] {
        v.push((
            unpacked.join(format!("3.{minor}/usr/include/python3.{minor}")),
            minor,
        ));
    }
    v
}

/// Test support: `#define`s for the -D flags CPython's core was built
/// with (none when the interpreter is not there).
fn core_defines(py: &std::path::Path) -> String {
    let Ok(out) = std::process::Command::new(py)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_config_var('PY_CORE_CFLAGS'))",
        ])
        .output()
    else {
        return String::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|f| f.strip_prefix("-D"))
        .filter(|d| !d.starts_with("_FORTIFY_SOURCE") && !d.starts_with("Py_BUILD_CORE"))
        .map(|d| match d.split_once('=') {
            Some((k, v)) => format!("#define {k} {v}\n"),
            None => format!("#define {d} 1\n"),
        })
        .collect()
}

/// Test support: compiles `program` (a C file printing "name value" lines)
/// against the CPython headers in `include`, runs it and returns the values.
pub(crate) fn compile_and_print(
    what: &str,
    program: &str,
    include: &std::path::Path,
) -> Option<std::collections::HashMap<String, u64>> {
    use std::process::Command;
    let dir = std::env::temp_dir().join(format!("obs-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let src = dir.join(format!("{what}.c"));
    let bin = dir.join(format!("{what}-{}", include.file_name()?.to_string_lossy()));
    // The build's own -D flags first: some (Debian's 3.14/3.15 `_Py_TIER2`,
    // `_Py_JIT`) add fields to the interpreter and thread states.
    let py = crate::testenv::interpreter_of(&include.to_string_lossy());
    std::fs::write(&src, format!("{}{program}", core_defines(&py))).ok()?;
    let ok = Command::new("gcc")
        .arg("-I")
        .arg(include)
        // Debian's multiarch pyconfig.h lives one level up.
        .arg("-I")
        .arg(include.parent()?)
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
                Some((k.to_string(), v.parse::<i64>().ok()? as u64))
            })
            .collect(),
    )
}
