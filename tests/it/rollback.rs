//! Revision-pinned rollback and plan (issue 4), as an operator meets them:
//! real `git push` to a bare repository with the hook installed, real
//! `sshd -t` checks, a real `rsync` to hosts that are local directories
//! (`<root>/<host>/etc/ssh/`), and the real `rollgate rollback`, `plan`,
//! `deploy --dry-run`, `status --json` and `log --json`. Each test judges by
//! the exit status, what the operator saw, where the refs are, the journal,
//! and the bytes (and mtimes, for "untouched") of the files on the hosts.
//!
//! The helpers live here, on top of `support::Env`, which nothing here
//! changes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{Env, Outcome, SSHD_92, SSHD_96, path_str};

const FARM: [&str; 3] = ["server01", "server02", "server03"];

/// canary = [server04] on sshd 9.6 (the default group), farm = [server01,
/// server02, server03] on sshd 9.2.
const STANDARD: &[(&str, &[&str], &str)] = &[
    ("canary", &["server04"], "9.6"),
    ("farm", &["server01", "server02", "server03"], "9.2"),
];

/// The deploy command: a real `rsync` into the host's directory.
const RSYNC: &[&str] = &[
    "rsync",
    "-a",
    "--delete",
    "--mkpath",
    "{dir}/",
    "{root}/{host}/etc/ssh/",
];

/// Commit ids as rollgate quotes them.
fn short(id: &str) -> &str {
    &id[..10]
}

/// A TOML basic string (a JSON string is one).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn argv(items: &[&str]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// One test's world: the `Env` and the directory every host lives under.
struct World {
    env: Env,
    hosts: PathBuf,
}

impl World {
    fn new() -> World {
        let env = Env::new();
        let hosts = env.path("hosts");
        fs::create_dir(&hosts).expect("create the hosts dir");
        World { env, hosts }
    }

    fn remote(&self) -> PathBuf {
        self.env.remote()
    }

    /// A `rollgate.toml` with one service, `sshd`, checked by the real
    /// `sshd -t` and deployed by the real `rsync` into
    /// `{root}/{host}/etc/ssh/`; `groups` are (name, hosts, sshd version).
    fn toml(&self, groups: &[(&str, &[&str], &str)]) -> String {
        self.toml_deploying(groups, RSYNC)
    }

    /// [`World::toml`] with another deploy command.
    fn toml_deploying(&self, groups: &[(&str, &[&str], &str)], deploy: &[&str]) -> String {
        let host_key = format!("HostKey={}", self.env.host_key().display());
        let mut t = String::from("branch = \"main\"\ndefault_group = \"canary\"\n\n");
        t += "[services.sshd]\nsource = \"files/sshd/{version}\"\n";
        t += &format!(
            "check = {}\n",
            argv(&[
                "/usr/sbin/sshd",
                "-t",
                "-f",
                "{dir}/sshd_config",
                "-o",
                &host_key
            ])
        );
        t += &format!("deploy = {}\n", argv(deploy));
        t += "timeout = \"60s\"\n";
        for (name, hosts, version) in groups {
            t += &format!("\n[groups.{name}]\n");
            t += &format!(
                "hosts = [{}]\n",
                hosts.iter().map(|h| q(h)).collect::<Vec<_>>().join(", ")
            );
            t += &format!(
                "vars = {{ version = {}, root = {} }}\n",
                q(version),
                q(path_str(&self.hosts))
            );
        }
        t
    }

    /// Bare repository with the hook, a clone, the sshd 9.2 / 9.6 files and
    /// a `rollgate.toml` of `groups`, committed and pushed (which deploys it
    /// to the canary). Returns the commit id.
    fn start(&self, groups: &[(&str, &[&str], &str)]) -> String {
        self.env.bare_repo();
        self.env.clone_repo();
        self.env.write_infra();
        self.env.write("rollgate.toml", &self.toml(groups));
        let id = self.env.commit("r1: initial config");
        let out = self.push(&[]);
        self.assert_landed(&out, &id);
        self.assert_on("server04", &id, SSHD_96);
        id
    }

    /// Commits what the clone holds and pushes it with `opts`; the push must
    /// land. Returns the id.
    fn commit_and_push(&self, message: &str, opts: &[&str]) -> String {
        let id = self.env.commit(message);
        let out = self.push(opts);
        self.assert_landed(&out, &id);
        id
    }

