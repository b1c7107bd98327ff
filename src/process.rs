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
//! - it gets a signal when rollgate dies (`PR_SET_PDEATHSIG`, set on itself,
//!   so no `pre_exec` and no unsafe code), and then kills the whole tree;
//! - when the command exits or times out it kills whatever the command left
//!   behind, then reports how the command ended and its bounded output;
//! - it holds the deploy lock's file descriptor while a deploy holds it, and
//!   a shared lock on every live work tree: a killed run's lock and trees
//!   stay held until its supervisors have killed everything.
//!
//! A supervisor serves one command at a time, and is kept for the next one
//! (a line of JSON on its stdin; the report comes back on its stdout):
//! starting a process per command cost about 2 ms of CPU each, as much as a
//! small deploy command itself. Idle supervisors are ended whenever what
//! they must hold changes, so none holds the deploy lock once it is no
//! longer shared.
//!
//! One exception: an OpenSSH connection master (`ControlPersist`) that a
//! command started is left to its own timer when the command exits by
//! itself. It runs no command of the run, only carries later sessions to the
//! same host, and killing it would make every command pay a new key exchange
//! (136 ms of CPU each with OpenSSH's default). It is recognised by what
//! OpenSSH makes of it (the `ssh` binary, root-owned, titled `ssh: PATH
//! [mux]`), and killed like anything else on a timeout or when rollgate dies.
//!
//! Neither side blocks on a pipe that some escaped process might keep open:
//! once a command's tree is gone, its output is read for a short grace
//! period and then left, and rollgate waits for a report at most the
//! command's timeout plus a backstop.

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
    let utf8 = |p: &Path| {
        p.to_str()
            .map(String::from)
            .ok_or_else(|| not_started(std::io::Error::other(format!("{p:?} is not UTF-8"))))
    };
    let mut full = vec![utf8(&path)?];
    full.extend(argv[1..].iter().cloned());
    let request = Request {
        argv: full,
        cwd: utf8(cwd)?,
        timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
        env: env.map(<[(String, String)]>::to_vec),
        stdin: input.map(utf8).transpose()?,
    };
    crate::ui::debug(format_args!(
        "run {argv:?} in {} (timeout {})",
        cwd.display(),
        humantime::format_duration(timeout)
    ));
    let mut worker = Worker::take().map_err(not_started)?;
    if worker.send(&request).is_err() {
        // An idle supervisor that died (killed from outside): the command
        // never started, so a new one may run it.
        drop(worker);
        worker = Worker::start().map_err(not_started)?;
        worker.send(&request).map_err(not_started)?;
    }
    let report = match worker.report(timeout + BACKSTOP) {
        Ok(report) => {
            worker.give_back();
            report
        }
        Err(why) => {
            // Killed and waited for by its drop; the next command gets a
            // new supervisor.
            drop(worker);
            return Err(Failure::Exited {
                program,
                status: format!("its supervisor ending unexpectedly ({why})"),
                output: String::new(),
            });
        }
    };
    let output = report.output;
    crate::ui::debug(format_args!(
        "{program}: {}, {} bytes of output",
        report.status,
        output.len()
    ));
    let mut words = report.status.split_whitespace();
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
            _ => std::io::Error::other(report.status.clone()),
        })),
        _ => Err(Failure::Exited {
            program,
            status: format!("its supervisor ending unexpectedly ({})", report.status),
            output,
        }),
    }
}

/// One command for a supervisor: a line of JSON on its stdin.
#[derive(serde::Serialize, serde::Deserialize)]
struct Request {
    /// The program (resolved), then its arguments.
    argv: Vec<String>,
    cwd: String,
    timeout_ms: u64,
    /// Exactly the command's environment; `None`: the supervisor's own.
    env: Option<Vec<(String, String)>>,
    /// A file to open as the command's stdin; `None`: /dev/null.
    stdin: Option<String>,
}

/// How a command ended, as its supervisor reports it: a line `STATUS\tLEN`
/// (`exit N`, `signal N`, `timeout`, `spawn ERRNO`), then LEN bytes of the
/// command's (bounded) output.
struct Report {
    status: String,
    output: String,
}

/// A supervisor process serving one command at a time, kept between
/// commands: starting a process per command doubled the cost of a small
/// deploy command (about 2 ms of CPU each, `bench/run`'s fan-out).
struct Worker {
    child: std::process::Child,
    /// `None` once closed: the supervisor then exits.
    requests: Option<std::process::ChildStdin>,
    responses: std::process::ChildStdout,
    /// What it holds (see [`Holds`]); a worker from before a change is
    /// not reused.
    generation: u64,
}

