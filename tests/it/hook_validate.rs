//! The pre-receive hook as a pusher meets it: every test pushes with the
//! real `git push` to a bare repository where `rollgate hook install` put the
//! hook, and judges by what the client saw and where the refs ended up.

use std::time::Duration;

use crate::support::{
    Env, NGINX_CONF, Outcome, SSHD_92, SSHD_96, hanging_check, probe_toml, snapshot_settings,
};

const MAIN: &str = "refs/heads/main";

/// The push failed, git says the hook declined it, and `main` in the bare
/// repository is still `before` (`None`: it still does not exist).
#[track_caller]
fn assert_rejected(env: &Env, out: &Outcome, before: Option<&str>) {
    out.assert_failed()
        .assert_contains("pre-receive hook declined");
    assert_eq!(
        env.remote_ref(MAIN).as_deref(),
        before,
        "the rejected push moved {MAIN}\n{out}"
    );
}

/// The push succeeded and `main` in the bare repository is now `id`.
#[track_caller]
fn assert_landed(env: &Env, out: &Outcome, id: &str) {
    out.assert_ok();
    assert_eq!(
        env.remote_ref(MAIN).as_deref(),
        Some(id),
        "the accepted push did not move {MAIN}\n{out}"
    );
}

/// Every line of `secret` (a file outside the work tree) is absent from
/// what the client saw.
#[track_caller]
fn assert_not_echoed(out: &Outcome, secret: &str) {
    for line in secret.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            !out.contains(line),
            "the client saw a line of a file outside the work tree: {line:?}\n{out}"
        );
    }
}

#[test]
fn valid_push_is_accepted_with_an_ok_line_per_directory() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    let id = env.commit("initial config");

    let out = env.push(&[]);

    assert_landed(&env, &out, &id);
    out.assert_dir_line("ok", "sshd 9.2", "files/sshd/9.2")
        .assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6")
        .assert_dir_line("ok", "nginx 1.22", "files/nginx/1.22")
        .assert_contains("checking 3 of 3")
        .assert_lacks("FAILED");
    env.assert_tmp_empty();
}

#[test]
fn broken_sshd_config_on_the_first_push_is_rejected() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    env.append(SSHD_92, "NoSuchOption yes");
    env.commit("broken sshd 9.2");

    let out = env.push(&[]);

    assert_rejected(&env, &out, None);
    out.assert_dir_line("FAILED", "sshd 9.2", "files/sshd/9.2")
        .assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6")
        .assert_contains("files/sshd/9.2/sshd_config")
        .assert_contains("Bad configuration option: NoSuchOption");
    env.assert_tmp_empty();
}

#[test]
fn broken_sshd_config_is_rejected_and_the_branch_does_not_move() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.append(SSHD_92, "NoSuchOption yes");
    env.commit("broken sshd 9.2");

    let out = env.push(&[]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_dir_line("FAILED", "sshd 9.2", "files/sshd/9.2");
    // sshd's own words, naming the file as the pusher knows it (not the
    // temporary work tree's path) and the line.
    let sshd_says = out.lines_with(&["files/sshd/9.2/sshd_config", "Bad configuration option"]);
    assert!(
        sshd_says.iter().any(|l| l.contains("line 15")),
        "sshd's message with the file and line is not shown\n{out}"
    );
    out.assert_lacks(&env.tmpdir().display().to_string());
    env.assert_tmp_empty();
}

/// Exactly what the pusher sees for a broken sshd_config (one directory
/// checked: validate-only and only 9.2 changed, so the order is fixed).
#[test]
fn snapshot_broken_sshd_rejection() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.append(SSHD_92, "NoSuchOption yes");
    env.commit("broken sshd 9.2");

    let out = env.push(&["-o", "validate-only"]);

    assert_rejected(&env, &out, Some(&good));
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("broken_sshd_rejection", env.client_saw(&out));
    });
    env.assert_tmp_empty();
}

