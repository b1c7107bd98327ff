//! The server's policy, `rollgate/policy.toml` in the bare repository: what
//! the server enforces on every push and deploy, which nothing in a pushed
//! tree can change.
//!
//! Its one job: read that file (absent means the defaults, broken means
//! every push is refused, with file:line:col) and answer the questions the
//! hook and the CLI ask of it: which branch deploys, who is pushing, may
//! they widen, may this revision's commands run, may this revision deploy
//! at all. `pin` rewrites the file, `bounds` holds the answers that need
//! the repository (the deploy branch's tip).

pub(crate) mod bounds;
pub(crate) mod pin;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use git2::Repository;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::Config;
use crate::config::template::Template;
use crate::error::UserError;

/// Where the policy lives, relative to the bare repository (beside the
/// journal and the lock, never in a work tree).
pub(crate) const FILE: &str = "rollgate/policy.toml";

/// What `rollgate hook install` writes when there is no policy yet: every
/// key at its default, each with what it means.
pub(crate) const DEFAULT_TEXT: &str = r#"# rollgate's server policy: what this server enforces on every push and deploy.
# It lives here, beside the journal, and never in a pushed tree: nothing a push
# carries can change it. Every run reads it; while it does not parse, every push
# is refused. `rollgate policy show` prints what is in effect.

# The deploy branch. Pushes to any other branch run nothing from the pushed tree.
branch = "main"

# Who is pushing (recorded in the journal, matched against `widen`): the first
# of these environment variables that is set.
pusher_env = ["GL_USER", "GL_USERNAME", "GITEA_PUSHER_NAME", "REMOTE_USER", "USER"]

# "any": a revision's rollgate.toml decides its commands. "pinned": every argv
# run for a revision (check, deploy, reload, health) must equal one of `allowed`,
# compared before {placeholders} are filled in. `rollgate policy pin` fills
# `allowed` from the deploy branch and sets "pinned".
commands = "any"
allowed = []

# false: refs/deploy/NAME deploys only revisions reachable from the deploy branch.
unmerged = false

# Who may widen a push beyond default_group (-o group=/host=/all,
# refs/deploy/NAME, and the CLI's --group/--host/--all). "*" is everyone.
widen = ["*"]

# Who may deploy past failed checks with -o break-glass=REASON.
break_glass = []

# Checks run in a sandbox; false runs them bare, and every report says so.
sandbox = true

# "warn" or "refuse": a push that changes a version directory that hosts
# outside its scope run now.
live_edit = "warn"

# An argv run after every run, with the run's summary as JSON on stdin.
notify = []
"#;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Policy {
    #[serde(deserialize_with = "branch_name")]
    pub(crate) branch: String,
    #[serde(deserialize_with = "env_names")]
    pub(crate) pusher_env: Vec<String>,
    pub(crate) commands: Commands,
    #[serde(deserialize_with = "argv_list")]
    pub(crate) allowed: Vec<Vec<String>>,
    pub(crate) unmerged: bool,
    pub(crate) widen: Vec<String>,
    pub(crate) break_glass: Vec<String>,
    pub(crate) sandbox: bool,
    pub(crate) live_edit: LiveEdit,
    pub(crate) notify: Vec<String>,
    /// The file it was read from (or would be, when absent).
    #[serde(skip)]
    pub(crate) path: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Commands {
    #[default]
    Any,
    Pinned,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LiveEdit {
    #[default]
    Warn,
    Refuse,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            branch: "main".into(),
            pusher_env: [
                "GL_USER",
                "GL_USERNAME",
                "GITEA_PUSHER_NAME",
                "REMOTE_USER",
                "USER",
            ]
            .map(String::from)
            .to_vec(),
            commands: Commands::Any,
            allowed: Vec::new(),
            unmerged: false,
            widen: vec!["*".into()],
            break_glass: Vec::new(),
            sandbox: true,
            live_edit: LiveEdit::Warn,
            notify: Vec::new(),
            path: PathBuf::new(),
        }
    }
}

