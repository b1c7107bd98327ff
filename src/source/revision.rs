//! A revision as rollgate sees it: its `rollgate.toml`, the versioned config
//! directories in its tree, and which of them changed since a base.

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result, bail};

use crate::config::{self, Config, Group, Service};
use crate::source::repo::Snapshot;

/// One versioned config directory, e.g. `files/sshd/9.6` of service `sshd`
/// with `version = "9.6"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigDir {
    pub(crate) service: String,
    pub(crate) path: String,
    /// The values the source's placeholders took for this directory.
    pub(crate) vars: BTreeMap<String, String>,
}

impl ConfigDir {
    /// `sshd 9.6`: the service and its version, as people say it.
    pub(crate) fn label(&self) -> String {
        match self.version() {
            v if v.is_empty() => self.service.clone(),
            v => format!("{} {v}", self.service),
        }
    }

    /// The values of the source's placeholders, e.g. `9.6`.
    pub(crate) fn version(&self) -> String {
        self.vars
            .values()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("/")
    }
}

pub(crate) struct Revision<'r> {
    pub(crate) snapshot: Snapshot<'r>,
    pub(crate) config: Config,
    /// Every directory matching a service's `source`, sorted by path.
    pub(crate) dirs: Vec<ConfigDir>,
}

impl<'r> Revision<'r> {
    /// Reads and checks `rollgate.toml`, finds the config directories, and
    /// makes sure every directory a group refers to exists.
    pub(crate) fn load(snapshot: Snapshot<'r>) -> Result<Revision<'r>> {
        let origin = format!("{} at {}", config::FILE_NAME, snapshot.describe());
        let text = snapshot
            .read_file(config::FILE_NAME)?
            .with_context(|| format!("{} has no {}", snapshot.describe(), config::FILE_NAME))?;
        let text = String::from_utf8(text).with_context(|| format!("{origin} is not UTF-8"))?;
        let config = Config::parse(&text, &origin)?;
        let mut dirs = Vec::new();
        for service in &config.services {
            find_dirs(
                &snapshot,
                service,
                0,
                String::new(),
                BTreeMap::new(),
                &mut dirs,
            )?;
        }
        dirs.sort_by(|a, b| a.path.cmp(&b.path).then(a.service.cmp(&b.service)));
        let revision = Revision {
            snapshot,
            config,
            dirs,
        };
        for group in &revision.config.groups {
            revision.group_dirs(group)?;
        }
        Ok(revision)
    }

    /// The directory of each service a group deploys, in service order.
    pub(crate) fn group_dirs(&self, group: &Group) -> Result<Vec<ConfigDir>> {
        let mut out = Vec::new();
        for name in &group.services {
            let service = self.config.service_named(name)?;
            let path = service.source_path(&group.vars).with_context(|| {
                format!(
                    "group {}: no value for a placeholder of {}",
                    group.name,
                    service.source_raw()
                )
            })?;
            if !self.snapshot.is_dir(&path)? {
                bail!(
                    "group {}: service {} needs {path}, which does not exist in {} ({} has {})",
                    group.name,
                    service.name,
                    self.snapshot.describe(),
                    service.source_raw(),
                    self.versions_of(&service.name)
                );
            }
            let vars = source_vars(service, &group.vars);
            out.push(ConfigDir {
                service: service.name.clone(),
                path,
                vars,
            });
        }
        Ok(out)
    }

    fn versions_of(&self, service: &str) -> String {
        let found: Vec<String> = self
            .dirs
            .iter()
            .filter(|d| d.service == service)
            .map(|d| d.path.clone())
            .collect();
        if found.is_empty() {
            "no matching directory".into()
        } else {
            config::names(found)
        }
    }

    /// The directories whose content differs from `base`; all of them when
    /// there is no base or `rollgate.toml` itself changed, since then any
    /// command or inventory may have changed.
    pub(crate) fn changed_since(&self, base: Option<&Revision<'_>>) -> Result<Vec<ConfigDir>> {
        let Some(base) = base else {
            return Ok(self.dirs.clone());
        };
        // A working tree has no tree ids to compare: all of it counts.
        let Some(paths) = self.snapshot.changed_paths(&base.snapshot)? else {
            return Ok(self.dirs.clone());
        };
        if paths.contains(config::FILE_NAME) {
            return Ok(self.dirs.clone());
        }
        let dir_paths: HashSet<&str> = self.dirs.iter().map(|d| d.path.as_str()).collect();
        let mut changed: HashSet<&str> = HashSet::new();
        for path in &paths {
            let mut at = path.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                if dir_paths.contains(parent) {
                    changed.insert(parent);
                }
                at = parent;
            }
        }
        Ok(self
            .dirs
            .iter()
            .filter(|d| changed.contains(d.path.as_str()))
            .cloned()
            .collect())
    }
}

fn source_vars(service: &Service, vars: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    service
        .source
        .iter()
        .flat_map(|t| t.vars())
        .filter_map(|v| vars.get(v).map(|value| (v.to_string(), value.clone())))
        .collect()
}

/// Walks the tree along the source template, one component at a time: only
/// the directories on the way are read, never the whole tree.
fn find_dirs(
    snapshot: &Snapshot<'_>,
    service: &Service,
    depth: usize,
    prefix: String,
    vars: BTreeMap<String, String>,
    out: &mut Vec<ConfigDir>,
) -> Result<()> {
    if depth == service.source.len() {
        out.push(ConfigDir {
            service: service.name.clone(),
            path: prefix,
            vars,
        });
        return Ok(());
    }
    for name in snapshot.subdirs(&prefix)? {
        if let Some(binding) = service.source[depth].match_component(&name) {
            let mut vars = vars.clone();
            if let Some((k, v)) = binding {
                vars.insert(k, v);
            }
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            find_dirs(snapshot, service, depth + 1, path, vars, out)?;
        }
    }
    Ok(())
}
