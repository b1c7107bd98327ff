//! `{placeholder}` templates used in `source` and in every command argv.
//!
//! Each argv element is parsed once, when the config is loaded, so that an
//! unknown placeholder is a config error at push time rather than a surprise
//! in the middle of a rollout.

use anyhow::{Result, bail};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// One string with placeholders, e.g. `{dir}/sshd_config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    raw: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `{name}` placeholders; `{{` and `}}` stand for literal braces.
    pub(crate) fn parse(raw: &str) -> Result<Template> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                                name.push(c)
                            }
                            Some(c) => bail!(
                                "`{raw}`: unexpected {c:?} in a placeholder (write `{{{{` for a literal brace)"
                            ),
                            None => {
                                bail!("`{raw}`: unclosed `{{` (write `{{{{` for a literal brace)")
                            }
                        }
                    }
                    if name.is_empty() {
                        bail!(
                            "`{raw}`: empty placeholder `{{}}` (write `{{{{}}}}` for literal braces)"
                        );
                    }
                    if !text.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut text)));
                    }
                    pieces.push(Piece::Var(name));
                }
                '}' => bail!("`{raw}`: unmatched `}}` (write `}}}}` for a literal brace)"),
                c => text.push(c),
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template {
            raw: raw.to_string(),
            pieces,
        })
    }

    pub(crate) fn raw(&self) -> &str {
        &self.raw
    }

    /// The placeholder names, in order of appearance.
    pub(crate) fn vars(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v.as_str()),
            Piece::Text(_) => None,
        })
    }

    pub(crate) fn uses(&self, var: &str) -> bool {
        self.vars().any(|v| v == var)
    }

    /// Substitutes every placeholder; `lookup` must know all of them, which
    /// config validation guarantees for the contexts it checked.
    pub(crate) fn render(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => match lookup(v) {
                    Some(value) => out.push_str(&value),
                    None => bail!("`{}`: no value for {{{v}}}", self.raw),
                },
            }
        }
        Ok(out)
    }

    /// Matches one path component against this template, which holds at most
    /// one placeholder (checked at load). Returns the placeholder's binding.
    pub(crate) fn match_component(&self, name: &str) -> Option<Option<(String, String)>> {
        let mut prefix = "";
        let mut suffix = "";
        let mut var = None;
        for piece in &self.pieces {
            match (piece, var) {
                (Piece::Text(t), None) => prefix = t,
                (Piece::Text(t), Some(_)) => suffix = t,
                (Piece::Var(v), _) => var = Some(v.as_str()),
            }
        }
        match var {
            None => (name == self.raw).then_some(None),
            Some(v) => {
                let value = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
                (!value.is_empty()).then(|| Some((v.to_string(), value.to_string())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, pairs: &[(&str, &str)]) -> Result<String> {
        let lookup = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        Template::parse(t)?.render(&lookup)
    }

    #[test]
    fn substitutes_each_placeholder() {
        assert_eq!(
            render(
                "{host}:/etc/{service}/",
                &[("host", "a"), ("service", "sshd")]
            )
            .unwrap(),
            "a:/etc/sshd/"
        );
    }

    #[test]
    fn double_braces_are_literal() {
        assert_eq!(render("{{}} {x}", &[("x", "1")]).unwrap(), "{} 1");
        assert!(Template::parse("{{x}}").unwrap().vars().next().is_none());
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        for bad in ["{", "{x", "}", "{}", "{a b}", "{a{b}"] {
            assert!(Template::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn missing_value_is_an_error() {
        let err = render("{nope}", &[]).unwrap_err().to_string();
        assert!(err.contains("{nope}"), "{err}");
    }

    #[test]
    fn matches_components_with_prefix_and_suffix() {
        let t = Template::parse("v{version}.d").unwrap();
        assert_eq!(
            t.match_component("v9.6.d"),
            Some(Some(("version".into(), "9.6".into())))
        );
        assert_eq!(t.match_component("9.6.d"), None);
        assert_eq!(t.match_component("v.d"), None);
        let lit = Template::parse("files").unwrap();
        assert_eq!(lit.match_component("files"), Some(None));
        assert_eq!(lit.match_component("other"), None);
    }
}
