//! Keeps the deploy lock until git has finished with the push.
//!
//! git moves a push's refs only after the pre-receive hook has exited (and
//! after the `update` hook and its own checks). If the lock died with the
//! hook, a push waiting for it would check its ref before git moved it,
//! deploy, and then have its ref update refused by git (`cannot lock ref`):
//! its hosts would run a revision that is on no branch.
//!
//! So the hook starts a keeper: `rollgate hook keep-lock`, whose stdin is a
//! duplicate of the locked file descriptor (an OS file lock lasts while any
//! descriptor of it is open). The keeper waits for `git receive-pack` to
//! exit, watching it through a pidfd (no polling; a plain check every 250 ms
//! where the kernel has no pidfd), and never longer than [`KEEP_AT_MOST`].
//! Its stdout and stderr are `/dev/null`, so it never holds the pusher's
//! connection open, and it ends with receive-pack whether the hook exited,
//! failed or was killed.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};

/// The longest the lock outlives the hook, should receive-pack hang after
/// it (a stuck `update` or `post-receive` hook). Git's own work after the
/// hook takes milliseconds; this bound only stops a hung server process
/// from blocking every later deploy forever.
pub(crate) const KEEP_AT_MOST: Duration = Duration::from_secs(10 * 60);

/// How often the keeper looks at receive-pack where pidfds are missing.
const FALLBACK_CHECK: Duration = Duration::from_millis(250);

/// The hidden subcommand the keeper runs as.
pub(crate) const SUBCOMMAND: [&str; 2] = ["hook", "keep-lock"];

/// A process, identified so that a reused pid is never mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Process {
    pub(crate) pid: i32,
    /// Field 22 of `/proc/PID/stat`: when it started, in clock ticks.
    pub(crate) started: u64,
}

/// Starts the keeper for `lock` (already locked by this process). Nothing
/// to do when the hook's parent is gone: then git moves no ref after it.
pub(crate) fn spawn(lock: &File) -> Result<()> {
    let Some(git) = receive_pack() else {
        return Ok(());
    };
    let held = lock
        .try_clone()
        .context("cannot duplicate the deploy lock's file descriptor")?;
    let mut cmd = Command::new("/proc/self/exe");
    // /proc/self/exe is this very binary even if it was replaced on disk
    // meanwhile; argv[0] names it for `ps`.
    if let Ok(me) = std::env::current_exe() {
        std::os::unix::process::CommandExt::arg0(&mut cmd, me);
    }
    cmd.args(SUBCOMMAND)
        .args(["--pid", &git.pid.to_string()])
        .args(["--started", &git.started.to_string()])
        .env_clear()
        .stdin(Stdio::from(held))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context(
            "cannot start the process that keeps the deploy lock until git has moved the refs",
        )?;
    // Not waited for: it outlives this hook on purpose, and the kernel
    // reparents it when the hook exits.
    Ok(())
}

