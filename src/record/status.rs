//! `status` and `log`: what the journal says ran where.
//!
//! `status` answers from the folded state (`state.rs`), so it costs the
//! same whatever the length of history; `log` walks the journal's segments
//! newest first, backwards, and stops as soon as it has shown enough runs.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::record::journal::{self, Action, BreakGlass, Event, History, Outcome, Record};
use crate::record::lock;
use crate::record::segment::{self, Backwards};
use crate::record::state::Step;

/// One host and service, as it stands.
#[derive(Debug, Serialize)]
pub(crate) struct HostState {
    pub(crate) host: String,
    pub(crate) service: String,
    pub(crate) group: String,
    pub(crate) version: String,
    /// The revision whose files the host holds.
    pub(crate) rev: String,
    pub(crate) when: String,
    pub(crate) who: String,
    pub(crate) action: Action,
    /// ok, failed, restored, restore-failed, rolled-back, interrupted,
    /// left-behind (failed within max_failures and put back), armed-revert
    /// (failed while armed and could not be put back: left to its
    /// dead-man's switch)
    pub(crate) result: String,
    /// For a rollback or restore: the revision the host left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) left: Option<String>,
    /// For a failed restore: the revision it could not put back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) target: Option<String>,
    pub(crate) run: String,
    /// The host runs what a break-glass deploy (past failed checks) put
    /// there; `log` has the reason and the failed checks.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) break_glass: bool,
}

pub(crate) struct Report<T> {
    pub(crate) items: T,
    /// Journal lines that could not be read (a torn write): file and
    /// 1-based line, then how many more there are beyond those.
    pub(crate) unreadable: Vec<(String, u64)>,
    pub(crate) unreadable_more: u64,
}

pub(crate) fn status(git_dir: &Path) -> Result<Report<Vec<HostState>>> {
    let history = journal::read(git_dir)?;
    let live = lock::is_held(git_dir)?;
    let (unreadable, unreadable_more) = history.unreadable(live);
    Ok(Report {
        items: rows(&history, live),
        unreadable,
        unreadable_more,
    })
}

/// Per host and service, from the host's newest record. A host whose run
/// died after its batch started and that no later record names is
/// `interrupted`, unless that run is the one holding the lock right now.
fn rows(history: &History, live: bool) -> Vec<HostState> {
    let running = history
        .open
        .as_ref()
        .filter(|_| live)
        .map(|o| o.run.as_str());
    let mut rows = Vec::new();
    for (host, h) in &history.hosts {
        let interrupted = h
            .inflight
            .as_ref()
            .filter(|s| Some(s.run.as_str()) != running);
        if h.services.is_empty() {
            if let Some(step) = interrupted {
                rows.push(interrupted_row(host, "-", step, None));
            }
            continue;
        }
        for (service, s) in &h.services {
            let row = row_of(host, service, &s.newest);
            rows.push(match interrupted {
                Some(step) => interrupted_row(host, service, step, Some(row)),
                None => row,
            });
        }
    }
    rows
}

fn row_of(host: &str, service: &str, s: &Step) -> HostState {
    let failed = s.result == Outcome::Failed;
    let mut row = HostState {
        host: host.to_string(),
        service: service.to_string(),
        group: s.group.clone(),
        version: s.version.clone().unwrap_or_default(),
        rev: s.rev.clone(),
        when: s.time.clone(),
        who: s.who.clone(),
        action: s.action,
        result: match (s.action, failed) {
            (_, true) if s.armed => "armed-revert",
            (Action::Restore, true) => "restore-failed",
            (_, true) => "failed",
            (Action::Restore, false) if s.left_behind => "left-behind",
            (Action::Restore, false) => "restored",
            (Action::Rollback, false) => "rolled-back",
            (Action::Deploy, false) => "ok",
        }
        .to_string(),
        left: match s.action {
            Action::Deploy => None,
            _ => s.from.clone().filter(|f| *f != s.rev),
        },
        target: None,
        run: s.run.clone(),
        break_glass: s.break_glass && !failed && s.action != Action::Restore,
    };
    if s.action == Action::Restore && failed {
        // The host still holds the files the restore was to replace.
        if let Some(from) = &s.from {
            row.target = Some(std::mem::replace(&mut row.rev, from.clone()));
            // The version named is the restore's; the host's is unknown.
            row.version.clear();
        }
        row.left = None;
    }
    row
}

fn interrupted_row(host: &str, service: &str, step: &Step, before: Option<HostState>) -> HostState {
    HostState {
        host: host.to_string(),
        service: service.to_string(),
        group: step.group.clone(),
        version: before
            .as_ref()
            .map(|b| b.version.clone())
            .unwrap_or_default(),
        rev: step.rev.clone(),
        when: step.time.clone(),
        who: step.who.clone(),
        action: step.action,
        result: "interrupted".into(),
        left: before.map(|b| b.rev),
        target: None,
        run: step.run.clone(),
        break_glass: false,
    }
}

