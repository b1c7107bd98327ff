//! The command line: one file per subcommand, each a thin layer that turns
//! arguments into plain values and calls the library.

mod deploy;
mod hook;
mod plan;
mod rollback;
mod scope_args;
mod status;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::error;
use crate::ui::Ui;
use clap::{Args, Parser, Subcommand};

/// Validate pushed infrastructure config with each service's own checker and
/// deploy it to one host group at a time.
#[derive(Parser)]
#[command(name = "rollgate", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install, remove or run the git pre-receive hook
    #[command(subcommand)]
    Hook(hook::HookCommand),
    Validate(validate::ValidateArgs),
    Deploy(deploy::DeployArgs),
    Rollback(rollback::RollbackArgs),
    Plan(plan::PlanArgs),
    Status(status::StatusArgs),
    Log(status::LogArgs),
}

/// `--repo`, which every command takes.
#[derive(Args, Clone)]
pub(crate) struct RepoArg {
    /// The repository (bare or not); default: the one the current directory is in
    #[arg(long, value_name = "PATH", global = true)]
    repo: Option<PathBuf>,
}

/// Parses the command line, runs the command, and turns its error into
/// the exit code.
pub fn main() -> ExitCode {
    // Each command rollgate runs is watched by a copy of this binary.
    if let Some(code) = crate::process::supervisor() {
        return code;
    }
    let cli = Cli::parse();
    let ui = Ui::default();
    let result = match cli.command {
        Command::Hook(c) => hook::run(c, &ui),
        Command::Validate(a) => validate::run(a, &ui),
        Command::Deploy(a) => deploy::run(a, &ui),
        Command::Rollback(a) => rollback::run(a, &ui),
        Command::Plan(a) => plan::run(a, &ui),
        Command::Status(a) => status::status(a, &ui),
        Command::Log(a) => status::log(a, &ui),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&ui, &err);
            ExitCode::from(error::exit_code(&err))
        }
    }
}

fn report_error(ui: &Ui, err: &anyhow::Error) {
    let mut chain = err.chain();
    if let Some(top) = chain.next() {
        ui.line(format_args!("error: {top}"));
    }
    for cause in chain {
        // toml's errors span several lines (the line and a caret): indent them.
        for (i, line) in cause.to_string().lines().enumerate() {
            if i == 0 {
                ui.line(format_args!("  caused by: {line}"));
            } else {
                ui.line(format_args!("    {line}"));
            }
        }
    }
}