#[test]
fn broken_nginx_conf_is_rejected_with_nginxs_message() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.replace(
        NGINX_CONF,
        "    sendfile on;\n",
        "    sendfile on;\n    no_such_directive on;\n",
    );
    env.commit("broken nginx");

    let out = env.push(&[]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_dir_line("FAILED", "nginx 1.22", "files/nginx/1.22")
        .assert_contains("files/nginx/1.22/nginx.conf")
        .assert_contains(r#"unknown directive "no_such_directive""#);
    env.assert_tmp_empty();
}

#[test]
fn broken_rollgate_toml_is_rejected_with_line_and_column() {
    let env = Env::new();
    let good = env.pushed_infra();
    // Line 3: the closing quote is missing.
    env.replace(
        "rollgate.toml",
        "default_group = \"canary\"",
        "default_group = \"canary",
    );
    env.commit("broken rollgate.toml");

    let out = env.push(&[]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_contains("rollgate.toml")
        .assert_contains("line 3, column");
    env.assert_tmp_empty();
}

#[test]
fn snapshot_broken_rollgate_toml_rejection() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.replace("rollgate.toml", "batch = 2", "batch = = 2");
    env.commit("broken rollgate.toml");

    let out = env.push(&[]);

    assert_rejected(&env, &out, Some(&good));
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("broken_rollgate_toml_rejection", env.client_saw(&out));
    });
    env.assert_tmp_empty();
}

/// The policy's `branch` defaults to `main`: a repository whose very first push carries
/// an unparsable rollgate.toml must not get it onto the deploy branch.
#[test]
fn broken_rollgate_toml_on_the_first_push_is_rejected() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    env.replace(
        "rollgate.toml",
        "default_group = \"canary\"",
        "default_group = \"canary",
    );
    env.commit("broken rollgate.toml");

    let out = env.push(&[]);

    assert_rejected(&env, &out, None);
    out.assert_contains("line 3, column");
    env.assert_tmp_empty();
}

#[test]
fn typo_key_in_rollgate_toml_is_rejected_naming_the_key() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.replace("rollgate.toml", "default_group", "defualt_group");
    env.commit("typo");

    let out = env.push(&[]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_contains("defualt_group")
        .assert_contains("line 3");
    env.assert_tmp_empty();
}

#[test]
fn group_whose_version_directory_is_missing_is_rejected() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.replace(
        "rollgate.toml",
        r#"vars = { version = "9.2", nginx_version = "1.22" }"#,
        r#"vars = { version = "9.9", nginx_version = "1.22" }"#,
    );
    env.commit("farm on sshd 9.9, which has no directory");

    let out = env.push(&[]);

    assert_rejected(&env, &out, Some(&good));
    let said = out.lines_with(&["farm", "files/sshd/9.9"]);
    assert!(
        !said.is_empty(),
        "the rejection does not name both the group and the missing path\n{out}"
    );
    env.assert_tmp_empty();
}

#[test]
fn missing_checker_binary_is_a_clear_error() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write(
        "rollgate.toml",
        &probe_toml(r#"["/usr/sbin/no-such-checker", "{dir}"]"#, "10s"),
    );
    env.write("files/probe/1.0/probe.conf", "x\n");
    env.commit("a checker that is not installed");

    let out = env.push(&[]);

    assert_rejected(&env, &out, None);
    out.assert_dir_line("FAILED", "probe 1.0", "files/probe/1.0")
        .assert_contains("/usr/sbin/no-such-checker")
        .assert_contains("not found");
    env.assert_tmp_empty();
}

#[test]
fn unknown_placeholder_in_a_check_is_rejected_naming_it() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.replace("rollgate.toml", "{dir}/sshd_config", "{dri}/sshd_config");
    env.commit("typo in a placeholder");

    let out = env.push(&[]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_contains("{dri}")
        .assert_contains("services.sshd");
    env.assert_tmp_empty();
}

#[test]
fn unknown_push_option_is_rejected_naming_the_valid_ones() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.append(SSHD_96, "# a harmless change");
    env.commit("change");

    let out = env.push(&["-o", "frobnicate"]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_contains("frobnicate");
    for choice in ["group=", "host=", "all", "validate-only"] {
        out.assert_contains(choice);
    }
    env.assert_tmp_empty();
}

#[test]
fn unknown_group_is_rejected_naming_the_groups() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.append(SSHD_96, "# a harmless change");
    env.commit("change");

    let out = env.push(&["-o", "group=nope"]);

    assert_rejected(&env, &out, Some(&good));
    let said = out.lines_with(&["nope", "canary", "farm"]);
    assert!(
        !said.is_empty(),
        "the rejection does not name the unknown group and the valid ones\n{out}"
    );
    env.assert_tmp_empty();
}

