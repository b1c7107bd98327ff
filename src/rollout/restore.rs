//! After a failed rollout: put hosts back on the revision the journal last
//! recorded as good for them, with that revision's own files, inventory and
//! commands. Hosts with nothing to go back to are reported and left alone.
//! Restoring goes on when the journal cannot be written (ledger.rs).

use std::collections::BTreeMap;
use std::sync::mpsc;

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use crate::record::journal::{Action, History, Recorder};
use crate::rollout::host::{self, HostResult};
use crate::rollout::ledger::Ledger;
use crate::rollout::plan;
use crate::source::repo::{Snapshot, short, short_str};
use crate::source::revision::Revision;
use crate::source::worktree::Worktree;
use crate::ui::{Ui, seconds};

/// One attempted service of one host, after the restore.
pub(crate) struct Restored {
    pub(crate) host: String,
    pub(crate) service: String,
    pub(crate) state: Back,
}

pub(crate) enum Back {
    /// Put back on this (short) revision.
    To(String),
    /// It ran the failed run's revision already before the run.
    Unchanged,
    /// The journal knows nothing earlier: it keeps the run's files.
    NoEarlier,
    /// Restoring to this (short) revision failed: it keeps the run's files.
    Failed(String),
}

impl Restored {
    /// Whether the host still holds the failed run's files.
    pub(crate) fn changed(&self) -> bool {
        matches!(self.state, Back::NoEarlier | Back::Failed(_))
    }
}

/// Restores every attempted service of `hosts`; `history` is the journal
/// as it was before the failed run, `failed_rev` what that run deployed.
pub(crate) fn restore(
    repo: &Repository,
    history: &History,
    hosts: &[&HostResult<'_>],
    failed_rev: &str,
    rec: &Recorder,
    journal: &mut Ledger,
    ui: &Ui,
) -> Vec<Restored> {
    let mut restored = Vec::new();
    let left = |host: &str, service: &str, state| Restored {
        host: host.to_string(),
        service: service.to_string(),
        state,
    };
    // Grouped by target revision, so each old revision is checked out once.
    let mut by_rev: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
    for r in hosts {
        for s in &r.services {
            let (host, service) = (r.job.host.as_str(), s.job.service.as_str());
            match history.last_good(host, service) {
                None => {
                    ui.line(format_args!(
                        "[{host}] {service}: no earlier revision in the journal; left as it is"
                    ));
                    restored.push(left(host, service, Back::NoEarlier));
                }
                Some(prev) if prev.rev == failed_rev => {
                    ui.line(format_args!(
                        "[{host}] {service}: was already on this revision; left as it is"
                    ));
                    restored.push(left(host, service, Back::Unchanged));
                }
                Some(prev) => by_rev
                    .entry(prev.rev.clone())
                    .or_default()
                    .push((host, service)),
            }
        }
    }
    for (rev_id, pairs) in by_rev {
        match restore_to(repo, &rev_id, failed_rev, &pairs, rec, journal, ui) {
            Ok(done) => restored.extend(done),
            Err(e) => {
                let hosts: Vec<&str> = pairs.iter().map(|(h, _)| *h).collect();
                ui.line(format_args!(
                    "could not restore {} to {}: {e:#}",
                    hosts.join(", "),
                    short_str(&rev_id)
                ));
                for (host, service) in pairs {
                    restored.push(left(host, service, Back::Failed(short_str(&rev_id))));
                }
            }
        }
    }
    restored
}

fn restore_to(
    repo: &Repository,
    rev_id: &str,
    failed_rev: &str,
    pairs: &[(&str, &str)],
    rec: &Recorder,
    journal: &mut Ledger,
    ui: &Ui,
) -> Result<Vec<Restored>> {
    let oid = Oid::from_str(rev_id)
        .with_context(|| format!("journal names an invalid revision {rev_id:?}"))?;
    let commit = repo
        .find_commit(oid)
        .with_context(|| format!("revision {rev_id} is no longer in the repository"))?;
    let old = Revision::load(Snapshot::of_commit(repo, commit)?)?;
    let mut paths = Vec::new();
    let mut groups = Vec::new();
    for (host, _) in pairs {
        let group = old
            .config
            .group_of_host(host)
            .with_context(|| format!("host {host} is not in the inventory at {}", short(oid)))?;
        paths.extend(old.group_dirs(group)?.into_iter().map(|d| d.path));
        groups.push(group);
    }
    let worktree = Worktree::create(&old.snapshot, &paths)?;
    // As many at once as the widest wave of these groups (at that
    // revision) allows: a restore changes hosts like a deploy does, and a
    // fleet-wide failure must not be put back one host at a time.
    let width = groups
        .iter()
        .flat_map(|g| g.rollout.batches(g.hosts.len()))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut restored = Vec::new();
    // Per host, its services in order: one host's services are put back one
    // after the other, as they were deployed.
    let mut jobs: Vec<(&str, Vec<(&str, plan::HostJob)>)> = Vec::new();
    for ((host, service), group) in pairs.iter().zip(groups) {
        match plan::host_job(&old, &worktree, group, host, Some(service)) {
            Ok(job) => match jobs.iter_mut().find(|(h, _)| h == host) {
                Some((_, list)) => list.push((*service, job)),
                None => jobs.push((*host, vec![(*service, job)])),
            },
            Err(e) => {
                ui.line(format_args!(
                    "[{host}] restore of {service} to {} FAILED: {e:#}",
                    short(oid)
                ));
                restored.push(Restored {
                    host: host.to_string(),
                    service: service.to_string(),
                    state: Back::Failed(short(oid)),
                });
            }
        }
    }
    let cwd = worktree.root();
    for chunk in jobs.chunks(width) {
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            for (host, list) in chunk {
                let tx = tx.clone();
                s.spawn(move || {
                    for (service, job) in list {
                        let _ = tx.send((*host, *service, host::run(job, cwd)));
                    }
                });
            }
            drop(tx);
            while let Ok((host, service, result)) = rx.recv() {
                let records = result.records(rec, Action::Restore, rev_id, |_, _| {
                    Some(failed_rev.to_string())
                });
                journal.record(&records, ui);
                let state = match result.failure() {
                    None => {
                        ui.line(format_args!(
                            "[{host}] restored {service} to {} {}",
                            short(oid),
                            seconds(result.duration)
                        ));
                        Back::To(short(oid))
                    }
                    Some((error, output)) => {
                        ui.line(format_args!(
                            "[{host}] restore of {service} to {} FAILED: {error}",
                            short(oid)
                        ));
                        ui.output(output);
                        Back::Failed(short(oid))
                    }
                };
                restored.push(Restored {
                    host: host.to_string(),
                    service: service.to_string(),
                    state,
                });
            }
        });
    }
    Ok(restored)
}
