//! How a group's hosts are taken to a new revision: the strategy, the wave
//! sizes, the bake between waves and the failure budget (`rollout`,
//! `waves` / `batch`, `bake`, `max_failures` of a `[groups.NAME]` table).

use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

/// The order of a group's steps (see PRODUCT.md, "Rollout strategies").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Strategy {
    /// Per host deploy, verify, reload, health, in waves.
    #[default]
    HostByHost,
    /// Deploy and verify every host first (in waves); only then reload and
    /// health (in waves). A failure while staging activates nothing.
    Staged,
    /// Staged, then every host reloaded at the same moment.
    Together,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::HostByHost => "host-by-host",
            Strategy::Staged => "staged",
            Strategy::Together => "together",
        })
    }
}

/// A number of hosts, or a share of the group's hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Size {
    Hosts(usize),
    Percent(u32),
}

/// `2` or `"20%"` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawSize {
    Number(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RolloutSpec {
    pub(crate) strategy: Strategy,
    /// Batch sizes in order; the last one repeats. Never empty.
    pub(crate) waves: Vec<Size>,
    /// After each wave, health keeps running this long on every host done.
    pub(crate) bake: Option<Duration>,
    /// How many hosts may fail (each put back) before the run stops.
    pub(crate) max_failures: Size,
}

impl RolloutSpec {
    /// From a group's raw keys; errors name the key (the caller adds the
    /// group).
    pub(crate) fn from_raw(
        strategy: Strategy,
        batch: Option<usize>,
        waves: Option<Vec<RawSize>>,
        bake: Option<Duration>,
        max_failures: Option<RawSize>,
    ) -> Result<RolloutSpec> {
        let waves = match (batch, waves) {
            (Some(_), Some(_)) => bail!(
                "`batch` and `waves` are both given; `batch = N` means `waves = [N]`: keep one"
            ),
            (Some(0), None) => bail!("batch: must be at least 1"),
            (Some(n), None) => vec![Size::Hosts(n)],
            (None, None) => vec![Size::Hosts(1)],
            (None, Some(list)) => {
                if list.is_empty() {
                    bail!("waves: give at least one batch size, e.g. `waves = [1, \"100%\"]`");
                }
                list.iter()
                    .enumerate()
                    .map(|(i, raw)| {
                        let size = parse_size(raw).map_err(|e| {
                            anyhow::anyhow!("waves[{i}]: {e} (e.g. `waves = [1, 2, 5, \"20%\"]`)")
                        })?;
                        if size == Size::Hosts(0) || size == Size::Percent(0) {
                            bail!("waves[{i}]: a wave of no hosts would never end; use 1 or more");
                        }
                        Ok(size)
                    })
                    .collect::<Result<_>>()?
            }
        };
        if bake.is_some_and(|b| b.is_zero()) {
            bail!("bake: must be more than 0s (leave it out for no bake)");
        }
        let max_failures = match max_failures {
            None => Size::Hosts(0),
            Some(raw) => parse_size(&raw).map_err(|e| {
                anyhow::anyhow!("max_failures: {e} (e.g. `max_failures = 2` or `\"10%\"`)")
            })?,
        };
        Ok(RolloutSpec {
            strategy,
            waves,
            bake,
            max_failures,
        })
    }

    /// The batch sizes for `hosts` hosts, in order, adding up to `hosts`.
    pub(crate) fn batches(&self, hosts: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut left = hosts;
        let mut i = 0;
        while left > 0 {
            let size = self.waves[i.min(self.waves.len() - 1)];
            let n = match size {
                Size::Hosts(n) => n,
                Size::Percent(p) => (hosts * p as usize).div_ceil(100),
            };
            let n = n.clamp(1, left);
            out.push(n);
            left -= n;
            i += 1;
        }
        out
    }

    /// `2 at a time`, or `staged, in waves of 1, 2, 5`, for `--dry-run`.
    pub(crate) fn describe(&self, hosts: usize) -> String {
        let mut text = match self.waves.as_slice() {
            [Size::Hosts(n)] => format!("{n} at a time"),
            _ => {
                let sizes: Vec<String> = self.batches(hosts).iter().map(usize::to_string).collect();
                format!("in waves of {}", sizes.join(", "))
            }
        };
        if self.strategy != Strategy::HostByHost {
            text = format!("{}, {text}", self.strategy);
        }
        if let Some(bake) = self.bake {
            text += &format!(", baking {} after each", humantime::format_duration(bake));
        }
        if self.max_failures != Size::Hosts(0) {
            text += &format!(", up to {} failed", self.max_failures);
        }
        text
    }

    /// How many of `hosts` hosts may fail before the run stops.
    pub(crate) fn budget(&self, hosts: usize) -> usize {
        match self.max_failures {
            Size::Hosts(n) => n,
            Size::Percent(p) => hosts * p as usize / 100,
        }
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Hosts(n) => write!(f, "{n}"),
            Size::Percent(p) => write!(f, "{p}%"),
        }
    }
}