#[test]
fn unknown_host_is_rejected_naming_the_hosts() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.append(SSHD_96, "# a harmless change");
    env.commit("change");

    let out = env.push(&["-o", "host=server99"]);

    assert_rejected(&env, &out, Some(&good));
    let said = out.lines_with(&["server99", "server04", "server01", "server03"]);
    assert!(
        !said.is_empty(),
        "the rejection does not name the unknown host and the valid ones\n{out}"
    );
    env.assert_tmp_empty();
}

#[test]
fn known_group_host_and_all_options_are_accepted() {
    let env = Env::new();
    env.pushed_infra();

    env.append(SSHD_92, "# farm change");
    let id = env.commit("farm change");
    let out = env.push(&["-o", "group=farm"]);
    assert_landed(&env, &out, &id);
    out.assert_dir_line("ok", "sshd 9.2", "files/sshd/9.2")
        .assert_contains("farm");

    env.append(SSHD_92, "# everyone");
    let id = env.commit("everyone");
    let out = env.push(&["-o", "all"]);
    assert_landed(&env, &out, &id);
    out.assert_dir_line("ok", "sshd 9.2", "files/sshd/9.2")
        .assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6");

    env.append(SSHD_92, "# one host");
    let id = env.commit("one host");
    let out = env.push(&["-o", "host=server02"]);
    assert_landed(&env, &out, &id);
    out.assert_dir_line("ok", "sshd 9.2", "files/sshd/9.2")
        .assert_contains("server02");
    env.assert_tmp_empty();
}

#[test]
fn validate_only_push_is_accepted() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    let id = env.commit("initial config");

    let out = env.push(&["-o", "validate-only"]);

    assert_landed(&env, &out, &id);
    out.assert_dir_line("ok", "sshd 9.2", "files/sshd/9.2")
        .assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6")
        .assert_dir_line("ok", "nginx 1.22", "files/nginx/1.22");
    env.assert_tmp_empty();
}

#[test]
fn validate_only_push_with_a_broken_config_is_still_rejected() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.append(SSHD_96, "NoSuchOption yes");
    env.commit("broken 9.6");

    let out = env.push(&["-o", "validate-only"]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_dir_line("FAILED", "sshd 9.6", "files/sshd/9.6")
        .assert_contains("Bad configuration option");
    env.assert_tmp_empty();
}

#[test]
fn non_deploy_branch_with_a_broken_config_passes_untouched() {
    let env = Env::new();
    env.pushed_infra();
    env.append(SSHD_92, "NoSuchOption yes");
    env.replace("rollgate.toml", "batch = 2", "batch = = 2");
    let id = env.commit("work in progress");

    let out = env.git_push(&["origin", "HEAD:refs/heads/wip"]);

    out.assert_ok()
        .assert_contains("refs/heads/wip")
        .assert_contains("passed untouched")
        .assert_lacks("FAILED");
    assert_eq!(
        env.remote_ref("refs/heads/wip").as_deref(),
        Some(id.as_str()),
        "{out}"
    );
    assert!(
        out.lines_with(&["sshd 9.2"]).is_empty(),
        "checked anyway\n{out}"
    );
    env.assert_tmp_empty();
}

#[test]
fn the_deploy_branch_is_the_one_the_servers_policy_names() {
    let env = Env::new();
    let remote = env.bare_repo();
    let policy = remote.join("rollgate/policy.toml");
    let text = std::fs::read_to_string(&policy).expect("hook install wrote the policy");
    assert!(text.contains("branch = \"main\""), "{text}");
    std::fs::write(
        &policy,
        text.replace("branch = \"main\"", "branch = \"prod\""),
    )
    .unwrap();
    env.clone_repo();
    env.write_infra();
    env.append(SSHD_92, "NoSuchOption yes");
    let id = env.commit("broken, on a repository that deploys from prod");

    let to_main = env.push(&[]);
    let to_prod = env.git_push(&["origin", "HEAD:refs/heads/prod"]);

    to_main
        .assert_ok()
        .assert_contains("not the deploy branch (prod), passed untouched")
        .assert_lacks("FAILED");
    assert_eq!(env.remote_ref(MAIN).as_deref(), Some(id.as_str()));
    to_prod
        .assert_failed()
        .assert_contains("pre-receive hook declined")
        .assert_dir_line("FAILED", "sshd 9.2", "files/sshd/9.2");
    assert_eq!(env.remote_ref("refs/heads/prod"), None, "{to_prod}");
    env.assert_tmp_empty();
}

