//! The journal at scale and `status` as the truth, through real pushes: a
//! hook killed mid-deploy and then a good deploy; a big journal written by
//! an older rollgate (one file, no state) taken over by the next run, with
//! `status`, `log`, a deploy and a rollback still right.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::fleet::{Fleet, KilledPush, Spec, sh, timed_deploy};
use crate::support::{SSHD_92, SSHD_96, path_str};

/// Every journal file, oldest first: sealed segments, then the active one.
fn journal_files(f: &Fleet) -> Vec<PathBuf> {
    let dir = f.env.remote().join("rollgate/journal");
    let mut sealed: Vec<PathBuf> = fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    sealed.sort();
    sealed.push(f.journal_path());
    sealed
}

fn rollgate_json(f: &Fleet, args: &[&str]) -> Vec<Value> {
    let remote = f.env.remote();
    let mut all = args.to_vec();
    all.extend(["--repo", path_str(&remote)]);
    let out = f.env.rollgate(&all);
    out.assert_ok();
    match serde_json::from_str(&out.stdout) {
        Ok(Value::Array(items)) => items,
        other => panic!("`rollgate {args:?}` printed no JSON array ({other:?})\n{out}"),
    }
}

#[test]
fn after_a_killed_hook_a_later_deploy_of_the_same_hosts_reads_ok_not_interrupted() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    let KilledPush {
        a,
        b,
        tmp: killed_tmp,
    } = f.kill_hook_mid_deploy(&mut spec);
    for h in ["server01", "server02"] {
        let s = f.status_of(h);
        assert_eq!(
            (&s["result"], &s["rev"], &s["left"]),
            (
                &"interrupted".into(),
                &b.as_str().into(),
                &a.as_str().into()
            ),
            "{h}: {s:#}"
        );
    }

    // A good deploy of the farm: every host it records is ok again.
    spec.deploy = timed_deploy(None);
    f.write_spec(&spec);
    let c = f.env.commit("back to a normal deploy");
    let out = f.env.push(&["-o", "group=farm"]);
    f.assert_landed(&out, &c);
    for h in ["server01", "server02", "server03"] {
        let s = f.status_of(h);
        assert_eq!(
            (&s["result"], &s["rev"]),
            (&"ok".into(), &c.as_str().into()),
            "{h}: {s:#}"
        );
        f.assert_on(h, &c, SSHD_92);
    }
    let log = f.log();
    assert_eq!(
        log.iter()
            .map(|r| r["result"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["ok", "interrupted", "ok"]
    );
    // The killed hook's work tree is all it left; sweep it like the next
    // rollgate to use that TMPDIR would, so the test leaves nothing.
    let mut cmd = f.env.command(env!("CARGO_BIN_EXE_rollgate"));
    cmd.args(["validate", "--all", "--rev", "main", "--repo"])
        .arg(f.env.remote())
        .env("TMPDIR", &killed_tmp);
    f.env.run(cmd).assert_ok();
    f.assert_clean();
}

/// Runs of an older fleet, as rollgate writes them: start, batch, one host
/// record, end; `runs` of them over `hosts` hosts, appended to `out`.
fn old_history(out: &mut impl Write, runs: usize, hosts: usize) {
    for i in 0..runs {
        let run = format!("1600000000-{i}");
        let rev = format!("{:040x}", i + 1);
        let host = format!("old{:03}", i % hosts);
        let time = "2020-09-13T12:26:40Z";
        let common = format!(
            r#""run":"{run}","time":"{time}","action":"deploy","rev":"{rev}","who":"former-sre""#
        );
        writeln!(
            out,
            r#"{{{common},"event":"start","result":"started","hosts":["old/{host}"]}}"#
        )
        .unwrap();
        writeln!(
            out,
            r#"{{{common},"event":"batch","result":"started","hosts":["old/{host}"]}}"#
        )
        .unwrap();
        writeln!(
            out,
            r#"{{{common},"event":"host","group":"old","host":"{host}","service":"sshd","version":"9.2","result":"ok","duration_ms":3}}"#
        )
        .unwrap();
        writeln!(
            out,
            r#"{{{common},"event":"end","result":"ok","duration_ms":4}}"#
        )
        .unwrap();
    }
}

fn short(id: &str) -> &str {
    &id[..10]
}

fn last_line_of(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    text.lines().last().unwrap_or_default().to_string()
}

#[test]
fn a_big_journal_from_an_older_rollgate_is_taken_over_and_history_stays_right() {
    const RUNS: usize = 100_000;
    const HOSTS: usize = 50;
    let f = Fleet::new();
    let a = f.start(&Spec::standard());

    // Put 100,000 earlier runs in front of A's, in one file and with no
    // state beside it, the way an older rollgate left its journal.
    let rollgate = f.env.remote().join("rollgate");
    let recent = fs::read(f.journal_path()).unwrap();
    let mut file = std::io::BufWriter::new(fs::File::create(f.journal_path()).unwrap());
    old_history(&mut file, RUNS, HOSTS);
    file.write_all(&recent).unwrap();
    file.into_inner().unwrap().sync_all().unwrap();
    for entry in fs::read_dir(&rollgate).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != "journal.jsonl" && name != "lock" && name != "policy.toml" {
            let p = entry.path();
            if p.is_dir() {
                fs::remove_dir_all(p).unwrap();
            } else {
                fs::remove_file(p).unwrap();
            }
        }
    }
    let old = fs::read(f.journal_path()).unwrap();
    assert!(old.len() > 32 << 20, "the journal should be past a segment");

    // status: every host, from its newest record.
    let status = rollgate_json(&f, &["status", "--json"]);
    assert_eq!(status.len(), HOSTS + 1, "{:#?}", &status[..3]);
    f.assert_status("server04", "ok", &a);
    let newest_old = status.iter().find(|r| r["host"] == "old049").unwrap();
    assert_eq!(newest_old["rev"], format!("{:040x}", RUNS));
    // log -n: A's run, then the newest of the old ones.
    let log = rollgate_json(&f, &["log", "-n", "2", "--json"]);
    assert_eq!(log.len(), 2);
    assert_eq!(log[0]["rev"], a.as_str());
    assert_eq!(log[1]["rev"], format!("{:040x}", RUNS));
    assert_eq!(log[1]["steps"][0]["host"], "old049");

    // A deploy takes the journal over: sealed as the first segment, byte
    // for byte, and the active segment holds only the new run.
    let b = f.change("b");
    let out = f.env.push(&[]);
    f.assert_landed(&out, &b);
    f.assert_on("server04", &b, SSHD_96);
    assert_eq!(
        fs::read(rollgate.join("journal/000001.jsonl")).unwrap(),
        old
    );
    let runs = f.runs();
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].start["rev"], b.as_str());
    assert_eq!(f.status_of("server04")["rev"], b.as_str());

    // A rollback goes back to A, the revision before B in the whole history.
    let remote = f.env.remote();
    let out = f
        .env
        .rollgate(&["rollback", "--group", "canary", "--repo", path_str(&remote)]);
    out.assert_ok();
    f.assert_on("server04", &a, SSHD_96);
    let s4 = f.status_of("server04");
    assert_eq!(
        (&s4["result"], &s4["rev"], &s4["left"]),
        (
            &"rolled-back".into(),
            &a.as_str().into(),
            &b.as_str().into()
        ),
        "{s4:#}"
    );

    // log reaches all of history, newest first, across both segments.
    let out = f.env.rollgate(&["log", "--repo", path_str(&remote)]);
    out.assert_ok();
    let heads: Vec<&str> = out.stdout.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(heads.len(), RUNS + 3, "runs in the log");
    assert!(
        heads[0].contains(&format!("rollback {}", short(&a))),
        "{}",
        heads[0]
    );
    assert!(
        heads[1].contains(&format!("deploy {}", short(&b))),
        "{}",
        heads[1]
    );
    assert!(
        heads[2].contains(&format!("deploy {}", short(&a))),
        "{}",
        heads[2]
    );
    assert!(
        heads[RUNS + 2].contains("1600000000-0 "),
        "{}",
        heads[RUNS + 2]
    );
    assert!(last_line_of(&journal_files(&f)[0]).contains(&a));
    f.assert_clean();
}

