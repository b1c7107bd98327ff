//! Every child process rollgate starts goes through `run`: argv only (never a
//! shell), an explicit working directory, stdin closed, stdout and stderr
//! captured together (bounded: the first and last [`KEEP`] bytes), and a
//! timeout.
//!
//! Nothing a command starts may outlive it, nor rollgate: not on a timeout,
//! not when the hook is killed with `kill -9`, not a `setsid` daemon. Each
//! command therefore runs under a small supervisor, which is this same
//! binary re-executed as `rollgate __rollgate-supervise ...` (see
//! [`supervisor`]):
//! - it is a child subreaper, so every descendant of the command, even one
//!   that left the process group with `setsid` or double-forked, stays its
//!   descendant and can be found (`/proc/<pid>/task/*/children`) and killed;
//! - it gets SIGTERM when rollgate dies (`PR_SET_PDEATHSIG`, set on itself,
//!   so no `pre_exec` and no unsafe code), and then kills the whole tree;
//! - when the command exits or times out it kills whatever the command left
//!   behind, then reports how the command ended on its own status pipe;
//! - its stdin is the deploy lock's file descriptor while a deploy holds it,
//!   and it holds a shared lock on every live work tree: a killed run's lock
//!   and trees stay held until its supervisors have killed everything.
//!
//! One exception: an OpenSSH connection master (`ControlPersist`) that a
//! command started is left to its own timer when the command exits by
//! itself. It runs no command of the run, only carries later sessions to the
//! same host, and killing it would make every command pay a new key exchange
//! (136 ms of CPU each with OpenSSH's default). It is recognised by what
//! OpenSSH makes of it (the `ssh` binary, root-owned, titled `ssh: PATH
//! [mux]`), and killed like anything else on a timeout or when rollgate dies.
//!
//! rollgate reads the output pipe with `poll`, never blocking on a pipe that
//! some escaped process might keep open: once the supervisor has gone, the
//! output is read for a short grace period and then left.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::{Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// How much of the start and of the end of a command's output is kept; the
/// middle is counted, not stored, so a command printing gigabytes costs at
/// most twice this.
pub(crate) const KEEP: usize = 64 * 1024;

/// The hidden first argument that turns the binary into a supervisor.
const SUPERVISE: &str = "__rollgate-supervise";

/// After the supervisor has gone (and with it every process it knew), how
/// long output still in the pipe is read before giving up on it.
const DRAIN_GRACE: Duration = Duration::from_millis(300);

/// Beyond the command's own timeout, how long rollgate waits for its
/// supervisor before killing it (a supervisor enforces the timeout itself;
/// this only bounds a supervisor that hangs).
const BACKSTOP: Duration = Duration::from_secs(15);

/// A command that ran to a zero exit.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) output: String,
}

/// Why a command did not succeed. "Could not start" is kept apart from "ran
/// and failed" because the fixes differ (install it vs. fix the config).
#[derive(Debug)]
pub(crate) enum Failure {
    NotStarted {
        program: String,
        error: std::io::Error,
    },
    Exited {
        program: String,
        status: String,
        output: String,
    },
    TimedOut {
        program: String,
        after: Duration,
        output: String,
    },
}

impl Failure {
    /// What the command printed before it failed, if it ran.
    pub(crate) fn output(&self) -> &str {
        match self {
            Failure::NotStarted { .. } => "",
            Failure::Exited { output, .. } | Failure::TimedOut { output, .. } => output,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotStarted { program, error }
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                write!(
                    f,
                    "could not start `{program}`: not found (is it installed, and on PATH?)"
                )
            }
            Failure::NotStarted { program, error } => {
                write!(f, "could not start `{program}`: {error}")
            }
            Failure::Exited {
                program, status, ..
            } => write!(f, "`{program}` failed with {status}"),
            Failure::TimedOut { program, after, .. } => write!(
                f,
                "`{program}` timed out after {} and was killed with its child processes",
                humantime::format_duration(*after)
            ),
        }
    }
}

impl std::error::Error for Failure {}

/// Runs `argv` in `cwd`, waiting at most `timeout`.
pub(crate) fn run(argv: &[String], cwd: &Path, timeout: Duration) -> Result<Finished, Failure> {
    run_with_env(argv, cwd, timeout, None, None)
}

