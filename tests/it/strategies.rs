//! Rollout strategies (issue 11), through real pushes: `verify`, `rollout
//! = "staged" | "together"`, `waves`, `bake`, `max_failures`, and the
//! dead-man's switch (`arm` / `disarm`) against a real sshd on loopback.
//!
//! Every host command here logs `ROLE start|end HOST REV NS` to
//! `{root}/steps.log` itself (`date +%s%N`), so every ordering claim is
//! proved from what the commands wrote, never from sleeps in the test.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::fleet::{Fleet, MAIN, Spec, group, group_alive, sh, wait_until};
use crate::ssh_hosts::{SSH_OPTS, free_port, keygen};
use crate::support::{SSHD_92, argv, path_str};

// ---- commands that log their own timing --------------------------------------

/// `sh -c` running `body` (in a subshell, so an `exit` in it still logs
/// the end), between a start and an end line in `{root}/steps.log`.
fn step(role: &str, body: &str) -> Vec<String> {
    sh(&format!(
        "echo {role} start {{host}} {{rev}} $(date +%s%N) >> {{root}}/steps.log; \
         ( {body} ); rc=$?; \
         echo {role} end {{host}} {{rev}} $(date +%s%N) >> {{root}}/steps.log; exit $rc"
    ))
}

#[derive(Debug, Clone)]
struct Step {
    role: String,
    host: String,
    rev: String,
    start: u128,
    end: u128,
}

/// Every finished step in `{root}/steps.log`, in the order they ended.
fn steps(f: &Fleet) -> Vec<Step> {
    let text = fs::read_to_string(f.hosts.join("steps.log")).unwrap_or_default();
    let mut open: BTreeMap<(String, String), (String, u128)> = BTreeMap::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        let [role, what, host, rev, ns] = w[..] else {
            panic!("bad steps.log line {line:?}");
        };
        let ns: u128 = ns.parse().expect("a time in ns");
        let key = (role.to_string(), host.to_string());
        match what {
            "start" => assert!(
                open.insert(key, (rev.to_string(), ns)).is_none(),
                "two {role} at once on {host}:\n{text}"
            ),
            _ => {
                let (rev, start) = open.remove(&key).expect("an end after its start");
                out.push(Step {
                    role: role.into(),
                    host: host.into(),
                    rev,
                    start,
                    end: ns,
                });
            }
        }
    }
    out
}

fn of<'a>(all: &'a [Step], role: &str, rev: &str) -> Vec<&'a Step> {
    all.iter()
        .filter(|s| s.role == role && s.rev == rev)
        .collect()
}

fn hosts_of(steps: &[&Step]) -> Vec<String> {
    let mut h: Vec<String> = steps.iter().map(|s| s.host.clone()).collect();
    h.sort();
    h.dedup();
    h
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("{prefix}{i:02}")).collect()
}

/// The farm of `hosts`, its extra `[groups.farm]` lines in `farm`
/// (`batch` only if given there), every step logging itself, and
/// `on_failure = "restore-run"` (a failed push puts back every host).
struct Setup {
    spec: Spec,
    farm: Vec<String>,
}

