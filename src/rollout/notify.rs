//! Notifications: the policy's `notify` argv runs after every deploy or
//! rollback (a push or the CLI; done, failed or refused), with the run's
//! summary as JSON on its stdin. The argv is the server's (tokens stay on
//! the server); it runs without a shell, under the same supervisor as every
//! command, with a timeout. Whatever happens to it is a warning line for
//! the user: it never changes the run's outcome or exit code.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::process;
use crate::record::journal::{Action, BreakGlass, Outcome};
use crate::record::status;
use crate::ui::Ui;

/// How long a notify command may take before it is killed (with whatever
/// it started).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// What a notify command reads on stdin (README, "Notifications").
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// The journal's run id; `null` when the run was refused before it
    /// started (a failed check, the policy).
    pub(crate) run: Option<String>,
    /// `push` or `cli`.
    pub(crate) via: &'static str,
    pub(crate) who: String,
    pub(crate) action: Action,
    /// The full commit id.
    pub(crate) revision: String,
    /// `group canary (default)`, `group farm`, `host server01`, `all groups`.
    pub(crate) scope: String,
    /// `ok` or `failed`.
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<String>,
    pub(crate) duration_ms: u64,
    /// Per host and service, in journal order (a failed run's restores
    /// follow its deploys).
    pub(crate) hosts: Vec<HostSummary>,
    pub(crate) break_glass: Option<BreakGlass>,
    /// The push options as given.
    pub(crate) options: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct HostSummary {
    pub(crate) group: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) service: Option<String>,
    pub(crate) version: Option<String>,
    pub(crate) action: Action,
    pub(crate) result: Outcome,
    pub(crate) error: Option<String>,
    pub(crate) duration_ms: Option<u64>,
}

/// What a run knew before it ran: the rest comes from its journal records.
pub(crate) struct Started {
    pub(crate) run: Option<String>,
    pub(crate) via: &'static str,
    pub(crate) who: String,
    pub(crate) action: Action,
    pub(crate) revision: String,
    pub(crate) scope: String,
    pub(crate) break_glass: Option<BreakGlass>,
    pub(crate) options: Vec<String>,
    pub(crate) at: Instant,
}

impl Started {
    /// The summary of the run once it ended with `result`: per-host results
    /// from the journal (the run's own records, found by its id among the
    /// newest runs).
    pub(crate) fn summary(self, git_dir: &Path, result: &anyhow::Result<()>) -> Summary {
        let mut summary = Summary {
            run: None,
            via: self.via,
            who: self.who,
            action: self.action,
            revision: self.revision,
            scope: self.scope,
            outcome: if result.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Failed
            },
            error: result.as_ref().err().map(|e| format!("{e:#}")),
            duration_ms: self.at.elapsed().as_millis() as u64,
            hosts: Vec::new(),
            break_glass: self.break_glass,
            options: self.options,
        };
        let Some(id) = self.run else {
            return summary;
        };
        let found = status::log(git_dir).ok().and_then(|report| {
            report
                .items
                .take(8)
                .filter_map(Result::ok)
                .find(|r| r.run == id)
        });
        // A run refused before its start record (the lock, a moved ref)
        // has no records: it is reported without hosts.
        if let Some(run) = found {
            summary.run = Some(run.run);
            // A deploy that takes hosts back is journaled as a rollback.
            summary.action = run.action;
            summary.hosts = run
                .steps
                .into_iter()
                .map(|s| HostSummary {
                    group: s.group,
                    host: s.host,
                    service: s.service,
                    version: s.version,
                    action: s.action,
                    result: s.result,
                    error: s.error,
                    duration_ms: s.duration_ms,
                })
                .collect();
        }
        summary
    }
}

/// Runs `argv` (the policy's `notify`; nothing when empty) with `summary`
/// on stdin, in `git_dir`. A failure is a warning, never an error.
pub(crate) fn send(argv: &[String], git_dir: &Path, summary: &Summary, ui: &Ui) {
    if argv.is_empty() {
        return;
    }
    let json = match serde_json::to_vec_pretty(summary) {
        Ok(mut j) => {
            j.push(b'\n');
            j
        }
        Err(e) => {
            ui.line(format_args!("warning: notify not run: {e}"));
            return;
        }
    };
    if let Err(e) = process::run_with_input(argv, git_dir, TIMEOUT, &json) {
        ui.line(format_args!(
            "warning: notify (the policy's `notify`) failed: {e}; the {} itself is not affected",
            summary.action
        ));
        ui.output(e.output());
    }
}
