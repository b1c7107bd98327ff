//! Deploying over real OpenSSH: two `sshd` on loopback addresses
//! (127.0.0.2 and 127.0.0.3), each on its own free port with its own host
//! key, started and stopped by the test, and rollgate's `rsync -e ssh` /
//! `ssh` templates reaching them. The daemons are killed by a guard, so a
//! failing test leaves none running.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::fleet::{Fleet, GroupSpec, Spec, Tree, group, wait_until};
use crate::support::{Env, SSHD_92, SSHD_96, path_str};

/// Client options that keep ssh hermetic (no config, no known_hosts, no
/// agent) and quick (no post-quantum key exchange).
pub const SSH_OPTS: &str = "-F /dev/null -p {port} -i {key} -o IdentitiesOnly=yes -o BatchMode=yes \
     -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
     -o KexAlgorithms=curve25519-sha256";

/// One running `sshd -D` and where it keeps its things.
struct Sshd {
    port: u16,
    log: PathBuf,
    child: Child,
}

/// Stops the daemons on drop: first their per-connection children, then
/// the listener, waited for.
struct Daemons(Vec<Sshd>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for d in &mut self.0 {
            stop(d);
        }
    }
}

fn stop(d: &mut Sshd) {
    let pid = d.child.id();
    if let Ok(out) = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
    {
        for child in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-TERM", child]).status();
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = d.child.wait();
}

/// A port nothing listens on right now at `addr`.
pub fn free_port(addr: &str) -> u16 {
    let l = TcpListener::bind((addr, 0)).expect("bind a loopback address");
    l.local_addr().expect("local addr").port()
}

pub fn keygen(env: &Env, path: &Path) {
    let mut cmd = env.command("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        "rollgate-ssh-test",
        "-f",
    ])
    .arg(path);
    env.run(cmd).assert_ok();
}

/// `ssh OPTS root@{host} TAIL...`: a step's argv (OPTS split on spaces).
pub fn ssh_argv(opts: &str, tail: &[&str]) -> Vec<String> {
    let mut v = vec!["ssh".to_string()];
    v.extend(opts.split_whitespace().map(String::from));
    v.push("root@{host}".into());
    v.extend(tail.iter().map(|s| s.to_string()));
    v
}

/// A group of the one host `host`, reached through `d` with `key`, whose
/// machine keeps its files under `root` (`vars` are per group).
fn ssh_group(
    name: &str,
    host: &str,
    version: &str,
    d: &Sshd,
    key: &Path,
    root: &Path,
) -> GroupSpec {
    let mut g = group(name, &[host], 1, version);
    g.root = Some(root.to_path_buf());
    g.extra = vec![
        ("port".into(), d.port.to_string()),
        ("key".into(), path_str(key).to_string()),
    ];
    g
}

/// Starts `sshd -D` on `addr`, allowing `client_pub` to log in as root.
fn start_sshd(env: &Env, name: &str, addr: &str, client_pub: &Path) -> Sshd {
    let dir = env.path(&format!("sshd-{name}"));
    fs::create_dir_all(&dir).unwrap();
    let host_key = dir.join("host_key");
    keygen(env, &host_key);
    fs::copy(client_pub, dir.join("authorized_keys")).unwrap();
    let port = free_port(addr);
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "ListenAddress {addr}:{port}\n\
             HostKey {}\n\
             PidFile {}\n\
             AuthorizedKeysFile {}\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             Subsystem sftp internal-sftp\n",
            host_key.display(),
            dir.join("sshd.pid").display(),
            dir.join("authorized_keys").display(),
        ),
    )
    .unwrap();
    let log = dir.join("sshd.log");
    let mut cmd = env.command("/usr/sbin/sshd");
    cmd.arg("-D")
        .arg("-f")
        .arg(&config)
        .arg("-E")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("start sshd");
    let mut sshd = Sshd { port, log, child };
    wait_until(&format!("sshd on {addr}:{port} to listen"), || {
        if let Ok(Some(status)) = sshd.child.try_wait() {
            panic!(
                "sshd on {addr}:{port} exited with {status}: {}",
                fs::read_to_string(&sshd.log).unwrap_or_default()
            );
        }
        TcpStream::connect((addr, port)).is_ok()
    });
    sshd
}

