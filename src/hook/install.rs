//! `rollgate hook install` / `uninstall`: the pre-receive shim, the one
//! git setting push options need, and (once) the server's policy file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use git2::{ConfigLevel, Repository};

use crate::error::UserError;
use crate::policy;

const TEMPLATE: &str = include_str!("../../hooks/pre-receive");
const PRE_PUSH_TEMPLATE: &str = include_str!("../../hooks/pre-push");
const POST_RECEIVE_TEMPLATE: &str = include_str!("../../hooks/post-receive");
/// Identifies a hook rollgate wrote, so it is never confused with a user's.
const MARKER: &str = "rollgate-managed";
const BACKUP_SUFFIX: &str = ".rollgate-backup";
/// Remembers that install turned push options on, so uninstall turns them
/// off only if it was us.
const OWNED_SETTING: &str = "rollgate.ownsAdvertisePushOptions";

/// Whether a hook's text is a rollgate pre-receive shim: one `hook install`
/// wrote, or one written by hand that runs `rollgate hook pre-receive`
/// (gitolite's repo-specific hooks are files the admin puts in place).
pub(crate) fn is_rollgate_pre_receive(text: &str) -> bool {
    text.contains(MARKER) || text.contains("hook pre-receive")
}

/// Whether a hook's text is a multi-hook driver: gitolite's repo-specific
/// hooks replace `hooks/pre-receive` with a script that runs every
/// `hooks/pre-receive.*` in turn (`for h in $0.*`), stopping at the first
/// that fails.
pub(crate) fn is_multi_hook_driver(text: &str) -> bool {
    text.contains("$0.*")
}

pub(crate) struct Installed {
    pub(crate) hook: PathBuf,
    pub(crate) backup: Option<PathBuf>,
    pub(crate) unchanged: bool,
    /// The policy file, when this install wrote it (it never overwrites one).
    pub(crate) policy: Option<PathBuf>,
    /// A post-receive hook rollgate did not write, left alone (without
    /// --force): the history is then published once receive-pack exits.
    pub(crate) foreign_post_receive: Option<PathBuf>,
}

/// Where git looks for hooks: `core.hooksPath` (relative to the repository
/// for a bare one) or `<git dir>/hooks`.
pub(crate) fn hooks_dir(repo: &Repository) -> Result<PathBuf> {
    let config = repo
        .config()
        .context("cannot read the repository's git config")?;
    match config.get_path("core.hooksPath") {
        Ok(p) if p.is_absolute() => Ok(p),
        Ok(p) => Ok(repo.workdir().unwrap_or(repo.path()).join(p)),
        Err(_) => Ok(repo.path().join("hooks")),
    }
}

pub(crate) fn install(repo: &Repository, binary: &Path, force: bool) -> Result<Installed> {
    if let Some(work_tree) = repo.workdir() {
        // git refuses a push to the checked-out branch only after
        // pre-receive: rollgate would deploy what git then throws away.
        return Err(UserError::usage(format!(
            "{} is not a bare repository (it has the work tree {}): git checks a push \
             against the checked-out branch only after the pre-receive hook, so a deploy \
             could run for a push git then refuses",
            repo.path().display(),
            work_tree.display(),
        ))
        .hint(format!(
            "serve a bare clone instead: git clone --bare {} infra.git, then \
             rollgate hook install --repo infra.git",
            work_tree.display()
        ))
        .into());
    }
    let mut installed = write_hook(repo, "pre-receive", TEMPLATE, binary, force)?;
    // Publishes refs/rollgate/journal and refs/deploy/GROUP after the refs
    // moved, before the pusher's `git push` returns. A user's own
    // post-receive is kept unless --force: the lock keeper publishes too.
    let post = hooks_dir(repo)?.join("post-receive");
    let text = fs::read_to_string(&post);
    let foreign = text.as_ref().is_ok_and(|t| !t.contains(MARKER));
    // gitolite's driver stays even with --force: `gitolite setup` would
    // put it back anyway.
    let driver = text.as_ref().is_ok_and(|t| is_multi_hook_driver(t));
    if foreign && (!force || driver) {
        installed.foreign_post_receive = Some(post);
    } else {
        let done = write_hook(repo, "post-receive", POST_RECEIVE_TEMPLATE, binary, force)?;
        installed.unchanged &= done.unchanged;
        installed.backup = installed.backup.or(done.backup);
    }
    let mut local = local_config(repo)?;
    if !matches!(local.get_bool("receive.advertisePushOptions"), Ok(true)) {
        local
            .set_bool("receive.advertisePushOptions", true)
            .and_then(|()| local.set_bool(OWNED_SETTING, true))
            .with_context(|| format!("cannot write {}", repo.path().join("config").display()))?;
    }
    installed.policy = write_policy_once(&repo.path().join(policy::FILE))?;
    Ok(installed)
}

/// `hook install --pre-push`, in a clone: the author's check before a push,
/// of exactly the commits being pushed.
pub(crate) fn install_pre_push(repo: &Repository, binary: &Path, force: bool) -> Result<Installed> {
    if repo.is_bare() {
        return Err(UserError::usage(format!(
            "{} is a bare repository; the pre-push hook belongs in a clone",
            repo.path().display()
        ))
        .hint("on the server, `rollgate hook install` writes the pre-receive hook")
        .into());
    }
    write_hook(repo, "pre-push", PRE_PUSH_TEMPLATE, binary, force)
}

