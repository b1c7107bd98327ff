//! What git checks after the pre-receive hook, checked before a push
//! deploys anything.
//!
//! receive-pack runs `pre-receive` first and only then, per ref, its own
//! refusals (`receive.denyCurrentBranch`, `receive.denyDeletes`,
//! `receive.denyDeleteCurrent`, `receive.denyNonFastForwards`) and the
//! repository's `update` hook (where gitolite checks who may write each
//! branch). A push git refuses there must not have deployed: so when a push
//! is about to deploy, every ref of it goes through the same checks first,
//! with git's own inputs, and any refusal rejects the whole push before a
//! host is touched. git then runs the `update` hook once more itself.
//!
//! As git does: the non-fast-forward and delete refusals apply to branches
//! (`refs/heads/`) only, so a forced push of an older revision to
//! `refs/deploy/NAME` (a rollback) is not refused by them; the `update`
//! hook gets `REF OLD NEW` (40 zeros for a create or a delete), no stdin,
//! its stdout sent to stderr (both reach the pusher), and the hook's
//! environment without the push options (git gives it none). It keeps the
//! quarantine variables, which git's later run does not need: the pushed
//! objects are only visible through them until the hook has exited.

use std::cell::Cell;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use git2::{Config, ErrorCode, ObjectType, Oid, Repository};

use crate::error::UserError;
use crate::hook::input::RefUpdate;
use crate::source::repo::short;

/// Runs the checks at most once per push, when its first ref is about to be
/// deployed; pushes that deploy nothing leave them to git.
pub(crate) struct GitChecks<'u> {
    updates: &'u [RefUpdate],
    done: Cell<bool>,
}

impl<'u> GitChecks<'u> {
    pub(crate) fn new(updates: &'u [RefUpdate]) -> GitChecks<'u> {
        GitChecks {
            updates,
            done: Cell::new(false),
        }
    }

    pub(crate) fn before_deploying(&self, repo: &Repository) -> Result<()> {
        if self.done.replace(true) {
            return Ok(());
        }
        check(repo, self.updates)
    }
}

/// Every ref of the push, in git's order: its built-in refusals, then the
/// `update` hook; the first refusal ends the push.
fn check(repo: &Repository, updates: &[RefUpdate]) -> Result<()> {
    refuse_hooks_after_us(&crate::hook::install::hooks_dir(repo)?)?;
    let config = repo
        .config()
        .and_then(|mut c| c.snapshot())
        .context("cannot read the repository's git config")?;
    let rules = Rules::read(&config)?;
    let heads = CheckedOut::of(repo)?;
    let hook = update_hook(repo, &config);
    for u in updates {
        rules.apply(repo, &heads, u)?;
        if let Some(hook) = &hook {
            run_update_hook(hook, u)?;
        }
    }
    Ok(())
}

/// Under gitolite's repo-specific hooks, `hooks/pre-receive` is a driver
/// that runs each `hooks/pre-receive.*` in name order (only the executable
/// ones) and rejects the push at the first that fails. A hook after
/// rollgate's would refuse the push after it deployed: the push is refused
/// instead, before anything deploys, until rollgate is the last one.
fn refuse_hooks_after_us(dir: &Path) -> Result<()> {
    use crate::hook::install::{is_multi_hook_driver, is_rollgate_pre_receive};
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let main = read(&dir.join("pre-receive"));
    if is_rollgate_pre_receive(&main) || !is_multi_hook_driver(&main) {
        // git runs rollgate itself, or something rollgate cannot see into.
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    // Each with whether it is rollgate's (an unreadable hook counts as
    // someone else's).
    let mut chained: Vec<(PathBuf, bool)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.as_encoded_bytes().starts_with(b"pre-receive."))
        })
        .map(|p| {
            let ours = is_rollgate_pre_receive(&read(&p));
            (p, ours)
        })
        .collect();
    // The driver's `$0.*`: the shell sorts it; gitolite names them h00-,
    // h01-, ... which sort the same in every locale.
    chained.sort_by(|(a, _), (b, _)| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    // The first: listed twice, the first one deploys.
    let Some(first) = chained.iter().position(|(_, ours)| *ours) else {
        return Ok(());
    };
    let after: Vec<String> = chained[first + 1..]
        .iter()
        .filter(|(p, ours)| !ours && rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok())
        .map(|(p, _)| p.display().to_string())
        .collect();
    if after.is_empty() {
        return Ok(());
    }
    Err(UserError::failed(format!(
        "{} runs the pre-receive hooks {} after rollgate's ({}): one of them could refuse \
         this push after rollgate deployed it, so nothing was deployed",
        dir.join("pre-receive").display(),
        after.join(", "),
        chained[first].0.display()
    ))
    .hint(
        "make rollgate the last pre-receive hook: with gitolite's repo-specific hooks, name it \
         last in `option hook.pre-receive = ...` in gitolite.conf, then push again",
    )
    .into())
}

