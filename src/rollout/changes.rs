//! What a deploy would change where: per host, the revision it runs now (from
//! the journal) and a unified diff of its service directories against the
//! revision to deploy. Read-only: no host is touched.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, Result};
use git2::{DiffFormat, DiffOptions, Oid, Repository, Tree};

use crate::record::journal::{self, History};
use crate::rollout::scope::Target;
use crate::source::repo::{Snapshot, short, short_str};
use crate::source::revision::Revision;

pub(crate) fn show(
    repo: &Repository,
    rev: &Revision<'_>,
    targets: &[Target],
    out: &mut dyn Write,
) -> Result<()> {
    let history = journal::read(repo.path())?;
    let rev_id = rev
        .snapshot
        .commit_id()
        .context("only a commit can be previewed")?;
    let mut earlier = Earlier {
        repo,
        loaded: HashMap::new(),
    };
    for t in targets {
        let group = &t.group;
        let dirs = rev.group_dirs(group)?;
        for host in &t.hosts {
            writeln!(out, "== {host} (group {})", group.name)?;
            for dir in &dirs {
                let new_tree = rev
                    .snapshot
                    .tree_at(&dir.path)?
                    .context("deployed directory vanished")?;
                let current = current_dir(&history, &mut earlier, host, &dir.service);
                match current {
                    None => {
                        writeln!(
                            out,
                            "{}: never deployed here; all of {} at {} is new",
                            dir.service,
                            dir.path,
                            short(rev_id)
                        )?;
                        write_diff(repo, None, &new_tree, &dir.path, &dir.path, out)?;
                    }
                    Some(Current {
                        rev: now,
                        path: Some((path, tree)),
                    }) => {
                        if tree.id() == new_tree.id() {
                            let how = if now == rev_id.to_string() {
                                "already at"
                            } else {
                                "same content as"
                            };
                            writeln!(
                                out,
                                "{}: {} now, {how} {}: no change",
                                dir.service,
                                short_str(&now),
                                short(rev_id)
                            )?;
                        } else {
                            writeln!(
                                out,
                                "{}: {} ({path}) -> {} ({})",
                                dir.service,
                                short_str(&now),
                                short(rev_id),
                                dir.path
                            )?;
                            write_diff(repo, Some(&tree), &new_tree, &path, &dir.path, out)?;
                        }
                    }
                    Some(Current {
                        rev: now,
                        path: None,
                    }) => {
                        writeln!(
                            out,
                            "{}: {} now, whose files cannot be read back; all of {} is shown as new",
                            dir.service,
                            short_str(&now),
                            dir.path
                        )?;
                        write_diff(repo, None, &new_tree, &dir.path, &dir.path, out)?;
                    }
                }
            }
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

fn write_diff(
    repo: &Repository,
    old: Option<&Tree<'_>>,
    new: &Tree<'_>,
    old_path: &str,
    new_path: &str,
    out: &mut dyn Write,
) -> Result<()> {
    let mut opts = DiffOptions::new();
    opts.old_prefix(format!("a/{old_path}/"))
        .new_prefix(format!("b/{new_path}/"));
    let diff = repo.diff_tree_to_tree(old, Some(new), Some(&mut opts))?;
    let mut failed = None;
    let printed = diff.print(DiffFormat::Patch, |_, _, line| {
        let mut text = Vec::new();
        if matches!(line.origin(), '+' | '-' | ' ') {
            text.push(line.origin() as u8);
        }
        text.extend_from_slice(line.content());
        match out.write_all(&text) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    });
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(printed?),
    }
}
