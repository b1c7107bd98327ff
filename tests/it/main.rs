//! rollgate's integration tests: one binary (link time), one module per
//! surface. Every test runs the real `rollgate` binary and the real `git`
//! (pushes go through `git push` to a bare repository with the installed
//! hook) in its own temp dirs, with a scrubbed environment; see `support`.

// The lint is for the library: a test binary has no outside to leak to.
#![allow(unreachable_pub)]

mod support;

mod break_glass;
mod clone;
mod fleet;
mod git_checks;
mod help;
mod hook_install;
mod hook_validate;
mod journal;
mod lifecycle;
mod notify;
mod policy;
mod pusher_sees;
mod rollback;
mod rollout;
mod sandbox;
mod servers;
mod ssh_hosts;
mod strategies;
mod validate_cli;
