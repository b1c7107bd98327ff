use crate::policy::{Policy, bounds};
use crate::record::journal::Action;
use crate::rollout::deploy::{self, DeployOptions};
use crate::rollout::scope::Scope;
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
    /// Deploy even if checks fail (only for users the policy's `break_glass`
    /// names; the reason is journaled)
    #[arg(long, value_name = "REASON")]
    break_glass: Option<String>,
    #[command(flatten)]
    repo: RepoArg,
}

pub(crate) fn run(args: DeployArgs, ui: &Ui) -> Result<()> {
    let repo = repo::open(args.repo.repo.as_deref())?;
    let policy = Policy::load(&repo)?;
    let scope = args.scope.scope();
    if scope != Scope::Default {
        policy.require_widen(&format!("deploy to {scope}"))?;
    }
    let commit = repo::resolve(&repo, &args.rev)?;
    let id = commit.id();
    let rev = Revision::load(Snapshot::of_commit(&repo, commit)?)?;
    bounds::require_merged(&repo, &policy, id, &format!("deploy of `{}`", args.rev))?;
    let opts = DeployOptions {
        dry_run: args.dry_run,
        break_glass: args.break_glass,
        ..DeployOptions::new(Action::Deploy, &policy)
    };
    if scope != Scope::Default {
        return deploy::deploy(&repo, rev, &scope, opts, ui);
    }
    // Without a scope: the default group, bounded by the deploy branch's tip
    // as a plain push is.
    let targets = scope.resolve(&rev.config)?;
    let described = format!("group {} (default)", targets[0].group.name);
    let tip = bounds::tip(&repo, &policy)?;
    let targets = bounds::bound_to_tip(&repo, &policy, tip, &rev, targets, ui);
    if targets.is_empty() {
        return Err(crate::error::Failed("no host to deploy to".into()).into());
    }
    deploy::prepare_targets(rev, targets, described, opts, ui)?.run(&repo, ui)
}
