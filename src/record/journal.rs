//! The journal: what ran where, one JSON object per line, appended and
//! synced to disk before the step it records is reported done.
//!
//! The hook cannot write refs (the push is quarantined), so what ran where
//! lives here, in plain files, and nowhere else. In `<bare>/rollgate/`:
//!
//! - `journal.jsonl`: the active segment, the only file ever appended to.
//! - `journal/000001.jsonl`, `journal/000002.jsonl` ...: sealed segments,
//!   oldest first. When the active segment has grown past
//!   [`segment::SEGMENT_BYTES`], the next run (holding the deploy lock, before
//!   it appends) renames it to the next number and starts a new one. A
//!   journal of any size from before segments existed is simply the first
//!   active segment, and is sealed the same way. Together, sealed segments in
//!   order and then the active one are the whole history; nothing in them is
//!   ever rewritten.
//! - `state.json`: per host what the journal says (see `state.rs`), derived
//!   from the segments and rebuilt from them whenever it is missing, stale
//!   or unreadable. Deploys and `status` read it plus whatever was appended
//!   since it was written, so their cost does not grow with history.
//!
//! `log` reads segments newest first, each backwards by blocks, so `log -n`
//! reads only as much as it shows. A line torn by a crash (no newline) is
//! fenced off with a newline by the next append and reported, never fatal.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::record::segment;
use crate::record::state;
pub(crate) use crate::record::state::History;

pub(crate) const DIR: &str = "rollgate";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Event {
    /// A run begins: `hosts` lists every host it may touch.
    Start,
    /// A batch is about to start on `hosts`: if the run dies, these are
    /// the hosts whose state is unknown.
    Batch,
    /// One host's service went through deploy, reload and health.
    Host,
    /// A run ended; its absence means the run was killed.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Action {
    Deploy,
    Rollback,
    /// Putting a host back on its previous revision after a failure.
    Restore,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Outcome {
    Started,
    Ok,
    Failed,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::Restore => "restore",
        })
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Started => "started",
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) run: String,
    pub(crate) time: String,
    pub(crate) event: Event,
    pub(crate) action: Action,
    /// Full commit id.
    pub(crate) rev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) service: Option<String>,
    /// The service's directory label, e.g. `9.6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) version: Option<String>,
    /// Host records: the revision the host ran before this step, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) from: Option<String>,
    pub(crate) result: Outcome,
    pub(crate) who: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) options: Vec<String>,
    /// `group/host` for every host a run may touch (start records only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// Host records: the step failed while the host's dead-man's switch
    /// (`arm`) was set; unless put back, the host is left to that revert.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) armed: bool,
    /// Start and host records of a run pushed with `-o break-glass=REASON`
    /// (or `deploy --break-glass REASON`): why, and which checks failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) break_glass: Option<BreakGlass>,
}

/// A deploy past failed checks, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BreakGlass {
    pub(crate) reason: String,
    /// The checks that failed (`sshd 9.2 (files/sshd/9.2): ...`); empty
    /// when every check passed and break-glass changed nothing.
    pub(crate) failed: Vec<String>,
}

/// Builds the records of one run: only the per-record fields vary.
pub(crate) struct Recorder {
    pub(crate) run: String,
    pub(crate) who: String,
    pub(crate) options: Vec<String>,
    /// Carried by the run's start and host records.
    pub(crate) break_glass: Option<BreakGlass>,
}

impl Recorder {
    pub(crate) fn new(who: &str, options: &[String]) -> Recorder {
        Recorder {
            run: new_run_id(),
            who: who.to_string(),
            options: options.to_vec(),
            break_glass: None,
        }
    }

    pub(crate) fn record(
        &self,
        event: Event,
        action: Action,
        rev: &str,
        result: Outcome,
    ) -> Record {
        Record {
            run: self.run.clone(),
            time: now(),
            event,
            action,
            rev: rev.to_string(),
            group: None,
            host: None,
            service: None,
            version: None,
            from: None,
            result,
            who: self.who.clone(),
            options: self.options.clone(),
            hosts: Vec::new(),
            duration_ms: None,
            error: None,
            armed: false,
            break_glass: match event {
                Event::Start | Event::Host => self.break_glass.clone(),
                Event::Batch | Event::End => None,
            },
        }
    }
}

/// A run's id: when it began and the process that ran it.
pub(crate) fn new_run_id() -> String {
    let secs = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{secs}-{}", std::process::id())
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub(crate) fn dir_of(git_dir: &Path) -> PathBuf {
    git_dir.join(DIR)
}

pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    dir: PathBuf,
}

