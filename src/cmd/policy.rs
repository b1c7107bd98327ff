use crate::policy::{Policy, pin};
use crate::source::repo;
use crate::ui::Ui;
use anyhow::Result;
use clap::Subcommand;

use super::RepoArg;

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print the policy in effect (rollgate/policy.toml, or the defaults), as TOML
    Show {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Allow exactly the commands the deploy branch runs now: copy every argv
    /// of its rollgate.toml into `allowed` and set commands = "pinned"
    Pin {
        #[command(flatten)]
        repo: RepoArg,
    },
}

pub(crate) fn run(command: PolicyCommand, ui: &Ui) -> Result<()> {
    match command {
        PolicyCommand::Show { repo: r } => {
            let repo = repo::open(r.repo.as_deref())?;
            let policy = Policy::load(&repo)?;
            let from = if policy.path.exists() {
                format!("# from {}", policy.path.display())
            } else {
                format!("# {} is absent: the defaults", policy.path.display())
            };
            print!("{from}\n{}", policy.to_toml()?);
            Ok(())
        }
        PolicyCommand::Pin { repo: r } => {
            let repo = repo::open(r.repo.as_deref())?;
            let policy = Policy::load(&repo)?;
            let done = pin::pin(&repo, &policy)?;
            for argv in &done.added {
                ui.line(format_args!("allowed: {}", serde_json::to_string(argv)?));
            }
            ui.line(format_args!(
                "pinned: {} now allows {} command{} ({} new, from {} at {}); any other argv is refused",
                done.path.display(),
                done.total,
                if done.total == 1 { "" } else { "s" },
                done.added.len(),
                policy.branch,
                done.from
            ));
            Ok(())
        }
    }
}
