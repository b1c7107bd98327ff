//! Read-only access to what is being validated or deployed: a commit (also
//! one still in the push quarantine) or a clone's working tree.
//!
//! Nothing here writes a ref or an object. Inside a pre-receive hook git
//! refuses ref updates, but git2 would not, and a ref to a quarantined object
//! corrupts the repository once the push is rejected.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::error::{self, UserError};
use git2::{Commit, ObjectType, Oid, Repository, Tree, TreeEntry};

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
        trees: Trees<'r>,
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
        Ok(Snapshot::Commit {
            repo,
            commit,
            tree,
            trees: Trees::default(),
        })
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
            Snapshot::Commit {
                repo, tree, trees, ..
            } => trees.at(repo, tree, path),
            Snapshot::Workdir { .. } => Ok(None),
        }
    }

    /// Names of the subdirectories of `path` ("" is the root); empty when
    /// `path` is not a directory.
    pub(crate) fn subdirs(&self, path: &str) -> Result<Vec<String>> {
        match self {
            Snapshot::Commit { .. } => {
                let Some(sub) = self.tree_at(path)? else {
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
            Snapshot::Commit { .. } => Ok(self.tree_at(path)?.is_some()),
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
    pub(crate) fn changed_paths(&self, base: &Snapshot<'r>) -> Result<Option<HashSet<String>>> {
        let (
            Snapshot::Commit {
                repo, tree, trees, ..
            },
            Snapshot::Commit {
                tree: base_tree,
                trees: base_trees,
                ..
            },
        ) = (self, base)
        else {
            return Ok(None);
        };
        let mut paths = HashSet::new();
        let sides = Sides {
            repo,
            old: base_trees,
            new: trees,
        };
        sides
            .changed_between(Some(base_tree), Some(tree), "", &mut paths)
            .context("cannot compare the pushed tree with the previous one")?;
        Ok(Some(paths))
    }

    /// Writes the directory `path` (files, modes, symlinks verbatim) under
    /// `dest_root`, at the same relative path.
    pub(crate) fn materialize(&self, path: &str, dest_root: &Path) -> Result<()> {
        let dest = dest_root.join(path);
        fs::create_dir_all(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
        match self {
            Snapshot::Commit { repo, .. } => {
                let sub = self
                    .tree_at(path)?
                    .with_context(|| format!("{path} is not a directory"))?;
                write_tree(repo, &sub, &dest, path)
            }
            Snapshot::Workdir { root } => copy_dir(&root.join(path), &dest),
        }
    }
}

/// The trees a snapshot has read, by id. libgit2 caches no tree over 4 KiB
/// and checks an object's hash on every read, so without this the
/// 5,000-entry `files/` of a 500,000-file repository was inflated and hashed
/// again for every lookup below it: a dozen times per push.
#[derive(Default)]
pub(crate) struct Trees<'r>(RefCell<HashMap<Oid, Tree<'r>>>);

impl<'r> Trees<'r> {
    fn get(&self, repo: &'r Repository, id: Oid) -> Result<Tree<'r>, git2::Error> {
        if let Some(tree) = self.0.borrow().get(&id) {
            return Ok(tree.clone());
        }
        let tree = repo.find_tree(id)?;
        self.0.borrow_mut().insert(id, tree.clone());
        Ok(tree)
    }

    /// The directory `path` under `root` ("" is `root`), `None` when it is
    /// not a directory there.
    fn at(&self, repo: &'r Repository, root: &Tree<'r>, path: &str) -> Result<Option<Tree<'r>>> {
        let mut at = root.clone();
        for name in path.split('/').filter(|c| !c.is_empty()) {
            let id = match at.get_name(name) {
                Some(entry) if entry.kind() == Some(ObjectType::Tree) => entry.id(),
                _ => return Ok(None),
            };
            at = self
                .get(repo, id)
                .with_context(|| format!("cannot read directory {path}"))?;
        }
        Ok(Some(at))
    }
}

/// git tree entry modes (see git's `fast-import` documentation).
const MODE_EXEC: i32 = 0o100755;
const MODE_LINK: i32 = 0o120000;
const MODE_SUBMODULE: i32 = 0o160000;

/// Both sides of a comparison, each reading through its own snapshot's
/// trees.
struct Sides<'a, 'r> {
    repo: &'r Repository,
    old: &'a Trees<'r>,
    new: &'a Trees<'r>,
}

impl<'r> Sides<'_, 'r> {
    /// Adds to `out` every file path under `prefix` that differs between
    /// `old` and `new` (either may be absent: all of the other side
    /// differs). Entries with the same id and mode are skipped without
    /// reading them.
    fn changed_between(
        &self,
        old: Option<&Tree<'r>>,
        new: Option<&Tree<'r>>,
        prefix: &str,
        out: &mut HashSet<String>,
    ) -> Result<(), git2::Error> {
        for (name, o, n) in differing(old, new)? {
            let path = format!("{prefix}{}", String::from_utf8_lossy(&name));
            let subtree = |side: Option<Side>, trees: &Trees<'r>| match side {
                Some((id, _, true)) => trees.get(self.repo, id).map(Some),
                _ => Ok(None),
            };
            let (old_sub, new_sub) = (subtree(o, self.old)?, subtree(n, self.new)?);
            if old_sub.is_some() || new_sub.is_some() {
                self.changed_between(old_sub.as_ref(), new_sub.as_ref(), &format!("{path}/"), out)?;
            }
            // A file on either side (or a file replaced by a directory).
            if o.is_some_and(|s| !s.2) || n.is_some_and(|s| !s.2) {
                out.insert(path);
            }
        }
        Ok(())
    }
}

/// A tree entry as compared: id, mode, whether it is a directory.
type Side = (Oid, i32, bool);
/// A name and how it stands on the old and the new side.
type Pair = (Vec<u8>, Option<Side>, Option<Side>);

fn side(e: &TreeEntry<'_>) -> Side {
    (e.id(), e.filemode(), e.kind() == Some(ObjectType::Tree))
}

/// The entries of `old` and `new` that differ, paired by name, in one merge
/// pass over the two sorted lists: only the names that differ are copied
/// (at 500,000 files `files/` holds 5,000 entries a side, all but one the
/// same). An entry is skipped only when paired with an identical one of
/// the same name, and everything unpaired counts as changed.
///
/// That is sound only for a tree in which every name means one entry, the
/// one a lookup by name finds. git never writes another, but a crafted push
/// can (two `9.2` entries, the first unchanged, the second what the server
/// reads): such a new tree is refused, and such an old one counts as all
/// changed.
fn differing(old: Option<&Tree<'_>>, new: Option<&Tree<'_>>) -> Result<Vec<Pair>, git2::Error> {
    use std::cmp::Ordering;
    if let Some(t) = new
        && !unambiguous(t)
    {
        return Err(git2::Error::from_str(&format!(
            "the pushed tree {} lists a name twice or out of order, which git never writes \
             (`git fsck` reports it; the server can refuse such pushes with \
             receive.fsckObjects = true)",
            t.id()
        )));
    }
    let all = |t: Option<&Tree<'_>>, is_new: bool| -> Vec<Pair> {
        t.into_iter()
            .flat_map(Tree::iter)
            .map(|e| {
                let s = Some(side(&e));
                let name = e.name_bytes().to_vec();
                if is_new {
                    (name, None, s)
                } else {
                    (name, s, None)
                }
            })
            .collect()
    };
    if let Some(t) = old
        && !unambiguous(t)
    {
        let mut out = all(old, false);
        out.extend(all(new, true));
        return Ok(out);
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    loop {
        let (a, b) = (old.and_then(|t| t.get(i)), new.and_then(|t| t.get(j)));
        let order = match (&a, &b) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(a), Some(b)) => git_order(a, b),
        };
        match (order, a, b) {
            (Ordering::Less, Some(a), _) => {
                out.push((a.name_bytes().to_vec(), Some(side(&a)), None));
                i += 1;
            }
            (Ordering::Greater, _, Some(b)) => {
                out.push((b.name_bytes().to_vec(), None, Some(side(&b))));
                j += 1;
            }
            (_, Some(a), Some(b)) => {
                if side(&a) != side(&b) {
                    out.push((a.name_bytes().to_vec(), Some(side(&a)), Some(side(&b))));
                }
                i += 1;
                j += 1;
            }
            _ => unreachable!("an order is only taken between present entries"),
        }
    }
    Ok(out)
}

/// Whether each entry of `t` is what a lookup of its name finds (what the
/// rest of rollgate, and libgit2, read): no name listed twice with
/// different content, none out of order where a lookup misses it.
fn unambiguous(t: &Tree<'_>) -> bool {
    t.iter().all(|e| {
        t.get_name_bytes(e.name_bytes())
            .is_some_and(|found| found.id() == e.id() && found.filemode() == e.filemode())
    })
}

/// git's order of tree entries: by name, a directory's name compared as if
/// it ended in `/`.
fn git_order(a: &TreeEntry<'_>, b: &TreeEntry<'_>) -> std::cmp::Ordering {
    let (a_name, b_name) = (a.name_bytes(), b.name_bytes());
    let n = a_name.len().min(b_name.len());
    // After the common part: the next byte, or a directory's `/`, or
    // nothing (which sorts first).
    let next = |name: &[u8], e: &TreeEntry<'_>| {
        name.get(n)
            .copied()
            .or((e.kind() == Some(ObjectType::Tree)).then_some(b'/'))
    };
    a_name[..n]
        .cmp(&b_name[..n])
        .then_with(|| next(a_name, a).cmp(&next(b_name, b)))
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
