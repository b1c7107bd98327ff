//! Runs a plan under the deploy lock: batches in parallel, the first failure
//! (a host's step, or the journal) stops new batches, the hosts the run
//! touched are put back (restore.rs), every step is journaled before the
//! pusher is told, and a failed run ends with where each host stands.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;
use git2::{Oid, Repository};

use crate::config::OnFailure;
use crate::error::UserError;
use crate::record::journal::{self, Action, BreakGlass, Event, History, Outcome, Recorder};
use crate::record::lock;
use crate::rollout::host::HostResult;
use crate::rollout::ledger::Ledger;
use crate::rollout::plan::{HostJob, Plan};
use crate::rollout::restore::{self, Back, Restored};
use crate::source::revision::Revision;
use crate::source::worktree::Worktree;
use crate::ui::{self, Ui, seconds};

mod strategy;

pub(crate) struct RunOptions {
    pub(crate) action: Action,
    pub(crate) who: String,
    pub(crate) push_options: Vec<String>,
    /// What the run targets, for people: `group canary`, `all groups` ...
    pub(crate) scope: String,
    /// See `DeployOptions::expect_ref`: checked once the lock is held.
    pub(crate) expect_ref: Option<(String, Option<Oid>)>,
    /// A break-glass run: journaled on its start and host records.
    pub(crate) break_glass: Option<BreakGlass>,
    /// The run's journal id, chosen by the caller (who reports on the run
    /// afterwards, see `notify`).
    pub(crate) run_id: String,
}

/// Deploys `plan` (files in `worktree`), holding the deploy lock throughout.
pub(crate) fn run(
    repo: &Repository,
    rev: &Revision<'_>,
    worktree: &Worktree,
    plan: &Plan,
    opts: &RunOptions,
    ui: &Ui,
) -> Result<()> {
    let config = &rev.config;
    let rev_short = &plan.rev[..10];
    let Begun {
        _lock,
        history,
        action,
        journal,
        rec,
    } = begin(repo, rev, plan, opts, ui)?;
    let total = plan.host_count();
    let doing = if action == Action::Rollback {
        "rolling back"
    } else {
        "deploying"
    };
    ui.line(format_args!(
        "{doing} {rev_short} to {}: {total} host{}",
        opts.scope,
        plural(total)
    ));
    let started = Instant::now();
    let mut rollout = Rollout {
        plan,
        worktree,
        rec: &rec,
        action,
        history: &history,
        journal,
        ui,
        left_behind: Vec::new(),
    };
    let mut results = Vec::new();
    let done = AtomicUsize::new(0);
    let everything = restore_everything(repo, config.on_failure, opts, &plan.rev);
    let (outcome, restored) = std::thread::scope(|s| {
        let (stop_heartbeat, stop) = mpsc::channel::<()>();
        let done = &done;
        s.spawn(move || heartbeat(ui, config.heartbeat, stop, done, total));
        let mut outcome = rollout.stages(repo, &mut results, done);
        let failed = results.iter().any(HostResult::failed);
        if outcome.is_ok() && !failed {
            // No command is left to run (unless the end cannot be written,
            // and a restore starts new supervisors): let them end while the
            // end record is synced.
            crate::process::retire_idle();
            // The run is done only once its end is on disk: if that fails,
            // the push is rejected, so its hosts must go back too.
            let mut end = rec.record(Event::End, action, &plan.rev, Outcome::Ok);
            end.duration_ms = Some(started.elapsed().as_millis() as u64);
            outcome = rollout.journal.append(&[end]);
        }
        let mut restored = None;
        if outcome.is_err() || failed {
            // A journal that cannot be written leaves no way to tell later
            // what a host holds: every touched host goes back then too.
            let to_restore: Vec<&HostResult<'_>> = if everything || outcome.is_err() {
                results.iter().collect()
            } else {
                results.iter().filter(|r| r.failed()).collect()
            };
            restored = Some(restore::restore(
                repo,
                &history,
                &to_restore,
                &plan.rev,
                &rec,
                &mut rollout.journal,
                ui,
            ));
            if let Some(back) = &restored {
                strategy::report_armed(ui, &to_restore, back);
            }
        }
        drop(stop_heartbeat);
        (outcome, restored)
    });

    let Some(restored) = restored else {
        report_done(
            ui,
            action,
            rev_short,
            opts,
            started,
            total,
            &rollout.left_behind,
        );
        return Ok(());
    };
    // Hosts put back within the budget before the run stopped failed too.
    let failed: Vec<&str> = rollout
        .left_behind
        .iter()
        .map(String::as_str)
        .chain(
            results
                .iter()
                .filter(|r| r.failed())
                .map(|r| r.job.host.as_str()),
        )
        .collect();
    let mut end = rec.record(Event::End, action, &plan.rev, Outcome::Failed);
    end.duration_ms = Some(started.elapsed().as_millis() as u64);
    end.error = match &outcome {
        Err(e) => Some(format!("{e:#}")),
        Ok(()) => Some(format!("failed on {}", failed.join(", "))),
    };
    // Hosts that still hold this run's files: those the restore did not put
    // back, and (restore-failed, CLI only) those it was not asked to.
    let changed: BTreeSet<String> = results
        .iter()
        .flat_map(|r| r.services.iter().map(move |s| (r, s)))
        .filter(|(r, s)| {
            match restored
                .iter()
                .find(|x| x.host == r.job.host && x.service == s.job.service)
            {
                Some(x) => x.changed(),
                None => true,
            }
        })
        .map(|(r, _)| r.job.host.clone())
        .collect();
    rollout.journal.finish(end, &changed, ui);
    let why = outcome.as_ref().err().map(|e| format!("{e:#}"));
    summarize_failure(
        ui,
        action,
        plan,
        (&results, &rollout.left_behind),
        &restored,
        why.as_deref(),
        started.elapsed(),
    );
    match outcome {
        Err(e) => Err(UserError::failed(format!(
            "{action} of {rev_short} stopped: {e:#}; every host it touched was put back \
             where that was possible (see above)"
        ))
        .into()),
        Ok(()) => Err(UserError::failed(format!(
            "{action} of {rev_short} failed on {}",
            failed.join(", ")
        ))
        .into()),
    }
}

