//! Nothing outlives a run, output is bounded, a failed push leaves no host
//! changed (issue 10), through real pushes: a bare repository with the hook,
//! real `sshd -t` checks, hosts that are local directories filled by real
//! `rsync`, and deploy commands that leave evidence (timestamps, pids,
//! ticks) the assertions are made from.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fleet::{Fleet, Spec, group, parent_of, sh, timed_deploy, wait_until};
use crate::support::{SSHD_92, SSHD_96, path_str};

fn short(id: &str) -> &str {
    &id[..10]
}

/// The fleet's deploy script (see `timed_deploy`), to prefix or extend.
fn timed_script() -> String {
    timed_deploy(None)[2].clone()
}

/// Replaces the `check = [...]` line of the rendered `rollgate.toml`.
fn write_with_check(f: &Fleet, spec: &Spec, check: &[&str]) {
    let text = spec.render(&f.env, &f.hosts);
    let argv = check
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect::<Vec<_>>()
        .join(", ");
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("check = ") {
                format!("check = [{argv}]\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    f.env.write("rollgate.toml", &text);
}

/// Whether process `pid` is alive (a zombie is not).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

/// Reads a file a deploy writes atomically (tmp + mv), as a number.
fn number_in(path: &Path) -> u32 {
    fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- nothing outlives a run ---------------------------------------------------

/// 20 times: a push whose deploy is slow (it starts a `setsid` ticker that
/// leaves the process group and writes a timestamp every 20 ms) has its
/// hook killed with -9; the next push follows at once. Nothing of the
/// killed run may be left running, the next deploy may only begin after the
/// killed run's last tick (the killed run's lock is held until its commands
/// are dead), and the host ends on what was accepted last.
#[test]
fn kill_9_of_the_hook_mid_deploy_leaves_nothing_running_20_of_20() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.top.push("lock_wait = \"1m\"".into());
    spec.deploy = sh("echo $(date +%s%N) >> {root}/{host}.begun \
         && rsync -a --checksum --delete --mkpath {dir}/ {root}/{host}/etc/ssh/ \
         && if [ -e {root}/slow ]; then \
              setsid -f sh -c 'while :; do echo $(date +%s%N) >> {root}/{host}.ticks; sleep 0.02; done'; \
              echo $PPID > {root}/{host}.tmp && mv {root}/{host}.tmp {root}/{host}.slow.{rev}; \
              while :; do sleep 0.05; done; \
            fi");
    let mut last = f.start(&spec);
    let slow = f.hosts.join("slow");
    let ticks = f.hosts.join("server04.ticks");
    let started = Instant::now();
    for i in 0..20 {
        let _ = fs::remove_file(&ticks);
        fs::write(&slow, "").unwrap();
        let b = f.change(&format!("killed {i}"));
        let push = f.spawn_push(&[], &[]);
        let marker = f.hosts.join(format!("server04.slow.{b}"));
        wait_until("the slow deploy and its ticker to start", || {
            marker.exists() && fs::read_to_string(&ticks).is_ok_and(|t| t.contains('\n'))
        });
        // The deploy's parent is its supervisor, whose parent is the hook.
        let supervisor = number_in(&marker);
        let hook = parent_of(supervisor).expect("the supervisor is alive");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(hook as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let out = push.finish();
        f.assert_rejected(&out, Some(&last));

        fs::remove_file(&slow).unwrap();
        let c = f.change(&format!("next {i}"));
        let out = f.env.push(&[]);
        f.assert_landed(&out, &c);

        let left = f.env.processes_matching(path_str(&f.hosts));
        assert!(left.is_empty(), "round {i}: still running: {left:#?}");
        assert!(!alive(supervisor), "round {i}: the supervisor lives");
        let begun = fs::read_to_string(f.hosts.join("server04.begun")).unwrap();
        let next_start: u128 = begun.lines().last().unwrap().parse().unwrap();
        let last_tick: u128 = fs::read_to_string(&ticks)
            .unwrap()
            .lines()
            .filter_map(|l| l.parse().ok())
            .max()
            .expect("the ticker ticked");
        assert!(
            last_tick < next_start,
            "round {i}: the killed run's ticker ran {} ms into the next deploy",
            (last_tick - next_start) / 1_000_000
        );
        f.assert_on("server04", &c, SSHD_96);
        // `status` after an interrupted run is the journal's side (issue
        // 10, item 6), not asserted here.
        last = c;
    }
    // Each round is two pushes; this bounds a hang, not speed.
    assert!(started.elapsed() < Duration::from_secs(240));
    // The killed hooks' work trees are swept by the next run, now that no
    // process holds them.
    let c = f.change("last");
    let out = f.env.push(&[]);
    f.assert_landed(&out, &c);
    f.assert_clean();
}

/// `setsid -f` puts a grandchild out of the deploy's process group, and it
/// keeps the output pipe open: the 2 s timeout must still bound the push,
/// and the grandchild must be dead when the push returns.
#[test]
fn a_setsid_grandchild_holding_the_output_pipe_is_bounded_by_the_timeout() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    let a = f.start(&spec);
    spec.service.push("timeout = \"2s\"".into());
    spec.deploy = sh(&format!(
        "{} && setsid -f sh -c 'echo $$ > {{root}}/{{host}}.tmp && mv {{root}}/{{host}}.tmp \
         {{root}}/{{host}}.escaped; while :; do echo still here; sleep 0.1; done' \
         && while :; do sleep 0.1; done",
        timed_script()
    ));
    f.write_spec(&spec);
    f.env.commit("a deploy whose grandchild escapes");

    let started = Instant::now();
    let out = f.env.push(&[]);
    let took = started.elapsed();

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["[server04] FAILED", "timed out after 2s"]);
    out.assert_contains("still here");
    // 40 s before: the hook waited for the pipe. 2 s, then the restore.
    assert!(took < Duration::from_secs(15), "took {took:?}\n{out}");
    let escaped = number_in(&f.hosts.join("server04.escaped"));
    assert!(!alive(escaped), "the setsid grandchild survived\n{out}");
    let left = f.env.processes_matching(path_str(&f.hosts));
    assert!(left.is_empty(), "still running: {left:#?}");
    f.assert_on("server04", &a, SSHD_96);
    f.assert_line(&out, &["restored to", short(&a), "server04"]);
    f.assert_clean();
}

/// A checker that leaves a daemon behind (here one that left its process
/// group) and exits 0: the daemon dies with the check.
#[test]
fn a_checks_background_daemon_dies_with_the_check() {
    let f = Fleet::new();
    let spec = Spec::standard();
    f.env.bare_repo();
    f.env.clone_repo();
    f.env.write_infra();
    // Bare, so the check can leave its marks where the test reads them; the
    // sandboxed case is tests/it/sandbox.rs's (its PID namespace).
    fs::write(
        f.env.remote().join("rollgate/policy.toml"),
        "sandbox = false\n",
    )
    .unwrap();
    let tag = format!("daemon-of-{}", path_str(f.env.root()));
    let script = format!(
        "grep SigBlk /proc/self/status > {0}/sigblk; \
         setsid -f sh -c 'echo $$ > {0}/daemon.tmp && mv {0}/daemon.tmp {0}/daemon; \
         while :; do sleep 0.1; done' {tag}; \
         while [ ! -e {0}/daemon ]; do sleep 0.01; done; exit 0",
        path_str(&f.hosts)
    );
    write_with_check(&f, &spec, &["sh", "-c", &script]);
    let a = f.env.commit("a checker with a daemon");

    let out = f.env.push(&[]);

    f.assert_landed(&out, &a);
    let daemon = number_in(&f.hosts.join("daemon"));
    assert!(!alive(daemon), "the check's daemon survived\n{out}");
    let left = f.env.processes_matching(&tag);
    assert!(left.is_empty(), "still running: {left:#?}");
    // The check starts with no signal blocked (the supervisor blocks some
    // for itself; a command inheriting that could not be stopped by them).
    let blocked = fs::read_to_string(f.hosts.join("sigblk")).unwrap();
    assert_eq!(blocked.trim(), "SigBlk:\t0000000000000000");
    f.assert_clean();
}

// ---- bounded output ---------------------------------------------------------------

/// Two checks print 100 MB each and the deploy 100 MB; the health step,
/// which runs after the deploy's output has been handled, reads the hook's
/// peak resident size (VmHWM: the high-water mark, so no peak is missed).
#[test]
fn three_hundred_mb_of_check_and_deploy_output_keep_the_hook_under_64_mb() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.deploy = sh(&format!(
        "{} && yes deploy-output | head -c 100000000",
        timed_script()
    ));
    // $PPID is the supervisor; its parent (field 4 of its stat) the hook.
    spec.health = Some(sh("hook=$(cut -d' ' -f4 /proc/$PPID/stat) \
         && grep VmHWM /proc/$hook/status > {root}/{host}.hwm \
         && cat /proc/$hook/cmdline | tr '\\0' ' ' >> {root}/{host}.hwm"));
    f.env.bare_repo();
    f.env.clone_repo();
    f.env.write_infra();
    // A check per changed directory: both sshd versions, 100 MB each.
    write_with_check(
        &f,
        &spec,
        &["sh", "-c", "yes check-output | head -c 100000000; exit 0"],
    );
    let a = f.env.commit("chatty commands");

    let out = f.env.push(&[]);

    f.assert_landed(&out, &a);
    // The pusher is told how much of what a check printed was left out.
    f.assert_line(&out, &["more lines", "bytes omitted"]);
    let hwm = fs::read_to_string(f.hosts.join("server04.hwm")).unwrap();
    assert!(hwm.contains("hook pre-receive"), "not the hook: {hwm}");
    let kb: u64 = hwm
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {hwm:?}"));
    assert!(kb > 1024, "implausible VmHWM {kb} kB");
    assert!(kb < 64 * 1024, "the hook peaked at {kb} kB\n{out}");
    f.assert_clean();
}

