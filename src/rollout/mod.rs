//! Putting a revision on hosts: which hosts a scope names, the plan of
//! every command up front, the batches under the deploy lock, one host's
//! steps, putting hosts back after a failure, rollbacks, and the preview
//! of what a deploy would change.

pub(crate) mod break_glass;
pub(crate) mod changes;
pub(crate) mod deploy;
pub(crate) mod host;
pub(crate) mod ledger;
pub(crate) mod live;
pub(crate) mod notify;
pub(crate) mod plan;
pub(crate) mod restore;
pub(crate) mod rollback;
pub(crate) mod run;
pub(crate) mod scope;
