//! The one typed error: it picks the exit code.
//!
//! `Failed` means validation or a deploy failed and the reasons have been
//! shown (exit 1). Any other error is a usage or config error (exit 2).

use std::fmt;

#[derive(Debug)]
pub(crate) struct Failed(pub String);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<Failed>()) {
        1
    } else {
        2
    }
}
