//! The one path every deploy takes, from the hook or the CLI: resolve the
//! scope, validate what will be deployed, plan, then roll out.

use anyhow::Result;
use git2::Repository;

use crate::journal::Action;
use crate::plan;
use crate::repo::short;
use crate::report::Ui;
use crate::revision::{ConfigDir, Revision};
use crate::rollout::{self, RunOptions};
use crate::scope::Scope;
use crate::validate;

pub struct DeployOptions {
    pub action: Action,
    pub scope: Scope,
    pub dry_run: bool,
    /// What the pusher passed with `-o`, for the journal.
    pub push_options: Vec<String>,
    /// Directories to check besides those deployed (a push's changes).
    pub also_check: Vec<ConfigDir>,
    /// `false`: check and plan, deploy nothing (`-o validate-only`).
    pub deploy: bool,
}

pub fn deploy(repo: &Repository, rev: &Revision<'_>, opts: DeployOptions, ui: &Ui) -> Result<()> {
    // Resolving first means an unknown group or host touches nothing.
    let targets = opts.scope.resolve(&rev.config)?;
    let mut deployed = Vec::new();
    if opts.deploy {
        for t in &targets {
            let group = rev
                .config
                .group(&t.group)
                .expect("resolved from this config");
            deployed = validate::union(deployed, &rev.group_dirs(group)?);
        }
    }
    let to_check = validate::union(opts.also_check, &deployed);
    ui.line(format_args!(
        "rollgate: {}: checking {} of {} config director{}",
        rev.snapshot.describe(),
        to_check.len(),
        rev.dirs.len(),
        if rev.dirs.len() == 1 { "y" } else { "ies" }
    ));
    let worktree = validate::gate(rev, &to_check, &deployed, ui)?;
    if !opts.deploy {
        ui.line("validate-only: nothing deployed");
        return Ok(());
    }
    let plan = plan::build(rev, &worktree, &targets)?;
    let scope = describe(&opts.scope, &targets);
    if opts.dry_run {
        ui.line(format_args!(
            "dry run: would deploy {} to {scope}",
            short(repo_commit(rev))
        ));
        plan.show(ui);
        return Ok(());
    }
    let run = RunOptions {
        action: opts.action,
        who: rev.config.who(),
        push_options: opts.push_options,
        scope,
    };
    rollout::run(repo, rev, &worktree, &plan, &run, ui)
}

fn repo_commit(rev: &Revision<'_>) -> git2::Oid {
    rev.snapshot.commit_id().unwrap_or(git2::Oid::ZERO_SHA1)
}

fn describe(scope: &Scope, targets: &[crate::scope::Target]) -> String {
    match scope {
        Scope::Default => format!("group {} (the default)", targets[0].group),
        other => other.to_string(),
    }
}
