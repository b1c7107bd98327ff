//! What the user is told, in one place. Status goes to stderr, line by line
//! and flushed, because in a hook each line reaches the pusher as it is
//! written (`remote: ...`); data (`status`, `log`, `--json`) goes to stdout.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many lines of a failing command's output the pusher sees.
pub(crate) const OUTPUT_LINES: usize = 40;

pub(crate) struct Ui {
    last_write: Mutex<Instant>,
}

impl Default for Ui {
    fn default() -> Self {
        Ui {
            last_write: Mutex::new(Instant::now()),
        }
    }
}

impl Ui {
    pub(crate) fn line(&self, text: impl std::fmt::Display) {
        let mut last = self.last_write.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        // A closed stderr (the pusher hung up) must not stop a deploy halfway.
        let _ = writeln!(err, "{text}");
        let _ = err.flush();
        *last = Instant::now();
    }

    /// A command's output, indented and capped, so a chatty checker cannot
    /// bury the verdict.
    pub(crate) fn output(&self, text: &str) {
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        for line in lines.iter().take(OUTPUT_LINES) {
            self.line(format_args!("      | {line}"));
        }
        if lines.len() > OUTPUT_LINES {
            // process.rs keeps only the start and end of a long output and
            // marks the cut: say how much was cut even when it is not shown.
            let cut = lines[OUTPUT_LINES..]
                .iter()
                .find(|l| l.starts_with("... ") && l.ends_with(" bytes omitted ..."))
                .map(|l| format!(", {}", l.trim_matches(|c| c == '.' || c == ' ')))
                .unwrap_or_default();
            self.line(format_args!(
                "      | ... {} more lines{cut}",
                lines.len() - OUTPUT_LINES
            ));
        }
    }

    pub(crate) fn quiet_for(&self) -> Duration {
        self.last_write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }
}

pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}
