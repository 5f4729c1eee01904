//! The daemon's TOML configuration: parsing, defaults and validation.
//!
//! `check` collects every problem it can find, one line each, so that
//! `observer daemon --check-config` can print them all at once.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// The whole file. Key names are part of the interface: documented in the
/// docs/daemon.md and in `observer daemon --help`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where reports go; created 0750 if missing.
    #[serde(default = "default_report_dir")]
    pub report_dir: PathBuf,
    /// Prometheus text endpoint; "" disables it.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// Keep at most this many findings (each a .json/.txt pair, with its
    /// recording) in report_dir; the oldest go first. 0: no limit.
    #[serde(default = "default_max_reports")]
    pub max_reports: usize,
    /// Delete reports older than this many days. 0: keep forever.
    #[serde(default = "default_max_report_age_days")]
    pub max_report_age_days: f64,
    /// Seconds of each watched process's events kept in memory and written
    /// next to each report as a replayable recording. 0 disables it.
    #[serde(default = "default_flight_recorder_secs")]
    pub flight_recorder_secs: f64,
    /// At most this many events per process in the flight recorder.
    #[serde(default = "default_flight_recorder_events")]
    pub flight_recorder_events: usize,
    /// At most this many bytes of recording per process in the flight
    /// recorder (events as their JSON lines).
    #[serde(default = "default_flight_recorder_bytes")]
    pub flight_recorder_bytes: usize,
    /// At most this many processes watched at once; more matches are skipped.
    #[serde(default = "default_max_processes")]
    pub max_processes: usize,
    /// Threads (alive and exited) remembered per process; past it the
    /// process's model is rebuilt from /proc.
    #[serde(default = "default_max_threads")]
    pub max_threads: usize,
    /// Contended futex addresses remembered per process (least waited-on
    /// evicted first).
    #[serde(default = "default_max_locks")]
    pub max_locks: usize,
    /// Ended long waits remembered per process (oldest evicted first).
    #[serde(default = "default_max_waits")]
    pub max_waits: usize,
    /// A futex wait at least this long (seconds) is a `long_wait` finding.
    #[serde(default = "default_long_wait")]
    pub long_wait: f64,
    /// A thread that has not run this long (seconds) while others did is stuck.
    #[serde(default = "default_stuck")]
    pub stuck: f64,
    /// Where futex and epoll waits are learnt while a process is watched:
    /// "auto" (at the scheduler, so no syscall on the host pays, and at the
    /// syscall hooks while a watched Python process sleeps in epoll_wait:
    /// an event loop under load never sleeps there), "sched", "syscalls".
    #[serde(default = "default_waits")]
    pub waits: String,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    #[serde(default, rename = "exclude")]
    pub excludes: Vec<Match>,
}

/// What a process must look like; every key given must match.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Exact comm (the kernel's 15-byte task name), as the process had it
    /// at exec or has it now (programs rename their main thread).
    pub comm: Option<String>,
    /// Glob on the executable path (`*` stays within one path component, `**` crosses them).
    pub exe: Option<String>,
    /// cgroup v2 path prefix, e.g. "/system.slice/ci-".
    pub cgroup: Option<String>,
    /// User name or numeric uid (the real uid).
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub cgroup: Option<String>,
    pub user: Option<String>,
    /// Deep tier (lock uprobes) for matching processes.
    #[serde(default)]
    pub uprobes: bool,
    /// SIGKILL a matching process once a hang (deadlock, PI deadlock,
    /// orphaned lock) is reported.
    #[serde(default)]
    pub kill_on_deadlock: bool,
    /// Hang watchdog, in seconds: when no thread of a matching process (or
    /// of its descendants) has run on a CPU for this long, one
    /// `process_hung` report. Seconds (`600`) or a string with a unit as
    /// on the command line (`"10m"`).
    #[serde(default, deserialize_with = "duration")]
    pub hang_after: Option<f64>,
    /// With hang_after: SIGKILL the process and its descendants once
    /// reported.
    #[serde(default)]
    pub kill_on_hang: bool,
}

/// A duration in seconds: a number, as `long_wait` and `stuck` take, or a
/// string with a unit, as the command line takes (`"10m"`, `"30s"`).
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct Secs;
    impl serde::de::Visitor<'_> for Secs {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration: seconds (600) or a string with a unit (\"10m\", \"30s\")")
        }
        fn visit_i64<E>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_f64<E>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<f64, E> {
            crate::cli::duration_secs(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Secs).map(Some)
}

