//! A deploy as data: which hosts, in which batches, running which argv.
//!
//! Every command is rendered here, before the lock is taken or any host is
//! touched, so a bad placeholder can never fail a rollout halfway.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::Group;
use crate::config::placeholders::Values;
use crate::config::rollout::RolloutSpec;
use crate::rollout::scope::Target;
use crate::source::revision::Revision;
use crate::source::worktree::Worktree;
use crate::ui::Ui;

pub(crate) struct Plan {
    /// Full commit id being deployed.
    pub(crate) rev: String,
    pub(crate) stages: Vec<Stage>,
}

/// One group's hosts, deployed as its `rollout` says.
pub(crate) struct Stage {
    pub(crate) group: String,
    pub(crate) rollout: RolloutSpec,
    pub(crate) hosts: Vec<HostJob>,
}

pub(crate) struct HostJob {
    pub(crate) group: String,
    pub(crate) host: String,
    pub(crate) services: Vec<ServiceJob>,
}

pub(crate) struct ServiceJob {
    pub(crate) service: String,
    pub(crate) version: String,
    pub(crate) steps: Vec<Step>,
    pub(crate) timeout: Duration,
    pub(crate) health_wait: Duration,
}

pub(crate) struct Step {
    /// `deploy`, `verify`, `arm`, `reload`, `health` or `disarm`.
    pub(crate) role: &'static str,
    pub(crate) argv: Vec<String>,
}

impl Plan {
    pub(crate) fn host_count(&self) -> usize {
        self.stages.iter().map(|s| s.hosts.len()).sum()
    }

    /// `--dry-run`: every host and command, nothing run.
    pub(crate) fn show(&self, ui: &Ui) {
        for line in self.lines() {
            ui.line(line);
        }
    }

    fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for stage in &self.stages {
            out.push(format!(
                "group {}: {} host{}, {}",
                stage.group,
                stage.hosts.len(),
                if stage.hosts.len() == 1 { "" } else { "s" },
                stage.rollout.describe(stage.hosts.len())
            ));
            for job in &stage.hosts {
                for s in &job.services {
                    for step in &s.steps {
                        out.push(format!(
                            "  [{}] {} {}: {}",
                            job.host,
                            s.service,
                            step.role,
                            shown(&step.argv)
                        ));
                    }
                }
            }
        }
        out
    }
}

/// An argv as a person would retype it; display only, never executed.
fn shown(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%{}".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) fn build(rev: &Revision<'_>, worktree: &Worktree, targets: &[Target]) -> Result<Plan> {
    let rev_id = rev
        .snapshot
        .commit_id()
        .context("only a commit can be deployed")?
        .to_string();
    let mut stages = Vec::new();
    for t in targets {
        let group = &t.group;
        let hosts = t
            .hosts
            .iter()
            .map(|h| host_job(rev, worktree, group, h, None))
            .collect::<Result<_>>()?;
        stages.push(Stage {
            group: group.name.clone(),
            rollout: group.rollout.clone(),
            hosts,
        });
    }
    Ok(Plan {
        rev: rev_id,
        stages,
    })
}

/// The commands for one host of `group`; `only` limits it to one service
/// (restoring a single service to an earlier revision).
pub(crate) fn host_job(
    rev: &Revision<'_>,
    worktree: &Worktree,
    group: &Group,
    host: &str,
    only: Option<&str>,
) -> Result<HostJob> {
    let rev_id = rev
        .snapshot
        .commit_id()
        .map(|id| id.to_string())
        .unwrap_or_default();
    let mut services = Vec::new();
    for dir in rev.group_dirs(group)? {
        if only.is_some_and(|o| o != dir.service) {
            continue;
        }
        let service = rev.config.service_named(&dir.service)?;
        let abs = worktree.path_of(&dir.path).display().to_string();
        let values = Values {
            dir: Some(abs),
            host: Some(host),
            group: Some(&group.name),
            service: Some(&service.name),
            rev: Some(&rev_id),
            worktree: Some(worktree.root().display().to_string()),
            vars: Some(&group.vars),
            ..Values::default()
        };
        let lookup = |name: &str| values.get(name);
        let mut steps = Vec::new();
        for (role, argv) in service.host_steps() {
            let argv = argv
                .iter()
                .map(|t| t.render(&lookup))
                .collect::<Result<Vec<_>>>()
                .with_context(|| format!("services.{}.{role} for host {host}", service.name))?;
            steps.push(Step { role, argv });
        }
        services.push(ServiceJob {
            service: service.name.clone(),
            version: dir.version(),
            steps,
            timeout: service.timeout,
            health_wait: service.health_wait,
        });
    }
    Ok(HostJob {
        group: group.name.clone(),
        host: host.to_string(),
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(role: &'static str, argv: &[&str]) -> Step {
        Step {
            role,
            argv: argv.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn a_dry_run_shows_each_command_as_it_could_be_retyped() {
        let plan = Plan {
            rev: "0".repeat(40),
            stages: vec![Stage {
                group: "farm".into(),
                rollout: RolloutSpec::from_raw(
                    crate::config::rollout::Strategy::HostByHost,
                    Some(2),
                    None,
                    None,
                    None,
                )
                .unwrap(),
                hosts: vec![HostJob {
                    group: "farm".into(),
                    host: "server01".into(),
                    services: vec![ServiceJob {
                        service: "sshd".into(),
                        version: "9.2".into(),
                        steps: vec![
                            step(
                                "deploy",
                                &["rsync", "-a", "/tmp/w/x/", "server01:/etc/ssh/"],
                            ),
                            step("reload", &["sh", "-c", "reload ssh && echo 'done'"]),
                        ],
                        timeout: Duration::from_secs(60),
                        health_wait: Duration::from_secs(10),
                    }],
                }],
            }],
        };
        assert_eq!(plan.host_count(), 1);
        assert_eq!(
            plan.lines(),
            [
                "group farm: 1 host, 2 at a time",
                "  [server01] sshd deploy: rsync -a /tmp/w/x/ server01:/etc/ssh/",
                r#"  [server01] sshd reload: sh -c 'reload ssh && echo '\''done'\'''"#,
            ]
        );
    }
}
