//! The JSON report (schema documented in docs/report-schema.md).

use serde::Serialize;

use crate::{
    detect::Finding,
    event::{Drops, futex},
    model::Model,
    vocab::hooks::{HookUse, WaitMove},
};

pub const SCHEMA: &str = "observer.report/1";

/// A finding as the report shows it: its data, with the one-line summary
/// report/ writes for it.
impl Serialize for Finding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let cycle = !self.cycle.is_empty();
        let tasks = !self.tasks.is_empty();
        let pool = match &self.detail {
            crate::detect::Detail::PoolStarvation(p) => Some(p),
            _ => None,
        };
        let hops = match &self.detail {
            crate::detect::Detail::ExecutorDeadlock { hops } => Some(hops),
            _ => None,
        };
        let mut st = s.serialize_struct(
            "Finding",
            6 + cycle as usize + tasks as usize + pool.is_some() as usize + hops.is_some() as usize,
        )?;
        st.serialize_field("kind", &self.kind)?;
        st.serialize_field("tgid", &self.tgid)?;
        st.serialize_field("detected_ns", &self.detected_ns)?;
        st.serialize_field("summary", &self.summary())?;
        st.serialize_field("threads", &self.threads)?;
        st.serialize_field("locks", &self.locks)?;
        if cycle {
            st.serialize_field("cycle", &self.cycle)?;
        } else {
            st.skip_field("cycle")?;
        }
        if tasks {
            st.serialize_field("tasks", &self.tasks)?;
        } else {
            st.skip_field("tasks")?;
        }
        match pool {
            Some(p) => st.serialize_field("pool", p)?,
            None => st.skip_field("pool")?,
        }
        match hops {
            Some(h) => st.serialize_field("hops", h)?,
            None => st.skip_field("hops")?,
        }
        st.end()
    }
}

#[derive(Serialize)]
pub struct Report<'a> {
    pub schema: &'static str,
    pub version: &'static str,
    pub mode: &'a str,
    pub processes: Vec<ProcessOut>,
    pub threads: Vec<ThreadOut>,
    pub waits: Vec<WaitOut>,
    pub drops: Drops,
    pub hooks: &'a [HookUse],
    /// Where futex and epoll waits were learnt, move by move.
    pub wait_hooks: &'a [WaitMove],
    /// Uprobes attached (thread calls, and locks under --uprobes) over
    /// the session: 0 means nothing the uprobes see was seen.
    pub uprobes_attached: usize,
    pub findings: &'a [Finding],
    /// Deep tier (--uprobes): per-lock statistics, by total hold time.
    pub locks: Vec<LockOut>,
    /// `attach`: locks held since before observation began.
    pub held_at_attach: Vec<super::held::HeldOut>,
}

#[derive(Serialize)]
pub struct LockOut {
    pub tgid: u32,
    pub addr: u64,
    pub addr_hex: String,
    /// Identity generation: bumped when the lock is destroyed and re-initialised.
    pub generation: u32,
    pub symbol: Option<String>,
    pub kind: crate::event::AcqKind,
    #[serde(flatten)]
    pub profile: crate::event::LockProfile,
}

#[derive(Serialize)]
pub struct ProcessOut {
    pub tgid: u32,
    pub cmdline: Vec<String>,
    pub exe: Option<String>,
    /// The main thread's name (comm) as last seen.
    pub comm: Option<String>,
    /// When the process started, ns since boot (/proc/PID/stat): `tgid`
    /// and this name one process of the boot, so reports of one hang match.
    pub start_time_ns: Option<u64>,
    pub attached: bool,
    pub observed_from_ns: u64,
    pub observed_to_ns: Option<u64>,
    /// Raw wait status (status << 8 | signal), null while running.
    pub exit_status: Option<i32>,
    pub lifecycle: crate::model::lifecycle::Lifecycle,
    /// asyncio: event loops and tasks as last read, and every stretch an
    /// event loop thread spent out of its selector past the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asyncio: Option<crate::vocab::asyncio::AsyncView>,
    /// Present (maybe empty) when an event loop was watched (a thread seen
    /// in epoll_wait, or a loop in the asyncio view): an empty list says it
    /// never stayed out of its selector past the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_stalls: Option<Vec<crate::model::event_loop::LoopStall>>,
    /// CPython: GIL accounting and the verdict (report/gil.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<super::gil::ProcessGil>,
    /// CPython: the interpreter as last read, and what was not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<Interpreter>,
}

/// `processes[].interpreter`.
#[derive(Serialize)]
pub struct Interpreter {
    pub version: String,
    /// Why its locks were not read (an unknown layout, a free-threaded build).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
    /// What was not read (a version newer than the tables: names and stacks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited: Option<String>,
}

#[derive(Serialize)]
pub struct ThreadOut {
    pub tgid: u32,
    pub tid: u32,
    pub name: String,
    pub names: Vec<String>,
    pub parent_tid: Option<u32>,
    pub start_ns: Option<u64>,
    pub exit_ns: Option<u64>,
    pub exit_code: Option<i32>,
    pub preexisting: bool,
    /// Creation site (symbolized), when known.
    pub created_at: Option<String>,
    pub detached: bool,
    /// Known to be joined (`joined_by` names the joiner when known).
    pub joined: bool,
    pub joined_by: Option<u32>,
    /// CPython: the Python stack at the last read of the interpreter (for a
    /// thread that exited since, its last known state)
    /// (innermost first) and what it showed about locks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python_frames: Option<Vec<crate::vocab::frames::PyFrame>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<ThreadPython>,
    /// A live thread waiting for work that nobody waits for: what it waits
    /// on ("waiting for work on Queue jobs"). State, not a finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle: Option<String>,
    /// `dump`: its futex wait now (none: not in one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<super::dump::WaitState>,
    /// `dump --native`: its stack in the order it ran, innermost first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<crate::vocab::frames::StackFrame>,
}

