//! The guarded rollout (issue 3), as a pusher and an operator meet it: real
//! `git push` to a bare repository with the hook installed, real `sshd -t`
//! checks, real `rsync` deploys to hosts that are local directories, and the
//! real `rollgate` CLI. Each test judges by what the client saw, the exit
//! status, where the refs ended up, the journal, `status --json` / `log
//! --json`, and the files on the hosts. Ordering is proved from timestamps
//! the deploy commands write, never from sleeps or durations.

use std::fs;

use crate::fleet::{
    Fleet, Interval, KilledPush, MAIN, Running, Spec, Tree, group, sh, timed_deploy, wait_until,
};
use crate::support::{SSHD_92, SSHD_96, path_str};

const FARM: [&str; 3] = ["server01", "server02", "server03"];

fn short(id: &str) -> &str {
    &id[..10]
}

/// A health check that fails only for revision `{rev}` on a host that has
/// a `{root}/{host}.{rev}.broken` marker, and says why on stderr. Tied to
/// the revision so that putting the host back on the previous revision (with
/// that revision's commands) passes it.
fn health_spec(on_failure: Option<&str>, farm: &[&str], batch: usize) -> Spec {
    let mut spec = Spec::standard();
    if let Some(mode) = on_failure {
        spec.top.push(format!("on_failure = \"{mode}\""));
    }
    spec.health = Some(sh(
        "if test -e {root}/{host}.{rev}.broken; then echo {host} answers 503 >&2; exit 1; fi",
    ));
    spec.service.push("health_wait = \"1s\"".into());
    spec.groups[1] = group("farm", farm, batch, "9.2");
    spec
}

/// Deploy that records its start, copies, then holds until `{root}/release`
/// exists (at most a minute), then records its end: a deploy the test can
/// keep "in progress" for as long as it needs, without guessing durations.
pub fn gated_deploy() -> Vec<String> {
    sh("set -e; echo start $(date +%s%N) >> {root}/{host}.times; \
        rsync -a --checksum --delete --mkpath {dir}/ {root}/{host}/etc/ssh/; \
        n=0; while [ ! -e {root}/release ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done; \
        echo end $(date +%s%N) >> {root}/{host}.times")
}

/// The `{root}/release` file [`gated_deploy`] waits for. Opened on drop
/// too, so that a failing test leaves no deploy waiting behind it.
pub struct Gate(std::path::PathBuf);

impl Gate {
    pub fn of(f: &Fleet) -> Gate {
        Gate(f.hosts.join("release"))
    }

    pub fn open(&self) {
        fs::write(&self.0, "").unwrap();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = fs::write(&self.0, "");
    }
}

fn count_starts(f: &Fleet, host: &str) -> usize {
    fs::read_to_string(f.hosts.join(format!("{host}.times")))
        .map(|t| t.lines().filter(|l| l.starts_with("start ")).count())
        .unwrap_or(0)
}

fn last(f: &Fleet, host: &str) -> Interval {
    *f.intervals(host)
        .last()
        .unwrap_or_else(|| panic!("{host} has no recorded deploy"))
}

// ---- scope: one group unless widened ----------------------------------------

#[test]
fn plain_push_deploys_to_the_canary_only() {
    let f = Fleet::new();
    for h in FARM {
        f.populate(h);
    }
    let farm_before: Vec<Tree> = FARM.iter().map(|h| f.tree(h)).collect();
    let a = f.init(&Spec::standard());

    let out = f.env.push(&[]);

    f.assert_landed(&out, &a);
    f.assert_on("server04", &a, SSHD_96);
    for (h, before) in FARM.iter().zip(&farm_before) {
        assert_eq!(&f.tree(h), before, "{h} was touched by a plain push\n{out}");
        assert!(f.intervals(h).is_empty(), "{h}'s deploy ran\n{out}");
    }
    assert_eq!(f.intervals("server04").len(), 1);
    // The pusher is told per host and in a closing summary.
    assert_eq!(out.lines_with(&["[server04] ok"]).len(), 1, "{out}");
    f.assert_line(&out, &["deployed", short(&a), "group canary", "1 ok"]);
    for h in FARM {
        out.assert_lacks(h);
    }

    let runs = f.runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!(run.planned(), ["canary/server04"]);
    assert_eq!(run.start["action"], "deploy");
    assert_eq!(run.start["rev"], a.as_str());
    assert_eq!(
        run.step_list(),
        [("deploy".into(), "server04".into(), a.clone(), "ok".into())]
    );
    let step = &run.steps[0];
    assert_eq!(
        (
            &step["group"],
            &step["service"],
            &step["version"],
            &step["who"]
        ),
        (
            &"canary".into(),
            &"sshd".into(),
            &"9.6".into(),
            &"tester".into()
        )
    );
    let end = run.end.as_ref().expect("the run ended");
    assert_eq!(end["result"], "ok");

    let status = f.status();
    assert_eq!(status.len(), 1, "only the canary has a state: {status:#?}");
    let row = &status[0];
    assert_eq!(row["host"], "server04");
    assert_eq!(row["group"], "canary");
    assert_eq!(row["version"], "9.6");
    assert_eq!(row["rev"], a.as_str());
    assert_eq!(row["result"], "ok");
    assert_eq!(row["action"], "deploy");
    let log = f.log();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["result"], "ok");
    assert_eq!(log[0]["rev"], a.as_str());
    f.assert_clean();
}