fn branch_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    let full = format!("refs/heads/{name}");
    if name.is_empty() || name.starts_with("refs/") || !git2::Reference::is_valid_name(&full) {
        return Err(serde::de::Error::custom(format!(
            "{name:?} is not a branch name (write it as `main`, without refs/heads/)"
        )));
    }
    Ok(name)
}

fn env_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    if names.is_empty() {
        return Err(serde::de::Error::custom(
            "needs at least one variable, or every deploy is recorded as `unknown`",
        ));
    }
    if let Some(bad) = names
        .iter()
        .find(|n| n.is_empty() || n.contains(['=', '\0']))
    {
        return Err(serde::de::Error::custom(format!(
            "{bad:?} is not an environment variable name"
        )));
    }
    Ok(names)
}

fn argv_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<String>>, D::Error> {
    let list = Vec::<Vec<String>>::deserialize(d)?;
    if list.iter().any(|a| a.first().is_none_or(String::is_empty)) {
        return Err(serde::de::Error::custom(
            "every entry is an argv with at least a program name, e.g. [\"rsync\", \"-a\", \"{dir}/\", \"{host}:/etc/ssh/\"]",
        ));
    }
    Ok(list)
}

impl Policy {
    /// The policy of the repository at `repo` (`<git dir>/rollgate/policy.toml`):
    /// the defaults when the file is absent, an error naming file:line:col
    /// when it does not parse.
    pub(crate) fn load(repo: &Repository) -> Result<Policy> {
        Policy::load_from(&repo.path().join(FILE))
    }

    pub(crate) fn load_from(path: &Path) -> Result<Policy> {
        let text = match std::fs::read(path) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| anyhow!("{}: not UTF-8", path.display()))
                .map_err(refuse_all)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Policy {
                    path: path.to_path_buf(),
                    ..Policy::default()
                });
            }
            Err(e) => {
                return Err(refuse_all(
                    anyhow!(e).context(format!("cannot read {}", path.display())),
                ));
            }
        };
        Policy::parse(&text, path).map_err(refuse_all)
    }

    /// Parses the file's text; errors read `path:line:col: message`.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Policy> {
        match toml::from_str::<Policy>(text) {
            Ok(p) => Ok(Policy {
                path: path.to_path_buf(),
                ..p
            }),
            Err(e) => {
                let (line, col) = e.span().map_or((1, 1), |span| line_col(text, span.start));
                Err(anyhow!(
                    "{}:{line}:{col}: {}",
                    path.display(),
                    e.message().trim_end()
                ))
            }
        }
    }

    /// The policy as TOML, every key with its effective value.
    pub(crate) fn to_toml(&self) -> Result<String> {
        toml::to_string(self).context("cannot print the policy")
    }

    /// Who is pushing or deploying: the first set variable of `pusher_env`.
    pub(crate) fn who(&self) -> String {
        self.pusher_env
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "unknown".into())
    }

    /// The deploy branch as a full ref name.
    pub(crate) fn branch_ref(&self) -> String {
        format!("refs/heads/{}", self.branch)
    }

    /// Refuses to widen a deploy (`what`: `-o all`, `refs/deploy/farm`,
    /// `--group farm` ...) for a pusher `widen` does not name.
    pub(crate) fn require_widen(&self, what: &str) -> Result<()> {
        let who = self.who();
        if self.widen.iter().any(|w| w == "*" || *w == who) {
            return Ok(());
        }
        Err(UserError::failed(format!(
            "{who} may not widen a deploy beyond the default group ({what}): the policy's `widen` \
             in {} names {}",
            self.path.display(),
            if self.widen.is_empty() {
                "nobody".to_string()
            } else {
                self.widen.join(", ")
            },
        ))
        .hint(format!(
            "push without it to deploy to the default group, or ask an admin to add {who} to `widen`"
        ))
        .into())
    }

    /// Refuses a break-glass deploy (past failed checks; `what` is how it
    /// was asked for) by a pusher `break_glass` does not name, and one
    /// without a reason.
    pub(crate) fn require_break_glass(&self, what: &str, reason: &str) -> Result<()> {
        if reason.trim().is_empty() {
            return Err(UserError::usage(format!("{what} needs a reason"))
                .hint("say why, e.g. -o break-glass=\"INC-123: sshd down on the farm\"; it is journaled")
                .into());
        }
        let who = self.who();
        if self.break_glass.iter().any(|w| w == "*" || *w == who) {
            return Ok(());
        }
        Err(UserError::failed(format!(
            "{who} may not deploy past failed checks ({what}): the policy's `break_glass` in {} \
             names {}",
            self.path.display(),
            if self.break_glass.is_empty() {
                "nobody".to_string()
            } else {
                self.break_glass.join(", ")
            },
        ))
        .hint(format!(
            "fix what the checks report and push again, or ask an admin to add {who} to `break_glass`"
        ))
        .into())
    }

    /// With `commands = "pinned"`, refuses a config any of whose argv (as
    /// written, before substitution) is not one of `allowed`.
    pub(crate) fn check_commands(&self, config: &Config, origin: &str) -> Result<()> {
        if self.commands == Commands::Any {
            return Ok(());
        }
        for service in &config.services {
            let steps = std::iter::once(("check", &service.check)).chain(service.host_steps());
            for (step, argv) in steps {
                let raw: Vec<String> = argv.iter().map(|t| t.raw().to_string()).collect();
                if !self.allowed.contains(&raw) {
                    return Err(UserError::failed(format!(
                        "service {}: its {step} command {} (rollgate.toml at {origin}) is not one \
                         the policy allows: commands = \"pinned\" in {}, and `allowed` has no such argv",
                        service.name,
                        shown(argv),
                        self.path.display(),
                    ))
                    .hint(
                        "if it is meant, an admin adds it to `allowed` there \
                         (`rollgate policy pin` copies every command of the deploy branch)",
                    )
                    .into());
                }
            }
        }
        Ok(())
    }
}

