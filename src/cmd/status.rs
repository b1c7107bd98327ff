use crate::record::status::{self, Report};
use crate::source::repo::{self, short_str};
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;
use std::io::Write;

use super::RepoArg;
use super::remote::{self, RemoteArg};

/// Per host and service: revision, version, when, by whom, result
#[derive(Args)]
pub(crate) struct StatusArgs {
    /// One JSON object per host and service, as an array
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    repo: RepoArg,
    #[command(flatten)]
    remote: RemoteArg,
}

/// The journal's runs, newest first
#[derive(Args)]
pub(crate) struct LogArgs {
    /// At most this many runs
    #[arg(short = 'n', value_name = "N")]
    limit: Option<usize>,
    /// One JSON object per run, as an array
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    repo: RepoArg,
    #[command(flatten)]
    remote: RemoteArg,
}

/// Where the journal is: the bare repository itself, or (in a clone) the
/// server's, fetched into a temporary directory kept until the answer is
/// printed. `None`: a clone whose server has published no history yet.
pub(super) fn journal_source(
    repo: &git2::Repository,
    remote: &RemoteArg,
    ui: &Ui,
) -> Result<Option<(std::path::PathBuf, Option<remote::Fetched>)>> {
    if !remote::is_clone(repo) {
        return Ok(Some((repo.path().to_path_buf(), None)));
    }
    let name = remote.name(repo)?;
    match remote::fetch_journal(repo, &name)? {
        Some(f) => Ok(Some((f.git_dir().to_path_buf(), Some(f)))),
        None => {
            ui.line(format_args!(
                "`{name}` has no deploy history (no {}): nothing deployed through it yet",
                crate::record::gitrefs::JOURNAL_REF
            ));
            Ok(None)
        }
    }
}

pub(crate) fn status(args: StatusArgs, ui: &Ui) -> Result<()> {
    let repo = repo::open(args.repo.repo.as_deref())?;
    let Some((git_dir, _fetched)) = journal_source(&repo, &args.remote, ui)? else {
        if args.json {
            println!("[]");
        }
        return Ok(());
    };
    let report = status::status(&git_dir)?;
    warn_unreadable(ui, &report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.items)?);
        return Ok(());
    }
    if report.items.is_empty() {
        ui.line("nothing deployed yet");
        return Ok(());
    }
    let mut rows = vec![
        [
            "HOST", "SERVICE", "VERSION", "GROUP", "REV", "WHEN", "WHO", "ACTION", "RESULT",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for s in &report.items {
        let mut result = match s.result.as_str() {
            "armed-revert" => "left to its armed revert".to_string(),
            other => other.to_string(),
        };
        if let Some(left) = &s.left {
            result = format!("{result} (left {})", short_str(left));
        }
        if let Some(target) = &s.target {
            result = format!("{result} (to {})", short_str(target));
        }
        if s.break_glass {
            result = format!("{result} (break-glass)");
        }
        rows.push(vec![
            s.host.clone(),
            s.service.clone(),
            s.version.clone(),
            s.group.clone(),
            short_str(&s.rev),
            s.when.clone(),
            s.who.clone(),
            s.action.to_string(),
            result,
        ]);
    }
    print_table(&rows);
    Ok(())
}

pub(crate) fn log(args: LogArgs, ui: &Ui) -> Result<()> {
    let repo = repo::open(args.repo.repo.as_deref())?;
    let Some((git_dir, _fetched)) = journal_source(&repo, &args.remote, ui)? else {
        if args.json {
            println!("[]");
        }
        return Ok(());
    };
    let report = status::log(&git_dir)?;
    warn_unreadable(ui, &report);
    // Runs are read from the journal's end as they are printed, so neither
    // time nor memory grows with the history not shown.
    let runs = report.items.take(args.limit.unwrap_or(usize::MAX));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match print_log(runs, args.json, &mut out).and_then(|()| Ok(out.flush()?)) {
        // `rollgate log | head` stops reading: that is not an error.
        Err(e) if broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    let kind = e
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind)
        .or_else(|| e.downcast_ref::<serde_json::Error>()?.io_error_kind());
    kind == Some(std::io::ErrorKind::BrokenPipe)
}

fn print_log(
    runs: impl Iterator<Item = Result<status::RunSummary>>,
    json: bool,
    out: &mut impl Write,
) -> Result<()> {
    if json {
        out.write_all(b"[")?;
        for (i, run) in runs.enumerate() {
            out.write_all(if i == 0 { b"\n" } else { b",\n" })?;
            serde_json::to_writer_pretty(&mut *out, &run?)?;
        }
        out.write_all(b"\n]\n")?;
        return Ok(());
    }
    for run in runs {
        let run = run?;
        let ok = run
            .steps
            .iter()
            .filter(|s| s.result == crate::record::journal::Outcome::Ok)
            .count();
        let failed = run.steps.len() - ok;
        let options = if run.options.is_empty() {
            String::new()
        } else {
            format!("  -o {}", run.options.join(" -o "))
        };
        writeln!(
            out,
            "{}  {}  {} {}  by {}  {}  ({ok} ok, {failed} failed){options}",
            run.time,
            run.run,
            run.action,
            short_str(&run.rev),
            run.who,
            run.result,
        )?;
        if let Some(bg) = &run.break_glass {
            writeln!(
                out,
                "    BREAK-GLASS: {:?}; failed checks: {}",
                bg.reason,
                if bg.failed.is_empty() {
                    "none".to_string()
                } else {
                    bg.failed.join("; ")
                }
            )?;
        }
        for s in &run.steps {
            writeln!(
                out,
                "    {} {} {} {} {}{} {}{}",
                s.action,
                s.host.as_deref().unwrap_or("-"),
                s.service.as_deref().unwrap_or("-"),
                s.version.as_deref().unwrap_or("-"),
                short_str(&s.rev),
                s.from
                    .as_deref()
                    .filter(|f| *f != s.rev)
                    .map(|f| format!(" (was {})", short_str(f)))
                    .unwrap_or_default(),
                s.result,
                s.error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            )?;
        }
    }
    Ok(())
}

fn warn_unreadable<T>(ui: &Ui, report: &Report<T>) {
    for (file, line) in &report.unreadable {
        ui.line(format_args!(
            "warning: journal line {line} is unreadable (rollgate/{file}; a write cut short?); skipped"
        ));
    }
    if report.unreadable_more > 0 {
        ui.line(format_args!(
            "warning: {} more journal lines are unreadable; skipped",
            report.unreadable_more
        ));
    }
}

fn print_table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}
