//! The check sandbox (issue 9 items 5, 6, 8; issue 12 item 5), through real
//! pushes: a check is code from the push, so whatever it tries must be
//! harmless, and honest checkers must read the pushed files, not the git
//! server's. Every hostile input here would succeed without the sandbox;
//! where that is not obvious, a control run outside it shows so.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Env, Outcome, SSHD_92, SSHD_96, argv, path_str, probe_toml};

const MAIN: &str = "refs/heads/main";

/// The infra repository with one more service, `probe`, whose directory
/// `files/probe` is checked by `check` (a TOML array); `extra` goes into the
/// service's table (e.g. `target = "/etc/ssh"`).
fn infra_with_probe(env: &Env, check: &str, extra: &str) -> String {
    format!(
        "{}\n[services.probe]\nsource = \"files/probe\"\ncheck = {check}\ndeploy = [\"true\"]\n{extra}\n",
        env.infra_toml()
    )
}

/// Pushes `rollgate.toml` = `toml` plus `files/probe/probe.conf` on top of
/// an accepted infra push; returns (the accepted id, the push's outcome).
fn push_probe(env: &Env, toml: &str) -> (String, Outcome) {
    let good = env.pushed_infra();
    env.write("rollgate.toml", toml);
    env.write("files/probe/probe.conf", "x\n");
    env.commit("a probe service");
    (good, env.push(&[]))
}

/// The lines a check printed (`| ` prefixed in the report).
fn check_output(out: &Outcome) -> Vec<String> {
    out.remote_lines()
        .iter()
        .filter_map(|l| l.trim_start().strip_prefix("| ").map(String::from))
        .collect()
}

fn assert_is_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs the hook as root and as another user: run the suite as root (CI does)"
    );
}

