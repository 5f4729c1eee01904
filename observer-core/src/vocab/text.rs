//! Words every writer of text uses: escaping target data, durations.

use std::fmt::Write as _;

/// Makes target-controlled text (thread names, paths, command lines) safe
/// for a terminal: control characters, backslashes and invalid UTF-8
/// replacement marks are shown as escapes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            '\u{fffd}' => out.push_str("\\ufffd"),
            c => out.push(c),
        }
    }
    out
}

/// Human duration: 812ns, 4.2us, 31.0ms, 2.503s, 3m04s.
pub fn dur(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        1_000_000_000..60_000_000_000 => format!("{:.3}s", ns as f64 / 1e9),
        _ => format!("{}m{:02}s", ns / 60_000_000_000, (ns / 1_000_000_000) % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_terminal_controls() {
        assert_eq!(escape("a\x1b[31mb\n"), "a\\x1b[31mb\\x0a");
        assert_eq!(escape("plain-name"), "plain-name");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
    }

    #[test]
    fn durations() {
        assert_eq!(dur(812), "812ns");
        assert_eq!(dur(4_200), "4.2us");
        assert_eq!(dur(31_000_000), "31.0ms");
        assert_eq!(dur(2_503_000_000), "2.503s");
        assert_eq!(dur(184_000_000_000), "3m04s");
    }
}
