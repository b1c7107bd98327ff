//! What the rollout suites share: a fleet of hosts that are plain local
//! directories (`<root>/hosts/<host>/etc/ssh/`, filled by a real `rsync`), a
//! `rollgate.toml` built per test, and readers for what rollgate leaves
//! behind: the journal, `status --json`, `log --json`, and the timestamps
//! the deploy commands themselves write (`<root>/hosts/<host>.times`), which
//! are what ordering claims are proved from (never sleeps in the test).
//!
//! Builds on `support::Env`; nothing here changes it.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::support::{DEADLINE, Env, Outcome, SSHD_92, SSHD_96, argv, path_str, q};

pub const MAIN: &str = "refs/heads/main";

/// How long the test waits for something a running push is expected to do
/// (a marker file, a line). A liveness bound, never a claim about speed.
pub const PATIENCE: Duration = Duration::from_secs(60);

// ---- rollgate.toml ----------------------------------------------------------

/// One `[groups.NAME]` table. Every group gets the var `root` (the fleet's
/// hosts directory unless `root` says otherwise) besides `version` and
/// `extra`.
pub struct GroupSpec {
    pub name: String,
    pub hosts: Vec<String>,
    pub batch: usize,
    pub version: String,
    pub root: Option<PathBuf>,
    pub extra: Vec<(String, String)>,
}

pub fn group(name: &str, hosts: &[&str], batch: usize, version: &str) -> GroupSpec {
    GroupSpec {
        name: name.into(),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        batch,
        version: version.into(),
        root: None,
        extra: Vec::new(),
    }
}

/// A `rollgate.toml` with one service, `sshd` (checked by the real
/// `sshd -t`), whose host commands vary per test.
pub struct Spec {
    /// `None`: no `default_group` line at all.
    pub default_group: Option<String>,
    /// Extra top-level lines, e.g. `on_failure = "restore-run"`.
    pub top: Vec<String>,
    pub deploy: Vec<String>,
    pub health: Option<Vec<String>>,
    /// Extra lines of `[services.sshd]`, e.g. `health_wait = "1s"`.
    pub service: Vec<String>,
    pub groups: Vec<GroupSpec>,
}

impl Spec {
    /// canary = [server04] (sshd 9.6, the default), farm = [server01,
    /// server02, server03] (sshd 9.2, two at a time); deploys with
    /// [`timed_deploy`].
    pub fn standard() -> Spec {
        Spec {
            default_group: Some("canary".into()),
            top: Vec::new(),
            deploy: timed_deploy(None),
            health: None,
            service: Vec::new(),
            groups: vec![
                group("canary", &["server04"], 1, "9.6"),
                group("farm", &["server01", "server02", "server03"], 2, "9.2"),
            ],
        }
    }

