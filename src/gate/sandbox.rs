//! Where a check runs. A check is code from the push, run on the git server
//! before anything is accepted, so it runs under bubblewrap: no network, the
//! system's programs read-only, the pushed directory at `{dir}` (and at the
//! service's `target`), a private `/tmp`, `/run` and `/var`, its own PID
//! namespace, and an explicit environment. It sees none of: the hook user's
//! home, the bare repository, the journal, files only root can read. A hook
//! running as root drops to `nobody` before bubblewrap starts, because a
//! user namespace made by root still reads as root.
//!
//! The server's policy (`rollgate/policy.toml`, `sandbox = false`) can turn
//! it off; checks then run bare with the same explicit environment, and
//! every report line says "unsandboxed".

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::error::UserError;
use crate::policy::{self, Policy};
use crate::process::{self, Failure, Finished};
use crate::source::worktree::Worktree;

/// `PATH` inside a check: the usual sbin and bin directories.
const CHECK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The unprivileged user a root hook runs checks as (`nobody`/`nogroup`).
const SANDBOX_ID: u32 = 65534;
/// HOME and TMPDIR inside the sandbox (its `/tmp` is a private tmpfs).
const SANDBOX_HOME: &str = "/tmp/home";
const SANDBOX_TMP: &str = "/tmp";
/// Directories of `/var` whose first-level subdirectories are recreated,
/// empty and writable, in the sandbox's private `/var`: packaged checkers
/// expect their own (nginx -t creates `/var/lib/nginx/body`).
const VAR_SKELETON: &[&str] = &["lib", "log", "cache", "spool"];

/// How every check of one gate runs.
pub(crate) enum Runner {
    Sandboxed(Sandbox),
    /// `sandbox = false` in the policy: in the work tree, as the hook user.
    /// The temp dir holds each check's private HOME and TMPDIR.
    Bare {
        worktree: PathBuf,
        homes: tempfile::TempDir,
    },
}

pub(crate) struct Sandbox {
    /// `setpriv` and the arguments that drop root, when the hook is root.
    drop_root: Option<Vec<String>>,
    bwrap: String,
    /// The work tree, mounted read-only at its own path (so `{dir}`,
    /// `{worktree}` and relative paths mean what they mean outside).
    worktree: PathBuf,
    var_dirs: Vec<String>,
    /// The policy file to name in the hint when the sandbox cannot start.
    policy: String,
    /// Whether an empty run starts, once asked: `None` if it does, else
    /// bwrap's words.
    works: std::sync::OnceLock<Option<String>>,
}

/// Whether the server's policy (`<git_dir>/rollgate/policy.toml`, never a
/// pushed tree) runs checks in the sandbox; a missing file means yes.
fn sandbox_enabled(git_dir: &Path) -> Result<bool> {
    Ok(Policy::load_from(&git_dir.join(policy::FILE))?.sandbox)
}

impl Runner {
    /// The runner for checks reading `worktree`; `git_dir` holds the
    /// server's policy (`None`: no repository, the default policy). If the
    /// sandbox cannot start, this is the error that rejects the push.
    pub(crate) fn new(git_dir: Option<&Path>, worktree: &Worktree) -> Result<Runner> {
        let enabled = match git_dir {
            Some(dir) => sandbox_enabled(dir)?,
            None => true,
        };
        if !enabled {
            // Named like a work tree, so a killed hook's is swept too.
            let homes = tempfile::Builder::new()
                .prefix(&format!("rollgate-{}-check-", std::process::id()))
                .tempdir()
                .context("cannot create a private HOME for checks (is TMPDIR writable?)")?;
            return Ok(Runner::Bare {
                worktree: worktree.root().to_path_buf(),
                homes,
            });
        }
        let policy = match git_dir {
            Some(dir) => dir
                .join("rollgate")
                .join("policy.toml")
                .display()
                .to_string(),
            None => "the repository's rollgate/policy.toml".to_string(),
        };
        let sandbox = Sandbox::new(worktree, &policy).map_err(|e| cannot_start(&e, &policy))?;
        Ok(Runner::Sandboxed(sandbox))
    }

    /// After a check failed: whether the sandbox itself cannot start (no
    /// user namespaces, a work tree the sandbox user cannot reach), which
    /// is then the error that rejects the push, instead of every check
    /// failing. One empty run, the first time it is asked; a gate whose
    /// checks all pass never pays for it.
    pub(crate) fn ensure_works(&self) -> Result<()> {
        let Runner::Sandboxed(sandbox) = self else {
            return Ok(());
        };
        let broken = sandbox.works.get_or_init(|| sandbox.probe().err());
        match broken {
            None => Ok(()),
            Some(said) => Err(cannot_start(&anyhow::anyhow!("{said}"), &sandbox.policy)),
        }
    }

    pub(crate) fn sandboxed(&self) -> bool {
        matches!(self, Runner::Sandboxed(_))
    }

