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
    /// The values the source's placeholders took for this directory,
    /// sorted by name. A list, not a map: there are one or two, and a
    /// map's first node reserves room for eleven (at 5,000 directories that
    /// was 3 MB of page faults on every push).
    pub(crate) vars: Vec<(String, String)>,
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
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join("/")
    }
}

pub(crate) struct Revision<'r> {
    pub(crate) snapshot: Snapshot<'r>,
    pub(crate) config: Config,
    /// Every directory matching a service's `source`, sorted by path: found
    /// when first asked for (see [`Revision::dirs`]).
    dirs: std::cell::OnceCell<Vec<ConfigDir>>,
}

impl<'r> Revision<'r> {
    /// Reads and checks `rollgate.toml` and makes sure every directory a
    /// group refers to exists.
    pub(crate) fn load(snapshot: Snapshot<'r>) -> Result<Revision<'r>> {
        let origin = format!("{} at {}", config::FILE_NAME, snapshot.describe());
        let text = snapshot
            .read_file(config::FILE_NAME)?
            .with_context(|| format!("{} has no {}", snapshot.describe(), config::FILE_NAME))?;
        let text = String::from_utf8(text).with_context(|| format!("{origin} is not UTF-8"))?;
        let config = Config::parse(&text, &origin)?;
        let revision = Revision {
            snapshot,
            config,
            dirs: std::cell::OnceCell::new(),
        };
        for group in &revision.config.groups {
            revision.group_dirs(group)?;
        }
        Ok(revision)
    }

    /// Every directory matching a service's `source`, sorted by path. Found
    /// on first use, not by `load`: a push's base revision only needs its
    /// tree and config, and at 5,000 directories the list costs
    /// milliseconds.
    pub(crate) fn dirs(&self) -> Result<&[ConfigDir]> {
        if let Some(dirs) = self.dirs.get() {
            return Ok(dirs);
        }
        let mut dirs = Vec::new();
        for service in &self.config.services {
            find_dirs(
                &self.snapshot,
                service,
                0,
                String::new(),
                Vec::new(),
                &mut dirs,
            )?;
        }
        dirs.sort_by(|a, b| a.path.cmp(&b.path).then(a.service.cmp(&b.service)));
        Ok(self.dirs.get_or_init(|| dirs))
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
        let Ok(dirs) = self.dirs() else {
            return "directories that could not be read".into();
        };
        let found: Vec<String> = dirs
            .iter()
            .filter(|d| d.service == service)
            .map(|d| d.path.clone())
            .collect();
        if found.is_empty() {
            "no matching directory".into()
        } else {
            crate::ui::capped(found)
        }
    }

    /// The directories whose content differs from `base`; all of them when
    /// there is no base or `rollgate.toml` itself changed, since then any
    /// command or inventory may have changed.
    pub(crate) fn changed_since(&self, base: Option<&Revision<'r>>) -> Result<Vec<ConfigDir>> {
        Ok(self.changes_since(base)?.to_check)
    }

    /// [`Changes`] against `base`, from one comparison of the two trees.
    pub(crate) fn changes_since(&self, base: Option<&Revision<'r>>) -> Result<Changes> {
        let paths = match base {
            Some(base) => self.snapshot.changed_paths(&base.snapshot)?,
            None => None,
        };
        // No base, or a working tree (no tree ids to compare): all of it
        // counts for checking, and nothing is known to be edited.
        let Some(paths) = paths else {
            return Ok(Changes {
                to_check: self.dirs()?.to_vec(),
                edited: Vec::new(),
            });
        };
        let dirs = self.dirs()?;
        let dir_paths: HashSet<&str> = dirs.iter().map(|d| d.path.as_str()).collect();
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
        let edited: Vec<ConfigDir> = dirs
            .iter()
            .filter(|d| changed.contains(d.path.as_str()))
            .cloned()
            .collect();
        let to_check = if paths.contains(config::FILE_NAME) {
            dirs.to_vec()
        } else {
            edited.clone()
        };
        Ok(Changes { to_check, edited })
    }
}

/// What a revision changes against the one before it.
pub(crate) struct Changes {
    /// What the gate checks: the directories whose files changed, or every
    /// directory when `rollgate.toml` changed or there is nothing to
    /// compare with.
    pub(crate) to_check: Vec<ConfigDir>,
    /// The directories whose files changed (none when there is nothing to
    /// compare with): the live edits of `rollout::live`.
    pub(crate) edited: Vec<ConfigDir>,
}

fn source_vars(service: &Service, vars: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = service
        .source
        .iter()
        .flat_map(|t| t.vars())
        .filter_map(|v| vars.get(v).map(|value| (v.to_string(), value.clone())))
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

/// Walks the tree along the source template, one component at a time: only
/// the directories on the way are read, never the whole tree.
fn find_dirs(
    snapshot: &Snapshot<'_>,
    service: &Service,
    depth: usize,
    prefix: String,
    vars: Vec<(String, String)>,
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
                // Kept sorted by name; a name bound again takes the new value.
                match vars.binary_search_by(|(name, _)| name.cmp(&k)) {
                    Ok(i) => vars[i].1 = v,
                    Err(i) => vars.insert(i, (k, v)),
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use git2::{Oid, Repository, Signature};

    const CONFIG: &str = r#"
default_group = "canary"
[services.sshd]
source = "files/sshd/{version}"
check = ["true"]
deploy = ["true"]
[services.nginx]
source = "files/nginx/{nginx_version}"
check = ["true"]
deploy = ["true"]
[groups.canary]
hosts = ["a"]
vars = { version = "9.6", nginx_version = "1.22" }
"#;

    /// Commits `files` (path, content) on top of `parent` in a bare
    /// in-memory-ish repository: blobs and trees written with git2.
    fn commit(repo: &Repository, parent: Option<Oid>, files: &[(&str, &str)]) -> Oid {
        let mut index = git2::Index::new().unwrap();
        if let Some(p) = parent {
            index
                .read_tree(&repo.find_commit(p).unwrap().tree().unwrap())
                .unwrap();
        }
        for (path, content) in files {
            let blob = repo.blob(content.as_bytes()).unwrap();
            let entry = git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: content.len() as u32,
                id: blob,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            };
            index.add(&entry).unwrap();
        }
        let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
        let sig = Signature::new("t", "t@example.test", &git2::Time::new(0, 0)).unwrap();
        let parents: Vec<git2::Commit<'_>> = parent
            .map(|p| repo.find_commit(p).unwrap())
            .into_iter()
            .collect();
        let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
        repo.commit(None, &sig, &sig, "c", &tree, &refs).unwrap()
    }

    /// A bare repository in a temporary directory (kept while `TempDir`
    /// lives) holding one commit of `files`.
    fn repo_with(files: &[(&str, &str)]) -> (tempfile::TempDir, Repository, Oid) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        let first = commit(&repo, None, files);
        (dir, repo, first)
    }

    fn load(repo: &Repository, id: Oid) -> Revision<'_> {
        Revision::load(Snapshot::of_commit(repo, repo.find_commit(id).unwrap()).unwrap()).unwrap()
    }

