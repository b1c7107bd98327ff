//! The one path every deploy takes, from the hook or the CLI: resolve the
//! scope, validate what will be deployed, plan, then roll out.

use anyhow::Result;
use git2::Repository;

use crate::journal::Action;
use crate::plan;
use crate::preview;
use crate::report::Ui;
use crate::revision::{ConfigDir, Revision};
use crate::rollout::{self, RunOptions};
use crate::scope::{Scope, Target};
use crate::validate;

pub struct DeployOptions {
    pub action: Action,
    /// Show what would change and the commands; touch nothing.
    pub dry_run: bool,
    /// What the pusher passed with `-o`, for the journal.
    pub push_options: Vec<String>,
    /// Directories to check besides those deployed (a push's changes).
    pub also_check: Vec<ConfigDir>,
    /// `false`: check, deploy nothing (`-o validate-only`).
    pub deploy: bool,
}

/// Resolves `scope` against the revision's own inventory, then deploys.
pub fn deploy(
    repo: &Repository,
    rev: &Revision<'_>,
    scope: &Scope,
    opts: DeployOptions,
    ui: &Ui,
) -> Result<()> {
    // Resolving first means an unknown group or host touches nothing. A
    // validate-only push needs no scope, unless it names one (then the name
    // must still be right).
    if !opts.deploy && *scope == Scope::Default {
        return deploy_to(repo, rev, &[], "", opts, ui);
    }
    let targets = scope.resolve(&rev.config)?;
    let described = match scope {
        Scope::Default => format!("group {} (default)", targets[0].group),
        other => other.to_string(),
    };
    deploy_to(repo, rev, &targets, &described, opts, ui)
}

/// Validates what `targets` will get, then rolls it out (or, for a dry
/// run, shows what would change where and the commands).
pub fn deploy_to(
    repo: &Repository,
    rev: &Revision<'_>,
    targets: &[Target],
    scope: &str,
    opts: DeployOptions,
    ui: &Ui,
) -> Result<()> {
    let mut deployed = Vec::new();
    if opts.deploy {
        for t in targets {
            let group = rev
                .config
                .group(&t.group)
                .expect("targets come from this config");
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
    let plan = plan::build(rev, &worktree, targets)?;
    if opts.dry_run {
        ui.line(format_args!(
            "dry run: would {} {} to {scope}",
            opts.action,
            &plan.rev[..10]
        ));
        preview::show(repo, rev, targets, &mut std::io::stdout().lock())?;
        plan.show(ui);
        return Ok(());
    }
    let run = RunOptions {
        action: opts.action,
        who: rev.config.who(),
        push_options: opts.push_options,
        scope: scope.to_string(),
    };
    rollout::run(repo, rev, &worktree, &plan, &run, ui)
}
