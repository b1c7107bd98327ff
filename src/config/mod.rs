//! `rollgate.toml`: its keys as serde reads them (`raw`), the checked model
//! (`model`), rollout strategies, and the `{placeholder}` templates its
//! commands are written in, with their vocabulary.

mod model;
pub(crate) mod placeholders;
mod raw;
pub(crate) mod rollout;
pub(crate) mod template;

pub(crate) use model::*;
