//! The server's policy (`rollgate/policy.toml` in the bare repository) as
//! pushers and admins meet it: every finding of issue 9 that the policy
//! answers, replayed through real pushes and judged by what landed, what
//! ran, what the hosts hold and what the journal says.

use std::fs;
use std::path::PathBuf;

use crate::fleet::{Fleet, MAIN, Spec, timed_deploy};
use crate::support::{Env, Outcome, SSHD_92, SSHD_96, path_str};

fn policy_path(env: &Env) -> PathBuf {
    env.remote().join("rollgate/policy.toml")
}

/// Replaces `from` (which must occur) with `to` in the server's policy.
#[track_caller]
fn edit_policy(env: &Env, from: &str, to: &str) {
    let path = policy_path(env);
    let text = fs::read_to_string(&path).expect("the policy file");
    assert!(text.contains(from), "the policy lacks {from:?}:\n{text}");
    fs::write(&path, text.replace(from, to)).expect("write the policy");
}

/// `rollgate ARGS --repo BARE`.
fn rollgate_on_remote(env: &Env, args: &[&str]) -> Outcome {
    let remote = env.remote();
    let mut all = args.to_vec();
    all.extend(["--repo", path_str(&remote)]);
    env.rollgate(&all)
}

// ---- the deploy branch is the server's ------------------------------------------

/// Finding: `branch = "elsewhere"` in a commit made main "not the deploy
/// branch", so a broken sshd_config landed on main unchecked.
#[test]
fn branch_in_a_pushed_rollgate_toml_is_an_error_and_main_stays_checked() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.replace(
        "rollgate.toml",
        "default_group = \"canary\"",
        "branch = \"elsewhere\"\ndefault_group = \"canary\"",
    );
    env.append(SSHD_92, "NoSuchOption yes");
    env.commit("skip my own checks");

    let out = env.push(&[]);

    out.assert_code(1)
        .assert_contains("pre-receive hook declined")
        .assert_contains("`branch` moved to rollgate/policy.toml in the bare repository")
        .assert_lacks("passed untouched");
    assert_eq!(env.remote_ref(MAIN).as_deref(), Some(good.as_str()));

    // Without the key, the same broken file is checked and refused.
    env.replace("rollgate.toml", "branch = \"elsewhere\"\n", "");
    env.commit("the same broken sshd_config, no branch key");
    let out = env.push(&[]);
    out.assert_code(1)
        .assert_dir_line("FAILED", "sshd 9.2", "files/sshd/9.2");
    assert_eq!(env.remote_ref(MAIN).as_deref(), Some(good.as_str()));
    env.assert_tmp_empty();
}

/// Finding: a feature branch whose rollgate.toml said `branch = "feature"`
/// was checked and deployed to every host with `-o all`. Now nothing of a
/// non-deploy branch runs: its config is not even read.
#[test]
fn a_feature_branch_with_its_own_config_runs_nothing_even_with_all() {
    let f = Fleet::new();
    f.start(&Spec::standard());
    let hosts_before = f.hosts_listing();
    let canary_before = f.tree("server04");
    let journal_before = f.journal().len();
    let marker = f.env.path("ran");
    let run = |what: &str| format!(r#"["sh", "-c", "echo {what} >> {}"]"#, path_str(&marker));
    f.env
        .git_ok(&f.env.work(), &["checkout", "-q", "-b", "feature"]);
    f.env.write(
        "rollgate.toml",
        &format!(
            "branch = \"feature\"\ndefault_group = \"canary\"\n\n\
             [services.sshd]\nsource = \"files/sshd/{{version}}\"\ncheck = {}\ndeploy = {}\n\n\
             [groups.canary]\nhosts = [\"server04\"]\nvars = {{ version = \"9.6\" }}\n\n\
             [groups.farm]\nhosts = [\"server01\"]\nvars = {{ version = \"9.2\" }}\n",
            run("check"),
            run("deploy")
        ),
    );
    f.env.append(SSHD_96, "NoSuchOption yes");
    let id = f
        .env
        .commit("a feature branch that names itself the deploy branch");

    let out = f
        .env
        .git_push(&["-o", "all", "origin", "HEAD:refs/heads/feature"]);

    out.assert_ok()
        .assert_contains("refs/heads/feature: not the deploy branch (main), passed untouched")
        .assert_lacks("FAILED")
        .assert_lacks("deploying");
    assert_eq!(
        f.env.remote_ref("refs/heads/feature").as_deref(),
        Some(id.as_str())
    );
    assert!(!marker.exists(), "a check or deploy of the feature ran");
    assert_eq!(f.hosts_listing(), hosts_before);
    assert_eq!(f.tree("server04"), canary_before);
    assert_eq!(f.journal().len(), journal_before, "the journal grew");
    f.assert_clean();
}

/// Finding: `git push origin X:refs/deploy/canary` deployed a commit that
/// was never on the deploy branch.
#[test]
fn deploy_ref_refuses_a_revision_not_on_main_unless_unmerged() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    f.env
        .git_ok(&f.env.work(), &["checkout", "-q", "-b", "side"]);
    let x = f.change("never merged");
    let refspec = format!("{x}:refs/deploy/canary");

    let out = f.env.git_push(&["origin", &refspec]);

    out.assert_code(1)
        .assert_contains("pre-receive hook declined")
        .assert_contains(&format!("{} is not on the deploy branch main", &x[..10]))
        .assert_contains("unmerged = true");
    f.assert_on("server04", &a, SSHD_96);
    // The ref names what canary runs (published after the first push).
    assert_eq!(
        f.env.remote_ref("refs/deploy/canary").as_deref(),
        Some(a.as_str())
    );

    // The admin allows unmerged revisions: the same push deploys.
    edit_policy(&f.env, "unmerged = false", "unmerged = true");
    let out = f.env.git_push(&["origin", &refspec]);
    out.assert_ok();
    f.assert_on("server04", &x, SSHD_96);
    f.assert_clean();
}