/// What a run holds once it has started: the lock (held until dropped),
/// the journal as it was before it, and its recorder.
struct Begun {
    _lock: lock::DeployLock,
    history: History,
    /// `rollback` when this deploy takes a host back.
    action: Action,
    journal: Ledger,
    rec: Recorder,
}

/// Takes the deploy lock (kept, for a push, until git has moved its ref),
/// refuses a push whose ref moved meanwhile, and journals the start.
fn begin(
    repo: &Repository,
    rev: &Revision<'_>,
    plan: &Plan,
    opts: &RunOptions,
    ui: &Ui,
) -> Result<Begun> {
    let config = &rev.config;
    let holder = format!(
        "{}: {} of {} to {}, since {}, pid {}",
        opts.who,
        opts.action,
        &plan.rev[..10],
        opts.scope,
        journal::now(),
        std::process::id()
    );
    let deploy_lock = lock::acquire(repo.path(), &holder, config.lock_wait, config.heartbeat, ui)?;
    if opts.expect_ref.is_some() {
        // A push: git moves the ref after this hook; until then no other
        // push may deploy.
        deploy_lock.hold_until_git_is_done()?;
    }
    refuse_if_moved(repo, &opts.expect_ref)?;
    crate::ui::debug("deploy lock held");
    // Read before this run writes, so "previous revision" means before it.
    let history = journal::read(repo.path())?;
    let action = match opts.action {
        Action::Deploy if moves_back(repo, &history, plan) => Action::Rollback,
        other => other,
    };
    let mut journal = Ledger::open(repo.path())?;
    let rec = Recorder {
        run: opts.run_id.clone(),
        break_glass: opts.break_glass.clone(),
        ..Recorder::new(&opts.who, &opts.push_options)
    };
    let mut start = rec.record(Event::Start, action, &plan.rev, Outcome::Started);
    start.hosts = plan
        .stages
        .iter()
        .flat_map(|s| s.hosts.iter().map(group_host))
        .collect();
    journal.append(&[start])?;
    crate::ui::debug("journal read, start journaled");
    Ok(Begun {
        _lock: deploy_lock,
        history,
        action,
        journal,
        rec,
    })
}

/// The last line of a run that went through.
fn report_done(
    ui: &Ui,
    action: Action,
    rev_short: &str,
    opts: &RunOptions,
    started: Instant,
    total: usize,
    left: &[String],
) {
    let done = if action == Action::Rollback {
        "rolled back"
    } else {
        "deployed"
    };
    ui.line(format_args!(
        "{done} {rev_short} to {} in {}: {} ok{}",
        opts.scope,
        seconds(started.elapsed()),
        total - left.len(),
        if left.is_empty() {
            String::new()
        } else {
            format!(
                ", {} left behind on what they ran (failed within max_failures): {}",
                left.len(),
                ui::capped(left.iter().map(String::as_str))
            )
        }
    ));
}

/// Which hosts a failed run puts back: all it touched, or only the failed
/// ones (`on_failure = "restore-failed"`).
///
/// A push always puts back every host it touched, whatever `on_failure`
/// says: git rejects the push, so a host left on its revision would run
/// something no ref names, which `git gc` may delete (and then nothing can
/// restore it either). `restore-failed` is ignored for pushes rather than
/// refused because it is the default: refusing it would reject every
/// existing config. It keeps its meaning for the CLI's `deploy --rev` and
/// `rollback` of a revision a ref already holds; a revision on no ref is
/// treated like a push.
fn restore_everything(
    repo: &Repository,
    on_failure: OnFailure,
    opts: &RunOptions,
    rev: &str,
) -> bool {
    // Only a push knows the ref git will move (see `expect_ref`).
    let push = opts.expect_ref.is_some();
    push || on_failure == OnFailure::RestoreRun || !on_a_ref(repo, rev)
}