impl Rule {
    pub fn matcher(&self) -> Match {
        Match {
            comm: self.comm.clone(),
            exe: self.exe.clone(),
            cgroup: self.cgroup.clone(),
            user: self.user.clone(),
        }
    }
}

fn default_report_dir() -> PathBuf {
    PathBuf::from("/var/lib/observer/reports")
}
fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_max_reports() -> usize {
    1000
}
fn default_max_report_age_days() -> f64 {
    30.0
}
fn default_flight_recorder_secs() -> f64 {
    30.0
}
fn default_flight_recorder_events() -> usize {
    100_000
}
fn default_flight_recorder_bytes() -> usize {
    2 << 20
}
fn default_max_processes() -> usize {
    1024
}
fn default_max_threads() -> usize {
    8192
}
fn default_max_locks() -> usize {
    4096
}
fn default_max_waits() -> usize {
    1024
}
fn default_waits() -> String {
    "auto".into()
}

fn default_long_wait() -> f64 {
    5.0
}
fn default_stuck() -> f64 {
    10.0
}

/// The longest comm the kernel keeps (TASK_COMM_LEN - 1).
const COMM_MAX: usize = 15;

impl Config {
    /// Parses the text; the error is one line (with the TOML line number).
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| {
                text.as_bytes()[..s.start.min(text.len())]
                    .iter()
                    .filter(|&&c| c == b'\n')
                    .count()
                    + 1
            });
            let msg = e.message().replace('\n', " ");
            match line {
                Some(l) => format!("line {l}: {msg}"),
                None => msg,
            }
        })
    }

    /// Reads and parses FILE, then checks everything that can be checked
    /// before starting. Every error is one line.
    pub fn load(path: &Path) -> Result<Config, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        let cfg = Config::parse(&text).map_err(|e| vec![e])?;
        let errs = cfg.check();
        if errs.is_empty() { Ok(cfg) } else { Err(errs) }
    }

    /// Semantic checks, including the environment: the report dir can be
    /// written, the metrics address can be bound, users exist.
    pub fn check(&self) -> Vec<String> {
        self.check_env(None)
    }

    /// A new config for a running daemon: its own metrics address is in
    /// use by itself, so that one is not bound again.
    pub fn load_for_reload(path: &Path, old: &Config) -> Result<Config, Vec<String>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        let cfg = Config::parse(&text).map_err(|e| vec![e])?;
        let errs = cfg.check_env(old.metrics_addr().ok().flatten());
        if errs.is_empty() { Ok(cfg) } else { Err(errs) }
    }

    fn check_env(&self, ours: Option<SocketAddr>) -> Vec<String> {
        let mut errs = self.check_static();
        if let Err(e) = check_writable_dir(&self.report_dir) {
            errs.push(format!("report_dir: {e}"));
        }
        if let Some(addr) = self.metrics_addr().ok().flatten()
            && Some(addr) != ours
            && let Err(e) = std::net::TcpListener::bind(addr)
        {
            errs.push(format!("metrics_listen: cannot listen on {addr}: {e}"));
        }
        errs
    }

    /// The checks that need nothing but the file.
    pub fn check_static(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if !self.report_dir.is_absolute() {
            errs.push(format!(
                "report_dir: must be an absolute path, got {:?}",
                self.report_dir
            ));
        }
        if let Err(e) = self.metrics_addr() {
            errs.push(format!("metrics_listen: {e}"));
        }
        for (what, v, max) in [
            ("max_report_age_days", self.max_report_age_days, 1e6),
            ("flight_recorder_secs", self.flight_recorder_secs, 86_400.0),
            ("long_wait", self.long_wait, 1e7),
            ("stuck", self.stuck, 1e7),
        ] {
            if !v.is_finite() || !(0.0..=max).contains(&v) {
                errs.push(format!("{what}: must be between 0 and {max}, got {v}"));
            }
        }
        for (what, v) in [
            ("max_processes", self.max_processes),
            ("max_threads", self.max_threads),
            ("max_locks", self.max_locks),
            ("max_waits", self.max_waits),
        ] {
            if v == 0 {
                errs.push(format!("{what}: must be at least 1"));
            }
        }
        if !["auto", "sched", "syscalls"].contains(&self.waits.as_str()) {
            errs.push(format!(
                "waits: must be \"auto\", \"sched\" or \"syscalls\", got {:?}",
                self.waits
            ));
        }
        if self.rules.is_empty() {
            errs.push("no [[rule]]: the daemon would watch nothing".into());
        }
        for (i, r) in self.rules.iter().enumerate() {
            let m = r.matcher();
            if m.is_empty() {
                errs.push(format!(
                    "rule {}: no comm, exe, cgroup or user: it would watch every process",
                    i + 1
                ));
            }
            errs.extend(
                m.check()
                    .into_iter()
                    .map(|e| format!("rule {}: {e}", i + 1)),
            );
            match r.hang_after {
                Some(v) if !v.is_finite() || v <= 0.0 || v > 1e7 => errs.push(format!(
                    "rule {}: hang_after: must be more than 0 and at most 10000000 seconds, got {v}",
                    i + 1
                )),
                None if r.kill_on_hang => errs.push(format!(
                    "rule {}: kill_on_hang needs hang_after (the hang it kills on)",
                    i + 1
                )),
                _ => {}
            }
        }
        for (i, x) in self.excludes.iter().enumerate() {
            if x.is_empty() {
                errs.push(format!(
                    "exclude {}: no comm, exe, cgroup or user: it would exclude every process",
                    i + 1
                ));
            }
            errs.extend(
                x.check()
                    .into_iter()
                    .map(|e| format!("exclude {}: {e}", i + 1)),
            );
        }
        errs
    }

    /// None when the endpoint is disabled.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        if self.metrics_listen.is_empty() {
            return Ok(None);
        }
        self.metrics_listen
            .parse::<SocketAddr>()
            .map(Some)
            .map_err(|_| {
                format!(
                    "not an address:port: {:?} (e.g. \"127.0.0.1:9464\", or \"\" to disable)",
                    self.metrics_listen
                )
            })
    }

    pub fn long_wait_ns(&self) -> u64 {
        (self.long_wait * 1e9) as u64
    }
}