#[test]
fn push_option_group_deploys_to_that_group_only() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    let canary = f.tree("server04");
    let b = f.change("b");

    let out = f.env.push(&["-o", "group=farm"]);

    f.assert_landed(&out, &b);
    for h in FARM {
        f.assert_on(h, &b, SSHD_92);
    }
    assert_eq!(f.tree("server04"), canary, "the canary was touched\n{out}");
    assert_eq!(f.intervals("server04").len(), 1);
    f.assert_line(&out, &["deployed", short(&b), "group farm", "3 ok"]);

    let runs = f.runs();
    assert_eq!(runs.len(), 2);
    let run = &runs[1];
    assert_eq!(
        run.planned(),
        ["farm/server01", "farm/server02", "farm/server03"]
    );
    assert_eq!(run.start["options"], serde_json::json!(["group=farm"]));
    let mut hosts = run.hosts();
    hosts.sort();
    assert_eq!(hosts, FARM);
    assert!(
        run.steps
            .iter()
            .all(|s| s["rev"] == b.as_str() && s["result"] == "ok")
    );
    assert_eq!(f.status_of("server04")["rev"], a.as_str());
    for h in FARM {
        assert_eq!(f.status_of(h)["rev"], b.as_str());
    }
    f.assert_clean();
}

#[test]
fn push_option_host_deploys_to_that_host_only() {
    let f = Fleet::new();
    for h in FARM {
        f.populate(h);
    }
    f.start(&Spec::standard());
    let others: Vec<(&str, Tree)> = ["server01", "server03", "server04"]
        .into_iter()
        .map(|h| (h, f.tree(h)))
        .collect();
    let b = f.change("b");

    let out = f.env.push(&["-o", "host=server02"]);

    f.assert_landed(&out, &b);
    f.assert_on("server02", &b, SSHD_92);
    for (h, before) in &others {
        assert_eq!(&f.tree(h), before, "{h} was touched\n{out}");
    }
    let runs = f.runs();
    assert_eq!(runs[1].planned(), ["farm/server02"]);
    assert_eq!(runs[1].hosts(), ["server02"]);
    f.assert_line(&out, &["deployed", short(&b), "host server02", "1 ok"]);
    f.assert_clean();
}

#[test]
fn push_option_all_deploys_the_default_group_first_then_file_order() {
    let f = Fleet::new();
    // File order farm, edge, canary; the default group is last in the file.
    let mut spec = Spec::standard();
    spec.groups = vec![
        group("farm", &FARM, 2, "9.2"),
        group("edge", &["server07"], 1, "9.2"),
        group("canary", &["server04"], 1, "9.6"),
    ];
    let a = f.init(&spec);

    let out = f.env.push(&["-o", "all"]);

    f.assert_landed(&out, &a);
    f.assert_on("server04", &a, SSHD_96);
    for h in FARM.iter().chain(&["server07"]) {
        f.assert_on(h, &a, SSHD_92);
    }
    f.assert_line(&out, &["deployed", short(&a), "all groups", "5 ok"]);

    // The journal: planned and done canary, then farm, then edge.
    let runs = f.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].planned(),
        [
            "canary/server04",
            "farm/server01",
            "farm/server02",
            "farm/server03",
            "edge/server07"
        ]
    );
    let hosts = runs[0].hosts();
    assert_eq!(hosts[0], "server04", "{hosts:?}");
    let mut middle = hosts[1..4].to_vec();
    middle.sort();
    assert_eq!(middle, FARM, "{hosts:?}");
    assert_eq!(hosts[4], "server07", "{hosts:?}");

    // The deploy commands' own clocks: each group began after the previous
    // group's last host had finished.
    let canary = last(&f, "server04");
    let farm: Vec<Interval> = FARM.iter().map(|h| last(&f, h)).collect();
    let edge = last(&f, "server07");
    let farm_first_start = farm.iter().map(|i| i.start).min().unwrap();
    let farm_last_end = farm.iter().map(|i| i.end).max().unwrap();
    assert!(
        canary.end <= farm_first_start,
        "farm started before the canary ended: {canary:?} {farm:?}"
    );
    assert!(
        farm_last_end <= edge.start,
        "edge started before the farm ended: {farm:?} {edge:?}"
    );
    f.assert_clean();
}

#[test]
fn deploy_ref_widens_an_already_pushed_revision_without_a_new_commit() {
    let f = Fleet::new();
    for h in FARM {
        f.populate(h);
    }
    let farm_before: Vec<Tree> = FARM.iter().map(|h| f.tree(h)).collect();
    let a = f.start(&Spec::standard());
    for (h, before) in FARM.iter().zip(&farm_before) {
        assert_eq!(&f.tree(h), before, "{h} was touched by the plain push");
    }
    let canary = f.tree("server04");
    let count = |f: &Fleet| {
        f.env
            // rollgate's own history (refs/rollgate/journal) is not config.
            .git_ok(
                &f.env.remote(),
                &["rev-list", "--count", "--exclude=refs/rollgate/*", "--all"],
            )
    };
    let commits = count(&f);

    let out = f
        .env
        .git_push(&["origin", &format!("{a}:refs/deploy/farm")]);

    out.assert_ok();
    assert_eq!(f.env.remote_ref("refs/deploy/farm").as_deref(), Some(&*a));
    assert_eq!(f.env.remote_ref(MAIN).as_deref(), Some(&*a));
    assert_eq!(count(&f), commits, "a new commit appeared");
    for h in FARM {
        f.assert_on(h, &a, SSHD_92);
    }
    assert_eq!(f.tree("server04"), canary, "the canary was touched\n{out}");
    f.assert_line(&out, &["deployed", short(&a), "group farm", "3 ok"]);
    let runs = f.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].start["rev"], a.as_str());
    assert_eq!(runs[1].start["action"], "deploy");
    assert_eq!(
        runs[1].planned(),
        ["farm/server01", "farm/server02", "farm/server03"]
    );

    // refs/deploy/all: the same revision everywhere, canary first.
    let out = f.env.git_push(&["origin", &format!("{a}:refs/deploy/all")]);

    out.assert_ok();
    f.assert_line(&out, &["deployed", short(&a), "all groups", "4 ok"]);
    assert_eq!(f.env.remote_ref("refs/deploy/all").as_deref(), Some(&*a));
    let runs = f.runs();
    assert_eq!(runs.len(), 3);
    assert_eq!(
        runs[2].planned(),
        [
            "canary/server04",
            "farm/server01",
            "farm/server02",
            "farm/server03"
        ]
    );
    assert_eq!(runs[2].hosts()[0], "server04");
    assert_eq!(f.intervals("server04").len(), 2);
    let canary = last(&f, "server04");
    for h in FARM {
        assert_eq!(f.intervals(h).len(), 2, "{h}");
        assert!(
            canary.end <= last(&f, h).start,
            "{h} started before the canary ended"
        );
        f.assert_on(h, &a, SSHD_92);
    }
    f.assert_clean();
}

