//! Recordings (`observer record`, `--record`): the format, and judging one.
//!
//! A recording is JSON lines: a header line with the schema and the live
//! run's limits, then one event per line (`event::Event`). Replay feeds the
//! events to the model and judges where the live run did (its `Scan`
//! events), with the live run's limits, so it reports the same findings.
//! Recordings without a header (older ones) replay with the defaults.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    path::Path,
};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    detect::{Finding, Limits},
    event::Event,
    model::Model,
    replay::Namer,
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

/// A recording as read: its header (None for header-less recordings), its
/// events, and whether its last record was cut short.
#[derive(Debug)]
pub struct Recording {
    pub header: Option<Header>,
    pub events: Vec<Event>,
    pub cut: Option<Cut>,
}

/// The last record of a recording was cut short (the observer was killed
/// while writing it): everything before it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Its line number (1-based).
    pub line: usize,
    /// The bytes of it that were there, and are dropped.
    pub bytes: usize,
}

/// Reads a recording file.
pub fn read(file: &Path) -> Result<Recording> {
    let f = File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    parse_all(BufReader::new(f), &file.display().to_string())
}

/// Parses a recording from `r` (a cut last record is dropped); `name` says
/// where it came from in errors.
#[cfg(test)]
pub fn parse(r: impl BufRead, name: &str) -> Result<(Option<Header>, Vec<Event>)> {
    parse_all(r, name).map(|r| (r.header, r.events))
}

/// Whether only whitespace is left in `r`.
fn only_whitespace_left(r: &mut impl BufRead) -> std::io::Result<bool> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(true);
        }
        if !buf.iter().all(u8::is_ascii_whitespace) {
            return Ok(false);
        }
        let n = buf.len();
        r.consume(n);
    }
}

/// Parses a recording from `r`; `name` says where it came from in errors.
/// A last record that ends early (the writer died mid-line: JSON or UTF-8
/// cut at the end) is reported in `cut`; a record that does not parse
/// anywhere else is an error naming its line.
pub fn parse_all(mut r: impl BufRead, name: &str) -> Result<Recording> {
    let mut header = None;
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = r
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("reading {name}"))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if body.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // What went wrong, and whether it is what a cut looks like (the
        // input ended inside the record).
        let failed: (anyhow::Error, bool) = match std::str::from_utf8(body) {
            Err(e) => (
                anyhow::Error::from(e).context(format!("{name}:{line_no}: not UTF-8")),
                e.error_len().is_none(),
            ),
            Ok(line) => {
                // The header is the first line, an object with a schema and
                // no `ev` (target strings in an event may well say "schema").
                let first = events.is_empty() && header.is_none();
                let v: Option<serde_json::Value> = first
                    .then(|| serde_json::from_str(line).ok())
                    .flatten()
                    .filter(|v: &serde_json::Value| {
                        v.get("ev").is_none() && v.get("schema").is_some()
                    });
                if let Some(v) = v {
                    let schema = v["schema"].as_str().unwrap_or_default();
                    if schema != SCHEMA {
                        bail!(
                            "{name}: recording schema {:?} is not supported (this observer reads {SCHEMA})",
                            report::escape(schema)
                        );
                    }
                    header = Some(serde_json::from_value(v).with_context(|| {
                        format!("{name}:{line_no}: malformed recording header")
                    })?);
                    continue;
                }
                match serde_json::from_str::<Event>(line) {
                    Ok(ev) => {
                        events.push(ev);
                        continue;
                    }
                    Err(e) => {
                        let eof = e.is_eof();
                        (
                            anyhow::Error::from(e)
                                .context(format!("{name}:{line_no}: not an observer event")),
                            eof,
                        )
                    }
                }
            }
        };
        let (err, cut_like) = failed;
        if cut_like && only_whitespace_left(&mut r).with_context(|| format!("reading {name}"))? {
            let cut = Cut {
                line: line_no,
                bytes: body.len(),
            };
            return Ok(Recording {
                header,
                events,
                cut: Some(cut),
            });
        }
        return Err(err);
    }
    Ok(Recording {
        header,
        events,
        cut: None,
    })
}