impl Setup {
    fn new(hosts: &[String], farm: &[&str]) -> Setup {
        let mut spec = Spec::standard();
        spec.top.push("on_failure = \"restore-run\"".into());
        spec.deploy = step(
            "deploy",
            "rsync -a --checksum --delete --mkpath {dir}/ {root}/{host}/etc/ssh/",
        );
        spec.health = Some(step(
            "health",
            "if test -e {root}/{host}.{rev}.broken; then echo {host} answers 503 >&2; exit 1; fi",
        ));
        spec.service.push(format!(
            "verify = {}",
            argv(&step(
                "verify",
                "if test -e {root}/{host}.{rev}.noverify; then echo {host}: sshd -t refuses it >&2; exit 1; fi",
            ))
        ));
        spec.service
            .push(format!("reload = {}", argv(&step("reload", "sleep 0.3"))));
        spec.service.push("health_wait = \"1s\"".into());
        let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
        spec.groups[1] = group("farm", &hosts, 1, "9.2");
        Setup {
            spec,
            farm: farm.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Reloads that take `web01` seconds on web01 and `others` on every
    /// other host: one slow (or fast) host among the rest.
    fn reload_taking(&mut self, web01: &str, others: &str) {
        let reload = self
            .spec
            .service
            .iter_mut()
            .find(|l| l.starts_with("reload = "))
            .expect("a reload");
        *reload = format!(
            "reload = {}",
            argv(&step(
                "reload",
                &format!("if [ {{host}} = web01 ]; then sleep {web01}; else sleep {others}; fi")
            ))
        );
    }

    fn write(&self, f: &Fleet) {
        let text = self.spec.render(&f.env, &f.hosts);
        let head = "[groups.farm]\n";
        let at = text.find(head).expect("a farm group") + head.len();
        let (before, after) = text.split_at(at);
        // The farm is the last group: its `batch` line is the last one.
        let after = after.replacen("batch = 1\n", "", 1);
        let lines: String = self.farm.iter().map(|l| format!("{l}\n")).collect();
        f.env
            .write("rollgate.toml", &format!("{before}{lines}{after}"));
    }

    /// Repository, clone, config, and a first push to the farm that must
    /// land: every farm host runs the returned revision.
    fn start(&self, f: &Fleet) -> String {
        f.env.bare_repo();
        f.env.clone_repo();
        f.env.write_infra();
        self.write(f);
        let a = f.env.commit("initial config");
        let out = f.env.push(&["-o", "group=farm"]);
        f.assert_landed(&out, &a);
        a
    }
}

fn mark(f: &Fleet, host: &str, rev: &str, what: &str) {
    fs::write(f.hosts.join(format!("{host}.{rev}.{what}")), "").unwrap();
}

fn farm_push(f: &Fleet) -> crate::support::Outcome {
    f.env.push(&["-o", "group=farm"])
}

// ---- verify --------------------------------------------------------------------

#[test]
fn verify_runs_once_the_files_are_in_place_and_before_the_reload() {
    let f = Fleet::new();
    let farm = names("web", 3);
    let setup = Setup::new(&farm, &["batch = 1"]);
    let a = setup.start(&f);
    let b = f.change("b");
    mark(&f, "web02", &b, "noverify");

    let out = farm_push(&f);

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["[web02] FAILED", "sshd verify"]);
    out.assert_contains("web02: sshd -t refuses it");
    let all = steps(&f);
    // web01 went through deploy, verify, reload, health in that order.
    let order: Vec<&str> = all
        .iter()
        .filter(|s| s.host == "web01" && s.rev == b)
        .map(|s| s.role.as_str())
        .collect();
    assert_eq!(order, ["deploy", "verify", "reload", "health"]);
    let deploy = of(&all, "deploy", &b);
    let verify = of(&all, "verify", &b);
    let reload = of(&all, "reload", &b);
    for v in &verify {
        let d = deploy.iter().find(|d| d.host == v.host).unwrap();
        assert!(
            d.end <= v.start,
            "{} verified before its files were in place",
            v.host
        );
        if let Some(r) = reload.iter().find(|r| r.host == v.host) {
            assert!(
                v.end <= r.start,
                "{} reloaded before it was verified",
                v.host
            );
        }
    }
    // web02 failed at verify: never reloaded with b; web03 never started.
    assert_eq!(hosts_of(&reload), ["web01"]);
    assert_eq!(hosts_of(&deploy), ["web01", "web02"]);
    for h in &farm {
        f.assert_on(h, &a, SSHD_92);
        assert_eq!(f.status_of(h)["rev"], a.as_str(), "{h}");
    }
    f.assert_clean();
}

// ---- staged and together -------------------------------------------------------

#[test]
fn staged_deploys_and_verifies_every_host_before_any_reload() {
    let f = Fleet::new();
    let farm = names("web", 5);
    let setup = Setup::new(&farm, &["rollout = \"staged\"", "batch = 2"]);
    setup.start(&f);
    let b = f.change("b");

    let out = farm_push(&f);

    f.assert_landed(&out, &b);
    f.assert_line(&out, &["group farm", "5 hosts staged"]);
    let all = steps(&f);
    let staging: Vec<&Step> = of(&all, "deploy", &b)
        .into_iter()
        .chain(of(&all, "verify", &b))
        .collect();
    let reloads = of(&all, "reload", &b);
    assert_eq!(hosts_of(&staging), farm);
    assert_eq!(hosts_of(&reloads), farm);
    let last_staged = staging.iter().map(|s| s.end).max().unwrap();
    let first_reload = reloads.iter().map(|s| s.start).min().unwrap();
    assert!(
        last_staged <= first_reload,
        "a host was reloaded before every host was deployed and verified: {all:#?}"
    );
    // In batches of 2 while staging: the third wave's deploy started after
    // the first two waves' verifies ended.
    let verify_end = |h: &str| {
        of(&all, "verify", &b)
            .iter()
            .find(|s| s.host == h)
            .unwrap()
            .end
    };
    let deploy_start = |h: &str| {
        of(&all, "deploy", &b)
            .iter()
            .find(|s| s.host == h)
            .unwrap()
            .start
    };
    assert!(verify_end("web02") <= deploy_start("web03"));
    assert!(verify_end("web04") <= deploy_start("web05"));
    for h in &farm {
        f.assert_on(h, &b, SSHD_92);
        assert_eq!(f.status_of(h)["rev"], b.as_str());
    }
    f.assert_clean();
}

#[test]
fn one_verify_failure_while_staging_reloads_no_host_and_puts_every_host_back() {
    let f = Fleet::new();
    let farm = names("web", 6);
    // No restore-run here: a staging failure puts back the staged hosts
    // whatever on_failure says, since none of them was activated.
    let mut setup = Setup::new(&farm, &["rollout = \"staged\"", "batch = 2"]);
    setup.spec.top.clear();
    let a = setup.start(&f);
    let b = f.change("b");
    mark(&f, "web05", &b, "noverify");

    let out = farm_push(&f);

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["[web05] FAILED", "sshd verify"]);
    f.assert_line(&out, &["staging failed on web05", "nothing was activated"]);
    let all = steps(&f);
    assert!(
        of(&all, "reload", &b).is_empty(),
        "a host was reloaded with {b}: {all:#?}"
    );
    assert!(of(&all, "health", &b).is_empty());
    // Every host was staged (web06 with web05 in the last wave) ...
    assert_eq!(hosts_of(&of(&all, "deploy", &b)), farm);
    // ... and every one is back on a, byte for byte, and says so.
    for h in &farm {
        f.assert_on(h, &a, SSHD_92);
        let row = f.status_of(h);
        assert_eq!(row["rev"], a.as_str(), "{h}: {row:#}");
    }
    let run = f.runs().pop().unwrap();
    assert_eq!(run.end.as_ref().unwrap()["result"], "failed");
    let deploys: Vec<_> = run
        .step_list()
        .into_iter()
        .filter(|(action, ..)| action == "deploy")
        .collect();
    assert_eq!(
        deploys,
        [("deploy".into(), "web05".into(), b.clone(), "failed".into())],
        "only the failed host is journaled as deployed"
    );
    f.assert_clean();
}