impl Match {
    pub fn is_empty(&self) -> bool {
        self.comm.is_none() && self.exe.is_none() && self.cgroup.is_none() && self.user.is_none()
    }

    fn check(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if let Some(c) = &self.comm {
            if c.is_empty() {
                errs.push("comm: empty".into());
            } else if c.len() > COMM_MAX {
                errs.push(format!(
                    "comm: {c:?} is longer than {COMM_MAX} bytes and can never match (the kernel truncates comm)"
                ));
            }
        }
        if let Some(g) = &self.exe
            && let Err(e) = exe_glob(g)
        {
            errs.push(format!("exe: {e}"));
        }
        if let Some(c) = &self.cgroup
            && !c.starts_with('/')
        {
            errs.push(format!(
                "cgroup: must be a cgroup v2 path starting with '/', got {c:?}"
            ));
        }
        if let Some(u) = &self.user
            && let Err(e) = resolve_user(u)
        {
            errs.push(format!("user: {e}"));
        }
        errs
    }
}

/// Compiles an `exe` glob: `*` and `?` stay within one path component.
pub fn exe_glob(g: &str) -> Result<globset::GlobMatcher, String> {
    if g.is_empty() {
        return Err("empty glob".into());
    }
    globset::GlobBuilder::new(g)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad glob {g:?}: {}", e.kind()))
}

/// A user name or numeric uid, to a uid.
pub fn resolve_user(u: &str) -> Result<u32, String> {
    if let Ok(uid) = u.parse::<u32>() {
        return Ok(uid);
    }
    if u.is_empty() || u.contains('\0') {
        return Err(format!("bad user name {u:?}"));
    }
    let name = std::ffi::CString::new(u).map_err(|_| format!("bad user name {u:?}"))?;
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16384];
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf outlives its use.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 || out.is_null() {
        return Err(format!("no such user: {u:?}"));
    }
    Ok(pw.pw_uid)
}