// ---- a failed push leaves no host changed -----------------------------------------

/// A tmpfs mounted over a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(status.success(), "mount a tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The journal lives on a small filesystem that a deploy fills when the
/// rollout reaches its second batch: the journal cannot take that batch's
/// records. Every host the run touched goes back, the push is rejected with
/// a summary, and afterwards `status` says what the hosts hold.
#[test]
fn a_journal_filesystem_filling_mid_rollout_puts_every_touched_host_back() {
    let f = Fleet::new();
    // 15 at a time: the journal fills as soon as a host after the first
    // 15 starts (h16 to h30 fill it in their deploy step), so the records
    // of the first 15 that end after that cannot be written.
    let farm: Vec<String> = (1..=45).map(|i| format!("h{i:02}")).collect();
    let farm_refs: Vec<&str> = farm.iter().map(String::as_str).collect();
    let mut spec = Spec::standard();
    spec.groups[1] = group("farm", &farm_refs, 15, "9.2");
    let a = f.init(&spec);
    let out = f.env.push(&["-o", "all"]);
    f.assert_landed(&out, &a);
    let before: Vec<(&str, crate::fleet::Tree)> =
        farm_refs.iter().map(|h| (*h, f.tree(h))).collect();

    let dir = f.env.remote().join("rollgate");
    let saved: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| (e.path(), fs::read(e.path()).unwrap()))
        .collect();
    let mount = Tmpfs::mount(&dir, "256k");
    for (path, bytes) in &saved {
        fs::write(path, bytes).unwrap();
    }
    // Appends: a truncating `>` would free the filesystem again.
    let filler = dir.join("filler");
    spec.deploy = sh(&format!(
        "case {{host}} in h1[6-9]|h2*|h30) cat /dev/zero >> {} 2>/dev/null;; esac; {}",
        path_str(&filler),
        timed_script()
    ));
    f.write_spec(&spec);
    f.change("b");

    let out = f.env.push(&["-o", "group=farm"]);

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["cannot write the journal"]);
    // The first 15 all started; whoever else started before the journal
    // failed went back too; nobody else was touched. Only a host after
    // h16 can have started once the disk was full, and that takes 15 more
    // writes that cannot happen: h31 on are never reached.
    let restored = |h: &str| {
        out.stderr
            .lines()
            .any(|l| l.contains(&format!("[{h}] restored")) && l.contains(short(&a)))
    };
    for (h, tree) in &before {
        let first = farm_refs[..15].contains(h);
        if first || restored(h) {
            f.assert_on(h, &a, SSHD_92);
            f.assert_line(&out, &[&format!("[{h}] restored"), short(&a)]);
        } else {
            assert_eq!(&f.tree(h), tree, "{h} was touched but not put back\n{out}");
        }
    }
    assert!(restored("h16"), "h16 never started\n{out}");
    for h in &farm_refs[30..] {
        assert!(!restored(h), "{h} started after the journal failed\n{out}");
    }
    // The output ends with where each host stands.
    let tail: Vec<&str> = out.stderr.lines().rev().take(10).collect();
    let tail = tail.join("\n");
    for words in [
        "stopped after",
        "restored to",
        "not started, unchanged: ",
        "h31",
    ] {
        assert!(tail.contains(words), "no {words:?} at the end\n{out}");
    }
    assert!(fs::metadata(&filler).unwrap().len() > 0);

    // With space again, the journal reads cleanly and status tells the truth.
    fs::remove_file(&filler).unwrap();
    for h in farm_refs.iter().filter(|h| restored(h)) {
        assert_eq!(f.status_of(h)["rev"], a.as_str(), "{h}\n{out}");
    }
    drop(mount);
    f.assert_clean();
}