#[test]
fn a_staged_rollout_stopped_while_activating_puts_back_the_hosts_not_yet_activated() {
    let f = Fleet::new();
    let farm = names("web", 4);
    let setup = Setup::new(&farm, &["rollout = \"staged\"", "batch = 2"]);
    let a = setup.start(&f);
    let b = f.change("b");
    mark(&f, "web01", &b, "broken");

    let out = farm_push(&f);

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["[web01] FAILED", "sshd health"]);
    f.assert_line(&out, &["staged but not activated: web03, web04"]);
    let all = steps(&f);
    assert_eq!(hosts_of(&of(&all, "deploy", &b)), farm, "all were staged");
    assert_eq!(
        hosts_of(&of(&all, "reload", &b)),
        ["web01", "web02"],
        "the second wave was activated after the first failed"
    );
    for h in &farm {
        f.assert_on(h, &a, SSHD_92);
        assert_eq!(f.status_of(h)["rev"], a.as_str(), "{h}");
    }
    f.assert_clean();
}

#[test]
fn together_reloads_every_host_at_the_same_moment() {
    let f = Fleet::new();
    let farm = names("web", 4);
    let setup = Setup::new(&farm, &["rollout = \"together\"", "batch = 1"]);
    setup.start(&f);
    let b = f.change("b");

    let out = farm_push(&f);

    f.assert_landed(&out, &b);
    f.assert_line(&out, &["group farm", "reloading 4 hosts at once"]);
    let all = steps(&f);
    let reloads = of(&all, "reload", &b);
    assert_eq!(hosts_of(&reloads), farm);
    // One moment: every reload (0.3s each) overlaps every other one.
    let latest_start = reloads.iter().map(|s| s.start).max().unwrap();
    let earliest_end = reloads.iter().map(|s| s.end).min().unwrap();
    assert!(
        latest_start < earliest_end,
        "the reloads did not overlap: {reloads:#?}"
    );
    // Staged first (one at a time, `batch = 1`), health after every reload.
    let last_verify = of(&all, "verify", &b).iter().map(|s| s.end).max().unwrap();
    assert!(last_verify <= reloads.iter().map(|s| s.start).min().unwrap());
    let last_reload = reloads.iter().map(|s| s.end).max().unwrap();
    let health = of(&all, "health", &b);
    assert_eq!(hosts_of(&health), farm);
    assert!(health.iter().all(|h| h.start >= last_reload));
    for h in &farm {
        f.assert_on(h, &b, SSHD_92);
    }
    f.assert_clean();
}

/// [`Setup`] with a dead-man's switch whose arm fails on a marker.
fn armed(hosts: &[String], farm: &[&str]) -> Setup {
    let mut setup = Setup::new(hosts, farm);
    setup.spec.service.push(format!(
        "arm = {}",
        argv(&step(
            "arm",
            "if test -e {root}/{host}.{rev}.noarm; then echo {host}: no timer >&2; exit 1; fi",
        ))
    ));
    setup
        .spec
        .service
        .push(format!("disarm = {}", argv(&step("disarm", "true"))));
    setup
}

#[test]
fn arm_runs_before_the_reload_and_disarm_after_health_and_together_reloads_nothing_unarmed() {
    let f = Fleet::new();
    let farm = names("web", 3);
    let setup = armed(&farm, &["rollout = \"staged\""]);
    let a = setup.start(&f);
    let all = steps(&f);
    for h in &farm {
        let order: Vec<&str> = all
            .iter()
            .filter(|s| &s.host == h && s.rev == a)
            .map(|s| s.role.as_str())
            .collect();
        assert_eq!(
            order,
            ["deploy", "verify", "arm", "reload", "health", "disarm"],
            "{h}"
        );
    }

    // Together: one host cannot arm, so no host is reloaded, and every
    // host goes back.
    armed(&farm, &["rollout = \"together\""]).write(&f);
    let b = f.change("b");
    mark(&f, "web03", &b, "noarm");
    let out = farm_push(&f);

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["arming failed, so no host was reloaded"]);
    out.assert_contains("web03: no timer");
    let all = steps(&f);
    assert_eq!(hosts_of(&of(&all, "arm", &b)), farm);
    assert!(of(&all, "reload", &b).is_empty(), "reloaded: {all:#?}");
    for h in &farm {
        f.assert_on(h, &a, SSHD_92);
        assert_eq!(f.status_of(h)["rev"], a.as_str(), "{h}");
    }
    f.assert_clean();
}

// ---- waves and bake --------------------------------------------------------------