/// `run`, with `input` as the command's stdin (a private temporary file
/// the supervisor opens for it, removed once the command is done).
pub(crate) fn run_with_input(
    argv: &[String],
    cwd: &Path,
    timeout: Duration,
    input: &[u8],
) -> Result<Finished, Failure> {
    let file = tempfile::NamedTempFile::new()
        .and_then(|mut f| f.write_all(input).map(|()| f))
        .map_err(|error| Failure::NotStarted {
            program: argv[0].clone(),
            error,
        })?;
    run_with_env(argv, cwd, timeout, None, Some(file.path()))
}

/// `run`, but with exactly `env` as the command's environment (nothing of
/// rollgate's own, nor of the client's) and the program looked up on its
/// `PATH`. Checks run this way (see `gate::sandbox`).
pub(crate) fn run_in_env(
    argv: &[String],
    cwd: &Path,
    timeout: Duration,
    env: &[(String, String)],
) -> Result<Finished, Failure> {
    run_with_env(argv, cwd, timeout, Some(env), None)
}

fn run_with_env(
    argv: &[String],
    cwd: &Path,
    timeout: Duration,
    env: Option<&[(String, String)]>,
    input: Option<&Path>,
) -> Result<Finished, Failure> {
    let program = argv[0].clone();
    let not_started = |error| Failure::NotStarted {
        program: program.clone(),
        error,
    };
    // A name not on PATH is left as it is, so spawning it fails as "not
    // found"; a path (relative to `cwd`) is left alone too. With an explicit
    // environment, its PATH is the one searched.
    let search = env.and_then(|env| env.iter().find(|(k, _)| k == "PATH"));
    let path: PathBuf = match (program.contains('/'), search) {
        (true, _) => program.clone().into(),
        (false, Some((_, dirs))) => {
            which::which_in(&program, Some(dirs), cwd).unwrap_or_else(|_| program.clone().into())
        }
        (false, None) => which::which(&program).unwrap_or_else(|_| program.clone().into()),
    };
    let (out_r, out_w) = std::io::pipe().map_err(not_started)?;
    let (status_r, status_w) = std::io::pipe().map_err(not_started)?;
    // /proc/self/exe, not current_exe(): it still runs this binary after a
    // package upgrade replaced (deleted) the file a running hook came from.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("rollgate")
        .arg(SUPERVISE)
        .arg(timeout.as_millis().to_string())
        .arg(std::process::id().to_string());
    let stdin = {
        let held = holds();
        for tree in &held.trees {
            cmd.arg("--hold").arg(tree);
        }
        if let Some(input) = input {
            cmd.arg("--stdin").arg(input);
        }
        match &held.deploy_lock {
            Some(lock) => Stdio::from(lock.try_clone().map_err(not_started)?),
            None => Stdio::null(),
        }
    };
    cmd.arg("--")
        .arg(&path)
        .args(&argv[1..])
        .current_dir(cwd)
        .stdin(stdin)
        .stdout(out_w)
        .stderr(status_w);
    // Children must not see the hook's GIT_DIR or quarantine: a deploy
    // command that runs git would otherwise act on this repository.
    for name in git_env_names() {
        cmd.env_remove(name);
    }
    if let Some(env) = env {
        // The supervisor passes its environment on to the command as it is.
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    }
    crate::ui::debug(format_args!(
        "run {argv:?} in {} (timeout {})",
        cwd.display(),
        humantime::format_duration(timeout)
    ));
    let spawned = cmd.spawn();
    // The write ends live in `cmd`: close them here, or the pipes never end.
    drop(cmd);
    let mut supervisor = spawned.map_err(not_started)?;
    let read = read_until_gone(out_r, status_r, supervisor.id(), timeout + BACKSTOP);
    let waited = supervisor.wait();
    let output = read.output.text();
    let report = String::from_utf8_lossy(&read.status).into_owned();
    crate::ui::debug(format_args!(
        "{program}: {}, {} bytes of output",
        report.trim(),
        output.len()
    ));
    let mut words = report.split_whitespace();
    match (words.next(), words.next()) {
        (Some("exit"), Some("0")) => Ok(Finished { output }),
        (Some("exit"), Some(code)) => Err(Failure::Exited {
            program,
            status: format!("exit status {code}"),
            output,
        }),
        (Some("signal"), Some(sig)) => Err(Failure::Exited {
            program,
            status: format!("signal {sig}"),
            output,
        }),
        (Some("timeout"), _) => Err(Failure::TimedOut {
            program,
            after: timeout,
            output,
        }),
        (Some("spawn"), Some(errno)) => Err(not_started(match errno.parse::<i32>() {
            Ok(n) if n > 0 => std::io::Error::from_raw_os_error(n),
            _ => std::io::Error::other(report.trim().to_string()),
        })),
        _ => Err(Failure::Exited {
            program,
            status: format!(
                "its supervisor ending unexpectedly ({})",
                match waited {
                    Ok(s) => describe_status(s),
                    Err(e) => e.to_string(),
                }
            ),
            output,
        }),
    }
}

