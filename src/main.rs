//! Argument parsing only; every command lives in `cmd/` over the library.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cmd::run(cmd::Cli::parse())
}
