//! `rollgate/journal.jsonl`: one JSON object per line, appended and synced
//! to disk before the step it records is reported done.
//!
//! The hook cannot write refs (the push is quarantined), so what ran where
//! lives here, in a plain file, and nowhere else.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub(crate) const DIR: &str = "rollgate";
const FILE: &str = "journal.jsonl";

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
}

/// Builds the records of one run: only the per-record fields vary.
pub(crate) struct Recorder {
    pub(crate) run: String,
    pub(crate) who: String,
    pub(crate) options: Vec<String>,
}

impl Recorder {
    pub(crate) fn new(who: &str, options: &[String]) -> Recorder {
        let secs = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Recorder {
            run: format!("{secs}-{}", std::process::id()),
            who: who.to_string(),
            options: options.to_vec(),
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
        }
    }
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
}

impl Journal {
    pub(crate) fn open(git_dir: &Path) -> Result<Journal> {
        let dir = dir_of(git_dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open the journal {}", path.display()))?;
        let mut journal = Journal { file, path };
        journal.end_torn_line()?;
        Ok(journal)
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

    /// A run killed mid-write leaves a line without its newline; start the
    /// next record on a fresh line so only the torn one is lost.
    fn end_torn_line(&mut self) -> Result<()> {
        let len = self.file.metadata()?.len();
        if len == 0 {
            return Ok(());
        }
        let bytes = fs::read(&self.path)?;
        if bytes.last() != Some(&b'\n') {
            self.file.write_all(b"\n")?;
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// Every readable record, oldest first, and the line numbers of any that
/// could not be read (a torn write is reported, never fatal).
pub(crate) struct History {
    pub(crate) records: Vec<Record>,
    pub(crate) unreadable: Vec<usize>,
}

pub(crate) fn read(git_dir: &Path) -> Result<History> {
    let path = dir_of(git_dir).join(FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(History {
                records: Vec::new(),
                unreadable: Vec::new(),
            });
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the journal {}", path.display()));
        }
    };
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    for (i, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line.with_context(|| format!("cannot read the journal {}", path.display()))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(&line) {
            Ok(r) => records.push(r),
            Err(_) => unreadable.push(i + 1),
        }
    }
    Ok(History {
        records,
        unreadable,
    })
}

impl History {
    /// The last revision that went through fine on `host`/`service`: what
    /// a failed host is restored to, and what `plan` diffs against.
    pub(crate) fn last_good(&self, host: &str, service: &str) -> Option<&Record> {
        self.records.iter().rev().find(|r| {
            r.event == Event::Host
                && r.result == Outcome::Ok
                && r.host.as_deref() == Some(host)
                && r.service.as_deref() == Some(service)
        })
    }

    /// The good revision a host had before its current one (all services of
    /// a group are deployed together, so the host's newest record decides).
    pub(crate) fn previous_good_host(&self, host: &str) -> Option<&Record> {
        let good = |r: &&Record| {
            r.event == Event::Host && r.result == Outcome::Ok && r.host.as_deref() == Some(host)
        };
        let current = self.records.iter().rev().find(good)?;
        self.records
            .iter()
            .rev()
            .filter(good)
            .find(|r| r.rev != current.rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_record(run: &str, rev: &str, result: Outcome) -> Record {
        Record {
            run: run.into(),
            time: now(),
            event: Event::Host,
            action: Action::Deploy,
            rev: rev.into(),
            group: Some("canary".into()),
            host: Some("h1".into()),
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
        }
    }

    #[test]
    fn torn_last_line_is_reported_and_the_next_append_starts_clean() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&[host_record("r1", "aaa", Outcome::Ok)]).unwrap();
        drop(j);
        let path = dir_of(dir.path()).join(FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"run":"r2","ti"#).unwrap();
        drop(f);
        let mut j = Journal::open(dir.path()).unwrap();
        j.append(&[host_record("r3", "bbb", Outcome::Ok)]).unwrap();
        let h = read(dir.path()).unwrap();
        assert_eq!(h.records.len(), 2);
        assert_eq!(h.unreadable, [2]);
    }

    #[test]
    fn previous_good_host_skips_failures_and_the_current_revision() {
        let h = History {
            records: vec![
                host_record("r1", "aaa", Outcome::Ok),
                host_record("r2", "bbb", Outcome::Ok),
                host_record("r3", "ccc", Outcome::Failed),
                host_record("r4", "bbb", Outcome::Ok),
            ],
            unreadable: vec![],
        };
        assert_eq!(h.last_good("h1", "sshd").unwrap().rev, "bbb");
        assert_eq!(h.previous_good_host("h1").unwrap().rev, "aaa");
        assert!(h.last_good("h2", "sshd").is_none());
    }
}
