//! Real git servers on loopback, and pushes through them.
//!
//! Every other suite pushes to a local path, so git runs the hook as the
//! tester with the tester's environment. Here the bare repository is served
//! the way teams serve it, and the hook runs as an unprivileged account with
//! the environment the server gives it:
//!
//! - [`Served::git_shell`]: a real `sshd -D` on 127.0.0.7 (its own free port
//!   and throwaway host key) letting in the account [`GIT_ACCOUNT`]
//!   (`rollgate-git`, login shell `/usr/bin/git-shell`), with one key per
//!   person: `environment="REMOTE_USER=alice"` in front of alice's key and
//!   `PermitUserEnvironment REMOTE_USER`, so the journal says who pushed.
//! - [`Served::apache`]: Apache (`/usr/sbin/apache2`, prefork + mod_cgi) on
//!   127.0.0.8 with its own ServerRoot, config, pid file and logs in the
//!   test's temp dir (the system's apache config is never read), running
//!   `git http-backend` as [`GIT_ACCOUNT`] (`User`/`Group`) behind basic
//!   auth (`htpasswd`); the pusher is `REMOTE_USER`.
//! - [`Served::gitolite`]: gitolite3 set up non-interactively by its hosting
//!   account [`GITOLITE_ACCOUNT`] (`rollgate-gitolite`, a plain `/bin/sh`
//!   account: sshd runs gitolite's `command=` keys through the login shell)
//!   in a HOME under the test's temp dir, repository `infra` with branch
//!   permissions (alice `RW+` everything, erin only `RW dev/`), rollgate's
//!   shim as `hooks/pre-receive` (installed before a later `gitolite setup`,
//!   which leaves it alone), `receive.advertisePushOptions` set from
//!   `gitolite.conf` (the rc's `GIT_CONFIG_KEYS` allows it). Reached over a
//!   real sshd (127.0.0.9) reading the `authorized_keys` gitolite writes
//!   (`command="…/gitolite-shell alice"`), with `SetEnv HOME=…` pointing
//!   gitolite at the test's HOME. The pusher is `GL_USER`.
//!
//! The accounts are made on first use (`useradd --system`, idempotent, also
//! across test processes; see [`account`]). Everything else lives under the
//! test's [`Env`]: the test root is made traversable (0711) for the
//! accounts, and the account owns the bare repository (created and
//! `rollgate hook install`ed *as* the account, with `setpriv`), the hosts
//! directory of the [`Fleet`], the hook's TMPDIR (the Env's `tmp`, passed by
//! the server: `SetEnv TMPDIR` in sshd, `SetEnv` in apache, so
//! [`Fleet::assert_clean`] still proves the hook left nothing behind) and
//! the throwaway host key `sshd -t` checks with. `fleet.env.remote()` is the
//! bare repository (for gitolite a symlink to it), so the Fleet's journal
//! readers work unchanged.
//!
//! Daemons ([`Daemon`]) are started on a free port (a port taken between
//! choosing and binding it is retried), waited for until they accept a
//! connection, and killed with everything they started when dropped, so a
//! failing test leaves nothing running.
//!
//! ```text
//! let mut s = Served::gitolite();          // or git_shell(), apache()
//! let a = s.start(&Spec::standard());      // clone as alice, infra + spec, pushed, landed
//! let out = s.push_as("erin", &["-o", "all"], &["main"]);   // gitolite: DENIED
//! out.assert_failed().assert_contains("DENIED");
//! assert_eq!(s.ref_of(MAIN).as_deref(), Some(a.as_str()));
//! s.assert_clean();                        // daemons stopped, TMPDIR empty, nothing left
//! ```

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::fleet::{Fleet, MAIN, Running, Spec, runs_of};
use crate::rollout::{Gate, gated_deploy};
use crate::ssh_hosts::{SSH_OPTS, free_port, keygen};
use crate::support::{Env, Outcome, ROLLGATE, SSHD_92, SSHD_96, path_str};

/// The SSH (login shell `git-shell`) and Apache account.
pub const GIT_ACCOUNT: &str = "rollgate-git";
/// gitolite's hosting account (a real shell: sshd runs gitolite's forced
/// `command=` through it).
pub const GITOLITE_ACCOUNT: &str = "rollgate-gitolite";

/// The people who push, each with an ssh key (`keys/user-NAME`) and an
/// HTTP password ([`password`]). gitolite knows alice and erin.
pub const USERS: [&str; 3] = ["alice", "bob", "erin"];

/// How long a daemon may take to accept connections.
const STARTUP: Duration = Duration::from_secs(20);

// ---- accounts ---------------------------------------------------------------------

/// A local account the servers run as.
#[derive(Clone, Copy, Debug)]
pub struct Account {
    pub name: &'static str,
    pub uid: u32,
    pub gid: u32,
}

static ACCOUNTS: Mutex<()> = Mutex::new(());