    /// The standard fleet with the farm set up by hand (never deployed),
    /// then three revisions pushed, each a different canary `sshd_config`
    /// and each deployed to the canary. Returns (r1, r2, r3).
    fn three_revisions(&self) -> (String, String, String) {
        for h in FARM {
            self.populate(h);
        }
        let r1 = self.start(STANDARD);
        self.env.replace(
            SSHD_96,
            "ClientAliveInterval 300",
            "ClientAliveInterval 120",
        );
        let r2 = self.commit_and_push("r2: shorter client alive interval", &[]);
        self.assert_on("server04", &r2, SSHD_96);
        self.env.append(SSHD_96, "MaxAuthTries 3");
        let r3 = self.commit_and_push("r3: fewer auth tries", &[]);
        self.assert_on("server04", &r3, SSHD_96);
        (r1, r2, r3)
    }

    // ---- running things ------------------------------------------------------

    /// `git push OPTS origin main`; TMPDIR must be empty afterwards.
    fn push(&self, opts: &[&str]) -> Outcome {
        let out = self.env.push(opts);
        self.env.assert_tmp_empty();
        out
    }

    /// `git push ARGS` (other refspecs); TMPDIR must be empty afterwards.
    fn git_push(&self, args: &[&str]) -> Outcome {
        let out = self.env.git_push(args);
        self.env.assert_tmp_empty();
        out
    }

    /// `rollgate ARGS --repo BARE`; TMPDIR must be empty afterwards.
    fn rg(&self, args: &[&str]) -> Outcome {
        let remote = self.remote();
        let mut all = args.to_vec();
        all.extend(["--repo", path_str(&remote)]);
        let out = self.env.rollgate(&all);
        self.env.assert_tmp_empty();
        out
    }

    /// `git ARGS` in the clone, which must succeed.
    fn git(&self, args: &[&str]) -> String {
        self.env.git_ok(&self.env.work(), args)
    }

    /// Commits `edit`'s change on a new side branch `name` (from main) and
    /// pushes that branch, which must pass untouched; the clone is back on
    /// main afterwards. Returns the side commit's id.
    fn side_branch(&self, name: &str, edit: impl FnOnce(&Env)) -> String {
        self.git(&["checkout", "-q", "-b", name, "main"]);
        edit(&self.env);
        let id = self
            .env
            .commit(&format!("{name}: a change that must not deploy"));
        let out = self.git_push(&["origin", name]);
        out.assert_ok().assert_contains("passed untouched");
        assert_eq!(
            self.env
                .remote_ref(&format!("refs/heads/{name}"))
                .as_deref(),
            Some(id.as_str()),
            "the side branch did not land\n{out}"
        );
        self.git(&["checkout", "-q", "main"]);
        id
    }

    // ---- what is where ---------------------------------------------------------

    /// Where `main` points in the bare repository.
    fn main_tip(&self) -> String {
        self.env.git_ok(&self.remote(), &["rev-parse", "main"])
    }

    #[track_caller]
    fn assert_landed(&self, out: &Outcome, id: &str) {
        out.assert_ok();
        assert_eq!(
            self.main_tip(),
            id,
            "the accepted push did not move main\n{out}"
        );
    }

    /// The bytes of `rel` at `rev`, from the bare repository.
    fn file_at(&self, rev: &str, rel: &str) -> Vec<u8> {
        let mut cmd = self.env.command("git");
        cmd.current_dir(self.remote())
            .args(["cat-file", "blob", &format!("{rev}:{rel}")]);
        let out = cmd.output().expect("run git cat-file");
        assert!(
            out.status.success(),
            "git cat-file {rev}:{rel} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The files of directory `dir` at `rev` (paths relative to `dir`).
    fn files_at(&self, rev: &str, dir: &str) -> BTreeMap<String, Vec<u8>> {
        let listing = self.env.git_ok(
            &self.remote(),
            &["ls-tree", "-r", "--name-only", rev, &format!("{dir}/")],
        );
        listing
            .lines()
            .map(|path| {
                let rel = path
                    .strip_prefix(&format!("{dir}/"))
                    .unwrap_or_else(|| panic!("{path} is not below {dir}"));
                (rel.to_string(), self.file_at(rev, path))
            })
            .collect()
    }

    fn host(&self, host: &str) -> PathBuf {
        self.hosts.join(host)
    }

    /// The files of the host's `etc/ssh` (relative paths and bytes).
    fn deployed_files(&self, host: &str) -> BTreeMap<String, Vec<u8>> {
        Tree::of(&self.host(host).join("etc/ssh"))
            .0
            .into_iter()
            .filter_map(|(path, e)| match e {
                Entry::File { bytes, .. } => Some((path, bytes)),
                _ => None,
            })
            .collect()
    }

    /// The host's `etc/ssh` holds exactly the files of `rel`'s directory at
    /// `rev`, byte for byte.
    #[track_caller]
    fn assert_on(&self, host: &str, rev: &str, rel: &str) {
        let dir = Path::new(rel)
            .parent()
            .expect("a file in a directory")
            .to_str()
            .expect("UTF-8");
        let want = self.files_at(rev, dir);
        let got = self.deployed_files(host);
        assert!(
            got == want,
            "{host}'s etc/ssh is not {dir} at {}:\n--- want\n{}\n--- got\n{}",
            short(rev),
            show_files(&want),
            show_files(&got)
        );
    }

    /// Puts files on a host as if it had been set up by hand.
    fn populate(&self, host: &str) {
        let dir = self.host(host).join("etc/ssh");
        fs::create_dir_all(&dir).expect("create a host dir");
        fs::write(
            dir.join("sshd_config"),
            format!("# {host}'s own config, set up by hand\nPort 22\n"),
        )
        .expect("write a host file");
        fs::write(dir.join("moduli"), format!("# {host} moduli\n")).expect("write a host file");
    }

    /// Every host's tree (content and mtime of every file), by host.
    fn all_trees(&self) -> BTreeMap<String, Tree> {
        let mut out = BTreeMap::new();
        if let Ok(entries) = fs::read_dir(&self.hosts) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                out.insert(name, Tree::of(&e.path()));
            }
        }
        out
    }

