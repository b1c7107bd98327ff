//! The temporary work tree that checks and deploys read from.
//!
//! Only the directories needed are written, into a fresh directory (reusing
//! one lets a symlink from an earlier checkout redirect later writes), and
//! the whole thing is removed when the value is dropped, on every path out.
//!
//! Layout: `$TMPDIR/rollgate-<pid>-XXXX/{lock,tree/}`. `lock` is held (a
//! shared OS lock) by rollgate and by every command's supervisor while they
//! live; a later run sweeps a leftover tree only if it can lock it
//! exclusively, i.e. when nothing that could still read it is alive. PIDs
//! are not trusted for that: across PID namespaces a live owner's pid can
//! look dead.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::source::repo::Snapshot;

pub(crate) struct Worktree {
    dir: TempDir,
    /// Canonical root, so symlink targets can be compared against it.
    root: PathBuf,
    _lock: fs::File,
    _held: crate::process::HeldTree,
}

impl Worktree {
    /// Writes each of `paths` (repo-relative directories) from `snapshot`
    /// and refuses any symlink in them that leads out of the work tree:
    /// a checker would follow it and could echo a server file to the pusher.
    pub(crate) fn create(snapshot: &Snapshot<'_>, paths: &[String]) -> Result<Worktree> {
        sweep_stale(&std::env::temp_dir());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir()
            .context("cannot create a temporary work tree (is TMPDIR writable?)")?;
        // Locked before it gets its final name, so a sweep never finds the
        // lock file unlocked while its creator lives.
        let fresh = dir.path().join(".lock.new");
        let lock = fs::File::create(&fresh)
            .and_then(|f| f.lock_shared().map(|()| f))
            .and_then(|f| fs::rename(&fresh, dir.path().join(LOCK)).map(|()| f))
            .context("cannot lock the temporary work tree (is TMPDIR writable?)")?;
        let held = crate::process::hold_tree(&dir.path().join(LOCK));
        let tree = dir.path().join(TREE);
        fs::create_dir(&tree)
            .and_then(|()| tree.canonicalize())
            .with_context(|| format!("cannot create {}", tree.display()))?;
        let root = tree
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", tree.display()))?;
        let worktree = Worktree {
            dir,
            root,
            _lock: lock,
            _held: held,
        };
        let paths = outermost(paths);
        for path in &paths {
            snapshot
                .materialize(path, &worktree.root)
                .with_context(|| format!("cannot check out {path} of {}", snapshot.describe()))?;
        }
        for path in &paths {
            worktree.refuse_escaping_links(path)?;
        }
        Ok(worktree)
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn path_of(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Rewrites the work tree's absolute path in a command's output to the
    /// repository-relative one, which is what the pusher knows.
    pub(crate) fn relativize(&self, text: &str) -> String {
        let mut prefix = self.root.display().to_string();
        prefix.push('/');
        let text = text.replace(&prefix, "");
        // The non-canonical spelling can appear too when TMPDIR is a symlink.
        let mut raw = self.dir.path().join(TREE).display().to_string();
        raw.push('/');
        text.replace(&raw, "")
    }

    fn refuse_escaping_links(&self, rel: &str) -> Result<()> {
        let mut stack = vec![self.path_of(rel)];
        while let Some(dir) = stack.pop() {
            for entry in
                fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
            {
                let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
                let path = entry.path();
                let kind = entry
                    .file_type()
                    .with_context(|| format!("cannot read {}", path.display()))?;
                if kind.is_dir() {
                    stack.push(path);
                } else if kind.is_symlink() {
                    let shown = path
                        .strip_prefix(&self.root)
                        .unwrap_or(&path)
                        .display()
                        .to_string();
                    let target = fs::read_link(&path)
                        .with_context(|| format!("cannot read the symlink {shown}"))?;
                    // Canonicalize follows every link on the way, so chains
                    // and `..` through other links are judged by where they
                    // really end. The target is never read or printed.
                    match path.canonicalize() {
                        Ok(real) if real.starts_with(&self.root) => {}
                        Ok(_) => bail!(
                            "refused: symlink {shown} points outside the work tree ({}); \
                             versioned directories may only link inside the repository",
                            target.display()
                        ),
                        Err(_) => bail!(
                            "refused: symlink {shown} points to {}, which is not in the checked-out tree",
                            target.display()
                        ),
                    }
                }
            }
        }
        Ok(())
    }
}

const PREFIX: &str = "rollgate-";
const LOCK: &str = "lock";
const TREE: &str = "tree";

/// A tree without a lock file (from an older rollgate, or a creator killed
/// in the instant before it locked) is swept only once its pid is gone and
/// it is at least this old.
const UNLOCKED_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes work trees nobody holds any more (a hook killed with -9 cannot
/// clean up after itself). A tree is removed only while this process holds
/// its lock exclusively: a live rollgate or a live command of one (through
/// its supervisor) holds it shared, and the tree is then left alone.
fn sweep_stale(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        // Only names this module makes: `rollgate-<pid>-<random>`.
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        match fs::File::open(entry.path().join(LOCK)) {
            Ok(lock) => {
                if lock.try_lock().is_ok() {
                    let _ = fs::remove_dir_all(entry.path());
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => continue,
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= UNLOCKED_AGE);
        if !old {
            continue;
        }
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone && pid > 0 {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Drops paths inside another listed path: writing both would fail.
fn outermost(paths: &[String]) -> Vec<String> {
    let mut sorted: Vec<&String> = paths.iter().collect();
    sorted.sort();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    for p in sorted {
        if !out
            .iter()
            .any(|o| o.is_empty() || p.starts_with(&format!("{o}/")))
        {
            out.push(p.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_trees_nobody_holds_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let free = tmp.path().join(format!("{PREFIX}1-free"));
        // Held by a live process whose pid means nothing here (another PID
        // namespace): the lock decides, not the pid.
        let held = tmp.path().join(format!("{PREFIX}99999999-held"));
        // No lock file, pid dead, but young: maybe a creator mid-way.
        let young = tmp.path().join(format!("{PREFIX}99999999-young"));
        let other = tmp.path().join("rollgate-notes");
        for d in [&free, &held, &young, &other] {
            fs::create_dir(d).unwrap();
        }
        fs::write(other.join(LOCK), "").unwrap();
        fs::write(free.join(LOCK), "").unwrap();
        fs::write(held.join(LOCK), "").unwrap();
        let holder = fs::File::open(held.join(LOCK)).unwrap();
        holder.lock_shared().unwrap();
        sweep_stale(tmp.path());
        assert!(!free.exists());
        assert!(held.exists() && young.exists() && other.exists());
        drop(holder);
        sweep_stale(tmp.path());
        assert!(!held.exists());
    }

    #[test]
    fn nested_paths_collapse_to_the_outer_one() {
        let paths = [
            "a/b".to_string(),
            "a".to_string(),
            "ab".to_string(),
            "a".to_string(),
        ];
        assert_eq!(outermost(&paths), ["a", "ab"]);
    }
}
