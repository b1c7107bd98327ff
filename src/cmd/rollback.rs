use crate::rollout::rollback::{self, RollbackOptions};
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;

use super::RepoArg;
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
}

pub(crate) fn run(args: RollbackArgs, ui: &Ui) -> Result<()> {
    let repo = crate::source::repo::open(args.repo.repo.as_deref())?;
    let opts = RollbackOptions {
        to: args.to,
        scope: args.scope.scope(),
        dry_run: args.dry_run,
    };
    rollback::rollback(&repo, opts, ui)
}
