//! `rollgate validate`: the push's checks, run by an author in a clone before
//! pushing (working tree, `--rev`, `--all`), with exit codes 0 / 1 / 2.

use crate::support::{Env, SSHD_92, SSHD_96, hanging_check, path_str, probe_toml};

#[test]
fn validate_in_a_working_tree_before_any_commit() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write_infra();

    let out = env.rollgate(&["validate"]);

    out.assert_code(0)
        .assert_dir_line("ok", "sshd 9.2", "files/sshd/9.2")
        .assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6")
        .assert_dir_line("ok", "nginx 1.22", "files/nginx/1.22");
    env.assert_tmp_empty();

    env.append(SSHD_92, "NoSuchOption yes");

    let out = env.rollgate(&["validate"]);

    out.assert_code(1)
        .assert_dir_line("FAILED", "sshd 9.2", "files/sshd/9.2")
        .assert_contains("files/sshd/9.2/sshd_config")
        .assert_contains("Bad configuration option: NoSuchOption");
    assert!(
        !env.git_in(&env.work(), &["rev-parse", "-q", "--verify", "HEAD"])
            .success(),
        "validate must work before the first commit"
    );
    env.assert_tmp_empty();
}

#[test]
fn validate_checks_uncommitted_changes_in_the_working_tree() {
    let env = Env::new();
    env.pushed_infra();
    env.append(SSHD_96, "NoSuchOption yes");

    env.rollgate(&["validate"]).assert_code(1).assert_dir_line(
        "FAILED",
        "sshd 9.6",
        "files/sshd/9.6",
    );
    // The committed revision is still fine.
    env.rollgate(&["validate", "--rev", "HEAD"]).assert_code(0);
    env.assert_tmp_empty();
}

#[test]
fn validate_rev_checks_what_changed_since_upstream_and_all_checks_everything() {
    let env = Env::new();
    env.pushed_infra();
    env.append(SSHD_96, "# tighten later");
    env.commit("change sshd 9.6");

    let out = env.rollgate(&["validate", "--rev", "HEAD"]);

    out.assert_code(0)
        .assert_contains("checking 1 of 3")
        .assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6");
    assert!(out.lines_with(&["sshd 9.2"]).is_empty(), "{out}");

    let out = env.rollgate(&["validate", "--rev", "HEAD", "--all"]);

    out.assert_code(0)
        .assert_contains("checking 3 of 3")
        .assert_dir_line("ok", "sshd 9.2", "files/sshd/9.2")
        .assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6")
        .assert_dir_line("ok", "nginx 1.22", "files/nginx/1.22");

    env.append(SSHD_96, "NoSuchOption yes");
    env.commit("broken sshd 9.6");

    env.rollgate(&["validate", "--rev", "HEAD"])
        .assert_code(1)
        .assert_dir_line("FAILED", "sshd 9.6", "files/sshd/9.6")
        .assert_contains("Bad configuration option");
    // An earlier revision by expression.
    env.rollgate(&["validate", "--rev", "HEAD~1", "--all"])
        .assert_code(0);
    env.assert_tmp_empty();
}

#[test]
fn validate_rev_works_on_the_bare_repository() {
    let env = Env::new();
    env.pushed_infra();

    let out = env.rollgate(&[
        "validate",
        "--repo",
        path_str(&env.remote()),
        "--rev",
        "main",
        "--all",
    ]);

    out.assert_code(0).assert_contains("checking 3 of 3");
    // A bare repository has no working tree to validate.
    env.rollgate(&["validate", "--repo", path_str(&env.remote())])
        .assert_code(2);
    env.assert_tmp_empty();
}

#[test]
fn validate_config_errors_exit_2() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    env.replace(
        "rollgate.toml",
        "default_group = \"canary\"",
        "default_group = \"canary",
    );

    env.rollgate(&["validate"])
        .assert_code(2)
        .assert_contains("rollgate.toml")
        .assert_contains("line 3, column");

    env.write_infra();
    env.replace("rollgate.toml", "default_group", "defualt_group");
    env.rollgate(&["validate"])
        .assert_code(2)
        .assert_contains("defualt_group");

    env.write_infra();
    env.rollgate(&["validate", "--rev", "no-such-rev"])
        .assert_code(2)
        .assert_contains("no-such-rev");
    env.assert_tmp_empty();
}

#[test]
fn validate_refuses_a_symlink_out_of_the_working_tree() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    env.symlink(SSHD_92, "/etc/passwd");

    let out = env.rollgate(&["validate"]);

    out.assert_code(1)
        .assert_contains("files/sshd/9.2/sshd_config")
        .assert_contains("symlink");
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    for line in passwd.lines().filter(|l| !l.trim().is_empty()) {
        assert!(!out.contains(line), "echoed {line:?}\n{out}");
    }
    env.assert_tmp_empty();
}

#[test]
fn validate_kills_a_hung_checker_at_its_timeout() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    let (check, pattern) = hanging_check(3003);
    env.write("rollgate.toml", &probe_toml(&check, "1s"));
    env.write("files/probe/1.0/probe.conf", "x\n");

    let out = env.rollgate(&["validate"]);

    out.assert_code(1)
        .assert_dir_line("FAILED", "probe 1.0", "files/probe/1.0")
        .assert_contains("timed out");
    env.assert_no_process(&pattern, &out);
    env.assert_tmp_empty();
}