    pub fn render(&self, env: &Env, hosts: &Path) -> String {
        let mut t = String::new();
        if let Some(g) = &self.default_group {
            t += &format!("default_group = {}\n", q(g));
        }
        for line in &self.top {
            t += line;
            t.push('\n');
        }
        t += "\n[services.sshd]\nsource = \"files/sshd/{version}\"\n";
        t += &format!("check = {}\n", env.sshd_check());
        t += &format!("deploy = {}\n", argv(&self.deploy));
        if let Some(h) = &self.health {
            t += &format!("health = {}\n", argv(h));
        }
        for line in &self.service {
            t += line;
            t.push('\n');
        }
        for g in &self.groups {
            t += &format!("\n[groups.{}]\n", g.name);
            t += &format!(
                "hosts = [{}]\n",
                g.hosts.iter().map(|h| q(h)).collect::<Vec<_>>().join(", ")
            );
            t += &format!("batch = {}\n", g.batch);
            let mut vars = vec![
                ("version".to_string(), g.version.clone()),
                (
                    "root".to_string(),
                    path_str(g.root.as_deref().unwrap_or(hosts)).to_string(),
                ),
            ];
            vars.extend(g.extra.iter().cloned());
            t += &format!(
                "vars = {{ {} }}\n",
                vars.iter()
                    .map(|(k, v)| format!("{k} = {}", q(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        t
    }
}

/// `sh -c SCRIPT`, the argv a test deploy command is.
pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// The fleet's deploy: appends `start <ns>` to `{root}/{host}.times`, copies
/// the service directory to the host with a real `rsync` (`--checksum`:
/// plain `-a` skips a file whose size and mtime, to the second, match, and
/// rollgate writes every work tree fresh, so two same-size revisions
/// deployed within one second would leave the first one's bytes while both
/// report ok; the byte comparisons here must not depend on timing),
/// optionally pauses (so that hosts that wrongly ran together would
/// overlap), then appends `end <ns>`. The host's files live in `{root}/{host}/etc/ssh/`, the
/// timestamps beside them, so a host's directory holds only what rsync put.
pub fn timed_deploy(pause: Option<&str>) -> Vec<String> {
    let pause = pause.map(|p| format!(" && sleep {p}")).unwrap_or_default();
    sh(&format!(
        "echo start $(date +%s%N) >> {{root}}/{{host}}.times \
         && rsync -a --checksum --delete --mkpath {{dir}}/ {{root}}/{{host}}/etc/ssh/{pause} \
         && echo end $(date +%s%N) >> {{root}}/{{host}}.times"
    ))
}

// ---- the fleet ----------------------------------------------------------------

pub struct Fleet {
    pub env: Env,
    /// `{root}` of every group: the hosts' directories and timestamps.
    pub hosts: PathBuf,
}

impl Default for Fleet {
    fn default() -> Self {
        Fleet::new()
    }
}

impl Fleet {
    pub fn new() -> Fleet {
        let env = Env::new();
        let hosts = env.path("hosts");
        fs::create_dir(&hosts).expect("create the hosts dir");
        Fleet { env, hosts }
    }

    /// Bare repository with the hook, a clone, the sshd 9.2 / 9.6 files and
    /// `spec` as `rollgate.toml`, committed (not pushed). Returns the id.
    pub fn init(&self, spec: &Spec) -> String {
        self.env.bare_repo();
        self.env.clone_repo();
        self.env.write_infra();
        self.write_spec(spec);
        self.env.commit("initial config")
    }

    pub fn write_spec(&self, spec: &Spec) {
        self.env
            .write("rollgate.toml", &spec.render(&self.env, &self.hosts));
    }

    /// [`Fleet::init`], then a plain push that must land; returns the id.
    pub fn start(&self, spec: &Spec) -> String {
        let id = self.init(spec);
        let out = self.env.push(&[]);
        self.assert_landed(&out, &id);
        id
    }

    /// Changes both sshd versions (a comment line, which `sshd -t` accepts)
    /// and commits; returns the new id.
    pub fn change(&self, tag: &str) -> String {
        self.env.append(SSHD_92, &format!("# 9.2 change {tag}"));
        self.env.append(SSHD_96, &format!("# 9.6 change {tag}"));
        self.env.commit(&format!("change {tag}"))
    }

    /// The bytes of `rel` at commit `rev`, from the clone (a rejected
    /// push's commits are only there).
    pub fn file_at(&self, rev: &str, rel: &str) -> Vec<u8> {
        let mut cmd = self.env.command("git");
        cmd.current_dir(self.env.work())
            .args(["cat-file", "blob", &format!("{rev}:{rel}")]);
        let out = cmd.output().expect("run git cat-file");
        assert!(
            out.status.success(),
            "git cat-file {rev}:{rel} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// A host's directory (`{root}/{host}`).
    pub fn host(&self, host: &str) -> PathBuf {
        self.hosts.join(host)
    }

    /// The host's deployed `sshd_config`, `None` if there is none.
    pub fn deployed(&self, host: &str) -> Option<Vec<u8>> {
        fs::read(self.host(host).join("etc/ssh/sshd_config")).ok()
    }

    /// Asserts the host's `sshd_config` is byte for byte `rel` at `rev`.
    #[track_caller]
    pub fn assert_on(&self, host: &str, rev: &str, rel: &str) {
        let want = self.file_at(rev, rel);
        let got = self.deployed(host);
        assert!(
            got.as_deref() == Some(want.as_slice()),
            "{host}'s sshd_config is not {rel} at {}:\n--- want\n{}--- got\n{}",
            &rev[..10],
            String::from_utf8_lossy(&want),
            got.map_or("(no file)".into(), |g| String::from_utf8_lossy(&g)
                .into_owned())
        );
    }

    /// Puts files on a host as if it had been set up by hand: its own
    /// `sshd_config` and one more file.
    pub fn populate(&self, host: &str) {
        let dir = self.host(host).join("etc/ssh");
        fs::create_dir_all(&dir).expect("create a host dir");
        fs::write(
            dir.join("sshd_config"),
            format!("# {host}'s own config, set up by hand\nPort 22\n"),
        )
        .expect("write a host file");
        fs::write(dir.join("moduli"), format!("# {host} moduli\n")).expect("write a host file");
    }

    /// The host's directory tree (content and mtime of every file).
    pub fn tree(&self, host: &str) -> Tree {
        Tree::of(&self.host(host))
    }

    /// The deploy intervals the host's `.times` file records, oldest first.
    pub fn intervals(&self, host: &str) -> Vec<Interval> {
        intervals_of(&self.hosts.join(format!("{host}.times")))
    }

    /// Every entry of the hosts directory (relative), for "nothing written".
    pub fn hosts_listing(&self) -> Vec<String> {
        let mut out = Vec::new();
        list(&self.hosts, &self.hosts, &mut out);
        out.sort();
        out
    }

    /// Asserts that some line of what `out` printed holds every one of
    /// `words` (wording around them is rollgate's to choose).
    #[track_caller]
    pub fn assert_line(&self, out: &Outcome, words: &[&str]) {
        assert!(
            !out.lines_with(words).is_empty(),
            "no line with all of {words:?}\n{out}"
        );
    }

    #[track_caller]
    pub fn assert_landed(&self, out: &Outcome, id: &str) {
        out.assert_ok();
        assert_eq!(
            self.env.remote_ref(MAIN).as_deref(),
            Some(id),
            "the accepted push did not move {MAIN}\n{out}"
        );
    }

    /// The push was refused by the hook and `main` is still `before`.
    #[track_caller]
    pub fn assert_rejected(&self, out: &Outcome, before: Option<&str>) {
        out.assert_code(1)
            .assert_contains("pre-receive hook declined");
        assert_eq!(
            self.env.remote_ref(MAIN).as_deref(),
            before,
            "the rejected push moved {MAIN}\n{out}"
        );
    }

    /// `git push OPTS origin main` from the clone with extra environment.
    pub fn push_as(&self, vars: &[(&str, &str)], opts: &[&str]) -> Outcome {
        let mut cmd = self.env.command("git");
        cmd.current_dir(self.env.work()).arg("push");
        cmd.args(opts).args(["origin", "main"]);
        cmd.envs(vars.iter().copied());
        self.env.run(cmd)
    }

    /// `git push OPTS origin main` from the clone, left running.
    pub fn spawn_push(&self, vars: &[(&str, &str)], opts: &[&str]) -> Running {
        let mut cmd = self.env.command("git");
        cmd.current_dir(self.env.work()).arg("push");
        cmd.args(opts).args(["origin", "main"]);
        cmd.envs(vars.iter().copied());
        Running::spawn(cmd)
    }

    /// The standard fleet on A everywhere, then a push of B to the farm
    /// whose deploy hangs, and the hook `kill -9`ed while server01 and
    /// server02 deploy. Checks on the way that each deploy runs under a
    /// supervisor that is the hook's child, and returns once the push is
    /// rejected, the supervisors have killed the deploys, and the lock is
    /// free. The killed push had `tmp` (returned) as its TMPDIR, since a
    /// killed hook cannot clean up after itself.
    pub fn kill_hook_mid_deploy(&self, spec: &mut Spec) -> KilledPush {
        spec.top.push("lock_wait = \"1s\"".into());
        let a = self.init(spec);
        self.assert_landed(&self.env.push(&["-o", "all"]), &a);

        // B's deploy announces itself (hook pid, own pid = its process
        // group) and then sleeps far longer than the test.
        spec.deploy = sh(
            "echo $PPID $$ > {root}/{host}.tmp && mv {root}/{host}.tmp {root}/{host}.started \
             && sleep 120",
        );
        self.write_spec(spec);
        let b = self.env.commit("a deploy that hangs");
        let tmp = self.env.path("tmp-killed");
        fs::create_dir(&tmp).unwrap();
        let push = self.spawn_push(&[("TMPDIR", path_str(&tmp))], &["-o", "group=farm"]);
        // Killed on drop should this fail half-way: no deploy left behind.
        let mut groups = Groups::default();
        let mut supervisors = Vec::new();
        for h in ["server01", "server02"] {
            let marker = self.hosts.join(format!("{h}.started"));
            wait_until(&format!("{h}'s deploy to start"), || marker.exists());
            let text = fs::read_to_string(&marker).unwrap();
            let (ppid, pid) = text.trim().split_once(' ').unwrap();
            groups.0.push(pid.parse::<i32>().unwrap());
            supervisors.push(ppid.parse::<u32>().unwrap());
        }
        let hook = self.hook_pid();
        assert!(
            supervisors.iter().all(|p| parent_of(*p) == Some(hook)),
            "the deploys' parents {supervisors:?} are not children of the hook {hook}"
        );
        nix::sys::signal::kill(Pid::from_raw(hook as i32), Signal::SIGKILL).unwrap();
        let out = push.finish();
        self.assert_rejected(&out, Some(&a));
        // The supervisors learn of the hook's death, kill its deploys, and
        // only then let go of the deploy lock they share; until then status
        // rightly counts the run as live. git's client may return first.
        for pgid in &groups.0 {
            wait_until(
                &format!("the killed run's deploy {pgid} to be killed"),
                || !group_alive(*pgid),
            );
        }
        groups.0.clear();
        self.wait_until_unlocked();
        KilledPush { a, b, tmp }
    }

    /// The one `rollgate hook pre-receive` running in this bare repository.
    pub fn hook_pid(&self) -> u32 {
        let remote = self.env.remote().canonicalize().unwrap();
        let hooks: Vec<u32> = self
            .env
            .processes_matching("rollgate hook pre-receive")
            .iter()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .filter(|pid| cwd_of(*pid).is_some_and(|c| c == remote))
            .collect();
        assert_eq!(hooks.len(), 1, "hook processes: {hooks:?}");
        hooks[0]
    }

    /// Waits until no process holds the deploy lock. After a hook is killed,
    /// its commands' supervisors hold it until they have killed everything,
    /// which can be after git's client has returned.
    pub fn wait_until_unlocked(&self) {
        let lock = self.env.remote().join("rollgate/lock");
        wait_until("the deploy lock to be released", || {
            fs::File::open(&lock).unwrap().try_lock().is_ok()
        });
    }

    // ---- what rollgate recorded ------------------------------------------------

    pub fn journal_path(&self) -> PathBuf {
        self.env.remote().join("rollgate/journal.jsonl")
    }

    /// Every journal record (each line must be JSON); none if no journal.
    pub fn journal(&self) -> Vec<Value> {
        let Ok(text) = fs::read_to_string(self.journal_path()) else {
            return Vec::new();
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("journal line {} is not JSON ({e}): {l}", i + 1))
            })
            .collect()
    }

    /// The journal's runs, oldest first.
    pub fn runs(&self) -> Vec<Run> {
        runs_of(&self.journal())
    }

    /// `rollgate status --json --repo BARE`, which must succeed.
    pub fn status(&self) -> Vec<Value> {
        let out = self.rollgate_json(&["status", "--json"]);
        as_array(out)
    }

    /// `rollgate log --json --repo BARE`, which must succeed.
    pub fn log(&self) -> Vec<Value> {
        let out = self.rollgate_json(&["log", "--json"]);
        as_array(out)
    }

    fn rollgate_json(&self, args: &[&str]) -> Value {
        let remote = self.env.remote();
        let mut all = args.to_vec();
        all.extend(["--repo", path_str(&remote)]);
        let out = self.env.rollgate(&all);
        out.assert_ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("`rollgate {}` printed no JSON ({e})\n{out}", args[0]))
    }

    /// `status --json`'s row for `host` (service `sshd`), which must exist.
    #[track_caller]
    pub fn status_of(&self, host: &str) -> Value {
        let rows = self.status();
        rows.iter()
            .find(|r| r["host"] == host && r["service"] == "sshd")
            .cloned()
            .unwrap_or_else(|| panic!("no status row for {host}/sshd: {rows:#?}"))
    }

    /// `status` says `host` ended on `rev` with `result`.
    #[track_caller]
    pub fn assert_status(&self, host: &str, result: &str, rev: &str) {
        let s = self.status_of(host);
        assert_eq!(
            (&s["result"], &s["rev"]),
            (&result.into(), &rev.into()),
            "{host}"
        );
    }

    /// Everything a test must leave clean: TMPDIR empty and no process
    /// started from this test's directories still running.
    #[track_caller]
    pub fn assert_clean(&self) {
        self.env.assert_tmp_empty();
        let left = self.env.processes_matching(path_str(self.env.root()));
        assert!(
            left.is_empty(),
            "processes of this test still running: {left:#?}"
        );
    }
}

/// What [`Fleet::kill_hook_mid_deploy`] leaves: A everywhere before, B the
/// killed push's revision, and that push's TMPDIR.
pub struct KilledPush {
    pub a: String,
    pub b: String,
    pub tmp: PathBuf,
}

fn as_array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        other => panic!("expected a JSON array, got {other:#}"),
    }
}

/// One run of the journal: its start record, host records, end record.
#[derive(Debug, Clone)]
pub struct Run {
    pub id: String,
    pub start: Value,
    pub steps: Vec<Value>,
    pub end: Option<Value>,
}

impl Run {
    /// `group/host` entries of the start record, in order.
    pub fn planned(&self) -> Vec<String> {
        strings(&self.start["hosts"])
    }

    /// `(action, host, rev, result)` of every host record, in journal order.
    pub fn step_list(&self) -> Vec<(String, String, String, String)> {
        self.steps
            .iter()
            .map(|s| {
                (
                    s["action"].as_str().unwrap_or("?").to_string(),
                    s["host"].as_str().unwrap_or("?").to_string(),
                    s["rev"].as_str().unwrap_or("?").to_string(),
                    s["result"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect()
    }

    /// The hosts of the host records, in journal order.
    pub fn hosts(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| s["host"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

pub fn runs_of(records: &[Value]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for r in records {
        let id = r["run"].as_str().expect("every record has a run id");
        match r["event"].as_str() {
            Some("start") => runs.push(Run {
                id: id.to_string(),
                start: r.clone(),
                steps: Vec::new(),
                end: None,
            }),
            Some("host") => runs
                .iter_mut()
                .rev()
                .find(|x| x.id == id)
                .unwrap_or_else(|| panic!("host record of a run that never started: {r}"))
                .steps
                .push(r.clone()),
            Some("end") => {
                let run = runs
                    .iter_mut()
                    .rev()
                    .find(|x| x.id == id)
                    .unwrap_or_else(|| panic!("end record of a run that never started: {r}"));
                assert!(run.end.is_none(), "a run ended twice: {r}");
                run.end = Some(r.clone());
            }
            // A batch record names the hosts about to start; it must
            // belong to a run that started.
            Some("batch") => assert!(
                runs.iter().any(|x| x.id == id),
                "batch record of a run that never started: {r}"
            ),
            other => panic!("unknown journal event {other:?}: {r}"),
        }
    }
    runs
}

// ---- host trees and timestamps ------------------------------------------------

/// A directory tree as it is on disk: every entry with its content (files),
/// target (links) and mtime, so "untouched" means byte for byte and unwritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree(pub BTreeMap<String, Entry>);

#[derive(Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File { bytes: Vec<u8>, mtime_ns: i128 },
    Link(PathBuf),
}

/// Files shown as text, so a failing comparison reads as a diff would.
impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Dir => f.write_str("Dir"),
            Entry::File { bytes, mtime_ns } => write!(
                f,
                "File(mtime {mtime_ns} ns) {:?}",
                String::from_utf8_lossy(bytes)
            ),
            Entry::Link(target) => write!(f, "Link -> {}", target.display()),
        }
    }
}

impl Tree {
    pub fn of(dir: &Path) -> Tree {
        let mut map = BTreeMap::new();
        walk(dir, dir, &mut map);
        Tree(map)
    }
}

fn walk(base: &Path, dir: &Path, map: &mut BTreeMap<String, Entry>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let rel = path
            .strip_prefix(base)
            .expect("below base")
            .display()
            .to_string();
        let meta = fs::symlink_metadata(&path).expect("stat an entry");
        if meta.file_type().is_symlink() {
            map.insert(rel, Entry::Link(fs::read_link(&path).expect("readlink")));
        } else if meta.is_dir() {
            map.insert(rel, Entry::Dir);
            walk(base, &path, map);
        } else {
            map.insert(
                rel,
                Entry::File {
                    bytes: fs::read(&path).expect("read a file"),
                    mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                        + i128::from(meta.mtime_nsec()),
                },
            );
        }
    }
}

fn list(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(
            path.strip_prefix(base)
                .expect("below")
                .display()
                .to_string(),
        );
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            list(base, &path, out);
        }
    }
}

/// One deploy command's run on a host, in nanoseconds since the epoch, as
/// the command itself wrote them (`date +%s%N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: u128,
    pub end: u128,
}

pub fn intervals_of(path: &Path) -> Vec<Interval> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut open: Option<u128> = None;
    for line in text.lines() {
        let (what, ns) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("{}: bad line {line:?}", path.display()));
        let ns: u128 = ns
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: bad time {line:?}: {e}", path.display()));
        match (what, open) {
            ("start", None) => open = Some(ns),
            ("end", Some(start)) => {
                out.push(Interval { start, end: ns });
                open = None;
            }
            _ => panic!(
                "{}: unpaired {what:?} (a deploy ran into another on one host?):\n{text}",
                path.display()
            ),
        }
    }
    assert!(
        open.is_none(),
        "{}: a start without an end:\n{text}",
        path.display()
    );
    out
}

