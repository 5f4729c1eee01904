//! `observer daemon` under a bench: started on a config, its stderr in a
//! log, its Prometheus metrics read over HTTP.

use super::*;
use std::net::TcpStream;

/// A free local TCP port for a daemon's metrics.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `observer daemon --config CFG` with its stderr in `log` (and extra
/// environment), waited for until its metrics at `port` answer.
pub fn start_daemon(
    observer: &Path,
    cfg: &Path,
    log: &Path,
    port: u16,
    env: &[(&str, &str)],
) -> Result<Guard> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut d = Guard::new(
        Command::new(observer)
            .args(["daemon", "--config"])
            .arg(cfg)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .context("starting the daemon")?,
    );
    wait_metric(&mut d, port, log, "observer_watched_processes", |_| true)?;
    Ok(d)
}

/// Waits (60 s at most) until the daemon's metric `name` satisfies `ok`.
pub fn wait_metric(
    d: &mut Guard,
    port: u16,
    log: &Path,
    name: &str,
    ok: impl Fn(f64) -> bool,
) -> Result<f64> {
    let t = Instant::now();
    loop {
        if let Some(v) = metrics(port).and_then(|m| metric(&m, name))
            && ok(v)
        {
            return Ok(v);
        }
        if t.elapsed() > Duration::from_secs(60) || d.wait(Duration::ZERO).is_some() {
            bail!(
                "the daemon's {name} did not come right within 60 s; see {}",
                log.display()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon's metrics page.
pub fn metrics(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    r.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())
}

/// The value of an unlabelled series in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