/// Whether some ref holds `rev` (points at it or at a descendant).
fn on_a_ref(repo: &Repository, rev: &str) -> bool {
    let Ok(oid) = Oid::from_str(rev) else {
        return false;
    };
    let Ok(refs) = repo.references() else {
        return false;
    };
    refs.flatten().any(|r| {
        r.peel_to_commit()
            .is_ok_and(|c| c.id() == oid || repo.graph_descendant_of(c.id(), oid).unwrap_or(false))
    })
}

/// What a running rollout needs at hand.
struct Rollout<'a, 'p> {
    plan: &'p Plan,
    worktree: &'a Worktree,
    rec: &'a Recorder,
    action: Action,
    /// The journal before this run: what each host ran before it.
    history: &'a History,
    journal: Ledger,
    ui: &'a Ui,
    /// Hosts that failed within their group's budget and were put back.
    left_behind: Vec<String>,
}

/// Once the lock is held, a push's ref must still be where git will expect
/// it; otherwise git refuses the update after the hook, and whatever was
/// deployed would run a revision that is on no branch.
fn refuse_if_moved(repo: &Repository, expect: &Option<(String, Option<Oid>)>) -> Result<()> {
    let Some((name, expected)) = expect else {
        return Ok(());
    };
    let now = repo.refname_to_id(name).ok();
    if now == *expected {
        return Ok(());
    }
    Err(UserError::failed(format!(
        "{name} moved to {} while this push waited for the deploy lock, so git will refuse it; \
         nothing was deployed (fetch, rebase and push again)",
        now.map_or("nothing".into(), crate::source::repo::short)
    ))
    .into())
}

/// Where things stand after a stopped rollout, host by host, so nobody has
/// to reconstruct it from the journal mid-incident. Always the last lines.
/// Hosts that failed within their group's budget were put back then and
/// are no longer in `results`: `rollout.left_behind` names them.
fn summarize_failure(
    ui: &Ui,
    action: Action,
    plan: &Plan,
    (results, left_behind): (&[HostResult<'_>], &[String]),
    restored: &[Restored],
    why: Option<&str>,
    took: Duration,
) {
    let rev_short = &plan.rev[..10];
    let hosts_where = |pred: &dyn Fn(&HostResult<'_>) -> bool| -> Vec<&str> {
        results
            .iter()
            .filter(|r| pred(r))
            .map(|r| r.job.host.as_str())
            .collect()
    };
    let mut failed: Vec<&str> = left_behind.iter().map(String::as_str).collect();
    failed.extend(hosts_where(&|r| r.failed()));
    let ok = hosts_where(&|r| !r.failed());
    let unstarted: Vec<&str> = plan
        .stages
        .iter()
        .flat_map(|s| &s.hosts)
        .map(|h| h.host.as_str())
        .filter(|h| {
            !results.iter().any(|r| r.job.host == *h) && !left_behind.iter().any(|l| l == h)
        })
        .collect();
    let failed_names = match failed.is_empty() {
        true => String::new(),
        false => format!(" ({})", ui::capped(failed.iter().copied())),
    };
    ui.line(format_args!(
        "{action} stopped after {}: {} ok, {} FAILED{failed_names}, {} not started",
        seconds(took),
        ok.len(),
        failed.len(),
        unstarted.len()
    ));
    if let Some(why) = why {
        ui.line(format_args!("  stopped because: {why}"));
    }
    // One line per outcome (and target revision), hosts sorted, each host
    // once: the per-service detail is in the lines above.
    let mut lines: BTreeMap<(u8, String), BTreeSet<&str>> = BTreeMap::new();
    for r in restored {
        let key = match &r.state {
            Back::To(rev) => (0, format!("restored to {rev}")),
            Back::Unchanged => (1, format!("already on {rev_short} before, unchanged")),
            Back::NoEarlier => (
                2,
                format!("still on {rev_short}: no earlier revision to go back to"),
            ),
            Back::Failed(rev) => (3, format!("still on {rev_short}: restore to {rev} FAILED")),
        };
        lines.entry(key).or_default().insert(&r.host);
    }
    // Hosts the restore was not asked to put back (restore-failed, CLI).
    for h in ok
        .iter()
        .filter(|h| !restored.iter().any(|r| r.host == **h))
    {
        lines
            .entry((4, format!("now on {rev_short}")))
            .or_default()
            .insert(h);
    }
    if !left_behind.is_empty() {
        lines
            .entry((
                4,
                "failed within max_failures, put back then (see above)".into(),
            ))
            .or_default()
            .extend(left_behind.iter().map(String::as_str));
    }
    if !unstarted.is_empty() {
        lines
            .entry((5, "not started, unchanged".into()))
            .or_default()
            .extend(unstarted.iter().copied());
    }
    for ((_, what), hosts) in lines {
        ui.line(format_args!("  {what}: {}", ui::capped(hosts)));
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

fn group_host(job: &HostJob) -> String {
    format!("{}/{}", job.group, job.host)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
