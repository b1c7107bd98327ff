use std::io::Read;

use crate::hook::input;
use crate::hook::install;
use crate::hook::pre_push;
use crate::hook::refs;
use crate::record::gitrefs;
use crate::record::keeper;
use crate::source::repo;
use crate::ui::Ui;
use anyhow::{Context, Result};
use clap::Subcommand;

use super::RepoArg;

#[derive(Subcommand)]
pub(crate) enum HookCommand {
    /// Write hooks/pre-receive, turn on receive.advertisePushOptions, and
    /// write rollgate/policy.toml with its defaults if there is none (or,
    /// with --pre-push in a clone, the client-side check)
    Install {
        #[command(flatten)]
        repo: RepoArg,
        /// Replace a hook rollgate did not write (it is kept as a backup)
        #[arg(long)]
        force: bool,
        /// In a clone: write hooks/pre-push, which checks exactly the commits
        /// being pushed before git sends them
        #[arg(long)]
        pre_push: bool,
    },
    /// Remove the hook and undo what install changed
    Uninstall {
        #[command(flatten)]
        repo: RepoArg,
        /// Remove the clone's pre-push hook instead
        #[arg(long)]
        pre_push: bool,
    },
    /// What git runs: reads "<old> <new> <ref>" lines on stdin
    PreReceive {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// What git runs after a push moved the refs: publishes the deploy
    /// history to refs/rollgate/journal and refs/deploy/GROUP
    PostReceive {
        #[command(flatten)]
        repo: RepoArg,
    },
    /// What git runs in a clone before a push: reads
    /// "<local ref> <local id> <remote ref> <remote id>" lines on stdin
    PrePush {
        /// The remote's name, as git passes it (unused)
        remote: Option<String>,
        /// The remote's URL, as git passes it (unused)
        url: Option<String>,
        #[command(flatten)]
        repo: RepoArg,
    },
    /// Started by the hook: holds the deploy lock (its stdin) until git's
    /// receive-pack, process PID, has exited
    #[command(hide = true)]
    KeepLock {
        #[arg(long)]
        pid: i32,
        /// The process's start time (/proc/PID/stat), so a reused pid is
        /// never waited for
        #[arg(long)]
        started: u64,
    },
}

pub(crate) fn run(command: HookCommand, ui: &Ui) -> Result<()> {
    match command {
        HookCommand::Install {
            repo: r,
            force,
            pre_push,
        } => {
            let repo = repo::open(r.repo.as_deref())?;
            let binary = std::env::current_exe()
                .and_then(|p| p.canonicalize())
                .context("cannot find the rollgate binary's own path")?;
            let done = if pre_push {
                install::install_pre_push(&repo, &binary, force)?
            } else {
                install::install(&repo, &binary, force)?
            };
            if let Some(policy) = &done.policy {
                ui.line(format_args!(
                    "wrote the server's policy with its defaults: {} (see `rollgate policy show`)",
                    policy.display()
                ));
            }
            if let Some(post) = &done.foreign_post_receive {
                ui.line(format_args!(
                    "kept your {} (rollgate's publishes the deploy history before a push \
                     returns; without it, that happens just after)",
                    post.display()
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
        HookCommand::Uninstall { repo: r, pre_push } => {
            let repo = repo::open(r.repo.as_deref())?;
            let done = if pre_push {
                install::uninstall_pre_push(&repo)?
            } else {
                install::uninstall(&repo)?
            };
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
            // Parsed only once a ref is acted on: a push that passes
            // untouched ignores options meant for other tools.
            let options = input::push_options_from_env()?;
            let repo = repo::open(r.repo.as_deref())?;
            refs::pre_receive(&repo, &updates, &options, ui)
        }
        HookCommand::PostReceive { repo: r } => {
            // git writes the updated refs on stdin; nothing here needs them.
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            let repo = repo::open(r.repo.as_deref())?;
            gitrefs::publish_or_warn(repo.path(), ui);
            Ok(())
        }
        HookCommand::KeepLock { pid, started } => {
            keeper::keep(keeper::Process { pid, started });
            // The push is over (accepted or not) and the lock still held:
            // publish what the run recorded. A rejected push gets no
            // post-receive, so this is where its records reach git.
            if let Ok(here) = std::env::current_dir() {
                let _ = gitrefs::publish(&here);
            }
            Ok(())
        }
        HookCommand::PrePush { repo: r, .. } => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read the hook's input")?;
            let repo = repo::open(r.repo.as_deref())?;
            pre_push::pre_push(&repo, &input, ui)
        }
    }
}
