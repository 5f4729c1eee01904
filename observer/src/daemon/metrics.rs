//! The daemon's Prometheus endpoint (OpenMetrics text), served on the
//! configured address (loopback by default) by a minimal HTTP responder.

use std::{net::SocketAddr, sync::Arc};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    pub watched_processes: Gauge,
    pub watched_threads: Gauge,
    /// 1 while the syscall hooks are attached (a process is watched).
    pub syscall_hooks: Gauge,
    pub sched_hook: Gauge,
    pub events: Counter,
    pub ringbuf_drops: Counter,
    /// Other kernel-side losses (tables full), by table.
    pub kernel_drops: Family<Labels, Counter>,
    pub findings: Family<Labels, Counter>,
    pub reports_written: Counter,
    pub report_errors: Counter,
    pub scan_duration: Histogram,
    pub cap_hits: Family<Labels, Counter>,
    pub rss_bytes: Gauge,
    /// CPU time the daemon used (user + system).
    pub cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Events held in the flight recorders of every watched process.
    pub recorded_events: Gauge,
    pub recorded_bytes: Gauge,
    pub config_reloads: Family<Labels, Counter>,
    /// Exec and fork notes of the kernel filter, by result.
    pub exec_notes: Family<Labels, Counter>,
    /// Threads of each watched process waiting for work nobody waits for.
    pub idle_threads: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("observer");
        let m = Metrics {
            watched_processes: Gauge::default(),
            watched_threads: Gauge::default(),
            syscall_hooks: Gauge::default(),
            sched_hook: Gauge::default(),
            events: Counter::default(),
            ringbuf_drops: Counter::default(),
            kernel_drops: Family::default(),
            findings: Family::default(),
            reports_written: Counter::default(),
            report_errors: Counter::default(),
            // 100 us .. ~0.8 s
            scan_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            cap_hits: Family::default(),
            rss_bytes: Gauge::default(),
            cpu_seconds: Gauge::default(),
            recorded_events: Gauge::default(),
            recorded_bytes: Gauge::default(),
            config_reloads: Family::default(),
            exec_notes: Family::default(),
            idle_threads: Family::default(),
            registry: Registry::default(),
        };
        r.register(
            "watched_processes",
            "Processes watched now",
            m.watched_processes.clone(),
        );
        r.register(
            "watched_threads",
            "Live threads of the watched processes",
            m.watched_threads.clone(),
        );
        r.register(
            "syscall_hooks_attached",
            "1 while the futex and epoll syscall hooks are attached (they cost every syscall on the host)",
            m.syscall_hooks.clone(),
        );
        r.register(
            "sched_hook_attached",
            "1 while futex and epoll waits are learnt at sched_switch instead (costs each context switch, no syscall)",
            m.sched_hook.clone(),
        );
        r.register(
            "events",
            "Events read from the kernel and /proc",
            m.events.clone(),
        );
        r.register(
            "ringbuf_drops",
            "Kernel records lost because the ring buffer was full",
            m.ringbuf_drops.clone(),
        );
        r.register(
            "kernel_drops",
            "Kernel-side losses because a table was full, by table",
            m.kernel_drops.clone(),
        );
        r.register("findings", "Findings reported, by kind", m.findings.clone());
        r.register(
            "reports_written",
            "Report files written to the report directory",
            m.reports_written.clone(),
        );
        r.register(
            "report_errors",
            "Reports that could not be written",
            m.report_errors.clone(),
        );
        r.register(
            "scan_duration_seconds",
            "Time of one scan: wait table, model update and detection for every watched process",
            m.scan_duration.clone(),
        );
        r.register(
            "cap_hits",
            "Times a configured cap was hit (something skipped or evicted), by cap",
            m.cap_hits.clone(),
        );
        r.register(
            "resident_memory_bytes",
            "Resident set size of the daemon",
            m.rss_bytes.clone(),
        );
        r.register(
            "cpu_seconds",
            "CPU time the daemon itself used, user and system",
            m.cpu_seconds.clone(),
        );
        r.register(
            "recorded_events",
            "Events held in the flight recorders of all watched processes",
            m.recorded_events.clone(),
        );
        r.register(
            "recorded_bytes",
            "Bytes of recording held in the flight recorders of all watched processes (flight_recorder_bytes caps each)",
            m.recorded_bytes.clone(),
        );
        r.register(
            "config_reloads",
            "SIGHUP reloads, by result",
            m.config_reloads.clone(),
        );
        r.register(
            "exec_notes",
            "Execs of unwatched processes the kernel looked at: sent to the daemon, filtered out by name, or lost; and forks of watched processes sent",
            m.exec_notes.clone(),
        );
        r.register(
            "idle_threads",
            "Live threads of a watched process waiting for work that nobody waits for (idle workers: state, not findings), by pid and comm",
            m.idle_threads.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// The idle threads of every watched process now: (pid, comm, count).
    /// Processes no longer watched drop out.
    pub fn idle_now(&self, procs: &[(u32, String, usize)]) {
        self.idle_threads.clear();
        for (pid, comm, n) in procs {
            self.idle_threads
                .get_or_create(&vec![("pid", pid.to_string()), ("comm", comm.clone())])
                .set(*n as i64);
        }
    }

    pub fn finding(&self, kind: &str) {
        self.findings
            .get_or_create(&vec![("kind", kind.into())])
            .inc();
    }

    pub fn cap_hit(&self, cap: &'static str) {
        self.cap_hits_by(cap, 1);
    }

    pub fn cap_hits_by(&self, cap: &'static str, n: u64) {
        self.cap_hits
            .get_or_create(&vec![("cap", cap.into())])
            .inc_by(n);
    }

    /// Adds the kernel filter's counters (cumulative) as deltas.
    pub fn exec_notes_now(
        &self,
        last: &mut crate::probe::spawn::SpawnCounts,
        now: crate::probe::spawn::SpawnCounts,
    ) {
        let filtered = |c: &crate::probe::spawn::SpawnCounts| c.execs.saturating_sub(c.sent);
        for (result, n, l) in [
            ("sent", now.sent, last.sent),
            ("filtered", filtered(&now), filtered(last)),
            ("fork", now.forks, last.forks),
            ("dropped", now.drops, last.drops),
        ] {
            self.exec_notes
                .get_or_create(&vec![("result", result.into())])
                .inc_by(n.saturating_sub(l));
        }
        *last = now;
    }

    /// Adds kernel counters (cumulative) as deltas since the last call.
    pub fn kernel_drops_now(&self, last: &mut crate::event::Drops, now: crate::event::Drops) {
        self.ringbuf_drops
            .inc_by(now.ringbuf.saturating_sub(last.ringbuf));
        for ((table, n), (_, l)) in now.full_tables().into_iter().zip(last.full_tables()) {
            if n > l {
                self.kernel_drops
                    .get_or_create(&vec![("table", table.into())])
                    .inc_by(n - l);
            }
        }
        *last = now;
    }

    /// The daemon's own cost: resident memory and CPU time.
    pub fn sample_self(&self) {
        if let Some(b) = rss_bytes() {
            self.rss_bytes.set(b as i64);
        }
        self.cpu_seconds.set(cpu_ms() as f64 / 1e3);
    }

    /// The endpoint's body in OpenMetrics.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        s
    }

    /// The body in the classic Prometheus text format (0.0.4), for clients
    /// that do not ask for OpenMetrics.
    pub fn classic_text(&self) -> String {
        to_classic(&self.text())
    }
}