/// Waits (at most [`PATIENCE`]) until `ready()`; panics naming `what`.
#[track_caller]
pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < PATIENCE,
            "gave up after {PATIENCE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- a command left running -------------------------------------------------

/// A command (e.g. a `git push`) running in its own process group while the
/// test does other things; its stderr lines arrive as they are written.
/// Dropped while still running, the whole group is killed.
pub struct Running {
    what: String,
    child: Option<Child>,
    started: Instant,
    lines: Receiver<String>,
    stderr: String,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let what = format!(
            "{} {}",
            cmd.get_program().to_string_lossy(),
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        cmd.process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("could not start `{what}`: {e}"));
        let mut out = child.stdout.take().expect("piped stdout");
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            // git ends progress lines with \r too; split on both.
            let mut reader = std::io::BufReader::new(err);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        if tx.send(text).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Running {
            what,
            child: Some(child),
            started: Instant::now(),
            lines,
            stderr: String::new(),
            stdout: Some(stdout),
        }
    }

    /// Waits (at most [`PATIENCE`]) for a stderr line containing `needle`;
    /// returns it.
    #[track_caller]
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stderr.push_str(&line);
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "`{}` printed no line with {needle:?} (it ended, or {PATIENCE:?} passed); \
                     stderr so far:\n{}",
                    self.what, self.stderr
                ),
            }
        }
    }

    /// Waits for the end (at most [`DEADLINE`]) and returns what it printed.
    pub fn finish(mut self) -> Outcome {
        let mut child = self.child.take().expect("running");
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for a child") {
                break status;
            }
            if self.started.elapsed() > DEADLINE {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                panic!("`{}` still running after {DEADLINE:?}: killed", self.what);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The reader ends when the pipe closes (everything that held it ended).
        while let Ok(line) = self.lines.recv_timeout(PATIENCE) {
            self.stderr.push_str(&line);
        }
        let stdout = self
            .stdout
            .take()
            .expect("once")
            .join()
            .expect("stdout reader");
        Outcome {
            what: self.what.clone(),
            code: status.code(),
            stdout,
            stderr: std::mem::take(&mut self.stderr),
            duration: self.started.elapsed(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

/// Process groups this test started indirectly (a deploy command orphaned
/// by a killed hook): killed on drop, so a failing test leaves none.
#[derive(Default)]
pub struct Groups(pub Vec<i32>);

impl Drop for Groups {
    fn drop(&mut self) {
        for pgid in &self.0 {
            let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
        }
    }
}

/// Whether any process (not a zombie) is in process group `pgid`.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split
        // after its closing parenthesis.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
    })
}

/// The parent of process `pid`, if it is alive.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The working directory of process `pid`, if it can be read.
pub fn cwd_of(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/cwd")).ok()
}