#[test]
fn after_a_failed_restore_status_names_the_files_the_host_holds_and_says_so() {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    // A's deploy refuses a host with a `.blocked` marker: the restore to A
    // (which runs A's own commands) can then be made to fail.
    spec.deploy = sh("test ! -e {root}/{host}.blocked \
         && rsync -a --checksum --delete --mkpath {dir}/ {root}/{host}/etc/ssh/");
    spec.health = Some(sh(
        "if test -e {root}/{host}.{rev}.broken; then echo {host} answers 503 >&2; exit 1; fi",
    ));
    spec.service.push("health_wait = \"1s\"".into());
    let a = f.start(&spec);

    spec.deploy = timed_deploy(None);
    f.write_spec(&spec);
    let b = f.change("b");
    fs::write(f.hosts.join(format!("server04.{b}.broken")), "").unwrap();
    fs::write(f.hosts.join("server04.blocked"), "").unwrap();
    let out = f.env.push(&[]);
    f.assert_rejected(&out, Some(&a));
    f.assert_line(&out, &["[server04]", "restore", "FAILED"]);

    // The host holds B's files; status says so, and that putting A back failed.
    f.assert_on("server04", &b, SSHD_96);
    let s4 = f.status_of("server04");
    assert_eq!(
        (&s4["result"], &s4["rev"], &s4["target"]),
        (
            &"restore-failed".into(),
            &b.as_str().into(),
            &a.as_str().into()
        ),
        "{s4:#}"
    );
    let remote = f.env.remote();
    let out = f.env.rollgate(&["status", "--repo", path_str(&remote)]);
    out.assert_ok();
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("server04"))
        .unwrap_or_else(|| panic!("no server04 row\n{out}"));
    assert!(
        row.contains(short(&b)) && row.contains(&format!("restore-failed (to {})", short(&a))),
        "{row}"
    );

    // Once a later deploy gets through, the row is that deploy's.
    fs::remove_file(f.hosts.join("server04.blocked")).unwrap();
    let c = f.change("c");
    f.assert_landed(&f.env.push(&[]), &c);
    let s4 = f.status_of("server04");
    assert_eq!(
        (&s4["result"], &s4["rev"]),
        (&"ok".into(), &c.as_str().into())
    );
    assert!(s4.get("target").is_none(), "{s4:#}");
    f.assert_clean();
}
