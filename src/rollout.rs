//! Runs a plan: batches in parallel, deploy → reload → health per service,
//! stop at the first failure, put failed hosts back, journal every step.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use crate::config::OnFailure;
use crate::error::Failed;
use crate::journal::{self, Action, Event, History, Journal, Outcome, Record};
use crate::lock;
use crate::plan::{self, HostJob, Plan, ServiceJob};
use crate::process;
use crate::repo::{Snapshot, short, short_str};
use crate::report::{Ui, seconds};
use crate::revision::Revision;
use crate::worktree::Worktree;

/// How often a failing health check is retried within `health_wait`.
const HEALTH_RETRY: Duration = Duration::from_millis(500);

pub struct RunOptions {
    pub action: Action,
    pub who: String,
    pub push_options: Vec<String>,
    /// What the run targets, for people: `group canary`, `all groups` ...
    pub scope: String,
    /// See `DeployOptions::expect_ref`: checked once the lock is held.
    pub expect_ref: Option<(String, Option<Oid>)>,
}

/// What happened to one host.
struct HostResult<'p> {
    job: &'p HostJob,
    /// Per attempted service: its outcome; services after a failure are
    /// not attempted.
    services: Vec<ServiceResult<'p>>,
    duration: Duration,
}

struct ServiceResult<'p> {
    job: &'p ServiceJob,
    duration: Duration,
    failure: Option<(String, String)>,
}

impl HostResult<'_> {
    fn failed(&self) -> bool {
        self.services.iter().any(|s| s.failure.is_some())
    }
}

/// Builds the records of one run; only the per-record fields vary.
struct Recorder<'a> {
    run: String,
    who: &'a str,
    options: &'a [String],
}

impl Recorder<'_> {
    fn record(&self, event: Event, action: Action, rev: &str, result: Outcome) -> Record {
        Record {
            run: self.run.clone(),
            time: journal::now(),
            event,
            action,
            rev: rev.to_string(),
            group: None,
            host: None,
            service: None,
            version: None,
            from: None,
            result,
            who: self.who.to_string(),
            options: self.options.to_vec(),
            hosts: Vec::new(),
            duration_ms: None,
            error: None,
        }
    }

    /// `from(host, service)`: the revision the host ran before this step.
    fn host_records(
        &self,
        action: Action,
        rev: &str,
        r: &HostResult<'_>,
        from: impl Fn(&str, &str) -> Option<String>,
    ) -> Vec<Record> {
        r.services
            .iter()
            .map(|s| Record {
                from: from(&r.job.host, &s.job.service),
                group: Some(r.job.group.clone()),
                host: Some(r.job.host.clone()),
                service: Some(s.job.service.clone()),
                version: Some(s.job.version.clone()),
                duration_ms: Some(s.duration.as_millis() as u64),
                error: s.failure.as_ref().map(|(e, _)| e.clone()),
                ..self.record(
                    Event::Host,
                    action,
                    rev,
                    if s.failure.is_some() {
                        Outcome::Failed
                    } else {
                        Outcome::Ok
                    },
                )
            })
            .collect()
    }
}

