//! The verbs in a clone (a repository with a work tree): a clone never has
//! a journal or a lock of its own. `status`, `log` and `plan` fetch
//! `refs/rollgate/journal` from the remote and read the journal out of it;
//! `deploy` and `rollback` are the equivalent `git push` to
//! `refs/deploy/GROUP`, so the server's hook does the work and the pusher
//! sees its output.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use clap::Args;
use git2::{ObjectType, Oid, Repository, Tree};

use crate::error::UserError;
use crate::record::gitrefs::{DEPLOY_PREFIX, JOURNAL_REF};
use crate::record::{journal, segment};
use crate::rollout::scope::Scope;

/// `--remote`, for the verbs that reach the server from a clone.
#[derive(Args, Clone)]
pub(crate) struct RemoteArg {
    /// In a clone: the remote whose server to ask (default: the current
    /// branch's upstream remote, else origin)
    #[arg(long, value_name = "NAME")]
    remote: Option<String>,
}

/// Whether the verbs act through the remote: a repository with a work tree.
pub(crate) fn is_clone(repo: &Repository) -> bool {
    !repo.is_bare()
}

impl RemoteArg {
    /// The remote to use in `repo`: `--remote`, else the current branch's
    /// upstream remote, else `origin`.
    pub(crate) fn name(&self, repo: &Repository) -> Result<String> {
        let name = match &self.remote {
            Some(n) => n.clone(),
            None => upstream_remote(repo).unwrap_or_else(|| "origin".into()),
        };
        if repo.find_remote(&name).is_err() {
            let known: Vec<String> = repo
                .remotes()
                .map(|r| r.iter().flatten().flatten().map(String::from).collect())
                .unwrap_or_default();
            return Err(
                UserError::usage(format!("this clone has no remote `{name}`"))
                    .hint(if known.is_empty() {
                        "add the server with `git remote add origin URL`".to_string()
                    } else {
                        format!("name one with --remote (remotes: {})", known.join(", "))
                    })
                    .into(),
            );
        }
        Ok(name)
    }
}

fn upstream_remote(repo: &Repository) -> Option<String> {
    let head = repo.head().ok()?;
    let branch = head.shorthand().ok()?.to_string();
    let config = repo.config().ok()?;
    config
        .get_string(&format!("branch.{branch}.remote"))
        .ok()
        .filter(|r| r != ".")
}

/// The server's journal, fetched into the clone's `refs/rollgate/journal`
/// and written out as a journal directory under a temporary `git_dir`
/// that the readers take as they take the bare repository's. `None`: the
/// server has published nothing yet.
pub(crate) struct Fetched {
    dir: tempfile::TempDir,
}

impl Fetched {
    /// What to hand the journal readers in place of the bare repository.
    pub(crate) fn git_dir(&self) -> &Path {
        self.dir.path()
    }
}

pub(crate) fn fetch_journal(repo: &Repository, remote: &str) -> Result<Option<Fetched>> {
    let work = repo.workdir().unwrap_or(repo.path());
    let out = Command::new("git")
        .arg("-C")
        .arg(work)
        .args(["fetch", "--quiet", "--no-write-fetch-head", "--", remote])
        .arg(format!("+{JOURNAL_REF}:{JOURNAL_REF}"))
        .stdin(Stdio::null())
        .output()
        .context("cannot run git fetch (is git installed?)")?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        if text.contains("couldn't find remote ref") {
            return Ok(None);
        }
        return Err(UserError::failed(format!(
            "cannot fetch {JOURNAL_REF} from `{remote}`: {}",
            text.trim()
        ))
        .hint("check the remote's URL and your access (`git fetch` shows the same error)")
        .into());
    }
    let commit = repo
        .find_reference(JOURNAL_REF)
        .and_then(|r| r.peel_to_commit())
        .with_context(|| format!("cannot read the fetched {JOURNAL_REF}"))?;
    let tree = commit.tree()?;
    let dir = tempfile::Builder::new()
        .prefix("rollgate-journal-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let jdir = journal::dir_of(dir.path());
    std::fs::create_dir_all(jdir.join(segment::SEALED_DIR))
        .with_context(|| format!("cannot create {}", jdir.display()))?;
    write_blobs(repo, &tree, &jdir)?;
    Ok(Some(Fetched { dir }))
}

/// Writes `journal.jsonl` and `journal/*.jsonl` of the fetched tree (and
/// nothing else: the names are checked, so a crafted tree writes nowhere
/// outside `jdir`).
fn write_blobs(repo: &Repository, tree: &Tree<'_>, jdir: &Path) -> Result<()> {
    let blob = |id: Oid, to: &Path| -> Result<()> {
        let b = repo.find_blob(id)?;
        std::fs::write(to, b.content()).with_context(|| format!("cannot write {}", to.display()))
    };
    for entry in tree.iter() {
        let name = entry.name().unwrap_or_default();
        match entry.kind() {
            Some(ObjectType::Blob) if name == segment::ACTIVE => {
                blob(entry.id(), &jdir.join(segment::ACTIVE))?;
            }
            Some(ObjectType::Tree) if name == segment::SEALED_DIR => {
                let sub = repo.find_tree(entry.id())?;
                for s in sub.iter() {
                    let n = s.name().unwrap_or_default();
                    let numbered = n
                        .strip_suffix(".jsonl")
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
                    if numbered && s.kind() == Some(ObjectType::Blob) {
                        blob(s.id(), &jdir.join(segment::SEALED_DIR).join(n))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `deploy`/`rollback` in a clone: `git push [-f] REMOTE ID:refs/deploy/G`,
/// the server's output passed through as it comes.
pub(crate) fn push(
    repo: &Repository,
    remote: &str,
    id: Oid,
    group: &str,
    force: bool,
    push_options: &[String],
    ui: &crate::ui::Ui,
) -> Result<()> {
    let work = repo.workdir().unwrap_or(repo.path());
    let target = format!("{id}:{DEPLOY_PREFIX}{group}");
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(work).arg("push");
    if force {
        cmd.arg("--force");
    }
    for option in push_options {
        cmd.arg("-o").arg(option);
    }
    cmd.args(["--", remote, &target]);
    ui.line(format_args!(
        "in a clone: git push{} {remote} {target}",
        if force { " --force" } else { "" }
    ));
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .context("cannot run git push (is git installed?)")?;
    if !status.success() {
        let err = UserError::failed(format!(
            "git push {remote} {target} failed (the server's or git's reason is above)"
        ));
        return Err(if force {
            err
        } else {
            err.hint(format!(
                "if git said non-fast-forward, {group} runs a revision that is not an \
                 ancestor of this one; going back is `rollgate rollback --to REV --group {group}`"
            ))
        }
        .into());
    }
    Ok(())
}

/// The group a clone's deploy or rollback pushes to: `refs/deploy/GROUP`
/// names one group (or `all`); a single host has no such ref.
pub(crate) fn push_group(
    scope: &Scope,
    default_group: impl FnOnce() -> Result<String>,
) -> Result<String> {
    match scope {
        Scope::Group(g) => Ok(g.clone()),
        Scope::All => Ok("all".into()),
        Scope::Default => default_group(),
        Scope::Host(h) => Err(UserError::usage(format!(
            "--host {h}: in a clone, deploy and rollback push to refs/deploy/GROUP, \
             which names a group, not a host"
        ))
        .hint(format!(
            "deploy the host's group with --group, or run `rollgate deploy --host {h}` on the server"
        ))
        .into()),
    }
}
