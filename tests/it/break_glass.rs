//! Break-glass (issue 11, item 5): `-o break-glass=REASON` deploys past
//! failed checks, only for pushers the server's policy names in
//! `break_glass`; loud, journaled with the reason and the failed checks,
//! flagged by `log` and `status`. Judged by real pushes with a real `sshd -t`
//! refusing a broken sshd_config.

use std::fs;

use crate::fleet::{Fleet, Spec, strings};
use crate::support::{SSHD_96, path_str};

/// Replaces `from` (which must occur) with `to` in the server's policy.
#[track_caller]
fn edit_policy(f: &Fleet, from: &str, to: &str) {
    let path = f.env.remote().join("rollgate/policy.toml");
    let text = fs::read_to_string(&path).expect("the policy file");
    assert!(text.contains(from), "the policy lacks {from:?}:\n{text}");
    fs::write(&path, text.replace(from, to)).expect("write the policy");
}

const REASON: &str = "INC-42: canary sshd down, fixing forward";

#[test]
fn a_listed_pusher_deploys_past_failed_checks_loudly_and_journaled() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    edit_policy(&f, "break_glass = []", r#"break_glass = ["alice"]"#);
    f.env.append(SSHD_96, "NoSuchOption yes");
    let b = f.env.commit("broken, but needed now");

    // Without break-glass the check refuses it, as always.
    let out = f.push_as(&[("GL_USER", "alice")], &[]);
    f.assert_rejected(&out, Some(&a));
    out.assert_dir_line("FAILED", "sshd 9.6", "files/sshd/9.6");
    f.assert_on("server04", &a, SSHD_96);

    let opt = format!("break-glass={REASON}");
    let out = f.push_as(&[("GL_USER", "alice")], &["-o", &opt]);
    f.assert_landed(&out, &b);
    out.assert_dir_line("FAILED", "sshd 9.6", "files/sshd/9.6");
    f.assert_line(
        &out,
        &[
            "BREAK-GLASS by alice",
            REASON,
            "deploying despite 1 failed check",
            "sshd 9.6 (files/sshd/9.6)",
        ],
    );
    f.assert_on("server04", &b, SSHD_96);

    // The journal: the start and host records carry the reason and what failed.
    let run = f.runs().pop().expect("a run");
    let bg = &run.start["break_glass"];
    assert_eq!(bg["reason"], REASON, "{:#}", run.start);
    let failed = strings(&bg["failed"]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("sshd 9.6 (files/sshd/9.6): "),
        "{failed:?}"
    );
    assert_eq!(run.start["who"], "alice");
    assert_eq!(run.steps.len(), 1);
    assert_eq!(run.steps[0]["break_glass"]["reason"], REASON);
    assert_eq!(run.end.as_ref().expect("an end")["result"], "ok");

    // log --json and text, status --json and text flag it.
    let log = f.log();
    assert_eq!(log[0]["break_glass"]["reason"], REASON, "{:#}", log[0]);
    assert!(log[1].get("break_glass").is_none(), "{:#}", log[1]);
    let remote = f.env.remote();
    let text = f.env.rollgate(&["log", "--repo", path_str(&remote)]);
    text.assert_ok();
    assert!(
        text.stdout
            .lines()
            .any(|l| l.contains("BREAK-GLASS") && l.contains(REASON) && l.contains("sshd 9.6")),
        "{text}"
    );
    assert_eq!(f.status_of("server04")["break_glass"], true);
    assert_eq!(f.status_of("server04")["result"], "ok");
    let text = f.env.rollgate(&["status", "--repo", path_str(&remote)]);
    text.assert_ok();
    assert!(
        text.stdout
            .lines()
            .any(|l| l.contains("server04") && l.contains("ok (break-glass)")),
        "{text}"
    );

    // The next ordinary (fixed) deploy clears the flag.
    f.env.replace(SSHD_96, "NoSuchOption yes\n", "");
    let c = f.env.commit("fixed");
    f.assert_landed(&f.push_as(&[("GL_USER", "alice")], &[]), &c);
    assert!(f.status_of("server04").get("break_glass").is_none());
    f.assert_clean();
}

