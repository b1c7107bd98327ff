use crate::gate::{self, ValidateOptions};
use crate::ui::Ui;
use anyhow::Result;
use clap::Args;

use super::RepoArg;

/// Run the same checks a push would, before pushing
#[derive(Args)]
pub(crate) struct ValidateArgs {
    /// A commit, tag or expression such as HEAD~2; default: the working tree
    #[arg(long, value_name = "REV")]
    rev: Option<String>,
    /// Check every config directory, not only those changed since the upstream branch
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    repo: RepoArg,
}

pub(crate) fn run(args: ValidateArgs, ui: &Ui) -> Result<()> {
    let repo = crate::source::repo::open(args.repo.repo.as_deref())?;
    gate::validate(
        &repo,
        &ValidateOptions {
            rev: args.rev,
            all: args.all,
        },
        ui,
    )
}
