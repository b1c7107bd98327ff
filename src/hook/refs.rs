//! The pre-receive hook's logic: decide what each pushed ref means, validate
//! it, and (for the deploy branch and `refs/deploy/NAME`) deploy it.
//!
//! The repository must come from `repo::open(None)` inside the hook, so the
//! quarantined objects are visible. Nothing here writes a ref or an object.

use anyhow::{Context, Result, bail};
use git2::{Oid, Repository};

use crate::config;
use crate::hook::git_checks::GitChecks;
use crate::hook::input::RefUpdate;
use crate::hook::options::{self, PushRequest};
use crate::policy::{Policy, bounds};
use crate::record::journal::Action;
use crate::rollout::deploy::{self, DeployOptions, Prepared};
use crate::rollout::scope::Scope;
use crate::source::repo::{Snapshot, short};
use crate::source::revision::Revision;
use crate::ui::Ui;

const DEPLOY_PREFIX: &str = "refs/deploy/";

/// Handles a whole push: every ref is classified, checked and planned
/// first, and only then deployed, so a push that git will reject as a whole
/// never touches a host for one of its refs. The server's policy is read
/// first: while it is broken, every push is refused.
pub(crate) fn pre_receive(
    repo: &Repository,
    updates: &[RefUpdate],
    options: &[String],
    ui: &Ui,
) -> Result<()> {
    let policy = Policy::load(repo)?;
    crate::ui::debug("policy read");
    let git = GitChecks::new(updates);
    let mut prepared = Vec::new();
    for u in updates {
        if let Some(p) = prepare(repo, &policy, u, options, &git, ui)
            .with_context(|| format!("{} rejected", u.refname))?
        {
            prepared.push((u, p));
        }
        crate::ui::debug(format_args!("{}: prepared", u.refname));
    }
    for (u, p) in prepared {
        p.run(repo, ui)
            .with_context(|| format!("{} rejected", u.refname))?;
    }
    Ok(())
}

/// What one ref update asks for: `None` when it passes untouched. Only the
/// policy's deploy branch and `refs/deploy/NAME` run anything of a push.
/// Push options are read only for a ref rollgate acts on: a push that
/// passes untouched ignores them (`-o ci.skip` is another tool's).
fn prepare<'r>(
    repo: &'r Repository,
    policy: &Policy,
    u: &RefUpdate,
    options: &[String],
    git: &GitChecks<'_>,
    ui: &Ui,
) -> Result<Option<Prepared<'r>>> {
    if let Some(name) = u.refname.strip_prefix(DEPLOY_PREFIX) {
        let Some(new) = u.new else {
            ui.line(format_args!(
                "{}: deleted (a deploy ref only records what was deployed)",
                u.refname
            ));
            return Ok(None);
        };
        let request = options::parse_push_options(options)?;
        if request.scope != Scope::Default || request.validate_only {
            bail!(
                "a push to {} names its scope in the ref; drop the -o scope options",
                u.refname
            );
        }
        policy.require_widen(&format!("a push to {}", u.refname))?;
        let scope = if name == "all" {
            Scope::All
        } else {
            Scope::Group(name.to_string())
        };
        // Reading its config runs nothing of it; its checks run only once
        // the deploy branch is known to hold it.
        let commit = repo
            .find_commit(new)
            .with_context(|| format!("{} is not a commit", short(new)))?;
        scope.resolve(&Revision::load(Snapshot::of_commit(repo, commit)?)?.config)?;
        bounds::require_merged(repo, policy, new, &format!("a push to {}", u.refname))?;
        let forced = PushRequest {
            scope,
            validate_only: false,
            options: request.options.clone(),
            break_glass: request.break_glass.clone(),
        };
        return prepare_ref(repo, policy, u, new, &forced, git, ui).map(Some);
    }
    if u.refname != policy.branch_ref() {
        pass(u, &format!("not the deploy branch ({})", policy.branch), ui);
        return Ok(None);
    }
    let Some(new) = u.new else {
        bail!("{} is the deploy branch and cannot be deleted", u.refname);
    };
    // A deploy branch that never had a rollgate.toml and still has none
    // holds nothing rollgate acts on (a repository being set up).
    let has_config = |id: Oid| {
        repo.find_commit(id)
            .map_err(anyhow::Error::from)
            .and_then(|c| Snapshot::of_commit(repo, c))
            .and_then(|s| s.read_file(config::FILE_NAME))
            .map(|f| f.is_some())
            .unwrap_or(true)
    };
    if !has_config(new) && !u.old.is_some_and(has_config) {
        pass(u, &format!("no {}", config::FILE_NAME), ui);
        return Ok(None);
    }
    let request = options::parse_push_options(options)?;
    if request.scope != Scope::Default && !request.validate_only {
        policy.require_widen(&format!("-o {}", option_of(&request.scope)))?;
    }
    prepare_ref(repo, policy, u, new, &request, git, ui).map(Some)
}