/// Writes hook `name` from `template` (with the binary's path filled in),
/// keeping a hook rollgate did not write only with `force` (as a backup).
fn write_hook(
    repo: &Repository,
    name: &str,
    template: &str,
    binary: &Path,
    force: bool,
) -> Result<Installed> {
    let dir = hooks_dir(repo)?;
    let hook = dir.join(name);
    let script = template.replace("@ROLLGATE@", &shell_quote(&binary.display().to_string()));
    let mut backup = None;
    let mut unchanged = false;
    match fs::read_to_string(&hook) {
        Ok(existing) if existing == script => unchanged = true,
        Ok(existing) if existing.contains(MARKER) => {}
        // Not even with --force: `gitolite setup` would put the driver
        // back over the shim, silently, and pushes would land unchecked.
        Ok(existing) if is_multi_hook_driver(&existing) => {
            return Err(UserError::usage(format!(
                "{} is a multi-hook driver (gitolite's repo-specific hooks): it runs the \
                 {name}.* hooks beside it, and `gitolite setup` would put it back over \
                 rollgate's",
                hook.display()
            ))
            .hint(format!(
                "add rollgate as the last repo-specific {name} hook instead: an executable \
                 LOCAL_CODE/hooks/repo-specific/rollgate running `exec {} hook {name}`, and \
                 `option hook.{name} = ... rollgate` in gitolite.conf (see the README, \
                 Serving the repository)",
                shell_quote(&binary.display().to_string())
            ))
            .into());
        }
        Ok(_) if !force => {
            return Err(UserError::usage(format!(
                "{} exists and was not written by rollgate",
                hook.display()
            ))
            .hint(format!(
                "rerun with --force to replace it (it will be kept as {name}{BACKUP_SUFFIX})"
            ))
            .into());
        }
        Ok(_) => {
            let to = free_backup_path(&hook);
            fs::rename(&hook, &to)
                .with_context(|| format!("cannot move {} aside", hook.display()))?;
            backup = Some(to);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", hook.display())),
    }
    if !unchanged {
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // Write beside and rename, so git never runs a half-written hook.
        let tmp = dir.join(format!(".{name}.rollgate-tmp"));
        fs::write(&tmp, &script).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", tmp.display()))?;
        fs::rename(&tmp, &hook).with_context(|| format!("cannot write {}", hook.display()))?;
    }
    Ok(Installed {
        hook,
        backup,
        unchanged,
        policy: None,
        foreign_post_receive: None,
    })
}

/// Writes the policy with its commented defaults unless a file is there:
/// after the first install it is the admin's.
fn write_policy_once(path: &Path) -> Result<Option<PathBuf>> {
    let dir = path.parent().context("the policy path has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot create {}", path.display())),
    };
    // Not secret, and the hook's user (often not the installer) must read it
    // whatever the installer's umask.
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| file.write_all(policy::DEFAULT_TEXT.as_bytes()))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Some(path.to_path_buf()))
}

pub(crate) struct Uninstalled {
    pub(crate) hook: PathBuf,
    pub(crate) restored: Option<PathBuf>,
}

pub(crate) fn uninstall(repo: &Repository) -> Result<Uninstalled> {
    let done = remove_hook(repo, "pre-receive")?;
    let post = hooks_dir(repo)?.join("post-receive");
    if fs::read_to_string(&post).is_ok_and(|t| t.contains(MARKER)) {
        remove_hook(repo, "post-receive")?;
    }
    let mut local = local_config(repo)?;
    if matches!(local.get_bool(OWNED_SETTING), Ok(true)) {
        let _ = local.remove("receive.advertisePushOptions");
        local
            .remove(OWNED_SETTING)
            .with_context(|| format!("cannot write {}", repo.path().join("config").display()))?;
    }
    Ok(done)
}

/// `hook uninstall --pre-push`, in a clone.
pub(crate) fn uninstall_pre_push(repo: &Repository) -> Result<Uninstalled> {
    remove_hook(repo, "pre-push")
}

/// Removes hook `name` if rollgate wrote it, and puts back what it replaced.
fn remove_hook(repo: &Repository, name: &str) -> Result<Uninstalled> {
    let hook = hooks_dir(repo)?.join(name);
    match fs::read_to_string(&hook) {
        Ok(text) if text.contains(MARKER) => {
            fs::remove_file(&hook).with_context(|| format!("cannot remove {}", hook.display()))?
        }
        Ok(_) => bail!(
            "{} was not written by rollgate; leaving it alone",
            hook.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("no {name} hook at {}", hook.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", hook.display())),
    }
    let backup = PathBuf::from(format!("{}{BACKUP_SUFFIX}", hook.display()));
    let restored = if backup.exists() {
        fs::rename(&backup, &hook)
            .with_context(|| format!("cannot restore {}", backup.display()))?;
        Some(backup)
    } else {
        None
    };
    Ok(Uninstalled { hook, restored })
}

/// The repository's own config file (not the user's or the system's).
fn local_config(repo: &Repository) -> Result<git2::Config> {
    repo.config()
        .and_then(|c| c.open_level(ConfigLevel::Local))
        .with_context(|| format!("cannot open {}", repo.path().join("config").display()))
}

fn free_backup_path(hook: &Path) -> PathBuf {
    let base = format!("{}{BACKUP_SUFFIX}", hook.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

/// Single-quotes a path for the shim's `exec` line.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_paths_with_quotes_and_spaces() {
        assert_eq!(
            shell_quote("/opt/my tools/rollgate"),
            "'/opt/my tools/rollgate'"
        );
        assert_eq!(shell_quote("/a'b"), r"'/a'\''b'");
    }
}
