//! Recordings (`observer record`, `--record`) and `observer replay`.
//!
//! A recording is JSON lines: a header line with the schema and the live
//! run's limits, then one event per line (`event::Event`). Replay feeds the
//! events to the model and judges where the live run did (its `Scan`
//! events), with the live run's limits, so it reports the same findings.
//! Recordings without a header (older ones) replay with the defaults.

use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    cli::{PictureOpts, ReplayArgs},
    detect::{Finding, Limits},
    event::Event,
    model::Model,
    report,
};

pub const SCHEMA: &str = "observer.recording/1";

/// The first line of a recording.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub schema: String,
    /// The observer that wrote it.
    pub version: String,
    pub limits: RecordedLimits,
}

/// The live run's judgement limits (see `detect::Limits`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedLimits {
    pub long_wait_ns: u64,
    pub stuck_ns: u64,
    pub churn_per_s: u64,
    pub scan_interval_ms: u64,
    /// `--loop-blocked` (recordings made before it: the default).
    #[serde(default = "default_loop_blocked")]
    pub loop_blocked_ns: u64,
}

fn default_loop_blocked() -> u64 {
    Limits::new(0).loop_blocked_ns
}

impl Header {
    pub fn new(limits: &Limits, scan_interval_ms: u64) -> Header {
        Header {
            schema: SCHEMA.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            limits: RecordedLimits {
                long_wait_ns: limits.long_wait_ns,
                stuck_ns: limits.stuck_ns,
                churn_per_s: limits.churn_per_s,
                scan_interval_ms,
                loop_blocked_ns: limits.loop_blocked_ns,
            },
        }
    }

    /// The limits the live run judged with.
    pub fn limits(&self) -> Limits {
        Limits {
            long_wait_ns: self.limits.long_wait_ns,
            stuck_ns: self.limits.stuck_ns,
            churn_per_s: self.limits.churn_per_s,
            loop_blocked_ns: self.limits.loop_blocked_ns,
        }
    }

    /// How often the live run judged, for a stream without `scan` events.
    pub fn check_ns(&self) -> u64 {
        self.limits.scan_interval_ms.max(1) * 1_000_000
    }

    pub fn write(&self, w: &mut impl Write) -> Result<()> {
        serde_json::to_writer(&mut *w, self).context("writing the recording")?;
        w.write_all(b"\n").context("writing the recording")
    }
}

/// Reads a recording: its header (None for header-less recordings) and events.
pub fn read(file: &Path) -> Result<(Option<Header>, Vec<Event>)> {
    let f = File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    parse(BufReader::new(f), &file.display().to_string())
}

/// Parses a recording from `r`; `name` says where it came from in errors.
pub fn parse(r: impl BufRead, name: &str) -> Result<(Option<Header>, Vec<Event>)> {
    let mut header = None;
    let mut events = Vec::new();
    for (i, line) in r.lines().enumerate() {
        let line = line.with_context(|| format!("reading {name}"))?;
        if line.trim().is_empty() {
            continue;
        }
        // The header is the first line, an object with a schema and no `ev`
        // (target strings in an event may well say "schema").
        let first = events.is_empty() && header.is_none();
        let v: Option<serde_json::Value> = first
            .then(|| serde_json::from_str(&line).ok())
            .flatten()
            .filter(|v: &serde_json::Value| v.get("ev").is_none() && v.get("schema").is_some());
        if let Some(v) = v {
            let schema = v["schema"].as_str().unwrap_or_default();
            if schema != SCHEMA {
                bail!(
                    "{name}: recording schema {:?} is not supported (this observer reads {SCHEMA})",
                    report::escape(schema)
                );
            }
            header = Some(
                serde_json::from_value(v)
                    .with_context(|| format!("{name}:{}: malformed recording header", i + 1))?,
            );
            continue;
        }
        let ev: Event = serde_json::from_str(&line)
            .with_context(|| format!("{name}:{}: not an observer event", i + 1))?;
        events.push(ev);
    }
    Ok((header, events))
}

/// Picture files, opened (so checked) before anything is observed.
#[derive(Default)]
pub struct Pictures {
    perfetto: Option<(PathBuf, File)>,
    dot: Option<(PathBuf, File)>,
    html: Option<(PathBuf, File)>,
}

fn create(p: &Option<PathBuf>, what: &str) -> Result<Option<(PathBuf, File)>> {
    p.as_ref()
        .map(|p| {
            File::create(p)
                .map(|f| (p.clone(), f))
                .with_context(|| format!("cannot write {what} {}", p.display()))
        })
        .transpose()
}

impl Pictures {
    pub fn open(o: &PictureOpts) -> Result<Pictures> {
        Ok(Pictures {
            perfetto: create(&o.perfetto, "trace")?,
            dot: create(&o.dot, "graph")?,
            html: create(&o.html, "page")?,
        })
    }