    fn tree(&self, host: &str) -> Tree {
        Tree::of(&self.host(host))
    }

    // ---- what rollgate recorded -------------------------------------------------

    fn journal_bytes(&self) -> Vec<u8> {
        fs::read(self.remote().join("rollgate/journal.jsonl")).unwrap_or_default()
    }

    /// The journal's runs, oldest first.
    fn runs(&self) -> Vec<Run> {
        let text = String::from_utf8(self.journal_bytes()).expect("the journal is UTF-8");
        let mut runs: Vec<Run> = Vec::new();
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let r: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("journal line {} is not JSON ({e}): {line}", i + 1));
            let id = r["run"].as_str().expect("a run id").to_string();
            match r["event"].as_str() {
                Some("start") => runs.push(Run {
                    id,
                    start: r,
                    steps: Vec::new(),
                    end: None,
                }),
                Some("host") => runs
                    .iter_mut()
                    .rev()
                    .find(|x| x.id == id)
                    .unwrap_or_else(|| panic!("host record of a run that never started: {r}"))
                    .steps
                    .push(r),
                Some("end") => {
                    let run = runs
                        .iter_mut()
                        .rev()
                        .find(|x| x.id == id)
                        .unwrap_or_else(|| panic!("end of a run that never started: {r}"));
                    assert!(run.end.is_none(), "a run ended twice: {r}");
                    run.end = Some(r);
                }
                other => panic!("unknown journal event {other:?}: {r}"),
            }
        }
        runs
    }

    fn last_run(&self) -> Run {
        self.runs().pop().expect("the journal has a run")
    }

    fn json(&self, args: &[&str]) -> Vec<Value> {
        let out = self.rg(args);
        out.assert_ok();
        match serde_json::from_str(&out.stdout) {
            Ok(Value::Array(items)) => items,
            other => panic!("`rollgate {args:?}` printed no JSON array ({other:?})\n{out}"),
        }
    }

    /// `status --json`'s row for `host`/sshd, which must exist.
    #[track_caller]
    fn status_of(&self, host: &str) -> Value {
        let rows = self.json(&["status", "--json"]);
        rows.iter()
            .find(|r| r["host"] == host && r["service"] == "sshd")
            .cloned()
            .unwrap_or_else(|| panic!("no status row for {host}/sshd: {rows:#?}"))
    }
}

/// One run of the journal: its start record, host records and end record.
#[derive(Debug)]
struct Run {
    id: String,
    start: Value,
    steps: Vec<Value>,
    end: Option<Value>,
}

impl Run {
    /// Every record's action is `action`, the run ended ok, on `rev`.
    #[track_caller]
    fn assert_ok_as(&self, action: &str, rev: &str) {
        let end = self.end.as_ref().expect("the run ended");
        for r in std::iter::once(&self.start)
            .chain(&self.steps)
            .chain(std::iter::once(end))
        {
            assert_eq!(r["action"], action, "record of the run: {r:#}");
            assert_eq!(r["rev"], rev, "record of the run: {r:#}");
        }
        assert_eq!(end["result"], "ok", "{end:#}");
        for s in &self.steps {
            assert_eq!(s["result"], "ok", "{s:#}");
        }
    }