impl Worker {
    /// An idle supervisor holding what commands started now must hold, or
    /// a new one.
    fn take() -> std::io::Result<Worker> {
        if let Some(w) = holds().idle.pop() {
            return Ok(w);
        }
        Worker::start()
    }

    /// A new supervisor holding what commands started now must hold.
    fn start() -> std::io::Result<Worker> {
        let (generation, trees, lock) = {
            let held = holds();
            let lock = match &held.deploy_lock {
                Some(lock) => Some(lock.try_clone()?),
                None => None,
            };
            (held.generation, held.trees.clone(), lock)
        };
        // Before the first supervisor: no command inherits what git, sshd
        // or a CI runner left open.
        close_inherited_fds();
        // /proc/self/exe, not current_exe(): it still runs this binary after
        // a package upgrade replaced (deleted) the file a running hook came
        // from.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("rollgate")
            .arg(SUPERVISE)
            .arg(std::process::id().to_string());
        for tree in &trees {
            cmd.arg("--hold").arg(tree);
        }
        // Its stderr is the deploy lock: the one descriptor Command passes
        // on besides stdin and stdout, which carry the requests and reports.
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(lock.map_or_else(Stdio::null, Stdio::from));
        // Children must not see the hook's GIT_DIR or quarantine: a deploy
        // command that runs git would otherwise act on this repository.
        for name in git_env_names() {
            cmd.env_remove(name);
        }
        let mut child = spawn_from_a_lasting_thread(cmd)?;
        let requests = child.stdin.take();
        let responses = child.stdout.take().expect("stdout is piped");
        Ok(Worker {
            child,
            requests,
            responses,
            generation,
        })
    }

    /// Back to the idle ones, unless what commands must hold has changed.
    fn give_back(self) {
        let mut held = holds();
        if held.generation == self.generation {
            held.idle.push(self);
        } else {
            drop(held);
            drop(self);
        }
    }

    /// Sends `request`; an error means the command did not start.
    fn send(&mut self, request: &Request) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(request)?;
        line.push(b'\n');
        let requests = self
            .requests
            .as_mut()
            .ok_or_else(|| std::io::Error::other("closed"))?;
        requests.write_all(&line)?;
        requests.flush()
    }

    /// Waits for the report of the request sent. A supervisor still silent
    /// after `backstop` (it enforces the timeout itself; this only bounds one
    /// that hangs) is sent SIGTERM, then SIGKILL: `Err` says why.
    fn report(&mut self, backstop: Duration) -> Result<Report, String> {
        let started = Instant::now();
        let mut signalled = 0;
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            if let Some(report) = parse_report(&got)? {
                return Ok(report);
            }
            if started.elapsed() >= backstop + Duration::from_secs(signalled * 5) {
                if signalled == 2 {
                    return Err("it did not answer".into());
                }
                let sig = if signalled == 0 {
                    Signal::SIGTERM
                } else {
                    Signal::SIGKILL
                };
                let _ = kill(Pid::from_raw(self.child.id() as i32), sig);
                signalled += 1;
            }
            let mut fds = [PollFd::new(self.responses.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(100u16)) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.to_string()),
            }
            match self.responses.read(&mut buf) {
                Ok(0) => {
                    return Err(match self.child.try_wait() {
                        Ok(Some(status)) => describe_status(status),
                        _ => "its report ended early".into(),
                    });
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// Closes the file descriptors this process inherited from whoever started
/// it (git, sshd, a CI runner), so no command (a check least of all) can
/// read or write through them. Every descriptor rollgate opens itself is
/// close-on-exec; one without that flag came from outside. Called before
/// every supervisor starts (checks included), and done once per process: a
/// second pass, in another thread, could close a number the first had
/// freed and rollgate had opened again.
fn close_inherited_fds() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(close_inherited_now);
}

fn close_inherited_now() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fdinfo") else {
        return;
    };
    let inherited: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|fd| *fd > 2)
        .filter(|fd| !close_on_exec(*fd).unwrap_or(true))
        .collect();
    for fd in inherited {
        let _ = nix::unistd::close(fd);
    }
}

/// Whether `fd` has O_CLOEXEC, from `/proc/self/fdinfo` (`flags:` in octal).
fn close_on_exec(fd: i32) -> Option<bool> {
    const O_CLOEXEC: u32 = 0o2000000;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
    let flags = u32::from_str_radix(flags, 8).ok()?;
    Some(flags & O_CLOEXEC != 0)
}