#[test]
fn a_batch_is_a_window_a_slow_host_holds_nobody_up_and_a_failure_starts_nobody() {
    let f = Fleet::new();
    let farm = names("web", 4);
    let mut setup = Setup::new(&farm, &["batch = 2"]);
    setup.reload_taking("2", "0.2");
    setup.start(&f);
    let b = f.change("b");

    let out = farm_push(&f);

    f.assert_landed(&out, &b);
    let all = steps(&f);
    let at = |role: &str, host: &str| -> (u128, u128) {
        let s = of(&all, role, &b)
            .into_iter()
            .find(|s| s.host == host)
            .unwrap_or_else(|| panic!("no {role} on {host}: {all:#?}"));
        (s.start, s.end)
    };
    // The places web02 and then web03 freed were taken while web01 still
    // reloaded: nobody waited for the slowest host of a batch.
    let web01_reloaded = at("reload", "web01").1;
    for h in ["web03", "web04"] {
        assert!(at("deploy", h).0 < web01_reloaded, "{h} waited for web01");
    }
    // And never more than two hosts at a time.
    let spans: Vec<(u128, u128)> = farm
        .iter()
        .map(|h| (at("deploy", h).0, at("health", h).1))
        .collect();
    for (start, _) in &spans {
        let running = spans
            .iter()
            .filter(|(a, z)| a <= start && start < z)
            .count();
        assert!(running <= 2, "{running} hosts at once: {spans:?}");
    }
    // The journal says who started when: two, then one per freed place.
    let run = f.runs().last().unwrap().id.clone();
    let batches: Vec<Vec<String>> = f
        .journal()
        .iter()
        .filter(|r| r["run"] == run.as_str() && r["event"] == "batch")
        .map(|r| crate::fleet::strings(&r["hosts"]))
        .collect();
    assert_eq!(
        batches,
        [
            vec!["farm/web01".to_string(), "farm/web02".into()],
            vec!["farm/web03".into()],
            vec!["farm/web04".into()],
        ]
    );

    // web02 fails while web01 still reloads: its free place is not taken,
    // nobody else starts, web01 ends, and both go back.
    let c = f.change("c");
    mark(&f, "web02", &c, "broken");
    let out = farm_push(&f);

    f.assert_rejected(&out, Some(&b));
    let all = steps(&f);
    assert_eq!(
        hosts_of(&of(&all, "deploy", &c)),
        ["web01", "web02"],
        "a host started after web02 failed"
    );
    assert_eq!(hosts_of(&of(&all, "reload", &c)), ["web01", "web02"]);
    for h in &farm {
        f.assert_on(h, &b, SSHD_92);
        assert_eq!(f.status_of(h)["rev"], b.as_str(), "{h}");
    }
    f.assert_clean();
}

#[test]
fn waves_of_one_two_three_run_as_batches() {
    let f = Fleet::new();
    let farm = names("web", 6);
    let setup = Setup::new(&farm, &["waves = [1, 2, 3]"]);
    setup.start(&f);
    let b = f.change("b");

    let out = farm_push(&f);

    f.assert_landed(&out, &b);
    let runs = f.runs();
    let run = runs.last().unwrap();
    // The journal's batch records: 1, then 2, then 3 hosts.
    let batches: Vec<Vec<String>> = f
        .journal()
        .iter()
        .filter(|r| r["run"] == run.id.as_str() && r["event"] == "batch")
        .map(|r| crate::fleet::strings(&r["hosts"]))
        .collect();
    assert_eq!(
        batches,
        [
            vec!["farm/web01".to_string()],
            vec!["farm/web02".into(), "farm/web03".into()],
            vec![
                "farm/web04".into(),
                "farm/web05".into(),
                "farm/web06".into()
            ],
        ]
    );
    // And on the hosts: each wave starts once the one before is healthy,
    // and a wave's hosts run at once (their reloads overlap).
    let all = steps(&f);
    let span = |hosts: &[&str], role: &str| -> (u128, u128) {
        let s: Vec<&Step> = of(&all, role, &b)
            .into_iter()
            .filter(|s| hosts.contains(&s.host.as_str()))
            .collect();
        assert_eq!(s.len(), hosts.len(), "{role} on {hosts:?}: {all:#?}");
        (
            s.iter().map(|x| x.start).max().unwrap(),
            s.iter().map(|x| x.end).min().unwrap(),
        )
    };
    let waves: [&[&str]; 3] = [
        &["web01"],
        &["web02", "web03"],
        &["web04", "web05", "web06"],
    ];
    for pair in waves.windows(2) {
        let health_done = of(&all, "health", &b)
            .iter()
            .filter(|s| pair[0].contains(&s.host.as_str()))
            .map(|s| s.end)
            .max()
            .unwrap();
        let next_deploy = of(&all, "deploy", &b)
            .iter()
            .filter(|s| pair[1].contains(&s.host.as_str()))
            .map(|s| s.start)
            .min()
            .unwrap();
        assert!(health_done <= next_deploy, "waves {pair:?} overlapped");
    }
    let (latest_start, earliest_end) = span(waves[2], "reload");
    assert!(latest_start < earliest_end, "wave 3 did not run at once");

    // --dry-run says how the group will go, step by step.
    let mut staged = Setup::new(
        &farm,
        &[
            "rollout = \"staged\"",
            "waves = [1, \"50%\"]",
            "bake = \"1m\"",
            "max_failures = \"20%\"",
        ],
    );
    staged.spec.top.clear();
    staged.write(&f);
    let c = f.env.commit("staged farm");
    f.assert_landed(&f.env.push(&["-o", "validate-only"]), &c);
    let out = f.env.rollgate(&[
        "deploy",
        "--rev",
        "main",
        "--group",
        "farm",
        "--dry-run",
        "--repo",
        path_str(&f.env.remote()),
    ]);
    out.assert_ok().assert_contains(
        "group farm: 6 hosts, staged, in waves of 1, 3, 2, baking 1m after each, up to 20% failed",
    );
    for role in ["deploy", "verify", "reload", "health"] {
        f.assert_line(&out, &["[web06] sshd", &format!("{role}:")]);
    }
    f.assert_clean();
}