/// The directory exists (or can be created) and a file can be made in it.
fn check_writable_dir(dir: &Path) -> Result<(), String> {
    let mut probe_in = dir;
    // The nearest existing ancestor is where creating would start.
    while !probe_in.exists() {
        probe_in = match probe_in.parent() {
            Some(p) => p,
            None => break,
        };
    }
    let meta = std::fs::metadata(probe_in).map_err(|e| format!("{}: {e}", probe_in.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", probe_in.display()));
    }
    let test = probe_in.join(format!(".observer-check-{}", std::process::id()));
    match std::fs::File::create(&test) {
        Ok(_) => {
            let _ = std::fs::remove_file(&test);
            Ok(())
        }
        Err(e) => Err(format!("cannot write in {}: {e}", probe_in.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn cfg_text(dir: &Path, extra: &str) -> String {
        format!(
            "report_dir = {:?}\nmetrics_listen = \"\"\n{extra}",
            dir.to_str().unwrap()
        )
    }

    fn errors(text: &str) -> Vec<String> {
        match Config::parse(text) {
            Err(e) => vec![e],
            Ok(c) => c.check(),
        }
    }

    #[test]
    fn good_config_and_defaults() {
        let d = ok_dir();
        let t = cfg_text(
            d.path(),
            "[[rule]]\ncomm = \"pytest\"\nexe = \"/opt/ci/**/bin/*\"\ncgroup = \"/system.slice/ci-\"\nuser = \"root\"\nuprobes = true\nkill_on_deadlock = true\n[[exclude]]\nuser = \"0\"\n",
        );
        let c = Config::parse(&t).unwrap();
        assert_eq!(c.check(), Vec::<String>::new());
        assert_eq!(c.rules.len(), 1);
        assert!(c.rules[0].uprobes && c.rules[0].kill_on_deadlock);
        assert_eq!(c.excludes[0].user.as_deref(), Some("0"));
        assert_eq!(c.flight_recorder_secs, 30.0);
        assert_eq!(c.max_reports, 1000);
        assert_eq!(c.waits, "auto");
        assert_eq!(c.metrics_addr().unwrap(), None);
        let c = Config::parse("[[rule]]\ncomm = \"x\"\n").unwrap();
        assert_eq!(c.report_dir, PathBuf::from("/var/lib/observer/reports"));
        assert_eq!(
            c.metrics_addr().unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
    }

    #[test]
    fn unknown_key() {
        let d = ok_dir();
        let e = errors(&cfg_text(
            d.path(),
            "[[rule]]\ncomm = \"a\"\ncommm = \"b\"\n",
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("line 5: unknown field `commm`"),
            "{}",
            e[0]
        );
        let e = errors(&cfg_text(
            d.path(),
            "retention = 3\n[[rule]]\ncomm = \"a\"\n",
        ));
        assert!(e[0].contains("unknown field `retention`"), "{e:?}");
        // An exclude has no actions.
        let e = errors(&cfg_text(
            d.path(),
            "[[rule]]\ncomm = \"a\"\n[[exclude]]\ncomm = \"b\"\nuprobes = true\n",
        ));
        assert!(e[0].contains("unknown field `uprobes`"), "{e:?}");
    }

    #[test]
    fn invalid_toml() {
        let d = ok_dir();
        let e = errors(&cfg_text(d.path(), "[[rule]\ncomm = \"a\"\n"));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("line 3: "), "{e:?}");
        assert!(!e[0].contains('\n'));
        let e = errors(&cfg_text(d.path(), "[[rule]]\ncomm = 3\n"));
        assert!(e[0].contains("invalid type"), "{e:?}");
    }

    #[test]
    fn bad_glob() {
        let d = ok_dir();
        let e = errors(&cfg_text(d.path(), "[[rule]]\nexe = \"/opt/[ci/*\"\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("rule 1: exe: bad glob \"/opt/[ci/*\""),
            "{e:?}"
        );
    }

    #[test]
    fn unwritable_report_dir() {
        let d = ok_dir();
        let file = d.path().join("file");
        std::fs::write(&file, "").unwrap();
        let e = errors(&cfg_text(&file.join("reports"), "[[rule]]\ncomm = \"a\"\n"));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("report_dir: ") && e[0].contains("not a directory"),
            "{e:?}"
        );
        // Even root cannot create files in /proc.
        let e = errors(&cfg_text(
            Path::new("/proc/observer-reports"),
            "[[rule]]\ncomm = \"a\"\n",
        ));
        assert!(
            e[0].starts_with("report_dir: cannot write in /proc"),
            "{e:?}"
        );
        let e = errors("report_dir = \"reports\"\nmetrics_listen = \"\"\n[[rule]]\ncomm = \"a\"\n");
        assert!(e[0].contains("absolute"), "{e:?}");
    }

    #[test]
    fn port_in_use() {
        let d = ok_dir();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = format!(
            "report_dir = {:?}\nmetrics_listen = \"{addr}\"\n[[rule]]\ncomm = \"a\"\n",
            d.path().to_str().unwrap()
        );
        let e = errors(&t);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(&format!("metrics_listen: cannot listen on {addr}")),
            "{e:?}"
        );
        let t = t.replace(&addr.to_string(), "localhost");
        assert!(errors(&t)[0].contains("not an address:port"));
    }

    #[test]
    fn bad_user_comm_cgroup_and_numbers() {
        let d = ok_dir();
        let e = errors(&cfg_text(
            d.path(),
            "flight_recorder_secs = -1\nmax_threads = 0\nwaits = \"fentry\"\n[[rule]]\nuser = \"no-such-user-xyz\"\ncomm = \"a-name-longer-than-15\"\ncgroup = \"system.slice\"\n[[rule]]\nuprobes = true\n",
        ));
        let want = [
            "flight_recorder_secs: must be between 0",
            "max_threads: must be at least 1",
            "waits: must be \"auto\", \"sched\" or \"syscalls\", got \"fentry\"",
            "rule 1: comm: \"a-name-longer-than-15\" is longer than 15 bytes",
            "rule 1: cgroup: must be a cgroup v2 path",
            "rule 1: user: no such user: \"no-such-user-xyz\"",
            "rule 2: no comm, exe, cgroup or user",
        ];
        assert_eq!(e.len(), want.len(), "{e:?}");
        for w in want {
            assert!(e.iter().any(|x| x.starts_with(w)), "missing {w:?} in {e:?}");
        }
        let e = errors(&cfg_text(d.path(), ""));
        assert_eq!(
            e,
            vec!["no [[rule]]: the daemon would watch nothing".to_string()]
        );
    }

    #[test]
    fn hang_after_takes_seconds_or_a_unit() {
        let d = ok_dir();
        let rule = |v: &str| {
            let t = cfg_text(
                d.path(),
                &format!("[[rule]]\ncomm = \"a\"\nhang_after = {v}\n"),
            );
            let c = Config::parse(&t).map_err(|e| vec![e])?;
            let errs = c.check();
            if errs.is_empty() {
                Ok(c.rules[0].hang_after)
            } else {
                Err(errs)
            }
        };
        assert_eq!(rule("\"10m\""), Ok(Some(600.0)));
        assert_eq!(rule("\"1.5s\""), Ok(Some(1.5)));
        assert_eq!(rule("\"500ms\""), Ok(Some(0.5)));
        assert_eq!(rule("600"), Ok(Some(600.0)));
        assert_eq!(rule("2.5"), Ok(Some(2.5)));
        let c = Config::parse(&cfg_text(d.path(), "[[rule]]\ncomm = \"a\"\n")).unwrap();
        assert_eq!(
            (c.rules[0].hang_after, c.rules[0].kill_on_hang),
            (None, false)
        );
        // One line each, naming the key or the value.
        for (v, want) in [
            ("\"10 parsecs\"", "line 5: unknown unit in '10 parsecs'"),
            ("\"soon\"", "line 5: unknown unit in 'soon'"),
            ("\"1.2.3s\"", "line 5: '1.2.3s' is not a duration"),
            ("\"200000000s\"", "line 5: '200000000s' is too long"),
            (
                "true",
                "line 5: invalid type: boolean `true`, expected a duration",
            ),
            ("0", "rule 1: hang_after: must be more than 0"),
            ("-5", "rule 1: hang_after: must be more than 0"),
            ("nan", "rule 1: hang_after: must be more than 0"),
            ("1e9", "rule 1: hang_after: must be more than 0"),
        ] {
            let e = rule(v).unwrap_err();
            assert_eq!(e.len(), 1, "{v}: {e:?}");
            assert!(e[0].starts_with(want) && !e[0].contains('\n'), "{v}: {e:?}");
        }
        let e = errors(&cfg_text(
            d.path(),
            "[[rule]]\ncomm = \"a\"\nkill_on_hang = true\n",
        ));
        assert_eq!(
            e,
            vec!["rule 1: kill_on_hang needs hang_after (the hang it kills on)".to_string()]
        );
        let c = Config::parse(&cfg_text(
            d.path(),
            "[[rule]]\ncomm = \"a\"\nhang_after = \"2m\"\nkill_on_hang = true\n",
        ))
        .unwrap();
        assert_eq!(c.check(), Vec::<String>::new());
        assert!(c.rules[0].kill_on_hang);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../../contrib/observer.toml");
        let c = Config::parse(text).unwrap();
        assert_eq!(c.check_static(), Vec::<String>::new());
        assert_eq!(c.rules.len(), 2);
    }

    #[test]
    fn users_resolve() {
        assert_eq!(resolve_user("root"), Ok(0));
        assert_eq!(resolve_user("1234"), Ok(1234));
    }
}
