//! The harness every integration suite builds on.
//!
//! An [`Env`] is one test's private world under a fresh temp dir: a HOME, a
//! TMPDIR that must be empty again when the test ends, a bare repository with
//! the hook installed, a clone to commit in, and a throwaway sshd host key.
//! Every program (the real `rollgate` binary, the real `git`, `ssh-keygen`)
//! runs with a scrubbed environment, so nothing of the developer's git config
//! or shell leaks in, and every run has a deadline, so a hung hook fails the
//! test instead of hanging the suite.
//!
//! ```text
//! let env = Env::new();
//! env.bare_repo();            // git init --bare -b main + rollgate hook install
//! env.clone_repo();           // the work tree every write/commit/push uses
//! env.write_infra();          // sshd 9.2 + 9.6, nginx 1.22, groups canary + farm
//! env.commit("initial");
//! let out = env.push(&["-o", "validate-only"]);
//! out.assert_ok();
//! env.assert_tmp_empty();
//! ```

// Later suites (deploys, rollbacks, OpenSSH hosts) use helpers this one does not.
#![allow(dead_code)]

use std::cell::OnceCell;
use std::fmt;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The binary under test, built by cargo for this test run.
pub const ROLLGATE: &str = env!("CARGO_BIN_EXE_rollgate");

/// A fixed PATH: the standard Debian one, so the checkers (`/usr/sbin/sshd`,
/// `/usr/sbin/nginx`) and git are found whatever the developer's PATH holds.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The longest any one command may take before the test fails (and the
/// command, with everything it started in its process group, is killed).
pub const DEADLINE: Duration = Duration::from_secs(120);

/// The fixed identity and clock of every commit, so commit ids only depend
/// on content.
const IDENTITY: &[(&str, &str)] = &[
    ("GIT_AUTHOR_NAME", "Test Author"),
    ("GIT_AUTHOR_EMAIL", "author@example.test"),
    ("GIT_AUTHOR_DATE", "2024-01-02T03:04:05+00:00"),
    ("GIT_COMMITTER_NAME", "Test Committer"),
    ("GIT_COMMITTER_EMAIL", "committer@example.test"),
    ("GIT_COMMITTER_DATE", "2024-01-02T03:04:05+00:00"),
];

/// One test's world. Everything lives under `root`, which is removed when
/// the `Env` is dropped.
pub struct Env {
    root: TempDir,
    host_key: OnceCell<PathBuf>,
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

impl Env {
    pub fn new() -> Env {
        ensure_run_sshd();
        let root = tempfile::Builder::new()
            .prefix("rollgate-it-")
            .tempdir()
            .expect("create the test's root temp dir");
        for dir in ["home", "tmp", "keys"] {
            fs::create_dir(root.path().join(dir)).expect("create a test dir");
        }
        Env {
            root,
            host_key: OnceCell::new(),
        }
    }

    /// The test's root directory (everything else is below it).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `root/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    /// The TMPDIR every command of this test gets.
    pub fn tmpdir(&self) -> PathBuf {
        self.path("tmp")
    }

    /// The bare repository pushes go to (made by [`Env::bare_repo`]).
    pub fn remote(&self) -> PathBuf {
        self.path("remote.git")
    }

    /// The clone everything is written, committed and pushed from.
    pub fn work(&self) -> PathBuf {
        self.path("work")
    }

    // ---- processes ------------------------------------------------------

    /// `program` with a scrubbed, hermetic environment, run in the clone if
    /// there is one (else in the root).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", PATH)
            .env("HOME", self.path("home"))
            .env("TMPDIR", self.tmpdir())
            .env("LANG", "C")
            .env("USER", "tester")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .envs(IDENTITY.iter().copied())
            .stdin(Stdio::null());
        let work = self.work();
        cmd.current_dir(if work.is_dir() {
            work
        } else {
            self.root().to_path_buf()
        });
        cmd
    }

    /// Runs `cmd` to completion (at most [`DEADLINE`]) and returns what it
    /// printed. Never panics on a failing command: that is for the caller.
    pub fn run(&self, mut cmd: Command) -> Outcome {
        let what = describe(&cmd);
        // Its own process group, so a deadline can kill what it started too
        // (git push -> receive-pack -> hook -> checker).
        cmd.process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `{what}`: {e}"));
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for a child") {
                break status;
            }
            if started.elapsed() > DEADLINE {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                let _ = child.kill();
                let _ = child.wait();
                panic!("`{what}` still running after {DEADLINE:?}: killed its process group");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let outcome = Outcome {
            what,
            code: status.code(),
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
            duration: started.elapsed(),
        };
        // `ROLLGATE_IT_SHOW=1 cargo test --test it NAME -- --nocapture`
        // shows every command a test runs and what it printed.
        if std::env::var_os("ROLLGATE_IT_SHOW").is_some() {
            eprintln!("{outcome}");
        }
        outcome
    }