#[test]
fn a_bake_holds_the_next_wave_back_while_health_keeps_running() {
    let f = Fleet::new();
    let farm = names("web", 3);
    let setup = Setup::new(&farm, &["waves = [1, 2]", "bake = \"3s\""]);
    setup.start(&f);
    let b = f.change("b");

    let out = farm_push(&f);

    f.assert_landed(&out, &b);
    f.assert_line(&out, &["group farm", "baking 3s", "health on 1 host"]);
    f.assert_line(&out, &["... baking group farm", "1 host healthy"]);
    let all = steps(&f);
    let web01 = |role: &str| -> Vec<&Step> {
        of(&all, role, &b)
            .into_iter()
            .filter(|s| s.host == "web01")
            .collect()
    };
    let wave1_done = web01("health")[0].end;
    let wave2_start = of(&all, "deploy", &b)
        .iter()
        .filter(|s| s.host != "web01")
        .map(|s| s.start)
        .min()
        .unwrap();
    assert!(
        wave2_start >= wave1_done + 3_000_000_000,
        "the second wave started {}ms after the first was healthy, before the 3s bake ended",
        (wave2_start - wave1_done) / 1_000_000
    );
    // Health kept running on web01 through the bake.
    let during = web01("health")
        .iter()
        .filter(|s| s.start > wave1_done && s.end <= wave2_start)
        .count();
    assert!(
        during >= 2,
        "health ran {during} times on web01 during the bake"
    );
    for h in &farm {
        f.assert_on(h, &b, SSHD_92);
    }
    f.assert_clean();
}

/// A command's supervisor is kept for the next command. Killed from
/// outside while idle (here: every one of the hook's, during a bake that
/// runs no health command), the next command gets a new one: the second
/// wave deploys as if nothing happened, and nothing is left behind.
#[test]
fn supervisors_killed_while_idle_are_replaced_and_the_rollout_goes_on() {
    let f = Fleet::new();
    let farm = names("web", 3);
    let mut setup = Setup::new(&farm, &["waves = [1, 2]", "bake = \"3s\""]);
    setup.spec.health = None;
    setup.start(&f);
    let b = f.change("b");

    let mut push = f.spawn_push(&[], &["-o", "group=farm"]);
    push.wait_for_line("baking");
    let hook = f.hook_pid();
    let supervisors: Vec<i32> = f
        .env
        .processes_matching(&format!("__rollgate-supervise {hook}( |$)"))
        .iter()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        !supervisors.is_empty(),
        "no idle supervisor during the bake"
    );
    for pid in &supervisors {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let out = push.finish();

    f.assert_landed(&out, &b);
    out.assert_lacks("FAILED").assert_lacks("supervisor");
    for h in &farm {
        f.assert_on(h, &b, SSHD_92);
        assert_eq!(f.status_of(h)["result"], "ok", "{h}");
    }
    let all = steps(&f);
    assert_eq!(hosts_of(&of(&all, "deploy", &b)), farm, "{out}");
    f.assert_clean();
}

#[test]
fn a_host_turning_unhealthy_during_the_bake_stops_the_rollout_before_the_next_wave() {
    let f = Fleet::new();
    let farm = names("web", 3);
    let setup = Setup::new(&farm, &["waves = [1, 2]", "bake = \"60s\""]);
    let a = setup.start(&f);
    let b = f.change("b");

    let mut push = f.spawn_push(&[], &["-o", "group=farm"]);
    push.wait_for_line("baking");
    // The canary of the wave turns unhealthy while baking.
    mark(&f, "web01", &b, "broken");
    let out = push.finish();

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["[web01] FAILED", "during the bake"]);
    out.assert_contains("web01 answers 503");
    assert!(
        out.duration.as_secs() < 60,
        "the bake ran out instead of stopping at the failure"
    );
    let all = steps(&f);
    assert_eq!(
        hosts_of(&of(&all, "deploy", &b)),
        ["web01"],
        "the next wave started"
    );
    for h in &farm {
        f.assert_on(h, &a, SSHD_92);
    }
    assert_eq!(f.status_of("web01")["result"], "restored");
    assert_eq!(f.status_of("web01")["rev"], a.as_str());
    f.assert_clean();
}

// ---- the failure budget ----------------------------------------------------------

#[test]
fn a_budget_of_two_tolerates_two_failures_and_stops_at_the_third() {
    let f = Fleet::new();
    let farm = names("web", 6);
    let setup = Setup::new(&farm, &["batch = 1", "max_failures = 2"]);
    let a = setup.start(&f);

    // Two failures: both put back, the rest goes on, the push lands.
    let b = f.change("b");
    mark(&f, "web02", &b, "broken");
    mark(&f, "web04", &b, "broken");
    let out = farm_push(&f);

    f.assert_landed(&out, &b);
    f.assert_line(&out, &["[web02] FAILED"]);
    f.assert_line(&out, &["web02 failed", "1 of max_failures = 2", "going on"]);
    f.assert_line(&out, &["web04 failed", "2 of max_failures = 2", "going on"]);
    f.assert_line(&out, &["deployed", "4 ok", "2 left behind", "web02, web04"]);
    for h in ["web01", "web03", "web05", "web06"] {
        f.assert_on(h, &b, SSHD_92);
        assert_eq!(f.status_of(h)["rev"], b.as_str(), "{h}");
    }
    for h in ["web02", "web04"] {
        f.assert_on(h, &a, SSHD_92);
        let row = f.status_of(h);
        assert_eq!(
            (&row["rev"], &row["result"]),
            (&a.as_str().into(), &"left-behind".into())
        );
    }
    let table = f
        .env
        .rollgate(&["status", "--repo", path_str(&f.env.remote())]);
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("web02") && l.contains("left-behind")),
        "{table}"
    );

    // Three failures: the third stops the run, nothing after it starts,
    // every host it touched goes back to b, and the push is rejected.
    let c = f.change("c");
    for h in ["web01", "web03", "web05"] {
        mark(&f, h, &c, "broken");
    }
    let out = farm_push(&f);

    f.assert_rejected(&out, Some(&b));
    f.assert_line(
        &out,
        &["3 hosts failed", "more than max_failures = 2", "stopping"],
    );
    let all = steps(&f);
    assert_eq!(
        hosts_of(&of(&all, "deploy", &c)),
        ["web01", "web02", "web03", "web04", "web05"],
        "web06 must not start after the third failure"
    );
    for h in ["web01", "web03", "web05", "web06"] {
        f.assert_on(h, &b, SSHD_92);
        assert_eq!(f.status_of(h)["rev"], b.as_str(), "{h}");
    }
    // web02 and web04 were on a: back there.
    for h in ["web02", "web04"] {
        f.assert_on(h, &a, SSHD_92);
        assert_eq!(f.status_of(h)["rev"], a.as_str(), "{h}");
    }
    f.assert_clean();
}

