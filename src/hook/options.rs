//! Push options (`git push -o ...`): what a push asks for beyond its refs.
//! Parsed only for a ref rollgate acts on, so options meant for other
//! tools (`-o ci.skip`) do not reject a push rollgate passes untouched.

use anyhow::{Result, bail};

use crate::error::{self, UserError};
use crate::rollout::live;
use crate::rollout::scope::Scope;

/// What a push asked for with `-o`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushRequest {
    pub(crate) scope: Scope,
    pub(crate) validate_only: bool,
    /// As given, for the journal.
    pub(crate) options: Vec<String>,
    /// `-o break-glass=REASON`: deploy past failed checks (see `policy`).
    pub(crate) break_glass: Option<String>,
}

pub(crate) const KNOWN_OPTIONS: &str =
    "group=NAME, host=NAME, all, validate-only, live-edit, break-glass=REASON";
const OPTION_NAMES: &[&str] = &[
    "group",
    "host",
    "all",
    "validate-only",
    "live-edit",
    "break-glass",
];

pub(crate) fn parse_push_options(options: &[String]) -> Result<PushRequest> {
    let mut scope: Option<(Scope, &str)> = None;
    let mut validate_only = false;
    let mut break_glass = None;
    for opt in options {
        let parsed = match opt.split_once('=') {
            Some(("group", name)) if !name.is_empty() => Scope::Group(name.to_string()),
            Some(("host", name)) if !name.is_empty() => Scope::Host(name.to_string()),
            None if opt == "all" => Scope::All,
            None if opt == "validate-only" => {
                validate_only = true;
                continue;
            }
            // Read by `live` from the journaled options.
            None if opt == live::ALLOW_OPTION => continue,
            // An empty reason is refused with the pusher's name (policy).
            Some(("break-glass", reason)) => {
                break_glass = Some(reason.to_string());
                continue;
            }
            None if opt == "break-glass" => {
                break_glass = Some(String::new());
                continue;
            }
            _ => {
                let name = opt.split_once('=').map_or(opt.as_str(), |(n, _)| n);
                return Err(UserError::usage(format!(
                    "unknown push option {opt:?} (rollgate knows: {KNOWN_OPTIONS})"
                ))
                .hint_opt(error::suggest(name, OPTION_NAMES.iter().copied()))
                .into());
            }
        };
        if let Some((_, earlier)) = &scope {
            bail!(
                "push options {earlier:?} and {opt:?} conflict: give one of group=, host= or all"
            );
        }
        scope = Some((parsed, opt));
    }
    Ok(PushRequest {
        scope: scope.map(|(s, _)| s).unwrap_or(Scope::Default),
        validate_only,
        options: options.to_vec(),
        break_glass,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(items: &[&str]) -> Result<PushRequest> {
        parse_push_options(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn no_option_means_default_scope() {
        assert_eq!(
            opts(&[]).unwrap(),
            PushRequest {
                scope: Scope::Default,
                validate_only: false,
                options: vec![],
                break_glass: None,
            }
        );
    }

    #[test]
    fn scope_options_parse() {
        assert_eq!(
            opts(&["group=farm"]).unwrap().scope,
            Scope::Group("farm".into())
        );
        assert_eq!(opts(&["host=s1"]).unwrap().scope, Scope::Host("s1".into()));
        assert_eq!(opts(&["all"]).unwrap().scope, Scope::All);
        assert!(opts(&["validate-only"]).unwrap().validate_only);
        assert_eq!(
            opts(&["break-glass=INC-1: sshd down"]).unwrap().break_glass,
            Some("INC-1: sshd down".into())
        );
        assert_eq!(opts(&["break-glass"]).unwrap().break_glass, Some("".into()));
    }

    #[test]
    fn unknown_and_conflicting_options_are_refused() {
        let e = opts(&["grup=farm"]).unwrap_err().to_string();
        assert!(e.contains("grup=farm") && e.contains(KNOWN_OPTIONS), "{e}");
        assert!(opts(&["group="]).is_err());
        assert!(
            opts(&["group=a", "all"])
                .unwrap_err()
                .to_string()
                .contains("conflict")
        );
    }
}
