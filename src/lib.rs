//! rollgate: `git push` as a guarded deploy of infrastructure configuration.
//!
//! See ARCHITECTURE.md for how a push flows through these modules.

pub mod check;
pub mod config;
pub mod deploy;
pub mod error;
pub mod host;
pub mod install;
pub mod journal;
pub mod lock;
pub mod plan;
pub mod preview;
pub mod process;
pub mod push;
pub mod receive;
pub mod repo;
pub mod report;
pub mod restore;
pub mod revision;
pub mod rollback;
pub mod rollout;
pub mod scope;
pub mod status;
pub mod template;
pub mod validate;
pub mod worktree;
