//! The placeholders rollgate fills in itself, in one place: their names,
//! where each may be used, and the values they take for one command.
//! Config checks ask [`Builtin`] what a step may use; the gate and the plan
//! fill a [`Values`] and render templates with it.

use std::collections::BTreeMap;

/// A placeholder rollgate itself provides. Group vars may not reuse these
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    /// The service's versioned directory in the temporary work tree.
    Dir,
    /// One file of that directory (checks only: the check runs per file).
    File,
    Host,
    Group,
    Service,
    /// The full commit id.
    Rev,
    /// The root of the temporary work tree.
    Worktree,
}

/// Where a template is used, which decides the placeholders it may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    /// A `check`, run on the git server before anything lands: no host yet.
    Check,
    /// A step run for one host (deploy, reload, health ...).
    Host,
}

impl Builtin {
    pub(crate) const ALL: [Builtin; 7] = [
        Builtin::Dir,
        Builtin::File,
        Builtin::Host,
        Builtin::Group,
        Builtin::Service,
        Builtin::Rev,
        Builtin::Worktree,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Builtin::Dir => "dir",
            Builtin::File => "file",
            Builtin::Host => "host",
            Builtin::Group => "group",
            Builtin::Service => "service",
            Builtin::Rev => "rev",
            Builtin::Worktree => "worktree",
        }
    }

    pub(crate) fn named(name: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.name() == name)
    }

    /// Whether a template used in `site` may name this placeholder.
    pub(crate) fn allowed_in(self, site: Site) -> bool {
        match self {
            Builtin::File => site == Site::Check,
            Builtin::Host | Builtin::Group => site == Site::Host,
            Builtin::Dir | Builtin::Service | Builtin::Rev | Builtin::Worktree => true,
        }
    }

    /// The names usable in `site`, as `{dir}, {service}, ...` for errors.
    pub(crate) fn list(site: Site) -> Vec<String> {
        Builtin::ALL
            .into_iter()
            .filter(|b| b.allowed_in(site))
            .map(|b| format!("{{{}}}", b.name()))
            .collect()
    }
}

/// The values for one command: built-ins that are known here, then vars.
#[derive(Debug, Default)]
pub(crate) struct Values<'a> {
    pub(crate) dir: Option<String>,
    pub(crate) file: Option<String>,
    pub(crate) host: Option<&'a str>,
    pub(crate) group: Option<&'a str>,
    pub(crate) service: Option<&'a str>,
    pub(crate) rev: Option<&'a str>,
    pub(crate) worktree: Option<String>,
    /// The group's vars, or the values the source path's placeholders took.
    pub(crate) vars: Option<&'a BTreeMap<String, String>>,
}

impl Values<'_> {
    /// What `{name}` stands for, if anything here.
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        match Builtin::named(name) {
            Some(Builtin::Dir) => self.dir.clone(),
            Some(Builtin::File) => self.file.clone(),
            Some(Builtin::Host) => self.host.map(String::from),
            Some(Builtin::Group) => self.group.map(String::from),
            Some(Builtin::Service) => self.service.map(String::from),
            Some(Builtin::Rev) => self.rev.map(String::from),
            Some(Builtin::Worktree) => self.worktree.clone(),
            None => self.vars.and_then(|v| v.get(name).cloned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_know_file_and_hosts_know_host() {
        assert!(Builtin::File.allowed_in(Site::Check));
        assert!(!Builtin::File.allowed_in(Site::Host));
        assert!(Builtin::Host.allowed_in(Site::Host));
        assert!(!Builtin::Group.allowed_in(Site::Check));
        assert_eq!(
            Builtin::list(Site::Check),
            ["{dir}", "{file}", "{service}", "{rev}", "{worktree}"]
        );
    }

    #[test]
    fn builtins_win_over_vars_and_vars_fill_the_rest() {
        let vars = BTreeMap::from([("version".to_string(), "9.6".to_string())]);
        let v = Values {
            host: Some("server04"),
            vars: Some(&vars),
            ..Values::default()
        };
        assert_eq!(v.get("host").as_deref(), Some("server04"));
        assert_eq!(v.get("version").as_deref(), Some("9.6"));
        assert_eq!(v.get("dir"), None);
        assert_eq!(v.get("nope"), None);
    }
}
