//! What git hands the pre-receive hook, and what each pushed ref means:
//! stdin lines and push options in, a decision per ref out (pass it
//! untouched, check it, deploy it). Also installs and removes the hook.

pub(crate) mod git_checks;
pub(crate) mod input;
pub(crate) mod install;
pub(crate) mod pre_push;
pub(crate) mod refs;