#[test]
fn cli_deploy_widens_to_a_group() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    let canary = f.tree("server04");
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
    out.assert_contains("[server01] ok");
    f.assert_line(&out, &["deployed", short(&a), "group farm", "3 ok"]);
    for h in FARM {
        f.assert_on(h, &a, SSHD_92);
    }
    assert_eq!(f.tree("server04"), canary, "the canary was touched\n{out}");
    let runs = f.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[1].planned(),
        ["farm/server01", "farm/server02", "farm/server03"]
    );
    assert_eq!(runs[1].start["who"], "tester");
    assert_eq!(f.status_of("server02")["rev"], a.as_str());
    f.assert_clean();
}

// ---- refusals: nothing touched ----------------------------------------------

#[test]
fn unknown_group_host_or_option_is_refused_naming_the_choices_and_nothing_is_touched() {
    let f = Fleet::new();
    let a = f.init(&Spec::standard());

    let cases: [(&[&str], &str); 5] = [
        (&["-o", "group=nope"], "(groups: canary, farm)"),
        (
            &["-o", "host=server99"],
            "(hosts: server04, server01, server02, server03)",
        ),
        (
            &["-o", "colour=blue"],
            "rollgate knows: group=NAME, host=NAME, all, validate-only",
        ),
        (
            &["-o", "group="],
            "rollgate knows: group=NAME, host=NAME, all, validate-only",
        ),
        (&["-o", "all", "-o", "group=farm"], "conflict"),
    ];
    for (opts, says) in cases {
        let out = f.env.push(opts);
        f.assert_rejected(&out, None);
        out.assert_contains(says);
        assert!(f.hosts_listing().is_empty(), "{opts:?} wrote\n{out}");
        assert!(f.journal().is_empty(), "{opts:?} journaled a run\n{out}");
    }

    // A deploy ref naming a group that does not exist.
    let out = f
        .env
        .git_push(&["origin", &format!("{a}:refs/deploy/nope")]);
    out.assert_code(1)
        .assert_contains("pre-receive hook declined")
        .assert_contains("(groups: canary, farm)");
    assert_eq!(f.env.remote_ref("refs/deploy/nope"), None);

    // The CLI, once the revision is in the repository (deployed nowhere).
    let out = f.env.push(&["-o", "validate-only"]);
    f.assert_landed(&out, &a);
    // A deploy ref names its scope; `-o all` cannot widen it.
    let out = f
        .env
        .git_push(&["-o", "all", "origin", &format!("{a}:refs/deploy/farm")]);
    out.assert_code(1)
        .assert_contains("pre-receive hook declined");
    assert_eq!(f.env.remote_ref("refs/deploy/farm"), None);
    let remote = f.env.remote();
    let repo = path_str(&remote);
    let out = f
        .env
        .rollgate(&["deploy", "--rev", "main", "--group", "nope", "--repo", repo]);
    out.assert_code(2).assert_contains("(groups: canary, farm)");
    let out = f.env.rollgate(&[
        "deploy", "--rev", "main", "--host", "server99", "--repo", repo,
    ]);
    out.assert_code(2)
        .assert_contains("(hosts: server04, server01, server02, server03)");

    assert!(f.hosts_listing().is_empty(), "{:?}", f.hosts_listing());
    assert!(f.journal().is_empty(), "{:#?}", f.journal());
    f.assert_clean();
}

#[test]
fn several_groups_and_no_default_group_refuse_a_plain_push() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.default_group = None;
    let a = f.init(&spec);

    let out = f.env.push(&[]);

    f.assert_rejected(&out, None);
    out.assert_contains("no default_group")
        .assert_contains("canary, farm");
    assert!(f.hosts_listing().is_empty(), "{:?}", f.hosts_listing());
    assert!(f.journal().is_empty());

    // Naming the group is enough.
    let out = f.env.push(&["-o", "group=canary"]);
    f.assert_landed(&out, &a);
    f.assert_on("server04", &a, SSHD_96);
    // And the CLI refuses to guess too.
    let remote = f.env.remote();
    let out = f
        .env
        .rollgate(&["deploy", "--rev", "main", "--repo", path_str(&remote)]);
    out.assert_code(2).assert_contains("canary, farm");
    for h in FARM {
        assert!(!f.host(h).exists(), "{h} was written\n{out}");
    }
    assert_eq!(f.runs().len(), 1);
    f.assert_clean();
}

