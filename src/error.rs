//! Errors in the user's words. Every error has a kind, which picks the exit
//! code, and may carry a hint: what to do about it, printed on a line of its
//! own (`hint: ...`), the way jj does.
//!
//! Errors stay `anyhow::Error` on their way up; the kind and hint travel as
//! a [`UserError`] somewhere in the chain, and `report`
//! reads them back when the error reaches `main`.

use std::fmt;

/// What went wrong, as far as the exit code is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The command line, a push option, a ref, a revision name: exit 2.
    Usage,
    /// `rollgate.toml` or `rollgate/policy.toml`: exit 2.
    Config,
    /// Validation or a deploy failed; its reasons have been shown: exit 1.
    Failed,
    /// The system let us down (I/O, git): exit 1, the push is rejected.
    Internal,
}

impl Kind {
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Kind::Usage | Kind::Config => 2,
            Kind::Failed | Kind::Internal => 1,
        }
    }
}

/// An error message with its kind and an optional hint.
#[derive(Debug)]
pub(crate) struct UserError {
    kind: Kind,
    message: String,
    hint: Option<String>,
}

impl UserError {
    pub(crate) fn usage(message: impl Into<String>) -> UserError {
        UserError {
            kind: Kind::Usage,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn config(message: impl Into<String>) -> UserError {
        UserError {
            kind: Kind::Config,
            message: message.into(),
            hint: None,
        }
    }

    /// Validation or a deploy failed, or a push or deploy is refused (exit
    /// 1). What failed has usually been shown as it happened; this sums it
    /// up.
    pub(crate) fn failed(message: impl Into<String>) -> UserError {
        UserError {
            kind: Kind::Failed,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> UserError {
        self.hint = Some(hint.into());
        self
    }

    /// The hint if there is one: `hint_opt(suggest(..))`.
    pub(crate) fn hint_opt(mut self, hint: Option<String>) -> UserError {
        self.hint = hint;
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// The kind of `err`: the innermost classified cause decides (a config
/// error wrapped in "refs/heads/main rejected" is still a config error);
/// an unclassified error from the system is internal, any other is usage.
pub(crate) fn kind(err: &anyhow::Error) -> Kind {
    let mut found = None;
    for cause in err.chain() {
        if let Some(u) = cause.downcast_ref::<UserError>() {
            found = Some(u.kind);
        }
    }
    // A `UserError` given as `.context(..)` is not a link of the chain that
    // can be downcast; anyhow finds it this way.
    let found = found.or_else(|| err.downcast_ref::<UserError>().map(|u| u.kind));
    if let Some(k) = found {
        return k;
    }
    let root = err.root_cause();
    if root.is::<std::io::Error>() || root.is::<git2::Error>() {
        Kind::Internal
    } else {
        Kind::Usage
    }
}

/// The hints found along the chain, outermost first.
pub(crate) fn hints(err: &anyhow::Error) -> Vec<String> {
    let mut hints: Vec<String> = err
        .chain()
        .filter_map(|c| c.downcast_ref::<UserError>())
        .filter_map(|u| u.hint.clone())
        .collect();
    if let Some(h) = err.downcast_ref::<UserError>().and_then(|u| u.hint.clone())
        && !hints.contains(&h)
    {
        hints.push(h);
    }
    hints
}

/// One cause's text for people. libgit2 appends `; class=Odb (9);
/// code=NotFound (-3)` to its messages: that is for its developers.
pub(crate) fn describe(cause: &(dyn std::error::Error + 'static)) -> String {
    match cause.downcast_ref::<git2::Error>() {
        Some(g) => g.message().to_string(),
        None => cause.to_string(),
    }
}

/// The hint for git's "not owned by current user" refusal (git's
/// safe.directory check), which otherwise reads like a bug.
pub(crate) fn ownership_hint(err: &git2::Error) -> Option<String> {
    (err.code() == git2::ErrorCode::Owner).then(|| {
        "run rollgate as the user who owns the repository, e.g. `runuser -u git -- rollgate ...`"
            .to_string()
    })
}

/// "did you mean" for a near miss among `choices`.
pub(crate) fn suggest<'a>(
    name: &str,
    choices: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let best = choices
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d > 0 && *d <= (c.len().max(name.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)?;
    Some(format!("did you mean `{}`?", best.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_innermost_kind_picks_the_exit_code() {
        let err =
            anyhow::Error::new(UserError::config("bad key")).context("refs/heads/main rejected");
        assert_eq!(kind(&err), Kind::Config);
        assert_eq!(kind(&err).exit_code(), 2);
        let failed = anyhow::Error::new(UserError::failed("validation failed")).context("rejected");
        assert_eq!(kind(&failed).exit_code(), 1);
    }

    #[test]
    fn a_kind_given_as_context_is_found() {
        let parse: anyhow::Result<toml::Table> = toml::from_str("x = ").map_err(Into::into);
        let err = parse
            .context(UserError::config("invalid rollgate.toml").hint("fix it"))
            .context("refs/heads/main rejected")
            .unwrap_err();
        assert_eq!(kind(&err), Kind::Config);
        assert_eq!(hints(&err), ["fix it"]);
    }

    #[test]
    fn system_errors_are_internal_and_others_usage() {
        let io: anyhow::Result<()> = Err(std::io::Error::other("disk full").into());
        let io = io.context("cannot write /x/journal").unwrap_err();
        assert_eq!(kind(&io), Kind::Internal);
        assert_eq!(kind(&anyhow::anyhow!("no such group")), Kind::Usage);
    }

    #[test]
    fn hints_are_collected_from_the_chain() {
        let err = anyhow::Error::new(UserError::usage("no group canry").hint("did you mean"))
            .context("refs/heads/main rejected");
        assert_eq!(hints(&err), ["did you mean"]);
    }

    #[test]
    fn near_misses_are_suggested_and_far_ones_not() {
        let groups = ["canary", "farm", "edge"];
        assert_eq!(
            suggest("canry", groups).as_deref(),
            Some("did you mean `canary`?")
        );
        assert_eq!(
            suggest("frm", groups).as_deref(),
            Some("did you mean `farm`?")
        );
        assert_eq!(suggest("database", groups), None);
        assert_eq!(suggest("canary", groups), None);
    }

    #[test]
    fn libgit2_codes_stay_out_of_user_text() {
        let e = git2::Error::new(
            git2::ErrorCode::NotFound,
            git2::ErrorClass::Odb,
            "object not found",
        );
        assert!(e.to_string().contains("class="), "{e}");
        assert_eq!(describe(&e), "object not found");
    }
}
