//! The report directory: one `.json` (observer.report/1) and one `.txt`
//! per finding, plus the flight recorder's `.events.jsonl` (replayable with
//! `observer replay`), written atomically. The directory is the contract
//! for shippers: a report is complete once its `.json` exists (it is
//! renamed into place last).

use std::{
    collections::{HashSet, VecDeque},
    fs::{self, OpenOptions},
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context, Result};

use crate::{detect::Finding, event::Event};

pub const FILE_MODE: u32 = 0o640;
pub const DIR_MODE: u32 = 0o750;
pub const RECORDING_EXT: &str = "events.jsonl";

/// Creates the report directory (0750) if it is missing.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .with_context(|| format!("cannot create report dir {}", dir.display()))?;
    // The umask may have narrowed it; widen to exactly 0750.
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .with_context(|| format!("cannot chmod {}", dir.display()))
}

/// A comm as it may appear in a file name: [A-Za-z0-9._-], others as '_'.
pub fn sanitize_comm(comm: &str) -> String {
    let s: String = comm
        .chars()
        .take(15)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // No hidden files, no "." or "..".
    match s.trim_start_matches('.') {
        "" => "_".into(),
        t if t.len() != s.len() => format!("_{t}"),
        _ => s,
    }
}

/// "20261201T084423.123Z" (UTC): sorts in time order.
pub fn utc_stamp(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{dd:02}T{:02}{:02}{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The id (file name without extension) of a report.
pub fn report_id(t: SystemTime, pid: u32, comm: &str, kind: &str) -> String {
    format!("{}-{pid}-{}-{kind}", utc_stamp(t), sanitize_comm(comm))
}

/// Writes `data` to `path` through a temporary file in the same directory
/// and a rename, with mode 0640.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("bad report path")?;
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let res = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
        f.write_all(data)?;
        f.sync_data()?;
        fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.with_context(|| format!("cannot write {}", path.display()))
}

/// What one report consists of.
pub struct ReportFiles<'a> {
    pub pid: u32,
    pub comm: &'a str,
    pub finding: &'a Finding,
    pub json: Vec<u8>,
    pub text: String,
    /// The flight recorder's events (JSON lines).
    pub recording: Option<Vec<u8>>,
}

pub struct Sink {
    pub dir: PathBuf,
    /// (tgid, finding key) already written: the same finding of the same
    /// process is reported once, even if its model is rebuilt.
    written: HashSet<(u32, String)>,
    pub max_reports: usize,
    pub max_age: Option<Duration>,
}

impl Sink {
    pub fn new(dir: PathBuf, max_reports: usize, max_age_days: f64) -> Sink {
        Sink {
            dir,
            written: HashSet::new(),
            max_reports,
            max_age: (max_age_days > 0.0).then(|| Duration::from_secs_f64(max_age_days * 86_400.0)),
        }
    }

    /// Whether this finding was already written for this process.
    pub fn seen(&self, tgid: u32, f: &Finding) -> bool {
        self.written.contains(&(tgid, f.key.clone()))
    }

    /// Writes the recording, the text and then the JSON (last, so a
    /// complete `.json` means a complete report). Returns the id, or None
    /// for a duplicate.
    pub fn write(&mut self, r: ReportFiles) -> Result<Option<String>> {
        if !self.written.insert((r.pid, r.finding.key.clone())) {
            return Ok(None);
        }
        ensure_dir(&self.dir)?;
        let kind = serde_json::to_value(r.finding.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "finding".into());
        let mut id = report_id(SystemTime::now(), r.pid, r.comm, &kind);
        // Two findings of one kind in one millisecond: keep both.
        let mut n = 1;
        while self.dir.join(format!("{id}.json")).exists() {
            n += 1;
            id = format!("{}-{n}", report_id(SystemTime::now(), r.pid, r.comm, &kind));
        }
        if let Some(rec) = &r.recording {
            write_atomic(&self.dir.join(format!("{id}.{RECORDING_EXT}")), rec)?;
        }
        write_atomic(&self.dir.join(format!("{id}.txt")), r.text.as_bytes())?;
        write_atomic(&self.dir.join(format!("{id}.json")), &r.json)?;
        Ok(Some(id))
    }

    /// Records a finding as written (its process's model was rebuilt).
    pub fn mark(&mut self, tgid: u32, f: &Finding) {
        self.written.insert((tgid, f.key.clone()));
    }