#[test]
fn hostile_check_reads_writes_and_learns_nothing() {
    assert_is_root();
    let env = Env::new();
    // The hook user's home (every command of the test, so the hook, has
    // HOME=<root>/home) with a private key in it.
    let ssh_dir = env.path("home/.ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    fs::set_permissions(&ssh_dir, fs::Permissions::from_mode(0o700)).unwrap();
    let key = ssh_dir.join("id_ed25519");
    fs::write(
        &key,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nSECRET-KEY-7f3a9c\n",
    )
    .unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    env.bare_repo();
    let hook = env.remote().join("hooks/pre-receive");
    let journal = env.remote().join("rollgate/journal.jsonl");
    let script = r#"id; cat "$1"; echo 'exit 0' > "$2"; : > "$3"; ls -la "$4"; exit 1"#;
    let check = argv(&[
        "sh",
        "-c",
        script,
        "sh",
        path_str(&key),
        path_str(&hook),
        path_str(&journal),
        path_str(&env.remote()),
    ]);
    env.clone_repo();
    env.write_infra();
    env.commit("initial config");
    env.push(&[]).assert_ok();
    let hook_before = fs::read(&hook).unwrap();
    let journal_before = fs::read(&journal).unwrap();
    assert!(!journal_before.is_empty(), "the first push left no journal");
    env.write("rollgate.toml", &infra_with_probe(&env, &check, ""));
    env.write("files/probe/probe.conf", "x\n");
    env.commit("a check that goes for the server");

    let out = env.push(&[]);

    out.assert_failed()
        .assert_dir_line("FAILED", "probe", "files/probe")
        .assert_lacks("SECRET-KEY-7f3a9c")
        .assert_lacks("uid=0(root)")
        // It ran, as nobody, and found nothing of the server's.
        .assert_contains("uid=65534(nobody)")
        .assert_contains("No such file or directory");
    assert_eq!(
        fs::read(&hook).unwrap(),
        hook_before,
        "hooks/pre-receive changed"
    );
    assert_eq!(
        fs::read(&journal).unwrap(),
        journal_before,
        "the journal changed"
    );
    assert_ne!(env.remote_ref(MAIN), Some(env.head()));
    // The gate still stands: a broken config is still rejected.
    env.write("rollgate.toml", &env.infra_toml());
    env.append(SSHD_92, "NoSuchOption yes");
    env.commit("broken sshd after the attack");
    env.push(&[])
        .assert_failed()
        .assert_dir_line("FAILED", "sshd 9.2", "files/sshd/9.2");
    env.assert_tmp_empty();
}

#[test]
fn include_of_a_server_file_echoes_none_of_its_lines() {
    let env = Env::new();
    let good = env.pushed_infra();
    // A world-readable file of the server's, one sshd would echo line by
    // line as "Bad configuration option" errors.
    let secret = env.path("server-secret.conf");
    fs::write(&secret, "ServerSecretMarker42 value\n").unwrap();
    env.append(SSHD_92, &format!("Include {}", secret.display()));
    let control = sshd_t_outside(&env, &env.work().join(SSHD_92));
    assert!(
        control.contains("ServerSecretMarker42"),
        "control: sshd -t outside a sandbox should echo the included file\n{control}"
    );
    env.commit("include a server file");

    let out = env.push(&[]);

    out.assert_lacks("ServerSecretMarker42");
    out.assert_ok();
    assert_ne!(env.remote_ref(MAIN), Some(good));
    env.assert_tmp_empty();
}

/// `sshd -t -f CONFIG` run bare by the test, with the test's host key.
fn sshd_t_outside(env: &Env, config: &Path) -> String {
    let mut cmd = env.command("/usr/sbin/sshd");
    cmd.arg("-t")
        .arg("-f")
        .arg(config)
        .arg("-o")
        .arg(format!("HostKey={}", env.host_key().display()));
    env.run(cmd).text()
}

#[test]
fn broken_pushed_drop_in_is_rejected_through_include_with_target() {
    let env = Env::new();
    let good = env.pushed_infra();
    env.replace(
        SSHD_96,
        "Port 22\n",
        "Include /etc/ssh/sshd_config.d/*.conf\nPort 22\n",
    );
    env.write(
        "files/sshd/9.6/sshd_config.d/50-local.conf",
        "NoSuchDropInOption yes\n",
    );
    env.commit("a broken drop-in");

    let out = env.push(&[]);

    out.assert_failed()
        .assert_dir_line("FAILED", "sshd 9.6", "files/sshd/9.6")
        .assert_contains("files/sshd/9.6/sshd_config.d/50-local.conf")
        .assert_contains("NoSuchDropInOption");
    assert_eq!(env.remote_ref(MAIN), Some(good));
    env.assert_tmp_empty();
}

/// The server's own drop-ins at the target path are never read: a server
/// directory (in the test's root, standing in for /etc/ssh) holds a broken
/// drop-in; the pushed tree a good one. Outside the sandbox the server's
/// broken file fails the same config.
#[test]
fn the_servers_own_drop_ins_at_the_target_are_never_read() {
    let env = Env::new();
    env.pushed_infra();
    let server = env.path("server/etc/ssh");
    fs::create_dir_all(server.join("sshd_config.d")).unwrap();
    fs::write(
        server.join("sshd_config.d/99-server.conf"),
        "ServerOnlyBadOption yes\n",
    )
    .unwrap();
    let toml = env.infra_toml().replace(
        "target = \"/etc/ssh\"",
        &format!("target = {:?}", server.display().to_string()),
    );
    env.write("rollgate.toml", &toml);
    env.replace(
        SSHD_96,
        "Port 22\n",
        &format!(
            "Include {}/sshd_config.d/*.conf\nPort 22\n",
            server.display()
        ),
    );
    env.write(
        "files/sshd/9.6/sshd_config.d/50-local.conf",
        "MaxAuthTries 3\n",
    );
    let control = sshd_t_outside(&env, &env.work().join(SSHD_96));
    assert!(
        control.contains("ServerOnlyBadOption"),
        "control: outside the sandbox the server's drop-in is read\n{control}"
    );
    env.commit("drop-ins through an absolute include");

    let out = env.push(&[]);

    out.assert_ok()
        .assert_dir_line("ok", "sshd 9.6", "files/sshd/9.6")
        .assert_lacks("ServerOnlyBadOption");
    env.assert_tmp_empty();
}

#[test]
fn a_check_at_target_etc_ssh_sees_the_pushed_files_only() {
    let env = Env::new();
    let server_names: Vec<String> = fs::read_dir("/etc/ssh")
        .expect("openssh-server is installed")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "sshd_config.d")
        .collect();
    assert!(server_names.iter().any(|n| n.starts_with("ssh_host_")));
    let check = argv(&["sh", "-c", "ls -A /etc/ssh; id -u"]);
    let toml = infra_with_probe(&env, &check, "target = \"/etc/ssh\"");

    let (_, out) = push_probe(&env, &toml);

    out.assert_ok();
    let seen = check_output(&out);
    assert_eq!(
        seen.first().map(String::as_str),
        Some("probe.conf"),
        "{out}"
    );
    for name in &server_names {
        assert!(
            !seen.iter().any(|l| l == name),
            "the check saw the server's /etc/ssh/{name}\n{out}"
        );
    }
    env.assert_tmp_empty();
}