/// The keeper's whole life: hold stdin (the lock) until `git` exits, or
/// [`KEEP_AT_MOST`] has passed.
pub(crate) fn keep(git: Process) {
    let started = Instant::now();
    let left = || KEEP_AT_MOST.saturating_sub(started.elapsed());
    let pidfd = match Pid::from_raw(git.pid).map(|pid| pidfd_open(pid, PidfdFlags::empty())) {
        None | Some(Err(Errno::SRCH)) => return,
        Some(Ok(fd)) => Some(fd),
        // An old kernel, or a sandbox that filters the syscall.
        Some(Err(_)) => None,
    };
    // The pidfd may name a process that reused the pid after receive-pack
    // ended: then it is not the one we were asked to wait for.
    if start_time(git.pid) != Some(git.started) {
        return;
    }
    match pidfd {
        Some(fd) => loop {
            let wait = left();
            if wait.is_zero() {
                return;
            }
            let timeout = Timespec {
                tv_sec: wait.as_secs() as i64,
                tv_nsec: i64::from(wait.subsec_nanos()),
            };
            let mut fds = [PollFd::new(&fd, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Err(Errno::INTR) => continue,
                // Readable: it exited. 0: the bound. An error: nothing
                // sensible to wait on; let go rather than hold forever.
                _ => return,
            }
        },
        None => {
            while start_time(git.pid) == Some(git.started) && !left().is_zero() {
                std::thread::sleep(FALLBACK_CHECK.min(left()));
            }
        }
    }
}

/// The `git receive-pack` this hook runs under: the nearest ancestor that
/// is one (a hook may be started through a wrapper, e.g. gitolite's
/// multi-hook driver), else the hook's parent, whatever it is. `None` when
/// the parent is gone (the hook was reparented to init).
fn receive_pack() -> Option<Process> {
    let parent = std::os::unix::process::parent_id() as i32;
    if parent <= 1 {
        return None;
    }
    let mut pid = parent;
    for _ in 0..16 {
        if is_receive_pack(pid) {
            return Some(Process {
                pid,
                started: start_time(pid)?,
            });
        }
        match stat_field(pid, 4).and_then(|p| p.parse().ok()) {
            Some(ppid) if ppid > 1 => pid = ppid,
            _ => break,
        }
    }
    Some(Process {
        pid: parent,
        started: start_time(parent)?,
    })
}

/// Whether process `pid` is a `git receive-pack`.
fn is_receive_pack(pid: i32) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    runs_receive_pack(&args)
}

/// `git-receive-pack ...` or `git receive-pack ...` (git's own options may
/// come first, e.g. `git -c x=y receive-pack`), by any path.
fn runs_receive_pack(args: &[String]) -> bool {
    let Some((arg0, rest)) = args.split_first() else {
        return false;
    };
    let program = Path::new(arg0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match program.as_str() {
        "git-receive-pack" => true,
        "git" => {
            let mut rest = rest.iter();
            while let Some(a) = rest.next() {
                match a.as_str() {
                    "-c" | "-C" | "--git-dir" | "--work-tree" | "--namespace" | "--exec-path"
                    | "--config-env" => {
                        rest.next();
                    }
                    s if s.starts_with('-') => {}
                    s => return s == "receive-pack",
                }
            }
            false
        }
        _ => false,
    }
}

fn start_time(pid: i32) -> Option<u64> {
    stat_field(pid, 22)?.parse().ok()
}

/// Field `n` (1-based, as `man proc` counts) of `/proc/PID/stat`. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`.
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace()
        .nth(n.checked_sub(3)?)
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_start_time_and_parent() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(
            stat_field(me, 4).and_then(|p| p.parse::<u32>().ok()),
            Some(std::os::unix::process::parent_id())
        );
        assert!(!is_receive_pack(me));
    }

    #[test]
    fn knows_receive_pack_by_its_command_line() {
        let args = |line: &str| line.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(runs_receive_pack(&args("git-receive-pack /srv/infra.git")));
        assert!(runs_receive_pack(&args(
            "/usr/lib/git-core/git-receive-pack infra"
        )));
        assert!(runs_receive_pack(&args(
            "git receive-pack --stateless-rpc ."
        )));
        assert!(runs_receive_pack(&args(
            "/usr/bin/git -c a=b receive-pack x"
        )));
        assert!(!runs_receive_pack(&args("git upload-pack x")));
        assert!(!runs_receive_pack(&args("git -c receive-pack upload-pack")));
        assert!(!runs_receive_pack(&args("sh -c git-receive-pack x")));
        assert!(!runs_receive_pack(&[]));
    }

    #[test]
    fn keeper_returns_at_once_for_a_process_that_is_gone() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let started = start_time(pid);
        child.wait().unwrap();
        let begun = Instant::now();
        keep(Process {
            pid,
            started: started.unwrap_or(0),
        });
        assert!(begun.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn keeper_waits_for_the_process_to_end() {
        let mut child = Command::new("sleep").arg("0.3").spawn().unwrap();
        let pid = child.id() as i32;
        let git = Process {
            pid,
            started: start_time(pid).unwrap(),
        };
        let reaper = std::thread::spawn(move || child.wait());
        let begun = Instant::now();
        keep(git);
        let took = begun.elapsed();
        reaper.join().unwrap().unwrap();
        assert!(took >= Duration::from_millis(250), "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
}