#[test]
fn dry_run_lists_hosts_and_commands_and_touches_nothing() {
    let f = Fleet::new();
    let a = f.init(&Spec::standard());
    let out = f.env.push(&["-o", "validate-only"]);
    f.assert_landed(&out, &a);
    out.assert_contains("nothing deployed");
    assert!(f.hosts_listing().is_empty());
    let remote = f.env.remote();

    let out = f.env.rollgate(&[
        "deploy",
        "--rev",
        "main",
        "--all",
        "--dry-run",
        "--repo",
        path_str(&remote),
    ]);

    out.assert_ok();
    out.assert_contains(&format!("would deploy {}", short(&a)))
        .assert_contains("group canary: 1 host")
        .assert_contains("group farm: 3 hosts, 2 at a time");
    for h in ["server04", "server01", "server02", "server03"] {
        let lines = out.lines_with(&[&format!("[{h}] sshd deploy:"), "rsync", "--delete"]);
        assert_eq!(lines.len(), 1, "no command line for {h}\n{out}");
    }
    assert!(f.hosts_listing().is_empty(), "{:?}", f.hosts_listing());
    assert!(f.journal().is_empty(), "{:#?}", f.journal());
    f.assert_clean();
}

// ---- batches --------------------------------------------------------------------

#[test]
fn a_batch_never_runs_more_hosts_at_once_and_starts_them_in_file_order() {
    let f = Fleet::new();
    let hosts = ["server01", "server02", "server03", "server05", "server06"];
    let mut spec = Spec::standard();
    spec.deploy = timed_deploy(Some("0.3"));
    spec.groups = vec![
        group("canary", &["canary01"], 1, "9.6"),
        group("farm", &hosts, 2, "9.2"),
    ];
    let a = f.init(&spec);

    let out = f.env.push(&["-o", "group=farm"]);

    f.assert_landed(&out, &a);
    assert!(!f.host("canary01").exists());
    let intervals: Vec<Interval> = hosts
        .iter()
        .map(|h| {
            let all = f.intervals(h);
            assert_eq!(all.len(), 1, "{h}: {all:?}");
            all[0]
        })
        .collect();
    // At no instant were more than two deploys running.
    for i in &intervals {
        let running = intervals
            .iter()
            .filter(|j| j.start <= i.start && i.start < j.end)
            .count();
        assert!(running <= 2, "{running} hosts at once: {intervals:#?}");
    }
    // In file order, each host after the first two taking the place of one
    // that had ended: the k-th started once k - 1 had ended.
    for (k, i) in intervals.iter().enumerate().skip(2) {
        let ended = intervals.iter().filter(|j| j.end <= i.start).count();
        assert!(
            ended >= k - 1,
            "host {k} started with only {ended} ended: {intervals:#?}"
        );
    }
    // The journal agrees: its batch records name the hosts as they start,
    // in file order.
    let run = f.runs()[0].id.clone();
    let started: Vec<String> = f
        .journal()
        .iter()
        .filter(|r| r["run"] == run.as_str() && r["event"] == "batch")
        .flat_map(|r| crate::fleet::strings(&r["hosts"]))
        .collect();
    let expected: Vec<String> = hosts.iter().map(|h| format!("farm/{h}")).collect();
    assert_eq!(started, expected, "batch records");
    f.assert_clean();
}

// ---- failure: stop, restore, reject ---------------------------------------------

#[test]
fn failing_health_starts_no_other_host_and_restores_every_touched_host() {
    let f = Fleet::new();
    let farm = ["server01", "server02", "server03", "server05"];
    let spec = health_spec(None, &farm, 1);
    let a = f.init(&spec);
    let out = f.env.push(&["-o", "all"]);
    f.assert_landed(&out, &a);
    let untouched: Vec<(&str, Tree)> = ["server03", "server05", "server04"]
        .into_iter()
        .map(|h| (h, f.tree(h)))
        .collect();
    // B changes the files and its own deploy command, which leaves a mark:
    // the restore must use A's files and A's commands.
    let mut spec_b = spec;
    spec_b.deploy[2].push_str(" && echo B >> {root}/{host}.b-deploys");
    f.write_spec(&spec_b);
    let b = f.change("b");
    fs::write(f.hosts.join(format!("server02.{b}.broken")), "").unwrap();

    let out = f.env.push(&["-o", "group=farm"]);

    f.assert_rejected(&out, Some(&a));
    let marks = |h: &str| {
        fs::read_to_string(f.hosts.join(format!("{h}.b-deploys")))
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    assert_eq!(marks("server02"), 1, "B's deploy ran on server02 once");
    assert_eq!(
        f.intervals("server02").len(),
        3,
        "A, then B, then the restore (with A's command)"
    );
    // What the pusher saw: the failure, the command's stderr, the restore,
    // and a summary.
    assert_eq!(
        out.lines_with(&["[server02] FAILED", "health"]).len(),
        1,
        "{out}"
    );
    out.assert_contains("| server02 answers 503");
    f.assert_line(&out, &["[server02]", "restored", short(&a)]);
    f.assert_line(&out, &["[server01]", "restored", short(&a)]);
    f.assert_line(&out, &["1 ok", "1 FAILED", "server02", "2 not started"]);
    // ... and where things stand now, host by host, as the last lines.
    f.assert_line(&out, &["restored to", short(&a), "server01, server02"]);
    f.assert_line(&out, &["not started", "server03, server05"]);
    out.assert_lacks("now on");
    // Both hosts the push touched are back on the previous revision's file:
    // git rejects the push, so none may keep B (on_failure is the default,
    // restore-failed, which a push ignores).
    f.assert_on("server02", &a, SSHD_92);
    f.assert_on("server01", &a, SSHD_92);
    // No host started after the failure.
    for (h, before) in &untouched {
        assert_eq!(&f.tree(h), before, "{h} was touched\n{out}");
    }
    for h in ["server03", "server05"] {
        assert_eq!(f.intervals(h).len(), 1, "{h} was deployed again\n{out}");
    }

    let runs = f.runs();
    assert_eq!(runs.len(), 2);
    let run = &runs[1];
    let mut steps = run.step_list();
    steps[..2].sort();
    steps[2..].sort();
    assert_eq!(
        steps,
        [
            ("deploy".into(), "server01".into(), b.clone(), "ok".into()),
            (
                "deploy".into(),
                "server02".into(),
                b.clone(),
                "failed".into()
            ),
            ("restore".into(), "server01".into(), a.clone(), "ok".into()),
            ("restore".into(), "server02".into(), a.clone(), "ok".into()),
        ]
    );
    let end = run.end.as_ref().expect("the run ended");
    assert_eq!(end["result"], "failed");
    assert!(
        end["error"].as_str().unwrap_or("").contains("server02"),
        "{end}"
    );
    f.assert_status("server02", "restored", &a);
    f.assert_status("server01", "restored", &a);
    assert_eq!(f.status_of("server03")["rev"], a.as_str());
    assert_eq!(f.log()[0]["result"], "failed");
    f.assert_clean();
}

#[test]
fn failed_host_without_an_earlier_revision_is_left_alone_and_reported() {
    let f = Fleet::new();
    let spec = health_spec(None, &FARM, 1);
    f.start(&spec);
    let a = f.env.remote_ref(MAIN).unwrap();
    let b = f.change("b");
    fs::write(f.hosts.join(format!("server02.{b}.broken")), "").unwrap();

    let out = f.env.push(&["-o", "group=farm"]);

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["[server02]", "no earlier revision"]);
    f.assert_line(&out, &["1 FAILED", "server02", "1 not started"]);
    // Left as the failed deploy made it, not restored, not removed.
    f.assert_on("server02", &b, SSHD_92);
    assert!(!f.host("server03").exists(), "server03 was touched\n{out}");
    let run = &f.runs()[1];
    assert!(
        run.steps.iter().all(|s| s["action"] == "deploy"),
        "{:#?}",
        run.steps
    );
    assert_eq!(f.status_of("server02")["result"], "failed");
    f.assert_clean();
}

