use std::io::Read;

use crate::hook::input;
use crate::hook::install;
use crate::hook::refs;
use crate::rollout::scope;
use crate::source::repo;
use crate::ui::Ui;
use anyhow::{Context, Result};
use clap::Subcommand;

use super::RepoArg;

#[derive(Subcommand)]
pub(crate) enum HookCommand {
    /// Write hooks/pre-receive, turn on receive.advertisePushOptions, and
    /// write rollgate/policy.toml with its defaults if there is none
    Install {
        #[command(flatten)]
        repo: RepoArg,
        /// Replace a pre-receive hook rollgate did not write (it is kept as a backup)
        #[arg(long)]
        force: bool,
    },
    /// Remove the hook and undo what install changed
    Uninstall {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// What git runs: reads "<old> <new> <ref>" lines on stdin
    PreReceive {
        #[command(flatten)]
        repo: RepoArg,
    },
}

pub(crate) fn run(command: HookCommand, ui: &Ui) -> Result<()> {
    match command {
        HookCommand::Install { repo: r, force } => {
            let repo = repo::open(r.repo.as_deref())?;
            let binary = std::env::current_exe()
                .and_then(|p| p.canonicalize())
                .context("cannot find the rollgate binary's own path")?;
            let done = install::install(&repo, &binary, force)?;
            if let Some(policy) = &done.policy {
                ui.line(format_args!(
                    "wrote the server's policy with its defaults: {} (see `rollgate policy show`)",
                    policy.display()
                ));
            }
            if let Some(backup) = &done.backup {
                ui.line(format_args!(
                    "kept the previous hook as {}",
                    backup.display()
                ));
            }
            let verb = if done.unchanged {
                "already installed"
            } else {
                "installed"
            };
            ui.line(format_args!(
                "{verb}: {} -> {}",
                done.hook.display(),
                binary.display()
            ));
            Ok(())
        }
        HookCommand::Uninstall { repo: r } => {
            let repo = repo::open(r.repo.as_deref())?;
            let done = install::uninstall(&repo)?;
            ui.line(format_args!("removed {}", done.hook.display()));
            if let Some(from) = done.restored {
                ui.line(format_args!(
                    "restored the previous hook from {}",
                    from.display()
                ));
            }
            Ok(())
        }
        HookCommand::PreReceive { repo: r } => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read the hook's input")?;
            let updates = input::parse_updates(&input)?;
            let request = scope::parse_push_options(&input::push_options_from_env()?)?;
            let repo = repo::open(r.repo.as_deref())?;
            refs::pre_receive(&repo, &updates, &request, ui)
        }
    }
}
