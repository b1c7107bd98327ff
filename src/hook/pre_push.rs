//! The client side: `rollgate hook pre-push`, which git runs in a clone
//! before it sends anything. It checks exactly the commits being pushed
//! (git's stdin names them), each against what the remote has, the way the
//! server will: a good older revision pushed to `refs/deploy/canary` passes
//! even when HEAD would not.

use anyhow::{Context, Result, bail};
use git2::{Oid, Repository};

use crate::config;
use crate::gate;
use crate::source::repo::{Snapshot, short};
use crate::source::revision::Revision;
use crate::ui::Ui;

/// One `<local ref> <local sha> <remote ref> <remote sha>` line.
#[derive(Debug, PartialEq, Eq)]
struct Pushed {
    local: Option<Oid>,
    remote_ref: String,
    remote: Option<Oid>,
}

fn parse(stdin: &str) -> Result<Vec<Pushed>> {
    stdin
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [_, local, remote_ref, remote] = parts[..] else {
                bail!("pre-push input line {}: expected 4 fields: {line:?}", i + 1);
            };
            let id = |hex: &str| -> Result<Option<Oid>> {
                let id = Oid::from_str(hex)
                    .with_context(|| format!("pre-push input line {}: {hex:?}", i + 1))?;
                Ok((!id.is_zero()).then_some(id))
            };
            Ok(Pushed {
                local: id(local)?,
                remote_ref: remote_ref.to_string(),
                remote: id(remote)?,
            })
        })
        .collect()
}

/// Checks each pushed commit; a failed check fails the push before git
/// sends anything.
pub(crate) fn pre_push(repo: &Repository, stdin: &str, ui: &Ui) -> Result<()> {
    for p in parse(stdin)? {
        let Some(local) = p.local else {
            continue; // A deletion sends nothing to check.
        };
        let commit = repo
            .find_commit(local)
            .with_context(|| format!("{} is not a commit", short(local)))?;
        let snapshot = Snapshot::of_commit(repo, commit)?;
        if snapshot.read_file(config::FILE_NAME)?.is_none() {
            ui.line(format_args!(
                "{}: {} has no {}, nothing to check",
                p.remote_ref,
                short(local),
                config::FILE_NAME
            ));
            continue;
        }
        let rev = Revision::load(snapshot)?;
        // What the remote has, if this clone has it too; otherwise all of
        // it is checked, as the server would for a new ref.
        let base = p
            .remote
            .and_then(|id| repo.find_commit(id).ok())
            .and_then(|c| Snapshot::of_commit(repo, c).ok())
            .and_then(|s| Revision::load(s).ok());
        let to_check = rev.changed_since(base.as_ref())?;
        let since = match p.remote {
            Some(id) if base.is_some() => {
                format!(" for {} (changed since {})", p.remote_ref, short(id))
            }
            _ => format!(" for {}", p.remote_ref),
        };
        gate::gate(&rev, &to_check, &[], &since, ui)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn deletions_and_new_refs_are_told_apart() {
        let pushed = parse(&format!(
            "refs/heads/main {A} refs/heads/main {Z}\n(delete) {Z} refs/heads/old {A}\n"
        ))
        .unwrap();
        assert_eq!(pushed[0].local, Some(Oid::from_str(A).unwrap()));
        assert_eq!(pushed[0].remote, None);
        assert_eq!(pushed[1].local, None);
        assert_eq!(pushed[1].remote_ref, "refs/heads/old");
        assert!(parse("refs/heads/main abc").is_err());
    }
}
