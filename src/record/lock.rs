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

/// The lock file opened (not locked) ahead of a deploy's checks, already
/// handed to every supervisor started since: [`acquire`] then locks this
/// same open file, which those supervisors share, so the ones started
/// while the checks ran hold the lock as if started after it.
static OPENED: Mutex<Option<Opened>> = Mutex::new(None);

struct Opened {
    path: std::path::PathBuf,
    file: File,
    shared: crate::process::SharedLock,
}

/// Before a deploy's checks: opens the lock file of `git_dir` for
/// [`acquire`], hands it to the supervisors started from now on, and has
/// `warm` of them started in the background once the checks' work tree is
/// written (see [`crate::process::warm_with_next_tree`]). Nothing is
/// locked yet: a deploy whose checks fail never takes the lock.
pub(crate) fn open_ahead(git_dir: &Path, warm: usize) -> Result<()> {
    if KEPT.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
        // A later ref of this push: the kept lock serves it.
        return Ok(());
    }
    let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
    let path = journal::dir_of(git_dir).join("lock");
    if opened.as_ref().is_none_or(|o| o.path != path) {
        let file = open(&path)?;
        let shared = share(&file, &path)?;
        *opened = Some(Opened { path, file, shared });
    }
    crate::process::warm_with_next_tree(warm);
    Ok(())
}

fn open(path: &Path) -> Result<File> {
    let dir = path.parent().context("the lock has no directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the deploy lock {}", path.display()))
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
    let opened = OPENED.lock().unwrap_or_else(|e| e.into_inner()).take();
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
    let path = journal::dir_of(git_dir).join("lock");
    let (mut file, shared) = match opened {
        Some(o) if o.path == path => (o.file, Some(o.shared)),
        _ => (open(&path)?, None),
    };
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
    let shared = match shared {
        // Handed to the supervisors already (see `open_ahead`).
        Some(shared) => shared,
        None => share(&file, &path)?,
    };
    Ok(DeployLock {
        _shared: shared,
        _file: file,
    })
}

/// The lock, shared with every command the run starts (through its
/// supervisor), so a killed run keeps it until its commands are gone.
fn locked(file: File, path: &Path) -> Result<DeployLock> {
    let shared = share(&file, path)?;
    Ok(DeployLock {
        _shared: shared,
        _file: file,
    })
}

/// Hands the lock file to every supervisor started from now on.
fn share(file: &File, path: &Path) -> Result<crate::process::SharedLock> {
    crate::process::share_deploy_lock(file)
        .with_context(|| format!("cannot share the deploy lock {}", path.display()))
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
