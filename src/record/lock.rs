//! `rollgate/lock`: an OS file lock held for a whole deploy, so two pushes
//! never deploy at once. The kernel drops it when the holder dies, so a
//! `kill -9` leaves no stale lock; the file's text only names the holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::error::Failed;
use crate::record::journal;
use crate::ui::Ui;

pub(crate) struct DeployLock {
    // Dropped first: no command started after this may inherit the lock.
    _shared: crate::process::SharedLock,
    _file: File,
}

/// Waits up to `wait` for the lock, telling the user who holds it, and
/// again every `heartbeat` so an idle-cutting proxy keeps the push alive.
pub(crate) fn acquire(
    git_dir: &Path,
    holder: &str,
    wait: Duration,
    heartbeat: Duration,
    ui: &Ui,
) -> Result<DeployLock> {
    let dir = journal::dir_of(git_dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("lock");
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the deploy lock {}", path.display()))?;
    let started = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                let current = holder_of(&mut file);
                if started.elapsed() >= wait {
                    return Err(Failed(format!(
                        "another deploy holds the lock ({current}); gave up after {}",
                        humantime::format_duration(wait)
                    ))
                    .into());
                }
                if !told {
                    ui.line(format_args!(
                        "waiting up to {} for the deploy lock, held by {current}",
                        humantime::format_duration(wait)
                    ));
                    told = true;
                } else if ui.quiet_for() >= heartbeat {
                    ui.line(format_args!(
                        "... still waiting for the deploy lock ({}s so far)",
                        started.elapsed().as_secs()
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
    }
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(holder.as_bytes())?;
    file.flush()?;
    // Every command of the run holds the lock too (through its supervisor),
    // so a killed run keeps it until its commands are gone.
    let shared = crate::process::share_deploy_lock(&file)
        .with_context(|| format!("cannot share the deploy lock {}", path.display()))?;
    Ok(DeployLock {
        _shared: shared,
        _file: file,
    })
}

fn holder_of(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    let text = text.trim();
    if text.is_empty() {
        "an unknown process".into()
    } else {
        text.to_string()
    }
}

/// Whether a deploy holds the lock right now (for `status`, which must not
/// call a running deploy "interrupted").
pub(crate) fn is_held(git_dir: &Path) -> Result<bool> {
    let path = journal::dir_of(git_dir).join("lock");
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    match file.try_lock() {
        Ok(()) => Ok(false),
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}