#[test]
fn restore_run_puts_back_every_host_the_run_touched() {
    let f = Fleet::new();
    let spec = health_spec(Some("restore-run"), &FARM, 1);
    let a = f.init(&spec);
    let out = f.env.push(&["-o", "all"]);
    f.assert_landed(&out, &a);
    let server03 = f.tree("server03");
    let b = f.change("b");
    fs::write(f.hosts.join(format!("server02.{b}.broken")), "").unwrap();

    let out = f.env.push(&["-o", "group=farm"]);

    f.assert_rejected(&out, Some(&a));
    f.assert_on("server01", &a, SSHD_92);
    f.assert_on("server02", &a, SSHD_92);
    assert_eq!(f.tree("server03"), server03, "server03 was touched\n{out}");
    f.assert_line(&out, &["[server01]", "restored", short(&a)]);
    f.assert_line(&out, &["[server02]", "restored", short(&a)]);
    let run = &f.runs()[1];
    let restored: Vec<String> = run
        .steps
        .iter()
        .filter(|s| s["action"] == "restore" && s["result"] == "ok" && s["rev"] == a.as_str())
        .map(|s| s["host"].as_str().unwrap().to_string())
        .collect();
    let mut restored = restored;
    restored.sort();
    assert_eq!(restored, ["server01", "server02"]);
    for h in ["server01", "server02"] {
        let s = f.status_of(h);
        assert_eq!(
            (&s["result"], &s["rev"]),
            (&"restored".into(), &a.as_str().into())
        );
    }
    f.assert_clean();
}

// ---- the deploy lock -------------------------------------------------------------

/// canary gets a gated deploy; returns (fleet, A, B, second clone): A is
/// deployed to the canary, B is committed in the first clone, not pushed.
fn two_clones(lock_wait: &str) -> (Fleet, String, String, std::path::PathBuf) {
    two_clones_with(lock_wait, &[])
}

/// [`two_clones`] with more top-level lines in `rollgate.toml`.
fn two_clones_with(lock_wait: &str, top: &[&str]) -> (Fleet, String, String, std::path::PathBuf) {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.deploy = gated_deploy();
    spec.top.push(format!("lock_wait = \"{lock_wait}\""));
    spec.top.extend(top.iter().map(|l| l.to_string()));
    fs::write(f.hosts.join("release"), "").unwrap();
    let a = f.start(&spec);
    let work2 = f.env.path("work2");
    f.env.git_ok(
        f.env.root(),
        &["clone", "-q", path_str(&f.env.remote()), path_str(&work2)],
    );
    let b = f.change("b");
    fs::remove_file(f.hosts.join("release")).unwrap();
    (f, a, b, work2)
}

#[test]
fn second_push_gives_up_naming_the_holder_when_lock_wait_runs_out() {
    let (f, a, b, work2) = two_clones("1s");
    let gate = Gate::of(&f);
    let first = f.spawn_push(&[("GL_USERNAME", "alice")], &[]);
    wait_until("the first push's deploy to start", || {
        count_starts(&f, "server04") == 2
    });

    // While it holds the lock: widen A to the farm from the other clone.
    let mut cmd = f.env.command("git");
    cmd.current_dir(&work2)
        .args(["push", "origin", &format!("{a}:refs/deploy/farm")])
        .env("GL_USERNAME", "bob");
    let second = f.env.run(cmd);

    second
        .assert_code(1)
        .assert_contains("pre-receive hook declined");
    // It said it waits, for whom, then gave up naming the holder: who,
    // which revision, where, since when.
    f.assert_line(
        &second,
        &["waiting", "1s", "deploy lock", "alice", short(&b)],
    );
    f.assert_line(
        &second,
        &[
            "holds the lock",
            "alice",
            short(&b),
            "group canary",
            "since",
            "1s",
        ],
    );
    assert_eq!(f.env.remote_ref("refs/deploy/farm"), None);
    gate.open();
    let first = first.finish();
    f.assert_landed(&first, &b);
    f.assert_line(&first, &["deployed", short(&b), "group canary", "1 ok"]);
    for h in FARM {
        assert!(!f.host(h).exists(), "{h} was deployed\n{second}");
        assert!(f.intervals(h).is_empty());
    }
    let runs = f.runs();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    assert!(runs.iter().all(|r| r.start["who"] != "bob"));
    assert_eq!(runs[1].start["who"], "alice");
    f.assert_clean();
}