#[test]
fn anyone_else_is_refused_and_nothing_deploys() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    edit_policy(&f, "break_glass = []", r#"break_glass = ["alice"]"#);
    let journal_before = f.journal().len();
    f.env.append(SSHD_96, "NoSuchOption yes");
    f.env.commit("broken");

    let out = f.push_as(&[("GL_USER", "mallory")], &["-o", "break-glass=trust me"]);
    f.assert_rejected(&out, Some(&a));
    out.assert_contains("mallory may not deploy past failed checks")
        .assert_contains("`break_glass`")
        .assert_contains("alice")
        .assert_contains("hint: ");
    out.assert_lacks("BREAK-GLASS");
    f.assert_on("server04", &a, SSHD_96);
    assert_eq!(
        f.journal().len(),
        journal_before,
        "the refusal was journaled as a run"
    );

    // Refused before any check runs, even when the checks would pass.
    let out = f.push_as(
        &[("GL_USER", "mallory")],
        &["-o", "break-glass=x", "-o", "validate-only"],
    );
    out.assert_code(1)
        .assert_contains("mallory may not deploy past failed checks");

    // alice with an empty reason: refused too, saying a reason is needed.
    for opt in ["break-glass=", "break-glass", "break-glass=  "] {
        let out = f.push_as(&[("GL_USER", "alice")], &["-o", opt]);
        f.assert_rejected(&out, Some(&a));
        out.assert_contains("needs a reason");
    }
    f.assert_on("server04", &a, SSHD_96);

    // The CLI the same way (the revision on a side branch, which the
    // policy then lets deploy).
    edit_policy(&f, "unmerged = false", "unmerged = true");
    let remote = f.env.remote();
    let b = f.env.git_ok(&f.env.work(), &["rev-parse", "HEAD"]);
    f.env.git_ok(
        &f.env.work(),
        &["push", "-q", "origin", "HEAD:refs/heads/side"],
    );
    let mut cmd = f.env.command(crate::support::ROLLGATE);
    cmd.args([
        "deploy",
        "--rev",
        &b,
        "--break-glass",
        "x",
        "--repo",
        path_str(&remote),
    ])
    .env("GL_USER", "mallory");
    let out = f.env.run(cmd);
    out.assert_failed()
        .assert_contains("mallory may not deploy past failed checks");
    f.assert_on("server04", &a, SSHD_96);
    f.assert_clean();
}

/// With nothing failing, break-glass deploys as usual but is still recorded.
#[test]
fn break_glass_with_passing_checks_is_journaled_and_via_the_cli() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    edit_policy(&f, "break_glass = []", r#"break_glass = ["alice"]"#);
    let b = f.change("b");
    let out = f.push_as(&[("GL_USER", "alice")], &["-o", "break-glass=just in case"]);
    f.assert_landed(&out, &b);
    f.assert_line(&out, &["BREAK-GLASS by alice", "every check passed"]);
    let run = f.runs().pop().unwrap();
    assert_eq!(run.start["break_glass"]["reason"], "just in case");
    assert_eq!(
        strings(&run.start["break_glass"]["failed"]),
        Vec::<String>::new()
    );

    // `rollgate deploy --break-glass` on the server: a broken revision on a
    // side branch (which `unmerged = true` lets deploy), past its failed check.
    edit_policy(&f, "unmerged = false", "unmerged = true");
    f.env.append(SSHD_96, "NoSuchOption yes");
    let c = f.env.commit("broken");
    f.env.git_ok(
        &f.env.work(),
        &["push", "-q", "origin", "HEAD:refs/heads/side"],
    );
    let remote = f.env.remote();
    let cli = |who: &str, reason: Option<&str>| {
        let mut cmd = f.env.command(crate::support::ROLLGATE);
        cmd.args(["deploy", "--rev", &c, "--repo", path_str(&remote)])
            .env("GL_USER", who);
        if let Some(r) = reason {
            cmd.args(["--break-glass", r]);
        }
        f.env.run(cmd)
    };
    cli("alice", None).assert_failed().assert_contains("FAILED");
    f.assert_on("server04", &b, SSHD_96);
    let out = cli("alice", Some("INC-9"));
    out.assert_ok();
    f.assert_line(
        &out,
        &["BREAK-GLASS by alice", "INC-9", "deploying despite"],
    );
    f.assert_on("server04", &c, SSHD_96);
    let run = f.runs().pop().unwrap();
    assert_eq!(run.start["break_glass"]["reason"], "INC-9");
    assert_eq!(strings(&run.start["break_glass"]["failed"]).len(), 1);
    assert_eq!(f.status_of("server04")["break_glass"], true);
    let _ = a;
    f.assert_clean();
}