/// Rollbacks over git to earlier revisions of the deploy branch keep working.
#[test]
fn rollback_over_git_to_an_earlier_revision_of_main_still_works() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    let b = f.change("b");
    f.assert_landed(&f.env.push(&[]), &b);
    f.assert_on("server04", &b, SSHD_96);

    let out = f
        .env
        .git_push(&["-f", "origin", &format!("{a}:refs/deploy/canary")]);

    out.assert_ok();
    f.assert_on("server04", &a, SSHD_96);
    assert_eq!(f.env.remote_ref(MAIN).as_deref(), Some(b.as_str()));
    f.assert_clean();
}

// ---- who is pushing -----------------------------------------------------------------

/// Finding: `pusher_env` came from the pushed file, so the pusher chose
/// their own `who`; gitolite's GL_USER was not read.
#[test]
fn pusher_env_in_a_pushed_file_is_an_error_and_who_comes_from_the_policy() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    f.start(&spec);
    spec.top.push("pusher_env = [\"LANG\"]".into());
    f.write_spec(&spec);
    let before = f.env.remote_ref(MAIN);
    f.env.commit("let me say who I am");

    let out = f.push_as(&[("LANG", "the-ceo")], &[]);

    f.assert_rejected(&out, before.as_deref());
    out.assert_contains("`pusher_env` moved to rollgate/policy.toml in the bare repository");
    assert!(
        f.journal().iter().all(|r| r["who"] != "the-ceo"),
        "{:#?}",
        f.journal()
    );

    // GL_USER (gitolite) comes first in the default pusher_env.
    spec.top.clear();
    f.write_spec(&spec);
    let b = f.change("b");
    let out = f.push_as(&[("GL_USER", "alice"), ("GL_USERNAME", "bob")], &[]);
    f.assert_landed(&out, &b);
    assert_eq!(f.runs().last().unwrap().start["who"], "alice");
    assert_eq!(f.status_of("server04")["who"], "alice");

    // The policy says which variable names the pusher.
    edit_policy(
        &f.env,
        r#"pusher_env = ["GL_USER", "GL_USERNAME", "GITEA_PUSHER_NAME", "REMOTE_USER", "USER"]"#,
        r#"pusher_env = ["REMOTE_USER"]"#,
    );
    let c = f.change("c");
    let out = f.push_as(&[("GL_USER", "alice"), ("REMOTE_USER", "carol")], &[]);
    f.assert_landed(&out, &c);
    assert_eq!(f.runs().last().unwrap().start["who"], "carol");
    f.assert_clean();
}

// ---- widening ------------------------------------------------------------------------