    /// Writes every requested file.
    pub fn write(&mut self, model: &Model, findings: &[Finding]) -> Result<()> {
        type Writer = fn(&Model, &[Finding], &mut BufWriter<File>) -> std::io::Result<()>;
        let all: [(Option<(PathBuf, File)>, Writer); 3] = [
            (self.perfetto.take(), |m, f, w| {
                report::perfetto::write(m, f, w)
            }),
            (self.dot.take(), |m, f, w| report::dot::write(m, f, w)),
            (self.html.take(), |m, f, w| report::html::write(m, f, w)),
        ];
        for (out, write) in all {
            let Some((path, f)) = out else { continue };
            let mut w = BufWriter::new(f);
            write(model, findings, &mut w)
                .and_then(|_| w.flush())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// `observer replay FILE`.
pub fn replay(a: &ReplayArgs) -> Result<u8> {
    let mut pictures = Pictures::open(&a.pictures)?;
    let report_out = create(&a.report, "report")?;
    let (header, events) = read(&a.file)?;
    // The live run's limits, from the header, unless overridden.
    let mut limits = match &header {
        Some(h) => h.limits(),
        None => Limits::new(5_000_000_000), // run's default --long-wait
    };
    if let Some(s) = a.long_wait {
        limits.long_wait_ns = crate::cli::secs_to_ns(s, "--long-wait")?;
    }
    if let Some(s) = a.stuck {
        limits.stuck_ns = crate::cli::secs_to_ns(s, "--stuck")?;
    }
    if let Some(c) = a.churn {
        limits.churn_per_s = c;
    }
    let check_ns = header
        .as_ref()
        .map_or(crate::replay::REPLAY_CHECK_NS, Header::check_ns);
    let long_wait_ns = limits.long_wait_ns;
    let loop_blocked_ns = limits.loop_blocked_ns;
    let (m, findings) = judge(&events, limits, check_ns);
    if a.format == "json" {
        let r = report::json::build(&m, "replay", &[], &findings);
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        print!("{}", report::findings::all(&findings));
        println!();
        print!("{}", report::text::summary(&m, long_wait_ns));
        let mut loops = String::new();
        report::asyncio::summary(&mut loops, &m, loop_blocked_ns);
        print!("{loops}");
    }
    if let Some((path, f)) = report_out {
        let mut w = BufWriter::new(f);
        serde_json::to_writer_pretty(&mut w, &report::json::build(&m, "replay", &[], &findings))
            .map_err(anyhow::Error::from)
            .and_then(|_| Ok(w.flush()?))
            .with_context(|| format!("cannot write report {}", path.display()))?;
    }
    pictures.write(&m, &findings)?;
    Ok(crate::exit::of_findings(&findings))
}

/// Runs the model and the detectors over recorded events.
pub fn judge(events: &[Event], limits: Limits, check_ns: u64) -> (Model, Vec<Finding>) {
    let engine = crate::replay::replay(events, limits, check_ns);
    (engine.model, engine.detectors.findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_old_recordings_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        let mut f = File::create(&p).unwrap();
        let mut l = Limits::new(2_000_000_000);
        l.stuck_ns = 3_000_000_000;
        l.churn_per_s = 50;
        let h = Header::new(&l, 40);
        h.write(&mut f).unwrap();
        writeln!(f, "{{\"ev\":\"scan\",\"ts_ns\":5}}").unwrap();
        drop(f);
        let (got, evs) = read(&p).unwrap();
        assert_eq!(got, Some(h));
        assert_eq!(evs, vec![Event::Scan { ts_ns: 5 }]);
        std::fs::write(&p, "{\"ev\":\"scan\",\"ts_ns\":5}\n").unwrap();
        assert_eq!(read(&p).unwrap().0, None);
        let start =
            r#"{"ev":"start","ts_ns":1,"tgid":2,"cmdline":["\"schema\""],"attached":false}"#;
        std::fs::write(&p, format!("{start}\n")).unwrap();
        let (h, evs) = read(&p).unwrap();
        assert!(h.is_none() && evs.len() == 1, "{evs:?}");
        std::fs::write(&p, "{\"schema\":\"observer.recording/9\"}\n").unwrap();
        let e = format!("{:#}", read(&p).unwrap_err());
        assert!(e.contains("not supported"), "{e}");
    }

    #[test]
    fn a_failed_confirmation_reports_nothing_at_that_scan() {
        let mut evs = crate::report::pictures_tests::abba_events("beta");
        let scan = evs
            .iter()
            .position(|e| matches!(e, Event::Scan { .. }))
            .unwrap();
        let Event::Scan { ts_ns } = evs[scan] else {
            unreachable!()
        };
        let w = crate::report::pictures_tests::mutex_wait(0x5000, 11, 0);
        // The live session re-read beta's lock word while confirming: changed.
        evs.insert(
            scan + 1,
            Event::WaitWords {
                ts_ns,
                tgid: 10,
                tid: 12,
                start_ns: 1_041_000_000,
                words_addr: w.words_addr,
                words: w.words,
            },
        );
        evs.push(Event::Scan {
            ts_ns: ts_ns + 25_000_000,
        });
        let (_, f) = judge(&evs, Limits::new(5_000_000_000), 25_000_000);
        assert_eq!(f[0].kind, crate::detect::FindingKind::Deadlock);
        assert_eq!(f[0].detected_ns, ts_ns + 25_000_000);
    }

    #[test]
    fn replayed_abba_reports_the_deadlock() {
        let evs = crate::report::pictures_tests::abba_events("beta");
        let (_, f) = judge(&evs, Limits::new(5_000_000_000), 25_000_000);
        assert_eq!(f[0].kind, crate::detect::FindingKind::Deadlock);
    }
}