#[test]
fn tag_push_passes_untouched() {
    let env = Env::new();
    env.pushed_infra();
    env.append(SSHD_92, "NoSuchOption yes");
    let id = env.commit("broken, but only tagged");
    env.git_ok(&env.work(), &["tag", "v1"]);
    env.git_ok(
        &env.work(),
        &["tag", "-a", "-m", "annotated", "v1-annotated"],
    );

    let out = env.git_push(&["origin", "v1", "v1-annotated"]);

    out.assert_ok()
        .assert_contains("refs/tags/v1")
        .assert_contains("passed untouched")
        .assert_lacks("FAILED");
    assert_eq!(env.remote_ref("refs/tags/v1").as_deref(), Some(id.as_str()));
    assert!(env.remote_ref("refs/tags/v1-annotated").is_some(), "{out}");
    env.assert_tmp_empty();
}

#[test]
fn deleting_the_deploy_branch_is_refused() {
    let env = Env::new();
    let good = env.pushed_infra();

    let out = env.git_push(&["origin", ":main"]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_contains("refs/heads/main")
        .assert_contains("cannot be deleted");
    env.assert_tmp_empty();
}

#[test]
fn deleting_another_branch_passes() {
    let env = Env::new();
    env.pushed_infra();
    env.git_push(&["origin", "HEAD:refs/heads/wip"]).assert_ok();

    let out = env.git_push(&["origin", ":wip"]);

    out.assert_ok();
    assert_eq!(env.remote_ref("refs/heads/wip"), None, "{out}");
    env.assert_tmp_empty();
}

#[test]
fn hung_checker_is_killed_at_its_timeout() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    let (check, pattern) = hanging_check(3001);
    env.write("rollgate.toml", &probe_toml(&check, "1s"));
    env.write("files/probe/1.0/probe.conf", "x\n");
    env.commit("a checker that never ends");

    let out = env.push(&[]);

    assert_rejected(&env, &out, None);
    out.assert_dir_line("FAILED", "probe 1.0", "files/probe/1.0")
        .assert_contains("timed out");
    assert!(
        out.duration < Duration::from_secs(60),
        "the push waited for the hung checker\n{out}"
    );
    env.assert_no_process(&pattern, &out);
    env.assert_tmp_empty();
}

#[test]
fn chatty_checker_output_is_capped() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write(
        "rollgate.toml",
        &probe_toml(r#"["sh", "-c", "seq 1001 1200; exit 3"]"#, "10s"),
    );
    env.write("files/probe/1.0/probe.conf", "x\n");
    env.commit("a checker that talks a lot");

    let out = env.push(&[]);

    assert_rejected(&env, &out, None);
    out.assert_dir_line("FAILED", "probe 1.0", "files/probe/1.0")
        .assert_contains("1001")
        .assert_lacks("1200");
    let shown = out
        .remote_lines()
        .iter()
        .filter(|l| l.contains("| 1"))
        .count();
    assert!(
        shown <= 60,
        "{shown} lines of checker output reached the pusher (the cap is ~40)\n{out}"
    );
    // The verdict still closes the report.
    out.assert_contains("1 FAILED");
    env.assert_tmp_empty();
}

#[test]
fn symlink_to_an_absolute_path_outside_is_refused_without_echoing_it() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.symlink(SSHD_92, "/etc/passwd");
    env.commit("sshd_config -> /etc/passwd");

    let out = env.push(&[]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_contains("files/sshd/9.2/sshd_config")
        .assert_contains("symlink")
        .assert_lacks("root:x:0:0");
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    assert_not_echoed(&out, &passwd);
    snapshot_settings().bind(|| {
        insta::assert_snapshot!("symlink_outside_refused", env.client_saw(&out));
    });
    env.assert_tmp_empty();
}