/// The account `name` with login shell `shell`, created if missing
/// (`useradd --system`, password `*`: no password login, yet not "locked",
/// which sshd without PAM would refuse), with its home
/// `/var/lib/NAME` (sshd changes into it). Safe to call from parallel tests
/// and processes: whoever loses the `useradd` race finds the account made.
pub fn account(name: &'static str, shell: &str) -> Account {
    let _one_at_a_time = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
    // /proc/self belongs to the effective user.
    let euid = fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    assert_eq!(
        euid, 0,
        "the server tests run as root, as CI does: they create the accounts \
         {GIT_ACCOUNT} and {GITOLITE_ACCOUNT} and start sshd and apache, which switch to them"
    );
    let home = format!("/var/lib/{name}");
    if lookup(name).is_none() {
        let out = Command::new("/usr/sbin/useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args([
                "--home-dir",
                &home,
                "--shell",
                shell,
                "--password",
                "*",
                name,
            ])
            .output()
            .expect("run useradd");
        assert!(
            lookup(name).is_some(),
            "useradd {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (account, found_shell) = lookup(name).expect("the account exists");
    assert_eq!(
        found_shell, shell,
        "account {name} exists with another login shell"
    );
    if !Path::new(&home).is_dir() {
        // Another process may make it at the same moment.
        let _ = fs::create_dir_all(&home);
        account.chown(Path::new(&home));
    }
    account
}

/// `getent passwd NAME`: the account and its login shell.
fn lookup(name: &'static str) -> Option<(Account, String)> {
    let out = Command::new("/usr/bin/getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let fields: Vec<&str> = line.split(':').collect();
    if !out.status.success() || fields.len() != 7 {
        return None;
    }
    Some((
        Account {
            name,
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
        },
        fields[6].to_string(),
    ))
}

impl Account {
    /// `program` run as this account (real and effective ids, no
    /// supplementary groups) with `env`'s scrubbed environment, from `/`.
    pub fn command(&self, env: &Env, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = env.command("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--clear-groups", "--"])
            .arg(program)
            .current_dir("/");
        cmd
    }

    /// Gives `path` (not what is below it) to this account.
    pub fn chown(&self, path: &Path) {
        std::os::unix::fs::chown(path, Some(self.uid), Some(self.gid))
            .unwrap_or_else(|e| panic!("chown {} {}: {e}", self.name, path.display()));
    }
}

// ---- daemons ------------------------------------------------------------------------

/// A daemon in the foreground, stopped with everything it started when
/// dropped (or by [`Daemon::stop`]).
pub struct Daemon {
    what: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `cmd` and waits until `addr:port` accepts a connection.
    /// `Err(log)` if the daemon exited first (e.g. the port was taken in
    /// the meantime).
    fn spawn(
        mut cmd: Command,
        what: String,
        log: PathBuf,
        addr: &str,
        port: u16,
    ) -> Result<Daemon, String> {
        // Its own process group: Apache's prefork, stopping, signals its
        // whole group, which would otherwise be the test binary's.
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
        let mut d = Daemon {
            what,
            log,
            child: Some(child),
        };
        let until = Instant::now() + STARTUP;
        loop {
            let child = d.child.as_mut().expect("running");
            if let Ok(Some(status)) = child.try_wait() {
                d.child = None;
                return Err(format!(
                    "{} exited with {status}:\n{}",
                    d.what,
                    d.log_text()
                ));
            }
            if TcpStream::connect((addr, port)).is_ok() {
                return Ok(d);
            }
            assert!(
                Instant::now() < until,
                "{} not listening on {addr}:{port} after {STARTUP:?}:\n{}",
                d.what,
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops what the daemon started (sshd's per-connection processes,
    /// Apache's children), deepest first so that each one's parent is still
    /// there to reap it; then the daemon itself (SIGTERM, up to 5 s, then
    /// SIGKILL); then SIGKILLs whatever of it is somehow still there.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let started = descendants(pid);
        // Only if it is still the same process (pids are reused); a zombie
        // has no command line.
        let alive =
            |(p, cmdline): &(u32, String)| !cmdline.is_empty() && cmdline_of(*p) == *cmdline;
        for d in started.iter().rev().filter(|d| alive(d)) {
            let _ = kill(Pid::from_raw(d.0 as i32), Signal::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(2);
        while started.iter().any(alive) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        for d in started.iter().filter(|d| alive(d)) {
            let _ = kill(Pid::from_raw(d.0 as i32), Signal::SIGKILL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every process below `root`, with its command line.
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut parent_of = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if let Some(ppid) = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok())
        {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        for &(c, pp) in &parent_of {
            if pp == p && !found.contains(&c) {
                found.push(c);
            }
        }
        i += 1;
    }
    found[1..].iter().map(|&p| (p, cmdline_of(p))).collect()
}

fn cmdline_of(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Starts a daemon listening on `addr` at a free port: `start(port)` gives
/// its command line, log and name. Retries a few times with another port if
/// it exits before listening (another test took the port in between).
fn start_on_free_port(
    addr: &str,
    mut start: impl FnMut(u16) -> (Command, PathBuf, String),
) -> (Daemon, u16) {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let port = free_port(addr);
        let (cmd, log, what) = start(port);
        match Daemon::spawn(cmd, what, log, addr, port) {
            Ok(d) => return (d, port),
            Err(why) => failures.push(why),
        }
    }
    panic!("no daemon could start:\n{}", failures.join("\n"));
}

// ---- sshd ---------------------------------------------------------------------------------

/// A real `sshd -D` letting one account in, by public key only.
pub struct Sshd {
    pub addr: &'static str,
    pub port: u16,
    pub account: Account,
    daemon: Daemon,
}

impl Sshd {
    /// Starts sshd on `addr` (a free port, a fresh host key under `dir`)
    /// for `account` with the keys in `authorized_keys`. `set_env` becomes
    /// `SetEnv` (what every session gets), `user_env` the
    /// `PermitUserEnvironment` list (what `environment=` in
    /// authorized_keys may set).
    pub fn start(
        env: &Env,
        dir: &Path,
        addr: &'static str,
        account: Account,
        authorized_keys: &Path,
        set_env: &[(&str, &Path)],
        user_env: Option<&str>,
    ) -> Sshd {
        fs::create_dir_all(dir).expect("create the sshd dir");
        let host_key = dir.join("ssh_host_ed25519_key");
        keygen(env, &host_key);
        let config = dir.join("sshd_config");
        let log = dir.join("sshd.log");
        let set_env: Vec<String> = set_env
            .iter()
            .map(|(k, v)| format!("{k}={}", v.display()))
            .collect();
        let (daemon, port) = start_on_free_port(addr, |port| {
            let mut text = format!(
                "ListenAddress {addr}:{port}\n\
                 HostKey {}\n\
                 PidFile {}\n\
                 AuthorizedKeysFile {}\n\
                 AllowUsers {}\n\
                 AuthenticationMethods publickey\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 DisableForwarding yes\n\
                 PermitTTY no\n",
                host_key.display(),
                dir.join("sshd.pid").display(),
                authorized_keys.display(),
                account.name,
            );
            if !set_env.is_empty() {
                text += &format!("SetEnv {}\n", set_env.join(" "));
            }
            if let Some(names) = user_env {
                text += &format!("PermitUserEnvironment {names}\n");
            }
            fs::write(&config, text).expect("write sshd_config");
            let mut cmd = env.command("/usr/sbin/sshd");
            cmd.arg("-D").arg("-f").arg(&config).arg("-E").arg(&log);
            (cmd, log.clone(), format!("sshd on {addr}:{port}"))
        });
        Sshd {
            addr,
            port,
            account,
            daemon,
        }
    }

    /// `GIT_SSH_COMMAND` logging in with `key`: hermetic client options (no
    /// config, known_hosts or agent).
    pub fn ssh_command(&self, key: &Path) -> String {
        format!(
            "ssh {}",
            SSH_OPTS
                .replace("{port}", &self.port.to_string())
                .replace("{key}", path_str(key))
        )
    }

    /// `ACCOUNT@ADDR:PATH`, git's scp-like ssh URL (the port is in the
    /// ssh command).
    pub fn url(&self, path: &str) -> String {
        format!("{}@{}:{path}", self.account.name, self.addr)
    }

    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }
}

// ---- apache ------------------------------------------------------------------------------

/// Apache serving `git http-backend` at `/git/` behind basic auth.
pub struct Apache {
    pub addr: &'static str,
    pub port: u16,
    daemon: Daemon,
}

/// The HTTP password of `user`.
pub fn password(user: &str) -> String {
    format!("{user}-s3cret")
}

impl Apache {
    /// Apache (prefork, CGI as `account`) on `addr` at a free port, with
    /// everything under `dir`: the config, htpasswd (every one of
    /// [`USERS`]), pid file, logs. Serves the repositories under
    /// `project_root`; the hook gets `TMPDIR=tmpdir`.
    pub fn start(
        env: &Env,
        dir: &Path,
        addr: &'static str,
        account: Account,
        project_root: &Path,
        tmpdir: &Path,
    ) -> Apache {
        fs::create_dir_all(dir).expect("create the apache dir");
        let htpasswd = dir.join("htpasswd");
        for (i, user) in USERS.iter().enumerate() {
            let mut cmd = env.command("htpasswd");
            // -B -C 4: bcrypt at its lowest cost (the test is not about it).
            if i == 0 {
                cmd.arg("-c");
            }
            cmd.args(["-b", "-B", "-C", "4"])
                .arg(&htpasswd)
                .args([*user, &password(user)]);
            env.run(cmd).assert_ok();
        }
        // Read by the children, which run as the account.
        fs::set_permissions(&htpasswd, fs::Permissions::from_mode(0o644)).unwrap();
        let config = dir.join("httpd.conf");
        let log = dir.join("error.log");
        let (daemon, port) = start_on_free_port(addr, |port| {
            let modules = "/usr/lib/apache2/modules";
            let mut text = format!(
                "ServerRoot {dir}\n\
                 ServerName {addr}\n\
                 Listen {addr}:{port}\n\
                 PidFile {dir}/httpd.pid\n\
                 DefaultRuntimeDir {dir}\n\
                 ErrorLog {log}\n\
                 LogLevel warn\n",
                dir = dir.display(),
                log = log.display(),
            );
            for m in [
                "mpm_prefork",
                "authn_core",
                "authn_file",
                "authz_core",
                "authz_user",
                "auth_basic",
                "alias",
                "cgi",
                "env",
            ] {
                text += &format!("LoadModule {m}_module {modules}/mod_{m}.so\n");
            }
            text += &format!(
                "User {user}\n\
                 Group {user}\n\
                 StartServers 1\n\
                 MinSpareServers 1\n\
                 MaxSpareServers 4\n\
                 Timeout 10\n\
                 SetEnv GIT_PROJECT_ROOT {root}\n\
                 SetEnv GIT_HTTP_EXPORT_ALL 1\n\
                 SetEnv TMPDIR {tmp}\n\
                 ScriptAlias /git/ /usr/lib/git-core/git-http-backend/\n\
                 <Location \"/git/\">\n\
                 \x20   AuthType Basic\n\
                 \x20   AuthName \"git\"\n\
                 \x20   AuthUserFile {htpasswd}\n\
                 \x20   Require valid-user\n\
                 </Location>\n",
                user = account.name,
                root = project_root.display(),
                tmp = tmpdir.display(),
                htpasswd = htpasswd.display(),
            );
            fs::write(&config, text).expect("write httpd.conf");
            let mut cmd = env.command("/usr/sbin/apache2");
            cmd.arg("-f").arg(&config).arg("-DFOREGROUND");
            (cmd, log.clone(), format!("apache on {addr}:{port}"))
        });
        Apache { addr, port, daemon }
    }

    /// `http://USER:PASSWORD@ADDR:PORT/git/REPO`.
    pub fn url(&self, user: &str, repo: &str) -> String {
        format!(
            "http://{user}:{}@{}:{}/git/{repo}",
            password(user),
            self.addr,
            self.port
        )
    }

    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }
}

// ---- a served repository -------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    GitShell,
    Apache,
    Gitolite,
}

/// A [`Fleet`] whose bare repository is behind a real server.
pub struct Served {
    // Declared (so dropped) before the fleet: the daemons stop before the
    // temp dirs they use go away.
    sshd: Option<Sshd>,
    apache: Option<Apache>,
    pub fleet: Fleet,
    pub kind: Kind,
    /// The account the server, and so the hook, runs as.
    pub account: Account,
    /// The repository on the server.
    pub bare: PathBuf,
}

/// The key of `user` (made on first use).
pub fn user_key(env: &Env, user: &str) -> PathBuf {
    let key = env.path(&format!("keys/user-{user}"));
    if !key.exists() {
        keygen(env, &key);
    }
    key
}

fn pub_key(key: &Path) -> String {
    let path = key.with_extension("pub");
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// What every served repository needs from the fleet: the accounts reach
/// the test's files, and own what the hook writes (hosts, TMPDIR) and reads
/// (the throwaway host key `sshd -t` checks with, private to its owner).
fn share_with(fleet: &Fleet, account: Account) {
    let env = &fleet.env;
    fs::set_permissions(env.root(), fs::Permissions::from_mode(0o711)).unwrap();
    account.chown(&env.tmpdir());
    account.chown(&fleet.hosts);
    account.chown(env.host_key());
}

/// `rollgate hook install --repo BARE` as `account`, which must succeed.
fn install_hook(env: &Env, account: Account, bare: &Path) {
    let mut cmd = account.command(env, ROLLGATE);
    cmd.args(["hook", "install", "--repo", path_str(bare)]);
    env.run(cmd).assert_ok();
}

impl Served {
    /// The bare repository `fleet.env.remote()`, made by and owned by
    /// [`GIT_ACCOUNT`] with the hook installed as that account.
    fn owned_bare(fleet: &Fleet) -> (Account, PathBuf) {
        let account = account(GIT_ACCOUNT, "/usr/bin/git-shell");
        share_with(fleet, account);
        let env = &fleet.env;
        let bare = env.remote();
        // The test root is root's: the account gets the directory itself.
        fs::create_dir(&bare).expect("create the bare repository's dir");
        account.chown(&bare);
        let mut cmd = account.command(env, "git");
        cmd.args(["init", "-q", "--bare", "-b", "main", path_str(&bare)]);
        env.run(cmd).assert_ok();
        install_hook(env, account, &bare);
        (account, bare)
    }

    /// SSH + git-shell: alice's and bob's keys, each with
    /// `environment="REMOTE_USER=NAME"`.
    pub fn git_shell() -> Served {
        let fleet = Fleet::new();
        let (account, bare) = Served::owned_bare(&fleet);
        let env = &fleet.env;
        let keys = env.path("sshd-git/authorized_keys");
        fs::create_dir_all(env.path("sshd-git")).unwrap();
        let mut text = String::new();
        for user in ["alice", "bob"] {
            let key = user_key(env, user);
            text += &format!("environment=\"REMOTE_USER={user}\" {}\n", pub_key(&key));
        }
        fs::write(&keys, text).unwrap();
        let sshd = Sshd::start(
            env,
            &env.path("sshd-git"),
            "127.0.0.7",
            account,
            &keys,
            &[("TMPDIR", &env.tmpdir())],
            Some("REMOTE_USER"),
        );
        Served {
            sshd: Some(sshd),
            apache: None,
            fleet,
            kind: Kind::GitShell,
            account,
            bare,
        }
    }

    /// Apache + git http-backend, basic auth for every one of [`USERS`].
    pub fn apache() -> Served {
        let fleet = Fleet::new();
        let (account, bare) = Served::owned_bare(&fleet);
        let env = &fleet.env;
        let apache = Apache::start(
            env,
            &env.path("apache"),
            "127.0.0.8",
            account,
            env.root(),
            &env.tmpdir(),
        );
        Served {
            sshd: None,
            apache: Some(apache),
            fleet,
            kind: Kind::Apache,
            account,
            bare,
        }
    }

    /// gitolite3 serving repository `infra` ([`GITOLITE_CONF`]) over ssh.
    pub fn gitolite() -> Served {
        Served::gitolite_with(None)
    }

    /// [`Served::gitolite`] with gitolite's repo-specific hooks on: `infra`
    /// gets `option hook.pre-receive = ORDER`, naming `rollgate` (the shim
    /// `hook install` wrote) and `audit`, a site's own check that refuses
    /// every push while `$HOME/audit-refuses` exists. gitolite's driver is
    /// then `hooks/pre-receive`, running `pre-receive.h00-…` in order.
    pub fn gitolite_with_repo_hooks(order: &str) -> Served {
        Served::gitolite_with(Some(order))
    }

    fn gitolite_with(repo_hooks: Option<&str>) -> Served {
        let fleet = Fleet::new();
        let account = account(GITOLITE_ACCOUNT, "/bin/sh");
        share_with(&fleet, account);
        let env = &fleet.env;
        let home = env.path("gitolite");
        fs::create_dir(&home).unwrap();
        account.chown(&home);
        let gitolite = |args: &[&str]| {
            let mut cmd = account.command(env, "gitolite");
            cmd.args(args)
                .env("HOME", &home)
                .env("USER", account.name)
                // Repositories gitolite creates start on `main`.
                .env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "init.defaultBranch")
                .env("GIT_CONFIG_VALUE_0", "main");
            cmd
        };
        let as_owner = |path: &Path, text: &str| {
            fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            account.chown(path);
        };

        // Server-side administration, all written before the one
        // `gitolite setup -pk admin.pub` (which keeps an existing rc and
        // conf, and adopts existing repositories): the rc (gitolite's
        // default, allowing gitolite.conf to set the push-options key), the
        // access rules, the users' keys, and the repository with rollgate's
        // hook installed (as the hosting account).
        for dir in [
            ".gitolite",
            ".gitolite/conf",
            ".gitolite/keydir",
            ".gitolite/logs",
            "repositories",
        ] {
            fs::create_dir(home.join(dir)).unwrap();
            account.chown(&home.join(dir));
        }
        let cmd = gitolite(&["print-default-rc"]);
        let rc = env.run(cmd).assert_ok().stdout.clone();
        assert!(rc.contains(RC_KEYS_DEFAULT), "unexpected default rc:\n{rc}");
        let mut rc = rc.replace(RC_KEYS_DEFAULT, RC_KEYS);
        // No git-daemon or gitweb here: without their access-list triggers
        // `gitolite setup` takes half the time.
        for feature in ["'daemon',", "'gitweb',"] {
            let line = rc
                .lines()
                .find(|l| l.trim() == feature)
                .unwrap_or_else(|| panic!("no {feature} line in the default rc:\n{rc}"))
                .to_string();
            rc = rc.replace(&format!("{line}\n"), "");
        }
        let mut conf = GITOLITE_CONF.to_string();
        if let Some(order) = repo_hooks {
            for (off, on) in [
                (RC_LOCAL_CODE_OFF, RC_LOCAL_CODE_ON),
                (RC_REPO_HOOKS_OFF, RC_REPO_HOOKS_ON),
            ] {
                assert!(rc.contains(off), "no {off:?} in the default rc:\n{rc}");
                rc = rc.replacen(off, on, 1);
            }
            // The infra block is the conf's last.
            conf += &format!("    option hook.pre-receive = {order}\n");
            let mut dir = home.clone();
            for part in ["local", "hooks", "repo-specific"] {
                dir = dir.join(part);
                fs::create_dir(&dir).unwrap();
                account.chown(&dir);
            }
        }
        as_owner(&home.join(".gitolite.rc"), &rc);
        as_owner(&home.join(".gitolite/conf/gitolite.conf"), &conf);
        for user in ["alice", "erin"] {
            let key = user_key(env, user);
            as_owner(
                &home.join(format!(".gitolite/keydir/{user}.pub")),
                &(pub_key(&key) + "\n"),
            );
        }
        let bare = home.join("repositories/infra.git");
        let mut cmd = account.command(env, "git");
        cmd.args(["init", "-q", "--bare", "-b", "main", path_str(&bare)]);
        env.run(cmd).assert_ok();
        install_hook(env, account, &bare);
        let hooks = bare.join("hooks");
        if repo_hooks.is_some() {
            // What an admin does: the shim `hook install` wrote, and the
            // site's own hook, as gitolite's repo-specific hooks.
            let dir = home.join("local/hooks/repo-specific");
            let shim = fs::read_to_string(hooks.join("pre-receive")).expect("the shim");
            for (name, text) in [("rollgate", shim.as_str()), ("audit", AUDIT_HOOK)] {
                as_owner(&dir.join(name), text);
                fs::set_permissions(dir.join(name), fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let admin = user_key(env, "admin");
        let admin_pub = home.join("admin.pub");
        as_owner(&admin_pub, &(pub_key(&admin) + "\n"));
        cmd = gitolite(&["setup", "-pk", path_str(&admin_pub)]);
        env.run(cmd).assert_ok();

        // gitolite's own hook is `update`; rollgate's shim is still there,
        // or gitolite's driver replaced it and runs the repo-specific ones.
        if repo_hooks.is_some() {
            let driver = fs::read_link(hooks.join("pre-receive")).expect("gitolite's driver");
            assert!(
                driver.ends_with("local/hooks/multi-hook-driver"),
                "{}",
                driver.display()
            );
        } else {
            let shim = fs::read_to_string(hooks.join("pre-receive")).expect("the shim survived");
            assert!(
                shim.contains("rollgate-managed"),
                "pre-receive replaced:\n{shim}"
            );
        }
        let update = fs::read_link(hooks.join("update")).expect("gitolite's update hook");
        assert!(
            update.ends_with(".gitolite/hooks/common/update"),
            "{}",
            update.display()
        );
        let mut cmd = account.command(env, "git");
        cmd.args([
            "--git-dir",
            path_str(&bare),
            "config",
            "receive.advertisePushOptions",
        ]);
        assert_eq!(env.run(cmd).stdout.trim(), "true");

        std::os::unix::fs::symlink(&bare, env.remote()).unwrap();
        let sshd = Sshd::start(
            env,
            &env.path("sshd-gitolite"),
            "127.0.0.9",
            account,
            &home.join(".ssh/authorized_keys"),
            &[("HOME", &home), ("TMPDIR", &env.tmpdir())],
            None,
        );
        Served {
            sshd: Some(sshd),
            apache: None,
            fleet,
            kind: Kind::Gitolite,
            account,
            bare,
        }
    }

    /// gitolite's repo-specific pre-receive hooks in a new `order`, as an
    /// admin changes them: gitolite.conf rewritten, `gitolite setup` again.
    pub fn set_repo_hooks(&self, order: &str) {
        let home = self
            .bare
            .parent()
            .and_then(Path::parent)
            .expect("gitolite's home");
        let conf = home.join(".gitolite/conf/gitolite.conf");
        fs::write(
            &conf,
            format!("{GITOLITE_CONF}    option hook.pre-receive = {order}\n"),
        )
        .unwrap();
        let mut cmd = self.account.command(self.env(), "gitolite");
        cmd.arg("setup")
            .env("HOME", home)
            .env("USER", self.account.name);
        self.env().run(cmd).assert_ok();
    }

    /// Makes the `audit` repo-specific hook refuse every push (`true`) or
    /// pass them all.
    pub fn audit_refuses(&self, refuses: bool) {
        let home = self
            .bare
            .parent()
            .and_then(Path::parent)
            .expect("gitolite's home");
        let flag = home.join("audit-refuses");
        if refuses {
            fs::write(&flag, "").unwrap();
        } else {
            fs::remove_file(&flag).unwrap();
        }
    }

    /// The gitolite scenario of issue 10: [`Served::gitolite`] with `spec`
    /// pushed and deployed by alice (`main` at the returned id, one run in
    /// the journal), and a further commit in the clone (the second id) that
    /// erin, allowed only `dev/`, can try to push:
    ///
    /// ```text
    /// let (s, a, b) = Served::gitolite_denial_scenario(&Spec::standard());
    /// let before = s.fleet.tree("server04");
    /// let out = s.push_as("erin", &["-o", "all"], &["main"]);
    /// out.assert_failed().assert_contains("DENIED");
    /// assert_eq!(s.ref_of(MAIN).as_deref(), Some(a.as_str()));
    /// assert_eq!(s.fleet.tree("server04"), before);   // fails before issue 10's fix
    /// ```
    pub fn gitolite_denial_scenario(spec: &Spec) -> (Served, String, String) {
        let s = Served::gitolite();
        let a = s.start(spec);
        let b = s.fleet.change("erin's work");
        (s, a, b)
    }

    pub fn env(&self) -> &Env {
        &self.fleet.env
    }

    /// The URL `user` pushes to.
    pub fn url_for(&self, user: &str) -> String {
        match self.kind {
            Kind::GitShell => self.sshd().url(path_str(&self.bare)),
            Kind::Gitolite => self.sshd().url("infra"),
            Kind::Apache => self
                .apache
                .as_ref()
                .expect("apache")
                .url(user, "remote.git"),
        }
    }

    fn sshd(&self) -> &Sshd {
        self.sshd.as_ref().expect("served over ssh")
    }

    /// `git ARGS` in the clone as `user` would run it (their ssh key).
    pub fn git_as(&self, user: &str, args: &[&str]) -> Command {
        let env = self.env();
        let mut cmd = env.command("git");
        cmd.args(args).env("GIT_TERMINAL_PROMPT", "0");
        if let Some(sshd) = &self.sshd {
            cmd.env("GIT_SSH_COMMAND", sshd.ssh_command(&user_key(env, user)));
        }
        cmd
    }

    /// Clones the served repository as `user` into the Env's work dir.
    pub fn clone_as(&self, user: &str) {
        let env = self.env();
        let mut cmd = self.git_as(user, &["clone", "-q", &self.url_for(user)]);
        cmd.arg(env.work()).current_dir(env.root());
        env.run(cmd).assert_ok();
        env.git_ok(&env.work(), &["symbolic-ref", "HEAD", "refs/heads/main"]);
    }

    /// `git push OPTS URL REFSPECS` from the clone, as `user`.
    pub fn push_as(&self, user: &str, opts: &[&str], refspecs: &[&str]) -> Outcome {
        let env = self.env();
        env.run(self.push_command(user, opts, refspecs))
    }

    /// [`Served::push_as`], left running.
    pub fn spawn_push_as(&self, user: &str, opts: &[&str], refspecs: &[&str]) -> Running {
        Running::spawn(self.push_command(user, opts, refspecs))
    }

    fn push_command(&self, user: &str, opts: &[&str], refspecs: &[&str]) -> Command {
        let url = self.url_for(user);
        let mut args = vec!["push"];
        args.extend_from_slice(opts);
        args.push(&url);
        args.extend_from_slice(refspecs);
        self.git_as(user, &args)
    }

    /// The id `refname` has on the server, if it exists (read as root:
    /// `safe.directory` for a repository another account owns).
    pub fn ref_of(&self, refname: &str) -> Option<String> {
        let env = self.env();
        let mut cmd = env.command("git");
        cmd.args(["-c", "safe.directory=*", "--git-dir", path_str(&self.bare)])
            .args(["rev-parse", "-q", "--verify", refname]);
        let out = env.run(cmd);
        out.success().then(|| out.stdout.trim().to_string())
    }

    /// Clone as alice, the realistic infra with `spec` as rollgate.toml,
    /// committed and pushed by alice; the push must land. Returns the id.
    pub fn start(&self, spec: &Spec) -> String {
        self.clone_as("alice");
        self.env().write_infra();
        self.fleet.write_spec(spec);
        let id = self.env().commit("initial config");
        let out = self.push_as("alice", &[], &["main"]);
        self.assert_landed(&out, MAIN, &id);
        id
    }

    #[track_caller]
    pub fn assert_landed(&self, out: &Outcome, refname: &str, id: &str) {
        assert!(
            out.success(),
            "the push failed\n{out}--- server log\n{}",
            self.server_log()
        );
        assert_eq!(
            self.ref_of(refname).as_deref(),
            Some(id),
            "the accepted push did not move {refname}\n{out}"
        );
    }

    /// The push failed and `refname` is still `before`.
    #[track_caller]
    pub fn assert_refused(&self, out: &Outcome, refname: &str, before: Option<&str>) {
        out.assert_failed();
        assert_eq!(
            self.ref_of(refname).as_deref(),
            before,
            "the refused push moved {refname}\n{out}"
        );
    }

    /// The journal's records (through `fleet.env.remote()`).
    pub fn journal(&self) -> Vec<Value> {
        self.fleet.journal()
    }

    /// `who` of every run, oldest first.
    pub fn whos(&self) -> Vec<String> {
        runs_of(&self.journal())
            .iter()
            .map(|r| r.start["who"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// The server's log (sshd's or apache's error log), for messages.
    pub fn server_log(&self) -> String {
        match (&self.sshd, &self.apache) {
            (Some(s), _) => s.log_text(),
            (_, Some(a)) => a.log_text(),
            _ => String::new(),
        }
    }

    /// Stops the daemons, then [`Fleet::assert_clean`]: the hook's TMPDIR
    /// is empty and nothing started from the test's dirs runs.
    #[track_caller]
    pub fn assert_clean(&mut self) {
        if let Some(mut s) = self.sshd.take() {
            s.daemon.stop();
        }
        if let Some(mut a) = self.apache.take() {
            a.daemon.stop();
        }
        self.fleet.assert_clean();
    }
}

/// What `gitolite setup` writes in the rc, and what it must say so that
/// `gitolite.conf` may set `receive.advertisePushOptions` (a regex).
const RC_KEYS_DEFAULT: &str = "GIT_CONFIG_KEYS                 =>  '',";
const RC_KEYS: &str = r"GIT_CONFIG_KEYS                 =>  'receive\.advertisePushOptions',";

/// The default rc's lines that turn on gitolite's repo-specific hooks.
const RC_LOCAL_CODE_OFF: &str = r#"# LOCAL_CODE                =>  "$ENV{HOME}/local","#;
const RC_LOCAL_CODE_ON: &str = r#"LOCAL_CODE                =>  "$ENV{HOME}/local","#;
const RC_REPO_HOOKS_OFF: &str = "# 'repo-specific-hooks',";
const RC_REPO_HOOKS_ON: &str = "'repo-specific-hooks',";

/// A site's own pre-receive check, as a gitolite repo-specific hook.
const AUDIT_HOOK: &str = r#"#!/bin/sh
cat >/dev/null
if [ -e "$HOME/audit-refuses" ]; then
    echo "audit: refused by the site's own check" >&2
    exit 1
fi
echo "audit: passed" >&2
"#;

/// The access rules: alice may do anything, erin only write `dev/...`
/// branches (gitolite's `update` hook enforces it per ref).
pub const GITOLITE_CONF: &str = "repo gitolite-admin
    RW+         =   admin

repo infra
    RW+         =   alice
    RW  dev/    =   erin
    config receive.advertisePushOptions = true
";

// ---- the tests -------------------------------------------------------------------------------

/// A broken `sshd_config` for the canary, committed: the rejection case.
fn commit_broken(s: &Served) -> String {
    s.env().append(SSHD_96, "PermitRootLogn no");
    s.env().commit("typo in the canary's sshd_config")
}

/// Everything a pusher expects from a served repository, as `user`:
/// - `remote:` lines arrive live: the deploy is held until the client has
///   seen rollgate's heartbeat from the middle of it, so a server that
///   buffers output to the end (nginx + fcgiwrap) fails this by timeout;
/// - the pusher is recorded (`who` = `user`) and each person is told apart;
/// - push options arrive (`-o group=farm` deploys to farm only, journaled);
/// - a broken config is refused, the client sees why, and `main` stays.
fn serves_a_pusher(mut s: Served, user: &str, second: Option<&str>) {
    let mut spec = Spec::standard();
    spec.deploy = gated_deploy();
    spec.top.push("heartbeat = \"300ms\"".into());
    s.clone_as(user);
    s.env().write_infra();
    s.fleet.write_spec(&spec);
    let a = s.env().commit("initial config");
    let gate = Gate::of(&s.fleet);

    // Live: this line is printed while the deploy is held, and the deploy
    // is released only once the client has it.
    let seen_at = Instant::now();
    let mut push = s.spawn_push_as(user, &[], &["main"]);
    let line = push.wait_for_line("still working");
    let line_after = seen_at.elapsed();
    assert!(line.starts_with("remote:"), "{line:?}");
    gate.open();
    let out = push.finish();
    s.assert_landed(&out, MAIN, &a);
    out.assert_contains("[server04] ok");
    assert!(
        line_after < out.duration,
        "the line arrived at {line_after:?}, the push ended at {:?}",
        out.duration
    );
    s.fleet.assert_on("server04", &a, SSHD_96);
    assert_eq!(s.whos(), [user], "{out}");
    // The hook ran as the server's account, not as the tester.
    let journal = fs::metadata(s.fleet.journal_path()).expect("a journal");
    assert_eq!(journal.uid(), s.account.uid, "the journal's owner");

    // Push options reach the hook; another person is told apart.
    let b = s.fleet.change("b");
    let who = second.unwrap_or(user);
    let out = s.push_as(who, &["-o", "group=farm"], &["main"]);
    s.assert_landed(&out, MAIN, &b);
    out.assert_contains("[server01] ok")
        .assert_lacks("[server04]");
    let runs = runs_of(&s.journal());
    assert_eq!(runs.len(), 2, "{out}");
    assert_eq!(
        runs[1].planned(),
        ["farm/server01", "farm/server02", "farm/server03"]
    );
    assert_eq!(runs[1].start["who"], who);
    assert_eq!(runs[1].start["options"], serde_json::json!(["group=farm"]));
    s.fleet.assert_on("server01", &b, SSHD_92);
    s.fleet.assert_on("server04", &a, SSHD_96);

    // A rejection reaches the client; the ref stays.
    let before_hosts = s.fleet.tree("server04");
    commit_broken(&s);
    let out = s.push_as(user, &[], &["main"]);
    s.assert_refused(&out, MAIN, Some(&b));
    out.assert_contains("remote:")
        .assert_contains("PermitRootLogn")
        .assert_contains("pre-receive hook declined");
    assert_eq!(s.fleet.tree("server04"), before_hosts, "{out}");
    assert_eq!(
        runs_of(&s.journal()).len(),
        2,
        "a refused push deployed\n{out}"
    );

    s.assert_clean();
}

#[test]
fn ssh_git_shell_streams_live_and_records_each_key_as_its_person() {
    let s = Served::git_shell();
    assert_eq!(s.kind, Kind::GitShell);
    serves_a_pusher(s, "alice", Some("bob"));
}

#[test]
fn apache_http_backend_streams_live_and_records_remote_user() {
    let s = Served::apache();
    serves_a_pusher(s, "alice", Some("bob"));
}

#[test]
fn gitolite_streams_live_and_records_gl_user() {
    let s = Served::gitolite();
    serves_a_pusher(s, "alice", None);
}

/// gitolite's repo-specific hooks: its driver runs `hooks/pre-receive.*`
/// in order and rejects the push at the first that fails. With the site's
/// `audit` after rollgate, a refusal by audit would come after rollgate
/// deployed: rollgate refuses the push before anything deploys, naming the
/// hook, and audit never runs. With audit first, pushes deploy, and one
/// audit refuses never reaches rollgate.
#[test]
fn gitolite_repo_specific_hooks_after_rollgate_stop_the_push_before_it_deploys() {
    let mut s = Served::gitolite_with_repo_hooks("rollgate audit");
    s.clone_as("alice");
    s.env().write_infra();
    s.fleet.write_spec(&Spec::standard());
    let a = s.env().commit("initial config");
    s.audit_refuses(true);
    let out = s.push_as("alice", &[], &["main"]);
    s.assert_refused(&out, MAIN, None);
    out.assert_contains("pre-receive.h01-audit after rollgate's")
        .assert_contains("nothing was deployed")
        .assert_contains("name it last in `option hook.pre-receive")
        .assert_lacks("audit: refused")
        .assert_lacks("[server04]");
    assert_eq!(s.fleet.hosts_listing(), Vec::<String>::new(), "{out}");
    assert!(s.journal().is_empty(), "{out}");

    // The admin puts rollgate last: the push deploys, after audit passed.
    s.set_repo_hooks("audit rollgate");
    s.audit_refuses(false);
    let out = s.push_as("alice", &[], &["main"]);
    s.assert_landed(&out, MAIN, &a);
    out.assert_contains("audit: passed")
        .assert_contains("[server04] ok");
    s.fleet.assert_on("server04", &a, SSHD_96);
    assert_eq!(s.whos(), ["alice"]);

    // audit refuses the next one before rollgate runs: nothing changes.
    let b = s.fleet.change("refused by audit");
    s.audit_refuses(true);
    let out = s.push_as("alice", &[], &["main"]);
    s.assert_refused(&out, MAIN, Some(&a));
    out.assert_contains("audit: refused")
        .assert_lacks("[server04]");
    s.fleet.assert_on("server04", &a, SSHD_96);
    assert_eq!(s.whos(), ["alice"], "{out}");

    // Listed twice, around audit: the first rollgate would deploy.
    s.set_repo_hooks("rollgate audit rollgate");
    s.audit_refuses(false);
    let out = s.push_as("alice", &[], &["main"]);
    s.assert_refused(&out, MAIN, Some(&a));
    out.assert_contains("pre-receive.h01-audit after rollgate's")
        .assert_lacks("[server04]");
    s.fleet.assert_on("server04", &a, SSHD_96);
    assert_ne!(a, b);
    s.assert_clean();
}

/// gitolite's branch permissions still apply: erin may write `dev/...`
/// (rollgate passes it untouched, nothing deployed) but not `main`
/// (gitolite's `update` hook says DENIED, the client sees it, `main` stays).
/// What the hosts hold after the denied push is issue 10's to assert: git
/// runs pre-receive before gitolite's `update` hook.
#[test]
fn gitolite_branch_permissions_allow_erin_dev_and_deny_her_main() {
    let (mut s, a, b) = Served::gitolite_denial_scenario(&Spec::standard());
    assert_eq!(s.whos(), ["alice"]);

    let out = s.push_as("erin", &[], &["main:refs/heads/dev/x"]);
    s.assert_landed(&out, "refs/heads/dev/x", &b);
    out.assert_contains("passed untouched");
    assert_eq!(s.whos(), ["alice"], "a dev/ push deployed\n{out}");

    let out = s.push_as("erin", &[], &["main"]);
    s.assert_refused(&out, MAIN, Some(&a));
    out.assert_contains("DENIED");
    // Of a revision the policy would deploy (main's tip): gitolite decides.
    // (Not canary: refs/deploy/canary already names `a`, what canary runs,
    // and git would say "Everything up-to-date".)
    let out = s.push_as("erin", &[], &[&format!("{a}:refs/deploy/farm")]);
    s.assert_refused(&out, "refs/deploy/farm", None);
    out.assert_contains("DENIED");

    s.assert_clean();
}
