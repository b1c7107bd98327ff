//! Every child process rollgate starts goes through `run`: argv only (never a
//! shell), an explicit working directory, stdin closed, stdout and stderr
//! captured together, and a timeout that kills the whole process group.

use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

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
    run_with_env(argv, cwd, timeout, None)
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
    run_with_env(argv, cwd, timeout, Some(env))
}

fn run_with_env(
    argv: &[String],
    cwd: &Path,
    timeout: Duration,
    env: Option<&[(String, String)]>,
) -> Result<Finished, Failure> {
    let program = argv[0].clone();
    // duct replaces the child's whole environment, and with that std only
    // takes its cheap posix_spawn path for a program given as a path: a bare
    // name would fork a copy of this (multi-threaded) process per command,
    // which dominates a large fan-out. A name not on PATH is left as it is,
    // so spawning it fails as "not found"; a path (relative to `cwd`) is
    // left alone too.
    let search = env.and_then(|env| env.iter().find(|(k, _)| k == "PATH"));
    let path = match (program.contains('/'), search) {
        (true, _) => program.clone().into(),
        (false, Some((_, dirs))) => {
            which::which_in(&program, Some(dirs), cwd).unwrap_or_else(|_| program.clone().into())
        }
        (false, None) => which::which(&program).unwrap_or_else(|_| program.clone().into()),
    };
    let mut expr = duct::cmd(path, &argv[1..])
        .dir(cwd)
        .stdin_null()
        .stderr_to_stdout()
        .stdout_capture()
        .unchecked()
        // Its own process group, so a timeout can kill what the command
        // started too, not just the command.
        .before_spawn(|cmd| {
            cmd.process_group(0);
            Ok(())
        });
    // Children must not see the hook's GIT_DIR or quarantine: a deploy
    // command that runs git would otherwise act on this repository.
    for name in git_env_names() {
        expr = expr.env_remove(name);
    }
    if let Some(env) = env {
        expr = expr.full_env(env.iter().cloned());
    }
    crate::ui::debug(format_args!(
        "run {argv:?} in {} (timeout {})",
        cwd.display(),
        humantime::format_duration(timeout)
    ));
    let handle = expr.start().map_err(|error| Failure::NotStarted {
        program: program.clone(),
        error,
    })?;
    let waited = handle.wait_timeout(timeout);
    let timed_out = matches!(waited, Ok(None));
    if timed_out {
        for pid in handle.pids() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
    let output = match handle.into_output() {
        Ok(output) => output,
        Err(error) => return Err(Failure::NotStarted { program, error }),
    };
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    crate::ui::debug(format_args!(
        "{program}: {}, {} bytes of output",
        if timed_out {
            "timed out".to_string()
        } else {
            describe_status(output.status)
        },
        output.stdout.len()
    ));
    if timed_out {
        return Err(Failure::TimedOut {
            program,
            after: timeout,
            output: text,
        });
    }
    if output.status.success() {
        Ok(Finished { output: text })
    } else {
        Err(Failure::Exited {
            program,
            status: describe_status(output.status),
            output: text,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn argv(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn captures_stdout_and_stderr_together() {
        let done = run(
            &argv(&["sh", "-c", "echo out; echo err >&2"]),
            Path::new("/"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(done.output, "out\nerr\n");
    }

    #[test]
    fn missing_program_is_not_started() {
        let err = run(
            &argv(&["/nonexistent/checker"]),
            Path::new("/"),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(matches!(err, Failure::NotStarted { .. }), "{err:?}");
        assert!(err.to_string().contains("not found"), "{err}");
    }

    #[test]
    fn failure_keeps_status_and_output() {
        let err = run(
            &argv(&["sh", "-c", "echo broken; exit 3"]),
            Path::new("/"),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "`sh` failed with exit status 3");
        assert_eq!(err.output(), "broken\n");
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let started = Instant::now();
        let err = run(
            &argv(&["sh", "-c", "sleep 30 & sleep 30"]),
            Path::new("/"),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, Failure::TimedOut { .. }), "{err:?}");
        // If the background sleep survived, it would hold the output pipe
        // and into_output would have waited for it.
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