    fn changed(repo: &Repository, new: Oid, base: Option<Oid>) -> Vec<String> {
        let base = base.map(|b| load(repo, b));
        load(repo, new)
            .changed_since(base.as_ref())
            .unwrap()
            .into_iter()
            .map(|d| d.path)
            .collect()
    }

    #[test]
    fn only_directories_whose_content_changed_are_checked() {
        let (_dir, repo, a) = repo_with(&[
            ("rollgate.toml", CONFIG),
            ("files/sshd/9.2/sshd_config", "Port 22\n"),
            ("files/sshd/9.6/sshd_config", "Port 22\n"),
            ("files/nginx/1.22/nginx.conf", "events {}\n"),
            ("README", "hello\n"),
        ]);
        // No base (a first push): everything.
        assert_eq!(
            changed(&repo, a, None),
            ["files/nginx/1.22", "files/sshd/9.2", "files/sshd/9.6"]
        );
        // A file deep inside one directory: that directory only.
        let b = commit(&repo, Some(a), &[("files/sshd/9.2/sub/x.conf", "y\n")]);
        assert_eq!(changed(&repo, b, Some(a)), ["files/sshd/9.2"]);
        // Outside every config directory: nothing.
        let c = commit(&repo, Some(b), &[("README", "changed\n")]);
        assert!(changed(&repo, c, Some(b)).is_empty());
        // rollgate.toml itself: every command may differ, so everything.
        let d = commit(
            &repo,
            Some(c),
            &[(
                "rollgate.toml",
                &CONFIG.replace("check = [\"true\"]", "check = [\"/bin/true\"]"),
            )],
        );
        assert_eq!(changed(&repo, d, Some(c)).len(), 3);
    }

