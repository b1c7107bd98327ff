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
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fleet::{Entry, Run, Tree, runs_of};
use crate::support::{Env, Outcome, SSHD_92, SSHD_96, argv, path_str, q};

/// A file r3 adds beside the canary's `sshd_config` (a rollback must
/// remove it from the host).
const BANNER: &str = "files/sshd/9.6/banner.txt";

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

// SAME_SECOND: `rsync -a` (the deploy command here, as in rollgate's own
// examples) skips a file whose size and mtime match, and compares mtimes
// to the second. rollgate writes every file fresh (mtime: now), so two
// deploys of same-size files within one second leave the first one's bytes
// on the host while both report ok. Every revision below therefore changes
// the size of the file it changes, so that no assertion depends on timing.

/// Commit ids as rollgate quotes them.
fn short(id: &str) -> &str {
    &id[..10]
}

/// One test's world: the `Env` and the directory every host lives under.
struct World {
    env: Env,
    hosts: PathBuf,
    /// Lines every `rollgate.toml` of this world has at the top, and in
    /// `[services.sshd]` (e.g. `lock_wait`, `health`).
    top: String,
    service: String,
}

impl World {
    fn new() -> World {
        World::with("", "")
    }

    fn with(top: &str, service: &str) -> World {
        let env = Env::new();
        let hosts = env.path("hosts");
        fs::create_dir(&hosts).expect("create the hosts dir");
        World {
            env,
            hosts,
            top: top.to_string(),
            service: service.to_string(),
        }
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
        let mut t = String::from("default_group = \"canary\"\n");
        t += &self.top;
        t += "\n";
        t += "[services.sshd]\nsource = \"files/sshd/{version}\"\n";
        t += &format!("check = {}\n", self.env.sshd_check());
        t += &format!("deploy = {}\n", argv(deploy));
        t += "timeout = \"60s\"\n";
        t += &self.service;
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
    /// (r3 also adds a `banner.txt` beside it), each deployed to the canary.
    /// Returns (r1, r2, r3).
    fn three_revisions(&self) -> (String, String, String) {
        for h in FARM {
            self.populate(h);
        }
        let r1 = self.start(STANDARD);
        // Each revision's file has its own size: see SAME_SECOND.
        self.env
            .replace(SSHD_96, "ClientAliveInterval 300", "ClientAliveInterval 60");
        let r2 = self.commit_and_push("r2: shorter client alive interval", &[]);
        self.assert_on("server04", &r2, SSHD_96);
        self.env.append(SSHD_96, "MaxAuthTries 3");
        self.env.write(BANNER, "Authorized use only.\n");
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
        let records: Vec<Value> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("journal line {} is not JSON ({e}): {line}", i + 1))
            })
            .collect();
        runs_of(&records)
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
}

