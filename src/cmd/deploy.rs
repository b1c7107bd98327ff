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
use super::remote::{self, RemoteArg};
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
    #[command(flatten)]
    remote: RemoteArg,
}

pub(crate) fn run(args: DeployArgs, ui: &Ui) -> Result<()> {
    let repo = repo::open(args.repo.repo.as_deref())?;
    if remote::is_clone(&repo) {
        return in_clone(&repo, &args, ui);
    }
    let result = on_server(&repo, &args, ui);
    if !args.dry_run {
        crate::record::gitrefs::publish_or_warn(repo.path(), ui);
    }
    result
}

/// In a clone: `git push REMOTE REV:refs/deploy/GROUP`; the server's hook
/// validates and deploys, and keeps the only journal.
fn in_clone(repo: &git2::Repository, args: &DeployArgs, ui: &Ui) -> Result<()> {
    if args.dry_run {
        return Err(crate::error::UserError::usage(
            "--dry-run: in a clone, deploy is a git push, which has no dry run",
        )
        .hint(format!(
            "`rollgate plan --rev {}` shows what would change where",
            args.rev
        ))
        .into());
    }
    let remote = args.remote.name(repo)?;
    let commit = repo::resolve(repo, &args.rev)?;
    let id = commit.id();
    let scope = args.scope.scope();
    let group = remote::push_group(&scope, || {
        let rev = Revision::load(Snapshot::of_commit(repo, commit)?)?;
        Ok(scope.resolve(&rev.config)?[0].group.name.clone())
    })?;
    // Break-glass travels as the push option the server's hook reads.
    let options: Vec<String> = args
        .break_glass
        .iter()
        .map(|reason| format!("break-glass={reason}"))
        .collect();
    remote::push(repo, &remote, id, &group, false, &options, ui)
}

fn on_server(repo: &git2::Repository, args: &DeployArgs, ui: &Ui) -> Result<()> {
    let policy = Policy::load(repo)?;
    let scope = args.scope.scope();
    if scope != Scope::Default {
        policy.require_widen(&format!("deploy to {scope}"))?;
    }
    let commit = repo::resolve(repo, &args.rev)?;
    let id = commit.id();
    let rev = Revision::load(Snapshot::of_commit(repo, commit)?)?;
    bounds::require_merged(repo, &policy, id, &format!("deploy of `{}`", args.rev))?;
    let opts = DeployOptions {
        dry_run: args.dry_run,
        break_glass: args.break_glass.clone(),
        ..DeployOptions::new(Action::Deploy, &policy)
    };
    if scope != Scope::Default {
        return deploy::deploy(repo, rev, &scope, opts, ui);
    }
    // Without a scope: the default group, bounded by the deploy branch's tip
    // as a plain push is.
    let targets = scope.resolve(&rev.config)?;
    let described = format!("group {} (default)", targets[0].group.name);
    let tip = bounds::tip(repo, &policy)?;
    let targets = bounds::bound_to_tip(repo, &policy, tip, &rev, targets, ui);
    if targets.is_empty() {
        return Err(crate::error::UserError::failed("no host to deploy to").into());
    }
    deploy::prepare_targets(rev, targets, described, opts, ui)?.run(repo, ui)
}
