use crate::record::journal::Action;
use crate::rollout::deploy::{self, DeployOptions};
use crate::source::repo::{self, Snapshot};
use crate::source::revision::Revision;
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;

use super::RepoArg;
use super::scope_args::ScopeArgs;

/// Validate a revision and deploy it to one group (or host, or --all)
#[derive(Args)]
pub(crate) struct DeployArgs {
    /// A commit id, tag, branch or expression such as main~3
    #[arg(long, value_name = "REV")]
    rev: String,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Show the hosts and commands, run nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    repo: RepoArg,
}

pub(crate) fn run(args: DeployArgs, ui: &Ui) -> Result<()> {
    let repo = repo::open(args.repo.repo.as_deref())?;
    let commit = repo::resolve(&repo, &args.rev)?;
    let rev = Revision::load(Snapshot::of_commit(&repo, commit)?)?;
    let opts = DeployOptions {
        dry_run: args.dry_run,
        ..DeployOptions::new(Action::Deploy)
    };
    deploy::deploy(&repo, rev, &args.scope.scope(), opts, ui)
}
