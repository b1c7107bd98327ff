//! What git hands the pre-receive hook, and what each pushed ref means:
//! stdin lines (`input.rs`) and push options (`options.rs`) in, a decision
//! per ref out (`refs.rs`: pass it untouched, check it, deploy it), after
//! git's own later checks (`git_checks.rs`). Also installs and removes the
//! hooks, the client's pre-push check included.

pub(crate) mod git_checks;
pub(crate) mod input;
pub(crate) mod install;
pub(crate) mod options;
pub(crate) mod pre_push;
pub(crate) mod refs;