/// One run, as `log` shows it.
#[derive(Debug, Serialize)]
pub(crate) struct RunSummary {
    pub(crate) run: String,
    pub(crate) time: String,
    pub(crate) action: Action,
    pub(crate) rev: String,
    pub(crate) who: String,
    pub(crate) options: Vec<String>,
    /// ok, failed, interrupted, running
    pub(crate) result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// A run past failed checks: the reason and the checks that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) break_glass: Option<BreakGlass>,
    pub(crate) steps: Vec<Record>,
}

/// Runs, newest first, read from the journal's end as they are asked for.
pub(crate) fn log(git_dir: &Path) -> Result<Report<Runs>> {
    let history = journal::read(git_dir)?;
    let live = lock::is_held(git_dir)?;
    let (unreadable, unreadable_more) = history.unreadable(live);
    let dir = journal::dir_of(git_dir);
    // Every file is opened now: a run that seals the active segment while
    // this reads renames it, and an open file follows the rename.
    let sealed = segment::sealed(&dir)?;
    let mut files = Vec::new();
    for s in &sealed {
        files.push(open_segment(&s.path)?);
    }
    if let Some(active) = segment::active(&dir, &sealed)? {
        files.push(open_segment(&active.path)?);
    }
    Ok(Report {
        items: Runs {
            files,
            reader: None,
            pending: Vec::new(),
            live,
            first: true,
        },
        unreadable,
        unreadable_more,
    })
}

