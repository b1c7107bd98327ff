//! Which hosts a deploy may touch. One group unless `all` is said out loud:
//! an empty or unresolvable scope is an error, never "everything".

use anyhow::{Result, bail};

use crate::config::{Config, Group};
use crate::error::{self, UserError};
use crate::rollout::live;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The config's `default_group`.
    Default,
    Group(String),
    Host(String),
    All,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Default => write!(f, "the default group"),
            Scope::Group(g) => write!(f, "group {g}"),
            Scope::Host(h) => write!(f, "host {h}"),
            Scope::All => write!(f, "all groups"),
        }
    }
}

/// What a push asked for with `-o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushRequest {
    pub(crate) scope: Scope,
    pub(crate) validate_only: bool,
    /// As given, for the journal.
    pub(crate) options: Vec<String>,
    /// `-o break-glass=REASON`: deploy past failed checks (see `policy`).
    pub(crate) break_glass: Option<String>,
}

pub(crate) const KNOWN_OPTIONS: &str =
    "group=NAME, host=NAME, all, validate-only, live-edit, break-glass=REASON";
const OPTION_NAMES: &[&str] = &[
    "group",
    "host",
    "all",
    "validate-only",
    "live-edit",
    "break-glass",
];

pub(crate) fn parse_push_options(options: &[String]) -> Result<PushRequest> {
    let mut scope: Option<(Scope, &str)> = None;
    let mut validate_only = false;
    let mut break_glass = None;
    for opt in options {
        let parsed = match opt.split_once('=') {
            Some(("group", name)) if !name.is_empty() => Scope::Group(name.to_string()),
            Some(("host", name)) if !name.is_empty() => Scope::Host(name.to_string()),
            None if opt == "all" => Scope::All,
            None if opt == "validate-only" => {
                validate_only = true;
                continue;
            }
            // Read by `live` from the journaled options.
            None if opt == live::ALLOW_OPTION => continue,
            // An empty reason is refused with the pusher's name (policy).
            Some(("break-glass", reason)) => {
                break_glass = Some(reason.to_string());
                continue;
            }
            None if opt == "break-glass" => {
                break_glass = Some(String::new());
                continue;
            }
            _ => {
                let name = opt.split_once('=').map_or(opt.as_str(), |(n, _)| n);
                return Err(UserError::usage(format!(
                    "unknown push option {opt:?} (rollgate knows: {KNOWN_OPTIONS})"
                ))
                .hint_opt(error::suggest(name, OPTION_NAMES.iter().copied()))
                .into());
            }
        };
        if let Some((_, earlier)) = &scope {
            bail!(
                "push options {earlier:?} and {opt:?} conflict: give one of group=, host= or all"
            );
        }
        scope = Some((parsed, opt));
    }
    Ok(PushRequest {
        scope: scope.map(|(s, _)| s).unwrap_or(Scope::Default),
        validate_only,
        options: options.to_vec(),
        break_glass,
    })
}

/// A group, as the revision's config has it, and the hosts of it in scope,
/// in inventory order: what a deploy needs, without looking it up again.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) group: Group,
    pub(crate) hosts: Vec<String>,
}

impl Target {
    /// The whole of `group`.
    pub(crate) fn whole(group: &Group) -> Target {
        Target {
            group: group.clone(),
            hosts: group.hosts.clone(),
        }
    }
}

