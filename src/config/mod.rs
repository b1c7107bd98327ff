//! `rollgate.toml`: its model, the checks that need no git tree, and the
//! `{placeholder}` templates its commands are written in.

mod model;
pub(crate) mod placeholders;
pub(crate) mod rollout;
pub(crate) mod template;

pub(crate) use model::*;
