//! The one path every deploy takes, from the hook or the CLI: resolve the
//! scope, validate what will be deployed, plan, then roll out.
//!
//! Preparing (everything that can refuse) is apart from running, so a push
//! with several refs can be refused as a whole before any host is touched.

use anyhow::{Context, Result};
use git2::{Oid, Repository};

use crate::gate;
use crate::policy::Policy;
use std::time::Instant;

use crate::record::journal::{self, Action, BreakGlass};
use crate::rollout::break_glass;
use crate::rollout::changes;
use crate::rollout::live;
use crate::rollout::notify;
use crate::rollout::plan::{self, Plan};
use crate::rollout::run::{self, RunOptions};
use crate::rollout::scope::{Scope, Target};
use crate::source::repo::Snapshot;
use crate::source::revision::{ConfigDir, Revision};
use crate::source::worktree::Worktree;
use crate::ui::Ui;

pub(crate) struct DeployOptions {
    pub(crate) action: Action,
    /// Show what would change and the commands; touch nothing.
    pub(crate) dry_run: bool,
    /// What the pusher passed with `-o`, for the journal.
    pub(crate) push_options: Vec<String>,
    /// Directories to check besides those deployed (a push's changes).
    pub(crate) also_check: Vec<ConfigDir>,
    /// The directories whose files a push changes (see `live`).
    pub(crate) changed: Vec<ConfigDir>,
    /// Check, deploy nothing (`-o validate-only`).
    pub(crate) validate_only: bool,
    /// For a push: the ref and the value git will compare before moving it.
    /// If it changed while the deploy waited for the lock, git will refuse
    /// the update, so nothing may be deployed.
    pub(crate) expect_ref: Option<(String, Option<Oid>)>,
    /// The server's policy: who is deploying, and which commands may run.
    pub(crate) policy: Policy,
    /// Why nothing deploys when `deploy` is false, for the pusher.
    pub(crate) no_deploy_reason: &'static str,
    /// `-o break-glass=REASON` / `--break-glass REASON`: deploy past failed
    /// checks, if the policy's `break_glass` names the pusher.
    pub(crate) break_glass: Option<String>,
}

/// How many commands the run will have going at once, at most: its widest
/// wave, one command per host at a time; capped, as these supervisors are
/// started before the checks have passed.
fn command_slots(targets: &[Target]) -> usize {
    targets
        .iter()
        .flat_map(|t| t.group.rollout.batches(t.hosts.len()))
        .max()
        .unwrap_or(0)
        .min(32)
}

impl DeployOptions {
    pub(crate) fn new(action: Action, policy: &Policy) -> DeployOptions {
        DeployOptions {
            action,
            policy: policy.clone(),
            no_deploy_reason: "validate-only",
            dry_run: false,
            push_options: Vec::new(),
            also_check: Vec::new(),
            changed: Vec::new(),
            validate_only: false,
            expect_ref: None,
            break_glass: None,
        }
    }
}

/// A revision that passed its checks, with its work tree and plan: all that
/// is left is to run it.
pub(crate) struct Prepared<'r> {
    rev: Revision<'r>,
    worktree: Worktree,
    /// `None` for validate-only.
    plan: Option<Plan>,
    targets: Vec<Target>,
    scope: String,
    opts: DeployOptions,
    /// Set when the run goes on past failed checks (or asked to).
    break_glass: Option<BreakGlass>,
    /// When its checks began: a run's duration, for `notify`.
    began: Instant,
}

pub(crate) fn deploy(
    repo: &Repository,
    rev: Revision<'_>,
    scope: &Scope,
    opts: DeployOptions,
    ui: &Ui,
) -> Result<()> {
    prepare(rev, scope, opts, ui)?.run(repo, ui)
}

/// Resolves `scope` against the revision's own inventory (an unknown group
/// or host touches nothing), then checks and plans.
pub(crate) fn prepare<'r>(
    rev: Revision<'r>,
    scope: &Scope,
    opts: DeployOptions,
    ui: &Ui,
) -> Result<Prepared<'r>> {
    // A validate-only push needs no scope, unless it names one (then the
    // name must still be right).
    if opts.validate_only && *scope == Scope::Default {
        return prepare_targets(rev, Vec::new(), String::new(), opts, ui);
    }
    let targets = scope.resolve(&rev.config)?;
    let described = match scope {
        Scope::Default => format!("group {} (default)", targets[0].group.name),
        other => other.to_string(),
    };
    prepare_targets(rev, targets, described, opts, ui)
}

