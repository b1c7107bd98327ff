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

/// The completion scripts must at least be valid shell for the shells that
/// can check it here, and name the commands.
#[test]
fn completions_are_valid_scripts() {
    let env = Env::new();
    let out = env.rollgate(&["completions", "bash"]);
    out.assert_ok();
    assert!(out.stdout.contains("rollback"), "{}", out.stdout);
    let script = env.root().join("rollgate.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    let mut check = env.command("bash");
    check.arg("-n").arg(&script);
    env.run(check).assert_ok();
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = env.rollgate(&["completions", shell]);
        out.assert_ok();
        assert!(out.stdout.contains("deploy"), "{shell}\n{}", out.stdout);
    }
    env.rollgate(&["completions", "tcsh"])
        .assert_code(2)
        .assert_contains("tcsh");
}

/// `man` prints rollgate(1); `man --dir` writes a page per command, which
/// is what a package installs.
#[test]
fn man_pages_cover_every_command() {
    let env = Env::new();
    let out = env.rollgate(&["man"]);
    out.assert_ok();
    assert!(out.stdout.contains(".TH rollgate 1"), "{}", out.stdout);
    let dir = env.root().join("man");
    env.rollgate(&["man", "--dir", dir.to_str().unwrap()])
        .assert_ok();
    let help = env.rollgate(&["--help"]);
    for sub in subcommands(&help.stdout) {
        let page = dir.join(format!("rollgate-{sub}.1"));
        assert!(page.is_file(), "no {}", page.display());
    }
    assert!(dir.join("rollgate.1").is_file());
}
