//! `rollgate.toml` checked: the model every stage uses, built from `raw.rs`.
//!
//! The file is versioned with the configs it describes, so every revision
//! carries its own inventory and commands. Unknown keys are errors: a typo
//! such as `defualt_group` must never fall back to a wider default.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::config::placeholders::{Builtin, Site};
use crate::config::raw::{RawConfig, RawService};
use crate::config::rollout::RolloutSpec;
use crate::config::template::Template;
use crate::error::UserError;
use crate::ui;

pub(crate) const FILE_NAME: &str = "rollgate.toml";

/// Which hosts a failed rollout puts back on their previous revision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OnFailure {
    #[default]
    RestoreFailed,
    RestoreRun,
}

#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// `None` when several groups exist and none is named: deploying without
    /// an explicit scope is then refused instead of guessed.
    pub(crate) default_group: Option<String>,
    pub(crate) on_failure: OnFailure,
    pub(crate) lock_wait: Duration,
    /// After this long without output, a deploy prints a line anyway, so
    /// proxies and CI runners do not cut a long push.
    pub(crate) heartbeat: Duration,
    pub(crate) services: Vec<Service>,
    /// In file order: `all` deploys the default group first, then these in order.
    pub(crate) groups: Vec<Group>,
}

#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub(crate) name: String,
    /// Path template, one placeholder per component at most.
    pub(crate) source: Vec<Template>,
    pub(crate) check: Vec<Template>,
    pub(crate) deploy: Vec<Template>,
    /// Runs once the files are in place, before anything is activated.
    pub(crate) verify: Option<Vec<Template>>,
    /// Dead-man's switch: runs before the reload, `disarm` after health.
    pub(crate) arm: Option<Vec<Template>>,
    pub(crate) reload: Option<Vec<Template>>,
    pub(crate) health: Option<Vec<Template>>,
    pub(crate) disarm: Option<Vec<Template>>,
    pub(crate) timeout: Duration,
    pub(crate) health_wait: Duration,
    /// Where the directory lives on a host (e.g. `/etc/ssh`): the check's
    /// sandbox shows the pushed directory there too, so absolute includes
    /// resolve into the pushed files, not the git server's.
    pub(crate) target: Option<String>,
    /// Any output from a check that exits 0 fails it (for checkers such as
    /// `systemd-analyze verify` that only warn).
    pub(crate) strict: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) name: String,
    pub(crate) hosts: Vec<String>,
    pub(crate) vars: BTreeMap<String, String>,
    /// Strategy, waves, bake and failure budget.
    pub(crate) rollout: RolloutSpec,
    /// The services deployed to this group's hosts, in config order.
    pub(crate) services: Vec<String>,
}

