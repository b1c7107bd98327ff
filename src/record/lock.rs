//! `rollgate/lock`: an OS file lock held for a whole deploy, so two pushes
//! never deploy at once, and for a push until git has moved its refs (a
//! keeper process holds it after the hook). The kernel drops it when its
//! holders die, so a `kill -9` leaves no stale lock; the file's text only
//! names the holder.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::error::UserError;
use crate::record::{journal, keeper};
use crate::ui::Ui;

pub(crate) struct DeployLock {
    // Dropped first: no command started after this may inherit the lock.
    _shared: crate::process::SharedLock,
    _file: File,
}

/// The lock a push keeps until git has moved its refs, once a run of this
/// hook took it: a push that deploys several refs runs one deploy per ref,
/// and the later ones use it (the keeper holds it; waiting for it would be
/// waiting for ourselves).
static KEPT: Mutex<Option<File>> = Mutex::new(None);

/// Waits up to `wait` for the lock, telling the user who holds it, and
/// again every `heartbeat` so an idle-cutting proxy keeps the push alive.
pub(crate) fn acquire(
    git_dir: &Path,
    holder: &str,
    wait: Duration,
    heartbeat: Duration,
    ui: &Ui,
) -> Result<DeployLock> {
    if let Some(kept) = KEPT.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        let path = journal::dir_of(git_dir).join("lock");
        let mut file = kept
            .try_clone()
            .with_context(|| format!("cannot reuse the deploy lock {}", path.display()))?;
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(holder.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        return locked(file, &path);
    }
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
                    return Err(UserError::failed(format!(
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
    // The text only names the holder for whoever waits; the OS lock is
    // what counts.
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(holder.as_bytes()))
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write {}", path.display()))?;
    locked(file, &path)
}

/// The lock, shared with every command the run starts (through its
/// supervisor), so a killed run keeps it until its commands are gone.
fn locked(file: File, path: &std::path::Path) -> Result<DeployLock> {
    let shared = crate::process::share_deploy_lock(&file)
        .with_context(|| format!("cannot share the deploy lock {}", path.display()))?;
    Ok(DeployLock {
        _shared: shared,
        _file: file,
    })
}

impl DeployLock {
    /// For a push: keeps the lock held after this hook exits, until git
    /// has finished with the push's refs (see `keeper`), so that a push
    /// waiting for the lock sees its ref already moved.
    pub(crate) fn hold_until_git_is_done(&self) -> Result<()> {
        let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
        if kept.is_none() {
            keeper::spawn(&self._file)?;
            *kept = Some(self._file.try_clone()?);
        }
        Ok(())
    }
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