    /// `git ARGS` in `dir`, whatever its result.
    pub fn git_in(&self, dir: &Path, args: &[&str]) -> Outcome {
        let mut cmd = self.command("git");
        cmd.current_dir(dir).args(args);
        self.run(cmd)
    }

    /// `git ARGS` in `dir`, which must succeed; returns its trimmed stdout.
    pub fn git_ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.git_in(dir, args);
        out.assert_ok();
        out.stdout.trim().to_string()
    }

    /// `rollgate ARGS` in the clone (or the root before there is one).
    pub fn rollgate(&self, args: &[&str]) -> Outcome {
        let mut cmd = self.command(ROLLGATE);
        cmd.args(args);
        self.run(cmd)
    }

    /// `rollgate ARGS` in `dir`.
    pub fn rollgate_in(&self, dir: &Path, args: &[&str]) -> Outcome {
        let mut cmd = self.command(ROLLGATE);
        cmd.current_dir(dir).args(args);
        self.run(cmd)
    }

    // ---- repositories ----------------------------------------------------

    /// `git init --bare -b main` at [`Env::remote`], without any hook.
    pub fn bare_repo_without_hook(&self) -> PathBuf {
        let remote = self.remote();
        self.git_ok(
            self.root(),
            &["init", "-q", "--bare", "-b", "main", path_str(&remote)],
        );
        remote
    }

    /// A bare repository with `rollgate hook install --repo` done.
    pub fn bare_repo(&self) -> PathBuf {
        let remote = self.bare_repo_without_hook();
        self.rollgate(&["hook", "install", "--repo", path_str(&remote)])
            .assert_ok();
        remote
    }

    /// Clones [`Env::remote`] into [`Env::work`], on branch `main`.
    pub fn clone_repo(&self) -> PathBuf {
        let work = self.work();
        self.git_ok(
            self.root(),
            &["clone", "-q", path_str(&self.remote()), path_str(&work)],
        );
        // A clone of an empty repository may not know the remote's branch.
        self.git_ok(&work, &["symbolic-ref", "HEAD", "refs/heads/main"]);
        work
    }

    /// The id `refname` has in the bare repository, if it exists.
    pub fn remote_ref(&self, refname: &str) -> Option<String> {
        let out = self.git_in(&self.remote(), &["rev-parse", "-q", "--verify", refname]);
        out.success().then(|| out.stdout.trim().to_string())
    }

    /// `git push OPTS origin main` from the clone: what the pusher sees.
    pub fn push(&self, opts: &[&str]) -> Outcome {
        let mut args = vec!["push"];
        args.extend_from_slice(opts);
        args.extend(["origin", "main"]);
        self.git_in(&self.work(), &args)
    }

    /// `git push ARGS` from the clone, for refspecs other than `main`.
    pub fn git_push(&self, args: &[&str]) -> Outcome {
        let mut all = vec!["push"];
        all.extend_from_slice(args);
        self.git_in(&self.work(), &all)
    }

    // ---- the clone's files -----------------------------------------------

    /// Writes `rel` (relative to the clone), creating directories.
    pub fn write(&self, rel: &str, text: &str) {
        let path = self.work().join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        // A symlink left at `rel` by an earlier step would be followed.
        let _ = fs::remove_file(&path);
        fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Appends a line to `rel` (relative to the clone).
    pub fn append(&self, rel: &str, line: &str) {
        let mut text = self.read(rel);
        text.push_str(line);
        text.push('\n');
        self.write(rel, &text);
    }

    /// Replaces `from` (which must occur) with `to` in `rel`.
    pub fn replace(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        self.write(rel, &text.replace(from, to));
    }

    pub fn read(&self, rel: &str) -> String {
        let path = self.work().join(rel);
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
    }

    /// Makes `rel` (relative to the clone) a symlink to `target`, verbatim.
    pub fn symlink(&self, rel: &str, target: &str) {
        let path = self.work().join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("create parent dirs");
        }
        let _ = fs::remove_file(&path);
        std::os::unix::fs::symlink(target, &path)
            .unwrap_or_else(|e| panic!("symlink {} -> {target}: {e}", path.display()));
    }

    /// `git add -A && git commit`; returns the new commit id.
    pub fn commit(&self, message: &str) -> String {
        let work = self.work();
        self.git_ok(&work, &["add", "-A"]);
        self.git_ok(&work, &["commit", "-q", "--allow-empty", "-m", message]);
        self.git_ok(&work, &["rev-parse", "HEAD"])
    }

    /// The clone's HEAD commit id.
    pub fn head(&self) -> String {
        self.git_ok(&self.work(), &["rev-parse", "HEAD"])
    }

    // ---- the realistic config repository -----------------------------------

    /// A throwaway ed25519 host key for `sshd -t`, made on first use, outside
    /// TMPDIR (so TMPDIR can be asserted empty).
    pub fn host_key(&self) -> &Path {
        self.host_key.get_or_init(|| {
            let key = self.path("keys/host_key");
            let mut cmd = self.command("ssh-keygen");
            cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "rollgate-test", "-f"])
                .arg(&key);
            self.run(cmd).assert_ok();
            key
        })
    }

    /// The realistic `rollgate.toml` of [`Env::write_infra`], for tests
    /// that want to vary it before writing.
    pub fn infra_toml(&self) -> String {
        INFRA_TOML.replace("@SSHD_CHECK@", &self.sshd_check())
    }

    /// Writes a realistic config repository into the clone: `sshd` with
    /// versions 9.2 and 9.6 (checked with `sshd -t`), `nginx` 1.22 (checked
    /// with `nginx -t`), group `canary` (default, sshd 9.6) and group `farm`
    /// (sshd 9.2). Deploy commands are harmless (`true`).
    pub fn write_infra(&self) {
        self.write("rollgate.toml", &self.infra_toml());
        self.write(SSHD_92, SSHD_92_CONFIG);
        self.write(SSHD_96, SSHD_96_CONFIG);
        self.write(NGINX_CONF, NGINX_CONFIG);
        self.write("files/nginx/1.22/mime.types", NGINX_MIME_TYPES);
        self.write("files/nginx/1.22/html/index.html", "<h1>it works</h1>\n");
    }

    /// [`Env::bare_repo`] + [`Env::clone_repo`] + [`Env::write_infra`] + a
    /// first commit pushed and accepted; returns that commit's id.
    pub fn pushed_infra(&self) -> String {
        self.bare_repo();
        self.clone_repo();
        self.write_infra();
        let id = self.commit("initial config");
        let out = self.push(&[]);
        out.assert_ok();
        assert_eq!(
            self.remote_ref("refs/heads/main").as_deref(),
            Some(id.as_str()),
            "the first push did not land\n{out}"
        );
        id
    }

    // ---- processes left behind ----------------------------------------------

    /// The processes whose command line matches `pattern` (`pgrep -a -f`),
    /// one `PID COMMAND LINE` string each.
    pub fn processes_matching(&self, pattern: &str) -> Vec<String> {
        let mut cmd = self.command("pgrep");
        cmd.args(["-a", "-f", pattern]);
        let out = self.run(cmd);
        out.stdout.lines().map(String::from).collect()
    }

    /// Fails the test if a process matching `pattern` is running; kills
    /// those (by pid: they are this test's own) first, so a failure leaves
    /// nothing behind. `context` is printed with the failure.
    #[track_caller]
    pub fn assert_no_process(&self, pattern: &str, context: &Outcome) {
        let left = self.processes_matching(pattern);
        if left.is_empty() {
            return;
        }
        for pid in left.iter().filter_map(|l| l.split_whitespace().next()) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        panic!("processes matching {pattern:?} are still running: {left:#?}\n{context}");
    }

    // ---- assertions and output -------------------------------------------

    /// Fails the test if anything (file, dir, link) is left in TMPDIR.
    pub fn assert_tmp_empty(&self) {
        let mut left = Vec::new();
        list_tree(&self.tmpdir(), &mut left);
        assert!(
            left.is_empty(),
            "TMPDIR {} is not empty after the test:\n  {}",
            self.tmpdir().display(),
            left.join("\n  ")
        );
    }

    /// `text` with this test's temp paths replaced by `[ROOT]`, the test
    /// binary by `[ROLLGATE]`, and trailing blanks cut (git pads `remote:`
    /// lines with spaces).
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        let mut roots = vec![self.root().display().to_string()];
        if let Ok(canonical) = self.root().canonicalize() {
            roots.push(canonical.display().to_string());
        }
        for root in roots {
            text = text.replace(&root, "[ROOT]");
        }
        text = text.replace(ROLLGATE, "[ROLLGATE]");
        let mut out: String = text
            .lines()
            .map(str::trim_end)
            .collect::<Vec<_>>()
            .join("\n");
        out.push('\n');
        out
    }

    /// Exactly what the pushing client saw (stdout, then stderr, with the
    /// exit code), redacted for a snapshot.
    pub fn client_saw(&self, out: &Outcome) -> String {
        let mut text = format!("exit: {}\n", code_str(out.code));
        if !out.stdout.is_empty() {
            text.push_str(&out.stdout);
        }
        text.push_str(&out.stderr);
        self.redact(&text)
    }
}

