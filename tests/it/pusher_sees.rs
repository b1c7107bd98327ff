//! Exactly what a person reads at the worst moments, snapshotted so any
//! change to it shows up in review: the end of a failed rollout (where each
//! host stands) and `rollgate status` after it. Ids, times, dates and temp
//! paths are filtered; everything else is as printed.

use std::fs;

use crate::fleet::{Fleet, Spec, group, sh};
use crate::support::{path_str, snapshot_settings};

/// A farm of three, one at a time (so the host after the failed one never
/// starts), whose health fails on a host where the test drops a
/// `<host>.<rev>.broken` marker.
fn failing_farm() -> (Fleet, String, String) {
    let f = Fleet::new();
    let mut spec = Spec::standard();
    spec.health = Some(sh(
        "if test -e {root}/{host}.{rev}.broken; then echo {host} answers 503 >&2; exit 1; fi",
    ));
    spec.service.push("health_wait = \"1s\"".into());
    spec.groups[1] = group("farm", &["server01", "server02", "server03"], 1, "9.2");
    let a = f.start(&spec);
    f.env
        .git_push(&["origin", &format!("{a}:refs/deploy/farm")])
        .assert_ok();
    let b = f.change("b");
    fs::write(f.hosts.join(format!("server02.{b}.broken")), "").unwrap();
    (f, a, b)
}

fn settings(f: &Fleet) -> insta::Settings {
    let mut s = snapshot_settings();
    s.add_filter(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
        "[WHEN]",
    );
    s.add_filter(&regex_escape(path_str(f.env.root())), "[ROOT]");
    s
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '-' || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn a_failed_rollout_ends_with_where_each_host_stands() {
    let (f, a, _b) = failing_farm();
    let out = f.env.push(&["-o", "group=farm"]);
    f.assert_rejected(&out, Some(&a));
    // Only the summary: the lines before it stream in completion order.
    let summary: Vec<&str> = out
        .stderr
        .lines()
        .map(|l| l.strip_prefix("remote: ").unwrap_or(l).trim_end())
        .skip_while(|l| !l.contains(" stopped after "))
        .take_while(|l| !l.starts_with("error:"))
        .collect();
    assert!(!summary.is_empty(), "no summary\n{out}");
    settings(&f).bind(|| insta::assert_snapshot!("failed_rollout_summary", summary.join("\n")));
}

#[test]
fn status_after_a_failed_rollout_says_what_each_host_holds() {
    let (f, a, _b) = failing_farm();
    f.env.push(&["-o", "group=farm"]);
    let remote = f.env.remote();
    let out = f.env.rollgate(&["status", "--repo", path_str(&remote)]);
    out.assert_ok();
    for h in ["server01", "server02", "server03"] {
        f.assert_on(h, &a, crate::support::SSHD_92);
    }
    settings(&f).bind(|| insta::assert_snapshot!("status_after_failed_rollout", out.stdout));
}