struct Drained {
    output: Bounded,
    status: Vec<u8>,
}

/// Reads the command's output and the supervisor's status report until the
/// supervisor has gone, then whatever output arrives within [`DRAIN_GRACE`].
/// A supervisor still there after `backstop` is sent SIGTERM (it then kills
/// its tree), and SIGKILL a little later.
fn read_until_gone(
    mut out: std::io::PipeReader,
    mut status: std::io::PipeReader,
    supervisor: u32,
    backstop: Duration,
) -> Drained {
    let started = Instant::now();
    let mut output = Bounded::default();
    let mut report = Vec::new();
    let (mut out_open, mut status_open) = (true, true);
    let mut gone_at: Option<Instant> = None;
    let mut signalled = 0;
    // Small: a wide batch runs many commands at once.
    let mut buf = [0u8; 16 * 1024];
    loop {
        if !status_open && gone_at.is_none() {
            gone_at = Some(Instant::now());
        }
        if !out_open && !status_open {
            break;
        }
        if gone_at.is_some_and(|t| t.elapsed() >= DRAIN_GRACE) {
            break;
        }
        if started.elapsed() >= backstop + Duration::from_secs(signalled * 5) && status_open {
            let pid = Pid::from_raw(supervisor as i32);
            let sig = if signalled == 0 {
                Signal::SIGTERM
            } else {
                Signal::SIGKILL
            };
            let _ = kill(pid, sig);
            signalled += 1;
        }
        let mut fds = Vec::with_capacity(2);
        if out_open {
            fds.push(PollFd::new(out.as_fd(), PollFlags::POLLIN));
        }
        if status_open {
            fds.push(PollFd::new(status.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let mut ready = ready.into_iter();
        if out_open && ready.next() == Some(true) {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => output.push(&buf[..n]),
            }
        }
        if status_open && ready.next() == Some(true) {
            match status.read(&mut buf) {
                Ok(0) | Err(_) => status_open = false,
                // The report is one short line; anything longer is not one.
                Ok(n) if report.len() < 4096 => report.extend_from_slice(&buf[..n]),
                Ok(_) => {}
            }
        }
    }
    Drained {
        output,
        status: report,
    }
}

/// The first [`KEEP`] bytes, the last [`KEEP`] bytes, and how many in between.
#[derive(Default)]
struct Bounded {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    omitted: u64,
}

impl Bounded {
    fn push(&mut self, mut data: &[u8]) {
        let room = KEEP - self.head.len();
        let take = room.min(data.len());
        self.head.extend_from_slice(&data[..take]);
        data = &data[take..];
        if data.len() >= KEEP {
            self.omitted += (self.tail.len() + data.len() - KEEP) as u64;
            self.tail.clear();
            self.tail.extend(&data[data.len() - KEEP..]);
        } else {
            let over = (self.tail.len() + data.len()).saturating_sub(KEEP);
            self.tail.drain(..over);
            self.omitted += over as u64;
            self.tail.extend(data);
        }
    }

    fn text(self) -> String {
        let mut bytes = self.head;
        if self.omitted > 0 {
            bytes.extend_from_slice(
                format!("\n... {} bytes omitted ...\n", self.omitted).as_bytes(),
            );
        }
        bytes.extend(self.tail);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => status.to_string(),
    }
}

fn git_env_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .filter(|k| k.starts_with("GIT_"))
            .collect()
    })
}

// ---- what supervisors hold --------------------------------------------------

