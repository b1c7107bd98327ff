//! The journal as one run writes it, including when it cannot be written.
//!
//! While hosts are being changed, a record that cannot be written stops the
//! rollout (nothing is reported done that is not on disk). Once the rollout
//! has stopped, putting hosts back matters more than recording it: restore
//! records that cannot be written are kept here, the pusher is told loudly,
//! and at the end the journal is made to say, as far as it can, what the
//! hosts hold (see [`Ledger::finish`]).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Result;

use crate::record::journal::{Event, Journal, Record};
use crate::ui::Ui;

pub(crate) struct Ledger {
    journal: Journal,
    /// The journal's length before this run wrote anything.
    start_len: u64,
    /// Every record of this run, written or not, in order.
    all: Vec<Record>,
    /// Why the journal stopped taking records, once it has.
    broken: Option<String>,
    /// How many of `all` are on disk (a prefix: nothing is written after
    /// the first failure).
    written: usize,
}

impl Ledger {
    pub(crate) fn open(git_dir: &Path) -> Result<Ledger> {
        let journal = Journal::open(git_dir)?;
        let start_len = journal.len()?;
        Ok(Ledger {
            journal,
            start_len,
            all: Vec::new(),
            broken: None,
            written: 0,
        })
    }

    /// Appends and syncs `records`, or fails: for steps that may only be
    /// reported once they are on disk. After a failure the records are
    /// still kept (the hosts did run), for [`Ledger::finish`].
    pub(crate) fn append(&mut self, records: &[Record]) -> Result<()> {
        self.all.extend_from_slice(records);
        if let Some(why) = &self.broken {
            anyhow::bail!("{why}");
        }
        let before = self.journal.len()?;
        match self.journal.append(records) {
            Ok(()) => {
                self.written = self.all.len();
                Ok(())
            }
            Err(e) => {
                // A partial write would glue the next line to a torn one.
                let _ = self.journal.truncate(before);
                self.broken = Some(format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// Appends `records` if the journal still takes them; if not, keeps them
    /// and says so once. For putting hosts back, which must go on anyway.
    pub(crate) fn record(&mut self, records: &[Record], ui: &Ui) {
        let was_broken = self.broken.is_some();
        if let Err(e) = self.append(records)
            && !was_broken
        {
            ui.line(format_args!(
                "WARNING: cannot write the journal ({e:#}); putting hosts back anyway, \
                 without recording it"
            ));
        }
    }

    /// Writes `end`. If the journal is broken, first tries once more to
    /// write everything (space may have been freed); failing that, cuts the
    /// journal back to before this run, so that it does not claim hosts hold
    /// a revision they were put back from, and writes only the records of
    /// `changed` hosts (those still holding this run's files) and the run's
    /// start and end. What could not be kept is said loudly.
    pub(crate) fn finish(mut self, end: Record, changed: &BTreeSet<String>, ui: &Ui) {
        if self.broken.is_none() {
            if self.append(std::slice::from_ref(&end)).is_ok() {
                return;
            }
        } else {
            self.all.push(end);
        }
        let unwritten = self.all[self.written..].to_vec();
        if self.journal.append(&unwritten).is_ok() {
            ui.line("the journal takes records again: this run is recorded in full");
            return;
        }
        let why = self.broken.clone().unwrap_or_default();
        ui.line(format_args!(
            "WARNING: the journal cannot be written: {why}"
        ));
        let kept: Vec<Record> = self
            .all
            .iter()
            .filter(|r| {
                matches!(r.event, Event::Start | Event::End)
                    || r.host.as_ref().is_some_and(|h| changed.contains(h))
            })
            .cloned()
            .collect();
        let cut = self.journal.truncate(self.start_len);
        if cut.is_ok() && self.journal.append(&kept).is_ok() {
            ui.line(format_args!(
                "WARNING: the journal was cut back to before this run and keeps only {} of its \
                 {} records (the run and the hosts still holding its files), so `rollgate \
                 status` shows what each host holds",
                kept.len(),
                self.all.len()
            ));
            return;
        }
        let _ = self.journal.truncate(self.start_len);
        if changed.is_empty() {
            ui.line(
                "WARNING: nothing of this run could be recorded; every host it touched was put \
                 back, so `rollgate status` (which shows them as before this run) is right",
            );
        } else {
            ui.line(format_args!(
                "WARNING: nothing of this run could be recorded; `rollgate status` is WRONG for \
                 {}: they still hold this run's files",
                changed.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        ui.line("hint: free space on the journal's filesystem, then check those hosts");
    }
}