fn show_files(files: &BTreeMap<String, Vec<u8>>) -> String {
    files
        .iter()
        .map(|(p, b)| format!("[{p}]\n{}", String::from_utf8_lossy(b)))
        .collect::<Vec<_>>()
        .join("\n")
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
    let row = w.status_of("server04");
    assert_eq!(row["result"], "rolled-back", "{row:#}");
    assert_eq!(row["rev"], r2.as_str(), "{row:#}");
    assert_eq!(row["left"], r3.as_str(), "{row:#}");

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
fn status_and_log_show_the_rollback_and_status_the_revision_it_left() {
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

    // Neither is on main: the server's policy refuses them before their
    // checks run (nothing of an unmerged revision runs).
    let out = w.rg(&["rollback", "--to", &bad_sshd, "--group", "canary"]);
    out.assert_code(1)
        .assert_contains("is not on the deploy branch main")
        .assert_lacks("PermitRootLogn");
    // The rest is about the gate itself: let unmerged revisions reach it.
    let policy = w.remote().join("rollgate/policy.toml");
    let text = fs::read_to_string(&policy).unwrap();
    fs::write(&policy, text.replace("unmerged = false", "unmerged = true")).unwrap();

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

    // The push form is as guarded: both are rejected, and the deploy ref
    // does not move (it names what canary runs).
    let canary_before = w.env.remote_ref("refs/deploy/canary");
    for bad in [&bad_toml, &bad_sshd] {
        let out = w.git_push(&["-f", "origin", &format!("{bad}:refs/deploy/canary")]);
        out.assert_code(1)
            .assert_contains("pre-receive hook declined")
            .assert_contains(short(bad));
        assert_eq!(
            w.env.remote_ref("refs/deploy/canary"),
            canary_before,
            "a rejected push moved the deploy ref\n{out}"
        );
        assert_eq!(
            w.all_trees(),
            hosts_before,
            "a rejected push touched a host\n{out}"
        );
        assert_eq!(
            w.journal_bytes(),
            journal_before,
            "a rejected push was journaled\n{out}"
        );
    }

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
            "-Authorized use only.",
            "-ClientAliveInterval 60",
            "+ClientAliveInterval 300",
            "-MaxAuthTries 3"
        ],
        "the diff r3 -> r1 (banner.txt goes, sshd_config changes back)\n{out}"
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

/// `plan --json` carries what the text shows, per host and service, for
/// scripts and review bots: the kind of change, both revisions, the diff.
#[test]
fn plan_json_gives_the_same_facts_as_data() {
    let w = World::new();
    let (r1, _r2, r3) = w.three_revisions();
    let out = w.rg(&["plan", "--rev", &r1, "--all", "--json"]);
    out.assert_ok();
    let hosts: Vec<serde_json::Value> =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON: {e}\n{out}"));
    let host = |name: &str| {
        hosts
            .iter()
            .find(|h| h["host"] == name)
            .unwrap_or_else(|| panic!("no {name} in\n{out}"))
    };
    let canary = &host("server04")["services"][0];
    assert_eq!(canary["change"], "changed", "{out}");
    assert_eq!(canary["now"], r3.as_str());
    assert_eq!(canary["rev"], r1.as_str());
    assert!(
        canary["diff"]
            .as_str()
            .unwrap_or("")
            .contains("+ClientAliveInterval 300"),
        "{out}"
    );
    for h in FARM {
        assert_eq!(host(h)["group"], "farm");
        assert_eq!(host(h)["services"][0]["change"], "new", "{out}");
        assert!(host(h)["services"][0]["now"].is_null());
    }
    let out = w.rg(&["plan", "--rev", &r3, "--group", "canary", "--json"]);
    let hosts: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(hosts[0]["services"][0]["change"], "current", "{out}");
    assert_eq!(hosts[0]["services"][0]["diff"], "");
}

#[test]
fn dry_runs_of_deploy_and_rollback_print_the_plan_and_touch_nothing() {
    let w = World::new();
    let (r1, r2, r3) = w.three_revisions();
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

    // Without --to: the plan of going back to the previous revision, r2.
    let plan = w.rg(&["plan", "--rev", &r2, "--group", "canary"]);
    plan.assert_ok();
    let rollback = w.rg(&["rollback", "--group", "canary", "--dry-run"]);
    rollback.assert_ok().assert_contains("dry run");
    assert_eq!(
        rollback.stdout, plan.stdout,
        "rollback --dry-run (no --to) does not print the plan of going back to r2\n{rollback}\n{plan}"
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

#[test]
fn push_form_going_back_is_a_rollback_even_when_the_deploy_ref_is_older_still() {
    let w = World::new();
    let (r1, _r2, r3) = w.three_revisions();
    // An earlier incident: the canary was rolled back to r1 over git, so
    // refs/deploy/canary stays at r1.
    w.git_push(&["-f", "origin", &format!("{r1}:refs/deploy/canary")])
        .assert_ok();
    w.last_run().assert_ok_as("rollback", &r1);
    // The fix, r4, is pushed to main and deployed to the canary.
    w.env.append(SSHD_96, "LoginGraceTime 30");
    let r4 = w.commit_and_push("r4: the fix", &[]);
    w.assert_on("server04", &r4, SSHD_96);

    // r4 turns out bad: the canary goes back to r3 over git, as the docs
    // say (`git push -f origin REV:refs/deploy/NAME`). r3 is behind main and
    // behind what the canary runs; the deploy ref (r1) is older still.
    let out = w.git_push(&["-f", "origin", &format!("{r3}:refs/deploy/canary")]);
    out.assert_ok();
    w.assert_on("server04", &r3, SSHD_96);
    assert_eq!(w.main_tip(), r4, "the push form moved main\n{out}");
    // Issue 4: the push form "does the same as rollback --to REV --group
    // NAME", and status shows rolled-back hosts as such, with what they left.
    let run = w.last_run();
    assert_eq!(
        run.start["action"], "rollback",
        "server04 went from r4 back to r3 (an ancestor of main and of what it ran), \
         yet the run is journaled as {}: the stale deploy ref (r1) was compared instead\n{out}",
        run.start["action"]
    );
    run.assert_ok_as("rollback", &r3);
    let row = w.status_of("server04");
    assert_eq!(row["result"], "rolled-back", "{row:#}");
    assert_eq!(row["left"], r4.as_str(), "{row:#}");
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
            ("edge", &["server06"], "9.2"),
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

    // Nor does it know group edge (added by r2): refused, naming its groups.
    let out = w.rg(&["rollback", "--to", &r1, "--group", "edge"]);
    out.assert_failed();
    let err = error_line(&out);
    for name in ["edge", "canary", "farm"] {
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

#[test]
fn rollback_deploys_the_versions_and_commands_of_the_revision() {
    let w = World::new();
    let r1 = w.start(STANDARD);
    // r2 moves the canary to sshd 9.2, and its deploy command also records
    // the revision on the host: a rollback to r1 must run r1's plain rsync.
    let marking: Vec<&str> = vec![
        "sh",
        "-c",
        "rsync -a --delete --mkpath {dir}/ {root}/{host}/etc/ssh/ && echo {rev} >> {root}/{host}.revs",
    ];
    w.env.write(
        "rollgate.toml",
        &w.toml_deploying(
            &[
                ("canary", &["server04"], "9.2"),
                ("farm", &["server01", "server02", "server03"], "9.2"),
            ],
            &marking,
        ),
    );
    let r2 = w.commit_and_push("r2: the canary goes to 9.2", &[]);
    w.assert_on("server04", &r2, SSHD_92);
    let revs = w.hosts.join("server04.revs");
    assert_eq!(
        fs::read_to_string(&revs).expect("r2's deploy command ran"),
        format!("{r2}\n")
    );

    // The plan diffs the 9.2 directory the canary runs against r1's 9.6.
    let out = w.rg(&["plan", "--rev", &r1, "--group", "canary"]);
    out.assert_ok();
    let canary = section_of(&out.stdout, "server04");
    let arrow = format!(
        "{} (files/sshd/9.2) -> {} (files/sshd/9.6)",
        short(&r2),
        short(&r1)
    );
    assert!(
        canary.iter().any(|l| l.contains(&arrow)),
        "no `{arrow}` line\n{out}"
    );
    let old = String::from_utf8(w.file_at(&r2, SSHD_92)).expect("UTF-8");
    let new = String::from_utf8(w.file_at(&r1, SSHD_96)).expect("UTF-8");
    let only_in = |a: &str, b: &str, sign: char| -> Vec<String> {
        a.lines()
            .filter(|l| !b.lines().any(|m| m == *l))
            .map(|l| format!("{sign}{l}"))
            .collect()
    };
    let (minus, plus): (Vec<String>, Vec<String>) = changed_lines(&canary)
        .into_iter()
        .partition(|l| l.starts_with('-'));
    assert_eq!(minus, only_in(&old, &new, '-'), "removed lines\n{out}");
    assert_eq!(plus, only_in(&new, &old, '+'), "added lines\n{out}");

    let out = w.rg(&["rollback", "--to", &r1, "--group", "canary"]);
    out.assert_ok();
    w.assert_on("server04", &r1, SSHD_96);
    assert_eq!(
        fs::read_to_string(&revs).expect("the marker is still there"),
        format!("{r2}\n"),
        "the rollback ran r2's deploy command, not r1's\n{out}"
    );
    w.last_run().assert_ok_as("rollback", &r1);
    assert_eq!(w.main_tip(), r2, "a rollback moved main\n{out}");
}

#[test]
fn log_names_the_revision_each_rolled_back_host_left() {
    let w = World::new();
    let (r1, _r2, r3) = w.three_revisions();
    w.rg(&["rollback", "--to", &r1, "--group", "canary"])
        .assert_ok();

    // Issue 4: "`status` and `log` show rolled-back hosts as such, with the
    // revision they left". The log's newest run is the rollback; what
    // server04 left (r3) must be in it.
    let log = w.json(&["log", "--json"]);
    assert_eq!(log[0]["action"], "rollback", "{log:#?}");
    let run = serde_json::to_string(&log[0]).expect("JSON");
    assert!(
        run.contains(&r3),
        "log --json's rollback run does not name {r3}, the revision server04 left:\n{:#}",
        log[0]
    );

    let text = w.rg(&["log"]);
    text.assert_ok();
    // The newest run: its header line and the indented step lines under it.
    let first: Vec<&str> = text
        .stdout
        .lines()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with(' '))
        .map(|(_, l)| l)
        .collect();
    assert!(
        first.iter().any(|l| l.contains("rollback")),
        "the newest run is not the rollback\n{text}"
    );
    assert!(
        first.iter().any(|l| l.contains(short(&r3))),
        "`rollgate log` does not say server04 left {}:\n{}\n{text}",
        short(&r3),
        first.join("\n")
    );
}

// ---- as guarded as a deploy: restore on failure, the lock ------------------------

/// A health check that fails for revision `{rev}` on a host that has a
/// `{root}/{host}.{rev}.broken` marker, saying why; retried for 1s.
const HEALTH: &str = r#"health = ["sh", "-c", "if test -e {root}/{host}.{rev}.broken; then echo {host} answers 503 >&2; exit 1; fi"]
health_wait = "1s"
"#;

#[test]
fn a_rollback_that_fails_health_puts_the_host_back_where_it_was() {
    let w = World::with("", HEALTH);
    let (r1, _r2, r3) = w.three_revisions();
    fs::write(w.hosts.join(format!("server04.{r1}.broken")), "").expect("write the marker");

    let out = w.rg(&["rollback", "--to", &r1, "--group", "canary"]);
    out.assert_code(1)
        .assert_contains("server04 answers 503")
        .assert_contains(&format!("restored sshd to {}", short(&r3)));
    w.assert_on("server04", &r3, SSHD_96);
    assert_eq!(w.main_tip(), r3, "a rollback moved main\n{out}");

    let run = w.last_run();
    assert_eq!(run.start["action"], "rollback", "{run:#?}");
    assert_eq!(run.start["rev"], r1.as_str(), "{run:#?}");
    let steps: Vec<(String, String, String)> = run
        .steps
        .iter()
        .map(|s| {
            (
                s["action"].as_str().unwrap_or("?").to_string(),
                s["rev"].as_str().unwrap_or("?").to_string(),
                s["result"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("rollback".to_string(), r1.clone(), "failed".to_string()),
            ("restore".to_string(), r3.clone(), "ok".to_string()),
        ],
        "{run:#?}"
    );
    assert_eq!(
        run.end.as_ref().expect("the run ended")["result"],
        "failed",
        "{run:#?}"
    );
    let row = w.status_of("server04");
    assert_eq!(row["result"], "restored", "{row:#}");
    assert_eq!(row["rev"], r3.as_str(), "{row:#}");
}

/// A process group the test started (a lock holder), killed on drop so a
/// failing test leaves nothing running.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

#[test]
fn a_rollback_waits_for_the_deploy_lock_and_gives_up_naming_the_holder() {
    let w = World::with("lock_wait = \"1s\"\n", "");
    let (r1, _r2, r3) = w.three_revisions();
    let lock = w.remote().join("rollgate/lock");
    assert!(lock.is_file(), "no deploy lock file after three deploys");

    // Another deploy, as far as the OS lock goes: flock(1) holds it and
    // writes who it is, as rollgate does.
    let mut cmd = w.env.command("flock");
    cmd.arg(&lock)
        .args([
            "sh",
            "-c",
            "echo 'ops: deploy of main, pid 1' > \"$0\"; exec sleep 300",
        ])
        .arg(&lock)
        .process_group(0);
    let holder = Holder(cmd.spawn().expect("start flock"));
    let started = std::time::Instant::now();
    loop {
        let text = fs::read_to_string(&lock).unwrap_or_default();
        if text.contains("ops: deploy of main") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "flock never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let hosts_before = w.all_trees();
    let journal_before = w.journal_bytes();

    let out = w.rg(&["rollback", "--to", &r1, "--group", "canary"]);
    out.assert_code(1)
        .assert_contains("another deploy holds the lock")
        .assert_contains("ops: deploy of main, pid 1");
    assert_eq!(
        w.all_trees(),
        hosts_before,
        "a rollback ran without the lock\n{out}"
    );
    assert_eq!(
        w.journal_bytes(),
        journal_before,
        "a rollback without the lock was journaled\n{out}"
    );

    drop(holder);
    let out = w.rg(&["rollback", "--to", &r1, "--group", "canary"]);
    out.assert_ok();
    w.assert_on("server04", &r1, SSHD_96);
    assert_eq!(w.main_tip(), r3);
}