    /// Runs one check's argv (placeholders already filled in). `dir` is the
    /// pushed directory, `target` where the service's files live on a host.
    pub(crate) fn run(
        &self,
        argv: &[String],
        dir: &Path,
        target: Option<&str>,
        timeout: Duration,
    ) -> Result<Finished, Failure> {
        match self {
            Runner::Sandboxed(sandbox) => {
                let full = sandbox.argv(argv, dir, target);
                // setpriv and bwrap themselves get the check's environment
                // too: nothing of the client's reaches even them.
                process::run_in_env(&full, &sandbox.worktree, timeout, &check_env(None))
                    .map_err(|f| as_the_check(f, &argv[0]))
            }
            Runner::Bare { worktree, homes } => {
                let private = tempfile::Builder::new()
                    .prefix("check-")
                    .tempdir_in(homes.path())
                    .map_err(|error| Failure::NotStarted {
                        program: argv[0].clone(),
                        error,
                    })?;
                process::run_in_env(argv, worktree, timeout, &check_env(Some(private.path())))
            }
        }
    }
}

/// The push's error when the sandbox cannot start, with what to check.
fn cannot_start(e: &anyhow::Error, policy: &str) -> anyhow::Error {
    let who = if nix::unistd::geteuid().is_root() {
        format!("uid {SANDBOX_ID}, as the hook runs as root")
    } else {
        "the hook user".to_string()
    };
    anyhow::Error::new(
        UserError::failed(format!("the check sandbox cannot start: {e:#}")).hint(format!(
            "checks run under bubblewrap (Debian package `bubblewrap`, user namespaces \
             enabled) as {who}, who must be able to reach the temporary work tree in \
             TMPDIR; to run pushed checks bare instead, set `sandbox = false` in {policy}"
        )),
    )
}

/// A failure of `setpriv … bwrap … ARGV` as the pusher knows it: a failure
/// of ARGV's program. bwrap's "execvp" error means it is not there.
fn as_the_check(failure: Failure, program: &str) -> Failure {
    let program = program.to_string();
    match failure {
        Failure::Exited { output, .. } if output.starts_with("bwrap: execvp ") => {
            Failure::NotStarted {
                program,
                error: std::io::Error::new(std::io::ErrorKind::NotFound, output.trim()),
            }
        }
        Failure::Exited { status, output, .. } => Failure::Exited {
            program,
            status,
            output,
        },
        Failure::TimedOut { after, output, .. } => Failure::TimedOut {
            program,
            after,
            output,
        },
        not_started => not_started,
    }
}