/// Snapshot settings for client output: commit ids and durations vary.
/// Bind them around `insta::assert_snapshot!` with `settings.bind(|| ..)`.
pub fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"\b[0-9a-f]{7,40}\b", "[ID]");
    settings.add_filter(r"\b\d+(\.\d+)?(ms|s)\b", "[TIME]");
    settings.set_prepend_module_to_snapshot(false);
    settings
}

/// What one command did.
pub struct Outcome {
    /// The command line, for failure messages.
    pub what: String,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub duration: Duration,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout and stderr together (for a push, the client's `remote:` lines
    /// and git's own are all on stderr).
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.stdout.contains(needle) || self.stderr.contains(needle)
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert!(self.success(), "expected success\n{self}");
        self
    }

    /// Exit status non-zero (and not a signal death).
    #[track_caller]
    pub fn assert_failed(&self) -> &Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a failure exit\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "unexpected exit code\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_contains(&self, needle: &str) -> &Self {
        assert!(self.contains(needle), "output lacks {needle:?}\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_lacks(&self, needle: &str) -> &Self {
        assert!(!self.contains(needle), "output has {needle:?}\n{self}");
        self
    }

    /// What the hook said: the client's `remote: ` lines, prefix and
    /// git's padding removed.
    pub fn remote_lines(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("remote: "))
            .map(|l| l.trim_end().to_string())
            .collect()
    }

    /// The lines (of stderr, `remote: ` stripped) that hold every one of
    /// `words`, e.g. `["ok", "sshd 9.2", "(files/sshd/9.2)"]`.
    pub fn lines_with(&self, words: &[&str]) -> Vec<String> {
        self.stderr
            .lines()
            .map(|l| l.strip_prefix("remote: ").unwrap_or(l).trim_end())
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .map(String::from)
            .collect()
    }

    /// Asserts the per-directory report line: `verdict` (`ok` or `FAILED`)
    /// first, then the label, then the path in parentheses.
    #[track_caller]
    pub fn assert_dir_line(&self, verdict: &str, label: &str, path: &str) -> &Self {
        let found = self
            .lines_with(&[label, &format!("({path})")])
            .into_iter()
            .any(|l| {
                l.split_whitespace().next() == Some(verdict) && l.contains(&format!(" {label} "))
            });
        assert!(
            found,
            "no `{verdict} {label} ({path})` line in what the client saw\n{self}"
        );
        self
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.what)?;
        writeln!(
            f,
            "exit: {}  ({:.2}s)",
            code_str(self.code),
            self.duration.as_secs_f64()
        )?;
        writeln!(f, "--- stdout")?;
        write!(f, "{}", self.stdout)?;
        writeln!(f, "--- stderr")?;
        write!(f, "{}", self.stderr)?;
        writeln!(f, "---")
    }
}