/// Spawns `cmd` from a thread that lives as long as this process. The
/// supervisor's parent-death signal fires when the *thread* that started it
/// ends, and a supervisor outlives the thread that first needed it (a
/// check's or a host's).
fn spawn_from_a_lasting_thread(cmd: Command) -> std::io::Result<std::process::Child> {
    type Job = (Command, mpsc::Sender<std::io::Result<std::process::Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| std::io::Error::other("the spawning thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the spawning thread is gone"))?
}

/// A whole report at the start of `got`, if it has arrived.
fn parse_report(got: &[u8]) -> Result<Option<Report>, String> {
    let Some(nl) = got.iter().position(|b| *b == b'\n') else {
        return Ok(None);
    };
    let header = String::from_utf8_lossy(&got[..nl]);
    let (status, len) = header
        .split_once('\t')
        .and_then(|(s, n)| Some((s.to_string(), n.parse::<usize>().ok()?)))
        .ok_or_else(|| format!("a report that makes no sense: {header:?}"))?;
    let body = &got[nl + 1..];
    if body.len() < len {
        return Ok(None);
    }
    Ok(Some(Report {
        status,
        output: String::from_utf8_lossy(&body[..len]).into_owned(),
    }))
}

impl Drop for Worker {
    fn drop(&mut self) {
        // End of its requests: it exits at once (no command runs between
        // requests), dropping what it holds.
        self.requests = None;
        let _ = self.child.wait();
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

/// What every supervisor started from now on holds while it lives, and the
/// idle supervisors that hold exactly that.
#[derive(Default)]
struct Holds {
    /// A duplicate of the deploy lock's descriptor: the OS lock stays held
    /// while any supervisor (and so any command of this run) is alive.
    deploy_lock: Option<File>,
    /// The lock files of the live work trees (shared locks: the sweep of a
    /// later run takes them exclusively, so it skips a tree in use).
    trees: Vec<PathBuf>,
    /// Bumped on every change above.
    generation: u64,
    idle: Vec<Worker>,
    /// Told to end by [`retire_idle`], not yet waited for.
    retiring: Vec<Worker>,
    /// How many supervisors to start ahead, in the background, once the
    /// next work tree is held (see [`warm_with_next_tree`]).
    warm_next: usize,
}

fn holds() -> std::sync::MutexGuard<'static, Holds> {
    static HOLDS: Mutex<Holds> = Mutex::new(Holds {
        deploy_lock: None,
        trees: Vec::new(),
        generation: 0,
        idle: Vec::new(),
        retiring: Vec::new(),
        warm_next: 0,
    });
    HOLDS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Changes what supervisors hold. The idle ones hold the old set: they are
/// ended (and waited for) before this returns, so once the deploy lock is
/// no longer shared, no supervisor holds it.
fn change_holds(change: impl FnOnce(&mut Holds)) {
    let mut idle = {
        let mut held = holds();
        change(&mut held);
        held.generation += 1;
        let mut idle = std::mem::take(&mut held.retiring);
        idle.append(&mut held.idle);
        idle
    };
    // All of them told first, then waited for: they exit side by side,
    // not one after another (20 supervisors: about 5 ms at the end of
    // every run, with the pusher waiting).
    tell_to_end(&mut idle);
    drop(idle);
}

/// Ends each one's requests: an idle supervisor exits at once (no command
/// runs between requests); dropping a [`Worker`] then only waits.
fn tell_to_end(workers: &mut [Worker]) {
    for worker in workers {
        worker.requests = None;
    }
}

/// Tells every idle supervisor to end, without waiting for it: a run that
/// starts no further command calls this before its last journal writes,
/// so the supervisors exit meanwhile. They are waited for (and so release
/// the deploy lock they share) when what supervisors hold next changes.
pub(crate) fn retire_idle() {
    let mut held = holds();
    let mut idle = std::mem::take(&mut held.idle);
    tell_to_end(&mut idle);
    held.retiring.append(&mut idle);
}

/// Hands the deploy lock to every command's supervisor until dropped.
pub(crate) struct SharedLock(());

pub(crate) fn share_deploy_lock(lock: &File) -> std::io::Result<SharedLock> {
    let lock = lock.try_clone()?;
    change_holds(|h| h.deploy_lock = Some(lock));
    Ok(SharedLock(()))
}

impl Drop for SharedLock {
    fn drop(&mut self) {
        change_holds(|h| h.deploy_lock = None);
    }
}

/// Has every command's supervisor hold a work tree's lock file until dropped.
pub(crate) struct HeldTree(PathBuf);

pub(crate) fn hold_tree(lock_file: &Path) -> HeldTree {
    let mut warm = 0;
    change_holds(|h| {
        h.trees.push(lock_file.to_path_buf());
        warm = std::mem::take(&mut h.warm_next);
    });
    start_ahead(warm);
    HeldTree(lock_file.to_path_buf())
}

/// Once the next work tree is held, starts `n` supervisors in the
/// background for the commands about to run. A deploy calls this before
/// its checks: they leave the CPU mostly idle (bubblewrap waits on the
/// kernel to make its namespaces), and each supervisor started then is a
/// process start (about 0.7 ms of CPU) its hosts no longer wait for.
pub(crate) fn warm_with_next_tree(n: usize) {
    holds().warm_next = n;
}

fn start_ahead(n: usize) {
    if n == 0 {
        return;
    }
    std::thread::spawn(move || {
        for _ in 0..n {
            match Worker::start() {
                // Not kept if what supervisors hold changed meanwhile.
                Ok(worker) => worker.give_back(),
                Err(_) => return,
            }
        }
    });
}

impl Drop for HeldTree {
    fn drop(&mut self) {
        change_holds(|h| h.trees.retain(|p| *p != self.0));
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
    Some(match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    })
}

enum Ended {
    /// The command with this number exited.
    Exited(u64, std::process::ExitStatus),
    Signalled,
}

/// Signals that mean "stop now". Taken by a thread (sigwait), never by a
/// handler. The parent-death signal is SIGURG, whose default is to be
/// ignored: while a command is being spawned (the only moment this process
/// does not block these, since std hands its signal mask on to the child)
/// a SIGTERM would kill the supervisor and orphan the command, whereas a
/// SIGURG is only lost, and the parent is checked again right after.
fn stop_signals() -> SigSet {
    let mut stop = SigSet::empty();
    for sig in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGURG,
    ] {
        stop.add(sig);
    }
    stop
}

/// `PARENT_PID [--hold FILE]...`, stdin the requests, stdout the reports,
/// stderr the deploy lock (or /dev/null). Serves requests until stdin ends;
/// for each, runs the command and reports once the command and everything
/// it started are gone.
fn serve(args: &[OsString]) -> std::io::Result<()> {
    let bad = || std::io::Error::other("bad supervisor arguments");
    let mut it = args.iter();
    let parent: i32 = it
        .next()
        .and_then(|s| s.to_str()?.parse().ok())
        .ok_or_else(bad)?;
    let mut held = Vec::new();
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
            None => break,
            _ => return Err(bad()),
        }
    }
    // Keep the deploy lock as a descriptor of its own (close-on-exec, so
    // no command inherits it), and let nothing written to stderr land in
    // the lock file.
    let _lock = std::io::stderr().as_fd().try_clone_to_owned()?;
    rustix::stdio::dup2_stderr(File::options().write(true).open("/dev/null")?)?;

    let stop = stop_signals();
    stop.thread_block().map_err(std::io::Error::from)?;
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGURG).map_err(std::io::Error::from)?;
    if nix::unistd::getppid().as_raw() != parent {
        // rollgate died before the parent-death signal was set.
        return Ok(());
    }
    let (tx, rx) = mpsc::channel();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            if stop.wait().is_ok() {
                let _ = tx.send(Ended::Signalled);
            }
        });
    }
    // The ssh masters commands left behind so far: spared by later ones.
    let mut spared: Vec<i32> = Vec::new();
    let mut seq = 0u64;
    let mut out = std::io::stdout().lock();
    let mut requests = std::io::BufReader::new(std::io::stdin().lock());
    let mut line = String::new();
    loop {
        line.clear();
        if std::io::BufRead::read_line(&mut requests, &mut line)? == 0 {
            return Ok(());
        }
        let request: Request = serde_json::from_str(&line).map_err(|_| bad())?;
        seq += 1;
        let (status, output) = run_one(&request, seq, parent, &tx, &rx, &mut spared);
        let Some(status) = status else {
            // Told to stop (or rollgate is gone): everything is killed.
            return Ok(());
        };
        writeln!(out, "{status}\t{}", output.len())?;
        out.write_all(&output)?;
        out.flush()?;
    }
}

