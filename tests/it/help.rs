//! `--help` is the reference people reach for first, and for the push
//! interface the only one on the server: every command's help is
//! snapshotted, so a flag without a description, or a change in wording,
//! shows up in review. Each subcommand found in the top-level help is
//! visited, so a new one cannot be forgotten here.

use crate::support::Env;

/// The subcommands listed under `Commands:` in `help`'s text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

#[test]
fn every_command_and_flag_is_described() {
    let env = Env::new();
    let mut queue = vec![Vec::<String>::new()];
    let mut seen = 0;
    while let Some(path) = queue.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = env.rollgate(&args);
        out.assert_ok();
        let name = if path.is_empty() {
            "help".to_string()
        } else {
            format!("help_{}", path.join("_").replace('-', "_"))
        };
        // A flag line whose description is empty ends right after the flag.
        for line in out
            .stdout
            .lines()
            .filter(|l| l.trim_start().starts_with('-'))
        {
            let described = line.trim().split("  ").filter(|p| !p.is_empty()).count() > 1;
            assert!(
                described,
                "`rollgate {}`: undescribed flag: {line}",
                path.join(" ")
            );
        }
        insta::assert_snapshot!(name, out.stdout);
        seen += 1;
        for sub in subcommands(&out.stdout) {
            let mut next = path.clone();
            next.push(sub);
            queue.push(next);
        }
    }
    assert!(seen >= 10, "only {seen} help pages found");
}

#[test]
fn top_level_help_names_the_push_options_and_exit_codes() {
    let out = Env::new().rollgate(&["--help"]);
    out.assert_ok();
    for needle in [
        "-o group=NAME",
        "-o host=NAME",
        "-o all",
        "-o validate-only",
        "refs/deploy/NAME",
    ] {
        assert!(
            out.stdout.contains(needle),
            "missing {needle}\n{}",
            out.stdout
        );
    }
    for code in ["0  done", "1  validation", "2  usage or config error"] {
        assert!(out.stdout.contains(code), "missing {code}\n{}", out.stdout);
    }
}