fn code_str(code: Option<i32>) -> String {
    code.map_or_else(|| "killed by a signal".into(), |c| c.to_string())
}

fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    let line = parts.join(" ").replace(ROLLGATE, "rollgate");
    match cmd.get_current_dir() {
        Some(dir) => format!("(cd {} && {line})", dir.display()),
        None => line,
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

fn list_tree(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(path.display().to_string());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            list_tree(&path, out);
        }
    }
}

/// `sshd -t` run as root refuses to work without its privilege-separation
/// directory. Made once if missing, never removed (other tests may use it).
fn ensure_run_sshd() {
    let dir = Path::new("/run/sshd");
    if dir.is_dir() {
        return;
    }
    // On failure another test made it first, or we are not root (then
    // sshd -t does not need it).
    if fs::DirBuilder::new().mode(0o755).create(dir).is_ok() {
        // The mode given to mkdir is masked by the umask.
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    }
}

/// A minimal `rollgate.toml`: one service `probe` whose directories are
/// `files/probe/{version}`, checked by `check` (TOML array text, e.g.
/// `["sh", "-c", "exit 1"]`) with `timeout`; one group `canary` on 1.0.
pub fn probe_toml(check: &str, timeout: &str) -> String {
    format!(
        r#"default_group = "canary"

[services.probe]
source = "files/probe/{{version}}"
check = {check}
deploy = ["true"]
timeout = "{timeout}"

[groups.canary]
hosts = ["server04"]
vars = {{ version = "1.0" }}
"#
    )
}

