//! `observer replay`, and the picture files a session writes. The format
//! and the judging are observer-core's `recording`.

use std::{
    collections::HashSet,
    fs::File,
    io::{BufWriter, Write},
    path::PathBuf,
};

use anyhow::{Context, Result};

pub use observer_core::recording::*;

use crate::{
    cli::{PictureOpts, ReplayArgs},
    detect::{Finding, Limits},
    event::Event,
    model::Model,
    replay::Namer,
    report,
    symbol::{MapEntry, Symbolizer},
};

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

    /// Writes every requested file (again: each is emptied first, so the
    /// hang watchdog's early write is replaced by the last).
    pub fn write(&mut self, model: &Model, findings: &[Finding]) -> Result<()> {
        type Writer = fn(&Model, &[Finding], &mut BufWriter<&File>) -> std::io::Result<()>;
        let all: [(&Option<(PathBuf, File)>, Writer); 3] = [
            (&self.perfetto, |m, f, w| report::perfetto::write(m, f, w)),
            (&self.dot, |m, f, w| report::dot::write(m, f, w)),
            (&self.html, |m, f, w| report::html::write(m, f, w)),
        ];
        for (out, write) in all {
            let Some((path, f)) = out else { continue };
            rewind(f)
                .and_then(|_| {
                    let mut w = BufWriter::new(f);
                    write(model, findings, &mut w)?;
                    w.flush()
                })
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
}

/// Empties a file opened for writing and goes back to its start (a pipe
/// or a terminal, `--report /dev/stdout`, is left as it is).
pub fn rewind(mut f: &File) -> std::io::Result<()> {
    use std::io::Seek;
    if !f.metadata()?.is_file() {
        return Ok(());
    }
    f.set_len(0)?;
    f.seek(std::io::SeekFrom::Start(0))?;
    Ok(())
}

/// `observer replay FILE`.
pub fn replay(a: &ReplayArgs) -> Result<u8> {
    let mut pictures = Pictures::open(&a.pictures)?;
    let report_out = create(&a.report, "report")?;
    let Recording {
        header,
        events,
        cut,
    } = read(&a.file)?;
    if let Some(c) = cut {
        // Once, before the report: what is judged is what was complete.
        eprintln!(
            "observer: warning: {}:{}: the last record is cut short ({} bytes dropped: the \
             recorder stopped mid-write); replaying the {} complete records before it",
            a.file.display(),
            c.line,
            c.bytes,
            events.len()
        );
    }
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
        .map_or(observer_core::replay::REPLAY_CHECK_NS, Header::check_ns);
    let long_wait_ns = limits.long_wait_ns;
    let loop_blocked_ns = limits.loop_blocked_ns;
    let (m, findings) = judge(&events, limits, check_ns, &mut RecordedNames::default());
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

/// Names from recorded mappings and the files they name (when still
/// here): the offline symbolizer behind `observer replay`.
#[derive(Default)]
pub struct RecordedNames {
    symbols: Option<Symbolizer>,
    tried: HashSet<(u32, u64)>,
}

impl Namer for RecordedNames {
    fn mappings(&mut self, tgid: u32, maps: &[MapEntry]) {
        self.symbols
            .get_or_insert_with(Symbolizer::offline)
            .add_recorded(tgid, maps.to_vec());
    }

    fn names(&mut self, model: &Model) -> Vec<Event> {
        match &mut self.symbols {
            Some(s) => crate::session::symbol_events(model, s, &mut self.tried),
            None => Vec::new(),
        }
    }
}