#[test]
fn only_pushers_widen_names_may_widen() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    edit_policy(&f.env, r#"widen = ["*"]"#, r#"widen = ["alice"]"#);
    let farm_before = f.tree("server01");

    // USER=tester is not in widen.
    let b = f.change("b");
    for opts in [
        &["-o", "all"][..],
        &["-o", "group=farm"],
        &["-o", "host=server01"],
    ] {
        let out = f.push_as(&[], opts);
        f.assert_rejected(&out, Some(&a));
        out.assert_contains("tester may not widen")
            .assert_contains("`widen`")
            .assert_contains("alice");
    }
    let out = f
        .env
        .git_push(&["origin", &format!("{a}:refs/deploy/farm")]);
    out.assert_code(1).assert_contains("tester may not widen");
    let out = rollgate_on_remote(&f.env, &["deploy", "--rev", &a, "--all"]);
    out.assert_failed().assert_contains("tester may not widen");
    assert_eq!(f.tree("server01"), farm_before, "the farm was touched");

    // A plain push is not widening.
    f.assert_landed(&f.env.push(&[]), &b);
    f.assert_on("server04", &b, SSHD_96);
    assert_eq!(f.deployed("server01"), None);

    // alice may.
    let c = f.change("c");
    let out = f.push_as(&[("GL_USER", "alice")], &["-o", "all"]);
    f.assert_landed(&out, &c);
    f.assert_on("server01", &c, SSHD_92);
    f.assert_clean();
}

// ---- a plain push is bounded by the tip -----------------------------------------------

#[test]
fn a_push_that_adds_a_host_to_the_default_group_deploys_to_the_old_hosts_only() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    f.start(&spec);
    spec.groups[0].hosts.push("server05".into());
    f.write_spec(&spec);
    let b = f.change("adds server05 to the canary");

    let out = f.env.push(&[]);

    f.assert_landed(&out, &b);
    f.assert_on("server04", &b, SSHD_96);
    assert_eq!(f.deployed("server05"), None, "server05 was deployed\n{out}");
    f.assert_line(&out, &["left out: server05", "next push"]);
    assert_eq!(f.runs().last().unwrap().planned(), ["canary/server04"]);

    // From the next push on, server05 is in the bound.
    let c = f.change("c");
    f.assert_landed(&f.env.push(&[]), &c);
    f.assert_on("server05", &c, SSHD_96);
    f.assert_on("server04", &c, SSHD_96);
    f.assert_clean();
}

#[test]
fn a_push_that_renames_the_default_group_takes_effect_from_the_next_push() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    let a = f.start(&spec);
    spec.default_group = Some("farm".into());
    f.write_spec(&spec);
    let b = f.change("the farm becomes the default");

    let out = f.env.push(&[]);

    f.assert_landed(&out, &b);
    f.assert_line(&out, &["default_group is farm", "canary", "next push"]);
    f.assert_line(
        &out,
        &["left out: server01, server02, server03", "next push"],
    );
    f.assert_line(&out, &["default group: nothing deployed"]);
    for host in ["server01", "server02", "server03"] {
        assert_eq!(f.deployed(host), None, "{host} was deployed\n{out}");
    }
    f.assert_on("server04", &a, SSHD_96);

    let c = f.change("c");
    f.assert_landed(&f.env.push(&[]), &c);
    f.assert_on("server01", &c, SSHD_92);
    f.assert_clean();
}

// ---- pinned commands --------------------------------------------------------------------

#[test]
fn policy_pin_then_a_changed_deploy_argv_is_refused() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    f.start(&spec);

    let out = rollgate_on_remote(&f.env, &["policy", "pin"]);

    out.assert_ok().assert_contains("pinned");
    let text = fs::read_to_string(policy_path(&f.env)).unwrap();
    assert!(text.contains("commands = \"pinned\""), "{text}");
    assert!(
        text.contains("# The deploy branch."),
        "comments lost:\n{text}"
    );
    assert!(text.contains("exec /usr/sbin/sshd -t -f"), "{text}");
    // Pinning again adds nothing and changes nothing.
    let again = rollgate_on_remote(&f.env, &["policy", "pin"]);
    again.assert_ok().assert_contains("(0 new");
    assert_eq!(fs::read_to_string(policy_path(&f.env)).unwrap(), text);
    let shown = rollgate_on_remote(&f.env, &["policy", "show"]);
    shown
        .assert_ok()
        .assert_contains("commands = \"pinned\"")
        .assert_contains("{root}/{host}.times");

    // The same commands: fine.
    let b = f.change("b");
    f.assert_landed(&f.env.push(&[]), &b);

    // A deploy argv the policy does not hold: refused before anything runs.
    spec.deploy = timed_deploy(Some("0"));
    f.write_spec(&spec);
    f.change("c");
    let canary_before = f.tree("server04");
    let out = f.env.push(&[]);
    f.assert_rejected(&out, Some(&b));
    out.assert_contains("service sshd: its deploy command")
        .assert_contains("sleep 0")
        .assert_contains("commands = \"pinned\"")
        .assert_contains("rollgate policy pin")
        .assert_lacks("ok sshd");
    assert_eq!(f.tree("server04"), canary_before);
    f.assert_clean();
}