/// A broken policy refuses everything: say so once, with the way out.
fn refuse_all(err: anyhow::Error) -> anyhow::Error {
    err.context(
        UserError::config(
            "the server's policy is broken, so rollgate refuses every push and deploy until it is fixed",
        )
        .hint("fix the file on the server; `rollgate policy show` checks it"),
    )
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// An argv as TOML writes it, for messages.
fn shown(argv: &[Template]) -> String {
    let parts: Vec<String> = argv
        .iter()
        .map(|t| serde_json::to_string(t.raw()).expect("a string serializes"))
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy> {
        Policy::parse(text, Path::new("/srv/infra.git/rollgate/policy.toml"))
    }

    #[test]
    fn the_written_defaults_are_the_defaults() {
        let p = parse(DEFAULT_TEXT).unwrap();
        assert_eq!(
            p,
            Policy {
                path: p.path.clone(),
                ..Policy::default()
            }
        );
        assert_eq!(p.pusher_env[0], "GL_USER");
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap().branch, "main");
    }

    #[test]
    fn unknown_keys_name_file_line_and_column() {
        let e = parse("branch = \"main\"\n  widenn = []\n").unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.starts_with("/srv/infra.git/rollgate/policy.toml:2:3: "),
            "{e}"
        );
        assert!(e.contains("widenn"), "{e}");
    }

    #[test]
    fn bad_values_point_at_the_value() {
        let e = format!("{:#}", parse("commands = \"pinnned\"\n").unwrap_err());
        assert!(e.contains("policy.toml:1:12: "), "{e}");
        let e = format!("{:#}", parse("\nbranch = \"a b\"\n").unwrap_err());
        assert!(e.contains("policy.toml:2:10: ") && e.contains("a b"), "{e}");
        let e = format!("{:#}", parse("allowed = [[]]\n").unwrap_err());
        assert!(e.contains("policy.toml:1:11: "), "{e}");
    }

    #[test]
    fn shows_as_toml_that_reads_back_the_same() {
        let p =
            parse("commands = \"pinned\"\nallowed = [[\"true\"]]\nwiden = [\"alice\"]\n").unwrap();
        let again = parse(&p.to_toml().unwrap()).unwrap();
        assert_eq!(p, again);
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\nçd", 5), (2, 2));
        assert_eq!(line_col("x", 0), (1, 1));
    }
}