/// What every supervisor started from now on holds while it lives.
#[derive(Default)]
struct Holds {
    /// A duplicate of the deploy lock's descriptor: the OS lock stays held
    /// while any supervisor (and so any command of this run) is alive.
    deploy_lock: Option<File>,
    /// The lock files of the live work trees (shared locks: the sweep of a
    /// later run takes them exclusively, so it skips a tree in use).
    trees: Vec<PathBuf>,
}

fn holds() -> std::sync::MutexGuard<'static, Holds> {
    static HOLDS: Mutex<Holds> = Mutex::new(Holds {
        deploy_lock: None,
        trees: Vec::new(),
    });
    HOLDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands the deploy lock to every command's supervisor until dropped.
pub(crate) struct SharedLock(());

pub(crate) fn share_deploy_lock(lock: &File) -> std::io::Result<SharedLock> {
    holds().deploy_lock = Some(lock.try_clone()?);
    Ok(SharedLock(()))
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        holds().deploy_lock = None;
    }
}

/// Has every command's supervisor hold a work tree's lock file until dropped.
pub(crate) struct HeldTree(PathBuf);

pub(crate) fn hold_tree(lock_file: &Path) -> HeldTree {
    holds().trees.push(lock_file.to_path_buf());
    HeldTree(lock_file.to_path_buf())
}

impl Drop for HeldTree {
    fn drop(&mut self) {
        holds().trees.retain(|p| *p != self.0);
    }
}

// ---- the supervisor ---------------------------------------------------------

/// If this process was started as a supervisor, supervises and returns its
/// exit code; `None` for every other command line.
pub(crate) fn supervisor() -> Option<ExitCode> {
    let mut args = std::env::args_os().skip(1);
    if args.next()? != SUPERVISE {
        return None;
    }
    let args: Vec<OsString> = args.collect();
    let report = |line: String| {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    };
    match supervise(&args) {
        Ok(line) => report(line),
        Err(e) => report(format!("spawn {} {e}\n", e.raw_os_error().unwrap_or(-1))),
    }
    Some(ExitCode::SUCCESS)
}

enum Ended {
    Exited(std::process::ExitStatus),
    Signalled,
}

/// `TIMEOUT_MS PARENT_PID [--hold FILE]... [--stdin FILE] -- PROGRAM ARGS...`: runs the
/// command, and returns the status line for rollgate once the command and
/// everything it started are gone.
fn supervise(args: &[OsString]) -> std::io::Result<String> {
    let bad = || std::io::Error::other("bad supervisor arguments");
    let mut it = args.iter();
    let timeout_ms: u64 = it
        .next()
        .and_then(|s| s.to_str()?.parse().ok())
        .ok_or_else(bad)?;
    let parent: i32 = it
        .next()
        .and_then(|s| s.to_str()?.parse().ok())
        .ok_or_else(bad)?;
    let mut held = Vec::new();
    let mut stdin = Stdio::null();
    loop {
        match it.next().and_then(|a| a.to_str()) {
            Some("--hold") => {
                let path = it.next().ok_or_else(bad)?;
                // A tree being swept (or already gone) cannot be held; the
                // command then fails on its missing files, visibly.
                if let Ok(f) = File::open(path)
                    && f.try_lock_shared().is_ok()
                {
                    held.push(f);
                }
            }
            Some("--stdin") => stdin = Stdio::from(File::open(it.next().ok_or_else(bad)?)?),
            Some("--") => break,
            _ => return Err(bad()),
        }
    }
    let program = it.next().ok_or_else(bad)?;
    let rest: Vec<&OsString> = it.collect();

    // The command must start with no signal blocked (std does not reset the
    // mask it inherits), so it is spawned before this process blocks any.
    SigSet::empty()
        .thread_set_mask()
        .map_err(std::io::Error::from)?;
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)?;
    let out = std::io::stdout().as_fd().try_clone_to_owned()?;
    let err = out.try_clone()?;
    let mut child = Command::new(program)
        .args(rest)
        .stdin(stdin)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn()?;
    // Signals that mean "stop now" are taken by a thread (sigwait), never by
    // a handler: blocked here, before any other thread exists, so all
    // inherit it.
    let mut stop = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        stop.add(sig);
    }
    stop.thread_block().map_err(std::io::Error::from)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
    let pgid = Pid::from_raw(child.id() as i32);
    if nix::unistd::getppid().as_raw() != parent {
        // rollgate died before the parent-death signal was set.
        kill_tree(pgid, Spare::Nothing);
        return Ok("signal 9\n".into());
    }
    let (tx, rx) = mpsc::channel();
    let waiter = tx.clone();
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = waiter.send(Ended::Exited(status));
        }
    });
    std::thread::spawn(move || {
        if stop.wait().is_ok() {
            let _ = tx.send(Ended::Signalled);
        }
    });
    let line = match rx.recv_timeout(Duration::from_millis(timeout_ms)) {
        Ok(Ended::Exited(status)) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit {code}\n"),
                (None, Some(sig)) => format!("signal {sig}\n"),
                _ => "signal 0\n".into(),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => "timeout\n".into(),
        Ok(Ended::Signalled) | Err(mpsc::RecvTimeoutError::Disconnected) => "signal 9\n".into(),
    };
    // Only a command that ended by itself leaves its ssh masters behind.
    let spare = if line.starts_with("exit ") {
        Spare::SshMasters
    } else {
        Spare::Nothing
    };
    kill_tree(pgid, spare);
    drop(held);
    Ok(line)
}