fn logins(d: &Sshd) -> usize {
    fs::read_to_string(&d.log)
        .unwrap_or_default()
        .matches("Accepted publickey for root")
        .count()
}

#[test]
fn deploys_over_ssh_to_the_canary_only_then_everywhere_with_all() {
    let f = Fleet::new();
    let env = &f.env;
    let client_key = env.path("keys/client_key");
    keygen(env, &client_key);
    let client_pub = env.path("keys/client_key.pub");
    let mut daemons = Daemons(vec![
        start_sshd(env, "a", "127.0.0.2", &client_pub),
        start_sshd(env, "b", "127.0.0.3", &client_pub),
    ]);
    // Each "machine" keeps its /etc/ssh under its own root.
    let root_a = env.path("machine-a");
    let root_b = env.path("machine-b");
    fs::create_dir_all(root_b.join("etc/ssh")).unwrap();
    fs::write(
        root_b.join("etc/ssh/sshd_config"),
        "# 127.0.0.3's own config, set up by hand\n",
    )
    .unwrap();
    let farm_before = Tree::of(&root_b);

    let ssh = format!("ssh {SSH_OPTS}");
    let mut spec = Spec::standard();
    spec.deploy = [
        "rsync",
        "-a",
        // See `fleet::timed_deploy` for why.
        "--checksum",
        "--delete",
        "--mkpath",
        "-e",
        &ssh,
        "{dir}/",
        "root@{host}:{root}/etc/ssh/",
    ]
    .map(String::from)
    .to_vec();
    spec.health = Some(ssh_argv(
        SSH_OPTS,
        &["test", "-f", "{root}/etc/ssh/sshd_config"],
    ));
    // One group per daemon, with its port and the machine's root.
    spec.groups = vec![
        ssh_group(
            "canary",
            "127.0.0.2",
            "9.6",
            &daemons.0[0],
            &client_key,
            &root_a,
        ),
        ssh_group(
            "farm",
            "127.0.0.3",
            "9.2",
            &daemons.0[1],
            &client_key,
            &root_b,
        ),
    ];
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    f.write_spec(&spec);
    let a = env.commit("initial config, hosts over ssh");

    // A plain push: the canary only.
    let out = env.push(&[]);

    f.assert_landed(&out, &a);
    out.assert_contains("[127.0.0.2] ok")
        .assert_lacks("127.0.0.3");
    assert_eq!(
        fs::read(root_a.join("etc/ssh/sshd_config")).unwrap(),
        f.file_at(&a, SSHD_96)
    );
    assert_eq!(
        Tree::of(&root_b),
        farm_before,
        "the farm was touched\n{out}"
    );
    assert!(logins(&daemons.0[0]) >= 2, "deploy and health log in");
    assert_eq!(
        logins(&daemons.0[1]),
        0,
        "the farm's sshd was reached\n{out}"
    );

    // -o all: both, the canary first.
    let b = f.change("b");
    let out = env.push(&["-o", "all"]);

    f.assert_landed(&out, &b);
    out.assert_contains("[127.0.0.2] ok")
        .assert_contains("[127.0.0.3] ok");
    assert_eq!(
        fs::read(root_a.join("etc/ssh/sshd_config")).unwrap(),
        f.file_at(&b, SSHD_96)
    );
    assert_eq!(
        fs::read(root_b.join("etc/ssh/sshd_config")).unwrap(),
        f.file_at(&b, SSHD_92)
    );
    assert!(logins(&daemons.0[1]) >= 2, "the farm's sshd was not used");
    let runs = f.runs();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].planned(), ["canary/127.0.0.2", "farm/127.0.0.3"]);
    assert_eq!(runs[1].hosts(), ["127.0.0.2", "127.0.0.3"]);
    assert_eq!(f.status_of("127.0.0.3")["rev"], b.as_str());

    // Stop the daemons, then nothing of this test may be left running.
    let pids: Vec<u32> = daemons.0.iter().map(|d| d.child.id()).collect();
    for d in &mut daemons.0 {
        stop(d);
    }
    daemons.0.clear();
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "sshd {pid} still running"
        );
    }
    f.assert_clean();
}