/// What `path` is now: absent, or its size, mtime and inode.
fn state(path: &Path) -> Option<(u64, i64, i64, u64)> {
    fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
}

fn listing(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn nginx_t_leaves_nothing_on_the_server() {
    let env = Env::new();
    env.pushed_infra();
    let watched = [
        PathBuf::from("/run/nginx.pid"),
        PathBuf::from("/var/run/nginx.pid"),
        PathBuf::from("/var/log/nginx/error.log"),
        PathBuf::from("/var/log/nginx/access.log"),
    ];
    let before: Vec<_> = watched.iter().map(|p| state(p)).collect();
    let lib_before = listing(Path::new("/var/lib/nginx"));
    // Logs to the server's usual files, and a pid file where nginx -t
    // writes it.
    env.replace(
        "files/nginx/1.22/nginx.conf",
        "error_log stderr;",
        "error_log /var/log/nginx/error.log;",
    );
    env.replace(
        "files/nginx/1.22/nginx.conf",
        "access_log off;",
        "access_log /var/log/nginx/access.log;",
    );
    env.commit("nginx logs where Debian puts them");

    let out = env.push(&[]);

    out.assert_ok()
        .assert_dir_line("ok", "nginx 1.22", "files/nginx/1.22");
    let after: Vec<_> = watched.iter().map(|p| state(p)).collect();
    assert_eq!(before, after, "nginx -t touched {watched:?}\n{out}");
    assert_eq!(lib_before, listing(Path::new("/var/lib/nginx")));
    env.assert_tmp_empty();
}

#[test]
fn a_daemon_started_by_a_check_dies_with_it() {
    let env = Env::new();
    let tag = std::process::id();
    // setsid, nohup, a double fork, and one that keeps the output pipe.
    let script = format!(
        "setsid sleep 3201.{tag} >/dev/null 2>&1 & nohup sleep 3202.{tag} >/dev/null 2>&1 & \
         (sh -c 'sleep 3203.{tag} >/dev/null 2>&1 &') ; setsid sleep 3204.{tag} & exit 0"
    );
    let check = argv(&["sh", "-c", &script]);

    let (_, out) = push_probe(&env, &infra_with_probe(&env, &check, ""));

    out.assert_ok();
    assert!(
        out.duration.as_secs() < 60,
        "the push waited for what the check started\n{out}"
    );
    env.assert_no_process(&format!(r"sleep 320[1-4]\.{tag}"), &out);
    env.assert_tmp_empty();
}

/// The names of the variables a check printing `env` saw.
fn env_names(out: &Outcome) -> BTreeSet<String> {
    check_output(out)
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.to_string()))
        .collect()
}

const EXPLICIT_ENV: [&str; 4] = ["HOME", "LANG", "PATH", "TMPDIR"];

/// What bwrap adds itself: `PWD`, its `--chdir` (the work tree).
fn sandboxed_env() -> BTreeSet<String> {
    let mut names = BTreeSet::from(EXPLICIT_ENV.map(String::from));
    names.insert("PWD".to_string());
    names
}

