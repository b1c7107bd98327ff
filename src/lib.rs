//! rollgate: `git push` as a guarded deploy of infrastructure configuration.
//!
//! The folders follow a push through the program (ARCHITECTURE.md draws it):
//! `hook` reads what git hands over, `source` reads revisions out of git,
//! `config` understands `rollgate.toml`, `gate` runs the checkers,
//! `rollout` puts a revision on hosts, `record` keeps the journal and the
//! lock. `cmd` is the command line, a thin layer over all of them.

mod cmd;
mod config;
mod error;
mod gate;
mod hook;
mod policy;
mod process;
mod record;
mod rollout;
mod source;
mod ui;

pub use cmd::main;