fn parse_size(raw: &RawSize) -> Result<Size> {
    match raw {
        RawSize::Number(n) if *n < 0 => bail!("{n} is negative"),
        RawSize::Number(n) => Ok(Size::Hosts(*n as usize)),
        RawSize::Text(t) => {
            let Some(p) = t.strip_suffix('%') else {
                bail!("{t:?} is neither a number of hosts nor a percentage like \"20%\"");
            };
            match p.trim().parse::<u32>() {
                Ok(p) if p <= 100 => Ok(Size::Percent(p)),
                Ok(_) => bail!("{t:?} is more than 100%"),
                Err(_) => bail!("{t:?} is not a whole percentage like \"20%\""),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(waves: Vec<RawSize>) -> RolloutSpec {
        RolloutSpec::from_raw(Strategy::HostByHost, None, Some(waves), None, None).unwrap()
    }

    #[test]
    fn waves_grow_and_the_last_repeats() {
        use RawSize::*;
        let s = spec(vec![
            Number(1),
            Number(2),
            Number(5),
            Text("20%".into()),
            Text("100%".into()),
        ]);
        assert_eq!(s.batches(50), [1, 2, 5, 10, 32]);
        assert_eq!(s.batches(3), [1, 2]);
        assert_eq!(spec(vec![Number(2)]).batches(5), [2, 2, 1]);
        assert_eq!(spec(vec![Text("30%".into())]).batches(4), [2, 2]);
    }

    #[test]
    fn budgets_in_hosts_or_percent() {
        let s = RolloutSpec::from_raw(
            Strategy::Staged,
            Some(3),
            None,
            None,
            Some(RawSize::Text("10%".into())),
        )
        .unwrap();
        assert_eq!(s.waves, [Size::Hosts(3)]);
        assert_eq!(s.budget(25), 2);
        assert_eq!(s.budget(5), 0);
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        let err = |batch, waves, budget| {
            format!(
                "{:#}",
                RolloutSpec::from_raw(Strategy::HostByHost, batch, waves, None, budget)
                    .unwrap_err()
            )
        };
        use RawSize::*;
        assert!(err(Some(2), Some(vec![Number(1)]), None).contains("both given"));
        assert!(err(None, Some(vec![]), None).contains("at least one"));
        assert!(err(None, Some(vec![Number(1), Number(0)]), None).contains("waves[1]"));
        assert!(err(None, Some(vec![Text("20".into())]), None).contains("percentage"));
        assert!(err(None, Some(vec![Text("120%".into())]), None).contains("more than 100%"));
        assert!(err(None, None, Some(Number(-1))).contains("max_failures: -1 is negative"));
    }
}

/// The README's dead-man's switch example is what people copy: it must parse.
#[cfg(test)]
mod readme_tests {
    #[test]
    fn the_readme_sshd_switch_example_parses() {
        let readme = include_str!("../../README.md");
        let from = readme
            .find("### A dead-man's switch for sshd")
            .expect("the README has the example");
        let block = &readme[from..];
        let block = &block[block.find("```toml\n").expect("a toml block") + 8..];
        let block = &block[..block.find("```").expect("the block ends")];
        let text = format!(
            "{block}\n[groups.farm]\nhosts = [\"server01\"]\nvars = {{ version = \"9.2\" }}\n"
        );
        let config = crate::config::Config::parse(&text, "README.md").unwrap();
        let sshd = config.service("sshd").unwrap();
        assert!(sshd.arm.is_some() && sshd.disarm.is_some() && sshd.verify.is_some());
    }
}
