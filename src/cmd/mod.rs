//! The command line: one file per subcommand, each a thin layer that turns
//! arguments into plain values and calls the library.

mod deploy;
mod docs;
mod hook;
mod plan;
mod policy;
mod remote;
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
#[command(name = "rollgate", version, about, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The push interface is plain git, so `--help` is where people learn it.
const AFTER_HELP: &str = "\
Pushing (installed as the pre-receive hook; the client side is plain git):
  git push origin main                      validate; deploy to default_group
  git push -o group=NAME origin main        validate; deploy to group NAME instead
  git push -o host=NAME origin main         validate; deploy to that one host
  git push -o all origin main               validate; every group, default_group first
  git push -o validate-only origin main     validate; deploy nothing
  git push -o live-edit origin main         allow changing a version directory other hosts run
  git push -o break-glass=REASON origin main  deploy despite failed checks (policy's break_glass)
  git push origin REV:refs/deploy/NAME      deploy REV to group NAME (or all); -f to go back

Exit codes:
  0  done
  1  validation or a deploy failed (a push is rejected)
  2  usage or config error";

#[derive(Subcommand)]
enum Command {
    /// Install, remove or run the git pre-receive hook
    #[command(subcommand)]
    Hook(hook::HookCommand),
    Validate(validate::ValidateArgs),
    Deploy(deploy::DeployArgs),
    Rollback(rollback::RollbackArgs),
    Plan(plan::PlanArgs),
    /// Show or pin the server's policy (rollgate/policy.toml in the bare repository)
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    Status(status::StatusArgs),
    Log(status::LogArgs),
    Completions(docs::CompletionsArgs),
    Man(docs::ManArgs),
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
    // Also starts the trace's clock, so its times count from here.
    if crate::ui::debug_enabled() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        crate::ui::debug(format_args!("rollgate {}", args.join(" ")));
    }
    // git itself does not hash an object again each time it reads one;
    // libgit2 does by default, which at 500,000 files meant hashing the
    // 5,000-entry `files/` tree on every read of it. What rollgate reads
    // was hashed by git when it arrived.
    git2::opts::strict_hash_verification(false);
    let cli = Cli::parse();
    let ui = Ui::default();
    let result = match cli.command {
        Command::Hook(c) => hook::run(c, &ui),
        Command::Validate(a) => validate::run(a, &ui),
        Command::Deploy(a) => deploy::run(a, &ui),
        Command::Rollback(a) => rollback::run(a, &ui),
        Command::Plan(a) => plan::run(a, &ui),
        Command::Policy(c) => policy::run(c, &ui),
        Command::Status(a) => status::status(a, &ui),
        Command::Log(a) => status::log(a, &ui),
        Command::Completions(a) => docs::completions(a),
        Command::Man(a) => docs::man(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&ui, &err);
            ExitCode::from(error::kind(&err).exit_code())
        }
    }
}

/// `error: TOP`, each cause indented under it, then the hints. A cause that
/// repeats the line above it adds nothing and is left out.
fn report_error(ui: &Ui, err: &anyhow::Error) {
    let mut chain = err.chain();
    let mut last = String::new();
    if let Some(top) = chain.next() {
        last = error::describe(top);
        ui.line(format_args!("error: {last}"));
    }
    for cause in chain {
        let text = error::describe(cause);
        if last.ends_with(&text) {
            continue;
        }
        // toml's errors span several lines (the line and a caret): indent them.
        for (i, line) in text.lines().enumerate() {
            if i == 0 {
                ui.line(format_args!("  caused by: {line}"));
            } else {
                ui.line(format_args!("    {line}"));
            }
        }
        last = text;
    }
    for hint in error::hints(err) {
        ui.line(format_args!("hint: {hint}"));
    }
}
