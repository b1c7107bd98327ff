//! Which hosts a deploy may touch. One group unless `all` is said out loud:
//! an empty or unresolvable scope is an error, never "everything".

use anyhow::{Result, bail};

use crate::config::{Config, Group};
use crate::error::{self, UserError};

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
