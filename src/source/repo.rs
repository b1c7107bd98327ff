//! Read-only access to what is being validated or deployed: a commit (also
//! one still in the push quarantine) or a clone's working tree.
//!
//! Nothing here writes a ref or an object. Inside a pre-receive hook git
//! refuses ref updates, but git2 would not, and a ref to a quarantined object
//! corrupts the repository once the push is rejected.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::error::{self, UserError};
use git2::{Commit, ObjectType, Oid, Repository, Tree};

/// Opens the repository named by `--repo`, or else the one git's environment
/// or the current directory points at. `open_from_env` is what makes the
/// quarantined objects of a push visible inside the hook.
pub(crate) fn open(path: Option<&Path>) -> Result<Repository> {
    let opened = match path {
        Some(p) => Repository::open(p),
        None => Repository::open_from_env(),
    };
    opened.map_err(|e| {
        let (message, hint) = match (path, error::ownership_hint(&e)) {
            (Some(p), Some(h)) => (
                format!("{} is not owned by the current user", p.display()),
                Some(h),
            ),
            (None, Some(h)) => (
                "the repository is not owned by the current user".into(),
                Some(h),
            ),
            (Some(p), None) => (format!("{} is not a git repository", p.display()), None),
            (None, None) => (
                "not inside a git repository".into(),
                Some("run it inside one, or name it with --repo PATH".into()),
            ),
        };
        anyhow::Error::new(e).context(UserError::usage(message).hint_opt(hint))
    })
}

/// Resolves a commit id, tag, branch or expression such as `main~3`.
pub(crate) fn resolve<'r>(repo: &'r Repository, rev: &str) -> Result<Commit<'r>> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| {
            anyhow::Error::new(e).context(
                UserError::usage(format!("revision `{rev}` does not resolve to a commit"))
                    .hint("name a commit id, branch or tag, e.g. `main~1` (see `rollgate log`)"),
            )
        })
}

pub(crate) fn short(id: Oid) -> String {
    short_str(&id.to_string())
}

/// The first 10 hex digits, as people quote commit ids.
pub(crate) fn short_str(id: &str) -> String {
    id.chars().take(10).collect()
}

/// Where config files are read from.
pub(crate) enum Snapshot<'r> {
    Commit {
        repo: &'r Repository,
        commit: Commit<'r>,
        tree: Tree<'r>,
    },
    Workdir {
        root: PathBuf,
    },
}

