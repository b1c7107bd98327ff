use crate::rollout::changes;
use crate::source::repo::{self, Snapshot};
use crate::source::revision::Revision;
use crate::ui::Ui;
use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;

use super::RepoArg;
use super::remote::RemoteArg;
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
    /// One JSON object per host: its services, what each runs now, the
    /// kind of change and the diff
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    repo: RepoArg,
    #[command(flatten)]
    remote: RemoteArg,
}

pub(crate) fn run(args: PlanArgs, ui: &Ui) -> Result<()> {
    let repo = repo::open(args.repo.repo.as_deref())?;
    let rev = Revision::load(Snapshot::of_commit(
        &repo,
        repo::resolve(&repo, &args.rev)?,
    )?)?;
    let targets = args.scope.scope().resolve(&rev.config)?;
    // In a clone, what each host runs comes from the server's journal; a
    // server with no history yet: every host is new.
    let source = super::status::journal_source(&repo, &args.remote, ui)?;
    let hosts = match &source {
        Some((git_dir, _fetched)) => changes::compute_from(&repo, git_dir, &rev, &targets)?,
        None => {
            let empty = tempfile::tempdir().context("cannot create a temporary directory")?;
            changes::compute_from(&repo, empty.path(), &rev, &targets)?
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &hosts)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        changes::render(&hosts, &mut out)
    };
    written.context("cannot write to standard output")
}
