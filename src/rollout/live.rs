//! Live version directories: a push that changes the files of a version
//! directory which hosts outside its scope run now. Those hosts do not get
//! the change with this push, but with whatever deploys to them next, so
//! the pusher is told which directory, which groups and which hosts
//! (warn mode; PRODUCT.md, "Rollout strategies").

use std::collections::BTreeSet;

use anyhow::Result;

use crate::error::UserError;
use crate::policy::LiveEdit;
use crate::rollout::deploy::DeployOptions;
use crate::rollout::scope::Target;
use crate::source::revision::{ConfigDir, Revision};
use crate::ui::{self, Ui};

/// The push option that lets a push change a live directory in place
/// when the policy says `live_edit = "refuse"`; journaled with the run.
pub(crate) const ALLOW_OPTION: &str = "live-edit";

/// Tells the pusher about every directory of `changed` that a host outside
/// `targets` runs now, per `rev`'s inventory; with the policy's
/// `live_edit = "refuse"`, refuses the push unless it carries
/// `-o live-edit`.
pub(crate) fn check(
    rev: &Revision<'_>,
    targets: &[Target],
    changed: &[ConfigDir],
    opts: &DeployOptions,
    ui: &Ui,
) -> Result<()> {
    let in_scope: BTreeSet<&str> = targets
        .iter()
        .flat_map(|t| t.hosts.iter().map(String::as_str))
        .collect();
    let mut live = Vec::new();
    for dir in changed {
        let mut outside = Vec::new();
        for group in &rev.config.groups {
            if !rev.group_dirs(group)?.iter().any(|d| d.path == dir.path) {
                continue;
            }
            let hosts: Vec<&str> = group
                .hosts
                .iter()
                .map(String::as_str)
                .filter(|h| !in_scope.contains(h))
                .collect();
            if !hosts.is_empty() {
                outside.push(format!("group {} ({})", group.name, ui::capped(hosts)));
            }
        }
        if !outside.is_empty() {
            live.push(format!(
                "{} ({}) changed, and hosts outside this push run it now: {}",
                dir.path,
                dir.label(),
                outside.join("; ")
            ));
        }
    }
    if live.is_empty() {
        return Ok(());
    }
    let allowed = opts.push_options.iter().any(|o| o == ALLOW_OPTION);
    if opts.policy.live_edit == LiveEdit::Refuse && !allowed {
        return Err(UserError::failed(format!(
            "{}; the server's policy refuses changing files that hosts outside a push run \
             (live_edit = \"refuse\")",
            live.join("; ")
        ))
        .hint(
            "put the change in a new version directory and point the groups at it as you \
             deploy to them; or, to change it in place on purpose, push again with -o live-edit \
             (journaled)",
        )
        .into());
    }
    let what = if allowed {
        "live edit (-o live-edit)"
    } else {
        "warning"
    };
    for line in &live {
        ui.line(format_args!("{what}: {line}"));
    }
    ui.line(format_args!(
        "  they get it on their next deploy; to change what they run on purpose, \
         deploy to them (-o group=NAME), or put the change in a new version directory"
    ));
    Ok(())
}
