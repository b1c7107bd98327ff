//! What git checks after the pre-receive hook (issue 10), through real
//! pushes: the repository's `update` hook, `receive.denyNonFastForwards`,
//! `receive.denyDeletes`, `receive.denyCurrentBranch`; the deploy lock held
//! until git has moved the refs (two pushes racing behind a slow `update`
//! hook); push options of other tools on refs rollgate passes untouched;
//! `hook install` on a non-bare repository. Judged by what the pusher saw,
//! where the refs are, the journal and the files on the hosts.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::fleet::{Fleet, MAIN, Running, Spec, Tree, cwd_of, sh, wait_until};
use crate::servers::Served;
use crate::support::{Env, SSHD_92, SSHD_96, path_str};

const FARM: [&str; 3] = ["server01", "server02", "server03"];
const HOSTS: [&str; 4] = ["server04", "server01", "server02", "server03"];

/// Writes `script` as the bare repository's `hooks/update`, executable.
fn update_hook(f: &Fleet, script: &str) {
    let path = f.env.remote().join("hooks/update");
    fs::write(&path, script).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn trees(f: &Fleet) -> Vec<Tree> {
    HOSTS.iter().map(|h| f.tree(h)).collect()
}

fn set_remote_config(f: &Fleet, key: &str, value: &str) {
    f.env.git_ok(&f.env.remote(), &["config", key, value]);
}

/// The bytes of `rel` at what `rev` names in the bare repository.
fn remote_file(env: &Env, rev: &str, rel: &str) -> Vec<u8> {
    let out = env
        .command("git")
        .current_dir(env.remote())
        .args(["cat-file", "blob", &format!("{rev}:{rel}")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "no {rev}:{rel} in the bare repository"
    );
    out.stdout
}

/// The keepers (`rollgate hook keep-lock`) still running for this
/// repository.
fn keepers(f: &Fleet) -> Vec<String> {
    let remote = f.env.remote().canonicalize().unwrap();
    f.env
        .processes_matching("hook keep-lock")
        .into_iter()
        .filter(|l| {
            l.split_whitespace()
                .next()
                .and_then(|p| p.parse().ok())
                .and_then(cwd_of)
                .is_some_and(|c| c == remote)
        })
        .collect()
}

// ---- the update hook ---------------------------------------------------------

/// gitolite's way: the `update` hook decides who may write which ref. Here
/// it logs what it got and refuses erin anything but `dev/`, the way
/// gitolite words it.
const GITOLITE_LIKE: &str = r#"#!/bin/sh
echo "$1 $2 $3 user=${GL_USER-unset} options=${GIT_PUSH_OPTION_COUNT-unset} stdin=$(readlink /proc/self/fd/0)" >> "$GIT_DIR/update.log"
echo "update hook says: checking $1 for ${GL_USER-nobody}"
case "$GL_USER:$1" in
  erin:refs/heads/dev/*) exit 0 ;;
  erin:*) echo "FATAL: W $1 infra erin DENIED by fallthru" >&2; exit 1 ;;
esac
exit 0
"#;

/// `git push ARGS` from the clone as gitolite user `user` (`GL_USER`).
fn push_as_user(f: &Fleet, user: &str, args: &[&str]) -> crate::support::Outcome {
    let mut cmd = f.env.command("git");
    cmd.current_dir(f.env.work())
        .arg("push")
        .args(args)
        .env("GL_USER", user);
    f.env.run(cmd)
}

#[test]
fn an_update_hook_refusing_a_ref_rejects_the_push_before_any_host_is_touched() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    update_hook(&f, GITOLITE_LIKE);
    let before = trees(&f);
    let b = f.change("b");

    // erin may not write main: nothing of her push may reach a host.
    let out = push_as_user(&f, "erin", &["-o", "all", "origin", "main"]);
    f.assert_rejected(&out, Some(&a));
    out.assert_contains("FATAL: W refs/heads/main infra erin DENIED by fallthru")
        .assert_contains("update hook says: checking refs/heads/main for erin")
        .assert_contains("update hook")
        .assert_contains("nothing was deployed");
    assert_eq!(trees(&f), before, "a host changed\n{out}");
    assert_eq!(f.runs().len(), 1, "{:#?}", f.runs());

    // Nor refs/deploy/all (of main's tip, which the policy would deploy).
    let out = push_as_user(&f, "erin", &["origin", &format!("{a}:refs/deploy/all")]);
    out.assert_code(1)
        .assert_contains("FATAL: W refs/deploy/all infra erin DENIED by fallthru");
    assert_eq!(f.env.remote_ref("refs/deploy/all"), None);
    assert_eq!(trees(&f), before, "a host changed\n{out}");
    assert_eq!(f.runs().len(), 1, "{:#?}", f.runs());

    // A branch she may write passes, untouched by rollgate.
    push_as_user(&f, "erin", &["origin", "HEAD:refs/heads/dev/x"]).assert_ok();
    assert_eq!(f.env.remote_ref("refs/heads/dev/x").as_deref(), Some(&*b));

    // alice may: the hook passes, the push deploys and lands.
    let out = push_as_user(&f, "alice", &["-o", "group=farm", "origin", "main"]);
    f.assert_landed(&out, &b);
    for h in FARM {
        f.assert_on(h, &b, SSHD_92);
    }
    f.assert_on("server04", &a, SSHD_96);

    // What the hook got: git's arguments, no stdin, no push options (git
    // gives the update hook none), the pusher's environment. rollgate ran
    // it before deploying, git once more after; a push rollgate passes
    // untouched leaves it to git alone.
    let log = fs::read_to_string(f.env.remote().join("update.log")).unwrap();
    let zeros = "0".repeat(40);
    let line_to = |refname: &str, old: &str, new: &str, user: &str| {
        format!("{refname} {old} {new} user={user} options=unset stdin=/dev/null")
    };
    let line = |refname: &str, old: &str, user: &str| line_to(refname, old, &b, user);
    let count = |l: &str| log.lines().filter(|x| *x == l).count();
    assert_eq!(count(&line(MAIN, &a, "erin")), 1, "{log}");
    assert_eq!(
        count(&line_to("refs/deploy/all", &zeros, &a, "erin")),
        1,
        "{log}"
    );
    assert_eq!(count(&line("refs/heads/dev/x", &zeros, "erin")), 1, "{log}");
    assert_eq!(count(&line(MAIN, &a, "alice")), 2, "{log}");
    assert_eq!(log.lines().count(), 5, "{log}");
    f.assert_clean();
}

/// `core.hooksPath` (relative: to the bare repository, where git runs push
/// hooks) is where git finds the `update` hook, and so does rollgate.
#[test]
fn the_update_hook_is_found_through_core_hooks_path() {
    let f = Fleet::new();
    let remote = f.env.bare_repo_without_hook();
    f.env
        .git_ok(&remote, &["config", "core.hooksPath", "custom-hooks"]);
    f.env
        .rollgate(&["hook", "install", "--repo", path_str(&remote)])
        .assert_ok();
    assert!(remote.join("custom-hooks/pre-receive").is_file());
    f.env.clone_repo();
    f.env.write_infra();
    f.write_spec(&Spec::standard());
    let a = f.env.commit("initial config");
    f.assert_landed(&f.env.push(&[]), &a);
    let hook = remote.join("custom-hooks/update");
    fs::write(
        &hook,
        "#!/bin/sh\necho \"custom update hook: no $1\" >&2\nexit 7\n",
    )
    .unwrap();
    fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
    let before = trees(&f);
    f.change("b");

    let out = f.env.push(&[]);
    f.assert_rejected(&out, Some(&a));
    out.assert_contains("custom update hook: no refs/heads/main")
        .assert_contains("exit status 7");
    assert_eq!(trees(&f), before, "a host changed\n{out}");
    f.assert_clean();
}

// ---- git's own refusals ---------------------------------------------------------

/// `receive.denyNonFastForwards`: a forced rewind of `main` is refused
/// before any host changes. git applies it to branches only, so a forced
/// rollback through `refs/deploy/farm` is one git accepts: it deploys, and
/// the ref moves with the hosts.
#[test]
fn deny_non_fast_forwards_refuses_a_forced_rewind_of_main_before_any_host_changes() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    let b = f.change("b");
    f.assert_landed(&f.env.push(&[]), &b);
    f.env
        .git_push(&["origin", &format!("{b}:refs/deploy/farm")])
        .assert_ok();
    for h in FARM {
        f.assert_on(h, &b, SSHD_92);
    }
    set_remote_config(&f, "receive.denyNonFastForwards", "true");
    let before = trees(&f);
    let runs = f.runs().len();

    let out = f.env.git_push(&["-f", "origin", &format!("{a}:main")]);
    f.assert_rejected(&out, Some(&b));
    out.assert_contains("receive.denyNonFastForwards")
        .assert_contains("nothing was deployed")
        .assert_contains("hint: ");
    assert_eq!(trees(&f), before, "a host changed\n{out}");
    assert_eq!(f.runs().len(), runs, "{:#?}", f.runs());

    let out = f
        .env
        .git_push(&["-f", "origin", &format!("{a}:refs/deploy/farm")]);
    out.assert_ok();
    assert_eq!(f.env.remote_ref("refs/deploy/farm").as_deref(), Some(&*a));
    for h in FARM {
        f.assert_on(h, &a, SSHD_92);
    }
    f.assert_on("server04", &b, SSHD_96);
    assert_eq!(f.env.remote_ref(MAIN).as_deref(), Some(&*b));
    f.assert_clean();
}

/// `receive.denyDeletes`: a push that deploys `main` and deletes a branch
/// is refused as a whole before any host changes (git would refuse the
/// deletion after the hook).
#[test]
fn deny_deletes_refuses_a_deploying_push_that_deletes_a_branch() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    f.env
        .git_push(&["origin", "HEAD:refs/heads/feature"])
        .assert_ok();
    set_remote_config(&f, "receive.denyDeletes", "true");
    let before = trees(&f);
    f.change("b");

    let out = f.env.git_push(&["origin", "main", ":refs/heads/feature"]);
    f.assert_rejected(&out, Some(&a));
    out.assert_contains("refs/heads/feature")
        .assert_contains("receive.denyDeletes");
    assert_eq!(f.env.remote_ref("refs/heads/feature").as_deref(), Some(&*a));
    assert_eq!(trees(&f), before, "a host changed\n{out}");
    assert_eq!(f.runs().len(), 1, "{:#?}", f.runs());
    f.assert_clean();
}

/// `receive.denyCurrentBranch`: `main` checked out in a linked work tree of
/// the bare repository: git refuses to move it, so rollgate deploys nothing;
/// with the setting `ignore`, git moves it and the push deploys.
#[test]
fn deny_current_branch_refuses_a_branch_checked_out_in_a_work_tree() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    let checkout = f.env.path("checkout");
    f.env.git_ok(
        &f.env.remote(),
        &["worktree", "add", "-q", "-f", path_str(&checkout), "main"],
    );
    let before = trees(&f);
    let b = f.change("b");

    let out = f.env.push(&[]);
    f.assert_rejected(&out, Some(&a));
    out.assert_contains("checked out")
        .assert_contains("receive.denyCurrentBranch");
    assert_eq!(trees(&f), before, "a host changed\n{out}");

    set_remote_config(&f, "receive.denyCurrentBranch", "ignore");
    let out = f.env.push(&[]);
    f.assert_landed(&out, &b);
    f.assert_on("server04", &b, SSHD_96);
    f.assert_clean();
}

#[test]
fn hook_install_refuses_a_non_bare_repository() {
    let env = Env::new();
    let repo = env.path("nonbare");
    env.git_ok(env.root(), &["init", "-q", "-b", "main", path_str(&repo)]);

    let out = env.rollgate(&["hook", "install", "--repo", path_str(&repo)]);
    out.assert_code(2)
        .assert_contains("not a bare repository")
        .assert_contains("hint: ")
        .assert_contains("git clone --bare");
    assert!(!repo.join(".git/hooks/pre-receive").exists());
    let setting = env.git_in(&repo, &["config", "receive.advertisePushOptions"]);
    assert!(!setting.success(), "install changed the config\n{setting}");
    env.assert_tmp_empty();
}

// ---- push options of other tools ------------------------------------------------

/// `-o ci.skip` is GitLab's: a push rollgate passes untouched ignores it; a
/// push rollgate acts on is still refused, naming what rollgate knows.
#[test]
fn other_tools_push_options_pass_on_refs_rollgate_leaves_alone() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    let before = trees(&f);
    let b = f.change("b");

    let out = f
        .env
        .git_push(&["-o", "ci.skip", "origin", "HEAD:refs/heads/feature"]);
    out.assert_ok().assert_contains("passed untouched");
    assert_eq!(f.env.remote_ref("refs/heads/feature").as_deref(), Some(&*b));

    let out = f.env.push(&["-o", "ci.skip"]);
    f.assert_rejected(&out, Some(&a));
    out.assert_contains("ci.skip").assert_contains("group=NAME");
    assert_eq!(trees(&f), before, "a host changed\n{out}");
    f.assert_clean();
}

// ---- the lock until git has moved the refs ------------------------------------------

/// Two clones push `main` at once, behind an `update` hook that takes a
/// second (which rollgate runs too, then git again): the push that waited
/// for the lock must see `main` moved and deploy nothing, so the canary
/// always ends on what `main` names. 20 rounds of two racing pushes, on two
/// fleets side by side (the rounds mostly sleep in the hook).
#[test]
fn two_racing_pushes_behind_a_slow_update_hook_leave_the_host_on_what_main_names() {
    std::thread::scope(|s| {
        let fleets: Vec<_> = [0, 10]
            .into_iter()
            .map(|first| s.spawn(move || race(first..first + 10)))
            .collect();
        for fleet in fleets {
            fleet.join().unwrap();
        }
    });
}

fn race(rounds: std::ops::Range<u32>) {
    let f = Fleet::new();
    f.start(&Spec::standard());
    update_hook(&f, "#!/bin/sh\nsleep 1\n");
    let work2 = f.env.path("work2");
    f.env.git_ok(
        f.env.root(),
        &["clone", "-q", path_str(&f.env.remote()), path_str(&work2)],
    );
    let clones = [f.env.work(), work2];
    for round in rounds {
        let mut pushes = Vec::new();
        for (i, clone) in clones.iter().enumerate() {
            f.env.git_ok(clone, &["fetch", "-q", "origin"]);
            f.env
                .git_ok(clone, &["reset", "-q", "--hard", "origin/main"]);
            let file = clone.join(SSHD_96);
            let mut text = fs::read_to_string(&file).unwrap();
            text.push_str(&format!("# round {round} clone {i}\n"));
            fs::write(&file, text).unwrap();
            f.env
                .git_ok(clone, &["commit", "-q", "-am", &format!("round {round}")]);
            let mut cmd = f.env.command("git");
            cmd.current_dir(clone).args(["push", "origin", "main"]);
            pushes.push(cmd);
        }
        let running: Vec<Running> = pushes.into_iter().map(Running::spawn).collect();
        let outs: Vec<_> = running.into_iter().map(Running::finish).collect();
        let main = f.env.remote_ref(MAIN).unwrap();
        let on_main = remote_file(&f.env, &main, SSHD_96);
        let deployed = f.deployed("server04");
        assert!(
            deployed.as_deref() == Some(on_main.as_slice()),
            "round {round}: the canary does not run what main names ({})\n{}\n{}",
            &main[..10],
            outs[0],
            outs[1]
        );
        let ok = outs.iter().filter(|o| o.success()).count();
        assert_eq!(ok, 1, "round {round}\n{}\n{}", outs[0], outs[1]);
        let lost = outs.iter().find(|o| !o.success()).unwrap();
        lost.assert_contains("while this push waited for the deploy lock")
            .assert_lacks("cannot lock ref");
    }
    wait_until("every keeper to end with its receive-pack", || {
        keepers(&f).is_empty()
    });
    f.assert_clean();
}

/// One push, two refs that deploy (`main` and `refs/deploy/farm`): the
/// first run keeps the lock for the rest of the push, and the second run,
/// in the same hook, uses it instead of waiting for it.
#[test]
fn a_push_deploying_two_refs_takes_the_lock_once() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.top.push("lock_wait = \"3s\"".into());
    let a = f.start(&spec);
    let b = f.change("b");

    // The deploy ref takes a revision main already holds: the policy lets
    // refs/deploy/NAME deploy only those (main may still be refused).
    let out = f
        .env
        .git_push(&["origin", "main", &format!("{a}:refs/deploy/farm")]);
    f.assert_landed(&out, &b);
    out.assert_lacks("waiting");
    assert_eq!(f.env.remote_ref("refs/deploy/farm").as_deref(), Some(&*a));
    f.assert_on("server04", &b, SSHD_96);
    for h in FARM {
        f.assert_on(h, &a, SSHD_92);
    }
    wait_until("the keeper to end", || keepers(&f).is_empty());
    f.assert_clean();
}

/// While git runs the `update` hook after rollgate's hook has exited, the
/// deploy lock is still held, by the keeper, which waits for that very
/// receive-pack; also when rollgate's shim is started by a wrapper hook
/// (as gitolite's multi-hook driver does) rather than by git directly.
#[test]
fn the_lock_is_held_while_git_runs_the_update_hook_even_behind_a_wrapper() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    let hooks = f.env.remote().join("hooks");
    fs::rename(
        hooks.join("pre-receive"),
        hooks.join("pre-receive.rollgate"),
    )
    .unwrap();
    let wrapper = hooks.join("pre-receive");
    fs::write(
        &wrapper,
        "#!/bin/sh\n\"$(dirname \"$0\")/pre-receive.rollgate\" \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    // git's own run of the update hook (no quarantine any more) looks.
    update_hook(
        &f,
        r#"#!/bin/sh
test -n "$GIT_QUARANTINE_PATH" && exit 0
{
  echo "receive-pack $PPID"
  pgrep -a -f "hook keep-lock"
  if flock -n rollgate/lock true; then echo "lock free"; else echo "lock held"; fi
} > seen
"#,
    );
    let b = f.change("b");
    let out = f.env.push(&[]);
    f.assert_landed(&out, &b);
    f.assert_on("server04", &b, SSHD_96);
    assert_ne!(a, b);

    let seen = fs::read_to_string(f.env.remote().join("seen")).unwrap();
    let receive_pack = seen
        .lines()
        .find_map(|l| l.strip_prefix("receive-pack "))
        .unwrap_or_else(|| panic!("{seen}"));
    assert!(
        seen.lines().any(|l| l == "lock held"),
        "the lock was free while git ran the update hook:\n{seen}"
    );
    assert!(
        seen.lines()
            .any(|l| l.contains("hook keep-lock") && l.contains(&format!("--pid {receive_pack} "))),
        "no keeper waiting for receive-pack {receive_pack}:\n{seen}"
    );
    wait_until("the keeper to end", || keepers(&f).is_empty());
    f.assert_clean();
}

/// The keeper never outlives receive-pack, whether the push landed or was
/// refused after the hook took the lock (a failing deploy).
#[test]
fn the_lock_keeper_ends_with_receive_pack() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    let a = f.start(&spec);
    wait_until("the first push's keeper to end", || keepers(&f).is_empty());
    spec.deploy = sh("echo cannot reach {host} >&2; exit 3");
    f.write_spec(&spec);
    f.env.commit("a deploy that fails");
    let out = f.env.push(&[]);
    f.assert_rejected(&out, Some(&a));
    out.assert_contains("cannot reach server04");
    wait_until("the failed push's keeper to end", || keepers(&f).is_empty());
    f.assert_clean();
}

// ---- gitolite ----------------------------------------------------------------------

/// A real gitolite3 over ssh: erin may write only `dev/`. Her push of
/// `main` with `-o all`, and of `refs/deploy/all`, is DENIED by gitolite's
/// `update` hook, which rollgate runs before deploying: no host touched,
/// gitolite's words shown, no run journaled. alice's push still deploys,
/// so the hook did not just refuse everything.
#[test]
fn gitolite_denies_erin_main_and_deploy_all_and_no_host_is_touched() {
    let (mut s, a, b) = Served::gitolite_denial_scenario(&Spec::standard());
    let before = trees(&s.fleet);
    let runs = s.fleet.runs().len();

    let out = s.push_as("erin", &["-o", "all"], &["main"]);
    s.assert_refused(&out, MAIN, Some(&a));
    out.assert_contains("DENIED")
        .assert_contains("update hook")
        .assert_contains("nothing was deployed")
        .assert_lacks("deploying");
    assert_eq!(trees(&s.fleet), before, "a host changed\n{out}");

    let out = s.push_as("erin", &[], &[&format!("{a}:refs/deploy/all")]);
    s.assert_refused(&out, "refs/deploy/all", None);
    out.assert_contains("DENIED").assert_lacks("deploying");
    assert_eq!(trees(&s.fleet), before, "a host changed\n{out}");
    assert_eq!(s.fleet.runs().len(), runs, "{:#?}", s.fleet.runs());

    let out = s.push_as("alice", &["-o", "group=farm"], &["main"]);
    s.assert_landed(&out, MAIN, &b);
    for h in FARM {
        s.fleet.assert_on(h, &b, SSHD_92);
    }
    assert_eq!(s.whos(), ["alice", "alice"]);
    s.assert_clean();
}