#[test]
fn symlink_climbing_out_with_dotdot_is_refused_without_echoing_it() {
    let env = Env::new();
    let good = env.pushed_infra();
    // Planted just above TMPDIR: five `..` from files/sshd/9.2 in a work
    // tree made directly in TMPDIR land here.
    let secret = "SECRET-LINE-1 never to be shown\nSECRET-LINE-2 nor this\n";
    std::fs::write(env.path("secret.conf"), secret).expect("plant the secret");
    let cases = [
        "../../../../../etc/hostname",
        "../../../../../secret.conf",
        // Deep enough to reach / from any TMPDIR.
        "../../../../../../../../../../../../../../../../../../etc/passwd",
    ];
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    for target in cases {
        env.symlink(SSHD_92, target);
        env.commit(&format!("sshd_config -> {target}"));

        let out = env.push(&[]);

        assert_rejected(&env, &out, Some(&good));
        out.assert_contains("files/sshd/9.2/sshd_config")
            .assert_contains("symlink");
        assert_not_echoed(&out, secret);
        assert_not_echoed(&out, &passwd);
        env.assert_tmp_empty();
    }
}

#[test]
fn symlink_to_a_directory_outside_is_refused() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.symlink("files/sshd/9.2/conf.d", "/etc/ssh");
    env.commit("conf.d -> /etc/ssh");

    let out = env.push(&[]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_contains("files/sshd/9.2/conf.d")
        .assert_contains("symlink");
    env.assert_tmp_empty();
}

#[test]
fn symlink_to_a_file_of_the_same_directory_is_accepted() {
    let env = Env::new();
    env.pushed_infra();
    let text = env.read(SSHD_92);
    env.write("files/sshd/9.2/sshd_config.common", &text);
    env.symlink(SSHD_92, "sshd_config.common");
    let id = env.commit("sshd_config -> sshd_config.common");

    let out = env.push(&["-o", "group=farm"]);

    assert_landed(&env, &out, &id);
    out.assert_dir_line("ok", "sshd 9.2", "files/sshd/9.2");
    env.assert_tmp_empty();
}

#[test]
fn symlinked_file_of_the_same_directory_is_still_checked() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.write("files/sshd/9.2/sshd_config.common", "NoSuchOption yes\n");
    env.symlink(SSHD_92, "sshd_config.common");
    env.commit("sshd_config -> a broken sibling");

    let out = env.push(&[]);

    assert_rejected(&env, &out, Some(&good));
    out.assert_dir_line("FAILED", "sshd 9.2", "files/sshd/9.2")
        .assert_contains("Bad configuration option: NoSuchOption");
    env.assert_tmp_empty();
}

#[test]
fn second_push_checks_only_changed_directories() {
    let env = Env::new();
    env.pushed_infra();
    env.append(SSHD_96, "# tighten later");
    let id = env.commit("change sshd 9.6 only");

    let out = env.push(&[]);

    assert_landed(&env, &out, &id);
    out.assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6");
    assert!(
        out.lines_with(&["sshd 9.2"]).is_empty(),
        "sshd 9.2 did not change and is not deployed, yet it was checked\n{out}"
    );

    // Without a deploy, only what changed is checked at all.
    env.append(SSHD_96, "# and again");
    let id = env.commit("change sshd 9.6 again");
    let out = env.push(&["-o", "validate-only"]);
    assert_landed(&env, &out, &id);
    out.assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6")
        .assert_contains("checking 1 of 3");
    assert!(
        out.lines_with(&["nginx 1.22"]).is_empty() && out.lines_with(&["sshd 9.2"]).is_empty(),
        "unchanged directories were checked\n{out}"
    );
    env.assert_tmp_empty();
}

#[test]
fn changing_rollgate_toml_checks_every_directory() {
    let env = Env::new();
    env.pushed_infra();
    env.append("rollgate.toml", "# reviewed");
    let id = env.commit("touch rollgate.toml");

    let out = env.push(&["-o", "validate-only"]);

    assert_landed(&env, &out, &id);
    out.assert_contains("checking 3 of 3")
        .assert_dir_line("ok", "sshd 9.2", "files/sshd/9.2")
        .assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6")
        .assert_dir_line("ok", "nginx 1.22", "files/nginx/1.22");
    env.assert_tmp_empty();
}

#[test]
fn push_changing_no_config_directory_checks_nothing() {
    let env = Env::new();
    env.pushed_infra();
    env.write("README.md", "notes\n");
    let id = env.commit("docs only");

    let out = env.push(&["-o", "validate-only"]);

    assert_landed(&env, &out, &id);
    out.assert_contains("checking 0 of 3")
        .assert_lacks("FAILED");
    env.assert_tmp_empty();
}