impl Scope {
    /// The groups and hosts this scope names in `config`, in deploy order.
    pub(crate) fn resolve(&self, config: &Config) -> Result<Vec<Target>> {
        match self {
            Scope::Default => match config
                .default_group
                .as_deref()
                .and_then(|g| config.group(g))
            {
                Some(g) => Ok(vec![Target::whole(g)]),
                None if config.groups.is_empty() => {
                    bail!("rollgate.toml has no groups to deploy to")
                }
                None => bail!(
                    "rollgate.toml has several groups and no default_group, so rollgate will not guess: \
                     name one (groups: {}) or widen to all",
                    config.group_names()
                ),
            },
            Scope::Group(name) => {
                let Some(group) = config.group(name) else {
                    let groups = config.groups.iter().map(|g| g.name.as_str());
                    return Err(UserError::usage(format!(
                        "no group {name:?} in rollgate.toml (groups: {})",
                        config.group_names()
                    ))
                    .hint_opt(error::suggest(name, groups))
                    .into());
                };
                Ok(vec![Target::whole(group)])
            }
            Scope::Host(host) => match config.group_of_host(host) {
                Some(g) => Ok(vec![Target {
                    group: g.clone(),
                    hosts: vec![host.clone()],
                }]),
                None => {
                    let hosts = config.groups.iter().flat_map(|g| &g.hosts);
                    Err(UserError::usage(format!(
                        "no host {host:?} in rollgate.toml (hosts: {})",
                        config.host_names()
                    ))
                    .hint_opt(error::suggest(host, hosts.map(String::as_str)))
                    .into())
                }
            },
            Scope::All => {
                if config.groups.is_empty() {
                    bail!("rollgate.toml has no groups to deploy to");
                }
                let first = config.default_group.as_deref();
                let mut out: Vec<Target> = config
                    .groups
                    .iter()
                    .filter(|g| Some(g.name.as_str()) == first)
                    .map(Target::whole)
                    .collect();
                out.extend(
                    config
                        .groups
                        .iter()
                        .filter(|g| Some(g.name.as_str()) != first)
                        .map(Target::whole),
                );
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(items: &[&str]) -> Result<PushRequest> {
        parse_push_options(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn no_option_means_default_scope() {
        assert_eq!(
            opts(&[]).unwrap(),
            PushRequest {
                scope: Scope::Default,
                validate_only: false,
                options: vec![],
                break_glass: None,
            }
        );
    }

    #[test]
    fn scope_options_parse() {
        assert_eq!(
            opts(&["group=farm"]).unwrap().scope,
            Scope::Group("farm".into())
        );
        assert_eq!(opts(&["host=s1"]).unwrap().scope, Scope::Host("s1".into()));
        assert_eq!(opts(&["all"]).unwrap().scope, Scope::All);
        assert!(opts(&["validate-only"]).unwrap().validate_only);
        assert_eq!(
            opts(&["break-glass=INC-1: sshd down"]).unwrap().break_glass,
            Some("INC-1: sshd down".into())
        );
        assert_eq!(opts(&["break-glass"]).unwrap().break_glass, Some("".into()));
    }

    #[test]
    fn unknown_and_conflicting_options_are_refused() {
        let e = opts(&["grup=farm"]).unwrap_err().to_string();
        assert!(e.contains("grup=farm") && e.contains(KNOWN_OPTIONS), "{e}");
        assert!(opts(&["group="]).is_err());
        assert!(
            opts(&["group=a", "all"])
                .unwrap_err()
                .to_string()
                .contains("conflict")
        );
    }

    #[test]
    fn all_puts_the_default_group_first() {
        let config = Config::parse(
            r#"
default_group = "canary"
[services.s]
source = "s"
check = ["true"]
deploy = ["true"]
[groups.farm]
hosts = ["a", "b"]
[groups.canary]
hosts = ["c"]
[groups.edge]
hosts = ["d"]
"#,
            "test",
        )
        .unwrap();
        let groups: Vec<String> = Scope::All
            .resolve(&config)
            .unwrap()
            .into_iter()
            .map(|t| t.group.name)
            .collect();
        assert_eq!(groups, ["canary", "farm", "edge"]);
        let e = Scope::Group("nope".into())
            .resolve(&config)
            .unwrap_err()
            .to_string();
        assert!(e.contains("farm, canary, edge"), "{e}");
        assert_eq!(
            Scope::Host("b".into()).resolve(&config).unwrap()[0].hosts,
            ["b"]
        );
    }
}