#[test]
fn second_push_waits_for_the_lock_and_deploys_after_the_first() {
    let (f, a, b, work2) = two_clones("2m");
    let gate = Gate::of(&f);
    let first = f.spawn_push(&[("GL_USERNAME", "alice")], &[]);
    wait_until("the first push's deploy to start", || {
        count_starts(&f, "server04") == 2
    });
    let mut cmd = f.env.command("git");
    cmd.current_dir(&work2)
        .args(["push", "origin", &format!("{a}:refs/deploy/farm")])
        .env("GL_USERNAME", "bob");
    let mut second = Running::spawn(cmd);

    let waiting = second.wait_for_line("deploy lock");
    for word in ["waiting", "2m", "alice", short(&b), "group canary"] {
        assert!(waiting.contains(word), "{word:?} not in {waiting:?}");
    }
    for h in FARM {
        assert!(f.intervals(h).is_empty(), "{h} deployed while locked out");
    }
    gate.open();
    let first = first.finish();
    let second = second.finish();

    f.assert_landed(&first, &b);
    second.assert_ok();
    f.assert_line(&first, &["deployed", short(&b), "group canary", "1 ok"]);
    f.assert_line(&second, &["deployed", short(&a), "group farm", "3 ok"]);
    assert_eq!(f.env.remote_ref("refs/deploy/farm").as_deref(), Some(&*a));
    for h in FARM {
        f.assert_on(h, &a, SSHD_92);
    }
    // The deploy commands' clocks: the second began after the first ended.
    let canary = last(&f, "server04");
    for h in FARM {
        let i = last(&f, h);
        assert!(
            canary.end <= i.start,
            "{h} {i:?} overlaps canary {canary:?}"
        );
    }
    // The journal: alice's run ended before bob's began.
    let records = f.journal();
    let runs = f.runs();
    assert_eq!(runs.len(), 3, "{runs:#?}");
    assert_eq!(runs[1].start["who"], "alice");
    assert_eq!(runs[2].start["who"], "bob");
    let line_of = |r: &serde_json::Value| records.iter().position(|x| x == r).unwrap();
    assert!(line_of(runs[1].end.as_ref().unwrap()) < line_of(&runs[2].start));
    f.assert_clean();
}

// ---- crashes and the journal ------------------------------------------------------

#[test]
fn hook_killed_mid_deploy_leaves_no_stale_lock_and_status_shows_interrupted() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    let KilledPush {
        a,
        b,
        tmp: killed_tmp,
    } = f.kill_hook_mid_deploy(&mut spec);

    assert!(!f.hosts.join("server03.started").exists());
    // status reads the journal the killed run left: the hosts it was
    // deploying are interrupted, the rest as they were.
    for h in ["server01", "server02"] {
        let s = f.status_of(h);
        assert_eq!(s["result"], "interrupted", "{h}: {s:#}");
        assert_eq!(s["rev"], b.as_str(), "{h}: {s:#}");
    }
    f.assert_status("server04", "ok", &a);
    // server03's batch never started: it is still on A, not "interrupted".
    let s3 = f.status_of("server03");
    assert_eq!(
        (&s3["result"], &s3["rev"]),
        (&"ok".into(), &a.as_str().into()),
        "{s3:#}"
    );
    assert_eq!(f.log()[0]["result"], "interrupted");

    // A normal push right away: the lock died with the hook.
    spec.deploy = timed_deploy(None);
    f.write_spec(&spec);
    let c = f.env.commit("back to a normal deploy");
    let out = f.env.push(&[]);
    f.assert_landed(&out, &c);
    out.assert_lacks("waiting").assert_lacks("holds the lock");
    f.assert_on("server04", &c, SSHD_96);
    assert_eq!(f.status_of("server04")["rev"], c.as_str());
    assert_eq!(f.status_of("server01")["result"], "interrupted");

    // What the killed hook left in its TMPDIR is its work tree, nothing else.
    let left: Vec<String> = fs::read_dir(&killed_tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| n.starts_with("rollgate-")),
        "unexpected leftovers of the killed hook: {left:?}"
    );
    // ...and the next rollgate that makes a work tree there sweeps it, since
    // its owner is dead.
    let mut cmd = f.env.command(env!("CARGO_BIN_EXE_rollgate"));
    cmd.args(["validate", "--all", "--rev", "main", "--repo"])
        .arg(f.env.remote())
        .env("TMPDIR", &killed_tmp);
    f.env.run(cmd).assert_ok();
    let left: Vec<_> = fs::read_dir(&killed_tmp).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "the killed hook's work tree was not swept: {left:?}"
    );
    f.assert_clean();
}