/// `ROLLGATE_LOG=debug` traces every command the hook starts, with its argv
/// and how it ended, so "what did it actually run?" has an answer.
#[test]
fn debug_log_traces_every_spawned_command() {
    let env = Env::new();
    env.pushed_infra();
    env.append(SSHD_92, "# a comment");
    env.commit("touch sshd 9.2");
    let mut cmd = env.command("git");
    cmd.current_dir(env.work())
        .args(["push", "-o", "validate-only", "origin", "main"])
        .env("ROLLGATE_LOG", "debug");
    let out = env.run(cmd);
    out.assert_ok();
    // The check runs inside the sandbox: its argv is traced with the
    // sandbox's own around it, stamped with the time since the hook began.
    let traced = out.lines_with(&["debug: ", " ms  run [", "/usr/sbin/sshd", "-t"]);
    assert_eq!(traced.len(), 1, "the sshd check is not traced once\n{out}");
    assert!(
        traced[0].contains("bwrap"),
        "no sandbox in the trace\n{out}"
    );
    assert!(
        !out.lines_with(&["debug: ", ": exit 0, "]).is_empty(),
        "how the check ended is not traced\n{out}"
    );
    // So are the stages a push goes through, where its time goes.
    for stage in [
        "policy read",
        "work tree written",
        "refs/heads/main: prepared",
    ] {
        assert_eq!(
            out.lines_with(&["debug: ", " ms  ", stage]).len(),
            1,
            "the stage {stage:?} is not traced once\n{out}"
        );
    }
    // Without the variable, no trace reaches the pusher.
    env.append(SSHD_92, "# another");
    env.commit("touch again");
    env.push(&["-o", "validate-only"])
        .assert_ok()
        .assert_lacks("debug:");
    env.assert_tmp_empty();
}

/// A hostile push: `files/sshd` written by hand to list `9.2` twice, first
/// the tree it had, then an empty one (what every lookup by name reads).
/// git accepts it (`receive.fsckObjects` is off by default); rollgate must
/// not let the first entry hide the change from the check.
#[test]
fn a_crafted_tree_listing_a_directory_twice_is_refused() {
    let env = Env::new();
    let before = env.pushed_infra();
    let work = env.work();
    let git = |args: &[&str]| env.git_ok(&work, args);
    let empty = git(&["hash-object", "-w", "-t", "tree", "--stdin"]);
    let v92 = git(&["rev-parse", "HEAD:files/sshd/9.2"]);
    let v96 = git(&["rev-parse", "HEAD:files/sshd/9.6"]);
    // A tree object written byte by byte, entries in the order given.
    let tree = |entries: &[(String, String, String)]| -> String {
        let mut raw = Vec::new();
        for (mode, name, hex) in entries {
            raw.extend(format!("{mode} {name}\0").into_bytes());
            raw.extend(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("a hex object id")),
            );
        }
        let path = env.path("crafted.tree");
        std::fs::write(&path, raw).unwrap();
        git(&[
            "hash-object",
            "-w",
            "-t",
            "tree",
            "--literally",
            path.to_str().unwrap(),
        ])
    };
    let dir = |name: &str, id: &str| ("40000".to_string(), name.to_string(), id.to_string());
    let sshd = tree(&[dir("9.2", &v92), dir("9.2", &empty), dir("9.6", &v96)]);
    // The trees above it as they were, with the crafted one in.
    let swap = |parent: &str, name: &str, id: &str| -> String {
        let entries: Vec<(String, String, String)> = git(&["ls-tree", parent])
            .lines()
            .map(|l| {
                let (meta, n) = l.split_once('\t').expect("MODE TYPE ID\tNAME");
                let w: Vec<&str> = meta.split_whitespace().collect();
                let mode = w[0].trim_start_matches('0').to_string();
                let id = if n == name { id } else { w[2] };
                (mode, n.to_string(), id.to_string())
            })
            .collect();
        tree(&entries)
    };
    let files = swap("HEAD:files", "sshd", &sshd);
    let root = swap("HEAD", "files", &files);
    let commit = git(&["commit-tree", &root, "-p", "HEAD", "-m", "sshd 9.2 twice"]);

    let out = env.git_push(&["origin", &format!("{commit}:refs/heads/main")]);

    assert_rejected(&env, &out, Some(&before));
    out.assert_contains("lists a name twice or out of order");
    env.assert_tmp_empty();
}