    /// A process is gone: its pid may be reused by another.
    pub fn forget(&mut self, tgid: u32) {
        self.written.retain(|(t, _)| *t != tgid);
    }

    /// Deletes reports past the age limit, then the oldest past the count
    /// limit. Returns how many reports were removed.
    pub fn retain(&self) -> usize {
        retain(&self.dir, self.max_reports, self.max_age, SystemTime::now())
    }
}

/// Report ids in `dir` (those with a `.json`), oldest first.
pub fn list_ids(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut ids: Vec<String> = fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            if n.starts_with('.') {
                return None;
            }
            n.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    ids.sort();
    Ok(ids)
}

fn remove_report(dir: &Path, id: &str) {
    for ext in ["json", "txt", RECORDING_EXT] {
        let _ = fs::remove_file(dir.join(format!("{id}.{ext}")));
    }
}

pub fn retain(dir: &Path, max_reports: usize, max_age: Option<Duration>, now: SystemTime) -> usize {
    // Temporary files a crash left behind.
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let n = e.file_name();
            let n = n.to_string_lossy();
            let stale = e.metadata().and_then(|m| m.modified()).is_ok_and(|m| {
                now.duration_since(m)
                    .is_ok_and(|d| d > Duration::from_secs(60))
            });
            if n.starts_with('.') && n.ends_with(".tmp") && stale {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let Ok(ids) = list_ids(dir) else { return 0 };
    let mut kept = Vec::new();
    let mut removed = 0;
    for id in ids {
        let old = max_age.is_some_and(|age| {
            fs::metadata(dir.join(format!("{id}.json")))
                .and_then(|m| m.modified())
                .is_ok_and(|m| now.duration_since(m).is_ok_and(|d| d > age))
        });
        if old {
            remove_report(dir, &id);
            removed += 1;
        } else {
            kept.push(id);
        }
    }
    if max_reports > 0 && kept.len() > max_reports {
        let extra = kept.len() - max_reports;
        for id in &kept[..extra] {
            remove_report(dir, id);
            removed += 1;
        }
    }
    removed
}

/// The last seconds of one process's events, bounded in time and count.
/// Lifecycle seeds (`Start`, `ThreadSeen`) and symbol names are kept
/// apart so a recording always says which process and threads it is about.
#[derive(Debug)]
pub struct FlightRecorder {
    window_ns: u64,
    max_events: usize,
    max_bytes: usize,
    /// Events without a time (the seeded state), with their sizes.
    prologue: Vec<(Event, usize)>,
    ring: VecDeque<(Event, usize)>,
    /// The recording's size now (each event as its JSON line).
    bytes: usize,
    /// Events evicted by the count cap before they aged out.
    pub evicted: u64,
    /// Events evicted by the byte cap before they aged out.
    pub evicted_bytes: u64,
}

/// Bytes an event takes in a recording (its JSON line).
fn json_len(ev: &Event) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(1);
    let _ = serde_json::to_writer(&mut c, ev);
    c.0
}

impl FlightRecorder {
    /// Keeps `window_ns` of events, at most `max_events` of them and
    /// `max_bytes` of recording; half of each for the seeded state.
    pub fn new(window_ns: u64, max_events: usize, max_bytes: usize) -> FlightRecorder {
        FlightRecorder {
            window_ns,
            max_events: max_events.max(2),
            max_bytes: max_bytes.max(2),
            prologue: Vec::new(),
            ring: VecDeque::new(),
            bytes: 0,
            evicted: 0,
            evicted_bytes: 0,
        }
    }

    pub fn push(&mut self, ev: &Event) {
        let ts = match ev {
            Event::Start { .. } | Event::ThreadSeen { .. } => None,
            e => e.ts_ns(),
        };
        let size = json_len(ev);
        let Some(ts) = ts else {
            let held: usize = self.prologue.iter().map(|e| e.1).sum();
            if self.prologue.len() >= self.max_events / 2 {
                self.evicted += 1;
            } else if held + size > self.max_bytes / 2 {
                self.evicted_bytes += 1;
            } else {
                self.prologue.push((ev.clone(), size));
                self.bytes += size;
            }
            return;
        };
        self.ring.push_back((ev.clone(), size));
        self.bytes += size;
        let horizon = ts.saturating_sub(self.window_ns);
        while let Some((front, n)) = self.ring.front() {
            if front.ts_ns().is_none_or(|t| t >= horizon) {
                break;
            }
            self.bytes -= n;
            self.ring.pop_front();
        }
        let prologue = self.bytes - self.ring.iter().map(|e| e.1).sum::<usize>();
        while self.ring.len() > self.max_events - self.max_events / 2 {
            if let Some((_, n)) = self.ring.pop_front() {
                self.bytes -= n;
            }
            self.evicted += 1;
        }
        while self.bytes - prologue > self.max_bytes - self.max_bytes / 2 {
            let Some((_, n)) = self.ring.pop_front() else {
                break;
            };
            self.bytes -= n;
            self.evicted_bytes += 1;
        }
    }