/// The whole environment of a check: nothing from the client (`LC_*`,
/// `SSH_*`, `GIT_*`) or the hook. `private`: a bare check's HOME/TMPDIR.
fn check_env(private: Option<&Path>) -> Vec<(String, String)> {
    let (home, tmp) = match private {
        Some(dir) => (dir.display().to_string(), dir.display().to_string()),
        None => (SANDBOX_HOME.to_string(), SANDBOX_TMP.to_string()),
    };
    [
        ("PATH", CHECK_PATH.to_string()),
        ("LANG", "C.UTF-8".to_string()),
        ("HOME", home),
        ("TMPDIR", tmp),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Sandbox {
    fn new(worktree: &Worktree, policy: &str) -> Result<Sandbox> {
        let bwrap = find("bwrap")?;
        let root = nix::unistd::geteuid().is_root();
        let drop_root = if root {
            let setpriv = find("setpriv")?;
            Some(vec![
                setpriv,
                format!("--reuid={SANDBOX_ID}"),
                format!("--regid={SANDBOX_ID}"),
                "--clear-groups".to_string(),
                "--".to_string(),
            ])
        } else {
            None
        };
        if root {
            open_to_sandbox_user(worktree.root())?;
        } else {
            // The sandbox runs as the hook user: nobody else needs in.
            fs::set_permissions(worktree.root(), fs::Permissions::from_mode(0o700))?;
        }
        Ok(Sandbox {
            drop_root,
            bwrap,
            worktree: worktree.root().to_path_buf(),
            var_dirs: var_skeleton(),
            policy: policy.to_string(),
            works: std::sync::OnceLock::new(),
        })
    }

    /// One empty run: `Err` with what went wrong if it does not start.
    fn probe(&self) -> Result<(), String> {
        let probe = self.argv(&["true".to_string()], &self.worktree, None);
        process::run_in_env(
            &probe,
            &self.worktree,
            Duration::from_secs(30),
            &check_env(None),
        )
        .map(drop)
        .map_err(|f| match f.output().trim() {
            "" => f.to_string(),
            // bwrap's own words ("bwrap: Can't find source path …").
            said => said.to_string(),
        })
    }

    /// `[setpriv …] bwrap OPTIONS -- ARGV`.
    fn argv(&self, check: &[String], dir: &Path, target: Option<&str>) -> Vec<String> {
        let mut a: Vec<String> = self.drop_root.clone().unwrap_or_default();
        a.push(self.bwrap.clone());
        let mut add = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        add(&[
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
        ]);
        for (k, v) in check_env(None) {
            add(&["--setenv", &k, &v]);
        }
        add(&["--ro-bind", "/usr", "/usr"]);
        // Merged /usr: /bin is a link into it; on other layouts, a bind.
        for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = format!("/{top}");
            match fs::read_link(&host) {
                Ok(to) => add(&["--symlink", &to.display().to_string(), &host]),
                Err(_) if Path::new(&host).is_dir() => add(&["--ro-bind", &host, &host]),
                Err(_) => {}
            }
        }
        // Users and groups (names for ids), the loader's cache and the
        // alternatives links (`awk`, `editor`): no secrets, no root-only file.
        add(&["--ro-bind", "/etc/passwd", "/etc/passwd"]);
        add(&["--ro-bind", "/etc/group", "/etc/group"]);
        add(&["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]);
        add(&["--ro-bind-try", "/etc/alternatives", "/etc/alternatives"]);
        add(&["--proc", "/proc"]);
        // Device nodes one by one: `--dev` as an unprivileged user nests a
        // second user namespace in which `--cap-add` stops working.
        for dev in ["null", "zero", "full", "random", "urandom"] {
            let dev = format!("/dev/{dev}");
            add(&["--dev-bind", &dev, &dev]);
        }
        add(&["--tmpfs", "/tmp", "--dir", SANDBOX_HOME, "--tmpfs", "/run"]);
        add(&["--tmpfs", "/var", "--symlink", "../run", "/var/run"]);
        add(&["--dir", "/var/tmp"]);
        for d in &self.var_dirs {
            add(&["--dir", d]);
        }
        let worktree = self.worktree.display().to_string();
        add(&["--ro-bind", &worktree, &worktree]);
        if let Some(target) = target {
            add(&["--ro-bind", &dir.display().to_string(), target]);
        }
        // Its own network namespace has only loopback: binding :80 there
        // (nginx and haproxy do in a check) reaches nothing.
        add(&["--cap-add", "CAP_NET_BIND_SERVICE"]);
        add(&["--chdir", &worktree, "--remount-ro", "/", "--"]);
        a.extend(check.iter().cloned());
        a
    }
}

fn find(program: &str) -> Result<String> {
    let path = which::which_in(program, Some(CHECK_PATH), "/")
        .map_err(|_| anyhow::anyhow!("`{program}` not found in {CHECK_PATH}"))?;
    Ok(path.display().to_string())
}

/// A root hook's work tree is root's (mode 0700). The sandbox user must
/// reach and read it: the root directory goes to group `nogroup`, readable
/// by that group only (no other user can list or enter it), and what is
/// inside gets read (and directory search) permission for others, which
/// is what git's own checkout gives under the usual umask.
fn open_to_sandbox_user(root: &Path) -> Result<()> {
    std::os::unix::fs::chown(root, None, Some(SANDBOX_ID))
        .with_context(|| format!("cannot hand {} to the sandbox user", root.display()))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o750))?;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_symlink() {
                continue;
            }
            let path = entry.path();
            let mode = entry.metadata()?.mode() & 0o7777;
            let wanted = if kind.is_dir() {
                stack.push(path.clone());
                mode | 0o005
            } else {
                mode | 0o004
            };
            if wanted != mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(wanted))?;
            }
        }
    }
    Ok(())
}

/// `/var/lib/nginx`, `/var/log/nginx`, …: the names of the host's
/// first-level directories under `VAR_SKELETON` (names only, never their
/// contents), made empty in the sandbox's `/var`.
fn var_skeleton() -> Vec<String> {
    let mut out = Vec::new();
    for top in VAR_SKELETON {
        out.push(format!("/var/{top}"));
        let Ok(entries) = fs::read_dir(format!("/var/{top}")) else {
            continue;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        out.extend(names.into_iter().map(|n| format!("/var/{top}/{n}")));
    }
    out
}

/// Rewrites `target/` in a check's output to the pushed directory's
/// repository path: inside the sandbox they are the same files.
pub(crate) fn target_to_repo(text: &str, target: Option<&str>, rel: &str) -> String {
    match target {
        Some(t) => text.replace(&format!("{}/", t.trim_end_matches('/')), &format!("{rel}/")),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file_absent_means_sandboxed() {
        let dir = tempfile::tempdir().unwrap();
        assert!(sandbox_enabled(dir.path()).unwrap());
        fs::create_dir(dir.path().join("rollgate")).unwrap();
        let file = dir.path().join("rollgate/policy.toml");
        fs::write(&file, "branch = \"main\"\nsandbox = false\n").unwrap();
        assert!(!sandbox_enabled(dir.path()).unwrap());
        fs::write(&file, "sandbox = \"no\"\n").unwrap();
        let e = format!("{:#}", sandbox_enabled(dir.path()).unwrap_err());
        assert!(e.contains("policy.toml:1:11"), "{e}");
    }

    #[test]
    fn check_env_has_nothing_from_outside() {
        let env = check_env(None);
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["PATH", "LANG", "HOME", "TMPDIR"]);
    }

    #[test]
    fn target_paths_in_output_become_repository_paths() {
        let out = target_to_repo(
            "/etc/ssh/sshd_config.d/x.conf line 1: Bad",
            Some("/etc/ssh"),
            "files/sshd/9.6",
        );
        assert_eq!(out, "files/sshd/9.6/sshd_config.d/x.conf line 1: Bad");
    }
}
