//! The pre-receive hook's logic: decide what each pushed ref means, validate
//! it, and (for the deploy branch and `refs/deploy/NAME`) deploy it.
//!
//! The repository must come from `repo::open(None)` inside the hook, so the
//! quarantined objects are visible. Nothing here writes a ref or an object.

use anyhow::{Context, Result, bail};
use git2::{Oid, Repository};

use crate::config;
use crate::deploy::{self, DeployOptions};
use crate::journal::Action;
use crate::receive::RefUpdate;
use crate::repo::{Snapshot, short};
use crate::report::Ui;
use crate::revision::Revision;
use crate::scope::{PushRequest, Scope};

const DEPLOY_PREFIX: &str = "refs/deploy/";

pub fn pre_receive(
    repo: &Repository,
    updates: &[RefUpdate],
    request: &PushRequest,
    ui: &Ui,
) -> Result<()> {
    for update in updates {
        handle(repo, update, request, ui)
            .with_context(|| format!("{} rejected", update.refname))?;
    }
    Ok(())
}

fn handle(repo: &Repository, u: &RefUpdate, request: &PushRequest, ui: &Ui) -> Result<()> {
    if let Some(name) = u.refname.strip_prefix(DEPLOY_PREFIX) {
        let Some(new) = u.new else {
            ui.line(format_args!(
                "{}: deleted (a deploy ref only records what was deployed)",
                u.refname
            ));
            return Ok(());
        };
        if request.scope != Scope::Default || request.validate_only {
            bail!(
                "a push to {} names its scope in the ref; drop the -o scope options",
                u.refname
            );
        }
        let scope = if name == "all" {
            Scope::All
        } else {
            Scope::Group(name.to_string())
        };
        return deploy_ref(repo, u.old, new, &scope, false, &request.options, ui);
    }
    if !u.refname.starts_with("refs/heads/") {
        return pass(u, "not a branch", ui);
    }
    match deploy_branch(repo, u) {
        None => return pass(u, "no rollgate.toml", ui),
        Some(branch) if branch != u.refname => {
            return pass(u, &format!("not the deploy branch ({branch})"), ui);
        }
        Some(_) => {}
    }
    let Some(new) = u.new else {
        bail!("{} is the deploy branch and cannot be deleted", u.refname);
    };
    deploy_ref(
        repo,
        u.old,
        new,
        &request.scope,
        request.validate_only,
        &request.options,
        ui,
    )
}

fn pass(u: &RefUpdate, why: &str, ui: &Ui) -> Result<()> {
    ui.line(format_args!("{}: {why}, passed untouched", u.refname));
    Ok(())
}

/// What a commit's `rollgate.toml` says about the deploy branch, read
/// leniently: full checks come later, and only for the deploy branch.
enum BranchNamed {
    Branch(String),
    /// The file is there but unreadable: its branch cannot be known.
    Unreadable,
    Absent,
}

/// The deploy branch for this update. A broken `rollgate.toml` must never
/// make the deploy branch look like any other branch: then the ref's old
/// tip decides, and failing that the default `main`, so the push reaches
/// the strict checks and is rejected with the parse error.
fn deploy_branch(repo: &Repository, u: &RefUpdate) -> Option<String> {
    let named_in = |id: Oid| -> BranchNamed {
        let text = match repo
            .find_commit(id)
            .map_err(anyhow::Error::from)
            .and_then(|c| Snapshot::of_commit(repo, c))
            .and_then(|s| s.read_file(config::FILE_NAME))
        {
            Ok(Some(text)) => text,
            Ok(None) => return BranchNamed::Absent,
            Err(_) => return BranchNamed::Unreadable,
        };
        let table: Option<toml::Table> = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| toml::from_str(t).ok());
        match table.as_ref().map(|t| t.get("branch")) {
            None => BranchNamed::Unreadable,
            Some(None) => BranchNamed::Branch(default_branch()),
            Some(Some(v)) => match v.as_str() {
                Some(b) => BranchNamed::Branch(format!("refs/heads/{b}")),
                None => BranchNamed::Unreadable,
            },
        }
    };
    let old = || u.old.map_or(BranchNamed::Absent, named_in);
    match u.new.map_or(BranchNamed::Absent, named_in) {
        BranchNamed::Branch(b) => Some(b),
        BranchNamed::Unreadable => match old() {
            BranchNamed::Branch(b) => Some(b),
            _ => Some(default_branch()),
        },
        BranchNamed::Absent => match old() {
            BranchNamed::Branch(b) => Some(b),
            BranchNamed::Unreadable => Some(default_branch()),
            BranchNamed::Absent => None,
        },
    }
}

fn default_branch() -> String {
    format!("refs/heads/{}", config::DEFAULT_BRANCH)
}

/// Validates `new` (what changed since `old`, plus what the scope deploys)
/// and then deploys it unless `validate_only`.
fn deploy_ref(
    repo: &Repository,
    old: Option<Oid>,
    new: Oid,
    scope: &Scope,
    validate_only: bool,
    push_options: &[String],
    ui: &Ui,
) -> Result<()> {
    let commit = repo
        .find_commit(new)
        .with_context(|| format!("{} is not a commit", short(new)))?;
    let rev = Revision::load(Snapshot::of_commit(repo, commit)?)?;
    // The base is what the ref pointed at; an unreadable old config means
    // we cannot trust what "changed", so everything is checked.
    let base = old
        .and_then(|old| repo.find_commit(old).ok())
        .and_then(|c| Snapshot::of_commit(repo, c).ok())
        .and_then(|s| Revision::load(s).ok());
    // A deploy ref pushed for the first time is compared with the branch.
    let tip = repo.refname_to_id(&rev.config.branch_ref()).ok();
    let opts = DeployOptions {
        action: if going_back(repo, old.or(tip), new) {
            Action::Rollback
        } else {
            Action::Deploy
        },
        dry_run: false,
        push_options: push_options.to_vec(),
        also_check: rev.changed_since(base.as_ref()),
        deploy: !validate_only,
    };
    deploy::deploy(repo, &rev, scope, opts, ui)
}

/// A push that moves a ref to an ancestor of where it was is a rollback
/// (`git push -f origin REV:refs/deploy/NAME`), and is journaled as one.
fn going_back(repo: &Repository, old: Option<Oid>, new: Oid) -> bool {
    old.is_some_and(|old| old != new && repo.graph_descendant_of(old, new).unwrap_or(false))
}