#[test]
fn torn_last_journal_line_is_tolerated_and_reported() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    let lines = f.journal().len();
    {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(f.journal_path())
            .unwrap();
        file.write_all(br#"{"run":"torn","time":"2024-01-"#)
            .unwrap();
    }
    let torn = lines + 1;
    let remote = f.env.remote();
    let repo = path_str(&remote);
    let warning = format!("journal line {torn} is unreadable");

    for args in [
        vec!["status", "--json", "--repo", repo],
        vec!["status", "--repo", repo],
        vec!["log", "--json", "--repo", repo],
    ] {
        let out = f.env.rollgate(&args);
        out.assert_ok();
        assert!(
            out.stderr.contains(&warning),
            "{args:?} did not warn\n{out}"
        );
        assert!(out.stdout.contains(short(&a)), "{args:?}\n{out}");
    }
    assert_eq!(f.status_of("server04")["rev"], a.as_str());

    // The next deploy appends cleanly after the torn line.
    let b = f.change("b");
    let out = f.env.push(&[]);
    f.assert_landed(&out, &b);
    let text = fs::read_to_string(f.journal_path()).unwrap();
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .collect();
    assert_eq!(bad, [r#"{"run":"torn","time":"2024-01-"#]);
    assert_eq!(f.status_of("server04")["rev"], b.as_str());
    assert_eq!(f.log()[0]["rev"], b.as_str());
    f.assert_clean();
}

// ---- who, and talking to the pusher ---------------------------------------------

#[test]
fn status_and_journal_say_who_pushed() {
    let f = Fleet::new();
    let a = f.init(&Spec::standard());

    let out = f.push_as(&[("GL_USERNAME", "alice"), ("REMOTE_USER", "carol")], &[]);

    f.assert_landed(&out, &a);
    let records = f.journal();
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| r["who"] == "alice"), "{records:#?}");
    assert_eq!(f.status_of("server04")["who"], "alice");
    assert_eq!(f.log()[0]["who"], "alice");
    let remote = f.env.remote();
    let table = f.env.rollgate(&["status", "--repo", path_str(&remote)]);
    table.assert_ok();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("server04") && l.contains("alice")),
        "{table}"
    );

    // Without GL_USERNAME, the next variable on the list (USER) says who.
    let b = f.change("b");
    let out = f.env.push(&[]);
    f.assert_landed(&out, &b);
    assert_eq!(f.status_of("server04")["who"], "tester");
    let log = f.log();
    assert_eq!(
        (&log[0]["who"], &log[1]["who"]),
        (&"tester".into(), &"alice".into())
    );
    f.assert_clean();
}

#[test]
fn a_quiet_deploy_keeps_the_pusher_informed_with_heartbeats() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.deploy = gated_deploy();
    spec.top.push("heartbeat = \"300ms\"".into());
    let a = f.init(&spec);
    let gate = Gate::of(&f);

    let mut push = f.spawn_push(&[], &[]);
    // Arrives live, while the deploy is still held.
    push.wait_for_line("still working: 0 of 1 hosts done");
    gate.open();
    let out = push.finish();

    f.assert_landed(&out, &a);
    out.assert_contains("[server04] ok");
    f.assert_clean();
}

// ---- more of the guard ------------------------------------------------------------