/// `threads[].python`: what the interpreter showed, and GIL accounting.
#[derive(Serialize)]
pub struct ThreadPython {
    #[serde(flatten)]
    pub info: Option<crate::vocab::python::PyThreadInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gil: Option<super::gil::ThreadGil>,
}

#[derive(Serialize)]
pub struct WaitOut {
    pub tgid: u32,
    pub addr: u64,
    pub addr_hex: String,
    pub symbol: Option<String>,
    pub op: String,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

pub fn build<'a>(
    model: &Model,
    mode: &'a str,
    hooks: &'a [HookUse],
    findings: &'a [Finding],
) -> Report<'a> {
    let mut r = Report {
        schema: SCHEMA,
        version: env!("CARGO_PKG_VERSION"),
        mode,
        processes: Vec::new(),
        threads: Vec::new(),
        waits: Vec::new(),
        drops: model.drops,
        hooks,
        wait_hooks: &[],
        uprobes_attached: 0,
        findings,
        locks: Vec::new(),
        held_at_attach: super::held::json(model),
    };
    for p in model.processes.values() {
        for ((addr, generation), (kind, profile)) in &p.lock_profiles {
            r.locks.push(LockOut {
                tgid: p.tgid,
                addr: *addr,
                addr_hex: format!("{addr:#x}"),
                generation: *generation,
                symbol: model.symbols.get(&(p.tgid, *addr)).cloned(),
                kind: *kind,
                profile: profile.clone(),
            });
        }
        r.processes.push(ProcessOut {
            tgid: p.tgid,
            cmdline: p.cmdline.clone(),
            exe: p.exe.clone(),
            comm: p.comm().map(str::to_string),
            start_time_ns: p.start_time_ns,
            attached: p.attached,
            observed_from_ns: p.observed_from_ns,
            observed_to_ns: p.observed_to_ns,
            exit_status: p.exit_status,
            lifecycle: crate::model::lifecycle::lifecycle(p),
            asyncio: p.python.as_ref().and_then(|v| v.asyncio.clone()),
            loop_stalls: (!p.loop_stalls.is_empty()
                || p.loop_seen.is_some()
                || p.python
                    .as_ref()
                    .and_then(|v| v.asyncio.as_ref())
                    .is_some_and(|a| !a.loops.is_empty()))
            .then(|| p.loop_stalls.clone()),
            python: super::gil::process_json(model, p),
            interpreter: p.python.as_ref().map(|v| Interpreter {
                version: v.version.clone(),
                unsupported: v.unsupported.clone(),
                limited: v.limited.clone(),
            }),
        });
        let mut gil = super::gil::threads_json(model, p);
        let idle: std::collections::HashMap<u32, String> = if p.exit_status.is_none() {
            let g = crate::graph::WaitForGraph::build(p);
            crate::graph::idle::idle_threads(model, p, &g)
                .into_iter()
                .collect()
        } else {
            Default::default()
        };
        for (i, t) in p.threads.iter().enumerate() {
            let info = p.python.as_ref().and_then(|v| v.info(t.tid));
            // A TID can be reused: the accounting is the newest thread's.
            let newest = !p.threads[i + 1..].iter().any(|x| x.tid == t.tid);
            let g = gil
                .iter()
                .position(|x| x.0 == t.tid && newest)
                .map(|i| gil.swap_remove(i).1);
            let python = (info.is_some() || g.is_some()).then_some(ThreadPython { info, gil: g });
            r.threads.push(ThreadOut {
                tgid: p.tgid,
                tid: t.tid,
                name: t.name().to_string(),
                names: t
                    .names
                    .iter()
                    .map(|(_, n)| n.clone())
                    .filter(|n| !n.is_empty())
                    .collect(),
                parent_tid: t.parent_tid,
                start_ns: t.start_ns,
                exit_ns: t.exit_ns,
                exit_code: t.exit_code,
                preexisting: t.preexisting,
                created_at: (t.create_site != 0).then(|| {
                    model
                        .code_symbols
                        .get(&(p.tgid, t.create_site))
                        .cloned()
                        .unwrap_or_else(|| format!("{:#x}", t.create_site))
                }),
                detached: t.detached,
                joined: t.joined,
                python_frames: p
                    .python
                    .as_ref()
                    .and_then(|v| v.thread(t.tid))
                    .map(|x| x.frames.clone()),
                python,
                joined_by: t.joined_by,
                idle: t.alive().then(|| idle.get(&t.tid).cloned()).flatten(),
                wait: None,
                frames: Vec::new(),
            });
        }
        let mut locks: Vec<_> = p.locks.values().collect();
        locks.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.uaddr.cmp(&b.uaddr)));
        for l in locks {
            r.waits.push(WaitOut {
                tgid: p.tgid,
                addr: l.uaddr,
                addr_hex: format!("{:#x}", l.uaddr),
                symbol: model.symbols.get(&(p.tgid, l.uaddr)).cloned(),
                op: futex::name(l.op),
                count: l.count,
                total_ns: l.total_ns,
                max_ns: l.max_ns,
            });
        }
    }
    r.locks
        .sort_by_key(|l| std::cmp::Reverse(l.profile.hold_total_ns));
    r
}