impl<'r> Snapshot<'r> {
    pub(crate) fn of_commit(repo: &'r Repository, commit: Commit<'r>) -> Result<Snapshot<'r>> {
        let tree = commit
            .tree()
            .with_context(|| format!("cannot read the tree of {}", short(commit.id())))?;
        Ok(Snapshot::Commit { repo, commit, tree })
    }

    /// What `{rev}` means: the commit id, or HEAD's for a working tree.
    pub(crate) fn describe(&self) -> String {
        match self {
            Snapshot::Commit { commit, .. } => short(commit.id()),
            Snapshot::Workdir { root } => format!("the working tree {}", root.display()),
        }
    }

    pub(crate) fn commit_id(&self) -> Option<Oid> {
        match self {
            Snapshot::Commit { commit, .. } => Some(commit.id()),
            Snapshot::Workdir { .. } => None,
        }
    }

    pub(crate) fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Snapshot::Commit { repo, tree, .. } => {
                let Ok(entry) = tree.get_path(Path::new(path)) else {
                    return Ok(None);
                };
                if entry.kind() != Some(ObjectType::Blob) {
                    bail!("{path} is not a file");
                }
                let blob = entry
                    .to_object(repo)?
                    .peel_to_blob()
                    .with_context(|| format!("cannot read {path}"))?;
                Ok(Some(blob.content().to_vec()))
            }
            Snapshot::Workdir { root } => match fs::read(root.join(path)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e).with_context(|| format!("cannot read {path}")),
            },
        }
    }

    /// The git tree of a directory of a commit (`None` for a working tree
    /// or a path that is not a directory).
    pub(crate) fn tree_at(&self, path: &str) -> Result<Option<Tree<'r>>> {
        match self {
            Snapshot::Commit { repo, tree, .. } => subtree(repo, tree, path),
            Snapshot::Workdir { .. } => Ok(None),
        }
    }

    /// Names of the subdirectories of `path` ("" is the root); empty when
    /// `path` is not a directory.
    pub(crate) fn subdirs(&self, path: &str) -> Result<Vec<String>> {
        match self {
            Snapshot::Commit { repo, tree, .. } => {
                let Some(sub) = subtree(repo, tree, path)? else {
                    return Ok(Vec::new());
                };
                Ok(sub
                    .iter()
                    .filter(|e| e.kind() == Some(ObjectType::Tree))
                    .filter_map(|e| e.name().ok().map(String::from))
                    .collect())
            }
            Snapshot::Workdir { root } => {
                let dir = root.join(path);
                let Ok(entries) = fs::read_dir(&dir) else {
                    return Ok(Vec::new());
                };
                let mut names = Vec::new();
                for entry in entries {
                    let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
                    if entry.file_type()?.is_dir()
                        && entry.file_name() != ".git"
                        && let Some(name) = entry.file_name().to_str()
                    {
                        names.push(name.to_string());
                    }
                }
                names.sort();
                Ok(names)
            }
        }
    }

    pub(crate) fn is_dir(&self, path: &str) -> Result<bool> {
        match self {
            Snapshot::Commit { repo, tree, .. } => Ok(subtree(repo, tree, path)?.is_some()),
            Snapshot::Workdir { root } => Ok(fs::symlink_metadata(root.join(path))
                .map(|m| m.is_dir())
                .unwrap_or(false)),
        }
    }

    /// The files that differ from `base` (both sides' paths), when both are
    /// commits; `None` for a working tree. Only subtrees whose ids differ
    /// are read, so the cost follows the change, not the size of the
    /// repository (libgit2's tree diff loads every entry of both sides: at
    /// 500,000 files that was seconds per push).
    pub(crate) fn changed_paths(&self, base: &Snapshot<'_>) -> Result<Option<HashSet<String>>> {
        let (
            Snapshot::Commit { repo, tree, .. },
            Snapshot::Commit {
                tree: base_tree, ..
            },
        ) = (self, base)
        else {
            return Ok(None);
        };
        let mut paths = HashSet::new();
        changed_between(repo, Some(base_tree), Some(tree), "", &mut paths)
            .context("cannot compare the pushed tree with the previous one")?;
        Ok(Some(paths))
    }

    /// Writes the directory `path` (files, modes, symlinks verbatim) under
    /// `dest_root`, at the same relative path.
    pub(crate) fn materialize(&self, path: &str, dest_root: &Path) -> Result<()> {
        let dest = dest_root.join(path);
        fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
        match self {
            Snapshot::Commit { repo, tree, .. } => {
                let sub = subtree(repo, tree, path)?
                    .with_context(|| format!("{path} is not a directory"))?;
                write_tree(repo, &sub, &dest, path)
            }
            Snapshot::Workdir { root } => copy_dir(&root.join(path), &dest),
        }
    }
}

fn subtree<'r>(repo: &'r Repository, tree: &Tree<'r>, path: &str) -> Result<Option<Tree<'r>>> {
    if path.is_empty() {
        return Ok(Some(tree.clone()));
    }
    match tree.get_path(Path::new(path)) {
        Ok(entry) if entry.kind() == Some(ObjectType::Tree) => {
            Ok(Some(repo.find_tree(entry.id()).with_context(|| {
                format!("cannot read directory {path}")
            })?))
        }
        _ => Ok(None),
    }
}

/// git tree entry modes (see git's `fast-import` documentation).
const MODE_EXEC: i32 = 0o100755;
const MODE_LINK: i32 = 0o120000;
const MODE_SUBMODULE: i32 = 0o160000;

