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

/// Whether `ROLLGATE_LOG=debug` asked for a trace of every command run.
/// The first call also starts the trace's clock (see [`debug`]).
pub(crate) fn debug_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        trace_clock();
        std::env::var("ROLLGATE_LOG").is_ok_and(|v| v == "debug")
    })
}

fn trace_clock() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// A trace line for `ROLLGATE_LOG=debug`, on stderr like everything else
/// (in a hook the pusher sees it too, which is the point when debugging),
/// stamped with the time since rollgate started: where a slow push spends
/// its time.
pub(crate) fn debug(text: impl std::fmt::Display) {
    if debug_enabled() {
        let at = trace_clock().elapsed().as_secs_f64() * 1000.0;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "debug: {at:7.1} ms  {text}");
        let _ = err.flush();
    }
}

pub(crate) fn seconds(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

/// How many names an error or summary lists before "and N more".
pub(crate) const LIST_CAP: usize = 20;

/// `a, b, c`, at most `LIST_CAP` names, then how many more: a 1,000-host
/// line helps nobody.
pub(crate) fn capped<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    let mut shown: Vec<String> = Vec::new();
    let mut more = 0;
    for name in names {
        if shown.len() < LIST_CAP {
            shown.push(name.as_ref().to_string());
        } else {
            more += 1;
        }
    }
    let mut text = shown.join(", ");
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lists_are_capped() {
        let hosts: Vec<String> = (1..=25).map(|i| format!("h{i}")).collect();
        let text = capped(hosts.iter().map(String::as_str));
        assert!(text.starts_with("h1, h2, "), "{text}");
        assert!(text.ends_with("h20 and 5 more"), "{text}");
        assert_eq!(capped(["a", "b"]), "a, b");
    }
}
