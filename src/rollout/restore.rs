//! After a failed rollout: put hosts back on the revision the journal last
//! recorded as good for them, with that revision's own files, inventory and
//! commands. Hosts with nothing to go back to are reported and left alone.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use crate::record::journal::{Action, History, Journal, Recorder};
use crate::rollout::host::{self, HostResult};
use crate::rollout::plan;
use crate::source::repo::{Snapshot, short, short_str};
use crate::source::revision::Revision;
use crate::source::worktree::Worktree;
use crate::ui::{Ui, seconds};

/// One service of one host, put back.
pub(crate) struct Restored {
    pub(crate) host: String,
    /// `server02 sshd (to 1a2b3c4d5e)`
    pub(crate) what: String,
}

/// Restores every attempted service of `hosts`; `history` is the journal
/// as it was before the failed run, `failed_rev` what that run deployed.
pub(crate) fn restore(
    repo: &Repository,
    history: &History,
    hosts: &[&HostResult<'_>],
    failed_rev: &str,
    rec: &Recorder,
    journal: &mut Journal,
    ui: &Ui,
) -> Result<Vec<Restored>> {
    // Grouped by target revision, so each old revision is checked out once.
    let mut by_rev: BTreeMap<String, Vec<(&str, &str)>> = BTreeMap::new();
    for r in hosts {
        for s in &r.services {
            let (host, service) = (r.job.host.as_str(), s.job.service.as_str());
            match history.last_good(host, service) {
                None => ui.line(format_args!(
                    "[{host}] {service}: no earlier revision in the journal; left as it is"
                )),
                Some(prev) if prev.rev == failed_rev => ui.line(format_args!(
                    "[{host}] {service}: was already on this revision; left as it is"
                )),
                Some(prev) => by_rev
                    .entry(prev.rev.clone())
                    .or_default()
                    .push((host, service)),
            }
        }
    }
    let mut restored = Vec::new();
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
            }
        }
    }
    Ok(restored)
}

fn restore_to(
    repo: &Repository,
    rev_id: &str,
    failed_rev: &str,
    pairs: &[(&str, &str)],
    rec: &Recorder,
    journal: &mut Journal,
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
    let mut restored = Vec::new();
    for ((host, service), group) in pairs.iter().zip(groups) {
        let job = plan::host_job(&old, &worktree, group, host, Some(service))?;
        let result = host::run(&job, worktree.root());
        journal.append(&result.records(rec, Action::Restore, rev_id, |_, _| {
            Some(failed_rev.to_string())
        }))?;
        match result.failure() {
            None => {
                ui.line(format_args!(
                    "[{host}] restored {service} to {} {}",
                    short(oid),
                    seconds(result.duration)
                ));
                restored.push(Restored {
                    host: host.to_string(),
                    what: format!("{host} {service} (to {})", short(oid)),
                });
            }
            Some((error, output)) => {
                ui.line(format_args!(
                    "[{host}] restore of {service} to {} FAILED: {error}",
                    short(oid)
                ));
                ui.output(output);
            }
        }
    }
    Ok(restored)
}