/// Runs one request; `None` if the supervisor must stop (a stop signal, or
/// rollgate gone), once everything is killed.
fn run_one(
    request: &Request,
    seq: u64,
    parent: i32,
    tx: &mpsc::Sender<Ended>,
    rx: &mpsc::Receiver<Ended>,
    spared: &mut Vec<i32>,
) -> (Option<String>, Vec<u8>) {
    let spawn_failed = |e: std::io::Error| {
        (
            Some(format!("spawn {}", e.raw_os_error().unwrap_or(-1))),
            e.to_string().into_bytes(),
        )
    };
    let (reader, writer) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return spawn_failed(e),
    };
    let stdin = match &request.stdin {
        Some(path) => match File::open(path) {
            Ok(f) => Stdio::from(f),
            Err(e) => return spawn_failed(e),
        },
        None => Stdio::null(),
    };
    let err = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return spawn_failed(e),
    };
    let mut cmd = Command::new(&request.argv[0]);
    cmd.args(&request.argv[1..])
        .current_dir(&request.cwd)
        .stdin(stdin)
        .stdout(writer)
        .stderr(err)
        .process_group(0);
    if let Some(env) = &request.env {
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    }
    // The command must start with no signal blocked: unblocked for the
    // spawn only (see `stop_signals`).
    let stop = stop_signals();
    let _ = SigSet::empty().thread_set_mask();
    let spawned = cmd.spawn();
    let _ = stop.thread_block();
    drop(cmd);
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => return spawn_failed(e),
    };
    let pgid = Pid::from_raw(child.id() as i32);
    let output = std::sync::Arc::new(Mutex::new(Bounded::default()));
    let (eof_tx, eof_rx) = mpsc::channel();
    {
        let output = output.clone();
        let mut reader = reader;
        std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => output
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = eof_tx.send(());
        });
    }
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send(Ended::Exited(seq, status));
            }
        });
    }
    // A timed-out command's waiter may report after its command was
    // killed: its news is not this command's.
    let deadline = Instant::now() + Duration::from_millis(request.timeout_ms);
    let ended = loop {
        if nix::unistd::getppid().as_raw() != parent {
            break Some(Ended::Signalled);
        }
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ended::Exited(n, _)) if n != seq => continue,
            Ok(e) => break Some(e),
            Err(_) => break None,
        }
    };
    let status = match ended {
        Some(Ended::Exited(_, status)) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(sig)) => format!("signal {sig}"),
                _ => "signal 0".into(),
            }
        }
        None => "timeout".into(),
        Some(Ended::Signalled) => {
            kill_tree(pgid, Spare::Nothing, &mut Vec::new());
            return (None, Vec::new());
        }
    };
    // Only a command that ended by itself leaves its ssh masters behind.
    let spare = if status.starts_with("exit ") {
        Spare::SshMasters
    } else {
        Spare::Nothing
    };
    kill_tree(pgid, spare, spared);
    // Everything that could write is gone, but a process outside this tree
    // (an ssh master that was already running) may still hold the pipe for
    // a moment: read a little longer, then leave it.
    let _ = eof_rx.recv_timeout(DRAIN_GRACE);
    let output = std::mem::take(&mut *output.lock().unwrap_or_else(|e| e.into_inner()));
    (Some(status), output.text().into_bytes())
}

