//! Reading revisions out of git: the repository (quarantine included),
//! snapshots of a commit or a working tree, which config directories a
//! revision has and which changed, and the temporary work tree the checks
//! and deploys read from. Nothing here writes a ref or an object.

pub(crate) mod repo;
pub(crate) mod revision;
pub(crate) mod worktree;
