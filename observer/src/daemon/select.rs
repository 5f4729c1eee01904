//! Which processes the daemon watches: the config's rules against what
//! /proc says about a process. The core (`Selector::select`) is pure.

use std::path::Path;

use super::config::{Config, Match, exe_glob, resolve_user};

/// What the rules look at, read once per process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcInfo {
    pub pid: u32,
    /// The main thread's comm now.
    pub comm: String,
    /// The comm the process had at exec (the executable's and argv[0]'s
    /// file names, 15 bytes), which a program may have renamed since.
    pub exec_comms: Vec<String>,
    /// The executable path (None for kernel threads, or when unreadable).
    pub exe: Option<String>,
    /// The cgroup v2 path (the `0::` line of /proc/PID/cgroup).
    pub cgroup: Option<String>,
    /// Real uid.
    pub uid: Option<u32>,
}

impl ProcInfo {
    /// Reads what the rules need; None if the process is gone.
    pub fn read(pid: u32) -> Option<ProcInfo> {
        let base = format!("/proc/{pid}");
        let comm = std::fs::read_to_string(format!("{base}/comm")).ok()?;
        let exe = std::fs::read_link(format!("{base}/exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
            .map(|s| s.strip_suffix(" (deleted)").map(str::to_owned).unwrap_or(s));
        let cgroup = std::fs::read_to_string(format!("{base}/cgroup"))
            .ok()
            .and_then(|s| parse_cgroup_v2(&s));
        let uid = std::fs::read_to_string(format!("{base}/status"))
            .ok()
            .and_then(|s| parse_real_uid(&s));
        let argv0 = std::fs::read(format!("{base}/cmdline")).ok().and_then(|b| {
            b.split(|&c| c == 0)
                .next()
                .map(|a| String::from_utf8_lossy(a).into_owned())
        });
        let exec_comms = [exe.as_deref(), argv0.as_deref()]
            .into_iter()
            .flatten()
            .map(comm_of_path)
            .filter(|c| !c.is_empty())
            .collect();
        Some(ProcInfo {
            pid,
            comm: comm.trim_end_matches('\n').to_owned(),
            exec_comms,
            exe,
            cgroup,
            uid,
        })
    }
}

/// The comm the kernel gives a program exec'd from `path`: its file name,
/// cut to 15 bytes.
pub fn comm_of_path(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path).as_bytes();
    let mut n = name.len().min(15);
    while n > 0 && std::str::from_utf8(&name[..n]).is_err() {
        n -= 1;
    }
    String::from_utf8_lossy(&name[..n]).into_owned()
}

/// The v2 line of /proc/PID/cgroup ("0::/system.slice/x.service").
pub fn parse_cgroup_v2(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// The real uid from /proc/PID/status ("Uid:\treal\teffective\t...").
pub fn parse_real_uid(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|u| u.parse().ok())
}

/// A `Match` with its glob compiled and user resolved.
struct Compiled {
    comm: Option<String>,
    exe: Option<globset::GlobMatcher>,
    cgroup: Option<String>,
    uid: Option<u32>,
}

impl Compiled {
    fn new(m: &Match) -> Result<Compiled, String> {
        Ok(Compiled {
            comm: m.comm.clone(),
            exe: m.exe.as_deref().map(exe_glob).transpose()?,
            cgroup: m.cgroup.clone(),
            uid: m.user.as_deref().map(resolve_user).transpose()?,
        })
    }

    /// Every key given must match; a key the process lacks does not match.
    fn matches(&self, p: &ProcInfo) -> bool {
        self.comm
            .as_ref()
            .is_none_or(|c| *c == p.comm || p.exec_comms.contains(c))
            && self
                .exe
                .as_ref()
                .is_none_or(|g| p.exe.as_deref().is_some_and(|e| g.is_match(Path::new(e))))
            && self.cgroup.as_ref().is_none_or(|c| {
                p.cgroup
                    .as_deref()
                    .is_some_and(|pc| pc.starts_with(c.as_str()))
            })
            && self.uid.is_none_or(|u| p.uid == Some(u))
    }
}

/// How a selected process is watched (the union of its matching rules).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watch {
    pub uprobes: bool,
    pub kill_on_deadlock: bool,
    /// 1-based number of the first matching rule (for logs).
    pub rule: usize,
    /// The shortest `hang_after` of the matching rules, in ns.
    pub hang_after_ns: Option<u64>,
    pub kill_on_hang: bool,
}

