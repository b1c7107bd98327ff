use crate::rollout::changes;
use crate::source::repo::{self, Snapshot};
use crate::source::revision::Revision;
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;

use super::RepoArg;
use super::scope_args::ScopeArgs;

/// Show, per host, what deploying REV would change, as a diff
#[derive(Args)]
pub(crate) struct PlanArgs {
    /// The revision to compare with what each host runs: a commit id, tag,
    /// branch or expression such as main~3
    #[arg(long, value_name = "REV")]
    rev: String,
    #[command(flatten)]
    scope: ScopeArgs,
    #[command(flatten)]
    repo: RepoArg,
}

pub(crate) fn run(args: PlanArgs, _ui: &Ui) -> Result<()> {
    let repo = repo::open(args.repo.repo.as_deref())?;
    let rev = Revision::load(Snapshot::of_commit(
        &repo,
        repo::resolve(&repo, &args.rev)?,
    )?)?;
    let targets = args.scope.scope().resolve(&rev.config)?;
    changes::show(&repo, &rev, &targets, &mut std::io::stdout().lock())
}