impl Journal {
    /// Opens the active segment for appending, sealing it first if it has
    /// grown past [`segment::SEGMENT_BYTES`]. Call with the deploy lock held.
    pub(crate) fn open(git_dir: &Path) -> Result<Journal> {
        let dir = dir_of(git_dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(segment::ACTIVE);
        let mut file = open_active(&path)?;
        end_torn_line(&mut file, &path)?;
        if file.metadata()?.len() >= segment::SEGMENT_BYTES {
            drop(file);
            // Best effort: a segment that cannot be sealed (say `journal/`
            // cannot be created) stays active and correct, only longer,
            // and the next run tries again. Deploys fail for the journal's
            // appends, never for its housekeeping.
            let _ = segment::seal_active(&dir);
            file = open_active(&path)?;
        }
        Ok(Journal { file, path, dir })
    }

    /// Appends records and syncs them; only then may they be reported.
    pub(crate) fn append(&mut self, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        // One write for the whole batch, so a crash tears at most the last line.
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cannot write the journal {}", self.path.display()))
    }
}

impl Journal {
    /// How long the journal is now: where a run's own records begin.
    pub(crate) fn len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .with_context(|| format!("cannot read the journal {}", self.path.display()))?
            .len())
    }

    /// Cuts the journal back to `len` bytes (a failed append's torn tail,
    /// or a run's records that a full filesystem could not take in full).
    pub(crate) fn truncate(&mut self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cannot cut back the journal {}", self.path.display()))
    }
}

fn open_active(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .with_context(|| format!("cannot open the journal {}", path.display()))
}

/// A run killed mid-write leaves a line without its newline; start the
/// next record on a fresh line so only the torn one is lost.
fn end_torn_line(file: &mut File, path: &Path) -> Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)
        .with_context(|| format!("cannot read the journal {}", path.display()))?;
    if last != *b"\n" {
        file.write_all(b"\n")
            .and_then(|()| file.sync_data())
            .with_context(|| format!("cannot write the journal {}", path.display()))?;
    }
    Ok(())
}

/// Once a run's records are in, fold them into `state.json`, so the next
/// run starts from there. Best effort: a state not updated here is caught up
/// (or rebuilt) by the next reader.
impl Drop for Journal {
    fn drop(&mut self) {
        let _ = state::load(&self.dir);
    }
}

/// The journal folded up to now (see `state.rs`): what ran where, without
/// reading all of history.
pub(crate) fn read(git_dir: &Path) -> Result<History> {
    state::load(&dir_of(git_dir))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn host_record(run: &str, host: &str, rev: &str, result: Outcome) -> Record {
        Record {
            run: run.into(),
            time: now(),
            event: Event::Host,
            action: Action::Deploy,
            rev: rev.into(),
            group: Some("canary".into()),
            host: Some(host.into()),
            service: Some("sshd".into()),
            version: Some("9.6".into()),
            from: None,
            result,
            who: "tester".into(),
            options: vec![],
            hosts: vec![],
            duration_ms: Some(5),
            error: None,
            armed: false,
            break_glass: None,
        }
    }

    fn unreadable(git_dir: &Path) -> Vec<(String, u64)> {
        read(git_dir).unwrap().unreadable(false).0
    }

    #[test]
    fn torn_last_line_is_reported_and_the_next_append_starts_clean() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&[host_record("r1", "h1", "aaa", Outcome::Ok)])
            .unwrap();
        drop(j);
        let path = dir_of(dir.path()).join(segment::ACTIVE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"run":"r2","ti"#).unwrap();
        drop(f);
        // Torn and not yet fenced off: reported, not folded.
        assert_eq!(unreadable(dir.path()), [("journal.jsonl".to_string(), 2)]);
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&[host_record("r3", "h1", "bbb", Outcome::Ok)])
            .unwrap();
        drop(j);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().nth(2).unwrap().contains(r#""run":"r3""#));
        let h = read(dir.path()).unwrap();
        assert_eq!(h.unreadable(false).0, [("journal.jsonl".to_string(), 2)]);
        assert_eq!(h.last_good("h1", "sshd").unwrap().rev, "bbb");
        assert_eq!(h.previous_good_host("h1").unwrap().rev, "aaa");
    }

    #[test]
    fn a_big_active_segment_is_sealed_by_the_next_run_and_history_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let rollgate = dir_of(dir.path());
        let mut j = Journal::open(dir.path()).unwrap();
        let mut n = 0;
        while fs::metadata(rollgate.join(segment::ACTIVE)).unwrap().len() < segment::SEGMENT_BYTES {
            n += 1;
            j.append(&[host_record(
                &format!("r{n}"),
                "h1",
                &format!("{n}"),
                Outcome::Ok,
            )])
            .unwrap();
        }
        drop(j);
        let before = fs::read(rollgate.join(segment::ACTIVE)).unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        // Sealed byte for byte; the active segment starts empty.
        assert_eq!(
            fs::read(rollgate.join("journal/000001.jsonl")).unwrap(),
            before
        );
        assert_eq!(
            fs::metadata(rollgate.join(segment::ACTIVE)).unwrap().len(),
            0
        );
        j.append(&[host_record("last", "h1", "new", Outcome::Ok)])
            .unwrap();
        drop(j);
        let h = read(dir.path()).unwrap();
        assert_eq!(h.last_good("h1", "sshd").unwrap().rev, "new");
        assert_eq!(h.previous_good_host("h1").unwrap().rev, format!("{n}"));
        assert_eq!(h, state::rebuild(&rollgate).unwrap());
    }
}
