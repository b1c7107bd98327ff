//! The gate every entry point shares: write what is needed into a fresh work
//! tree, run the checks, and hand back the work tree only if all passed.

use anyhow::{Context, Result};
use git2::Repository;

pub(crate) mod check;
pub(crate) mod sandbox;
use crate::error::UserError;
use crate::source::repo::Snapshot;
use crate::source::revision::{ConfigDir, Revision};
use crate::source::worktree::Worktree;
use crate::ui::Ui;

/// Checks `to_check` and writes `also_needed` (what a deploy will copy) into
/// the same work tree. A failed check is a `Failed` error: nothing deploys.
/// `since` qualifies the header, e.g. ` (changed since origin/main)`.
pub(crate) fn gate(
    rev: &Revision<'_>,
    to_check: &[ConfigDir],
    also_needed: &[ConfigDir],
    since: &str,
    ui: &Ui,
) -> Result<Worktree> {
    let (worktree, failed) = gate_failures(rev, to_check, also_needed, since, ui)?;
    if !failed.is_empty() {
        return Err(
            UserError::failed(format!("validation failed at {}", rev.snapshot.describe())).into(),
        );
    }
    Ok(worktree)
}

/// [`gate`], but failed checks are handed back (one line each) with the
/// work tree instead of refusing: for a break-glass deploy, which goes on
/// past them. Anything else that goes wrong (the work tree, the sandbox)
/// is still an error.
pub(crate) fn gate_failures(
    rev: &Revision<'_>,
    to_check: &[ConfigDir],
    also_needed: &[ConfigDir],
    since: &str,
    ui: &Ui,
) -> Result<(Worktree, Vec<String>)> {
    let all = rev.dirs()?.len();
    ui.line(format_args!(
        "rollgate: {}: checking {} of {all} config director{}{since}",
        rev.snapshot.describe(),
        to_check.len(),
        if all == 1 { "y" } else { "ies" },
    ));
    let paths: Vec<String> = to_check
        .iter()
        .chain(also_needed)
        .map(|d| d.path.clone())
        .collect();
    // Shown here, where it happened; the error only sums it up, so the
    // pusher does not read the same reason twice.
    let worktree = Worktree::create(&rev.snapshot, &paths).map_err(|e| {
        ui.line(format_args!("  FAILED {e:#}"));
        anyhow::Error::new(UserError::failed(format!(
            "validation failed at {}",
            rev.snapshot.describe()
        )))
    })?;
    crate::ui::debug(format_args!(
        "work tree written: {} directories",
        paths.len()
    ));
    let rev_id = rev
        .snapshot
        .commit_id()
        .map(|id| id.to_string())
        .unwrap_or_else(|| "WORKTREE".into());
    let git_dir = git_dir(&rev.snapshot);
    let failed = check::check_dirs(
        &rev.config,
        to_check,
        &worktree,
        &rev_id,
        git_dir.as_deref(),
        ui,
    )?;
    Ok((worktree, failed))
}

/// The repository whose server policy governs checks of `snapshot`: the
/// bare repository a push goes to, or a clone's own `.git`.
fn git_dir(snapshot: &Snapshot<'_>) -> Option<std::path::PathBuf> {
    match snapshot {
        Snapshot::Commit { repo, .. } => Some(repo.path().to_path_buf()),
        Snapshot::Workdir { root } => Repository::open(root).ok().map(|r| r.path().to_path_buf()),
    }
}

/// `to_check` plus anything in `more` not already in it, keeping order.
pub(crate) fn union(mut to_check: Vec<ConfigDir>, more: &[ConfigDir]) -> Vec<ConfigDir> {
    for d in more {
        if !to_check.contains(d) {
            to_check.push(d.clone());
        }
    }
    to_check
}

pub(crate) struct ValidateOptions {
    /// `None`: the working tree of a clone.
    pub(crate) rev: Option<String>,
    /// Every directory, not only those changed since the upstream branch.
    pub(crate) all: bool,
}

/// `rollgate validate`: the push's checks, run by an author before pushing.
pub(crate) fn validate(repo: &Repository, opts: &ValidateOptions, ui: &Ui) -> Result<()> {
    let snapshot = match &opts.rev {
        Some(r) => Snapshot::of_commit(repo, crate::source::repo::resolve(repo, r)?)?,
        None => Snapshot::Workdir {
            root: repo
                .workdir()
                .context("a bare repository has no working tree: pass --rev REV")?
                .to_path_buf(),
        },
    };
    let rev = Revision::load(snapshot)?;
    crate::policy::Policy::load(repo)?.check_commands(&rev.config, &rev.snapshot.describe())?;
    // A working tree has no tree ids to compare, so it is checked whole.
    let base = if opts.all { None } else { upstream(repo) };
    let to_check = rev.changed_since(base.as_ref().map(|(_, r)| r))?;
    let since = match &base {
        Some((name, _)) if opts.rev.is_some() => format!(" (changed since {name})"),
        _ => String::new(),
    };
    gate(&rev, &to_check, &[], &since, ui).map(drop)
}

/// The current branch's upstream, which is what a push will be compared to.
fn upstream(repo: &Repository) -> Option<(String, Revision<'_>)> {
    let head = repo.head().ok()?;
    let name = repo.branch_upstream_name(head.name().ok()?).ok()?;
    let name = name.as_str().ok()?.to_string();
    let commit = repo.find_reference(&name).ok()?.peel_to_commit().ok()?;
    let rev = Revision::load(Snapshot::of_commit(repo, commit).ok()?).ok()?;
    Some((name.trim_start_matches("refs/remotes/").to_string(), rev))
}