#[test]
fn a_check_sees_none_of_the_clients_environment() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write("rollgate.toml", &probe_toml(r#"["env"]"#, "10s"));
    env.write("files/probe/1.0/probe.conf", "x\n");
    env.commit("a check that prints its environment");
    let mut push = env.command("git");
    push.args(["push", "origin", "main"])
        .env("LANG", "de_DE.UTF-8")
        .env("LC_ALL", "de_DE.UTF-8")
        .env("LC_MESSAGES", "fr_FR.UTF-8")
        .env("SSH_CONNECTION", "203.0.113.9 50000 192.0.2.1 22")
        .env("SSH_AUTH_SOCK", "/tmp/agent.sock");

    let out = env.run(push);

    out.assert_ok();
    assert_eq!(env_names(&out), sandboxed_env(), "{out}");
    let seen = check_output(&out);
    for expected in [
        "LANG=C.UTF-8",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/tmp/home",
        "TMPDIR=/tmp",
    ] {
        assert!(seen.iter().any(|l| l == expected), "no {expected}\n{out}");
    }
    out.assert_lacks("de_DE").assert_lacks("203.0.113.9");
    env.assert_tmp_empty();
}

#[test]
fn sandbox_false_in_the_policy_runs_checks_bare_and_every_line_says_so() {
    let env = Env::new();
    env.bare_repo();
    fs::create_dir_all(env.remote().join("rollgate")).unwrap();
    fs::write(
        env.remote().join("rollgate/policy.toml"),
        "# the admin's choice\nsandbox = false\n",
    )
    .unwrap();
    env.clone_repo();
    env.write("rollgate.toml", &probe_toml(r#"["env"]"#, "10s"));
    env.write("files/probe/1.0/probe.conf", "x\n");
    env.write("files/probe/2.0/probe.conf", "x\n");
    env.commit("two directories");
    let mut push = env.command("git");
    push.args(["push", "origin", "main"])
        .env("LC_ALL", "de_DE.UTF-8")
        .env("SSH_CONNECTION", "203.0.113.9 50000 192.0.2.1 22");

    let out = env.run(push);

    out.assert_ok();
    for dir in ["1.0", "2.0"] {
        let lines = out.lines_with(&[&format!("probe {dir}"), "unsandboxed"]);
        assert_eq!(
            lines.len(),
            1,
            "probe {dir} is not marked unsandboxed\n{out}"
        );
    }
    // Still an explicit environment, with a private HOME (not the hook's).
    assert_eq!(
        env_names(&out),
        BTreeSet::from(EXPLICIT_ENV.map(String::from)),
        "{out}"
    );
    out.assert_lacks(&format!("HOME={}", env.path("home").display()))
        .assert_lacks("de_DE")
        .assert_lacks("203.0.113.9");
    env.assert_tmp_empty();
}

#[test]
fn a_sandbox_that_cannot_start_rejects_the_push_with_the_reason() {
    assert_is_root();
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    env.commit("initial config");
    // The hook's TMPDIR (where the work tree goes) below a directory only
    // root may enter: the sandbox user cannot reach it.
    let private = env.path("private");
    fs::create_dir_all(private.join("tmp")).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let mut push = env.command("git");
    push.args(["push", "origin", "main"])
        .env("TMPDIR", private.join("tmp"));

    let out = env.run(push);

    out.assert_failed()
        .assert_contains("pre-receive hook declined")
        .assert_contains("the check sandbox cannot start")
        .assert_contains("Permission denied")
        .assert_contains("hint: ")
        .assert_contains("sandbox = false")
        // Said once, as the sandbox's fault, not as each check failing.
        .assert_lacks("FAILED");
    assert_eq!(env.remote_ref(MAIN), None);
    assert!(listing(&private.join("tmp")).is_empty(), "left behind");
    env.assert_tmp_empty();
}

/// A repository whose rollgate.toml is `toml`, pushed with fd 9 open on a
/// file holding `secret`: git passes the fd on to receive-pack and the
/// hook, as a wrapper (sshd, a CI runner) might.
fn push_with_fd_9(env: &Env, toml: &str, secret: &str) -> crate::support::Outcome {
    let path = env.path("secret.txt");
    fs::write(&path, format!("{secret}\n")).unwrap();
    env.bare_repo();
    env.clone_repo();
    env.write("rollgate.toml", toml);
    env.write("files/probe/1.0/probe.conf", "x\n");
    env.commit("a command that reads fd 9");
    let mut push = env.command("bash");
    push.args([
        "-c",
        r#"exec 9<"$1"; exec git push origin main"#,
        "bash",
        path_str(&path),
    ]);
    env.run(push)
}

#[test]
fn an_inherited_file_descriptor_does_not_reach_a_check() {
    let env = Env::new();
    let toml = probe_toml(&argv(&["sh", "-c", "cat <&9"]), "10s");

    let out = push_with_fd_9(&env, &toml, "FD-SECRET-5521");

    out.assert_failed()
        .assert_dir_line("FAILED", "probe 1.0", "files/probe/1.0")
        .assert_lacks("FD-SECRET-5521");
    env.assert_tmp_empty();
}

/// The same for a deploy command: its supervisor may be started while the
/// checks run (ahead of the deploy), and must not carry fd 9 either.
#[test]
fn an_inherited_file_descriptor_does_not_reach_a_deploy_command() {
    let env = Env::new();
    let toml = probe_toml(&argv(&["true"]), "10s").replace(
        r#"deploy = ["true"]"#,
        r#"deploy = ["sh", "-c", "if cat <&9; then exit 1; fi"]"#,
    );
    assert!(toml.contains("cat <&9"), "{toml}");

    let out = push_with_fd_9(&env, &toml, "FD-SECRET-7730");

    out.assert_ok()
        .assert_contains("[server04] ok")
        .assert_lacks("FD-SECRET-7730");
    env.assert_tmp_empty();
}

#[test]
fn strict_fails_a_check_that_passes_with_warnings() {
    let env = Env::new();
    env.bare_repo();
    env.clone_repo();
    let toml = probe_toml(
        &argv(&["systemd-analyze", "verify", "--man=no", "{file}"]),
        "30s",
    );
    env.write("rollgate.toml", &toml);
    env.write(
        "files/probe/1.0/app.service",
        "[Unit]\nDescription=app\n[Service]\nExecStart=/usr/bin/true\nRestrat=always\n",
    );
    env.commit("a unit with a typo systemd only warns about");

    let lenient = env.push(&[]);

    lenient
        .assert_ok()
        .assert_dir_line("ok", "probe 1.0", "files/probe/1.0")
        .assert_contains("Unknown key 'Restrat'");
    env.write(
        "rollgate.toml",
        &toml.replace("deploy = [\"true\"]", "deploy = [\"true\"]\nstrict = true"),
    );
    env.append("files/probe/1.0/app.service", "# touched");
    let strict_id = env.commit("strict");

    let strict = env.push(&[]);

    strict
        .assert_failed()
        .assert_dir_line("FAILED", "probe 1.0", "files/probe/1.0")
        .assert_contains("files/probe/1.0/app.service")
        .assert_contains("strict")
        .assert_contains("Unknown key 'Restrat'");
    assert_ne!(env.remote_ref(MAIN), Some(strict_id));
    env.assert_tmp_empty();
}

// ---- the five example services ---------------------------------------------

/// The hook user of the unprivileged runs: Debian's `www-data` (always
/// there; a git user made by a test would outlive it).
const GIT_USER: u32 = 33;

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

fn chown_tree(path: &Path, id: u32) {
    let status = Command::new("chown")
        .args(["-R", &format!("{id}:{id}")])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "chown -R {}", path.display());
}

/// A clone holding examples/infra as it is, committed, and the push that
/// validates it (as root, or as [`GIT_USER`] with the bare repository and
/// the hook's TMPDIR owned by that user).
struct Examples {
    env: Env,
    as_git_user: bool,
}

impl Examples {
    fn new(as_git_user: bool) -> Examples {
        assert_is_root();
        let env = Env::new();
        env.bare_repo();
        env.clone_repo();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/infra");
        copy_tree(&examples, &env.work());
        env.commit("examples/infra");
        if as_git_user {
            chown_tree(&env.remote(), GIT_USER);
            let tmp = env.path("git-user-tmp");
            fs::create_dir(&tmp).unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).unwrap();
            chown_tree(&tmp, GIT_USER);
        }
        Examples { env, as_git_user }
    }

    fn push(&self) -> Outcome {
        let mut push = self.env.command("git");
        push.args(["push", "-o", "validate-only"]);
        if self.as_git_user {
            // receive-pack, and with it the hook, runs as the git user.
            let receive = format!(
                "setpriv --reuid={GIT_USER} --regid={GIT_USER} --clear-groups -- git-receive-pack"
            );
            push.args(["--receive-pack", &receive])
                .env("TMPDIR", self.env.path("git-user-tmp"));
        }
        push.args(["origin", "main"]);
        self.env.run(push)
    }

    /// The bare repository's main (as root, which git would refuse in a
    /// repository another user owns without `safe.directory`).
    fn remote_main(&self) -> Option<String> {
        let remote = self.env.remote();
        let out = self.env.git_in(
            self.env.root(),
            &[
                "-c",
                "safe.directory=*",
                "--git-dir",
                path_str(&remote),
                "rev-parse",
                "-q",
                "--verify",
                MAIN,
            ],
        );
        out.success().then(|| out.stdout.trim().to_string())
    }

    fn assert_clean(&self) {
        self.env.assert_tmp_empty();
        assert!(listing(&self.env.path("git-user-tmp")).is_empty());
    }
}

/// Every example directory, as (label, path).
const EXAMPLE_DIRS: [(&str, &str); 10] = [
    ("sshd 9.2", "files/sshd/9.2"),
    ("sshd 9.6", "files/sshd/9.6"),
    ("nginx 1.22", "files/nginx/1.22"),
    ("nginx 1.24", "files/nginx/1.24"),
    ("prometheus 2.42", "files/prometheus/2.42"),
    ("prometheus 2.45", "files/prometheus/2.45"),
    ("bind 9.16", "files/bind/9.16"),
    ("bind 9.18", "files/bind/9.18"),
    ("haproxy 2.6", "files/haproxy/2.6"),
    ("haproxy 2.8", "files/haproxy/2.8"),
];

fn examples_pass_then_each_broken_version_is_rejected(as_git_user: bool) {
    let ex = Examples::new(as_git_user);
    let env = &ex.env;

    let out = ex.push();

    out.assert_ok().assert_lacks("unsandboxed");
    for (label, path) in EXAMPLE_DIRS {
        out.assert_dir_line("ok", label, path);
    }
    let good = env.head();
    assert_eq!(ex.remote_main(), Some(good.clone()));

    // One broken file per service, each caught by its own checker.
    env.write(
        "files/sshd/9.6/sshd_config.d/60-typo.conf",
        "PermitRootLogn no\n",
    );
    env.append("files/nginx/1.24/nginx.conf", "no_such_directive on;");
    env.replace(
        "files/prometheus/2.45/rules/node.yml",
        "for: 5m",
        "for: 5 minutes",
    );
    env.replace(
        "files/bind/9.18/zones/db.example.org",
        "192.0.2.80",
        "192.0.2.800",
    );
    env.replace(
        "files/haproxy/2.8/haproxy.cfg",
        "balance leastconn",
        "balance fastest",
    );
    env.commit("one mistake per service");

    let out = ex.push();

    out.assert_failed();
    for (label, path, says) in [
        ("sshd 9.6", "files/sshd/9.6", "PermitRootLogn"),
        ("nginx 1.24", "files/nginx/1.24", "no_such_directive"),
        ("prometheus 2.45", "files/prometheus/2.45", "5 minutes"),
        ("bind 9.18", "files/bind/9.18", "bad dotted quad"),
        ("haproxy 2.8", "files/haproxy/2.8", "balance"),
    ] {
        out.assert_dir_line("FAILED", label, path)
            .assert_contains(says);
    }
    assert_eq!(ex.remote_main(), Some(good));
    ex.assert_clean();
}

#[test]
fn the_five_example_services_pass_and_fail_with_a_root_hook() {
    examples_pass_then_each_broken_version_is_rejected(false);
}

#[test]
fn the_five_example_services_pass_and_fail_with_an_unprivileged_hook() {
    examples_pass_then_each_broken_version_is_rejected(true);
}
