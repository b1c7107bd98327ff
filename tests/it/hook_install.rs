//! `rollgate hook install` / `uninstall` on real bare repositories, judged by
//! the files and git settings they leave and by what a real push then runs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::{Env, ROLLGATE, SSHD_92, path_str};

const FOREIGN_HOOK: &str = "#!/bin/sh\n# the admin's own hook\necho foreign hook ran\nexit 0\n";

/// `git config --get KEY` in the bare repository: `None` when unset.
fn remote_config(env: &Env, key: &str) -> Option<String> {
    let out = env.git_in(&env.remote(), &["config", "--get", key]);
    out.success().then(|| out.stdout.trim().to_string())
}

/// A push of a broken sshd_config from a fresh clone: proves that git runs
/// rollgate's hook wherever it was installed.
#[track_caller]
fn assert_push_is_gated(env: &Env) {
    env.clone_repo();
    env.write_infra();
    env.append(SSHD_92, "NoSuchOption yes");
    env.commit("broken");
    let out = env.push(&[]);
    out.assert_failed()
        .assert_contains("Bad configuration option")
        .assert_contains("pre-receive hook declined");
    assert_eq!(env.remote_ref("refs/heads/main"), None, "{out}");
    env.assert_tmp_empty();
}

/// The names in `<repo>/hooks`, sorted.
fn hook_files(remote: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(remote.join("hooks"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn write_hook(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn install_writes_an_executable_shim_and_turns_on_push_options() {
    let env = Env::new();
    let remote = env.bare_repo_without_hook();

    let out = env.rollgate(&["hook", "install", "--repo", path_str(&remote)]);

    out.assert_ok().assert_contains("installed");
    let hook = remote.join("hooks/pre-receive");
    let text = fs::read_to_string(&hook).expect("hooks/pre-receive written");
    let binary = fs::canonicalize(ROLLGATE).unwrap();
    assert!(
        text.contains(&binary.display().to_string()),
        "the shim does not call the binary by its absolute path:\n{text}"
    );
    let mode = fs::metadata(&hook).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "the hook is not executable ({mode:o})");
    assert_eq!(
        remote_config(&env, "receive.advertisePushOptions").as_deref(),
        Some("true")
    );
    env.assert_tmp_empty();
}

#[test]
fn install_is_idempotent() {
    let env = Env::new();
    let remote = env.bare_repo();
    let hook = remote.join("hooks/pre-receive");
    let before = fs::read(&hook).unwrap();
    let mtime = fs::metadata(&hook).unwrap().modified().unwrap();
    let config_before = fs::read(remote.join("config")).unwrap();
    let hooks_before = hook_files(&remote);

    let again = env.rollgate(&["hook", "install", "--repo", path_str(&remote)]);
    // Without --repo: the repository the current directory is in.
    let from_inside = env.rollgate_in(&remote, &["hook", "install"]);

    for out in [&again, &from_inside] {
        out.assert_ok().assert_contains("already installed");
    }
    assert_eq!(fs::read(&hook).unwrap(), before, "the hook was rewritten");
    assert_eq!(
        fs::metadata(&hook).unwrap().modified().unwrap(),
        mtime,
        "the hook was rewritten"
    );
    assert_eq!(
        fs::read(remote.join("config")).unwrap(),
        config_before,
        "a second install changed the git config"
    );
    assert_eq!(
        hook_files(&remote),
        hooks_before,
        "a second install added or removed files in hooks/ (a backup of its own hook?)"
    );
    env.assert_tmp_empty();
}

#[test]
fn install_honours_an_absolute_core_hooks_path() {
    let env = Env::new();
    let remote = env.bare_repo_without_hook();
    let hooks = env.path("shared-hooks");
    env.git_ok(&remote, &["config", "core.hooksPath", path_str(&hooks)]);

    env.rollgate(&["hook", "install", "--repo", path_str(&remote)])
        .assert_ok();

    assert!(
        hooks.join("pre-receive").is_file(),
        "not written to core.hooksPath"
    );
    assert!(
        !remote.join("hooks/pre-receive").exists(),
        "written to hooks/ although core.hooksPath is set"
    );
    assert_push_is_gated(&env);
}

#[test]
fn install_honours_a_relative_core_hooks_path() {
    let env = Env::new();
    let remote = env.bare_repo_without_hook();
    // Relative to the bare repository, where git runs its hooks.
    env.git_ok(&remote, &["config", "core.hooksPath", "custom-hooks"]);

    env.rollgate(&["hook", "install", "--repo", path_str(&remote)])
        .assert_ok();

    assert!(
        remote.join("custom-hooks/pre-receive").is_file(),
        "not written to <repo>/custom-hooks"
    );
    assert!(!remote.join("hooks/pre-receive").exists());
    assert_push_is_gated(&env);
}

#[test]
fn install_refuses_a_foreign_hook_without_force() {
    let env = Env::new();
    let remote = env.bare_repo_without_hook();
    let hook = remote.join("hooks/pre-receive");
    write_hook(&hook, FOREIGN_HOOK);

    let out = env.rollgate(&["hook", "install", "--repo", path_str(&remote)]);

    out.assert_failed().assert_contains("--force");
    assert_eq!(
        fs::read_to_string(&hook).unwrap(),
        FOREIGN_HOOK,
        "clobbered"
    );
    env.assert_tmp_empty();
}

/// A multi-hook driver as gitolite's repo-specific hooks install one: it
/// runs every `NAME.*` beside it, stopping at the first that fails.
const DRIVER: &str = "#!/bin/sh\n# runs every hook named after this one, in order\ninput=$(cat)\n\
for h in $0.*; do [ -x \"$h\" ] || continue; printf '%s\\n' \"$input\" | \"$h\" || exit 1; done\n";

/// Not even --force installs over gitolite's driver: `gitolite setup` would
/// put it back over the shim, and pushes would then land unchecked. A
/// driver as post-receive is kept (the lock keeper publishes instead).
#[test]
fn install_refuses_a_multi_hook_driver_even_with_force() {
    let env = Env::new();
    let remote = env.bare_repo_without_hook();
    let hook = remote.join("hooks/pre-receive");
    write_hook(&hook, DRIVER);
    let before = hook_files(&remote);

    let out = env.rollgate(&["hook", "install", "--force", "--repo", path_str(&remote)]);

    out.assert_code(2)
        .assert_contains("is a multi-hook driver (gitolite's repo-specific hooks)")
        .assert_contains("hint: add rollgate as the last repo-specific pre-receive hook")
        .assert_contains("option hook.pre-receive = ... rollgate");
    assert_eq!(fs::read_to_string(&hook).unwrap(), DRIVER, "clobbered");
    assert_eq!(hook_files(&remote), before, "a file was added or moved");

    fs::remove_file(&hook).unwrap();
    let post = remote.join("hooks/post-receive");
    write_hook(&post, DRIVER);
    let out = env.rollgate(&["hook", "install", "--force", "--repo", path_str(&remote)]);
    out.assert_ok().assert_contains("kept your");
    assert_eq!(fs::read_to_string(&post).unwrap(), DRIVER, "clobbered");
    assert!(
        fs::read_to_string(&hook)
            .unwrap()
            .contains("rollgate-managed")
    );
    env.assert_tmp_empty();
}

#[test]
fn force_keeps_a_backup_and_uninstall_restores_it() {
    let env = Env::new();
    let remote = env.bare_repo_without_hook();
    let hook = remote.join("hooks/pre-receive");
    write_hook(&hook, FOREIGN_HOOK);

    let out = env.rollgate(&["hook", "install", "--force", "--repo", path_str(&remote)]);

    out.assert_ok();
    let said = out.lines_with(&["kept"]);
    let backup = said
        .iter()
        .flat_map(|l| l.split_whitespace())
        .map(Path::new)
        .find(|p| p.is_absolute() && p.is_file())
        .unwrap_or_else(|| panic!("install --force does not say where the backup is\n{out}"));
    assert_eq!(fs::read_to_string(backup).unwrap(), FOREIGN_HOOK);
    let ours = fs::read_to_string(&hook).unwrap();
    assert!(
        ours.contains("rollgate"),
        "the hook is not rollgate's:\n{ours}"
    );
    assert_eq!(
        remote_config(&env, "receive.advertisePushOptions").as_deref(),
        Some("true")
    );

    let out = env.rollgate(&["hook", "uninstall", "--repo", path_str(&remote)]);

    out.assert_ok().assert_contains("restored");
    assert_eq!(
        fs::read_to_string(&hook).unwrap(),
        FOREIGN_HOOK,
        "the admin's hook is not back\n{out}"
    );
    assert!(
        !backup.exists(),
        "the backup is still there after restoring it"
    );
    assert_eq!(
        remote_config(&env, "receive.advertisePushOptions"),
        None,
        "uninstall left the setting install made\n{out}"
    );
    let left = env.git_in(&remote, &["config", "--get-regexp", "^rollgate\\."]);
    assert!(
        left.stdout.trim().is_empty(),
        "uninstall left rollgate's bookkeeping in the git config\n{left}"
    );
    env.assert_tmp_empty();
}

#[test]
fn uninstall_removes_the_hook_and_the_setting_it_made() {
    let env = Env::new();
    let remote = env.bare_repo();

    let out = env.rollgate(&["hook", "uninstall", "--repo", path_str(&remote)]);

    out.assert_ok().assert_contains("removed");
    assert!(!remote.join("hooks/pre-receive").exists());
    assert_eq!(remote_config(&env, "receive.advertisePushOptions"), None);
    // A push now lands unchecked: nothing of rollgate is left in the way.
    env.clone_repo();
    env.write_infra();
    env.append(SSHD_92, "NoSuchOption yes");
    let id = env.commit("unchecked");
    let out = env.push(&[]);
    out.assert_ok();
    assert!(out.remote_lines().is_empty(), "a hook still spoke\n{out}");
    assert_eq!(
        env.remote_ref("refs/heads/main").as_deref(),
        Some(id.as_str())
    );
    env.assert_tmp_empty();
}

#[test]
fn uninstall_keeps_a_push_options_setting_it_did_not_make() {
    let env = Env::new();
    let remote = env.bare_repo_without_hook();
    env.git_ok(&remote, &["config", "receive.advertisePushOptions", "true"]);
    env.rollgate(&["hook", "install", "--repo", path_str(&remote)])
        .assert_ok();

    env.rollgate(&["hook", "uninstall", "--repo", path_str(&remote)])
        .assert_ok();

    assert_eq!(
        remote_config(&env, "receive.advertisePushOptions").as_deref(),
        Some("true"),
        "uninstall removed a setting the admin had made"
    );
    env.assert_tmp_empty();
}

#[test]
fn uninstall_leaves_a_foreign_hook_alone() {
    let env = Env::new();
    let remote = env.bare_repo_without_hook();
    let hook = remote.join("hooks/pre-receive");
    write_hook(&hook, FOREIGN_HOOK);

    let out = env.rollgate(&["hook", "uninstall", "--repo", path_str(&remote)]);

    out.assert_failed();
    assert_eq!(fs::read_to_string(&hook).unwrap(), FOREIGN_HOOK);
    env.assert_tmp_empty();
}

/// `hook install --pre-push` in a clone checks exactly what is pushed: a
/// broken HEAD is stopped before git sends anything, a good older commit
/// pushed from the same clone passes, a deletion is not checked, and the
/// hook refuses to go into a bare repository.
#[test]
fn pre_push_checks_exactly_the_commits_being_pushed() {
    let env = Env::new();
    let good = env.pushed_infra();
    let work = env.work();
    let work_str = path_str(&work);
    env.rollgate(&["hook", "install", "--pre-push", "--repo", work_str])
        .assert_ok()
        .assert_contains("pre-push");
    env.append(SSHD_92, "NoSuchOption yes");
    let broken = env.commit("broken");

    // HEAD is broken: the client-side hook says so, and the server never
    // sees the commit (its pre-receive would have printed `remote:` lines).
    let out = env.push(&[]);
    out.assert_failed()
        .assert_contains("Bad configuration option")
        .assert_contains("failed to push")
        .assert_lacks("remote:");
    assert_eq!(env.remote_ref("refs/heads/main").as_deref(), Some(&*good));

    // The good older commit, pushed from the broken clone to a side branch:
    // checked as itself, not as HEAD.
    let out = env.git_push(&["origin", &format!("{good}:refs/heads/side")]);
    out.assert_ok().assert_lacks("Bad configuration option");
    assert_eq!(env.remote_ref("refs/heads/side").as_deref(), Some(&*good));

    // Deleting a ref sends no commit: nothing to check, even from here.
    env.git_push(&["origin", ":refs/heads/side"]).assert_ok();
    assert_eq!(env.remote_ref("refs/heads/side"), None);

    // Uninstalled, the broken commit reaches the server, which refuses it.
    env.rollgate(&["hook", "uninstall", "--pre-push", "--repo", work_str])
        .assert_ok();
    assert!(!work.join(".git/hooks/pre-push").exists());
    let out = env.push(&[]);
    out.assert_failed().assert_contains("remote:");
    assert_ne!(env.remote_ref("refs/heads/main").as_deref(), Some(&*broken));

    let remote = env.remote();
    env.rollgate(&["hook", "install", "--pre-push", "--repo", path_str(&remote)])
        .assert_code(2)
        .assert_contains("bare repository")
        .assert_contains("hint:");
    env.assert_tmp_empty();
}