impl Config {
    /// Parses and checks the file's text; `origin` names where it came from
    /// (e.g. `rollgate.toml at 1a2b3c4`) in every error.
    pub(crate) fn parse(text: &str, origin: &str) -> Result<Config> {
        let invalid = || UserError::config(format!("invalid {origin}"));
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let hint = unknown_key_hint(&e);
            anyhow::Error::new(e).context(invalid().hint_opt(hint))
        })?;
        for (key, found) in [("branch", &raw.branch), ("pusher_env", &raw.pusher_env)] {
            if let Some(at) = found {
                let line = text[..at.span().start.min(text.len())]
                    .matches('\n')
                    .count()
                    + 1;
                return Err(UserError::config(format!(
                    "invalid {origin}: line {line}: `{key}` moved to rollgate/policy.toml in the bare \
                     repository (the server decides it, not a push)"
                ))
                .hint("delete the line; an admin sets it in the server's policy (`rollgate policy show`)")
                .into());
            }
        }
        Config::from_raw(raw).with_context(invalid)
    }

    fn from_raw(raw: RawConfig) -> Result<Config> {
        check_duration("lock_wait", raw.lock_wait)?;
        check_duration("heartbeat", raw.heartbeat)?;
        let mut services = Vec::new();
        for (name, s) in raw.services {
            services.push(Service::from_raw(&name, s).with_context(|| format!("services.{name}"))?);
        }
        let mut groups = Vec::new();
        let mut seen_hosts: BTreeMap<String, String> = BTreeMap::new();
        for (name, g) in raw.groups {
            check_name(&name).with_context(|| format!("groups.{name}"))?;
            if name == "all" {
                bail!(
                    "groups.all: `all` is reserved for widening a deploy to every group; rename the group"
                );
            }
            if g.hosts.is_empty() {
                bail!("groups.{name}.hosts: a group needs at least one host");
            }
            let rollout =
                RolloutSpec::from_raw(g.rollout, g.batch, g.waves, g.bake, g.max_failures)
                    .with_context(|| format!("groups.{name}"))?;
            for host in &g.hosts {
                check_name(host).with_context(|| format!("groups.{name}.hosts: {host:?}"))?;
                if let Some(other) = seen_hosts.insert(host.clone(), name.clone()) {
                    bail!(
                        "groups.{name}.hosts: host {host} is already in group {other}; a host belongs to one group"
                    );
                }
            }
            for var in g.vars.keys() {
                if Builtin::named(var).is_some() {
                    bail!(
                        "groups.{name}.vars.{var}: `{var}` is a built-in placeholder and cannot be a var"
                    );
                }
            }
            let group_services: Vec<&Service> = match &g.services {
                Some(list) => list
                    .iter()
                    .map(|s| {
                        services.iter().find(|x| &x.name == s).with_context(|| {
                            format!(
                                "groups.{name}.services: no service named {s:?} (known: {})",
                                ui::capped(services.iter().map(|s| s.name.as_str()))
                            )
                        })
                    })
                    .collect::<Result<_>>()?,
                None => services.iter().collect(),
            };
            let group = Group {
                name: name.clone(),
                hosts: g.hosts,
                vars: g.vars,
                rollout,
                services: group_services.iter().map(|s| s.name.clone()).collect(),
            };
            for service in group_services {
                group.check_vars_for(service)?;
            }
            groups.push(group);
        }
        let default_group = match raw.default_group {
            Some(name) => {
                if !groups.iter().any(|g| g.name == name) {
                    bail!(
                        "default_group: no group named {name:?} (groups: {})",
                        ui::capped(groups.iter().map(|g| g.name.as_str()))
                    );
                }
                Some(name)
            }
            None if groups.len() == 1 => Some(groups[0].name.clone()),
            None => None,
        };
        Ok(Config {
            default_group,
            on_failure: raw.on_failure,
            lock_wait: raw.lock_wait,
            heartbeat: raw.heartbeat,
            services,
            groups,
        })
    }

    pub(crate) fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The service a config directory of this revision belongs to.
    pub(crate) fn service_named(&self, name: &str) -> Result<&Service> {
        self.service(name)
            .with_context(|| format!("no service {name:?} in {FILE_NAME}"))
    }

    pub(crate) fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub(crate) fn group_of_host(&self, host: &str) -> Option<&Group> {
        self.groups
            .iter()
            .find(|g| g.hosts.iter().any(|h| h == host))
    }

    /// The groups, for an error message (at most `ui::LIST_CAP` of them).
    pub(crate) fn group_names(&self) -> String {
        ui::capped(self.groups.iter().map(|g| g.name.as_str()))
    }

    /// The hosts, for an error message: a fleet of 1,000 is not listed.
    pub(crate) fn host_names(&self) -> String {
        ui::capped(
            self.groups
                .iter()
                .flat_map(|g| g.hosts.iter().map(String::as_str)),
        )
    }
}