/// Validates what `targets` will get and renders the plan. A deploy
/// refused here (a failed check, the policy) is still a run that ended,
/// for the policy's `notify`.
pub(crate) fn prepare_targets<'r>(
    rev: Revision<'r>,
    targets: Vec<Target>,
    scope: String,
    opts: DeployOptions,
    ui: &Ui,
) -> Result<Prepared<'r>> {
    let began = Instant::now();
    let notify =
        (!opts.validate_only && !opts.dry_run && !opts.policy.notify.is_empty()).then(|| {
            (
                opts.policy.notify.clone(),
                opts.started(&rev, &scope, None, began),
            )
        });
    let git_dir = match &rev.snapshot {
        Snapshot::Commit { repo, .. } => Some(repo.path().to_path_buf()),
        Snapshot::Workdir { .. } => None,
    };
    let result = check_and_plan(rev, targets, scope, opts, began, ui);
    if let (Err(e), Some((argv, started)), Some(git_dir)) = (&result, notify, git_dir) {
        let refused = Err(anyhow::anyhow!("{e:#}"));
        notify::send(&argv, &git_dir, &started.summary(&git_dir, &refused), ui);
    }
    result
}

fn check_and_plan<'r>(
    rev: Revision<'r>,
    targets: Vec<Target>,
    scope: String,
    mut opts: DeployOptions,
    began: Instant,
    ui: &Ui,
) -> Result<Prepared<'r>> {
    // Before anything of the revision runs, its checks included.
    opts.policy
        .check_commands(&rev.config, &rev.snapshot.describe())?;
    let mut deployed = Vec::new();
    if !opts.validate_only {
        for t in &targets {
            deployed = gate::union(deployed, &rev.group_dirs(&t.group)?);
        }
    }
    let to_check = gate::union(std::mem::take(&mut opts.also_check), &deployed);
    if let (false, false, Snapshot::Commit { repo, .. }) =
        (opts.validate_only, opts.dry_run, &rev.snapshot)
    {
        crate::record::lock::open_ahead(repo.path(), command_slots(&targets))?;
    }
    let (worktree, break_glass) = match opts.break_glass.clone() {
        Some(reason) => {
            // Refused before anything of the revision runs.
            opts.policy.require_break_glass("break-glass", &reason)?;
            break_glass::gate(&rev, &to_check, &deployed, reason, &opts, ui)?
        }
        None => (gate::gate(&rev, &to_check, &deployed, "", ui)?, None),
    };
    live::check(&rev, &targets, &opts.changed, &opts, ui)?;
    let plan = if !opts.validate_only {
        Some(plan::build(&rev, &worktree, &targets)?)
    } else {
        None
    };
    Ok(Prepared {
        rev,
        worktree,
        plan,
        targets,
        scope,
        opts,
        break_glass,
        began,
    })
}

impl DeployOptions {
    /// What `notify` will report of a run of `rev` that begins now.
    fn started(
        &self,
        rev: &Revision<'_>,
        scope: &str,
        run: Option<String>,
        at: Instant,
    ) -> notify::Started {
        notify::Started {
            run,
            via: if self.expect_ref.is_some() {
                "push"
            } else {
                "cli"
            },
            who: self.policy.who(),
            action: self.action,
            revision: rev
                .snapshot
                .commit_id()
                .map(|id| id.to_string())
                .unwrap_or_default(),
            scope: scope.to_string(),
            break_glass: None,
            options: self.push_options.clone(),
            at,
        }
    }
}

impl Prepared<'_> {
    pub(crate) fn run(self, repo: &Repository, ui: &Ui) -> Result<()> {
        let Some(plan) = &self.plan else {
            ui.line(format_args!(
                "{}: nothing deployed",
                self.opts.no_deploy_reason
            ));
            return Ok(());
        };
        if self.opts.dry_run {
            ui.line(format_args!(
                "dry run: would {} {} to {}",
                self.opts.action,
                &plan.rev[..10],
                self.scope
            ));
            let hosts = changes::compute(repo, &self.rev, &self.targets)?;
            changes::render(&hosts, &mut std::io::stdout().lock())
                .context("cannot write to standard output")?;
            plan.show(ui);
            return Ok(());
        }
        let run_id = journal::new_run_id();
        let started = notify::Started {
            break_glass: self.break_glass.clone(),
            ..self
                .opts
                .started(&self.rev, &self.scope, Some(run_id.clone()), self.began)
        };
        let run = RunOptions {
            action: self.opts.action,
            who: self.opts.policy.who(),
            push_options: self.opts.push_options,
            scope: self.scope,
            expect_ref: self.opts.expect_ref,
            break_glass: self.break_glass,
            run_id,
        };
        let result = run::run(repo, &self.rev, &self.worktree, plan, &run, ui);
        let summary = started.summary(repo.path(), &result);
        notify::send(&self.opts.policy.notify, repo.path(), &summary, ui);
        result
    }
}
