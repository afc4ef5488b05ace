//! Results on standard output: one row a line, JSON or text, and a reader
//! that has gone (`| head -1`) ends them quietly.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether standard error speaks JSON (`--log-format json`).
static JSON: AtomicBool = AtomicBool::new(false);

/// Makes every line on standard error JSON (or not).
pub(super) fn json_lines(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

/// One line on standard error: as it is, or (with `--log-format json`) as
/// a JSON object shaped like the log's: `timestamp`, `level`,
/// `fields.message`, `target`. A line that warns is `WARN`.
pub fn say(level: &str, msg: &str) {
    if JSON.load(Ordering::Relaxed) {
        let level = match level {
            "INFO" if msg.contains("WARNING") || msg.starts_with("warning") => "WARN",
            l => l,
        };
        let now = mxwatch::clock::Clock::now(&mxwatch::clock::SystemClock);
        let line = serde_json::json!({
            "timestamp": mxwatch::report::time(now),
            "level": level,
            "fields": {"message": msg},
            "target": "mxwatch",
        });
        eprintln!("{line}");
    } else {
        eprintln!("{msg}");
    }
}

/// Prints rows, one a line: JSON with `--json`, text otherwise.
pub(super) fn print_rows<T>(
    rows: &[T],
    json: bool,
    as_json: impl Fn(&T) -> serde_json::Value,
    as_text: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    print_lines(rows.iter().map(|r| {
        if json {
            as_json(r).to_string()
        } else {
            as_text(r)
        }
    }))
}

/// An empty listing says so, on standard error (standard output stays
/// empty for a script reading it); with `--json` it says nothing at all.
pub(super) fn say_if_none(empty: bool, json: bool, what: impl FnOnce() -> String) {
    if empty && !json {
        say("INFO", &what());
    }
}

pub(super) fn print_lines(lines: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let mut out = Output::new();
    for l in lines {
        out.line(&l)?;
    }
    Ok(())
}

/// Where results go: standard output, where a reader that has gone (`|
/// head -1`) ends the output quietly: nothing more is written, nothing
/// panics. Diagnostics go to standard error.
pub(super) struct Output {
    out: std::io::StdoutLock<'static>,
    closed: bool,
}

impl Output {
    pub(super) fn new() -> Self {
        Output {
            out: std::io::stdout().lock(),
            closed: false,
        }
    }

    /// One line (a newline is added).
    pub(super) fn line(&mut self, l: &str) -> anyhow::Result<()> {
        self.text(l)?;
        self.text("\n")
    }

    /// Text as it is.
    pub(super) fn text(&mut self, t: &str) -> anyhow::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.out.write_all(t.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => Ok(r?),
        }
    }
}
