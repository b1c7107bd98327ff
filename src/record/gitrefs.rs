//! Deploy history in git, so that a clone can `git fetch` it:
//!
//! - `refs/rollgate/journal`: a commit per publication whose tree holds the
//!   journal as it is on the server (`journal.jsonl`, the active segment, up
//!   to its last complete line, and `journal/NNNNNN.jsonl`, the sealed
//!   segments; a sealed segment never changes, so its blob is reused from
//!   the previous commit). Its parent is the previous journal commit.
//! - `refs/deploy/GROUP`: moved to the revision the group runs, when every
//!   host of the group the journal knows runs the same revision and its
//!   last step there succeeded. While the hosts disagree (a failed host, a
//!   budget that left hosts behind, a host-only deploy) the ref stays where
//!   it was: it never names a revision only part of the group runs.
//!
//! Written after a run, never from inside the push quarantine: by the
//! `post-receive` hook, by the lock keeper once receive-pack has exited
//! (which also covers a rejected push, for which git runs no post-receive),
//! and at the end of a CLI run on the server.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use git2::{ErrorCode, Oid, Repository, Signature};

use crate::record::{journal, segment, status};

/// The ref that holds the journal.
pub(crate) const JOURNAL_REF: &str = "refs/rollgate/journal";
/// Where the per-group refs live (also the push interface's prefix).
pub(crate) const DEPLOY_PREFIX: &str = "refs/deploy/";

/// Publishes the journal of the bare repository `git_dir` and moves the
/// groups' refs. Does nothing inside a push quarantine.
pub(crate) fn publish(git_dir: &Path) -> Result<()> {
    if std::env::var_os("GIT_QUARANTINE_PATH").is_some() {
        // Objects and refs written now would point into a store git may
        // throw away (see GIT-FACTS): never.
        return Ok(());
    }
    let repo =
        Repository::open(git_dir).with_context(|| format!("cannot open {}", git_dir.display()))?;
    let dir = journal::dir_of(git_dir);
    if !dir.join(segment::ACTIVE).exists() && segment::sealed(&dir)?.is_empty() {
        return Ok(());
    }
    // Another publisher may move the ref between our read and our write:
    // the update is a compare-and-swap, retried on a fresh read.
    let mut tries = 0;
    loop {
        tries += 1;
        match commit_journal(&repo, &dir) {
            Err(e) if tries < 5 && retryable(&e) => continue,
            other => other.with_context(|| format!("cannot update {JOURNAL_REF}"))?,
        }
        break;
    }
    crate::ui::debug(format_args!("journal published to {JOURNAL_REF}"));
    move_deploy_refs(&repo, git_dir)?;
    crate::ui::debug("deploy refs moved");
    Ok(())
}

/// [`publish`] after a run: its failure is reported, never the run's
/// outcome.
pub(crate) fn publish_or_warn(git_dir: &Path, ui: &crate::ui::Ui) {
    if let Err(e) = publish(git_dir) {
        ui.line(format_args!(
            "warning: the deploy history was not published to {JOURNAL_REF}: {e:#}"
        ));
    }
}

fn retryable(e: &git2::Error) -> bool {
    matches!(
        e.code(),
        ErrorCode::Modified | ErrorCode::Exists | ErrorCode::Locked
    )
}