impl Service {
    fn from_raw(name: &str, s: RawService) -> Result<Service> {
        check_name(name)?;
        let source = parse_source(&s.source).context("source")?;
        let source_vars: BTreeSet<String> = source
            .iter()
            .flat_map(|t| t.vars().map(String::from))
            .collect();
        for var in &source_vars {
            if Builtin::named(var).is_some() {
                bail!(
                    "source: `{{{var}}}` is a built-in placeholder; name the version var otherwise"
                );
            }
        }
        let check = parse_argv(&s.check).context("check")?;
        let known = |var: &str| {
            Builtin::named(var).is_some_and(|b| b.allowed_in(Site::Check))
                || source_vars.contains(var)
        };
        for t in &check {
            for var in t.vars() {
                if !known(var) {
                    let mut choices = Builtin::list(Site::Check);
                    choices.extend(source_vars.iter().map(|v| format!("{{{v}}}")));
                    bail!(
                        "check: unknown placeholder {{{var}}} in `{}` (a check knows {})",
                        t.raw(),
                        ui::capped(choices)
                    );
                }
            }
        }
        let deploy = parse_argv(&s.deploy).context("deploy")?;
        let optional = |key: &'static str, argv: &Option<Vec<String>>| {
            argv.as_deref().map(parse_argv).transpose().context(key)
        };
        let verify = optional("verify", &s.verify)?;
        let arm = optional("arm", &s.arm)?;
        let reload = optional("reload", &s.reload)?;
        let health = optional("health", &s.health)?;
        let disarm = optional("disarm", &s.disarm)?;
        if arm.is_some() != disarm.is_some() {
            bail!(
                "`arm` and `disarm` go together: an armed switch nobody disarms reverts every deploy"
            );
        }
        for (key, argv) in [
            ("deploy", Some(&deploy)),
            ("verify", verify.as_ref()),
            ("arm", arm.as_ref()),
            ("reload", reload.as_ref()),
            ("health", health.as_ref()),
            ("disarm", disarm.as_ref()),
        ] {
            if let Some(argv) = argv
                && let Some(t) = argv.iter().find(|t| t.uses("file"))
            {
                bail!("{key}: {{file}} is only for checks (in `{}`)", t.raw());
            }
        }
        if s.timeout.is_zero() {
            bail!("timeout: must be more than 0s");
        }
        if let Some(target) = &s.target {
            check_target(target).context("target")?;
        }
        check_duration("timeout", s.timeout)?;
        check_duration("health_wait", s.health_wait)?;
        Ok(Service {
            name: name.to_string(),
            source,
            check,
            deploy,
            verify,
            arm,
            reload,
            health,
            disarm,
            timeout: s.timeout,
            health_wait: s.health_wait,
            target: s.target,
            strict: s.strict,
        })
    }

    /// The source path with its vars; `None` if a var is missing.
    pub(crate) fn source_path(&self, vars: &BTreeMap<String, String>) -> Option<String> {
        let lookup = |v: &str| vars.get(v).cloned();
        let parts: Result<Vec<String>> = self.source.iter().map(|t| t.render(&lookup)).collect();
        parts.ok().map(|p| p.join("/"))
    }

    pub(crate) fn source_raw(&self) -> String {
        self.source
            .iter()
            .map(Template::raw)
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Every command this service runs on a host, with its role, in the
    /// order a host-by-host rollout runs them.
    pub(crate) fn host_steps(&self) -> impl Iterator<Item = (&'static str, &Vec<Template>)> {
        [
            ("deploy", Some(&self.deploy)),
            ("verify", self.verify.as_ref()),
            ("arm", self.arm.as_ref()),
            ("reload", self.reload.as_ref()),
            ("health", self.health.as_ref()),
            ("disarm", self.disarm.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

impl Group {
    /// Every placeholder of the service's source and host commands must be a
    /// built-in or one of this group's vars.
    fn check_vars_for(&self, service: &Service) -> Result<()> {
        let known = |var: &str| {
            Builtin::named(var).is_some_and(|b| b.allowed_in(Site::Host))
                || self.vars.contains_key(var)
        };
        let mut templates: Vec<(&str, &Template)> =
            service.source.iter().map(|t| ("source", t)).collect();
        for (key, argv) in service.host_steps() {
            templates.extend(argv.iter().map(|t| (key, t)));
        }
        for (key, t) in templates {
            for var in t.vars() {
                if !known(var) {
                    bail!(
                        "groups.{}: service {} uses {{{var}}} in its {key} (`{}`), but the group has no var `{var}` (vars: {})",
                        self.name,
                        service.name,
                        t.raw(),
                        if self.vars.is_empty() {
                            "none".to_string()
                        } else {
                            ui::capped(self.vars.keys())
                        }
                    );
                }
            }
        }
        Ok(())
    }
}

fn parse_source(raw: &str) -> Result<Vec<Template>> {
    if raw.starts_with('/') {
        bail!("`{raw}` must be relative to the repository root");
    }
    let mut parts = Vec::new();
    for component in raw.trim_end_matches('/').split('/') {
        if component.is_empty() || component == "." || component == ".." {
            bail!("`{raw}`: empty, `.` and `..` components are not allowed");
        }
        let t = Template::parse(component).with_context(|| format!("`{raw}`"))?;
        if t.vars().count() > 1 {
            bail!("`{raw}`: at most one placeholder per path component");
        }
        parts.push(t);
    }
    Ok(parts)
}

/// A host path the check sandbox mounts the pushed directory on: absolute,
/// plain components only, and not `/` itself (that would hide the system).
fn check_target(target: &str) -> Result<()> {
    if !target.starts_with('/') {
        bail!("`{target}` must be an absolute path, e.g. \"/etc/ssh\"");
    }
    let components: Vec<&str> = target.trim_end_matches('/').split('/').skip(1).collect();
    if components.is_empty() || components == [""] {
        bail!("`{target}`: the root directory cannot be a target");
    }
    if components
        .iter()
        .any(|c| c.is_empty() || *c == "." || *c == "..")
    {
        bail!("`{target}`: empty, `.` and `..` components are not allowed");
    }
    Ok(())
}

fn parse_argv(argv: &[String]) -> Result<Vec<Template>> {
    if argv.is_empty() || argv[0].is_empty() {
        bail!("a command needs at least a program name");
    }
    argv.iter().map(|a| Template::parse(a)).collect()
}

/// "did you mean" for serde's `unknown field `defualt_group`, expected one
/// of `branch`, `default_group`, ...`.
pub(crate) fn unknown_key_hint(err: &toml::de::Error) -> Option<String> {
    let message = err.message();
    let rest = message.strip_prefix("unknown field `")?;
    let (key, expected) = rest.split_once('`')?;
    let choices: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    crate::error::suggest(key, choices)
}

/// The longest any duration key may be. Durations are added to clocks
/// (`Instant::now() + timeout`), which panics on overflow; and a timeout of
/// more than a day is a typo, not a plan: a push would hold the lock that long.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

fn check_duration(key: &str, value: Duration) -> Result<()> {
    if value > MAX_DURATION {
        return Err(UserError::config(format!(
            "{key}: {} is longer than the maximum of {}",
            humantime::format_duration(value),
            humantime::format_duration(MAX_DURATION)
        ))
        .hint("durations are like \"30s\", \"5m\" or \"2h\"")
        .into());
    }
    Ok(())
}

/// Group, host and service names end up in argv and paths: keep them plain.
/// `.` and `..` pass the character rule but, put in a `{host}` path, name
/// the directory itself or its parent: refused.
fn check_name(name: &str) -> Result<()> {
    if name == "." || name == ".." {
        bail!("{name:?}: `.` and `..` are not names (in a path they would name a directory)");
    }
    let ok = !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':'));
    if !ok {
        bail!(
            "{name:?}: names use letters, digits, `.`, `_`, `-`, `@`, `:` and do not start with `-`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
default_group = "canary"
[services.sshd]
source = "files/sshd/{version}"
check = ["/usr/sbin/sshd", "-t", "-f", "{dir}/sshd_config"]
deploy = ["rsync", "-a", "{dir}/", "{host}:/etc/ssh/"]
[groups.canary]
hosts = ["server04"]
vars = { version = "9.6" }
[groups.farm]
hosts = ["server01", "server02"]
vars = { version = "9.2" }
batch = 20
"#;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text, "rollgate.toml").unwrap_err())
    }

    #[test]
    fn parses_groups_in_file_order() {
        let c = Config::parse(GOOD, "rollgate.toml").unwrap();
        assert_eq!(
            c.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
            ["canary", "farm"]
        );
        assert_eq!(c.default_group.as_deref(), Some("canary"));
        assert_eq!(c.groups[1].rollout.batches(45), [20, 20, 5]);
        assert_eq!(c.groups[0].services, ["sshd"]);
    }

    #[test]
    fn typo_in_a_key_is_an_error_with_line_and_column() {
        let e = err(&GOOD.replace("default_group", "defualt_group"));
        assert!(e.contains("defualt_group") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn a_misspelt_key_gets_a_suggestion() {
        let err = Config::parse(&GOOD.replace("default_group", "defualt_group"), "x").unwrap_err();
        assert_eq!(crate::error::hints(&err), ["did you mean `default_group`?"]);
    }

    #[test]
    fn keys_the_server_decides_say_where_they_moved() {
        for line in ["branch = \"main\"", "pusher_env = [\"LANG\"]"] {
            let e = err(&format!("{line}\n{GOOD}"));
            assert!(
                e.contains("line 1") && e.contains("moved to rollgate/policy.toml"),
                "{e}"
            );
        }
    }

    #[test]
    fn several_groups_without_default_do_not_guess() {
        let c = Config::parse(&GOOD.replace("default_group = \"canary\"", ""), "x").unwrap();
        assert_eq!(c.default_group, None);
    }

    #[test]
    fn unknown_placeholder_in_check_is_an_error() {
        let e = err(&GOOD.replace("{dir}/sshd_config", "{dri}/sshd_config"));
        assert!(e.contains("{dri}") && e.contains("services.sshd"), "{e}");
    }

    #[test]
    fn group_missing_a_var_is_an_error() {
        let e = err(&GOOD.replace("vars = { version = \"9.2\" }", ""));
        assert!(e.contains("groups.farm") && e.contains("`version`"), "{e}");
    }

    #[test]
    fn group_named_all_is_refused() {
        let e = err(&GOOD.replace("[groups.farm]", "[groups.all]"));
        assert!(e.contains("reserved"), "{e}");
    }

    #[test]
    fn host_in_two_groups_is_refused() {
        let e = err(&GOOD.replace("\"server01\"", "\"server04\""));
        assert!(e.contains("server04") && e.contains("canary"), "{e}");
    }

    #[test]
    fn target_must_be_absolute_and_plain() {
        let with = |t: &str| GOOD.replace("deploy = [", &format!("target = {t:?}\ndeploy = ["));
        let c = Config::parse(&with("/etc/ssh"), "x").unwrap();
        assert_eq!(c.services[0].target.as_deref(), Some("/etc/ssh"));
        for bad in ["etc/ssh", "/etc/../root", "/etc//ssh", "/", "/etc/./ssh"] {
            let e = err(&with(bad));
            assert!(
                e.contains("services.sshd") && e.contains("target"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn strict_defaults_to_off() {
        let c = Config::parse(GOOD, "x").unwrap();
        assert!(!c.services[0].strict);
        let c = Config::parse(
            &GOOD.replace("deploy = [", "strict = true\ndeploy = ["),
            "x",
        );
        assert!(c.unwrap().services[0].strict);
    }

    #[test]
    fn durations_above_the_maximum_are_config_errors_not_panics() {
        for (key, line) in [
            ("timeout", "timeout = \"500000000000years\"\n"),
            ("health_wait", "health_wait = \"25h\"\n"),
        ] {
            let text = GOOD.replace("[groups.canary]", &format!("{line}[groups.canary]"));
            let e = err(&text);
            assert!(e.contains(key) && e.contains("maximum"), "{e}");
        }
        for key in ["lock_wait", "heartbeat"] {
            let e = err(&format!("{key} = \"2days\"\n{GOOD}"));
            assert!(e.contains(key) && e.contains("maximum"), "{e}");
        }
        let ok = GOOD.replace("[groups.canary]", "timeout = \"24h\"\n[groups.canary]");
        Config::parse(&ok, "x").unwrap();
    }

    #[test]
    fn dot_names_are_refused() {
        for bad in [".", ".."] {
            let e = err(&GOOD.replace("\"server01\"", &format!("\"{bad}\"")));
            assert!(
                e.contains("groups.farm.hosts") && e.contains("not names"),
                "{e}"
            );
            let e = err(&GOOD.replace("[groups.farm]", &format!("[groups.\"{bad}\"]")));
            assert!(e.contains("not names"), "{e}");
            let e = err(&GOOD.replace("[services.sshd]", &format!("[services.\"{bad}\"]")));
            assert!(e.contains("not names"), "{e}");
        }
        let e = err(&GOOD.replace("\"server01\"", "\"a/b\""));
        assert!(e.contains("a/b"), "{e}");
    }

    #[test]
    fn unknown_default_group_names_the_choices() {
        let e = err(&GOOD.replace("\"canary\"\n[services", "\"canry\"\n[services"));
        assert!(e.contains("canry") && e.contains("canary, farm"), "{e}");
    }
}

/// The example in `examples/infra` is what new users copy: it must parse.
#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let text = include_str!("../../examples/infra/rollgate.toml");
        let config = Config::parse(text, "examples/infra/rollgate.toml").unwrap();
        assert!(config.default_group.is_some());
        assert!(!config.services.is_empty());
    }
}
