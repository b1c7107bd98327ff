//! What git hands a pre-receive hook: ref update lines and push options.

use anyhow::{Context, Result, bail};
use git2::Oid;

/// One `<old> <new> <refname>` line; all-zero ids become `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefUpdate {
    pub(crate) old: Option<Oid>,
    pub(crate) new: Option<Oid>,
    pub(crate) refname: String,
}

pub(crate) fn parse_updates(stdin: &str) -> Result<Vec<RefUpdate>> {
    stdin
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            parse_line(line).with_context(|| format!("hook input line {}: {line:?}", i + 1))
        })
        .collect()
}

fn parse_line(line: &str) -> Result<RefUpdate> {
    let mut parts = line.split_whitespace();
    let (Some(old), Some(new), Some(refname), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("expected `<old> <new> <refname>`");
    };
    Ok(RefUpdate {
        old: parse_id(old)?,
        new: parse_id(new)?,
        refname: refname.to_string(),
    })
}

fn parse_id(hex: &str) -> Result<Option<Oid>> {
    let id = Oid::from_str(hex).with_context(|| format!("{hex:?} is not an object id"))?;
    Ok((!id.is_zero()).then_some(id))
}

/// `GIT_PUSH_OPTION_0..N-1`, as git sets them for the hook.
pub(crate) fn push_options_from_env() -> Result<Vec<String>> {
    let count: usize = match std::env::var("GIT_PUSH_OPTION_COUNT") {
        Ok(n) => n
            .parse()
            .with_context(|| format!("GIT_PUSH_OPTION_COUNT={n:?} is not a number"))?,
        Err(_) => 0,
    };
    (0..count)
        .map(|i| {
            std::env::var(format!("GIT_PUSH_OPTION_{i}"))
                .with_context(|| format!("GIT_PUSH_OPTION_{i} is not set"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn zero_ids_mean_create_and_delete() {
        let input = format!("{Z} {A} refs/heads/main\n{A} {Z} refs/heads/old\n");
        let updates = parse_updates(&input).unwrap();
        assert_eq!(updates[0].old, None);
        assert_eq!(updates[0].new, Some(Oid::from_str(A).unwrap()));
        assert_eq!(updates[1].new, None);
        assert_eq!(updates[1].refname, "refs/heads/old");
    }

    #[test]
    fn malformed_line_names_the_line() {
        let err = format!("{:#}", parse_updates(&format!("{A} {A}\n")).unwrap_err());
        assert!(err.contains("line 1"), "{err}");
        assert!(parse_updates(&format!("{A} nothex refs/heads/x")).is_err());
    }
}