/// `receive.denyCurrentBranch` and `receive.denyDeleteCurrent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deny {
    Ignore,
    Warn,
    Refuse,
    UpdateInstead,
}

struct Rules {
    deny_non_fast_forwards: bool,
    deny_deletes: bool,
    deny_current_branch: Deny,
    deny_delete_current: Deny,
}

impl Rules {
    fn read(config: &Config) -> Result<Rules> {
        Ok(Rules {
            deny_non_fast_forwards: flag(config, "receive.denyNonFastForwards")?,
            deny_deletes: flag(config, "receive.denyDeletes")?,
            // Unset, git refuses (with a long explanation).
            deny_current_branch: deny(config, "receive.denyCurrentBranch")?,
            deny_delete_current: deny(config, "receive.denyDeleteCurrent")?,
        })
    }

    /// git's own refusals for one ref, in git's order.
    fn apply(&self, repo: &Repository, heads: &CheckedOut, u: &RefUpdate) -> Result<()> {
        let name = u.refname.as_str();
        let branch = name.starts_with("refs/heads/");
        if heads.in_work_tree(name) {
            match self.deny_current_branch {
                Deny::Ignore | Deny::Warn => {}
                Deny::Refuse => refuse(
                    name,
                    "it is checked out in a work tree of this non-bare repository \
                     (receive.denyCurrentBranch)",
                    "serve a bare repository: git clone --bare, and install the hook there",
                )?,
                Deny::UpdateInstead => refuse(
                    name,
                    "it is checked out in a work tree and receive.denyCurrentBranch is \
                     updateInstead: git updates that work tree after this hook, and may \
                     refuse then (local changes), which rollgate cannot know beforehand",
                    "serve a bare repository: git clone --bare, and install the hook there",
                )?,
            }
        }
        if u.old.is_some() && u.new.is_none() {
            if self.deny_deletes && branch {
                refuse(
                    name,
                    "receive.denyDeletes forbids deleting a branch",
                    "push without the deletion",
                )?;
            }
            if heads.is_current(name)
                && matches!(self.deny_delete_current, Deny::Refuse | Deny::UpdateInstead)
            {
                refuse(
                    name,
                    "it is the repository's current branch (HEAD), which git refuses to \
                     delete (receive.denyDeleteCurrent)",
                    "push without the deletion",
                )?;
            }
        }
        if let (true, true, Some(old), Some(new)) =
            (self.deny_non_fast_forwards, branch, u.old, u.new)
        {
            if !is_commit(repo, old) || !is_commit(repo, new) {
                refuse(
                    name,
                    "receive.denyNonFastForwards is set and the old or new value is not a commit",
                    "push a commit",
                )?;
            }
            let forward = old == new || repo.graph_descendant_of(new, old).unwrap_or(false);
            if !forward {
                refuse(
                    name,
                    &format!(
                        "{} -> {} is not a fast-forward, and receive.denyNonFastForwards \
                         forbids rewinding a branch",
                        short(old),
                        short(new)
                    ),
                    "to put hosts back on an older revision without rewinding the branch, \
                     push it to refs/deploy/GROUP (git push -f origin REV:refs/deploy/GROUP) \
                     or revert and push",
                )?;
            }
        }
        Ok(())
    }
}

fn is_commit(repo: &Repository, id: Oid) -> bool {
    repo.find_object(id, None)
        .is_ok_and(|o| o.kind() == Some(ObjectType::Commit))
}

fn refuse(name: &str, why: &str, hint: &str) -> Result<()> {
    Err(UserError::failed(format!(
        "git will refuse {name}: {why}; so nothing was deployed"
    ))
    .hint(hint)
    .into())
}

fn flag(config: &Config, key: &str) -> Result<bool> {
    match config.get_bool(key) {
        Ok(b) => Ok(b),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("{key} in the git config is not a boolean")),
    }
}

/// As git reads these: `ignore`, `warn`, `refuse`, `updateInstead` (any
/// case), else a boolean (true: refuse); unset means refuse.
fn deny(config: &Config, key: &str) -> Result<Deny> {
    let value = match config.get_string(key) {
        Ok(v) => v,
        Err(e) if e.code() == ErrorCode::NotFound => return Ok(Deny::Refuse),
        Err(e) => return Err(e).with_context(|| format!("cannot read {key} from the git config")),
    };
    Ok(match value.to_ascii_lowercase().as_str() {
        "ignore" => Deny::Ignore,
        "warn" => Deny::Warn,
        "refuse" => Deny::Refuse,
        "updateinstead" => Deny::UpdateInstead,
        _ => match Config::parse_bool(value.as_str()) {
            Ok(true) => Deny::Refuse,
            Ok(false) => Deny::Ignore,
            Err(_) => {
                return Err(UserError::failed(format!(
                    "{key} = {value:?} in the git config is neither ignore, warn, refuse, \
                     updateInstead nor a boolean; git itself would fail on it"
                ))
                .into());
            }
        },
    })
}