#[test]
fn a_pinned_policy_refuses_a_rollback_to_a_revision_with_other_commands() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    let a = f.start(&spec);
    spec.deploy = timed_deploy(Some("0"));
    f.write_spec(&spec);
    let b = f.change("b: a new deploy command");
    f.assert_landed(&f.env.push(&[]), &b);
    rollgate_on_remote(&f.env, &["policy", "pin"]).assert_ok();

    let over_git = f
        .env
        .git_push(&["-f", "origin", &format!("{a}:refs/deploy/canary")]);
    let cli = rollgate_on_remote(&f.env, &["rollback", "--to", &a]);

    over_git
        .assert_code(1)
        .assert_contains("service sshd: its deploy command");
    cli.assert_failed()
        .assert_contains("service sshd: its deploy command");
    f.assert_on("server04", &b, SSHD_96);

    // The refusal is the policy's: with commands = "any" it goes through.
    edit_policy(&f.env, "commands = \"pinned\"", "commands = \"any\"");
    rollgate_on_remote(&f.env, &["rollback", "--to", &a]).assert_ok();
    f.assert_on("server04", &a, SSHD_96);
    f.assert_clean();
}

// ---- the file itself ----------------------------------------------------------------------

#[test]
fn hook_install_writes_the_policy_once_and_never_overwrites_it() {
    let env = Env::new();
    let remote = env.bare_repo_without_hook();
    let out = env.rollgate(&["hook", "install", "--repo", path_str(&remote)]);
    out.assert_ok().assert_contains("policy.toml");
    let text = fs::read_to_string(policy_path(&env)).unwrap();
    for key in [
        "branch = \"main\"",
        "pusher_env = [\"GL_USER\", \"GL_USERNAME\"",
        "commands = \"any\"",
        "allowed = []",
        "unmerged = false",
        "widen = [\"*\"]",
        "break_glass = []",
        "sandbox = true",
        "live_edit = \"warn\"",
        "notify = []",
    ] {
        assert!(text.contains(key), "{key} missing:\n{text}");
    }
    let mine = format!("{text}\n# the admin's own note\n");
    fs::write(policy_path(&env), &mine).unwrap();

    let again = env.rollgate(&["hook", "install", "--repo", path_str(&remote)]);

    again.assert_ok().assert_lacks("policy.toml");
    assert_eq!(fs::read_to_string(policy_path(&env)).unwrap(), mine);
}

#[test]
fn a_repository_without_a_policy_uses_the_defaults() {
    let env = Env::new();
    env.bare_repo();
    fs::remove_file(policy_path(&env)).unwrap();
    env.clone_repo();
    env.write_infra();
    let id = env.commit("initial");

    env.push(&[]).assert_ok();
    assert_eq!(env.remote_ref(MAIN).as_deref(), Some(id.as_str()));

    let shown = rollgate_on_remote(&env, &["policy", "show"]);
    shown
        .assert_ok()
        .assert_contains("absent: the defaults")
        .assert_contains(
            r#"pusher_env = ["GL_USER", "GL_USERNAME", "GITEA_PUSHER_NAME", "REMOTE_USER", "USER"]"#,
        )
        .assert_contains("sandbox = true")
        .assert_contains("live_edit = \"warn\"")
        .assert_contains("widen = [\"*\"]");
    assert!(!policy_path(&env).exists(), "show wrote the file");

    // pin starts from the commented defaults when there is no file.
    let pinned = rollgate_on_remote(&env, &["policy", "pin"]);
    pinned.assert_ok().assert_contains("3 new");
    let text = fs::read_to_string(policy_path(&env)).unwrap();
    assert!(text.contains("# The deploy branch."), "{text}");
    assert!(text.contains("commands = \"pinned\""), "{text}");
    assert!(text.contains("\"/usr/sbin/nginx\", \"-t\""), "{text}");
}

