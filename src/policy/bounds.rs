//! What the deploy branch's current tip allows: which revisions may deploy
//! at all (those the branch has held, unless `unmerged`), and which hosts a
//! plain push reaches (those the tip's config puts in its default group:
//! a push cannot widen itself by editing the inventory it brings).

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use crate::config;
use crate::error::UserError;
use crate::policy::Policy;
use crate::rollout::scope::Target;
use crate::source::repo::{Snapshot, short};
use crate::source::revision::Revision;
use crate::ui::Ui;

/// The deploy branch's tip in the repository, `None` while it has none.
pub(crate) fn tip(repo: &Repository, policy: &Policy) -> Result<Option<Oid>> {
    match repo.find_reference(&policy.branch_ref()) {
        Ok(r) => {
            let commit = r
                .peel_to_commit()
                .with_context(|| format!("{} does not point at a commit", policy.branch_ref()))?;
            Ok(Some(commit.id()))
        }
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", policy.branch_ref())),
    }
}

/// Refuses `rev` unless the deploy branch holds it (its tip or an ancestor),
/// unless the policy says `unmerged = true`. `what` names the request.
pub(crate) fn require_merged(
    repo: &Repository,
    policy: &Policy,
    rev: Oid,
    what: &str,
) -> Result<()> {
    if policy.unmerged {
        return Ok(());
    }
    let branch = &policy.branch;
    let Some(tip) = tip(repo, policy)? else {
        return Err(UserError::failed(format!(
            "{what}: the deploy branch {branch} has no commits yet, and only revisions it holds \
             may deploy"
        ))
        .hint(format!("push {branch} first"))
        .into());
    };
    if tip == rev || repo.graph_descendant_of(tip, rev).unwrap_or(false) {
        return Ok(());
    }
    Err(UserError::failed(format!(
        "{what}: {} is not on the deploy branch {branch} (tip {}); only revisions the branch \
         holds may deploy",
        short(rev),
        short(tip),
    ))
    .hint(format!(
        "merge it into {branch} and push that, or an admin sets `unmerged = true` in {}",
        policy.path.display()
    ))
    .into())
}

/// Bounds a plain push's default-group `targets` (from the pushed config)
/// by the hosts the deploy branch's tip puts in its default group. Without
/// a tip (the first push) the pushed config stands. Hosts left out are
/// named, with why; the result may be empty (then nothing deploys).
pub(crate) fn bound_to_tip(
    repo: &Repository,
    policy: &Policy,
    tip: Option<Oid>,
    rev: &Revision<'_>,
    targets: Vec<Target>,
    ui: &Ui,
) -> Vec<Target> {
    let Some(tip) = tip else {
        return targets;
    };
    if rev.snapshot.commit_id() == Some(tip) {
        return targets;
    }
    let at = format!("{}'s tip {}", policy.branch, short(tip));
    let (tip_group, tip_hosts) = match default_hosts_at(repo, tip) {
        Ok(found) => found,
        Err(why) => {
            ui.line(format_args!(
                "no host deployed: {at} names no default group rollgate can read ({why}), and a \
                 push deploys only to hosts it names; the next push is bounded by this one"
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for t in targets {
        if t.group.name != tip_group {
            ui.line(format_args!(
                "default_group is {} in this push but {tip_group} at {at}: the change takes \
                 effect from the next push",
                t.group.name
            ));
        }
        let (kept, left): (Vec<String>, Vec<String>) =
            t.hosts.into_iter().partition(|h| tip_hosts.contains(h));
        if !left.is_empty() {
            ui.line(format_args!(
                "left out: {}: not in the default group ({tip_group}) at {at}; this push puts \
                 them there, which takes effect from the next push",
                left.join(", ")
            ));
        }
        if !kept.is_empty() {
            out.push(Target {
                group: t.group,
                hosts: kept,
            });
        }
    }
    let deployed: Vec<&String> = out.iter().flat_map(|t| &t.hosts).collect();
    let moved: Vec<&str> = tip_hosts
        .iter()
        .filter(|h| !deployed.contains(h))
        .map(String::as_str)
        .collect();
    if !moved.is_empty() {
        ui.line(format_args!(
            "left out: {}: in the default group at {at}, but not in this push's",
            moved.join(", ")
        ));
    }
    out
}

/// The default group of `id`'s `rollgate.toml` and its hosts, read
/// leniently (only those keys), so that a tip written for an older
/// rollgate still bounds the push that modernizes it.
fn default_hosts_at(repo: &Repository, id: Oid) -> Result<(String, Vec<String>), String> {
    let commit = repo.find_commit(id).map_err(|e| e.message().to_string())?;
    let snapshot = Snapshot::of_commit(repo, commit).map_err(|e| format!("{e:#}"))?;
    let text = snapshot
        .read_file(config::FILE_NAME)
        .map_err(|e| format!("{e:#}"))?
        .ok_or_else(|| format!("it has no {}", config::FILE_NAME))?;
    let table: toml::Table = std::str::from_utf8(&text)
        .map_err(|_| format!("its {} is not UTF-8", config::FILE_NAME))?
        .parse()
        .map_err(|_| format!("its {} does not parse", config::FILE_NAME))?;
    let groups = table
        .get("groups")
        .and_then(toml::Value::as_table)
        .ok_or("it has no groups")?;
    let name = match table.get("default_group") {
        Some(v) => v
            .as_str()
            .ok_or("default_group is not a string")?
            .to_string(),
        None if groups.len() == 1 => groups.keys().next().expect("one group").clone(),
        None => return Err("it has several groups and no default_group".into()),
    };
    let hosts = groups
        .get(&name)
        .and_then(|g| g.get("hosts"))
        .and_then(toml::Value::as_array)
        .ok_or_else(|| format!("group {name} has no hosts"))?
        .iter()
        .filter_map(|h| h.as_str().map(String::from))
        .collect();
    Ok((name, hosts))
}
