//! Runs each config directory's syntax checker, in parallel, and reports
//! each result to the pusher as soon as it is known.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::config::placeholders::Values;
use crate::gate::sandbox::{self, Runner};
use crate::source::revision::ConfigDir;
use crate::source::worktree::Worktree;
use crate::ui::{Ui, seconds};

pub(crate) struct CheckResult {
    pub(crate) dir: ConfigDir,
    pub(crate) duration: Duration,
    pub(crate) failures: Vec<CheckFailure>,
    /// What passing checkers printed (warnings such as systemd-analyze's
    /// unknown keys): the pusher sees it, the verdict stays "ok".
    pub(crate) warnings: Vec<String>,
}

pub(crate) struct CheckFailure {
    /// The repository-relative file the failure concerns, when known.
    pub(crate) file: Option<String>,
    pub(crate) error: String,
    pub(crate) output: String,
}

/// Checks `dirs` (already written into `worktree`) and returns what failed,
/// one line per failure (`sshd 9.2 (files/sshd/9.2): error`): empty when all
/// passed. `rev` is what `{rev}` stands for; `git_dir` holds the server's
/// policy (whether checks run in the sandbox).
pub(crate) fn check_dirs(
    config: &Config,
    dirs: &[ConfigDir],
    worktree: &Worktree,
    rev: &str,
    git_dir: Option<&Path>,
    ui: &Ui,
) -> Result<Vec<String>> {
    if dirs.is_empty() {
        ui.line("no config directory changed: nothing to check");
        return Ok(Vec::new());
    }
    // A sandbox that cannot start is a refusal (exit 1) with a hint; it is
    // reported once, where the error ends up: found when setting it up, or
    // when a check fails (`ensure_works`, before that failure is shown).
    let runner = Runner::new(git_dir, worktree)?;
    let runner = &runner;
    let started = Instant::now();
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(dirs.len());
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    let mut failed = 0;
    let mut failures = Vec::new();
    std::thread::scope(|s| -> Result<()> {
        for _ in 0..workers {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(dir) = dirs.get(i) else { break };
                    let result = check_one(config, dir, worktree, rev, runner);
                    if tx.send(result).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        for result in rx {
            let result = result?;
            if !result.failures.is_empty() {
                runner.ensure_works()?;
                failed += 1;
            }
            for f in &result.failures {
                failures.push(format!(
                    "{} ({}): {}{}",
                    result.dir.label(),
                    result.dir.path,
                    f.file
                        .as_deref()
                        .map(|f| format!("{f}: "))
                        .unwrap_or_default(),
                    f.error
                ));
            }
            show(ui, &result, runner.sandboxed());
        }
        Ok(())
    })?;
    let verdict = if failed == 0 {
        "all ok".to_string()
    } else {
        format!("{failed} FAILED")
    };
    ui.line(format_args!(
        "checked {} director{} in {}: {verdict}",
        dirs.len(),
        if dirs.len() == 1 { "y" } else { "ies" },
        seconds(started.elapsed())
    ));
    Ok(failures)
}

fn show(ui: &Ui, r: &CheckResult, sandboxed: bool) {
    let verdict = if r.failures.is_empty() {
        "ok"
    } else {
        "FAILED"
    };
    ui.line(format_args!(
        "  {verdict:<6} {}  ({})  {}{}",
        r.dir.label(),
        r.dir.path,
        seconds(r.duration),
        if sandboxed { "" } else { "  unsandboxed" }
    ));
    for f in &r.failures {
        match &f.file {
            Some(file) => ui.line(format_args!("      {file}: {}", f.error)),
            None => ui.line(format_args!("      {}", f.error)),
        }
        ui.output(&f.output);
    }
    for w in &r.warnings {
        ui.output(w);
    }
}

fn check_one(
    config: &Config,
    dir: &ConfigDir,
    worktree: &Worktree,
    rev: &str,
    runner: &Runner,
) -> Result<CheckResult> {
    let service = config.service_named(&dir.service)?;
    let started = Instant::now();
    let abs_dir = worktree.path_of(&dir.path);
    let per_file = service.check.iter().any(|t| t.uses("file"));
    let files = if per_file {
        files_under(&abs_dir)?
    } else {
        vec![String::new()]
    };
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    let vars: BTreeMap<String, String> = dir.vars.iter().cloned().collect();
    for file in files {
        let values = Values {
            dir: Some(abs_dir.display().to_string()),
            file: Some(file.clone()),
            service: Some(&service.name),
            rev: Some(rev),
            worktree: Some(worktree.root().display().to_string()),
            vars: Some(&vars),
            ..Values::default()
        };
        let lookup = |name: &str| values.get(name);
        let argv: Vec<String> = service
            .check
            .iter()
            .map(|t| t.render(&lookup))
            .collect::<Result<_>>()
            .with_context(|| format!("services.{}.check", service.name))?;
        let target = service.target.as_deref();
        let shown =
            |text: &str| sandbox::target_to_repo(&worktree.relativize(text), target, &dir.path);
        match runner.run(&argv, &abs_dir, target, service.timeout) {
            Ok(done) if !done.output.trim().is_empty() && service.strict => {
                failures.push(CheckFailure {
                    file: concerned_file(&argv, &abs_dir).map(|f| worktree.relativize(&f)),
                    error: format!(
                        "`{}` exited 0 but printed output, which fails a strict service \
                         (strict = true)",
                        argv[0]
                    ),
                    output: shown(&done.output),
                });
            }
            Ok(done) if !done.output.trim().is_empty() => {
                warnings.push(shown(&done.output));
            }
            Ok(_) => {}
            Err(failure) => failures.push(CheckFailure {
                file: concerned_file(&argv, &abs_dir).map(|f| worktree.relativize(&f)),
                error: worktree.relativize(&failure.to_string()),
                output: shown(failure.output()),
            }),
        }
    }
    Ok(CheckResult {
        dir: dir.clone(),
        duration: started.elapsed(),
        failures,
        warnings,
    })
}

/// The first argument naming a file inside the directory: for `sshd -t -f
/// {dir}/sshd_config` or a `{file}` check, the file the error is about.
fn concerned_file(argv: &[String], dir: &Path) -> Option<String> {
    argv.iter()
        .skip(1)
        .find(|a| Path::new(a).starts_with(dir) && Path::new(a).is_file())
        .cloned()
}

/// Every file below `dir`, sorted, for checks that take one `{file}`.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?
        {
            let entry = entry.with_context(|| format!("cannot read {}", d.display()))?;
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path().display().to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}