pub struct Selector {
    /// Each rule's matcher and what it asks for.
    rules: Vec<(Compiled, Watch)>,
    excludes: Vec<Compiled>,
}

impl Selector {
    pub fn new(cfg: &Config) -> Result<Selector, String> {
        let mut rules = Vec::new();
        for (i, r) in cfg.rules.iter().enumerate() {
            let c = Compiled::new(&r.matcher()).map_err(|e| format!("rule {}: {e}", i + 1))?;
            rules.push((
                c,
                Watch {
                    uprobes: r.uprobes,
                    kill_on_deadlock: r.kill_on_deadlock,
                    rule: i + 1,
                    // Checked to be within 0..=1e7 seconds by the config.
                    hang_after_ns: r.hang_after.map(|s| (s * 1e9) as u64),
                    kill_on_hang: r.kill_on_hang,
                },
            ));
        }
        let excludes = cfg
            .excludes
            .iter()
            .enumerate()
            .map(|(i, x)| Compiled::new(x).map_err(|e| format!("exclude {}: {e}", i + 1)))
            .collect::<Result<_, _>>()?;
        Ok(Selector { rules, excludes })
    }

    /// None unless a rule matches and no exclude does.
    pub fn select(&self, p: &ProcInfo) -> Option<Watch> {
        if self.excludes.iter().any(|x| x.matches(p)) {
            return None;
        }
        let mut w: Option<Watch> = None;
        for (c, r) in &self.rules {
            if c.matches(p) {
                let e = w.get_or_insert(Watch {
                    rule: r.rule,
                    ..Watch::default()
                });
                e.uprobes |= r.uprobes;
                e.kill_on_deadlock |= r.kill_on_deadlock;
                e.hang_after_ns = match (e.hang_after_ns, r.hang_after_ns) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                e.kill_on_hang |= r.kill_on_hang;
            }
        }
        w
    }
}