    /// The paths git's own tree diff reports, for comparison.
    fn git_diff(repo: &Repository, old: Oid, new: Oid) -> std::collections::HashSet<String> {
        let tree = |id| repo.find_commit(id).unwrap().tree().unwrap();
        let diff = repo
            .diff_tree_to_tree(Some(&tree(old)), Some(&tree(new)), None)
            .unwrap();
        diff.deltas()
            .flat_map(|d| [d.old_file().path(), d.new_file().path()])
            .flatten()
            .map(|p| p.to_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn changed_paths_match_gits_tree_diff() {
        let (_dir, repo, a) = repo_with(&[
            ("rollgate.toml", CONFIG),
            ("files/sshd/9.2/sshd_config", "Port 22\n"),
            ("files/sshd/9.2/d/x.conf", "x\n"),
            ("files/nginx/1.22/nginx.conf", "events {}\n"),
            ("other/a", "a\n"),
        ]);
        let b = commit(
            &repo,
            Some(a),
            &[
                ("files/sshd/9.2/d/x.conf", "changed\n"),
                ("files/sshd/9.6/sshd_config", "new dir\n"),
                ("other/b/c", "deep new\n"),
            ],
        );
        // git's order puts `9.2.1` before the directory `9.2` (compared as
        // `9.2/`), and `other/a` turns from a file into a directory.
        let c = commit(
            &repo,
            None,
            &[
                ("rollgate.toml", CONFIG),
                ("files/sshd/9.2/sshd_config", "Port 22\n"),
                ("files/sshd/9.2.1/sshd_config", "Port 2222\n"),
                ("files/sshd/9.2-x", "a file\n"),
                ("files/nginx/1.22/nginx.conf", "events {}\n"),
                ("other/a/x", "a\n"),
            ],
        );
        let snapshot = |id| Snapshot::of_commit(&repo, repo.find_commit(id).unwrap()).unwrap();
        for (old, new) in [(a, b), (b, a), (a, a), (a, c), (c, a), (b, c), (c, b)] {
            let ours = snapshot(new)
                .changed_paths(&snapshot(old))
                .unwrap()
                .unwrap();
            assert_eq!(ours, git_diff(&repo, old, new), "{old} -> {new}");
        }
    }

    /// A tree object written byte by byte: `(mode, name, id)` in the order
    /// given, as a crafted push can, which git's own writers never do.
    fn raw_tree(repo: &Repository, entries: &[(i32, &str, Oid)]) -> Oid {
        let mut raw = Vec::new();
        for (mode, name, id) in entries {
            raw.extend(format!("{mode:o} {name}\0").into_bytes());
            raw.extend(id.as_bytes());
        }
        repo.odb()
            .unwrap()
            .write(git2::ObjectType::Tree, &raw)
            .unwrap()
    }

    #[test]
    fn a_crafted_tree_is_refused_when_pushed_and_all_changed_when_it_is_the_base() {
        let (_dir, repo, a) = repo_with(&[
            ("rollgate.toml", CONFIG),
            ("files/sshd/9.2/sshd_config", "Port 22\n"),
            ("files/sshd/9.6/sshd_config", "Port 2\n"),
        ]);
        let root = repo.find_commit(a).unwrap().tree().unwrap();
        let id =
            |t: &git2::Tree<'_>, path: &str| t.get_path(std::path::Path::new(path)).unwrap().id();
        let toml = id(&root, "rollgate.toml");
        let sshd = repo.find_tree(id(&root, "files/sshd")).unwrap();
        let (v92, v96) = (id(&sshd, "9.2"), id(&sshd, "9.6"));
        let empty = raw_tree(&repo, &[]);
        let commit_of = |sshd_entries: &[(i32, &str, Oid)]| {
            let sshd = raw_tree(&repo, sshd_entries);
            let files = raw_tree(&repo, &[(0o40000, "sshd", sshd)]);
            let root = raw_tree(
                &repo,
                &[(0o100644, "rollgate.toml", toml), (0o40000, "files", files)],
            );
            let sig = Signature::new("t", "t@example.test", &git2::Time::new(0, 0)).unwrap();
            let parent = repo.find_commit(a).unwrap();
            let tree = repo.find_tree(root).unwrap();
            repo.commit(None, &sig, &sig, "crafted", &tree, &[&parent])
                .unwrap()
        };
        // 9.2 twice: the first as before, the second (what a lookup finds)
        // empty. Then the entries in reverse order.
        let twice = commit_of(&[
            (0o40000, "9.2", v92),
            (0o40000, "9.2", empty),
            (0o40000, "9.6", v96),
        ]);
        let reversed = commit_of(&[(0o40000, "9.6", v96), (0o40000, "9.2", empty)]);
        let snapshot = |id| Snapshot::of_commit(&repo, repo.find_commit(id).unwrap()).unwrap();
        for crafted in [twice, reversed] {
            let pushed = snapshot(crafted).changed_paths(&snapshot(a));
            let error = format!("{:#}", pushed.expect_err("a crafted tree was compared"));
            assert!(
                error.contains("lists a name twice or out of order"),
                "{error}"
            );
            // As the base, everything under the crafted tree counts as changed.
            let ours = snapshot(a)
                .changed_paths(&snapshot(crafted))
                .unwrap()
                .unwrap();
            for path in ["files/sshd/9.2/sshd_config", "files/sshd/9.6/sshd_config"] {
                assert!(ours.contains(path), "{path} not counted: {ours:?}");
            }
        }
    }
}
