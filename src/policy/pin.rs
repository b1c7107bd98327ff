//! `rollgate policy pin`: lock the commands down to what the deploy branch
//! runs now, in one step. Every argv of the branch tip's `rollgate.toml`
//! joins `allowed` and `commands` becomes `"pinned"`; the rest of the file,
//! comments included, stays as the admin wrote it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use git2::Repository;
use toml_edit::{Array, DocumentMut, Item, Value};

use crate::policy::{Commands, DEFAULT_TEXT, Policy, bounds};
use crate::source::repo::{Snapshot, short};
use crate::source::revision::Revision;

pub(crate) struct Pinned {
    pub(crate) path: PathBuf,
    /// The deploy branch's tip the commands came from.
    pub(crate) from: String,
    /// Argv templates that were not in `allowed` before.
    pub(crate) added: Vec<Vec<String>>,
    pub(crate) total: usize,
}

pub(crate) fn pin(repo: &Repository, policy: &Policy) -> Result<Pinned> {
    let Some(tip) = bounds::tip(repo, policy)? else {
        bail!(
            "the deploy branch {} has no commits yet: there are no commands to pin",
            policy.branch
        );
    };
    let rev = Revision::load(Snapshot::of_commit(repo, repo.find_commit(tip)?)?)
        .with_context(|| format!("cannot read the commands of {}", policy.branch))?;
    let mut allowed = policy.allowed.clone();
    let mut added = Vec::new();
    for service in &rev.config.services {
        let steps = std::iter::once(&service.check).chain(service.host_steps().map(|(_, a)| a));
        for argv in steps {
            let raw: Vec<String> = argv.iter().map(|t| t.raw().to_string()).collect();
            if !allowed.contains(&raw) {
                allowed.push(raw.clone());
                added.push(raw);
            }
        }
    }

    let path = &policy.path;
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DEFAULT_TEXT.to_string(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut doc: DocumentMut = text
        .parse()
        .with_context(|| format!("cannot parse {}", path.display()))?;
    set(&mut doc, "commands", Value::from("pinned"));
    set(&mut doc, "allowed", Value::Array(argv_array(&allowed)));
    let new_text = doc.to_string();

    // What is written must read back as exactly what was meant.
    let check = Policy::parse(&new_text, path)?;
    if check.commands != Commands::Pinned || check.allowed != allowed {
        bail!("rewriting {} went wrong; left it unchanged", path.display());
    }
    let dir = path.parent().context("the policy path has no directory")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(".policy.toml.rollgate-tmp");
    fs::write(&tmp, &new_text).with_context(|| format!("cannot write {}", tmp.display()))?;
    // The hook's user must still read it: keep the old mode, else 0644.
    let mode = fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Pinned {
        path: path.clone(),
        from: short(tip),
        added,
        total: allowed.len(),
    })
}

/// Sets a top-level key, keeping the old value's comments and spacing.
fn set(doc: &mut DocumentMut, key: &str, mut value: Value) {
    match doc.get_mut(key) {
        Some(Item::Value(old)) => {
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        _ => doc[key] = Item::Value(value),
    }
}

/// One argv per line, as a person would write the list.
fn argv_array(list: &[Vec<String>]) -> Array {
    let mut outer = Array::new();
    for argv in list {
        let mut inner: Array = argv.iter().map(String::as_str).collect();
        inner.fmt();
        let mut v = Value::Array(inner);
        v.decor_mut().set_prefix("\n    ");
        outer.push_formatted(v);
    }
    if !list.is_empty() {
        outer.set_trailing_comma(true);
        outer.set_trailing("\n");
    }
    outer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_keep_comments_and_read_back() {
        let mut doc: DocumentMut = DEFAULT_TEXT.parse().unwrap();
        set(&mut doc, "commands", Value::from("pinned"));
        let list = vec![
            vec!["rsync".to_string(), "-a".into(), "{dir}/".into()],
            vec!["true".to_string()],
        ];
        set(&mut doc, "allowed", Value::Array(argv_array(&list)));
        let text = doc.to_string();
        assert!(text.contains("# The deploy branch."), "{text}");
        assert!(
            text.contains("allowed = [\n    [\"rsync\", \"-a\", \"{dir}/\"],\n    [\"true\"],\n]"),
            "{text}"
        );
        let p = Policy::parse(&text, std::path::Path::new("p.toml")).unwrap();
        assert_eq!(p.commands, Commands::Pinned);
        assert_eq!(p.allowed, list);
    }
}
