//! The temporary work tree that checks and deploys read from.
//!
//! Only the directories needed are written, into a fresh directory (reusing
//! one lets a symlink from an earlier checkout redirect later writes), and
//! the whole thing is removed when the value is dropped, on every path out.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

use crate::source::repo::Snapshot;

pub(crate) struct Worktree {
    dir: TempDir,
    /// Canonical root, so symlink targets can be compared against it.
    root: PathBuf,
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
        let root = dir
            .path()
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", dir.path().display()))?;
        let worktree = Worktree { dir, root };
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
        let mut raw = self.dir.path().display().to_string();
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

/// Removes work trees left by rollgate processes that no longer exist (a
/// hook killed with -9 cannot clean up after itself). The owner's pid is in
/// the name; a live or unknown owner's tree is left alone.
fn sweep_stale(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
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
    fn stale_trees_of_dead_processes_are_swept_and_live_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        // pid_max on Linux is at most 2^22, so this pid cannot be alive.
        let dead = tmp.path().join(format!("{PREFIX}99999999-abc"));
        let live = tmp
            .path()
            .join(format!("{PREFIX}{}-abc", std::process::id()));
        let other = tmp.path().join("rollgate-notes");
        for d in [&dead, &live, &other] {
            fs::create_dir(d).unwrap();
        }
        sweep_stale(tmp.path());
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
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