#[derive(Clone, Copy, PartialEq)]
enum Spare {
    Nothing,
    SshMasters,
}

/// Kills the command's process group and every descendant of this process
/// (a subreaper: orphans of the tree are re-parented here), until none is
/// left but what `spare` keeps, so no daemon, `setsid` child or double fork
/// survives the command.
fn kill_tree(pgid: Pid, spare: Spare) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = killpg(pgid, Signal::SIGKILL);
        for pid in descendants(spare) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => {}
                // ECHILD: no child is left at all.
                Err(_) => return,
            }
        }
        // Only spared processes left (a spared master is still our child,
        // so waitpid never says ECHILD): done.
        if killpg(pgid, None).is_err() && descendants(spare).is_empty() {
            return;
        }
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every descendant of this process, from `/proc/<pid>/task/<tid>/children`,
/// leaving out what `spare` keeps, with everything under it (a master's
/// `ProxyJump` connection is part of it).
fn descendants(spare: Spare) -> Vec<i32> {
    let mut found = Vec::new();
    let mut todo = vec![std::process::id() as i32];
    while let Some(pid) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in text.split_whitespace().filter_map(|s| s.parse().ok()) {
                if spare == Spare::SshMasters && is_ssh_master(child) {
                    continue;
                }
                if !found.contains(&child) {
                    found.push(child);
                    todo.push(child);
                }
            }
        }
    }
    found
}

/// An OpenSSH connection master gone to the background: a root-owned `ssh`
/// binary that nobody else may write (a copy under another name or owner
/// does not count) and that retitled itself `ssh: CONTROL_PATH [mux]`.
fn is_ssh_master(pid: i32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let system_ssh = exe.file_name().is_some_and(|n| n == "ssh")
        && std::fs::metadata(&exe).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0);
    if !system_ssh {
        return false;
    }
    // The new title overwrites the old argv in place; the rest is NULs.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let end = c.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        let title = &c[..end];
        title.starts_with(b"ssh: ") && title.ends_with(b" [mux]")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(chunks: &[&[u8]]) -> String {
        let mut b = Bounded::default();
        for c in chunks {
            b.push(c);
        }
        b.text()
    }

    #[test]
    fn short_output_is_kept_whole() {
        assert_eq!(text_of(&[b"out\n", b"err\n"]), "out\nerr\n");
    }

    #[test]
    fn long_output_keeps_head_and_tail_and_counts_the_middle() {
        let head = vec![b'h'; KEEP];
        let middle = vec![b'm'; 3 * KEEP + 5];
        let tail = vec![b't'; KEEP];
        for chunks in [
            vec![&head[..], &middle[..], &tail[..]],
            // byte by byte through the tail ring too
            head.iter()
                .chain(&middle)
                .chain(&tail)
                .map(std::slice::from_ref)
                .collect::<Vec<_>>(),
        ] {
            let text = text_of(&chunks);
            let expected = format!(
                "{}\n... {} bytes omitted ...\n{}",
                "h".repeat(KEEP),
                3 * KEEP + 5,
                "t".repeat(KEEP)
            );
            assert!(text == expected, "{} bytes", text.len());
        }
    }
}