/// Deploys `plan` (files in `worktree`), holding the deploy lock throughout.
pub fn run(
    repo: &Repository,
    rev: &Revision<'_>,
    worktree: &Worktree,
    plan: &Plan,
    opts: &RunOptions,
    ui: &Ui,
) -> Result<()> {
    let git_dir = repo.path();
    let config = &rev.config;
    let rev_short = &plan.rev[..10];
    let holder = format!(
        "{}: {} of {rev_short} to {}, since {}, pid {}",
        opts.who,
        opts.action,
        opts.scope,
        journal::now(),
        std::process::id()
    );
    let _lock = lock::acquire(git_dir, &holder, config.lock_wait, config.heartbeat, ui)?;
    if let Some((name, expected)) = &opts.expect_ref {
        let now = repo.refname_to_id(name).ok();
        if now != *expected {
            return Err(Failed(format!(
                "{name} moved to {} while this push waited for the deploy lock, so git will refuse it; \
                 nothing was deployed (fetch, rebase and push again)",
                now.map_or("nothing".into(), short)
            ))
            .into());
        }
    }
    // Read before this run writes, so "previous revision" means before it.
    let history = journal::read(git_dir)?;
    let action = match opts.action {
        Action::Deploy if moves_back(repo, &history, plan) => Action::Rollback,
        other => other,
    };
    let (verb, doing, done_verb) = match action {
        Action::Rollback => ("rollback", "rolling back", "rolled back"),
        _ => ("deploy", "deploying", "deployed"),
    };
    let before =
        |host: &str, service: &str| history.last_good(host, service).map(|p| p.rev.clone());
    let mut journal = Journal::open(git_dir)?;
    let rec = Recorder {
        run: format!("{}-{}", unix_secs(), std::process::id()),
        who: &opts.who,
        options: &opts.push_options,
    };
    let mut start = rec.record(Event::Start, action, &plan.rev, Outcome::Started);
    start.hosts = plan
        .stages
        .iter()
        .flat_map(|s| s.hosts.iter().map(|h| format!("{}/{}", h.group, h.host)))
        .collect();
    journal.append(&[start])?;

    let total = plan.host_count();
    ui.line(format_args!(
        "{doing} {rev_short} to {}: {total} host{}",
        opts.scope,
        if total == 1 { "" } else { "s" }
    ));
    let started = Instant::now();
    let done = AtomicUsize::new(0);
    let mut results: Vec<HostResult<'_>> = Vec::new();
    // (host, what was put back where)
    let mut restored: Vec<(String, String)> = Vec::new();

    let outcome = std::thread::scope(|s| -> Result<()> {
        let (stop_heartbeat, stop) = mpsc::channel::<()>();
        let done = &done;
        s.spawn(move || heartbeat(ui, config.heartbeat, stop, done, total));
        let mut body = || -> Result<()> {
            'stages: for stage in &plan.stages {
                for batch in stage.hosts.chunks(stage.batch) {
                    let mut record = rec.record(Event::Batch, action, &plan.rev, Outcome::Started);
                    record.hosts = batch
                        .iter()
                        .map(|h| format!("{}/{}", h.group, h.host))
                        .collect();
                    journal.append(&[record])?;
                    let (tx, rx) = mpsc::channel();
                    for job in batch {
                        let tx = tx.clone();
                        let cwd = worktree.root();
                        s.spawn(move || tx.send(run_host(job, cwd)));
                    }
                    drop(tx);
                    // Group commit: whatever finished together is synced
                    // once, then reported.
                    while let Ok(first) = rx.recv() {
                        let mut arrived = vec![first];
                        arrived.extend(rx.try_iter());
                        let records: Vec<Record> = arrived
                            .iter()
                            .flat_map(|r| rec.host_records(action, &plan.rev, r, before))
                            .collect();
                        journal.append(&records)?;
                        for r in arrived {
                            done.fetch_add(1, Ordering::Relaxed);
                            show_host(ui, &r);
                            results.push(r);
                        }
                    }
                    if results.iter().any(HostResult::failed) {
                        break 'stages;
                    }
                }
            }
            Ok(())
        };
        let outcome = body();
        if outcome.is_ok() && results.iter().any(HostResult::failed) {
            let to_restore: Vec<&HostResult<'_>> = match config.on_failure {
                OnFailure::RestoreFailed => results.iter().filter(|r| r.failed()).collect(),
                OnFailure::RestoreRun => results.iter().collect(),
            };
            restored = restore(
                repo,
                &history,
                &to_restore,
                &plan.rev,
                &rec,
                &mut journal,
                ui,
            )?;
        }
        drop(stop_heartbeat);
        outcome
    });

    let failed: Vec<&str> = results
        .iter()
        .filter(|r| r.failed())
        .map(|r| r.job.host.as_str())
        .collect();
    let not_started = total - results.len();
    let mut end = rec.record(
        Event::End,
        action,
        &plan.rev,
        if failed.is_empty() && outcome.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Failed
        },
    );
    end.duration_ms = Some(started.elapsed().as_millis() as u64);
    if let Err(e) = &outcome {
        end.error = Some(format!("{e:#}"));
    } else if !failed.is_empty() {
        end.error = Some(format!("failed on {}", failed.join(", ")));
    }
    journal.append(&[end])?;
    outcome?;
    if failed.is_empty() {
        ui.line(format_args!(
            "{done_verb} {rev_short} to {} in {}: {total} ok",
            opts.scope,
            seconds(started.elapsed())
        ));
        return Ok(());
    }
    let ok: Vec<&str> = results
        .iter()
        .filter(|r| !r.failed())
        .map(|r| r.job.host.as_str())
        .collect();
    ui.line(format_args!(
        "{verb} stopped after {}: {} ok, {} FAILED ({}), {not_started} not started",
        seconds(started.elapsed()),
        ok.len(),
        failed.len(),
        failed.join(", ")
    ));
    // Where things stand, so nobody has to reconstruct it mid-incident.
    let unstarted = plan
        .stages
        .iter()
        .flat_map(|s| &s.hosts)
        .map(|h| h.host.as_str())
        .filter(|h| !results.iter().any(|r| r.job.host == *h));
    for (what, hosts) in [
        (
            format!("now on {rev_short}"),
            names_capped(
                ok.iter()
                    .copied()
                    .filter(|h| !restored.iter().any(|(r, _)| r == h)),
            ),
        ),
        (
            "restored".to_string(),
            names_capped(restored.iter().map(|(_, what)| what.as_str())),
        ),
        (
            "not started, unchanged".to_string(),
            names_capped(unstarted),
        ),
    ] {
        if !hosts.is_empty() {
            ui.line(format_args!("  {what}: {hosts}"));
        }
    }
    Err(Failed(format!(
        "{verb} of {rev_short} failed on {}",
        failed.join(", ")
    ))
    .into())
}