/// One failed host among 22 in a batch: all 22 go back, and the closing
/// summary names them (20, then how many more).
#[test]
fn a_failed_host_among_many_puts_every_touched_host_back_with_a_capped_summary() {
    let f = Fleet::new();
    let farm: Vec<String> = (1..=22).map(|i| format!("host{i:02}")).collect();
    let farm_refs: Vec<&str> = farm.iter().map(String::as_str).collect();
    let mut spec = Spec::standard();
    spec.groups[1] = group("farm", &farm_refs, 22, "9.2");
    spec.health = Some(sh(
        "if test -e {root}/{host}.{rev}.broken; then echo {host} answers 503 >&2; exit 1; fi",
    ));
    spec.service.push("health_wait = \"1s\"".into());
    let a = f.init(&spec);
    let out = f.env.push(&["-o", "all"]);
    f.assert_landed(&out, &a);
    let b = f.change("b");
    fs::write(f.hosts.join(format!("host07.{b}.broken")), "").unwrap();

    let out = f.env.push(&["-o", "group=farm"]);

    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["21 ok", "1 FAILED (host07)"]);
    f.assert_line(&out, &["restored to", short(&a), "and 2 more"]);
    for h in &farm {
        f.assert_on(h, &a, SSHD_92);
    }
    out.assert_lacks(&format!("now on {}", short(&b)));
    f.assert_clean();
}

