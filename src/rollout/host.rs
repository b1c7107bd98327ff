//! One host's part of a rollout: for each of its services, deploy, verify,
//! arm, reload, health (retried within `health_wait`) and disarm, stopping
//! at the first failure. A staged rollout runs these in phases
//! ([`run_roles`]).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::process;
use crate::record::journal::{Action, Event, Outcome, Record, Recorder};
use crate::rollout::plan::{HostJob, ServiceJob};
use crate::ui::{Ui, seconds};

/// How often a failing health check is retried within `health_wait`.
const HEALTH_RETRY: Duration = Duration::from_millis(500);

pub(crate) struct HostResult<'p> {
    pub(crate) job: &'p HostJob,
    /// One per attempted service; services after a failure are not attempted.
    pub(crate) services: Vec<ServiceResult<'p>>,
    pub(crate) duration: Duration,
}

pub(crate) struct ServiceResult<'p> {
    pub(crate) job: &'p ServiceJob,
    pub(crate) duration: Duration,
    /// What failed, and the failing command's output.
    pub(crate) failure: Option<(String, String)>,
    /// Its `arm` ran and its `disarm` did not: the host's dead-man's switch
    /// is counting down.
    pub(crate) armed: bool,
}

pub(crate) fn run<'p>(job: &'p HostJob, cwd: &Path) -> HostResult<'p> {
    run_roles(job, cwd, &[])
}

/// Like [`run`], but only the steps whose role is in `roles` (all of them
/// if `roles` is empty).
pub(crate) fn run_roles<'p>(job: &'p HostJob, cwd: &Path, roles: &[&str]) -> HostResult<'p> {
    let started = Instant::now();
    let mut services = Vec::new();
    for s in &job.services {
        let t = Instant::now();
        let (failure, armed) = run_service(s, cwd, roles);
        let stop = failure.is_some();
        services.push(ServiceResult {
            job: s,
            duration: t.elapsed(),
            failure,
            armed,
        });
        if stop {
            break;
        }
    }
    HostResult {
        job,
        services,
        duration: started.elapsed(),
    }
}

/// The failure, if any, and whether the service is left armed.
type ServiceOutcome = (Option<(String, String)>, bool);

fn run_service(s: &ServiceJob, cwd: &Path, roles: &[&str]) -> ServiceOutcome {
    let mut armed = false;
    for step in &s.steps {
        if !roles.is_empty() && !roles.contains(&step.role) {
            continue;
        }
        let deadline = Instant::now() + s.health_wait;
        loop {
            match process::run(&step.argv, cwd, s.timeout) {
                Ok(_) => break,
                Err(_) if step.role == "health" && Instant::now() + HEALTH_RETRY < deadline => {
                    std::thread::sleep(HEALTH_RETRY);
                }
                Err(f) => {
                    let failure = (
                        format!("{} {}: {f}", s.service, step.role),
                        f.output().to_string(),
                    );
                    return (Some(failure), armed);
                }
            }
        }
        match step.role {
            "arm" => armed = true,
            "disarm" => armed = false,
            _ => {}
        }
    }
    (None, armed)
}

impl HostResult<'_> {
    pub(crate) fn failure(&self) -> Option<&(String, String)> {
        self.services.iter().find_map(|s| s.failure.as_ref())
    }

    pub(crate) fn failed(&self) -> bool {
        self.failure().is_some()
    }

    /// `[server04] ok 0.40s`, or the failure and the command's output.
    pub(crate) fn show(&self, ui: &Ui) {
        match self.failure() {
            None => ui.line(format_args!(
                "[{}] ok {}",
                self.job.host,
                seconds(self.duration)
            )),
            Some((error, output)) => {
                ui.line(format_args!(
                    "[{}] FAILED {}: {error}",
                    self.job.host,
                    seconds(self.duration)
                ));
                ui.output(output);
            }
        }
    }

    /// One journal record per attempted service; `from(host, service)` is
    /// the revision the host ran before this step.
    pub(crate) fn records(
        &self,
        rec: &Recorder,
        action: Action,
        rev: &str,
        from: impl Fn(&str, &str) -> Option<String>,
    ) -> Vec<Record> {
        self.services
            .iter()
            .map(|s| {
                let result = if s.failure.is_some() {
                    Outcome::Failed
                } else {
                    Outcome::Ok
                };
                Record {
                    from: from(&self.job.host, &s.job.service),
                    group: Some(self.job.group.clone()),
                    host: Some(self.job.host.clone()),
                    service: Some(s.job.service.clone()),
                    version: Some(s.job.version.clone()),
                    duration_ms: Some(s.duration.as_millis() as u64),
                    error: s.failure.as_ref().map(|(e, _)| e.clone()),
                    armed: s.armed && s.failure.is_some(),
                    ..rec.record(Event::Host, action, rev, result)
                }
            })
            .collect()
    }
}
