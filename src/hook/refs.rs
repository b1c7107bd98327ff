//! The pre-receive hook's logic: decide what each pushed ref means, validate
//! it, and (for the deploy branch and `refs/deploy/NAME`) deploy it.
//!
//! The repository must come from `repo::open(None)` inside the hook, so the
//! quarantined objects are visible. Nothing here writes a ref or an object.

use anyhow::{Context, Result, bail};
use git2::{Oid, Repository};

use crate::config;
use crate::hook::input::RefUpdate;
use crate::record::journal::Action;
use crate::rollout::deploy::{self, DeployOptions, Prepared};
use crate::rollout::live;
use crate::rollout::scope::{PushRequest, Scope};
use crate::source::repo::{Snapshot, short};
use crate::source::revision::Revision;
use crate::ui::Ui;

const DEPLOY_PREFIX: &str = "refs/deploy/";

/// Handles a whole push: every ref is classified, checked and planned
/// first, and only then deployed, so a push that git will reject as a whole
/// never touches a host for one of its refs.
pub(crate) fn pre_receive(
    repo: &Repository,
    updates: &[RefUpdate],
    request: &PushRequest,
    ui: &Ui,
) -> Result<()> {
    let mut prepared = Vec::new();
    for u in updates {
        if let Some(p) =
            prepare(repo, u, request, ui).with_context(|| format!("{} rejected", u.refname))?
        {
            prepared.push((u, p));
        }
    }
    for (u, p) in prepared {
        p.run(repo, ui)
            .with_context(|| format!("{} rejected", u.refname))?;
    }
    Ok(())
}

/// What one ref update asks for: `None` when it passes untouched.
fn prepare<'r>(
    repo: &'r Repository,
    u: &RefUpdate,
    request: &PushRequest,
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
        let forced = PushRequest {
            scope,
            validate_only: false,
            options: request.options.clone(),
        };
        return prepare_ref(repo, u, new, &forced, ui).map(Some);
    }
    if !u.refname.starts_with("refs/heads/") {
        pass(u, "not a branch", ui);
        return Ok(None);
    }
    match deploy_branch(repo, u) {
        None => {
            pass(u, "no rollgate.toml", ui);
            return Ok(None);
        }
        Some(branch) if branch != u.refname => {
            pass(u, &format!("not the deploy branch ({branch})"), ui);
            return Ok(None);
        }
        Some(_) => {}
    }
    let Some(new) = u.new else {
        bail!("{} is the deploy branch and cannot be deleted", u.refname);
    };
    prepare_ref(repo, u, new, request, ui).map(Some)
}

fn pass(u: &RefUpdate, why: &str, ui: &Ui) {
    ui.line(format_args!("{}: {why}, passed untouched", u.refname));
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

/// Checks `new` (what changed since the ref's old value, plus what the
/// scope deploys) and plans its deploy unless the push is validate-only.
fn prepare_ref<'r>(
    repo: &'r Repository,
    u: &RefUpdate,
    new: Oid,
    request: &PushRequest,
    ui: &Ui,
) -> Result<Prepared<'r>> {
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
    let opts = DeployOptions {
        push_options: request.options.clone(),
        also_check: rev.changed_since(base.as_ref())?,
        changed: live::changed_dirs(&rev, base.as_ref())?,
        validate_only: request.validate_only,
        expect_ref: Some((u.refname.clone(), u.old)),
        // rollout decides from the journal whether this takes hosts back.
        ..DeployOptions::new(Action::Deploy)
    };
    deploy::prepare(rev, &request.scope, opts, ui)
}
