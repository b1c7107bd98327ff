//! Revision-pinned rollback: deploy the configuration exactly as of an
//! earlier revision (its files, inventory and commands) without touching
//! the branch, through the same gate, lock and journal as any deploy.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use crate::error::UserError;
use crate::policy::{Policy, bounds};
use crate::record::journal::{self, Action};
use crate::rollout::deploy::{self, DeployOptions};
use crate::rollout::scope::{Scope, Target};
use crate::source::repo::{self, Snapshot, short_str};
use crate::source::revision::Revision;
use crate::ui::Ui;

pub(crate) struct RollbackOptions {
    /// `None`: each host goes back to the revision it had before its current one.
    pub(crate) to: Option<String>,
    pub(crate) scope: Scope,
    pub(crate) dry_run: bool,
}

pub(crate) fn rollback(repo: &Repository, opts: RollbackOptions, ui: &Ui) -> Result<()> {
    let policy = Policy::load(repo)?;
    if opts.scope != Scope::Default {
        policy.require_widen(&format!("rollback of {}", opts.scope))?;
    }
    let deploy_opts = || DeployOptions {
        dry_run: opts.dry_run,
        ..DeployOptions::new(Action::Rollback, &policy)
    };
    if let Some(to) = &opts.to {
        let commit = repo::resolve(repo, to)?;
        let id = commit.id();
        let rev = Revision::load(Snapshot::of_commit(repo, commit)?)
            .with_context(|| format!("cannot roll back to `{to}`"))?;
        bounds::require_merged(repo, &policy, id, &format!("rollback to `{to}`"))?;
        return deploy::deploy(repo, rev, &opts.scope, deploy_opts(), ui);
    }
    // Which hosts are in scope is the current inventory's business; where
    // each goes back to is the journal's.
    let Some(tip) = bounds::tip(repo, &policy)? else {
        return Err(UserError::failed(format!(
            "the deploy branch {} has no commits yet: nothing to roll back",
            policy.branch
        ))
        .into());
    };
    let current = Revision::load(Snapshot::of_commit(repo, repo.find_commit(tip)?)?)?;
    let targets = opts.scope.resolve(&current.config)?;
    let history = journal::read(repo.path())?;
    let mut by_rev: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stay = Vec::new();
    for host in targets.iter().flat_map(|t| &t.hosts) {
        match history.previous_good_host(host) {
            Some(prev) => by_rev
                .entry(prev.rev.clone())
                .or_default()
                .push(host.clone()),
            None => stay.push(host.as_str()),
        }
    }
    if !stay.is_empty() {
        ui.line(format_args!(
            "no earlier revision in the journal, left alone: {}",
            stay.join(", ")
        ));
    }
    if by_rev.is_empty() {
        return Err(UserError::failed(format!("nothing to roll back in {}", opts.scope)).into());
    }
    for (rev_id, hosts) in by_rev {
        let oid = Oid::from_str(&rev_id)
            .with_context(|| format!("the journal names an invalid revision {rev_id:?}"))?;
        let commit = repo.find_commit(oid).with_context(|| {
            format!(
                "revision {} from the journal is no longer in the repository",
                short_str(&rev_id)
            )
        })?;
        let old = Revision::load(Snapshot::of_commit(repo, commit)?)?;
        let targets = targets_in(&old, &hosts, ui);
        if targets.is_empty() {
            continue;
        }
        let names: Vec<&str> = targets
            .iter()
            .flat_map(|t| t.hosts.iter().map(String::as_str))
            .collect();
        let scope = format!(
            "host{} {}",
            if names.len() == 1 { "" } else { "s" },
            names.join(", ")
        );
        deploy::prepare_targets(old, targets, scope, deploy_opts(), ui)?.run(repo, ui)?;
    }
    Ok(())
}

/// `hosts` grouped by their group in the old revision's own inventory;
/// a host that did not exist then is reported and left alone.
fn targets_in(old: &Revision<'_>, hosts: &[String], ui: &Ui) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::new();
    for host in hosts {
        let Some(group) = old.config.group_of_host(host) else {
            ui.line(format_args!(
                "{host}: not in the inventory at {}; left alone",
                old.snapshot.describe()
            ));
            continue;
        };
        match targets.iter_mut().find(|t| t.group.name == group.name) {
            Some(t) => t.hosts.push(host.clone()),
            None => targets.push(Target {
                group: group.clone(),
                hosts: vec![host.clone()],
            }),
        }
    }
    targets
}
