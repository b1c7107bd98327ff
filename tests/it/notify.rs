//! Notifications (issue 12, item 7): the policy's `notify` argv runs after
//! every deploy (push or CLI; done, failed or refused) with the run's
//! summary as JSON on stdin, and whatever happens to it never changes the
//! run's outcome. The notify command here is a real `tee` writing what it
//! read to a file.

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::fleet::{Fleet, Spec, sh};
use crate::support::{SSHD_96, path_str};

/// Sets the server policy's `notify` to `argv` (a TOML array).
fn set_notify(f: &Fleet, argv: &str) {
    let path = f.env.remote().join("rollgate/policy.toml");
    let text = fs::read_to_string(&path).expect("the policy file");
    assert!(text.contains("notify = []"), "{text}");
    fs::write(
        &path,
        text.replace("notify = []", &format!("notify = {argv}")),
    )
    .expect("write the policy");
}

/// What the notify command read, which must be one JSON object; the file
/// is removed, so the next run's summary is not confused with this one.
#[track_caller]
fn take(path: &Path) -> Value {
    let text = fs::read_to_string(path).expect("notify wrote nothing");
    fs::remove_file(path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn notify_gets_the_summary_of_a_successful_and_of_a_failed_push() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    // Fails for a revision whose files say so: a host failure, not a check.
    spec.health = Some(sh(
        "if grep -q 'unhealthy' {root}/{host}/etc/ssh/sshd_config; then echo {host} answers 503 >&2; exit 1; fi",
    ));
    let a = f.start(&spec);
    let out_file = f.env.path("notified.json");
    set_notify(&f, &format!(r#"["tee", "{}"]"#, path_str(&out_file)));

    // Done.
    let b = f.change("b");
    let out = f.push_as(&[("GL_USER", "alice")], &[]);
    f.assert_landed(&out, &b);
    let n = take(&out_file);
    let run = f.runs().pop().unwrap();
    assert_eq!(n["run"], run.id.as_str(), "{n:#}");
    assert_eq!(n["via"], "push");
    assert_eq!(n["who"], "alice");
    assert_eq!(n["action"], "deploy");
    assert_eq!(n["revision"], b.as_str());
    assert_eq!(n["scope"], "group canary (default)");
    assert_eq!(n["outcome"], "ok");
    assert!(n["error"].is_null(), "{n:#}");
    assert!(n["break_glass"].is_null(), "{n:#}");
    assert!(n["duration_ms"].as_u64().is_some(), "{n:#}");
    let hosts = n["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{n:#}");
    assert_eq!(hosts[0]["host"], "server04");
    assert_eq!(hosts[0]["group"], "canary");
    assert_eq!(hosts[0]["service"], "sshd");
    assert_eq!(hosts[0]["version"], "9.6");
    assert_eq!(hosts[0]["result"], "ok");

    // A host fails its health: the push is rejected, the summary says so.
    f.env.append(SSHD_96, "# unhealthy");
    f.env.commit("unhealthy");
    let out = f.push_as(&[("GL_USER", "alice")], &[]);
    f.assert_rejected(&out, Some(&b));
    let n = take(&out_file);
    assert_eq!(n["outcome"], "failed", "{n:#}");
    assert!(n["error"].as_str().unwrap().contains("server04"), "{n:#}");
    let steps: Vec<(&str, &str)> = n["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["action"].as_str().unwrap(), h["result"].as_str().unwrap()))
        .collect();
    assert_eq!(steps, [("deploy", "failed"), ("restore", "ok")], "{n:#}");

    // A failed check: refused before any run, still notified.
    f.env
        .replace(SSHD_96, "# unhealthy\n", "NoSuchOption yes\n");
    let c = f.env.commit("broken");
    let out = f.push_as(&[("GL_USER", "alice")], &[]);
    f.assert_rejected(&out, Some(&b));
    let n = take(&out_file);
    assert_eq!(n["outcome"], "failed", "{n:#}");
    assert_eq!(n["revision"], c.as_str());
    assert!(n["run"].is_null(), "{n:#}");
    assert!(
        n["error"].as_str().unwrap().contains("validation failed"),
        "{n:#}"
    );
    assert_eq!(n["hosts"], serde_json::json!([]));

    // The CLI too: `deploy` of `a` to the farm.
    let remote = f.env.remote();
    let out = f.env.rollgate(&[
        "deploy",
        "--rev",
        &a,
        "--group",
        "farm",
        "--repo",
        path_str(&remote),
    ]);
    out.assert_ok();
    let n = take(&out_file);
    assert_eq!(n["via"], "cli", "{n:#}");
    assert_eq!(n["scope"], "group farm");
    assert_eq!(n["outcome"], "ok");
    assert_eq!(n["hosts"].as_array().unwrap().len(), 3, "{n:#}");

    // Validate-only deploys nothing: no notification.
    f.env.replace(SSHD_96, "NoSuchOption yes\n", "");
    f.env.commit("fixed");
    f.env.push(&["-o", "validate-only"]).assert_ok();
    assert!(!out_file.exists(), "validate-only notified");
    f.assert_clean();
}

#[test]
fn a_failing_or_hanging_notify_is_a_warning_and_bounded() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.groups[0].batch = 1;
    f.start(&spec);

    set_notify(&f, r#"["sh", "-c", "echo webhook says 500 >&2; exit 22"]"#);
    let b = f.change("b");
    let out = f.push_as(&[], &[]);
    f.assert_landed(&out, &b);
    f.assert_line(&out, &["warning: notify", "exit status 22", "not affected"]);
    f.assert_line(&out, &["webhook says 500"]);
    f.assert_on("server04", &b, SSHD_96);

    // A notify that hangs (with a child of its own) is killed at its
    // timeout; the push still lands, exit 0.
    let marker = f.env.path("hung");
    let path = f.env.remote().join("rollgate/policy.toml");
    let text = fs::read_to_string(&path).unwrap();
    let old = text.lines().find(|l| l.starts_with("notify = ")).unwrap();
    fs::write(
        &path,
        text.replace(
            old,
            &format!(
                r#"notify = ["sh", "-c", "sleep 300 & sleep 300", "{}"]"#,
                path_str(&marker)
            ),
        ),
    )
    .unwrap();
    let c = f.change("c");
    let out = f.push_as(&[], &[]);
    f.assert_landed(&out, &c);
    f.assert_line(&out, &["warning: notify", "timed out after 20s"]);
    assert!(
        out.duration < Duration::from_secs(45),
        "the notify held the push for {:?}",
        out.duration
    );
    f.assert_clean();
}

/// The hook as the unprivileged git user (uid 65534, as a real server runs
/// it): a break-glass push of a broken sshd_config lands, and its notify
/// (run as that user, its stdin a file the hook wrote) gets the summary
/// with the reason and the failed check.
#[test]
fn as_an_unprivileged_git_user_break_glass_and_notify_work() {
    let f = Fleet::new();
    f.init(&Spec::standard());
    let out_file = f.env.path("notified.json");
    let root = f.env.root();
    let ok = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown the test root");
    fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let as_git_user = |args: &[&str]| {
        let mut cmd = f.env.command("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(args);
        f.env.run(cmd)
    };
    as_git_user(&["git", "push", "origin", "main"]).assert_ok();
    // USER=tester is who pushes (the environment says so, not the uid).
    let path = f.env.remote().join("rollgate/policy.toml");
    let text = fs::read_to_string(&path).unwrap();
    let text = text
        .replace("break_glass = []", r#"break_glass = ["tester"]"#)
        .replace(
            "notify = []",
            &format!(r#"notify = ["tee", "{}"]"#, path_str(&out_file)),
        );
    fs::write(&path, text).unwrap();

    f.env.append(SSHD_96, "NoSuchOption yes");
    as_git_user(&["git", "commit", "-q", "-am", "broken"]).assert_ok();
    let b = as_git_user(&["git", "rev-parse", "HEAD"])
        .stdout
        .trim()
        .to_string();
    let out = as_git_user(&["git", "push", "-o", "break-glass=INC-7", "origin", "main"]);
    out.assert_ok();
    f.assert_line(
        &out,
        &[
            "BREAK-GLASS by tester",
            "INC-7",
            "deploying despite 1 failed check",
        ],
    );
    // (`assert_on` reads the commit with git as root, which refuses the
    // git user's clone: compare with the clone's file, which is `b`'s.)
    assert_eq!(
        f.deployed("server04"),
        Some(fs::read(f.env.work().join(SSHD_96)).unwrap()),
        "server04 does not hold the pushed sshd_config"
    );
    let n = take(&out_file);
    assert_eq!(n["outcome"], "ok", "{n:#}");
    assert_eq!(n["revision"], b.as_str());
    assert_eq!(n["break_glass"]["reason"], "INC-7");
    assert_eq!(
        n["break_glass"]["failed"].as_array().unwrap().len(),
        1,
        "{n:#}"
    );
    f.assert_clean();
}