/// Every process (TGID) in /proc now, except the daemon itself.
pub fn all_pids() -> Vec<u32> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut v: Vec<u32> = rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|&p| p != me)
        .collect();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(toml: &str) -> Selector {
        let c = Config::parse(toml).unwrap();
        Selector::new(&c).unwrap()
    }

    fn p(comm: &str, exe: &str, cg: &str, uid: u32) -> ProcInfo {
        ProcInfo {
            pid: 100,
            comm: comm.into(),
            exec_comms: Vec::new(),
            exe: Some(exe.into()),
            cgroup: Some(cg.into()),
            uid: Some(uid),
        }
    }

    #[test]
    fn every_key_of_a_rule_must_match() {
        let s = sel(
            "[[rule]]\ncomm = \"pytest\"\nexe = \"/opt/ci/**/bin/*\"\ncgroup = \"/system.slice/ci-\"\nuser = \"0\"\n",
        );
        let good = p(
            "pytest",
            "/opt/ci/a/b/bin/py",
            "/system.slice/ci-42.service",
            0,
        );
        assert_eq!(
            s.select(&good),
            Some(Watch {
                uprobes: false,
                kill_on_deadlock: false,
                rule: 1,
                ..Watch::default()
            })
        );
        // comm is exact, not a prefix.
        assert_eq!(
            s.select(&ProcInfo {
                comm: "pytest2".into(),
                ..good.clone()
            }),
            None
        );
        // `*` does not cross '/'; `**` does.
        assert_eq!(
            s.select(&ProcInfo {
                exe: Some("/opt/ci/a/bin/x/y".into()),
                ..good.clone()
            }),
            None
        );
        assert!(
            s.select(&ProcInfo {
                exe: Some("/opt/ci/bin/y".into()),
                ..good.clone()
            })
            .is_some()
        );
        assert_eq!(
            s.select(&ProcInfo {
                cgroup: Some("/user.slice/ci-1".into()),
                ..good.clone()
            }),
            None
        );
        assert_eq!(
            s.select(&ProcInfo {
                uid: Some(1000),
                ..good.clone()
            }),
            None
        );
        // A running process that renamed its main thread still matches by
        // the name it was started with.
        let renamed = ProcInfo {
            comm: "main".into(),
            exec_comms: vec!["pytest".into()],
            ..good.clone()
        };
        assert!(s.select(&renamed).is_some());
        // A key the process lacks (kernel thread: no exe) does not match.
        assert_eq!(
            s.select(&ProcInfo {
                exe: None,
                ..good.clone()
            }),
            None
        );
    }

    #[test]
    fn excludes_win_and_rules_combine() {
        let s = sel(
            "[[rule]]\ncomm = \"svc\"\n[[rule]]\nuser = \"0\"\nuprobes = true\n[[rule]]\nexe = \"/usr/bin/*\"\nkill_on_deadlock = true\n[[exclude]]\ncgroup = \"/system.slice/sshd\"\n",
        );
        let w = s.select(&p("svc", "/usr/bin/svc", "/a", 0)).unwrap();
        assert_eq!((w.rule, w.uprobes, w.kill_on_deadlock), (1, true, true));
        let w = s.select(&p("other", "/opt/x", "/a", 0)).unwrap();
        assert_eq!((w.rule, w.uprobes, w.kill_on_deadlock), (2, true, false));
        assert_eq!(s.select(&p("other", "/opt/x", "/a", 5)), None);
        assert_eq!(
            s.select(&p("svc", "/usr/bin/svc", "/system.slice/sshd.service", 0)),
            None
        );
    }

    /// Several matching rules: the shortest hang_after, kill_on_hang if any says so.
    #[test]
    fn hang_after_of_matching_rules() {
        let s = sel(
            "[[rule]]\ncomm = \"svc\"\nhang_after = \"10m\"\n[[rule]]\nuser = \"0\"\nhang_after = 30\nkill_on_hang = true\n[[rule]]\nexe = \"/usr/bin/*\"\n",
        );
        let w = s.select(&p("svc", "/opt/svc", "/a", 5)).unwrap();
        assert_eq!(
            (w.hang_after_ns, w.kill_on_hang),
            (Some(600_000_000_000), false)
        );
        let w = s.select(&p("svc", "/opt/svc", "/a", 0)).unwrap();
        assert_eq!(
            (w.hang_after_ns, w.kill_on_hang),
            (Some(30_000_000_000), true)
        );
        let w = s.select(&p("x", "/usr/bin/x", "/a", 5)).unwrap();
        assert_eq!((w.hang_after_ns, w.kill_on_hang), (None, false));
    }

    #[test]
    fn proc_parsers() {
        assert_eq!(
            parse_cgroup_v2("0::/system.slice/ci-1.service\n").as_deref(),
            Some("/system.slice/ci-1.service")
        );
        assert_eq!(
            parse_cgroup_v2("12:cpu:/x\n0::/init.scope\n").as_deref(),
            Some("/init.scope")
        );
        assert_eq!(parse_cgroup_v2("12:cpu:/x\n"), None);
        assert_eq!(comm_of_path("/usr/bin/python3"), "python3");
        assert_eq!(comm_of_path("clean_contention"), "clean_contentio");
        assert_eq!(
            parse_real_uid("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\n"),
            Some(1000)
        );
    }

    #[test]
    fn reads_this_process() {
        let me = ProcInfo::read(std::process::id()).unwrap();
        assert!(!me.comm.is_empty() && !me.comm.ends_with('\n'));
        assert!(me.exe.as_deref().is_some_and(|e| e.starts_with('/')));
        assert_eq!(me.uid, Some(unsafe { libc::getuid() }));
        assert!(all_pids().contains(&1));
    }
}
