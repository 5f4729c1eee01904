//! Formatting and PASS/MISS verdicts.

use super::*;

/// A duration in ns, in the unit that reads best.
pub fn ns(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 1e9 {
        format!("{:.2} s", v / 1e9)
    } else if v.abs() >= 1e6 {
        format!("{:.1} ms", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.1} us", v / 1e3)
    } else if v.abs() >= 1e3 {
        format!("{:.2} us", v / 1e3)
    } else {
        format!("{v:.1} ns")
    }
}

/// A duration in ms, in the unit that reads best.
pub fn ms(v: f64) -> String {
    ns(v * 1e6)
}

/// `show(v)` with its sign: "+1.2 us", "-3.0 ns".
pub fn signed(show: fn(f64) -> String, v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", show(v))
    } else {
        show(v)
    }
}

pub fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "-".into()
    }
}

/// One target, checked: printed as a PASS/MISS line.
pub struct Check {
    pub what: String,
    /// The measured value, as text.
    pub value: String,
    /// e.g. "<= 150 ms".
    pub target: String,
    /// None: nothing was measured.
    pub pass: Option<bool>,
    /// Appended to the line ("(unreliable)", a bootstrap interval).
    pub note: String,
}

impl Check {
    /// `value <= limit`; `show` formats both.
    pub fn at_most(
        what: impl Into<String>,
        value: f64,
        limit: f64,
        show: fn(f64) -> String,
    ) -> Check {
        Check::compare(what.into(), value, "<=", limit, show)
    }

    /// `value >= limit`; `show` formats both.
    pub fn at_least(
        what: impl Into<String>,
        value: f64,
        limit: f64,
        show: fn(f64) -> String,
    ) -> Check {
        Check::compare(what.into(), value, ">=", limit, show)
    }

    fn compare(what: String, value: f64, op: &str, limit: f64, show: fn(f64) -> String) -> Check {
        let ok = if op == "<=" {
            value <= limit
        } else {
            value >= limit
        };
        Check {
            what,
            value: show(value),
            target: format!("{op} {}", show(limit)),
            pass: (!value.is_nan()).then_some(ok),
            note: String::new(),
        }
    }

    /// `ok` of `n` runs were right; all of them must be.
    pub fn every(what: impl Into<String>, ok: usize, n: usize) -> Check {
        Check {
            what: what.into(),
            value: format!("{ok}/{n}"),
            target: "every run".into(),
            pass: (n > 0).then_some(ok == n),
            note: String::new(),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Check {
        self.note = note.into();
        self
    }

    pub fn line(&self) -> String {
        let verdict = match self.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "no data",
        };
        let note = if self.note.is_empty() {
            String::new()
        } else {
            format!(" {}", self.note)
        };
        format!(
            "  {:<58} {:>10}  target {:<11} {verdict}{note}",
            self.what, self.value, self.target
        )
    }
}

/// The checks of one run, printed where measured and again as a summary.
#[derive(Default)]
pub struct Verdicts(Vec<Check>);

impl Verdicts {
    /// Records `c`; its line, for the table it belongs to.
    pub fn add(&mut self, c: Check) -> String {
        let l = c.line();
        self.0.push(c);
        l
    }

    pub fn summary(&self) -> String {
        let mut s = String::from("Summary\n");
        for c in &self.0 {
            writeln!(s, "{}", c.line()).unwrap();
        }
        let misses = self.0.iter().filter(|c| c.pass != Some(true)).count();
        if misses > 0 {
            writeln!(
                s,
                "  {misses} of {} target(s) MISSED or not measured (reported, not a failure: see BENCHMARKS.md)",
                self.0.len()
            )
            .unwrap();
        } else {
            writeln!(s, "  all {} targets met", self.0.len()).unwrap();
        }
        s
    }
}

/// A table of wall-clock times per command: runs, median, min, max, and
/// with `added`, the median minus that of the first row (the baseline).
pub fn ms_table(first: &str, width: usize, rows: &[(&str, &[f64])], added: bool) -> String {
    let mut s = format!(
        "  {first:<width$} {:>5} {:>9} {:>9} {:>9}{}\n",
        "runs",
        "median",
        "min",
        "max",
        if added { "     added" } else { "" }
    );
    let base = rows.first().map_or(f64::NAN, |r| median(r.1));
    for (i, (label, v)) in rows.iter().enumerate() {
        let plus = match (added, i) {
            (false, _) => String::new(),
            (true, 0) => format!(" {:>9}", "-"),
            (true, _) => format!(" {:>9}", ms(median(v) - base)),
        };
        writeln!(
            s,
            "  {label:<width$} {:>5} {:>9} {:>9} {:>9}{plus}",
            v.len(),
            ms(median(v)),
            ms(min(v)),
            ms(max(v)),
        )
        .unwrap();
    }
    s
}

/// The end of a suite: the verdicts' summary, then whether anything was
/// left behind (an error if `strict`, else a warning).
pub fn finish(v: &Verdicts, progs: &Programs, observer: &Path, strict: bool) -> Result<()> {
    println!("{}", v.summary());
    match progs.leftovers(observer, Duration::from_secs(60)) {
        Ok(s) => println!("{s}"),
        Err(e) if strict => bail!("the bench left something behind: {e}"),
        Err(e) => println!("WARNING: the bench left something behind: {e}"),
    }
    Ok(())
}

/// "  TAG (N run(s)): problem" per distinct problem.
pub fn problems(tag: &str, p: &[String]) -> String {
    let mut seen: std::collections::BTreeMap<&str, usize> = Default::default();
    for x in p {
        *seen.entry(x.as_str()).or_default() += 1;
    }
    seen.iter()
        .map(|(p, n)| format!("  {tag} ({n} run(s)): {p}\n"))
        .collect()
}