/// `kill -9` of the hook while a window runs: a host started by a later
/// batch record (web03, in web02's freed place) is as interrupted as one of
/// the first (web01), the one that finished is recorded on b, and the one
/// never started is untouched.
#[test]
fn a_hook_killed_mid_window_leaves_every_started_host_interrupted() {
    let f = Fleet::new();
    let farm = names("web", 4);
    let mut setup = Setup::new(&farm, &["batch = 2"]);
    let a = setup.start(&f);
    // web02 deploys at once; every other host hangs in its deploy.
    setup.spec.deploy = step(
        "deploy",
        "if [ {host} != web02 ]; then sleep 120; fi; \
         rsync -a --checksum --delete --mkpath {dir}/ {root}/{host}/etc/ssh/",
    );
    setup.write(&f);
    let b = f.env.commit("b, whose deploy hangs");
    let push = f.spawn_push(&[], &["-o", "group=farm"]);
    let started =
        |host: &str| steps_started(&f).contains(&("deploy".into(), host.into(), b.clone()));
    wait_until("web03 to start in web02's place", || started("web03"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(f.hook_pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    f.assert_rejected(&push.finish(), Some(&a));
    f.wait_until_unlocked();

    for h in ["web01", "web03"] {
        assert_eq!(f.status_of(h)["result"], "interrupted", "{h}");
    }
    f.assert_status("web02", "ok", &b);
    f.assert_status("web04", "ok", &a);
    f.assert_on("web04", &a, SSHD_92);
    assert!(!started("web04"), "web04 started");
}

/// The steps that started, finished or not: (role, host, rev).
fn steps_started(f: &Fleet) -> Vec<(String, String, String)> {
    let text = fs::read_to_string(f.hosts.join("steps.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [role, "start", host, rev, _] => Some((role.into(), host.into(), rev.into())),
            _ => None,
        })
        .collect()
}

/// Found by a red-team pass: a host put back within the budget and then a
/// stop. The summary must count it as failed, not as never started.
#[test]
fn a_host_put_back_within_the_budget_is_failed_in_the_summary_when_the_run_stops() {
    let f = Fleet::new();
    let farm = names("web", 6);
    let mut setup = Setup::new(&farm, &["batch = 3", "max_failures = 1"]);
    // web01 fails first, alone; web02 and web03 after it.
    setup.reload_taking("0.1", "1.5");
    let a = setup.start(&f);
    let b = f.change("b");
    for h in ["web01", "web02", "web03"] {
        mark(&f, h, &b, "broken");
    }

    let out = farm_push(&f);

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["web01 failed", "1 of max_failures = 1", "going on"]);
    f.assert_line(&out, &["more than max_failures = 1", "stopping"]);
    f.assert_line(
        &out,
        &["stopped after", "3 FAILED (", "web01", "web02", "web03"],
    );
    f.assert_line(
        &out,
        &["failed within max_failures, put back then", "web01"],
    );
    let not_started = out
        .stderr
        .lines()
        .find(|l| l.contains("not started, unchanged"))
        .unwrap_or_default();
    assert!(!not_started.contains("web01"), "{not_started}\n{out}");
    let end = f.runs().last().unwrap().end.clone().expect("the run ended");
    let error = end["error"].as_str().unwrap_or_default();
    for h in ["web01", "web02", "web03"] {
        assert!(error.contains(h), "{h} is missing from {end}");
    }
    for h in &farm {
        f.assert_on(h, &a, SSHD_92);
        assert_eq!(f.status_of(h)["rev"], a.as_str(), "{h}");
    }
    f.assert_clean();
}

// ---- config errors ---------------------------------------------------------------

#[test]
fn bad_waves_and_budgets_are_config_errors_that_say_what_is_wrong() {
    let f = Fleet::new();
    let farm = names("web", 2);
    let setup = Setup::new(&farm, &["batch = 1"]);
    let a = setup.start(&f);
    for (lines, says) in [
        (
            &["batch = 2", "waves = [1, 2]"][..],
            "`batch` and `waves` are both given",
        ),
        (&["waves = []"][..], "waves: give at least one batch size"),
        (&["waves = [1, 0]"][..], "waves[1]: a wave of no hosts"),
        (
            &["waves = [1, \"20\"]"][..],
            "waves[1]: \"20\" is neither a number of hosts nor a percentage",
        ),
        (
            &["waves = [\"150%\"]"][..],
            "waves[0]: \"150%\" is more than 100%",
        ),
        (
            &["max_failures = \"ten\""][..],
            "max_failures: \"ten\" is neither",
        ),
        (&["max_failures = -1"][..], "max_failures: -1 is negative"),
        (
            &["rollout = \"all-at-once\""][..],
            "unknown variant `all-at-once`, expected one of `host-by-host`",
        ),
    ] {
        Setup::new(&farm, lines).write(&f);
        f.env.commit(&format!("bad: {lines:?}"));
        let out = farm_push(&f);
        out.assert_code(1)
            .assert_contains("invalid rollgate.toml")
            .assert_contains(says);
        // serde's own errors point at the line instead.
        if !says.starts_with("unknown variant") {
            out.assert_contains("caused by: groups.farm");
        }
        assert_eq!(f.env.remote_ref(MAIN).as_deref(), Some(a.as_str()));
        f.env.git_ok(&f.env.work(), &["reset", "-q", "--hard", &a]);
    }
    assert_eq!(f.runs().len(), 1, "a bad config deployed something");
    f.assert_clean();
}

// ---- the dead-man's switch, with a real sshd ---------------------------------------

/// An sshd whose config is the deployed file itself, killed on drop with
/// whatever its sessions started; and the armed revert, killed on drop too.
struct Machine {
    sshd: Child,
    root: PathBuf,
}

impl Drop for Machine {
    fn drop(&mut self) {
        kill_armed(&self.root);
        let pid = self.sshd.id().to_string();
        if let Ok(out) = Command::new("pgrep").args(["-P", &pid]).output() {
            for child in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-TERM", child]).status();
            }
        }
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.sshd.wait();
    }
}

/// The armed revert's process group, if it is still there: gone after.
fn kill_armed(root: &Path) {
    if let Ok(pid) = fs::read_to_string(root.join("armed.pid"))
        && let Ok(pid) = pid.trim().parse::<i32>()
    {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .status();
        wait_until("the armed revert to be gone", || !group_alive(pid));
    }
}

fn sshd_config(root: &Path, port: u16) -> String {
    format!(
        "# sshd on 127.0.0.2, the deployed file is its config\n\
         ListenAddress 127.0.0.2:{port}\n\
         PidFile {root}/sshd.pid\n\
         AuthorizedKeysFile {root}/authorized_keys\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UsePAM no\n",
        root = root.display()
    )
}

fn ssh_argv(tail: &[&str]) -> Vec<String> {
    crate::ssh_hosts::ssh_argv(SSH_OPTS, tail)
}

#[test]
fn a_reload_that_breaks_sshd_is_reverted_by_the_armed_switch() {
    let f = Fleet::new();
    let env = &f.env;
    let key = env.path("keys/client_key");
    keygen(env, &key);
    let root = env.path("machine");
    fs::create_dir_all(root.join("etc/ssh")).unwrap();
    fs::copy(
        env.path("keys/client_key.pub"),
        root.join("authorized_keys"),
    )
    .unwrap();
    let host_key = root.join("host_key");
    keygen(env, &host_key);
    let port = free_port("127.0.0.2");
    let wrong_port = free_port("127.0.0.2");
    let good = sshd_config(&root, port);
    fs::write(root.join("etc/ssh/sshd_config"), &good).unwrap();
    let log = root.join("sshd.log");
    let sshd = env
        .command("/usr/sbin/sshd")
        .arg("-D")
        .arg("-f")
        .arg(root.join("etc/ssh/sshd_config"))
        .arg("-h")
        .arg(&host_key)
        .arg("-E")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sshd");
    let machine = Machine {
        sshd,
        root: root.clone(),
    };
    let reachable = || TcpStream::connect(("127.0.0.2", port)).is_ok();
    wait_until("sshd to listen", reachable);
    let pid = machine.sshd.id().to_string();

    let ssh_e = format!("ssh {SSH_OPTS}");
    let mut spec = Spec::standard();
    let mut canary = group("canary", &["127.0.0.2"], 1, "lo");
    canary.root = Some(root.clone());
    canary.extra = vec![
        ("port".into(), port.to_string()),
        ("key".into(), path_str(&key).into()),
        ("pid".into(), pid.clone()),
    ];
    spec.groups = vec![canary];
    // The deploy keeps the file it replaces in {root}/prev: what the
    // armed revert puts back.
    spec.deploy = [
        "rsync",
        "-a",
        "--checksum",
        "--backup",
        "--backup-dir={root}/prev",
        "-e",
        &ssh_e,
        "{dir}/",
        "root@{host}:{root}/etc/ssh/",
    ]
    .map(String::from)
    .to_vec();
    // Health over a new connection each time.
    spec.health = Some(ssh_argv(&["true"]));
    spec.service.extend([
        format!("reload = {}", argv(&ssh_argv(&["kill", "-HUP", "{pid}"]))),
        // The switch: a detached host-side timer that puts the previous
        // file back and reloads, unless disarmed within 8s.
        format!(
            "arm = {}",
            argv(&ssh_argv(&[
                "setsid sh -c 'echo $$ > {root}/armed.pid; sleep 8; \
                 cp {root}/prev/sshd_config {root}/etc/ssh/sshd_config && kill -HUP {pid}; \
                 rm -f {root}/armed.pid' \
                 > /dev/null 2>&1 < /dev/null &"
            ]))
        ),
        format!(
            "disarm = {}",
            argv(&ssh_argv(&[
                "/usr/bin/kill -KILL -- -$(cat {root}/armed.pid) && rm {root}/armed.pid"
            ]))
        ),
        "health_wait = \"2s\"".into(),
        "timeout = \"20s\"".into(),
    ]);
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    env.write("files/sshd/lo/sshd_config", &good);
    f.write_spec(&spec);
    let a = env.commit("sshd on loopback");

    let out = env.push(&[]);

    f.assert_landed(&out, &a);
    out.assert_contains("[127.0.0.2] ok");
    assert!(!root.join("armed.pid").exists(), "not disarmed\n{out}");

    // A change that passes `sshd -t` but moves sshd where nobody connects.
    env.write("files/sshd/lo/sshd_config", &sshd_config(&root, wrong_port));
    let b = env.commit("move sshd to another port");
    let out = env.push(&[]);

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["[127.0.0.2] FAILED", "sshd health"]);
    f.assert_line(&out, &["restore of sshd", "FAILED"]);
    f.assert_line(&out, &["[127.0.0.2] sshd: left to its armed revert"]);
    let row = f.status_of("127.0.0.2");
    assert_eq!(row["result"], "armed-revert", "{row:#}");
    // What the host holds now, and what its armed revert will put back.
    assert_eq!(row["rev"], b.as_str(), "{row:#}");
    assert_eq!(row["target"], a.as_str(), "{row:#}");
    let table = env.rollgate(&["status", "--repo", path_str(&env.remote())]);
    table
        .assert_ok()
        .assert_contains("left to its armed revert");

    // The switch fires: sshd comes back on its port, and we log in again.
    wait_until("the armed revert to bring sshd back", reachable);
    let mut login = env.command("ssh");
    login.args(
        SSH_OPTS
            .replace("{port}", &port.to_string())
            .replace("{key}", path_str(&key))
            .split_whitespace(),
    );
    login.args([
        "root@127.0.0.2",
        "cat",
        path_str(&root.join("etc/ssh/sshd_config")),
    ]);
    let back = env.run(login);
    back.assert_ok();
    assert_eq!(back.stdout, good, "not the previous config");

    kill_armed(&root);
    let sshd_pid = machine.sshd.id();
    drop(machine);
    assert!(!Path::new(&format!("/proc/{sshd_pid}")).exists());
    f.assert_clean();
}