    fn planned(&self) -> Vec<String> {
        strings(&self.start["hosts"])
    }

    fn hosts(&self) -> Vec<String> {
        self.steps
            .iter()
            .map(|s| s["host"].as_str().unwrap_or("?").to_string())
            .collect()
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn show_files(files: &BTreeMap<String, Vec<u8>>) -> String {
    files
        .iter()
        .map(|(p, b)| format!("[{p}]\n{}", String::from_utf8_lossy(b)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A directory tree as it is on disk: every entry with its content and
/// mtime, so "untouched" means byte for byte and unwritten.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tree(BTreeMap<String, Entry>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File { bytes: Vec<u8>, mtime_ns: i128 },
    Link(PathBuf),
}

impl Tree {
    fn of(dir: &Path) -> Tree {
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

/// The `error: ...` line the CLI ended with; there must be one.
#[track_caller]
fn error_line(out: &Outcome) -> String {
    out.stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no `error:` line\n{out}"))
        .to_string()
}

/// `plan` output cut into per-host sections: `== HOST (group G)` and the
/// lines under it.
fn sections(stdout: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("== ") {
            let host = rest.split_whitespace().next().unwrap_or("").to_string();
            out.push((host, Vec::new()));
        } else {
            out.last_mut()
                .unwrap_or_else(|| panic!("plan output before any host header:\n{stdout}"))
                .1
                .push(line.to_string());
        }
    }
    out
}

/// The section of `host`, which must be there exactly once.
#[track_caller]
fn section_of(stdout: &str, host: &str) -> Vec<String> {
    let found: Vec<Vec<String>> = sections(stdout)
        .into_iter()
        .filter(|(h, _)| h == host)
        .map(|(_, lines)| lines)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one `== {host}` section in the plan:\n{stdout}"
    );
    found.into_iter().next().expect("one")
}

/// The changed lines of a unified diff: `-`/`+` lines that are not the
/// `---`/`+++` file headers.
fn changed_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            (l.starts_with('-') || l.starts_with('+'))
                && !l.starts_with("--- ")
                && !l.starts_with("+++ ")
        })
        .cloned()
        .collect()
}

// ---- rollback --to REV, and without it ----------------------------------------

#[test]
fn rollback_goes_back_one_revision_then_to_a_pinned_one_and_the_branch_stays() {
    let w = World::new();
    let (r1, r2, r3) = w.three_revisions();
    let farm_before: Vec<Tree> = FARM.iter().map(|h| w.tree(h)).collect();

    // No --to: the revision the canary had before its current one.
    let out = w.rg(&["rollback", "--group", "canary"]);
    out.assert_ok()
        .assert_contains(&format!("rolled back {}", short(&r2)));
    w.assert_on("server04", &r2, SSHD_96);
    assert_eq!(w.main_tip(), r3, "a rollback moved main\n{out}");

    // --to a commit id.
    let out = w.rg(&["rollback", "--to", &r1, "--group", "canary"]);
    out.assert_ok()
        .assert_contains(&format!("rolled back {}", short(&r1)));
    w.assert_on("server04", &r1, SSHD_96);
    assert_eq!(w.main_tip(), r3, "a rollback moved main\n{out}");

    // --to a tag (annotated, pushed like any tag: it passes untouched).
    w.git(&["tag", "-a", "-m", "known good", "known-good", &r2]);
    w.git_push(&["origin", "refs/tags/known-good"])
        .assert_ok()
        .assert_contains("passed untouched");
    let out = w.rg(&["rollback", "--to", "known-good", "--group", "canary"]);
    out.assert_ok();
    w.assert_on("server04", &r2, SSHD_96);
    assert_eq!(w.main_tip(), r3, "a rollback moved main\n{out}");

    // --to an expression.
    let out = w.rg(&["rollback", "--to", "main~2", "--group", "canary"]);
    out.assert_ok();
    w.assert_on("server04", &r1, SSHD_96);
    assert_eq!(w.main_tip(), r3, "a rollback moved main\n{out}");

    for (h, before) in FARM.iter().zip(&farm_before) {
        assert_eq!(&w.tree(h), before, "{h} (group farm) was touched");
    }
    // Four rollbacks after three deploys, each on the revision it named.
    let runs = w.runs();
    let got: Vec<(String, String)> = runs
        .iter()
        .map(|r| {
            (
                r.start["action"].as_str().unwrap_or("?").to_string(),
                r.start["rev"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("deploy", &r1),
        ("deploy", &r2),
        ("deploy", &r3),
        ("rollback", &r2),
        ("rollback", &r1),
        ("rollback", &r2),
        ("rollback", &r1),
    ]
    .iter()
    .map(|(a, r)| (a.to_string(), r.to_string()))
    .collect();
    assert_eq!(got, want, "the journal's runs (action, rev)");
    for run in &runs[3..] {
        assert_eq!(run.planned(), ["canary/server04"], "{run:#?}");
        assert_eq!(run.hosts(), ["server04"], "{run:#?}");
    }
}

#[test]
fn status_and_log_show_the_rolled_back_host_and_the_revision_it_left() {
    let w = World::new();
    let (r1, r2, r3) = w.three_revisions();

    let out = w.rg(&["rollback", "--to", &r1, "--group", "canary"]);
    out.assert_ok();
    w.assert_on("server04", &r1, SSHD_96);

    let row = w.status_of("server04");
    assert_eq!(row["action"], "rollback", "{row:#}");
    assert_eq!(row["result"], "rolled-back", "{row:#}");
    assert_eq!(row["rev"], r1.as_str(), "{row:#}");
    assert_eq!(row["left"], r3.as_str(), "{row:#}");
    assert_eq!(row["group"], "canary", "{row:#}");
    assert_eq!(row["version"], "9.6", "{row:#}");
    let rows = w.json(&["status", "--json"]);
    assert_eq!(
        rows.len(),
        1,
        "only the canary was ever deployed: {rows:#?}"
    );

    // The table says the same to a person.
    let table = w.rg(&["status"]);
    table.assert_ok();
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with("server04"))
        .unwrap_or_else(|| panic!("no server04 row\n{table}"));
    for word in [short(&r1), "rollback", "rolled-back", short(&r3)] {
        assert!(line.contains(word), "{word:?} not in {line:?}\n{table}");
    }

    let log = w.json(&["log", "--json"]);
    let got: Vec<(String, String, String)> = log
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap_or("?").to_string(),
                r["rev"].as_str().unwrap_or("?").to_string(),
                r["result"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("rollback", &r1),
        ("deploy", &r3),
        ("deploy", &r2),
        ("deploy", &r1),
    ]
    .iter()
    .map(|(a, r)| (a.to_string(), r.to_string(), "ok".to_string()))
    .collect();
    assert_eq!(got, want, "log --json, newest first: {log:#?}");
    let steps = log[0]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1, "{log:#?}");
    assert_eq!(steps[0]["host"], "server04");
    assert_eq!(steps[0]["action"], "rollback");
    assert_eq!(steps[0]["result"], "ok");
    w.last_run().assert_ok_as("rollback", &r1);
}

// ---- refused before any host is touched ---------------------------------------

#[test]
fn unknown_or_invalid_revisions_are_refused_naming_them_and_touch_nothing() {
    let w = World::new();
    let (_r1, _r2, r3) = w.three_revisions();
    let hosts_before = w.all_trees();
    let journal_before = w.journal_bytes();

    // A side branch whose rollgate.toml does not validate (a typo'd key),
    // and one whose sshd_config fails `sshd -t`. Neither deploys on push.
    let bad_toml = w.side_branch("broken-toml", |env| {
        env.replace("rollgate.toml", "default_group", "defualt_group");
    });
    let bad_sshd = w.side_branch("broken-sshd", |env| {
        env.replace(
            SSHD_96,
            "PermitRootLogin prohibit-password",
            "PermitRootLogn prohibit-password",
        );
    });
    assert_eq!(
        w.all_trees(),
        hosts_before,
        "a side-branch push touched a host"
    );
    assert_eq!(
        w.journal_bytes(),
        journal_before,
        "a side-branch push wrote the journal"
    );

    // Does not resolve: a usage error (2).
    let out = w.rg(&["rollback", "--to", "nope", "--group", "canary"]);
    out.assert_code(2);
    let err = error_line(&out);
    assert!(
        err.contains("nope"),
        "the error does not name `nope`\n{out}"
    );
    assert_eq!(
        w.all_trees(),
        hosts_before,
        "a refused rollback touched a host\n{out}"
    );
    assert_eq!(
        w.journal_bytes(),
        journal_before,
        "a refused rollback was journaled\n{out}"
    );

    // Its rollgate.toml does not validate: a config error (2).
    let out = w.rg(&["rollback", "--to", &bad_toml, "--group", "canary"]);
    out.assert_code(2).assert_contains("defualt_group");
    let err = error_line(&out);
    assert!(
        err.contains(short(&bad_toml)),
        "the error does not name {}\n{out}",
        short(&bad_toml)
    );
    assert_eq!(
        w.all_trees(),
        hosts_before,
        "a refused rollback touched a host\n{out}"
    );
    assert_eq!(
        w.journal_bytes(),
        journal_before,
        "a refused rollback was journaled\n{out}"
    );

    // Its sshd_config fails `sshd -t`: validation failed (1), with the
    // checker's own word.
    let out = w.rg(&["rollback", "--to", &bad_sshd, "--group", "canary"]);
    out.assert_code(1)
        .assert_dir_line("FAILED", "sshd 9.6", "files/sshd/9.6")
        .assert_contains("PermitRootLogn");
    let err = error_line(&out);
    assert!(
        err.contains(short(&bad_sshd)),
        "the error does not name {}\n{out}",
        short(&bad_sshd)
    );
    assert_eq!(
        w.all_trees(),
        hosts_before,
        "a refused rollback touched a host\n{out}"
    );
    assert_eq!(
        w.journal_bytes(),
        journal_before,
        "a refused rollback was journaled\n{out}"
    );

    assert_eq!(w.main_tip(), r3, "main moved");
    assert_eq!(
        w.json(&["log", "--json"]).len(),
        3,
        "only the three deploys are in the log"
    );
}

#[test]
fn rollback_without_to_lists_hosts_with_no_earlier_revision_and_leaves_them_alone() {
    let w = World::new();
    w.populate("server03");
    let r1 = w.start(STANDARD);
    // server01 and server02 get r1; server03 is never deployed.
    for h in ["server01", "server02"] {
        w.rg(&["deploy", "--rev", &r1, "--host", h]).assert_ok();
        w.assert_on(h, &r1, SSHD_92);
    }
    // r2 goes to server01 only: the one farm host with an earlier revision.
    w.env
        .replace(SSHD_92, "ClientAliveInterval 300", "ClientAliveInterval 90");
    let r2 = w.commit_and_push("r2: farm keepalive", &["-o", "host=server01"]);
    w.assert_on("server01", &r2, SSHD_92);
    let server02 = w.tree("server02");
    let server03 = w.tree("server03");
    let server04 = w.tree("server04");
    let runs_before = w.runs().len();

    let out = w.rg(&["rollback", "--group", "farm"]);
    out.assert_ok();
    w.assert_on("server01", &r1, SSHD_92);
    let listed = out.lines_with(&["left alone", "server02", "server03"]);
    assert!(
        !listed.is_empty(),
        "server02 and server03 are not listed as left alone\n{out}"
    );
    assert!(
        out.lines_with(&["left alone", "server01"]).is_empty(),
        "server01 was rolled back, not left alone\n{out}"
    );
    assert_eq!(w.tree("server02"), server02, "server02 was touched\n{out}");
    assert_eq!(w.tree("server03"), server03, "server03 was touched\n{out}");
    assert_eq!(
        w.tree("server04"),
        server04,
        "the canary was touched\n{out}"
    );
    let runs = w.runs();
    assert_eq!(runs.len(), runs_before + 1, "one rollback run\n{out}");
    let run = runs.last().expect("a run");
    run.assert_ok_as("rollback", &r1);
    assert_eq!(run.planned(), ["farm/server01"], "{run:#?}");
    assert_eq!(run.hosts(), ["server01"], "{run:#?}");

    // The canary has only ever had r1: it is listed, and nothing happens.
    let journal_before = w.journal_bytes();
    let out = w.rg(&["rollback", "--group", "canary"]);
    assert!(out.code.is_some(), "killed by a signal\n{out}");
    assert!(
        !out.lines_with(&["left alone", "server04"]).is_empty(),
        "server04 is not listed as left alone\n{out}"
    );
    assert_eq!(
        w.tree("server04"),
        server04,
        "the canary was touched\n{out}"
    );
    assert_eq!(
        w.journal_bytes(),
        journal_before,
        "a run was journaled\n{out}"
    );
}

// ---- plan, deploy --dry-run, rollback --dry-run --------------------------------

#[test]
fn plan_shows_per_host_what_runs_now_and_a_diff_against_the_revision() {
    let w = World::new();
    let (r1, _r2, r3) = w.three_revisions();
    let hosts_before = w.all_trees();
    let journal_before = w.journal_bytes();

    // The canary runs r3: r3 -> r1 is the known change, reversed.
    let out = w.rg(&["plan", "--rev", &r1, "--group", "canary"]);
    out.assert_ok();
    let canary = section_of(&out.stdout, "server04");
    let arrow = format!("{} (files/sshd/9.6) -> {}", short(&r3), short(&r1));
    assert!(
        canary.iter().any(|l| l.contains(&arrow)),
        "no `{arrow}` line for server04\n{out}"
    );
    assert!(
        canary
            .iter()
            .any(|l| l.starts_with("--- ") && l.ends_with("files/sshd/9.6/sshd_config")),
        "no `---` header naming the file\n{out}"
    );
    assert!(
        canary
            .iter()
            .any(|l| l.starts_with("+++ ") && l.ends_with("files/sshd/9.6/sshd_config")),
        "no `+++` header naming the file\n{out}"
    );
    assert_eq!(
        changed_lines(&canary),
        [
            "-ClientAliveInterval 120",
            "+ClientAliveInterval 300",
            "-MaxAuthTries 3"
        ],
        "the diff r3 -> r1\n{out}"
    );

    // Already there.
    let out = w.rg(&["plan", "--rev", &r3, "--group", "canary"]);
    out.assert_ok();
    let canary = section_of(&out.stdout, "server04");
    assert!(
        canary.iter().any(|l| l.contains("already at")),
        "server04 does not say it is already at {}\n{out}",
        short(&r3)
    );
    assert!(
        changed_lines(&canary).is_empty(),
        "a diff for a host already at the revision\n{out}"
    );

    // Never deployed: the whole directory is new, every line added.
    let out = w.rg(&["plan", "--rev", &r1, "--group", "farm"]);
    out.assert_ok();
    let file = String::from_utf8(w.file_at(&r1, SSHD_92)).expect("UTF-8");
    let want: Vec<String> = file.lines().map(|l| format!("+{l}")).collect();
    assert_eq!(
        sections(&out.stdout)
            .iter()
            .map(|(h, _)| h.as_str())
            .collect::<Vec<_>>(),
        FARM,
        "one section per farm host, in inventory order\n{out}"
    );
    for h in FARM {
        let lines = section_of(&out.stdout, h);
        assert_eq!(
            changed_lines(&lines),
            want,
            "{h}: not all of sshd_config as added\n{out}"
        );
        assert!(
            lines.iter().any(|l| l.contains("never deployed")),
            "{h} does not say it was never deployed\n{out}"
        );
    }

    // --host scopes the plan to that host.
    let out = w.rg(&["plan", "--rev", &r1, "--host", "server02"]);
    out.assert_ok();
    assert_eq!(
        sections(&out.stdout)
            .iter()
            .map(|(h, _)| h.as_str())
            .collect::<Vec<_>>(),
        ["server02"],
        "{out}"
    );

    assert_eq!(w.all_trees(), hosts_before, "plan touched a host");
    assert_eq!(w.journal_bytes(), journal_before, "plan wrote the journal");
}

#[test]
fn dry_runs_of_deploy_and_rollback_print_the_plan_and_touch_nothing() {
    let w = World::new();
    let (r1, _r2, r3) = w.three_revisions();
    let hosts_before = w.all_trees();
    let journal_before = w.journal_bytes();

    for scope in [["--group", "canary"], ["--group", "farm"]] {
        let plan = w.rg(&["plan", "--rev", &r1, scope[0], scope[1]]);
        plan.assert_ok();
        assert!(!plan.stdout.is_empty(), "plan printed nothing\n{plan}");

        let deploy = w.rg(&["deploy", "--rev", &r1, scope[0], scope[1], "--dry-run"]);
        deploy.assert_ok().assert_contains("dry run");
        assert_eq!(
            deploy.stdout, plan.stdout,
            "deploy --dry-run does not print plan's diff\n{deploy}\n{plan}"
        );

        let rollback = w.rg(&["rollback", "--to", &r1, scope[0], scope[1], "--dry-run"]);
        rollback.assert_ok().assert_contains("dry run");
        assert_eq!(
            rollback.stdout, plan.stdout,
            "rollback --dry-run does not print plan's diff\n{rollback}\n{plan}"
        );

        assert_eq!(
            w.all_trees(),
            hosts_before,
            "a dry run touched a host\n{rollback}"
        );
        assert_eq!(
            w.journal_bytes(),
            journal_before,
            "a dry run wrote the journal\n{rollback}"
        );
    }
    assert_eq!(w.main_tip(), r3);
}

// ---- the push form --------------------------------------------------------------

#[test]
fn force_push_of_an_old_revision_to_the_deploy_ref_rolls_the_group_back() {
    let w = World::new();
    let (r1, r2, r3) = w.three_revisions();
    let farm_before: Vec<Tree> = FARM.iter().map(|h| w.tree(h)).collect();

    // A new deploy ref, behind the branch: a rollback.
    let out = w.git_push(&["-f", "origin", &format!("{r1}:refs/deploy/canary")]);
    out.assert_ok();
    w.assert_on("server04", &r1, SSHD_96);
    assert_eq!(w.main_tip(), r3, "the push form moved main\n{out}");
    assert_eq!(
        w.env.remote_ref("refs/deploy/canary").as_deref(),
        Some(r1.as_str())
    );
    let run = w.last_run();
    run.assert_ok_as("rollback", &r1);
    assert_eq!(run.planned(), ["canary/server04"], "{run:#?}");
    let row = w.status_of("server04");
    assert_eq!(row["result"], "rolled-back", "{row:#}");
    assert_eq!(row["left"], r3.as_str(), "{row:#}");

    // Forward along the ref: a deploy.
    let out = w.git_push(&["origin", &format!("{r2}:refs/deploy/canary")]);
    out.assert_ok();
    w.assert_on("server04", &r2, SSHD_96);
    w.last_run().assert_ok_as("deploy", &r2);

    // Back along the existing ref (force): a rollback again.
    let out = w.git_push(&["-f", "origin", &format!("{r1}:refs/deploy/canary")]);
    out.assert_ok();
    w.assert_on("server04", &r1, SSHD_96);
    w.last_run().assert_ok_as("rollback", &r1);
    let log = w.json(&["log", "--json"]);
    assert_eq!(log[0]["action"], "rollback", "{log:#?}");
    assert_eq!(log[0]["rev"], r1.as_str(), "{log:#?}");

    assert_eq!(w.main_tip(), r3, "the push form moved main");
    for (h, before) in FARM.iter().zip(&farm_before) {
        assert_eq!(&w.tree(h), before, "{h} (group farm) was touched");
    }
}

// ---- the revision's own inventory ------------------------------------------------

#[test]
fn rollback_uses_the_inventory_of_the_revision_it_goes_back_to() {
    let w = World::new();
    let r1 = w.start(&[
        ("canary", &["server04"], "9.6"),
        ("farm", &["server01"], "9.2"),
    ]);
    // r2 adds server05 to the farm and changes the farm's sshd_config, and
    // goes to the farm.
    w.env.write(
        "rollgate.toml",
        &w.toml(&[
            ("canary", &["server04"], "9.6"),
            ("farm", &["server01", "server05"], "9.2"),
        ]),
    );
    w.env
        .replace(SSHD_92, "ClientAliveInterval 300", "ClientAliveInterval 60");
    let r2 = w.commit_and_push("r2: server05 joins the farm", &["-o", "group=farm"]);
    w.assert_on("server01", &r2, SSHD_92);
    w.assert_on("server05", &r2, SSHD_92);
    let server04 = w.tree("server04");
    let server05 = w.tree("server05");

    let out = w.rg(&["rollback", "--to", &r1, "--group", "farm"]);
    out.assert_ok();
    w.assert_on("server01", &r1, SSHD_92);
    assert_eq!(
        w.tree("server05"),
        server05,
        "server05 (not in r1's inventory) was touched\n{out}"
    );
    w.assert_on("server05", &r2, SSHD_92);
    assert_eq!(
        w.tree("server04"),
        server04,
        "the canary was touched\n{out}"
    );
    let run = w.last_run();
    run.assert_ok_as("rollback", &r1);
    assert_eq!(run.planned(), ["farm/server01"], "{run:#?}");
    assert_eq!(run.hosts(), ["server01"], "{run:#?}");
    assert_eq!(w.main_tip(), r2, "a rollback moved main\n{out}");

    // r1 does not know server05: refused, naming the hosts it does know.
    let hosts_before = w.all_trees();
    let journal_before = w.journal_bytes();
    let out = w.rg(&["rollback", "--to", &r1, "--host", "server05"]);
    out.assert_failed();
    let err = error_line(&out);
    for name in ["server05", "server04", "server01"] {
        assert!(err.contains(name), "the error does not name {name}\n{out}");
    }
    assert_eq!(
        w.all_trees(),
        hosts_before,
        "a refused rollback touched a host\n{out}"
    );
    assert_eq!(
        w.journal_bytes(),
        journal_before,
        "a refused rollback was journaled\n{out}"
    );
}