/// Runs the model and the detectors over recorded events.
pub fn judge(
    events: &[Event],
    limits: Limits,
    check_ns: u64,
    names: &mut dyn Namer,
) -> (Model, Vec<Finding>) {
    let engine = crate::replay::replay(events, limits, check_ns, names);
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
        let Recording {
            header: got,
            events: evs,
            cut,
        } = read(&p).unwrap();
        assert_eq!((got, cut), (Some(h), None));
        assert_eq!(evs, vec![Event::Scan { ts_ns: 5 }]);
        std::fs::write(&p, "{\"ev\":\"scan\",\"ts_ns\":5}\n").unwrap();
        assert_eq!(read(&p).unwrap().header, None);
        let start =
            r#"{"ev":"start","ts_ns":1,"tgid":2,"cmdline":["\"schema\""],"attached":false}"#;
        std::fs::write(&p, format!("{start}\n")).unwrap();
        let r = read(&p).unwrap();
        assert!(r.header.is_none() && r.events.len() == 1, "{r:?}");
        std::fs::write(&p, "{\"schema\":\"observer.recording/9\"}\n").unwrap();
        let e = format!("{:#}", read(&p).unwrap_err());
        assert!(e.contains("not supported"), "{e}");
    }

    fn abba_recording() -> Vec<u8> {
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../observer/tests/data/recordings/abba.jsonl"
        ))
        .unwrap()
    }

    /// A recording cut at any byte reads every complete record before the
    /// cut, and says which line was cut and how much of it was there.
    #[test]
    fn a_recording_cut_anywhere_keeps_its_complete_records() {
        let full = abba_recording();
        let whole = parse_all(&full[..], "abba").unwrap();
        assert!(whole.cut.is_none());
        let n = whole.events.len();
        assert!(n > 20);
        // Line starts: a cut there loses nothing.
        let mut starts = vec![0];
        starts.extend(
            full.iter()
                .enumerate()
                .filter(|(_, b)| **b == b'\n')
                .map(|(i, _)| i + 1),
        );
        for at in 0..=full.len() {
            let r = parse_all(&full[..at], "abba").unwrap_or_else(|e| panic!("cut at {at}: {e:#}"));
            // Complete lines before the cut (a line cut just before its
            // newline is complete); the header, if any, is the first.
            let line = starts.iter().filter(|&&s| s <= at).count();
            let at_line_start = starts.contains(&at);
            let complete = line - 1 + usize::from(starts.contains(&(at + 1)));
            let hdr = usize::from(whole.header.is_some());
            let events = complete.saturating_sub(hdr);
            assert_eq!(r.header.is_some(), hdr == 1 && complete > 0, "cut at {at}");
            assert_eq!(r.events[..], whole.events[..events], "cut at {at}");
            match r.cut {
                None => assert!(
                    at_line_start || at == full.len() || at + 1 == starts[line],
                    "cut at {at}: nothing reported"
                ),
                Some(c) => {
                    assert_eq!(c.line, line, "cut at {at}");
                    assert_eq!(c.bytes, at - starts[line - 1], "cut at {at}");
                }
            }
        }
    }

    /// A record that does not parse in the middle is an error naming its
    /// line; so is a complete last line that is no event (not a cut).
    #[test]
    fn a_corrupt_record_is_an_error_naming_its_line() {
        let full = String::from_utf8(abba_recording()).unwrap();
        let mut lines: Vec<&str> = full.lines().collect();
        let broken = &lines[5][..lines[5].len() / 2];
        lines[5] = broken;
        let text = lines.join("\n") + "\n";
        let e = format!("{:#}", parse_all(text.as_bytes(), "rec").unwrap_err());
        assert!(e.starts_with("rec:6: not an observer event"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = parse_all(
            &b"{\"ev\":\"scan\",\"ts_ns\":1}\n{\"ev\":\"nope\"}\n"[..],
            "r",
        );
        assert!(format!("{:#}", e.unwrap_err()).starts_with("r:2:"));
        // Invalid UTF-8 in the middle (not a multi-byte character cut at the end).
        let e = parse_all(&b"{\"ev\":\"scan\",\"ts_ns\":1}\n\xff\xfe\n{}\n"[..], "r");
        assert!(format!("{:#}", e.unwrap_err()).starts_with("r:2: not UTF-8"));
        // A multi-byte character cut at the very end is a cut.
        let last = b"{\"ev\":\"start\",\"cmdline\":[\"\xc3";
        let text = [&b"{\"ev\":\"scan\",\"ts_ns\":1}\n"[..], last].concat();
        let r = parse_all(&text[..], "r").unwrap();
        assert_eq!(
            r.cut,
            Some(Cut {
                line: 2,
                bytes: last.len()
            })
        );
        assert_eq!(r.events.len(), 1);
        // Trailing blank lines after a cut record: still the last record.
        let r = parse_all(
            &b"{\"ev\":\"scan\",\"ts_ns\":1}\n{\"ev\":\"sc\n\n  \n"[..],
            "r",
        )
        .unwrap();
        assert_eq!(r.cut, Some(Cut { line: 2, bytes: 9 }));
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
        let (_, f) = judge(&evs, Limits::new(5_000_000_000), 25_000_000, &mut ());
        assert_eq!(f[0].kind, crate::detect::FindingKind::Deadlock);
        assert_eq!(f[0].detected_ns, ts_ns + 25_000_000);
    }

    #[test]
    fn replayed_abba_reports_the_deadlock() {
        let evs = crate::report::pictures_tests::abba_events("beta");
        let (_, f) = judge(&evs, Limits::new(5_000_000_000), 25_000_000, &mut ());
        assert_eq!(f[0].kind, crate::detect::FindingKind::Deadlock);
    }
}
