//! Break-glass: a deploy that goes on past failed checks, for an outage
//! where the fix cannot wait for a config the checker accepts. Only for
//! pushers the policy's `break_glass` names (checked by the caller), only
//! past the gate's own checks (never past the policy, git, or a failing
//! host), said loudly, and journaled with the reason and what failed.

use anyhow::Result;

use crate::gate;
use crate::record::journal::BreakGlass;
use crate::rollout::deploy::DeployOptions;
use crate::source::revision::{ConfigDir, Revision};
use crate::source::worktree::Worktree;
use crate::ui::Ui;

/// Runs the checks like [`gate::gate`], but failed checks do not refuse:
/// they are announced and handed back for the journal. Validate-only
/// deploys nothing, so there break-glass changes nothing and failures
/// refuse as always.
pub(crate) fn gate(
    rev: &Revision<'_>,
    to_check: &[ConfigDir],
    deployed: &[ConfigDir],
    reason: String,
    opts: &DeployOptions,
    ui: &Ui,
) -> Result<(Worktree, Option<BreakGlass>)> {
    if opts.validate_only {
        return Ok((gate::gate(rev, to_check, deployed, "", ui)?, None));
    }
    let (worktree, failed) = gate::gate_failures(rev, to_check, deployed, "", ui)?;
    let who = opts.policy.who();
    if failed.is_empty() {
        ui.line(format_args!(
            "BREAK-GLASS by {who}: {reason:?}: every check passed, deploying as usual (journaled as break-glass)"
        ));
    } else {
        ui.line(format_args!(
            "BREAK-GLASS by {who}: {reason:?}: deploying despite {} failed check{}: {}",
            failed.len(),
            if failed.len() == 1 { "" } else { "s" },
            failed.join("; ")
        ));
    }
    Ok((worktree, Some(BreakGlass { reason, failed })))
}
