//! The deploy history in git (`refs/rollgate/journal`, `refs/deploy/GROUP`)
//! and the verbs in a clone: `status`, `log` and `plan` answer from the
//! server's fetched journal; `deploy` and `rollback` are pushes, so the
//! server deploys and keeps the only journal.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::fleet::{Fleet, PATIENCE, Spec, sh};
use crate::support::{Env, SSHD_92, SSHD_96, path_str};

const JOURNAL_REF: &str = "refs/rollgate/journal";

/// The clone must never get a journal or a lock of its own.
#[track_caller]
fn assert_no_local_journal(env: &Env) {
    let dir = env.work().join(".git/rollgate");
    assert!(!dir.exists(), "the clone got {}", dir.display());
}

/// The server's whole journal (sealed segments are not reached here).
fn server_journal(env: &Env) -> String {
    std::fs::read_to_string(env.remote().join("rollgate/journal.jsonl")).unwrap_or_default()
}

/// `journal.jsonl` as committed in the bare repository's journal ref.
fn published_journal(env: &Env) -> Option<String> {
    let out = env.git_in(
        &env.remote(),
        &["show", &format!("{JOURNAL_REF}:journal.jsonl")],
    );
    out.success().then(|| out.stdout.clone())
}

fn json(out: &crate::support::Outcome) -> Value {
    out.assert_ok();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("no JSON ({e})\n{out}"))
}

#[test]
fn a_push_publishes_the_journal_and_the_group_ref_and_a_clone_reads_them() {
    let f = Fleet::new();
    let env = &f.env;
    // Before anything ran, a clone says so (and exits 0).
    f.init(&Spec::standard());
    env.rollgate(&["status"])
        .assert_ok()
        .assert_contains("no deploy history");
    let id = env.head();
    f.assert_landed(&env.push(&[]), &id);

    // The bare repository: the journal committed, canary's ref on what it runs.
    assert_eq!(
        published_journal(env).as_deref(),
        Some(server_journal(env).as_str())
    );
    assert_eq!(
        env.remote_ref("refs/deploy/canary").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        env.remote_ref("refs/deploy/farm"),
        None,
        "farm runs nothing yet"
    );

    // `git fetch` brings both.
    env.git_ok(
        &env.work(),
        &[
            "fetch",
            "-q",
            "origin",
            "refs/rollgate/*:refs/rollgate/*",
            "refs/deploy/*:refs/deploy/*",
        ],
    );
    assert_eq!(
        env.git_ok(&env.work(), &["rev-parse", "refs/deploy/canary"]),
        id
    );
    assert_eq!(
        env.git_ok(&env.work(), &["rev-parse", JOURNAL_REF]),
        env.remote_ref(JOURNAL_REF).unwrap()
    );

    // status and log in the clone are the server's.
    let here = json(&env.rollgate(&["status", "--json"]));
    let there = json(&env.rollgate(&["status", "--json", "--repo", path_str(&env.remote())]));
    assert_eq!(here, there);
    assert_eq!(here[0]["host"], "server04");
    assert_eq!(here[0]["rev"], id.as_str());
    env.rollgate(&["status"])
        .assert_ok()
        .assert_contains("server04")
        .assert_contains(&id[..7]);
    let log_here = json(&env.rollgate(&["log", "--json"]));
    let log_there = json(&env.rollgate(&["log", "--json", "--repo", path_str(&env.remote())]));
    assert_eq!(log_here, log_there);
    assert_eq!(log_here.as_array().map(Vec::len), Some(1));

    // plan in the clone knows what canary runs: nothing changes.
    let plan = json(&env.rollgate(&["plan", "--rev", &id, "--json"]));
    assert_eq!(plan[0]["host"], "server04", "{plan:#}");
    let plan_text = env.rollgate(&["plan", "--rev", &id]);
    plan_text.assert_ok().assert_lacks("+#");
    assert_no_local_journal(env);
    f.assert_clean();
}

#[test]
fn deploy_and_rollback_in_a_clone_go_through_the_server() {
    let f = Fleet::new();
    let env = &f.env;
    let first = f.start(&Spec::standard());

    // deploy: a push to refs/deploy/farm; the server's output is shown.
    let out = env.rollgate(&["deploy", "--rev", &first, "--group", "farm"]);
    out.assert_ok()
        .assert_contains("refs/deploy/farm")
        .assert_contains("remote:");
    for host in ["server01", "server02", "server03"] {
        f.assert_on(host, &first, SSHD_92);
    }
    assert_eq!(
        env.remote_ref("refs/deploy/farm").as_deref(),
        Some(first.as_str())
    );
    assert!(
        f.runs()
            .iter()
            .any(|r| r.planned().iter().any(|h| h.starts_with("farm/"))),
        "the server's journal has no farm run"
    );
    assert_eq!(
        published_journal(env).as_deref(),
        Some(server_journal(env).as_str())
    );

    // A new revision on canary, then a rollback from the clone: a forced push.
    let second = f.change("b");
    f.assert_landed(&env.push(&[]), &second);
    f.assert_on("server04", &second, SSHD_96);
    assert_eq!(
        env.remote_ref("refs/deploy/canary").as_deref(),
        Some(second.as_str())
    );
    let out = env.rollgate(&["rollback", "--to", &first, "--group", "canary"]);
    out.assert_ok()
        .assert_contains("--force")
        .assert_contains("forced update");
    f.assert_on("server04", &first, SSHD_96);
    assert_eq!(
        env.remote_ref("refs/deploy/canary").as_deref(),
        Some(first.as_str())
    );
    // farm still runs `first`: its ref did not move with canary's.
    assert_eq!(
        env.remote_ref("refs/deploy/farm").as_deref(),
        Some(first.as_str())
    );
    let log = json(&env.rollgate(&["log", "--json", "-n", "1"]));
    assert_eq!(log[0]["rev"], first.as_str(), "{log:#}");

    // What has no push equivalent is refused, naming the way.
    env.rollgate(&["deploy", "--rev", &first, "--host", "server01"])
        .assert_code(2)
        .assert_contains("--host server01");
    env.rollgate(&["rollback", "--group", "canary"])
        .assert_code(2)
        .assert_contains("--to");
    env.rollgate(&["status", "--remote", "nowhere"])
        .assert_code(2)
        .assert_contains("no remote `nowhere`");
    assert_no_local_journal(env);
    f.assert_clean();
}