/// The README's connection reuse: `ControlMaster auto` + `ControlPersist`.
/// The master the first command of a run opens carries the run's later
/// commands, and the next run's, since rollgate leaves a master alone when
/// the command that opened it ended by itself. A master whose command timed
/// out dies with it, and a process that only calls itself a master is
/// killed like any other leftover.
#[test]
fn a_controlpersist_master_serves_later_commands_and_runs_but_dies_with_a_timed_out_one() {
    let f = Fleet::new();
    let env = &f.env;
    let client_key = env.path("keys/client_key");
    keygen(env, &client_key);
    let mut daemons = Daemons(vec![start_sshd(
        env,
        "c",
        "127.0.0.4",
        &env.path("keys/client_key.pub"),
    )]);
    let cm = env.path("cm");
    fs::create_dir_all(&cm).unwrap();
    let root = env.path("machine");
    fs::create_dir_all(&root).unwrap();
    // The ControlPath as the README sets it, and one apart for the command
    // that times out, so its master can be told from the others.
    let ssh_with = |path: &str| {
        format!(
            "{SSH_OPTS} -o ControlMaster=auto -o ControlPath={}/{path} -o ControlPersist=60",
            path_str(&cm)
        )
    };
    let mut spec = Spec::standard();
    spec.deploy = [
        "rsync",
        "-a",
        "--checksum",
        "--mkpath",
        "-e",
        &format!("ssh {}", ssh_with("%C")),
        "{dir}/",
        "root@{host}:{root}/etc/ssh/",
    ]
    .map(String::from)
    .to_vec();
    spec.service.push(format!(
        "reload = {}",
        crate::support::argv(&ssh_argv(&ssh_with("%C"), &["touch", "{root}/reloaded"]))
    ));
    spec.health = Some(ssh_argv(
        &ssh_with("%C"),
        &["test", "-f", "{root}/reloaded"],
    ));
    spec.groups = vec![ssh_group(
        "canary",
        "127.0.0.4",
        "9.6",
        &daemons.0[0],
        &client_key,
        &root,
    )];
    env.bare_repo();
    env.clone_repo();
    env.write_infra();
    f.write_spec(&spec);
    let a = env.commit("over ssh, with connection reuse");

    // Cold: deploy (rsync), reload and health, one login between them.
    let out = env.push(&[]);
    f.assert_landed(&out, &a);
    assert_eq!(
        logins(&daemons.0[0]),
        1,
        "one connection for the run\n{out}"
    );
    let masters = || env.processes_matching(&format!("{}/.* \\[mux\\]", path_str(&cm)));
    assert_eq!(masters().len(), 1, "{:#?}", masters());

    // Warm: the next run logs in no more. Its reload leaves a process that
    // only calls itself a master; its health times out on a master of its
    // own: both are killed, the push is rejected and the host put back
    // (through the first master still).
    let fake = format!("exec -a 'ssh: {}/fake [mux]' sleep 60", path_str(&cm));
    spec.service = vec![
        format!(
            "reload = {}",
            crate::support::argv(&["setsid", "-f", "bash", "-c", &fake])
        ),
        "timeout = \"3s\"".into(),
        // One try: each retry would open (and lose) a master of its own.
        "health_wait = \"1s\"".into(),
    ];
    spec.health = Some(ssh_argv(&ssh_with("slow-%C"), &["sleep", "30"]));
    f.write_spec(&spec);
    let b = env.commit("a health check that hangs");
    let out = env.push(&[]);
    f.assert_rejected(&out, Some(&a));
    out.assert_contains("timed out after 3s");
    assert_eq!(
        logins(&daemons.0[0]),
        2,
        "only the hung health logged in\n{out}"
    );
    let left = masters();
    assert_eq!(left.len(), 1, "{left:#?}");
    assert!(
        !left[0].contains("slow-") && !left[0].contains("fake"),
        "{left:#?}"
    );
    assert_eq!(f.status_of("127.0.0.4")["rev"], a.as_str());
    let _ = b;

    // The master goes when asked (as ControlPersist would end it).
    let pid: i32 = left[0].split_whitespace().next().unwrap().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_until("the ssh master to exit", || masters().is_empty());
    for d in &mut daemons.0 {
        stop(d);
    }
    daemons.0.clear();
    f.assert_clean();
}