// ---- config hardening ---------------------------------------------------------

#[test]
fn an_absurd_timeout_is_a_config_error_not_a_panic() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.service.push("timeout = \"500000000000years\"".into());
    f.init(&spec);

    let out = f.env.push(&[]);

    f.assert_rejected(&out, None);
    f.assert_line(&out, &["timeout", "maximum"]);
    out.assert_lacks("panicked");
    assert!(f.hosts_listing().is_empty(), "{:?}", f.hosts_listing());
    f.assert_clean();
}

#[test]
fn a_host_named_dotdot_is_refused() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.groups[0] = group("canary", &[".."], 1, "9.6");
    f.init(&spec);

    let out = f.env.push(&[]);

    f.assert_rejected(&out, None);
    f.assert_line(&out, &["\"..\"", "not names"]);
    assert!(f.hosts_listing().is_empty(), "{:?}", f.hosts_listing());
    // `{root}/{host}/etc/ssh` would have been the test root's etc/ssh.
    assert!(!f.env.path("etc").exists());
    f.assert_clean();
}

// ---- restore-failed: the CLI's deploy of a revision a ref holds ------------------

/// `rollgate deploy --rev` of a revision `main` holds, with the default
/// `on_failure = "restore-failed"`: only the failed host goes back, the one
/// that passed keeps the revision (git keeps it). The same deploy of a
/// revision no ref holds puts back every host it touched, like a push.
#[test]
fn restore_failed_keeps_passed_hosts_only_for_a_revision_on_a_ref() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.health = Some(sh(
        "if test -e {root}/{host}.{rev}.broken; then echo {host} answers 503 >&2; exit 1; fi",
    ));
    spec.service.push("health_wait = \"1s\"".into());
    spec.groups[1] = group("farm", &["server01", "server02"], 2, "9.2");
    let a = f.init(&spec);
    let out = f.env.push(&["-o", "all"]);
    f.assert_landed(&out, &a);
    let remote = f.env.remote();
    let repo = path_str(&remote);

    // On a ref: B lands on main without a deploy, then the CLI deploys it.
    let b = f.change("b");
    let out = f.env.push(&["-o", "validate-only"]);
    f.assert_landed(&out, &b);
    fs::write(f.hosts.join(format!("server02.{b}.broken")), "").unwrap();
    let out = f
        .env
        .rollgate(&["deploy", "--rev", "main", "--group", "farm", "--repo", repo]);
    out.assert_code(1);
    f.assert_on("server02", &a, SSHD_92);
    f.assert_on("server01", &b, SSHD_92);
    f.assert_line(&out, &["restored to", short(&a), "server02"]);
    f.assert_line(&out, &["now on", short(&b), "server01"]);

    // On no ref: C reaches the repository on a branch that is then deleted
    // (the server's policy must allow revisions main does not hold).
    fs::write(remote.join("rollgate/policy.toml"), "unmerged = true\n").unwrap();
    let c = f.change("c");
    let work = f.env.work();
    f.env
        .git_ok(&work, &["push", "-q", "origin", "HEAD:refs/heads/scratch"]);
    f.env
        .git_ok(&work, &["push", "-q", "origin", ":refs/heads/scratch"]);
    fs::write(f.hosts.join(format!("server02.{c}.broken")), "").unwrap();
    let out = f
        .env
        .rollgate(&["deploy", "--rev", &c, "--group", "farm", "--repo", repo]);
    out.assert_code(1);
    // Each back on what it ran before: server02 never kept B.
    f.assert_on("server01", &b, SSHD_92);
    f.assert_on("server02", &a, SSHD_92);
    f.assert_line(&out, &["[server01] restored", short(&b)]);
    out.assert_lacks("now on");
    f.assert_clean();
}

