//! What a deploy would change where: per host, the revision it runs now (from
//! the journal) and a unified diff of its service directories against the
//! revision to deploy. Read-only: no host is touched.

use std::collections::HashMap;
use std::io::Write;

use serde::Serialize;

use anyhow::{Context, Result};
use git2::{DiffFormat, DiffOptions, Oid, Repository, Tree};

use crate::record::journal::{self, History};
use crate::rollout::scope::Target;
use crate::source::repo::{Snapshot, short_str};
use crate::source::revision::Revision;

/// What deploying a revision would do to one host.
#[derive(Debug, Serialize)]
pub(crate) struct HostChanges {
    pub(crate) host: String,
    pub(crate) group: String,
    pub(crate) services: Vec<ServiceChange>,
}

/// One service directory of one host: what it runs now and the diff to
/// what it would run.
#[derive(Debug, Serialize)]
pub(crate) struct ServiceChange {
    pub(crate) service: String,
    /// The directory to deploy, in the new revision.
    pub(crate) path: String,
    pub(crate) rev: String,
    /// The revision the host runs now, from the journal.
    pub(crate) now: Option<String>,
    /// Its directory at that revision, when it can be read back.
    pub(crate) now_path: Option<String>,
    pub(crate) change: Change,
    /// A unified diff; empty when nothing changes.
    pub(crate) diff: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Change {
    /// Never deployed there: all of it is new.
    New,
    /// Already at this revision.
    Current,
    /// Another revision with the same content.
    SameContent,
    Changed,
    /// Runs a revision whose files cannot be read back: all shown as new.
    Unknown,
}

/// Per host of `targets`, what deploying `rev` would change.
pub(crate) fn compute(
    repo: &Repository,
    rev: &Revision<'_>,
    targets: &[Target],
) -> Result<Vec<HostChanges>> {
    compute_from(repo, repo.path(), rev, targets)
}

/// [`compute`], with the journal read from `journal_git_dir` (in a clone:
/// the server's, fetched).
pub(crate) fn compute_from(
    repo: &Repository,
    journal_git_dir: &std::path::Path,
    rev: &Revision<'_>,
    targets: &[Target],
) -> Result<Vec<HostChanges>> {
    let history = journal::read(journal_git_dir)?;
    let rev_id = rev
        .snapshot
        .commit_id()
        .context("only a commit can be previewed")?;
    let mut earlier = Earlier {
        repo,
        loaded: HashMap::new(),
    };
    let mut hosts = Vec::new();
    for t in targets {
        let group = &t.group;
        let dirs = rev.group_dirs(group)?;
        for host in &t.hosts {
            let mut services = Vec::new();
            for dir in &dirs {
                let new_tree = rev
                    .snapshot
                    .tree_at(&dir.path)?
                    .with_context(|| format!("{} is not a directory", dir.path))?;
                let current = current_dir(&history, &mut earlier, host, &dir.service);
                let (now, now_path, change, diff) = match current {
                    None => (
                        None,
                        None,
                        Change::New,
                        diff(repo, None, &new_tree, &dir.path, &dir.path)?,
                    ),
                    Some(Current {
                        rev: now,
                        path: Some((path, tree)),
                    }) if tree.id() == new_tree.id() => {
                        let change = if now == rev_id.to_string() {
                            Change::Current
                        } else {
                            Change::SameContent
                        };
                        (Some(now), Some(path), change, String::new())
                    }
                    Some(Current {
                        rev: now,
                        path: Some((path, tree)),
                    }) => {
                        let text = diff(repo, Some(&tree), &new_tree, &path, &dir.path)?;
                        (Some(now), Some(path), Change::Changed, text)
                    }
                    Some(Current {
                        rev: now,
                        path: None,
                    }) => (
                        Some(now),
                        None,
                        Change::Unknown,
                        diff(repo, None, &new_tree, &dir.path, &dir.path)?,
                    ),
                };
                services.push(ServiceChange {
                    service: dir.service.clone(),
                    path: dir.path.clone(),
                    rev: rev_id.to_string(),
                    now,
                    now_path,
                    change,
                    diff,
                });
            }
            hosts.push(HostChanges {
                host: host.clone(),
                group: group.name.clone(),
                services,
            });
        }
    }
    Ok(hosts)
}

/// The changes as people read them: a header per host, a line per service,
/// then the diff.
pub(crate) fn render(hosts: &[HostChanges], out: &mut dyn Write) -> std::io::Result<()> {
    for h in hosts {
        writeln!(out, "== {} (group {})", h.host, h.group)?;
        for s in &h.services {
            let rev = short_str(&s.rev);
            let now = s.now.as_deref().map(short_str).unwrap_or_default();
            match s.change {
                Change::New => writeln!(
                    out,
                    "{}: never deployed here; all of {} at {rev} is new",
                    s.service, s.path
                )?,
                Change::Current => {
                    writeln!(out, "{}: {now} now, already at {rev}: no change", s.service)?
                }
                Change::SameContent => writeln!(
                    out,
                    "{}: {now} now, same content as {rev}: no change",
                    s.service
                )?,
                Change::Changed => writeln!(
                    out,
                    "{}: {now} ({}) -> {rev} ({})",
                    s.service,
                    s.now_path.as_deref().unwrap_or(&s.path),
                    s.path
                )?,
                Change::Unknown => writeln!(
                    out,
                    "{}: {now} now, whose files cannot be read back; all of {} is shown as new",
                    s.service, s.path
                )?,
            }
            out.write_all(s.diff.as_bytes())?;
        }
    }
    Ok(())
}

struct Current<'r> {
    rev: String,
    /// The host's directory at that revision, when it can be found.
    path: Option<(String, Tree<'r>)>,
}

/// Earlier revisions, each loaded once however many hosts run it.
struct Earlier<'r> {
    repo: &'r Repository,
    loaded: HashMap<String, Option<Revision<'r>>>,
}

impl<'r> Earlier<'r> {
    fn get(&mut self, id: &str) -> Option<&Revision<'r>> {
        let repo = self.repo;
        self.loaded
            .entry(id.to_string())
            .or_insert_with(|| {
                let commit = repo.find_commit(Oid::from_str(id).ok()?).ok()?;
                Revision::load(Snapshot::of_commit(repo, commit).ok()?).ok()
            })
            .as_ref()
    }
}

fn current_dir<'r>(
    history: &History,
    earlier: &mut Earlier<'r>,
    host: &str,
    service: &str,
) -> Option<Current<'r>> {
    let record = history.last_good(host, service)?;
    let rev = record.rev.clone();
    let path = earlier.get(&rev).and_then(|old| {
        let group = old.config.group_of_host(host)?;
        let dir = old
            .group_dirs(group)
            .ok()?
            .into_iter()
            .find(|d| d.service == service)?;
        let tree = old.snapshot.tree_at(&dir.path).ok()??;
        Some((dir.path, tree))
    });
    Some(Current { rev, path })
}

fn diff(
    repo: &Repository,
    old: Option<&Tree<'_>>,
    new: &Tree<'_>,
    old_path: &str,
    new_path: &str,
) -> Result<String> {
    let mut opts = DiffOptions::new();
    opts.old_prefix(format!("a/{old_path}/"))
        .new_prefix(format!("b/{new_path}/"));
    let diff = repo.diff_tree_to_tree(old, Some(new), Some(&mut opts))?;
    let mut text = Vec::new();
    diff.print(DiffFormat::Patch, |_, _, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            text.push(line.origin() as u8);
        }
        text.extend_from_slice(line.content());
        true
    })?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}