fn open_segment(path: &PathBuf) -> Result<(PathBuf, Option<Backwards>)> {
    match File::open(path).and_then(Backwards::new) {
        Ok(b) => Ok((path.clone(), Some(b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((path.clone(), None)),
        Err(e) => Err(e).with_context(|| format!("cannot read the journal {}", path.display())),
    }
}

/// The journal's runs, newest first.
pub(crate) struct Runs {
    /// Files still to read, oldest first (read from the back).
    files: Vec<(PathBuf, Option<Backwards>)>,
    reader: Option<(PathBuf, Backwards)>,
    /// Records read since the last start record, newest first: the steps
    /// and end of the run whose start comes next.
    pending: Vec<Record>,
    live: bool,
    first: bool,
}

impl Runs {
    fn prev_line(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some((path, reader)) = &mut self.reader {
                let line = reader
                    .prev_line()
                    .with_context(|| format!("cannot read the journal {}", path.display()))?;
                if line.is_some() {
                    return Ok(line);
                }
                self.reader = None;
            }
            match self.files.pop() {
                Some((path, Some(b))) => self.reader = Some((path, b)),
                Some((_, None)) => {}
                None => return Ok(None),
            }
        }
    }

    fn next_run(&mut self) -> Result<Option<RunSummary>> {
        while let Some(line) = self.prev_line()? {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // Unreadable lines are reported from the state, once.
            let Ok(r) = serde_json::from_slice::<Record>(&line) else {
                continue;
            };
            if r.event != Event::Start {
                self.pending.push(r);
                continue;
            }
            // Records of runs whose start was lost belong to no run.
            let mut mine: Vec<Record> = self.pending.drain(..).filter(|p| p.run == r.run).collect();
            mine.reverse();
            let end = mine.iter().rfind(|p| p.event == Event::End).cloned();
            let first = std::mem::replace(&mut self.first, false);
            return Ok(Some(RunSummary {
                result: match &end {
                    Some(e) if e.result == Outcome::Ok => "ok".into(),
                    Some(_) => "failed".into(),
                    None if self.live && first => "running".into(),
                    None => "interrupted".into(),
                },
                duration_ms: end.as_ref().and_then(|e| e.duration_ms),
                error: end.and_then(|e| e.error),
                steps: mine
                    .into_iter()
                    .filter(|p| p.event == Event::Host)
                    .collect(),
                run: r.run,
                time: r.time,
                action: r.action,
                rev: r.rev,
                who: r.who,
                options: r.options,
                break_glass: r.break_glass,
            }));
        }
        Ok(None)
    }
}

impl Iterator for Runs {
    type Item = Result<RunSummary>;

    fn next(&mut self) -> Option<Result<RunSummary>> {
        self.next_run().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::journal::Recorder;
    use crate::record::journal::tests::host_record;

    /// Folds records written the way a run writes them.
    struct Fold(History);

    impl Fold {
        fn start(&mut self, run: &str, rev: &str, hosts: &[&str]) -> Recorder {
            let rec = Recorder {
                run: run.into(),
                who: "tester".into(),
                options: vec![],
                break_glass: None,
            };
            let mut start = rec.record(Event::Start, Action::Deploy, rev, Outcome::Started);
            start.hosts = hosts.iter().map(|h| format!("canary/{h}")).collect();
            let mut batch = start.clone();
            batch.event = Event::Batch;
            self.0.apply_record(&start);
            self.0.apply_record(&batch);
            rec
        }

        fn host(
            &mut self,
            run: &str,
            host: &str,
            action: Action,
            rev: &str,
            from: Option<&str>,
            ok: bool,
        ) {
            let mut r = host_record(
                run,
                host,
                rev,
                if ok { Outcome::Ok } else { Outcome::Failed },
            );
            r.action = action;
            r.from = from.map(str::to_string);
            self.0.apply_record(&r);
        }

        fn end(&mut self, rec: &Recorder, rev: &str) {
            self.end_as(rec, rev, Outcome::Ok);
        }

        fn end_as(&mut self, rec: &Recorder, rev: &str, outcome: Outcome) {
            self.0
                .apply_record(&rec.record(Event::End, Action::Deploy, rev, outcome));
        }

        fn row(&self, host: &str, live: bool) -> HostState {
            rows(&self.0, live)
                .into_iter()
                .find(|r| r.host == host)
                .unwrap_or_else(|| panic!("no row for {host}"))
        }
    }

    fn deployed(f: &mut Fold, run: &str, rev: &str, hosts: &[&str]) {
        let rec = f.start(run, rev, hosts);
        for h in hosts {
            f.host(run, h, Action::Deploy, rev, None, true);
        }
        f.end(&rec, rev);
    }

    #[test]
    fn an_interrupted_host_reads_interrupted_only_until_a_later_run_records_it() {
        let mut f = Fold(History::default());
        deployed(&mut f, "r1", "aaa", &["h1", "h2", "h3"]);
        // r2 dies after h1 finished, with h2 and h3 in flight.
        f.start("r2", "bbb", &["h1", "h2", "h3"]);
        f.host("r2", "h1", Action::Deploy, "bbb", None, true);
        let h2 = f.row("h2", false);
        assert_eq!(
            (h2.result.as_str(), h2.rev.as_str()),
            ("interrupted", "bbb")
        );
        assert_eq!(h2.left.as_deref(), Some("aaa"));
        assert_eq!(f.row("h1", false).result, "ok");
        // While r2 holds the lock it is running: h2 is still on aaa as far
        // as anyone knows.
        let live = f.row("h2", true);
        assert_eq!((live.result.as_str(), live.rev.as_str()), ("ok", "aaa"));

        // A later run that records h2 (but not h3) settles h2 only.
        deployed(&mut f, "r3", "ccc", &["h2"]);
        let h2 = f.row("h2", false);
        assert_eq!((h2.result.as_str(), h2.rev.as_str()), ("ok", "ccc"));
        let h3 = f.row("h3", false);
        assert_eq!(
            (h3.result.as_str(), h3.rev.as_str()),
            ("interrupted", "bbb")
        );
        let h3 = f.row("h3", true);
        assert_eq!(
            h3.result, "interrupted",
            "r2 is not the run holding the lock"
        );
    }

    #[test]
    fn a_failed_restore_names_the_files_the_host_holds_and_says_it_failed() {
        let mut f = Fold(History::default());
        deployed(&mut f, "r1", "aaa", &["h1", "h2"]);
        let rec = f.start("r2", "bbb", &["h1", "h2"]);
        f.host("r2", "h1", Action::Deploy, "bbb", Some("aaa"), false);
        f.host("r2", "h2", Action::Deploy, "bbb", Some("aaa"), false);
        f.host("r2", "h1", Action::Restore, "aaa", Some("bbb"), false);
        f.host("r2", "h2", Action::Restore, "aaa", Some("bbb"), true);
        f.end_as(&rec, "bbb", Outcome::Failed);
        let h1 = f.row("h1", false);
        assert_eq!(
            (h1.result.as_str(), h1.rev.as_str(), h1.target.as_deref()),
            ("restore-failed", "bbb", Some("aaa"))
        );
        let h2 = f.row("h2", false);
        assert_eq!(
            (h2.result.as_str(), h2.rev.as_str(), h2.left.as_deref()),
            ("restored", "aaa", Some("bbb"))
        );
        // The same put-back in a run that went on and ended ok (a failure
        // budget): the host was left behind.
        let rec = f.start("r3", "ccc", &["h2"]);
        f.host("r3", "h2", Action::Deploy, "ccc", Some("aaa"), false);
        f.host("r3", "h2", Action::Restore, "aaa", Some("ccc"), true);
        f.end(&rec, "ccc");
        assert_eq!(f.row("h2", false).result, "left-behind");
        // The restore target is still what the next failure goes back to.
        assert_eq!(f.0.last_good("h1", "sshd").unwrap().rev, "aaa");
    }

    #[test]
    fn a_rollback_shows_the_revision_left_and_moves_the_previous_one() {
        let mut f = Fold(History::default());
        deployed(&mut f, "r1", "aaa", &["h1"]);
        deployed(&mut f, "r2", "bbb", &["h1"]);
        assert_eq!(f.0.previous_good_host("h1").unwrap().rev, "aaa");
        let rec = f.start("r3", "aaa", &["h1"]);
        f.host("r3", "h1", Action::Rollback, "aaa", Some("bbb"), true);
        f.end(&rec, "aaa");
        let h1 = f.row("h1", false);
        assert_eq!(
            (h1.result.as_str(), h1.rev.as_str(), h1.left.as_deref()),
            ("rolled-back", "aaa", Some("bbb"))
        );
        assert_eq!(f.0.previous_good_host("h1").unwrap().rev, "bbb");
    }
}