/// Adds to `out` every file path under `prefix` that differs between `old`
/// and `new` (either may be absent: all of the other side differs).
/// Entries with the same id and mode are skipped without reading them.
fn changed_between(
    repo: &Repository,
    old: Option<&Tree<'_>>,
    new: Option<&Tree<'_>>,
    prefix: &str,
    out: &mut HashSet<String>,
) -> Result<(), git2::Error> {
    type Side = (Oid, i32, bool);
    let mut entries: std::collections::BTreeMap<Vec<u8>, (Option<Side>, Option<Side>)> =
        std::collections::BTreeMap::new();
    for (tree, is_new) in [(old, false), (new, true)] {
        for e in tree.into_iter().flat_map(Tree::iter) {
            let side = (e.id(), e.filemode(), e.kind() == Some(ObjectType::Tree));
            let slot = entries.entry(e.name_bytes().to_vec()).or_default();
            if is_new {
                slot.1 = Some(side);
            } else {
                slot.0 = Some(side);
            }
        }
    }
    for (name, (o, n)) in entries {
        if o == n {
            continue;
        }
        let path = format!("{prefix}{}", String::from_utf8_lossy(&name));
        let subtree = |side: Option<Side>| -> Result<Option<Tree<'_>>, git2::Error> {
            match side {
                Some((id, _, true)) => repo.find_tree(id).map(Some),
                _ => Ok(None),
            }
        };
        let (old_sub, new_sub) = (subtree(o)?, subtree(n)?);
        if old_sub.is_some() || new_sub.is_some() {
            changed_between(
                repo,
                old_sub.as_ref(),
                new_sub.as_ref(),
                &format!("{path}/"),
                out,
            )?;
        }
        // A file on either side (or a file replaced by a directory).
        if o.is_some_and(|s| !s.2) || n.is_some_and(|s| !s.2) {
            out.insert(path);
        }
    }
    Ok(())
}

fn write_tree(repo: &Repository, tree: &Tree<'_>, dest: &Path, rel: &str) -> Result<()> {
    for entry in tree.iter() {
        let name = entry.name_bytes();
        // A crafted tree can hold names git itself would refuse to check out.
        if name.is_empty()
            || name == b"."
            || name == b".."
            || name.contains(&b'/')
            || name.contains(&0)
        {
            bail!(
                "{rel} holds an entry with an unsafe name {:?}",
                String::from_utf8_lossy(name)
            );
        }
        let target = dest.join(OsStr::from_bytes(name));
        let shown = || format!("{rel}/{}", String::from_utf8_lossy(name));
        match entry.filemode() {
            MODE_SUBMODULE => continue,
            _ if entry.kind() == Some(ObjectType::Tree) => {
                fs::create_dir(&target)
                    .with_context(|| format!("cannot create {}", target.display()))?;
                let sub = repo
                    .find_tree(entry.id())
                    .with_context(|| format!("cannot read {}", shown()))?;
                write_tree(repo, &sub, &target, &shown())?;
            }
            mode => {
                let blob = repo
                    .find_blob(entry.id())
                    .with_context(|| format!("cannot read {}", shown()))?;
                if mode == MODE_LINK {
                    std::os::unix::fs::symlink(OsStr::from_bytes(blob.content()), &target)
                        .with_context(|| format!("cannot create symlink {}", target.display()))?;
                } else {
                    fs::write(&target, blob.content())
                        .with_context(|| format!("cannot write {}", target.display()))?;
                    if mode == MODE_EXEC {
                        fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
                            .with_context(|| {
                                format!("cannot make {} executable", target.display())
                            })?;
                    }
                }
            }
        }
    }
    Ok(())
}

fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    for entry in fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let entry = entry.with_context(|| format!("cannot read {}", src.display()))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", from.display()))?;
        if kind.is_symlink() {
            let link =
                fs::read_link(&from).with_context(|| format!("cannot read {}", from.display()))?;
            std::os::unix::fs::symlink(&link, &to)
                .with_context(|| format!("cannot create symlink {}", to.display()))?;
        } else if kind.is_dir() {
            fs::create_dir(&to).with_context(|| format!("cannot create {}", to.display()))?;
            copy_dir(&from, &to)?;
        } else {
            fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    Ok(())
}
