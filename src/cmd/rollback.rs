use crate::rollout::rollback::{self, RollbackOptions};
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;

use super::RepoArg;
use super::remote::{self, RemoteArg};
use super::scope_args::ScopeArgs;

/// Deploy an earlier revision exactly as it was, without touching the branch
#[derive(Args)]
pub(crate) struct RollbackArgs {
    /// The revision to go back to (commit id, tag, main~3); default: the one
    /// each host had before its current one, from the journal
    #[arg(long, value_name = "REV")]
    to: Option<String>,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Show what would change where and the commands; touch nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    repo: RepoArg,
    #[command(flatten)]
    remote: RemoteArg,
}

pub(crate) fn run(args: RollbackArgs, ui: &Ui) -> Result<()> {
    let repo = crate::source::repo::open(args.repo.repo.as_deref())?;
    if remote::is_clone(&repo) {
        return in_clone(&repo, &args, ui);
    }
    let dry_run = args.dry_run;
    let opts = RollbackOptions {
        to: args.to,
        scope: args.scope.scope(),
        dry_run: args.dry_run,
    };
    let result = rollback::rollback(&repo, opts, ui);
    if !dry_run {
        crate::record::gitrefs::publish_or_warn(repo.path(), ui);
    }
    result
}

/// In a clone: `git push --force REMOTE REV:refs/deploy/GROUP` (going back
/// is not a fast-forward); the server's hook does the rollback.
fn in_clone(repo: &git2::Repository, args: &RollbackArgs, ui: &Ui) -> Result<()> {
    let usage = crate::error::UserError::usage;
    if args.dry_run {
        return Err(
            usage("--dry-run: in a clone, rollback is a git push, which has no dry run")
                .hint("`rollgate plan --rev REV` shows what would change where")
                .into(),
        );
    }
    let Some(to) = &args.to else {
        return Err(usage(
            "in a clone, rollback needs --to REV: a push names one revision,              not each host's previous one",
        )
        .hint("`rollgate status` and `rollgate log` show what ran before")
        .into());
    };
    let remote = args.remote.name(repo)?;
    let commit = crate::source::repo::resolve(repo, to)?;
    let id = commit.id();
    let scope = args.scope.scope();
    let group = remote::push_group(&scope, || {
        let snapshot = crate::source::repo::Snapshot::of_commit(repo, commit)?;
        let rev = crate::source::revision::Revision::load(snapshot)?;
        Ok(scope.resolve(&rev.config)?[0].group.name.clone())
    })?;
    remote::push(repo, &remote, id, &group, true, &[], ui)
}