#[test]
fn health_is_retried_until_it_passes_within_health_wait() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    // Fails on its first two tries, passes on the third.
    spec.health = Some(sh(
        "echo try >> {root}/{host}.health; test $(wc -l < {root}/{host}.health) -ge 3",
    ));
    spec.service.push("health_wait = \"30s\"".into());
    let a = f.init(&spec);

    let out = f.env.push(&[]);

    f.assert_landed(&out, &a);
    out.assert_contains("[server04] ok");
    let tries = fs::read_to_string(f.hosts.join("server04.health"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(tries, 3, "health was not retried until it passed\n{out}");
    assert_eq!(f.status_of("server04")["result"], "ok");
    f.assert_clean();
}

#[test]
fn hung_deploy_is_killed_at_its_timeout_with_everything_it_started() {
    let f = Fleet::new();
    let tag = std::process::id();
    let mut spec = Spec::standard();
    // Two sleeps, one in the background: killing only the direct child
    // would leave one behind.
    spec.deploy = sh(&format!(
        "echo $$ > {{root}}/{{host}}.pgid; sleep 4001.{tag} & sleep 4002.{tag}"
    ));
    spec.service.push("timeout = \"5s\"".into());
    f.init(&spec);

    let out = f.env.push(&[]);

    f.assert_rejected(&out, None);
    f.assert_line(&out, &["[server04]", "FAILED", "timed out"]);
    let pgid: i32 = fs::read_to_string(f.hosts.join("server04.pgid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SIGKILL is delivered asynchronously; the sleeps would outlive this wait.
    wait_until("the deploy's process group to be gone", || {
        !crate::fleet::group_alive(pgid)
    });
    f.env
        .assert_no_process(&format!(r"sleep 400[12]\.{tag}"), &out);
    let run = &f.runs()[0];
    assert_eq!(run.steps[0]["result"], "failed");
    assert!(
        run.steps[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("timed out"),
        "{:#}",
        run.steps[0]
    );
    f.assert_clean();
}

#[test]
fn a_failing_canary_stops_all_before_any_other_group() {
    let f = Fleet::new();
    let spec = health_spec(None, &FARM, 2);
    let a = f.init(&spec);
    let out = f.env.push(&["-o", "all"]);
    f.assert_landed(&out, &a);
    let farm: Vec<Tree> = FARM.iter().map(|h| f.tree(h)).collect();
    let b = f.change("b");
    fs::write(f.hosts.join(format!("server04.{b}.broken")), "").unwrap();

    let out = f.env.push(&["-o", "all"]);

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["1 FAILED", "server04", "3 not started"]);
    f.assert_on("server04", &a, SSHD_96);
    for (h, before) in FARM.iter().zip(&farm) {
        assert_eq!(&f.tree(h), before, "{h} was touched\n{out}");
        assert_eq!(f.intervals(h).len(), 1, "{h} was deployed again");
    }
    assert_eq!(f.status_of("server04")["result"], "restored");
    f.assert_clean();
}

/// Two clones push the deploy branch: alice's B lands while bob's C (made
/// on A, as bob last saw main) waits for the lock. git will refuse C once
/// the hook returns (main is no longer A), so C must not reach any host:
/// otherwise the canary runs a revision that is on no branch, and that the
/// pusher was told was rejected.
#[test]
fn a_push_whose_branch_moved_while_it_waited_for_the_lock_deploys_nothing() {
    let (f, _a, b, work2) = two_clones("2m");
    let gate = Gate::of(&f);
    let sshd96 = work2.join(SSHD_96);
    let mut text = fs::read_to_string(&sshd96).unwrap();
    text.push_str("# 9.6 change c\n");
    fs::write(&sshd96, text).unwrap();
    f.env.git_ok(&work2, &["commit", "-q", "-am", "change c"]);
    let c = f.env.git_ok(&work2, &["rev-parse", "HEAD"]);
    let first = f.spawn_push(&[("GL_USERNAME", "alice")], &[]);
    wait_until("the first push's deploy to start", || {
        count_starts(&f, "server04") == 2
    });
    let mut cmd = f.env.command("git");
    cmd.current_dir(&work2)
        .args(["push", "origin", "main"])
        .env("GL_USERNAME", "bob");
    let mut second = Running::spawn(cmd);
    second.wait_for_line("deploy lock");
    gate.open();
    let first = first.finish();
    let second = second.finish();

    f.assert_landed(&first, &b);
    second.assert_failed();
    assert_eq!(f.env.remote_ref(MAIN).as_deref(), Some(&*b));
    f.assert_on("server04", &b, SSHD_96);
    let c_on_hosts: Vec<serde_json::Value> = f
        .journal()
        .into_iter()
        .filter(|r| r["event"] == "host" && r["rev"] == c.as_str() && r["result"] == "ok")
        .collect();
    assert!(
        c_on_hosts.is_empty(),
        "the refused revision {} was deployed: {c_on_hosts:#?}\n{second}",
        short(&c)
    );
    f.assert_clean();
}

#[test]
fn status_during_a_deploy_says_running_not_interrupted() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.deploy = gated_deploy();
    fs::write(f.hosts.join("release"), "").unwrap();
    let a = f.start(&spec);
    let gate = Gate::of(&f);
    fs::remove_file(f.hosts.join("release")).unwrap();
    let b = f.change("b");
    let push = f.spawn_push(&[], &[]);
    wait_until("the deploy to start", || count_starts(&f, "server04") == 2);

    // Mid-deploy: the host is still on A as far as anyone knows, and the
    // run is running, not interrupted.
    f.assert_status("server04", "ok", &a);
    let log = f.log();
    assert_eq!(
        (&log[0]["result"], &log[0]["rev"]),
        (&"running".into(), &b.as_str().into())
    );
    gate.open();
    let out = push.finish();

    f.assert_landed(&out, &b);
    assert_eq!(f.status_of("server04")["rev"], b.as_str());
    assert_eq!(f.log()[0]["result"], "ok");
    f.assert_clean();
}

/// One push, two refs: the deploy branch (valid, deploys to the canary) and
/// a deploy ref naming a group that does not exist. git rejects the whole
/// push when the hook fails, so the unknown group must be refused before
/// anything is touched, for every ref of the push: otherwise the canary
/// runs B while `main` stays on A.
#[test]
fn an_unknown_group_in_any_ref_of_a_push_is_refused_before_anything_is_touched() {
    let f = Fleet::new();
    let a = f.start(&Spec::standard());
    let canary = f.tree("server04");
    let b = f.change("b");

    let out = f
        .env
        .git_push(&["origin", "main", &format!("{b}:refs/deploy/nope")]);

    f.assert_rejected(&out, Some(&a));
    out.assert_contains("(groups: canary, farm)");
    assert_eq!(f.env.remote_ref("refs/deploy/nope"), None);
    assert_eq!(
        f.tree("server04"),
        canary,
        "the canary got {} from a rejected push\n{out}",
        short(&b)
    );
    assert_eq!(f.runs().len(), 1, "{:#?}", f.runs());
    f.assert_clean();
}

/// A push can wait for the lock for a long time (`lock_wait`); the pusher
/// must keep hearing from it meanwhile, or a proxy or CI runner that cuts
/// idle connections ends the push while it waits.
#[test]
fn a_push_waiting_for_the_lock_keeps_the_pusher_informed_with_heartbeats() {
    let (f, a, _b, work2) = two_clones_with("2m", &["heartbeat = \"300ms\""]);
    let gate = Gate::of(&f);
    let first = f.spawn_push(&[("GL_USERNAME", "alice")], &[]);
    wait_until("the first push's deploy to start", || {
        count_starts(&f, "server04") == 2
    });
    let mut cmd = f.env.command("git");
    cmd.current_dir(&work2)
        .args(["push", "origin", &format!("{a}:refs/deploy/farm")])
        .env("GL_USERNAME", "bob");
    let mut second = Running::spawn(cmd);
    second.wait_for_line("deploy lock");

    // Anything at all, as long as it comes while alice still holds the lock.
    let next = second.wait_for_line("");
    let ends = fs::read_to_string(f.hosts.join("server04.times"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("end "))
        .count();
    assert_eq!(
        ends, 1,
        "no line while waiting for the lock; the first came after it was released: {next:?}"
    );
    gate.open();
    first.finish().assert_ok();
    second.finish().assert_ok();
    f.assert_clean();
}