// ---- live version directories ------------------------------------------------------

#[test]
fn a_push_that_changes_what_hosts_outside_its_scope_run_names_them() {
    let f = Fleet::new();
    f.start(&Spec::standard());
    let farm_line = ["group farm (server01, server02, server03)"];

    // 9.2 is the farm's; a plain push deploys to the canary only.
    f.env.append(SSHD_92, "# 9.2 edited in place");
    let b = f.env.commit("edit 9.2 in place");
    let out = f.env.push(&[]);

    f.assert_landed(&out, &b);
    f.assert_line(
        &out,
        &[
            "warning: files/sshd/9.2 (sshd 9.2) changed",
            "hosts outside this push run it now",
            farm_line[0],
        ],
    );
    f.assert_line(
        &out,
        &["they get it on their next deploy", "new version directory"],
    );
    assert!(
        f.deployed("server01").is_none(),
        "the farm was touched\n{out}"
    );

    // The canary's own directory: in scope, nothing to say.
    f.env.append(crate::support::SSHD_96, "# 9.6 edited");
    let c = f.env.commit("edit 9.6");
    let out = f.env.push(&[]);
    f.assert_landed(&out, &c);
    out.assert_lacks("warning:");

    // Only rollgate.toml changed: what hosts run did not.
    let text = fs::read_to_string(f.env.work().join("rollgate.toml")).unwrap();
    f.env
        .write("rollgate.toml", &format!("heartbeat = \"30s\"\n{text}"));
    let d = f.env.commit("a slower heartbeat");
    let out = f.env.push(&[]);
    f.assert_landed(&out, &d);
    out.assert_lacks("warning:");

    // One farm host in scope: the other two are named.
    f.env.append(SSHD_92, "# 9.2 edited again");
    let e = f.env.commit("edit 9.2 again");
    let out = f.env.push(&["-o", "host=server01"]);
    f.assert_landed(&out, &e);
    f.assert_line(&out, &["files/sshd/9.2", "group farm (server02, server03)"]);

    // Everyone in scope: nobody is left to be surprised.
    f.env.append(SSHD_92, "# 9.2 edited for all");
    let g = f.env.commit("edit 9.2 for all");
    let out = f.env.push(&["-o", "all"]);
    f.assert_landed(&out, &g);
    out.assert_lacks("warning:");

    // The server's policy refuses live edits: the same kind of push is
    // rejected, naming the way forward, and nothing is deployed ...
    let policy = f.env.remote().join("rollgate/policy.toml");
    let text = fs::read_to_string(&policy).unwrap();
    assert!(text.contains("live_edit = \"warn\"\n"), "{text}");
    fs::write(
        &policy,
        text.replace("live_edit = \"warn\"\n", "live_edit = \"refuse\"\n"),
    )
    .unwrap();
    let canary = f.tree("server04");
    f.env.append(SSHD_92, "# 9.2 edited under refuse");
    let h = f.env.commit("edit 9.2 under refuse");
    let out = f.env.push(&[]);
    f.assert_rejected(&out, Some(&g));
    f.assert_line(
        &out,
        &[
            "files/sshd/9.2",
            "group farm (server01, server02, server03)",
            "live_edit = \"refuse\"",
        ],
    );
    f.assert_line(&out, &["hint:", "new version directory", "-o live-edit"]);
    assert_eq!(f.tree("server04"), canary, "the canary was deployed\n{out}");
    let runs = f.runs().len();

    // ... unless it says so with -o live-edit, which the journal keeps.
    let out = f.env.push(&["-o", "live-edit"]);
    f.assert_landed(&out, &h);
    f.assert_line(
        &out,
        &["live edit (-o live-edit): files/sshd/9.2", "group farm"],
    );
    let all = f.runs();
    assert_eq!(all.len(), runs + 1);
    assert_eq!(all[runs].start["options"], serde_json::json!(["live-edit"]));
    f.assert_clean();
}