#[test]
fn a_broken_policy_rejects_every_push_with_file_line_and_column() {
    let env = Env::new();
    let good = env.pushed_infra();
    let path = policy_path(&env);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, format!("\n\n  widenn = [\"bob\"]\n{text}")).unwrap();
    env.append(SSHD_96, "# a harmless change");
    env.commit("b");
    let at = format!("{}:3:3:", path.display());

    let to_main = env.push(&[]);
    let to_feature = env.git_push(&["origin", "HEAD:refs/heads/feature"]);
    let show = rollgate_on_remote(&env, &["policy", "show"]);

    to_main
        .assert_code(1)
        .assert_contains(&at)
        .assert_contains("widenn")
        .assert_contains("refuses every push");
    assert_eq!(env.remote_ref(MAIN).as_deref(), Some(good.as_str()));
    to_feature.assert_code(1).assert_contains(&at);
    assert_eq!(env.remote_ref("refs/heads/feature"), None);
    show.assert_code(2).assert_contains(&at);

    // Fixed, pushes go through again.
    fs::write(&path, text).unwrap();
    env.push(&[]).assert_ok();
    env.assert_tmp_empty();
}

/// The hook runs as the git server's unprivileged user. It reads the policy
/// an admin (root) wrote with `hook install`; a policy it cannot read is a
/// broken policy: every push is refused, never "no policy, defaults".
#[test]
fn an_unprivileged_hook_reads_the_policy_and_refuses_pushes_when_it_cannot() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    env.host_key();
    let id = env.commit("initial");
    let policy = policy_path(&env);
    let as_root = env.run(env.command("id")).stdout.starts_with("uid=0(");
    // As root (CI), everything but the policy becomes the git user's
    // (`nobody`), and the push runs as that user; as a plain user, the
    // test already is one.
    let push = || {
        let mut cmd = env.command(if as_root { "setpriv" } else { "git" });
        if as_root {
            cmd.args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--inh-caps=-all",
                "git",
            ]);
        }
        cmd.args(["push", "origin", "main"]);
        env.run(cmd)
    };
    if as_root {
        let mut chown = env.command("chown");
        chown.args(["-R", "nobody:nogroup", path_str(env.root())]);
        env.run(chown).assert_ok();
        let mut chown = env.command("chown");
        chown.args(["root:root", path_str(&policy)]);
        env.run(chown).assert_ok();
    }
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o600)).unwrap();
    // The repository is the git user's now: root's git needs to be told.
    let main = || {
        let out = env.git_in(
            &env.remote(),
            &[
                "-c",
                "safe.directory=*",
                "rev-parse",
                "-q",
                "--verify",
                MAIN,
            ],
        );
        out.success().then(|| out.stdout.trim().to_string())
    };

    let out = push();

    out.assert_code(1)
        .assert_contains("cannot read")
        .assert_contains("policy.toml")
        .assert_contains("refuses every push");
    assert_eq!(main(), None, "{out}");

    // As hook install leaves it (world-readable), the same push deploys.
    fs::set_permissions(&policy, fs::Permissions::from_mode(0o644)).unwrap();
    let out = push();
    out.assert_ok().assert_contains("deployed");
    assert_eq!(main().as_deref(), Some(id.as_str()), "{out}");
    env.assert_tmp_empty();
}

/// A repository set up before the policy existed: its main still says
/// `branch = "main"`. Upgrading rollgate must not strand it: the push that
/// drops the key lands and deploys to the canary its tip names (read
/// leniently), and a push that keeps the key is told where it moved.
#[test]
fn a_repository_from_before_the_policy_upgrades_by_dropping_the_key() {
    let f = Fleet::new();
    let spec = Spec::standard();
    let remote = f.env.bare_repo_without_hook();
    f.env.clone_repo();
    f.env.write_infra();
    let old_style = format!("branch = \"main\"\n{}", spec.render(&f.env, &f.hosts));
    f.env.write("rollgate.toml", &old_style);
    let a = f.env.commit("set up before rollgate had a policy");
    f.env.push(&[]).assert_ok();
    f.env
        .rollgate(&["hook", "install", "--repo", path_str(&remote)])
        .assert_ok();

    f.change("keeps the old key");
    let out = f.env.push(&[]);
    f.assert_rejected(&out, Some(&a));
    out.assert_contains("`branch` moved to rollgate/policy.toml");

    f.write_spec(&spec);
    let b = f.change("drops the old key");
    let out = f.env.push(&[]);
    f.assert_landed(&out, &b);
    f.assert_on("server04", &b, SSHD_96);
    assert_eq!(f.deployed("server01"), None);
    f.assert_clean();
}