/// A check that never ends by itself: `sh` with two `sleep`s, one in the
/// background, so killing only the direct child would leave one behind.
/// `first` (e.g. 3001) and `first + 1` are the seconds; a fraction unique
/// to this test process keeps parallel runs of the suite apart. Returns the
/// TOML array and the `pgrep -f` pattern that finds what it started.
pub fn hanging_check(first: u32) -> (String, String) {
    let tag = std::process::id();
    let second = first + 1;
    (
        format!(r#"["sh", "-c", "sleep {first}.{tag} & sleep {second}.{tag}"]"#),
        format!(r"sleep ({first}|{second})\.{tag}"),
    )
}

// ---- the realistic config repository (after examples/infra) ---------------

pub const SSHD_92: &str = "files/sshd/9.2/sshd_config";
pub const SSHD_96: &str = "files/sshd/9.6/sshd_config";
pub const NGINX_CONF: &str = "files/nginx/1.22/nginx.conf";

/// `@SSHD_CHECK@` becomes [`SSHD_CHECK`]. No HostKey line is in the
/// sshd_config files themselves: `sshd -t` would try the server's own key.
const INFRA_TOML: &str = r#"# An infrastructure repository, after examples/infra.
# (The deploy branch is the server's: rollgate/policy.toml in the bare repository.)
default_group = "canary"          # a plain `git push` deploys here and nowhere else

[services.sshd]
source = "files/sshd/{version}"
target = "/etc/ssh"
check = @SSHD_CHECK@
deploy = ["true"]
timeout = "60s"

[services.nginx]
source = "files/nginx/{nginx_version}"
target = "/etc/nginx"
check = ["/usr/sbin/nginx", "-t", "-q", "-e", "stderr", "-c", "{dir}/nginx.conf"]
deploy = ["true"]

[groups.canary]
hosts = ["server04"]
vars = { version = "9.6", nginx_version = "1.22" }

[groups.farm]
hosts = ["server01", "server02", "server03"]
vars = { version = "9.2", nginx_version = "1.22" }
batch = 2
"#;

const SSHD_92_CONFIG: &str = "# OpenSSH 9.2 (Debian 12 farm)
Port 22
AddressFamily any
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding no
PrintMotd no
ClientAliveInterval 300
ClientAliveCountMax 2
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
";

const SSHD_96_CONFIG: &str = "# OpenSSH 9.6 (canary): stricter algorithms
Port 22
AddressFamily any
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding no
PrintMotd no
ClientAliveInterval 300
ClientAliveCountMax 2
KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256
Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com
MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
";

const NGINX_CONFIG: &str = r#"# Checked with `nginx -t -c DIR/nginx.conf` in the sandbox, which shows DIR
# at /etc/nginx and has a private /run and /var for the pid and temp files.
worker_processes auto;
pid /run/nginx.pid;
error_log stderr;

events {
    worker_connections 1024;
}

http {
    include mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    keepalive_timeout 65;

    server {
        listen 8080 default_server;
        server_name _;
        location = /healthz {
            return 200 "ok\n";
        }
        location / {
            root html;
        }
    }
}
"#;

const NGINX_MIME_TYPES: &str = "types {
    text/html  html htm;
    text/plain txt;
    application/json json;
}
";

/// A TOML basic string (a JSON string is one).
pub fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// A TOML array of strings: an argv as rollgate.toml writes it.
pub fn argv<S: AsRef<str>>(items: &[S]) -> String {
    format!(
        "[{}]",
        items
            .iter()
            .map(|s| q(s.as_ref()))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The sshd check of examples/infra: `sshd -t` with a throwaway host key
/// made in the check sandbox's private /tmp (the server's own key is not
/// readable there, and must not be). The config path is an argument, not
/// shell text.
pub const SSHD_CHECK: &str = r#"["sh", "-c", "ssh-keygen -q -t ed25519 -N '' -f /tmp/hk && exec /usr/sbin/sshd -t -f \"$1\" -o HostKey=/tmp/hk", "sh", "{dir}/sshd_config"]"#;

impl Env {
    /// The argv (TOML array) of a real `sshd -t` check: [`SSHD_CHECK`].
    pub fn sshd_check(&self) -> String {
        SSHD_CHECK.to_string()
    }
}