#[test]
fn a_rejected_push_leaves_the_journal_ref_consistent() {
    let f = Fleet::new();
    let env = &f.env;
    // The deploy fails on a host that has a `.fail` file.
    let mut spec = Spec::standard();
    spec.deploy = sh("test ! -e {root}/{host}.fail \
         && rsync -a --checksum --delete --mkpath {dir}/ {root}/{host}/etc/ssh/");
    let first = f.start(&spec);
    let published = env
        .remote_ref(JOURNAL_REF)
        .expect("published after the first push");

    // A failing check: nothing runs, nothing is recorded or published.
    env.append(SSHD_96, "NoSuchDirective yes");
    let broken = env.commit("broken");
    f.assert_rejected(&env.push(&[]), Some(&first));
    assert_eq!(
        env.remote_ref(JOURNAL_REF).as_deref(),
        Some(published.as_str())
    );
    env.git_ok(&env.work(), &["reset", "-q", "--hard", &first]);
    assert_ne!(broken, first);

    // A failing host: the run is recorded on the server, the push rejected;
    // its records reach the ref once git is done with the push.
    std::fs::write(f.hosts.join("server04.fail"), "").unwrap();
    let second = f.change("c");
    f.assert_rejected(&env.push(&[]), Some(&first));
    let started = Instant::now();
    while published_journal(env).as_deref() != Some(server_journal(env).as_str()) {
        assert!(
            started.elapsed() < PATIENCE,
            "the rejected run's records never reached {JOURNAL_REF}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(server_journal(env).contains(&second));
    // canary did not move to the rejected revision.
    assert_eq!(
        env.remote_ref("refs/deploy/canary").as_deref(),
        Some(first.as_str())
    );
    // Every ref names an object the repository has.
    env.git_ok(&env.remote(), &["fsck", "--no-progress"]);
    let chain = env.git_ok(&env.remote(), &["rev-list", "--count", JOURNAL_REF]);
    assert!(chain.parse::<u32>().unwrap() >= 2, "{chain}");
    // A clone reads the failure from the server.
    let log = json(&env.rollgate(&["log", "--json", "-n", "1"]));
    assert_eq!(log[0]["rev"], second.as_str(), "{log:#}");
    assert_no_local_journal(env);
    f.assert_clean();
}

/// Publishing is best effort: a journal ref that cannot be written (here a
/// stuck `.lock` beside it, as a crashed writer or a full disk leaves) is a
/// warning the pusher sees; the push lands, the journal keeps the run, and
/// the next publication carries everything.
#[test]
fn a_journal_ref_that_cannot_be_written_is_a_warning_and_caught_up_later() {
    let f = Fleet::new();
    let env = &f.env;
    let first = f.start(&Spec::standard());
    assert!(env.remote_ref(JOURNAL_REF).is_some());
    let stuck = env.remote().join("refs/rollgate/journal.lock");
    std::fs::write(&stuck, "").unwrap();

    let second = f.change("b");
    let out = env.push(&[]);
    f.assert_landed(&out, &second);
    out.assert_contains("warning: the deploy history was not published to refs/rollgate/journal");
    f.assert_on("server04", &second, SSHD_96);
    assert!(server_journal(env).contains(&second));
    assert_ne!(
        published_journal(env).as_deref(),
        Some(server_journal(env).as_str()),
        "published through a stuck lock"
    );
    assert_ne!(first, second);

    // The lock goes; the next push publishes both runs.
    f.wait_until_unlocked();
    std::fs::remove_file(&stuck).unwrap();
    let third = f.change("c");
    let out = env.push(&[]);
    f.assert_landed(&out, &third);
    out.assert_lacks("not published");
    let journal = server_journal(env);
    assert!(journal.contains(&second) && journal.contains(&third));
    assert_eq!(published_journal(env).as_deref(), Some(journal.as_str()));
    assert_eq!(
        env.remote_ref("refs/deploy/canary").as_deref(),
        Some(third.as_str())
    );
    env.git_ok(&env.remote(), &["fsck", "--no-progress"]);
    f.assert_clean();
}

/// The bare repository's own `status` is unchanged by all this: it reads
/// its journal directly, without any fetch.
#[test]
fn on_the_server_the_verbs_act_directly() {
    let f = Fleet::new();
    let env = &f.env;
    let id = f.start(&Spec::standard());
    let remote = env.remote();
    // No remote at all in a bare repository: status still answers.
    let out = env.rollgate_in(Path::new(&remote), &["status"]);
    out.assert_ok().assert_contains("server04");
    // A CLI deploy on the server publishes at its end.
    env.rollgate_in(&remote, &["deploy", "--rev", &id, "--group", "farm"])
        .assert_ok();
    assert_eq!(
        env.remote_ref("refs/deploy/farm").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        published_journal(env).as_deref(),
        Some(server_journal(env).as_str())
    );
    f.assert_clean();
}
