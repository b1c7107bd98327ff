use anyhow::Result;
use clap::Args;
use rollgate::repo::{self, Snapshot};
use rollgate::revision::Revision;
use rollgate::{preview, report::Ui};

use super::RepoArg;
use super::scope_args::ScopeArgs;

/// Show, per host, what deploying REV would change, as a diff
#[derive(Args)]
pub struct PlanArgs {
    #[arg(long, value_name = "REV")]
    rev: String,
    #[command(flatten)]
    scope: ScopeArgs,
    #[command(flatten)]
    repo: RepoArg,
}

pub fn run(args: PlanArgs, _ui: &Ui) -> Result<()> {
    let repo = repo::open(args.repo.repo.as_deref())?;
    let rev = Revision::load(Snapshot::of_commit(
        &repo,
        repo::resolve(&repo, &args.rev)?,
    )?)?;
    let targets = args.scope.scope().resolve(&rev.config)?;
    preview::show(&repo, &rev, &targets, &mut std::io::stdout().lock())
}