// ---- as the unprivileged git user -----------------------------------------------

/// `git push` as an unprivileged user (uid 65534) whose hook therefore runs
/// unprivileged too: the supervisor's subreaper, parent-death signal and
/// /proc walk need no privilege, so a `setsid` grandchild holding the pipe
/// is still killed at the timeout, and the host is put back.
#[test]
fn as_an_unprivileged_git_user_the_timeout_still_kills_an_escaped_grandchild() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    let a = f.init(&spec);
    spec.service.push("timeout = \"2s\"".into());
    let deploy_b = sh(&format!(
        "{} && setsid -f sh -c 'echo $$ > {{root}}/{{host}}.tmp && mv {{root}}/{{host}}.tmp \
         {{root}}/{{host}}.escaped; while :; do sleep 0.1; done' \
         && while :; do sleep 0.1; done",
        timed_script()
    ));
    // Everything of the test belongs to the git user from here on.
    let root = f.env.root();
    let ok = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown the test root");
    fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let push_as_git_user = || {
        let mut cmd = f.env.command("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["git", "push", "origin", "main"]);
        f.env.run(cmd)
    };
    // The repository is the git user's: git (as root, in the helpers)
    // would call it dubious, so refs are read as that user too.
    let main_ref = || {
        let mut cmd = f.env.command("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["git", "rev-parse", "origin/main"]);
        let mut fetch = f.env.command("setpriv");
        fetch
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["git", "fetch", "-q", "origin"]);
        f.env.run(fetch).assert_ok();
        f.env.run(cmd).stdout.trim().to_string()
    };
    let out = push_as_git_user();
    out.assert_ok();
    assert_eq!(main_ref(), a, "{out}");
    spec.deploy = deploy_b;
    f.write_spec(&spec);
    let mut cmd = f.env.command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args([
            "git",
            "commit",
            "-q",
            "-am",
            "a deploy whose grandchild escapes",
        ]);
    f.env.run(cmd).assert_ok();

    let started = Instant::now();
    let out = push_as_git_user();
    let took = started.elapsed();

    out.assert_code(1);
    assert_eq!(main_ref(), a, "{out}");
    f.assert_line(&out, &["[server04] FAILED", "timed out after 2s"]);
    assert!(took < Duration::from_secs(15), "took {took:?}\n{out}");
    let escaped = number_in(&f.hosts.join("server04.escaped"));
    assert!(!alive(escaped), "the setsid grandchild survived\n{out}");
    // The files on the host were written by the git user: the hook ran as it.
    let meta = fs::metadata(f.host("server04").join("etc/ssh/sshd_config")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534);
    // Back to root, for the helpers' own git.
    let ok = Command::new("chown")
        .args(["-R", "0:0"])
        .arg(root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown the test root back");
    f.assert_on("server04", &a, SSHD_96);
    f.assert_clean();
}

// ---- work trees are swept by lock, not by pid --------------------------------------

/// A push sweeps leftover work trees from TMPDIR. One held by a live process
/// whose pid means nothing here (as for a hook in another PID namespace
/// sharing TMPDIR) must stay; one nobody holds must go, even though the pid
/// in its name is alive (that pid is this test's own).
#[test]
fn a_push_sweeps_only_work_trees_nobody_holds() {
    let f = Fleet::new();
    let a = f.init(&Spec::standard());
    let tmp = f.env.tmpdir();
    let held = tmp.join("rollgate-99999999-held");
    let free = tmp.join(format!("rollgate-{}-free", std::process::id()));
    for dir in [&held, &free] {
        fs::create_dir_all(dir.join("tree/files")).unwrap();
        fs::write(dir.join("tree/files/x"), "x").unwrap();
        fs::write(dir.join("lock"), "").unwrap();
    }
    let holder = fs::File::open(held.join("lock")).unwrap();
    holder.lock_shared().unwrap();

    let out = f.env.push(&[]);

    f.assert_landed(&out, &a);
    assert!(held.join("tree/files/x").exists(), "a held tree was swept");
    assert!(!free.exists(), "a tree nobody holds was left");
    drop(holder);
    fs::remove_dir_all(&held).unwrap();
    f.assert_clean();
}

/// A deploy starts its hosts' supervisors while its checks run, on the
/// deploy lock's file, unlocked. `kill -9` of the hook then: the hung
/// check and those supervisors die with it, the lock was never taken (no
/// run in the journal), and the next push deploys at once.
#[test]
fn kill_9_of_the_hook_during_its_checks_leaves_no_lock_and_nothing_running() {
    let f = Fleet::new();
    let (check, pattern) = crate::support::hanging_check(3005);
    let toml = crate::support::probe_toml(&check, "60s").replace(
        "hosts = [\"server04\"]",
        "hosts = [\"server04\", \"server05\", \"server06\"]\nbatch = 3",
    );
    assert!(toml.contains("batch = 3"), "{toml}");
    f.env.bare_repo();
    f.env.clone_repo();
    f.env.write("rollgate.toml", &toml);
    f.env.write("files/probe/1.0/probe.conf", "x\n");
    f.env.commit("a checker that never ends");
    let push = f.spawn_push(&[], &[]);
    wait_until("the check to hang", || {
        !f.env.processes_matching(&pattern).is_empty()
    });
    let hook = f.hook_pid();
    let supervisors = format!("__rollgate-supervise {hook}( |$)");
    // The check's own, and one per host of the widest wave, started ahead.
    wait_until("the hosts' supervisors to start during the check", || {
        f.env.processes_matching(&supervisors).len() >= 3
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hook as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = push.finish();
    out.assert_failed();
    assert_eq!(f.env.remote_ref("refs/heads/main"), None, "{out}");
    wait_until("the check and the supervisors to die", || {
        f.env.processes_matching(&pattern).is_empty()
            && f.env.processes_matching(&supervisors).is_empty()
    });
    assert!(f.journal().is_empty(), "a run was journaled\n{out}");

    f.env.write(
        "rollgate.toml",
        &toml.replace(&check, r#"["test", "-d", "{dir}"]"#),
    );
    let b = f.env.commit("a checker that passes");
    let started = Instant::now();
    let out = f.env.push(&[]);
    f.assert_landed(&out, &b);
    out.assert_lacks("waiting").assert_contains("[server06] ok");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the next push waited for a lock\n{out}"
    );
    f.assert_clean();
}