fn pass(u: &RefUpdate, why: &str, ui: &Ui) {
    ui.line(format_args!("{}: {why}, passed untouched", u.refname));
}

/// The push option that asked for `scope`, as the pusher wrote it.
fn option_of(scope: &Scope) -> String {
    match scope {
        Scope::Default => "(none)".into(),
        Scope::Group(g) => format!("group={g}"),
        Scope::Host(h) => format!("host={h}"),
        Scope::All => "all".into(),
    }
}

/// Checks `new` (what changed since the ref's old value, plus what the
/// scope deploys) and plans its deploy unless the push is validate-only.
/// A push that deploys first passes what git checks after this hook.
fn prepare_ref<'r>(
    repo: &'r Repository,
    policy: &Policy,
    u: &RefUpdate,
    new: Oid,
    request: &PushRequest,
    git: &GitChecks<'_>,
    ui: &Ui,
) -> Result<Prepared<'r>> {
    if !request.validate_only {
        git.before_deploying(repo)?;
        crate::ui::debug("git's own checks passed");
    }
    let commit = repo
        .find_commit(new)
        .with_context(|| format!("{} is not a commit", short(new)))?;
    let rev = Revision::load(Snapshot::of_commit(repo, commit)?)?;
    // The base is what the ref pointed at; an unreadable old config means
    // we cannot trust what "changed", so everything is checked.
    let base = u
        .old
        .and_then(|old| repo.find_commit(old).ok())
        .and_then(|c| Snapshot::of_commit(repo, c).ok())
        .and_then(|s| Revision::load(s).ok());
    let changes = rev.changes_since(base.as_ref())?;
    crate::ui::debug(format_args!(
        "pushed revision and its base read: {} directories changed",
        changes.edited.len()
    ));
    let opts = DeployOptions {
        push_options: request.options.clone(),
        also_check: changes.to_check,
        changed: changes.edited,
        validate_only: request.validate_only,
        expect_ref: Some((u.refname.clone(), u.old)),
        break_glass: request.break_glass.clone(),
        // rollout decides from the journal whether this takes hosts back.
        ..DeployOptions::new(Action::Deploy, policy)
    };
    if request.scope != Scope::Default || request.validate_only || u.refname != policy.branch_ref()
    {
        return deploy::prepare(rev, &request.scope, opts, ui);
    }
    // A plain push to the deploy branch: bounded by the branch's tip.
    let targets = request.scope.resolve(&rev.config)?;
    let described = format!("group {} (default)", targets[0].group.name);
    let tip = bounds::tip(repo, policy)?;
    let targets = bounds::bound_to_tip(repo, policy, tip, &rev, targets, ui);
    if targets.is_empty() {
        let opts = DeployOptions {
            validate_only: true,
            no_deploy_reason: "no host within the deploy branch's default group",
            ..opts
        };
        return deploy::prepare_targets(rev, Vec::new(), String::new(), opts, ui);
    }
    deploy::prepare_targets(rev, targets, described, opts, ui)
}
