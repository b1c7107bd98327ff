//! `status` and `log`: what the journal says ran where.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::record::journal::{self, Action, Event, History, Outcome, Record};
use crate::record::lock;

/// One host and service, as it stands.
#[derive(Debug, Serialize)]
pub(crate) struct HostState {
    pub(crate) host: String,
    pub(crate) service: String,
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) rev: String,
    pub(crate) when: String,
    pub(crate) who: String,
    pub(crate) action: Action,
    /// ok, failed, restored, rolled-back, interrupted, left-behind (failed
    /// within max_failures and put back), armed-revert (failed while armed
    /// and could not be put back: left to its dead-man's switch)
    pub(crate) result: String,
    /// For a rollback or restore: the revision the host left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) left: Option<String>,
    pub(crate) run: String,
}

pub(crate) struct Report<T> {
    pub(crate) items: Vec<T>,
    /// Journal lines that could not be read (a torn write), 1-based.
    pub(crate) unreadable: Vec<usize>,
}

pub(crate) fn status(git_dir: &Path) -> Result<Report<HostState>> {
    let history = journal::read(git_dir)?;
    let live = lock::is_held(git_dir)?;
    let mut rows: BTreeMap<(String, String), HostState> = BTreeMap::new();
    // A restore in a run that ended ok: a host that failed within its
    // group's max_failures and was put back while the rollout went on.
    let ok_runs: BTreeSet<&str> = history
        .records
        .iter()
        .filter(|r| r.event == Event::End && r.result == Outcome::Ok)
        .map(|r| r.run.as_str())
        .collect();
    // Services that failed with their dead-man's switch armed, per run.
    let mut armed: BTreeSet<(&str, &str, &str)> = BTreeSet::new();
    for r in history.records.iter().filter(|r| r.event == Event::Host) {
        let (Some(host), Some(service)) = (&r.host, &r.service) else {
            continue;
        };
        if r.armed {
            armed.insert((&r.run, host, service));
        }
        let result = match (r.action, r.result) {
            (_, Outcome::Failed) if armed.contains(&(&r.run, host, service)) => "armed-revert",
            (_, Outcome::Failed) => "failed",
            (Action::Restore, _) if ok_runs.contains(r.run.as_str()) => "left-behind",
            (Action::Restore, _) => "restored",
            (Action::Rollback, _) => "rolled-back",
            _ => "ok",
        };
        let left = match r.action {
            Action::Deploy => None,
            _ => r.from.clone().filter(|f| *f != r.rev),
        };
        rows.insert(
            (host.clone(), service.clone()),
            state_of(r, host, service, result, left),
        );
    }
    for run in interrupted_runs(&history, live) {
        // Only hosts whose batch had started can be in an unknown state.
        for entry in &run.started {
            let host = entry.split_once('/').map_or(entry.as_str(), |(_, h)| h);
            if run.finished_hosts.contains(&host) {
                continue;
            }
            let services: Vec<String> = rows
                .keys()
                .filter(|(h, _)| h == host)
                .map(|(_, s)| s.clone())
                .collect();
            let services = if services.is_empty() {
                vec!["-".to_string()]
            } else {
                services
            };
            for service in services {
                let mut state = state_of(run.start, host, &service, "interrupted", None);
                state.group = entry
                    .split_once('/')
                    .map_or(String::new(), |(g, _)| g.to_string());
                if let Some(prev) = rows.get(&(host.to_string(), service.clone())) {
                    state.version = prev.version.clone();
                    state.left = Some(prev.rev.clone());
                }
                rows.insert((host.to_string(), service), state);
            }
        }
    }
    Ok(Report {
        items: rows.into_values().collect(),
        unreadable: history.unreadable,
    })
}

fn state_of(
    r: &Record,
    host: &str,
    service: &str,
    result: &str,
    left: Option<String>,
) -> HostState {
    HostState {
        host: host.to_string(),
        service: service.to_string(),
        group: r.group.clone().unwrap_or_default(),
        version: r.version.clone().unwrap_or_default(),
        rev: r.rev.clone(),
        when: r.time.clone(),
        who: r.who.clone(),
        action: r.action,
        result: result.to_string(),
        left,
        run: r.run.clone(),
    }
}

struct RunView<'h> {
    start: &'h Record,
    end: Option<&'h Record>,
    /// `group/host` of every host whose batch started.
    started: Vec<&'h String>,
    finished_hosts: Vec<&'h str>,
    steps: Vec<&'h Record>,
}

fn runs(history: &History) -> Vec<RunView<'_>> {
    let mut order: Vec<&str> = Vec::new();
    let mut by_id: BTreeMap<&str, RunView<'_>> = BTreeMap::new();
    for r in &history.records {
        match r.event {
            Event::Start => {
                order.push(&r.run);
                by_id.insert(
                    &r.run,
                    RunView {
                        start: r,
                        end: None,
                        started: vec![],
                        finished_hosts: vec![],
                        steps: vec![],
                    },
                );
            }
            Event::Batch => {
                if let Some(v) = by_id.get_mut(r.run.as_str()) {
                    v.started.extend(&r.hosts);
                }
            }
            Event::Host => {
                if let Some(v) = by_id.get_mut(r.run.as_str()) {
                    if let Some(h) = &r.host {
                        v.finished_hosts.push(h);
                    }
                    v.steps.push(r);
                }
            }
            Event::End => {
                if let Some(v) = by_id.get_mut(r.run.as_str()) {
                    v.end = Some(r);
                }
            }
        }
    }
    order.iter().filter_map(|id| by_id.remove(id)).collect()
}

/// Runs with a start and no end. While a deploy holds the lock, the newest
/// such run is still going, not interrupted.
fn interrupted_runs(history: &History, live: bool) -> Vec<RunView<'_>> {
    let mut open: Vec<RunView<'_>> = runs(history)
        .into_iter()
        .filter(|r| r.end.is_none())
        .collect();
    if live {
        open.pop();
    }
    open
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
    pub(crate) steps: Vec<Record>,
}

/// Runs, newest first, at most `limit`.
pub(crate) fn log(git_dir: &Path, limit: Option<usize>) -> Result<Report<RunSummary>> {
    let history = journal::read(git_dir)?;
    let live = lock::is_held(git_dir)?;
    let all = runs(&history);
    let newest = all.len().saturating_sub(1);
    let items = all
        .into_iter()
        .enumerate()
        .rev()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(i, v)| RunSummary {
            run: v.start.run.clone(),
            time: v.start.time.clone(),
            action: v.start.action,
            rev: v.start.rev.clone(),
            who: v.start.who.clone(),
            options: v.start.options.clone(),
            result: match v.end {
                Some(e) if e.result == Outcome::Ok => "ok".into(),
                Some(_) => "failed".into(),
                None if live && i == newest => "running".into(),
                None => "interrupted".into(),
            },
            duration_ms: v.end.and_then(|e| e.duration_ms),
            error: v.end.and_then(|e| e.error.clone()),
            steps: v.steps.into_iter().cloned().collect(),
        })
        .collect();
    Ok(Report {
        items,
        unreadable: history.unreadable,
    })
}
