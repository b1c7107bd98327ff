//! What rollgate remembers in the bare repository: the append-only journal,
//! the deploy lock, and the status and log folded from the journal.

pub(crate) mod gitrefs;
pub(crate) mod journal;
pub(crate) mod keeper;
pub(crate) mod lock;
pub(crate) mod segment;
pub(crate) mod state;
pub(crate) mod status;