fn run_host<'p>(job: &'p HostJob, cwd: &Path) -> HostResult<'p> {
    let started = Instant::now();
    let mut services = Vec::new();
    for s in &job.services {
        let t = Instant::now();
        let failure = run_service(s, cwd).err();
        let stop = failure.is_some();
        services.push(ServiceResult {
            job: s,
            duration: t.elapsed(),
            failure,
        });
        if stop {
            break;
        }
    }
    HostResult {
        job,
        services,
        duration: started.elapsed(),
    }
}

/// Deploy, reload, then health, retried until `health_wait` has passed.
/// The error is (what failed, the command's output).
fn run_service(s: &ServiceJob, cwd: &Path) -> Result<(), (String, String)> {
    for step in &s.steps {
        let deadline = Instant::now() + s.health_wait;
        loop {
            match process::run(&step.argv, cwd, s.timeout) {
                Ok(_) => break,
                Err(f) if step.role == "health" && Instant::now() + HEALTH_RETRY < deadline => {
                    let _ = f;
                    std::thread::sleep(HEALTH_RETRY);
                }
                Err(f) => {
                    return Err((
                        format!("{} {}: {f}", s.service, step.role),
                        f.output().to_string(),
                    ));
                }
            }
        }
    }
    Ok(())
}

fn show_host(ui: &Ui, r: &HostResult<'_>) {
    match r.services.iter().find_map(|s| s.failure.as_ref()) {
        None => ui.line(format_args!("[{}] ok {}", r.job.host, seconds(r.duration))),
        Some((error, output)) => {
            ui.line(format_args!(
                "[{}] FAILED {}: {error}",
                r.job.host,
                seconds(r.duration)
            ));
            ui.output(output);
        }
    }
}

/// Prints a line whenever the pusher has seen nothing for `every`; returns
/// as soon as `stop` is dropped.
fn heartbeat(ui: &Ui, every: Duration, stop: mpsc::Receiver<()>, done: &AtomicUsize, total: usize) {
    loop {
        let wait = every
            .saturating_sub(ui.quiet_for())
            .max(Duration::from_millis(50));
        match stop.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if ui.quiet_for() >= every {
                    ui.line(format_args!(
                        "... still working: {} of {total} hosts done",
                        done.load(Ordering::Relaxed)
                    ));
                }
            }
            _ => return,
        }
    }
}

/// Puts each host's attempted services back on the revision its journal
/// last recorded as good before this run, with that revision's files,
/// inventory and commands. Hosts with nothing to go back to are reported
/// and left alone.
fn restore(
    repo: &Repository,
    history: &History,
    hosts: &[&HostResult<'_>],
    failed_rev: &str,
    rec: &Recorder<'_>,
    journal: &mut Journal,
    ui: &Ui,
) -> Result<Vec<(String, String)>> {
    // Group by target revision so each old revision is checked out once.
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
    rec: &Recorder<'_>,
    journal: &mut Journal,
    ui: &Ui,
) -> Result<Vec<(String, String)>> {
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
        let result = run_host(&job, worktree.root());
        journal.append(&rec.host_records(Action::Restore, rev_id, &result, |_, _| {
            Some(failed_rev.to_string())
        }))?;
        match result.services.iter().find_map(|s| s.failure.as_ref()) {
            None => {
                ui.line(format_args!(
                    "[{host}] restored {service} to {} {}",
                    short(oid),
                    seconds(result.duration)
                ));
                restored.push((
                    host.to_string(),
                    format!("{host} {service} (to {})", short(oid)),
                ));
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

/// Whether this deploy takes a host back: some host in the plan runs a
/// revision that descends from the one being deployed. Such a run is a
/// rollback (`git push -f origin OLD:refs/deploy/NAME`, `deploy --rev OLD`)
/// and is journaled as one.
fn moves_back(repo: &Repository, history: &History, plan: &Plan) -> bool {
    let Ok(new) = Oid::from_str(&plan.rev) else {
        return false;
    };
    plan.stages.iter().flat_map(|s| &s.hosts).any(|job| {
        job.services.iter().any(|s| {
            history.last_good(&job.host, &s.service).is_some_and(|now| {
                Oid::from_str(&now.rev).is_ok_and(|now| {
                    now != new && repo.graph_descendant_of(now, new).unwrap_or(false)
                })
            })
        })
    })
}

/// At most 20 names, then how many more: a 1,000-host line helps nobody.
fn names_capped<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = names.collect();
    let mut text = all.iter().take(20).copied().collect::<Vec<_>>().join(", ");
    if all.len() > 20 {
        text.push_str(&format!(" and {} more", all.len() - 20));
    }
    text
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