fn commit_journal(repo: &Repository, dir: &Path) -> std::result::Result<(), git2::Error> {
    let parent = match repo.find_reference(JOURNAL_REF) {
        Ok(r) => Some(r.peel_to_commit()?),
        Err(e) if e.code() == ErrorCode::NotFound => None,
        Err(e) => return Err(e),
    };
    let previous = parent.as_ref().map(|c| c.tree()).transpose()?;
    // The previous publication's sealed segments, read once (a tree of
    // hundreds of entries is not cached by libgit2).
    let previous_sealed = match previous.as_ref().map(|t| t.get_name(segment::SEALED_DIR)) {
        Some(Some(e)) if e.kind() == Some(git2::ObjectType::Tree) => Some(repo.find_tree(e.id())?),
        _ => None,
    };
    let sealed = segment::sealed(dir).map_err(|e| git2::Error::from_str(&format!("{e:#}")))?;
    let mut root = repo.treebuilder(None)?;
    if !sealed.is_empty() {
        let mut sub = repo.treebuilder(None)?;
        for s in &sealed {
            let name = format!("{:06}.jsonl", s.number);
            let reused = previous_sealed
                .as_ref()
                .and_then(|t| t.get_name(&name).map(|e| e.id()));
            let id = match reused {
                Some(id) => id,
                None => repo.blob_path(&s.path)?,
            };
            sub.insert(&name, id, 0o100644)?;
        }
        root.insert(segment::SEALED_DIR, sub.write()?, 0o040000)?;
    }
    let active = match fs::read(dir.join(segment::ACTIVE)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(git2::Error::from_str(&e.to_string())),
    };
    // A line being written (or torn by a crash) is left for the next time.
    let complete = active
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    root.insert(segment::ACTIVE, repo.blob(&active[..complete])?, 0o100644)?;
    let tree_id = root.write()?;
    if previous.as_ref().map(|t| t.id()) == Some(tree_id) {
        return Ok(());
    }
    let tree = repo.find_tree(tree_id)?;
    let sig = Signature::now("rollgate", "rollgate@localhost")?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let commit = repo.commit(None, &sig, &sig, "rollgate: journal", &tree, &parents)?;
    let message = "rollgate: journal";
    match &parent {
        Some(p) => repo.reference_matching(JOURNAL_REF, commit, true, p.id(), message)?,
        None => repo.reference(JOURNAL_REF, commit, false, message)?,
    };
    Ok(())
}

/// Per group: the one revision every host of it runs, or `None` when they
/// disagree or a host's last step did not succeed.
pub(crate) fn group_revisions(items: &[status::HostState]) -> BTreeMap<String, Option<String>> {
    let mut groups: BTreeMap<String, Option<String>> = BTreeMap::new();
    for s in items {
        // The host holds `rev`'s files (a restore or a host left behind holds
        // the revision it was put back on).
        let settled = matches!(
            s.result.as_str(),
            "ok" | "rolled-back" | "restored" | "left-behind"
        );
        let rev = settled.then(|| s.rev.clone());
        groups
            .entry(s.group.clone())
            .and_modify(|r| {
                if *r != rev {
                    *r = None;
                }
            })
            .or_insert(rev);
    }
    groups
}

fn move_deploy_refs(repo: &Repository, git_dir: &Path) -> Result<()> {
    let report = status::status(git_dir)?;
    for (group, rev) in group_revisions(&report.items) {
        let name = format!("{DEPLOY_PREFIX}{group}");
        let Some(id) = rev.and_then(|r| Oid::from_str(&r).ok()) else {
            continue;
        };
        if !git2::Reference::is_valid_name(&name) || repo.find_commit(id).is_err() {
            continue;
        }
        let current = repo.refname_to_id(&name).ok();
        if current == Some(id) {
            continue;
        }
        let message = format!("rollgate: {group} runs it");
        let moved = match current {
            Some(old) => repo.reference_matching(&name, id, true, old, &message),
            None => repo.reference(&name, id, false, &message),
        };
        // Lost a race with a push to this very ref: that push's own
        // publication follows.
        match moved {
            Err(e) if retryable(&e) => {}
            other => {
                other.with_context(|| format!("cannot move {name}"))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::journal::Action;

    fn row(group: &str, host: &str, rev: &str, result: &str) -> status::HostState {
        status::HostState {
            host: host.into(),
            service: "sshd".into(),
            group: group.into(),
            version: "1".into(),
            rev: rev.into(),
            when: String::new(),
            who: String::new(),
            action: Action::Deploy,
            result: result.into(),
            left: None,
            target: None,
            run: "r".into(),
            break_glass: false,
        }
    }

    #[test]
    fn a_group_has_a_revision_only_when_all_its_hosts_agree() {
        let groups = group_revisions(&[
            row("canary", "a", "111", "ok"),
            row("farm", "b", "111", "ok"),
            row("farm", "c", "222", "ok"),
            row("edge", "d", "333", "ok"),
            row("edge", "e", "333", "failed"),
            row("back", "f", "444", "rolled-back"),
        ]);
        assert_eq!(groups["canary"].as_deref(), Some("111"));
        assert_eq!(groups["farm"], None);
        assert_eq!(groups["edge"], None);
        assert_eq!(groups["back"].as_deref(), Some("444"));
    }
}