    /// The recording's size now, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.prologue.len() + self.ring.len()
    }

    /// The `--record` format: one JSON event per line; `names` (symbol
    /// events looked up outside the event stream) follow the prologue.
    pub fn to_jsonl(&self, names: &[Event]) -> Vec<u8> {
        let mut out = Vec::new();
        let held = self.prologue.iter().map(|e| &e.0);
        for ev in held.chain(names).chain(self.ring.iter().map(|e| &e.0)) {
            if serde_json::to_writer(&mut out, ev).is_ok() {
                out.push(b'\n');
            }
        }
        out
    }
}

/// `observer reports list`.
pub fn list_command(dir: &Path) -> Result<u8> {
    let ids = list_ids(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if ids.is_empty() {
        println!("no reports in {}", dir.display());
        return Ok(0);
    }
    for id in ids {
        let summary = fs::read(dir.join(format!("{id}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| {
                v["findings"][0]["summary"]
                    .as_str()
                    .map(crate::report::escape)
            })
            .unwrap_or_else(|| "(unreadable report)".into());
        println!("{id}  {summary}");
    }
    Ok(0)
}

/// `observer reports show ID`: the text report (or the JSON).
pub fn show_command(dir: &Path, id: &str, json: bool) -> Result<u8> {
    let id = id
        .strip_suffix(".json")
        .or_else(|| id.strip_suffix(".txt"))
        .unwrap_or(id);
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        anyhow::bail!("bad report id {id:?} (see `observer reports list`)");
    }
    let path = dir.join(format!("{id}.{}", if json { "json" } else { "txt" }));
    let data = fs::read_to_string(&path).with_context(|| {
        format!(
            "no report {id} in {} (see `observer reports list`)",
            dir.display()
        )
    })?;
    if json {
        // Stored on one line for shippers; shown indented for people.
        match serde_json::from_str::<serde_json::Value>(&data) {
            Ok(v) => println!("{}", serde_json::to_string_pretty(&v)?),
            Err(_) => print!("{data}"),
        }
        return Ok(0);
    }
    print!("{data}");
    if fs::metadata(dir.join(format!("{id}.{RECORDING_EXT}"))).is_ok() {
        println!(
            "\nflight recorder: observer replay {}",
            dir.join(format!("{id}.{RECORDING_EXT}")).display()
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::FindingKind;

    fn finding(key: &str) -> Finding {
        Finding {
            kind: FindingKind::Deadlock,
            tgid: 42,
            detected_ns: 1,
            detail: crate::detect::Detail::Deadlock,
            threads: Vec::new(),
            locks: Vec::new(),
            cycle: Vec::new(),
            tasks: Vec::new(),
            key: key.into(),
        }
    }

    #[test]
    fn names_are_safe() {
        assert_eq!(sanitize_comm("pytest"), "pytest");
        assert_eq!(sanitize_comm("a/b c\x1b[31m"), "a_b_c__31m");
        assert_eq!(sanitize_comm(".."), "_");
        assert_eq!(sanitize_comm(".hidden"), "_hidden");
        assert_eq!(sanitize_comm(""), "_");
        assert_eq!(sanitize_comm("ünïcode"), "_n_code");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_114_663_123);
        assert_eq!(utc_stamp(t), "20261201T084423.123Z");
        assert_eq!(utc_stamp(SystemTime::UNIX_EPOCH), "19700101T000000.000Z");
        assert_eq!(
            report_id(t, 7, "x/y", "deadlock"),
            "20261201T084423.123Z-7-x_y-deadlock"
        );
    }

    #[test]
    fn writes_once_atomically_with_modes() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("reports");
        let mut s = Sink::new(dir.clone(), 0, 0.0);
        let f = finding("k1");
        let mut rec = FlightRecorder::new(1_000, 10, 1 << 20);
        rec.push(&Event::Scan { ts_ns: 5 });
        let files = |f| ReportFiles {
            pid: 42,
            comm: "bad/comm",
            finding: f,
            json: b"{}".to_vec(),
            text: "text\n".into(),
            recording: Some(rec.to_jsonl(&[])),
        };
        let id = s.write(files(&f)).unwrap().unwrap();
        assert!(id.ends_with("-42-bad_comm-deadlock"), "{id}");
        assert_eq!(s.write(files(&f)).unwrap(), None, "same finding twice");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o750);
        for ext in ["json", "txt", RECORDING_EXT] {
            assert_eq!(mode(&dir.join(format!("{id}.{ext}"))), 0o640, "{ext}");
        }
        assert_eq!(
            fs::read_to_string(dir.join(format!("{id}.{RECORDING_EXT}"))).unwrap(),
            "{\"ev\":\"scan\",\"ts_ns\":5}\n"
        );
        // No temporary files left.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
        assert_eq!(list_ids(&dir).unwrap(), vec![id.clone()]);
        // A new process with the same pid may report the same finding.
        s.forget(42);
        let id2 = s.write(files(&f)).unwrap().unwrap();
        assert_ne!(id, id2);
        assert_eq!(list_ids(&dir).unwrap().len(), 2);
    }

    #[test]
    fn retention_by_count_and_age() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        for i in 0..5 {
            let id = format!("2026010{i}T000000.000Z-1-x-deadlock");
            for ext in ["json", "txt"] {
                fs::write(dir.join(format!("{id}.{ext}")), "{}").unwrap();
            }
        }
        fs::write(dir.join("unrelated.log"), "").unwrap();
        fs::write(dir.join(".x.json.tmp"), "").unwrap();
        assert_eq!(retain(dir, 3, None, SystemTime::now()), 2);
        assert!(dir.join(".x.json.tmp").exists(), "a write may be under way");
        let ids = list_ids(dir).unwrap();
        assert_eq!(ids.len(), 3);
        assert!(ids[0].starts_with("20260102"), "oldest went first: {ids:?}");
        assert!(!dir.join("20260100T000000.000Z-1-x-deadlock.txt").exists());
        // Age: everything is older than 1 s an hour from now.
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(retain(dir, 0, Some(Duration::from_secs(1)), later), 3);
        assert!(list_ids(dir).unwrap().is_empty());
        assert!(dir.join("unrelated.log").exists());
        assert!(!dir.join(".x.json.tmp").exists(), "stale temporary file");
    }

    #[test]
    fn flight_recorder_is_bounded() {
        let mut r = FlightRecorder::new(1_000, 8, 1 << 20);
        r.push(&Event::start(0, 1, vec!["x".into()], true));
        for ts in 0..100u64 {
            r.push(&Event::Scan { ts_ns: ts * 100 });
        }
        // Window 1000 ns at 100 ns steps: 11 fit in time, 4 in the count cap.
        let lines = String::from_utf8(r.to_jsonl(&[])).unwrap();
        let lines: Vec<&str> = lines.lines().collect();
        assert_eq!(lines.len(), 5);
        assert!(lines[0].contains("\"start\""), "{}", lines[0]);
        assert!(lines[4].contains("9900"));
        let mut r = FlightRecorder::new(1_000, 1000, 1 << 20);
        for ts in 0..100u64 {
            r.push(&Event::Scan { ts_ns: ts * 100 });
        }
        assert_eq!(r.len(), 11);
        assert_eq!(r.evicted, 0);
        assert_eq!(r.bytes(), r.to_jsonl(&[]).len());
        // By bytes: a scan line is {"ev":"scan","ts_ns":NNNN} and a newline
        // (31 bytes at 4 digits); 100 bytes leave room for one in the ring.
        let mut r = FlightRecorder::new(1_000_000, 1000, 100);
        for ts in 1000..1100u64 {
            r.push(&Event::Scan { ts_ns: ts });
        }
        assert_eq!(r.len(), 1);
        assert_eq!(r.evicted_bytes, 99);
        assert_eq!(r.bytes(), r.to_jsonl(&[]).len());
        assert!(r.bytes() <= 50);
    }
}