#[derive(Clone, Copy, PartialEq)]
enum Spare {
    Nothing,
    SshMasters,
}

/// Kills the command's process group and every descendant of this process
/// (a subreaper: orphans of the tree are re-parented here), until none is
/// left but the ssh masters in `spared` and, with [`Spare::SshMasters`], the
/// ones this command left (added to `spared`), so no daemon, `setsid` child
/// or double fork survives the command.
fn kill_tree(pgid: Pid, spare: Spare, spared: &mut Vec<i32>) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let _ = killpg(pgid, Signal::SIGKILL);
        for pid in descendants(spare, spared) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                // A spared master that has exited by now is no longer one.
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        spared.retain(|p| *p != pid.as_raw());
                    }
                }
                // ECHILD: no child is left at all.
                Err(_) => return,
            }
        }
        // Only spared processes left (a spared master is still our child,
        // so waitpid never says ECHILD): done.
        if killpg(pgid, None).is_err() && descendants(spare, spared).is_empty() {
            return;
        }
        if Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Every descendant of this process, from `/proc/<pid>/task/<tid>/children`,
/// leaving out the spared ssh masters with everything under them (a
/// master's `ProxyJump` connection is part of it). With
/// [`Spare::SshMasters`], a master not spared yet is added to `spared`.
fn descendants(spare: Spare, spared: &mut Vec<i32>) -> Vec<i32> {
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
                if spared.contains(&child) {
                    continue;
                }
                if spare == Spare::SshMasters && is_ssh_master(child) {
                    spared.push(child);
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