/// Which branches are checked out where.
struct CheckedOut {
    /// What HEAD names (bare or not): the current branch.
    head: Option<String>,
    /// What the HEAD of each non-bare work tree names (the repository's
    /// own, if it has one, and every linked work tree).
    work_trees: Vec<String>,
}

impl CheckedOut {
    fn of(repo: &Repository) -> Result<CheckedOut> {
        let head_of = |r: &Repository| {
            r.find_reference("HEAD")
                .ok()
                .and_then(|h| h.symbolic_target().ok().flatten().map(str::to_string))
        };
        let head = head_of(repo);
        let mut work_trees = Vec::new();
        if !repo.is_bare() {
            work_trees.extend(head.clone());
        }
        let names = repo
            .worktrees()
            .context("cannot list the repository's work trees")?;
        for name in names.iter().flatten().flatten() {
            let linked = repo
                .find_worktree(name)
                .and_then(|w| Repository::open_from_worktree(&w));
            if let Ok(linked) = linked {
                work_trees.extend(head_of(&linked));
            }
        }
        Ok(CheckedOut { head, work_trees })
    }

    fn in_work_tree(&self, name: &str) -> bool {
        self.work_trees.iter().any(|b| b == name)
    }

    fn is_current(&self, name: &str) -> bool {
        self.head.as_deref() == Some(name) || self.in_work_tree(name)
    }
}

/// The `update` hook git would run: `update` in `core.hooksPath` or else
/// `<git dir>/hooks`, if executable. A relative `core.hooksPath` is taken
/// as git takes it: relative to receive-pack's working directory, which is
/// this hook's too (the git directory, for a push even in a non-bare
/// repository).
fn update_hook(repo: &Repository, config: &Config) -> Option<PathBuf> {
    let dir = config
        .get_path("core.hooksPath")
        .unwrap_or_else(|_| repo.path().join("hooks"));
    let path = dir.join("update");
    let runnable = rustix::fs::access(&path, rustix::fs::Access::EXEC_OK).is_ok();
    (runnable && path.is_file()).then_some(path)
}

fn run_update_hook(hook: &Path, u: &RefUpdate) -> Result<()> {
    let hex = |id: Option<Oid>| id.unwrap_or(Oid::ZERO_SHA1).to_string();
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot pass stderr to the update hook")?;
    let mut cmd = Command::new(hook);
    cmd.args([u.refname.clone(), hex(u.old), hex(u.new)])
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .stderr(Stdio::inherit());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("GIT_PUSH_OPTION_") {
            cmd.env_remove(name);
        }
    }
    let result = cmd.status();
    let why = match result {
        Ok(status) if status.success() => return Ok(()),
        Ok(status) => match status.code() {
            Some(code) => format!("exit status {code}"),
            None => status.to_string(),
        },
        Err(e) => format!("could not run it: {e}"),
    };
    Err(UserError::failed(format!(
        "git will refuse {}: the repository's update hook {} refused it ({why}); \
         so nothing was deployed",
        u.refname,
        hook.display()
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(lines: &[(&str, &str)]) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        let mut config = Config::open(&path).unwrap();
        for (k, v) in lines {
            config.set_str(k, v).unwrap();
        }
        (dir, Config::open(&path).unwrap())
    }

    #[test]
    fn deny_values_parse_as_git_parses_them() {
        let (_d, c) = config_with(&[
            ("receive.denyCurrentBranch", "UpdateInstead"),
            ("receive.denyDeleteCurrent", "false"),
        ]);
        assert_eq!(
            deny(&c, "receive.denyCurrentBranch").unwrap(),
            Deny::UpdateInstead
        );
        assert_eq!(deny(&c, "receive.denyDeleteCurrent").unwrap(), Deny::Ignore);
        assert_eq!(deny(&c, "receive.unset").unwrap(), Deny::Refuse);
        let (_d, c) = config_with(&[("receive.denyCurrentBranch", "sometimes")]);
        assert!(deny(&c, "receive.denyCurrentBranch").is_err());
    }

    #[test]
    fn flags_default_to_false_and_refuse_garbage() {
        let (_d, c) = config_with(&[
            ("receive.denyDeletes", "yes"),
            ("receive.denyNonFastForwards", "maybe"),
        ]);
        assert!(flag(&c, "receive.denyDeletes").unwrap());
        assert!(!flag(&c, "receive.unset").unwrap());
        assert!(flag(&c, "receive.denyNonFastForwards").is_err());
    }
}