/// OpenMetrics to the 0.0.4 text format: counters are named with their
/// `_total` suffix in HELP/TYPE, and there is no `# EOF`.
pub fn to_classic(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for l in om.lines() {
        if l == "# EOF" || l.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| l.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}"));
                } else {
                    out.push_str(l);
                }
            }
            None => out.push_str(l),
        }
        out.push('\n');
    }
    out
}

/// Resident set size from /proc/self/statm.
pub fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * page.max(4096) as u64)
}

/// CPU time of this process (user + system), in milliseconds.
pub fn cpu_ms() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0;
    }
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    ms(u.ru_utime) + ms(u.ru_stime)
}

/// Binds the endpoint now (so a bad address fails at start).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves GET /metrics (any path) until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, m: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let m = m.clone();
        tokio::spawn(async move {
            // Read the request head (bounded), then answer.
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while n < buf.len() {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => {
                            n += k;
                            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let head = String::from_utf8_lossy(&buf[..n]);
            let openmetrics = head.lines().any(|l| {
                l.to_ascii_lowercase().starts_with("accept:")
                    && l.contains("application/openmetrics-text")
            });
            let (status, body, ctype) = if !head.starts_with("GET ") {
                (
                    "405 Method Not Allowed",
                    "only GET\n".into(),
                    "text/plain; charset=utf-8",
                )
            } else if openmetrics {
                (
                    "200 OK",
                    m.text(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                (
                    "200 OK",
                    m.classic_text(),
                    "text/plain; version=0.0.4; charset=utf-8",
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Metrics {
        let m = Metrics::new();
        m.watched_processes.set(2);
        m.events.inc_by(10);
        m.finding("deadlock");
        m.cap_hit("processes");
        m.scan_duration.observe(0.0021);
        m.kernel_drops_now(
            &mut crate::event::Drops::default(),
            crate::event::Drops {
                ringbuf: 3,
                watch_full: 1,
                ..Default::default()
            },
        );
        m.sample_self();
        m
    }

    #[test]
    fn text_has_every_metric() {
        let t = sample().text();
        for want in [
            "observer_watched_processes 2",
            "observer_events_total 10",
            "observer_findings_total{kind=\"deadlock\"} 1",
            "observer_cap_hits_total{cap=\"processes\"} 1",
            "observer_ringbuf_drops_total 3",
            "observer_kernel_drops_total{table=\"watch\"} 1",
            "observer_scan_duration_seconds_count 1",
            "observer_resident_memory_bytes ",
            "# EOF",
        ] {
            assert!(t.contains(want), "{want:?} missing in\n{t}");
        }
    }

    /// `promtool check metrics` (Debian package `prometheus`) lints the text.
    #[test]
    fn promtool_accepts_the_text() {
        let Ok(out) = std::process::Command::new("promtool")
            .arg("--version")
            .output()
        else {
            // OBSERVER_REQUIRE_PROMTOOL: the switch's old name, for promtool.
            if std::env::var_os("OBSERVER_REQUIRE_PROMTOOL").is_some_and(|v| v != "0") {
                panic!("promtool is required here");
            }
            crate::testenv::missing(
                "promtool_accepts_the_text: promtool is not installed (Debian package prometheus)",
            );
            return;
        };
        assert!(out.status.success());
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sample().classic_text().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let msg = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool: {msg}");
        assert!(msg.trim().is_empty(), "promtool lint: {msg}");
    }

    #[tokio::test]
    async fn serves_http() {
        let l = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = l.local_addr().unwrap();
        let m = Arc::new(sample());
        let server = tokio::spawn(serve(l, m));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains("text/plain; version=0.0.4"), "{resp}");
        assert!(
            resp.contains("# TYPE observer_events_total counter\n"),
            "{resp}"
        );
        assert!(resp.contains("observer_watched_processes 2"));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0\r\n\r\n",
        )
        .await
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).await.unwrap();
        assert!(resp.contains("# TYPE observer_events counter\n"), "{resp}");
        assert!(resp.ends_with("# EOF\n"), "{resp}");
        server.abort();
    }
}
