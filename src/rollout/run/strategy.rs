//! How one group's hosts go through their steps, as the group's `rollout`
//! says: host by host, or staged (every host deployed and verified before
//! any is reloaded), or together (staged, then every reload at the same
//! moment); in waves, with a bake between waves and a failure budget.
//!
//! A child of `run` so that it drives the same `Rollout` (journal, output,
//! batches) rather than a copy of it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, mpsc};
use std::time::{Duration, Instant};

use anyhow::Result;
use git2::Repository;

use super::{Rollout, plural};
use crate::config::rollout::{Size, Strategy};
use crate::record::journal::{Event, Outcome, Record};
use crate::rollout::host::{self, HostResult};
use crate::rollout::plan::{HostJob, Stage};
use crate::rollout::restore::{self, Restored};
use crate::ui::{Ui, seconds};

/// What a staged rollout does to every host before activating any.
const STAGE: &[&str] = &["deploy", "verify"];
/// The rest, per host, once every host is staged.
const ACTIVATE: &[&str] = &["arm", "reload", "health", "disarm"];
/// How often a bake runs health on the hosts done so far.
const BAKE_ROUND: Duration = Duration::from_secs(1);
/// How often a bake says it is still baking.
const BAKE_BEAT: Duration = Duration::from_secs(2);

/// A group's failure budget as the run uses it up.
struct Budget {
    allowed: usize,
    max: Size,
    used: usize,
}

impl Budget {
    /// `2`, or `10% (3 hosts)`.
    fn describe(&self) -> String {
        match self.max {
            Size::Hosts(n) => n.to_string(),
            Size::Percent(_) => format!("{} ({} hosts)", self.max, self.allowed),
        }
    }
}

impl<'p> Rollout<'_, 'p> {
    /// Every stage in order, each as its group says; stops after a stage
    /// that failed beyond its budget (its failed hosts are in `results`).
    pub(super) fn stages(
        &mut self,
        repo: &Repository,
        results: &mut Vec<HostResult<'p>>,
        done: &AtomicUsize,
    ) -> Result<()> {
        let plan = self.plan;
        for stage in &plan.stages {
            if !self.stage(repo, stage, results, done)? {
                break;
            }
        }
        Ok(())
    }

    /// One group; `Ok(false)` when the run must stop.
    fn stage(
        &mut self,
        repo: &Repository,
        stage: &'p Stage,
        results: &mut Vec<HostResult<'p>>,
        done: &AtomicUsize,
    ) -> Result<bool> {
        let spec = &stage.rollout;
        let mut waves = Vec::new();
        let mut rest = stage.hosts.as_slice();
        for n in spec.batches(rest.len()) {
            let (wave, tail) = rest.split_at(n);
            waves.push(wave);
            rest = tail;
        }
        let mut budget = Budget {
            allowed: spec.budget(stage.hosts.len()),
            max: spec.max_failures,
            used: 0,
        };
        // Where this group's results begin: what a bake keeps checking.
        let first = results.len();
        let staged = match spec.strategy {
            Strategy::HostByHost => None,
            Strategy::Staged | Strategy::Together => {
                match self.stage_all(repo, stage, &waves, results)? {
                    Some(staged) => Some(staged),
                    None => return Ok(false),
                }
            }
        };
        let staged = match staged {
            Some(staged) if spec.strategy == Strategy::Together => {
                if !self.together(stage, staged, results, done)? {
                    return Ok(false);
                }
                return Ok(self.settle(repo, stage, results, &mut budget));
            }
            other => other,
        };
        let mut staged = staged.map(Vec::into_iter);
        // Where the current wave begins in the group's host list.
        let mut from = 0;
        for (i, wave) in waves.iter().enumerate() {
            let mut go_on = match &mut staged {
                None => {
                    // The last configured size repeats. Without a bake
                    // between them, those waves need no barrier: the rest
                    // of the group is one window of that width.
                    if spec.bake.is_none() && i + 1 >= spec.waves.len() {
                        let rest = &stage.hosts[from..];
                        return self.window(
                            repo,
                            stage,
                            rest,
                            wave.len(),
                            results,
                            done,
                            &mut budget,
                        );
                    }
                    self.window(repo, stage, wave, wave.len(), results, done, &mut budget)?
                }
                Some(staged) => {
                    let staged: Vec<HostResult<'p>> = staged.take(wave.len()).collect();
                    self.activate(wave, staged, results, done)?;
                    self.settle(repo, stage, results, &mut budget)
                }
            };
            from += wave.len();
            if go_on
                && let Some(bake) = spec.bake
                && i + 1 < waves.len()
            {
                self.bake(stage, results, first, bake)?;
                go_on = self.settle(repo, stage, results, &mut budget);
            }
            if !go_on {
                if let Some(rest) = staged {
                    self.put_back_staged(repo, stage, rest.collect());
                }
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs `hosts` through all their steps, at most `width` at a time: a
    /// host starts as soon as another one ends, so the slowest host of a
    /// batch holds nobody up. Whatever ended together and whoever starts
    /// in its place are journaled in one write (one sync), before anyone
    /// starts and before the pusher hears of them. A failure within the
    /// group's budget is put back at once; past the budget (or when the
    /// journal fails) nothing new starts, the running hosts end, and the
    /// run stops: `Ok(false)`, or the journal's error.
    #[allow(clippy::too_many_arguments)]
    fn window(
        &mut self,
        repo: &Repository,
        stage: &Stage,
        hosts: &'p [HostJob],
        width: usize,
        results: &mut Vec<HostResult<'p>>,
        done: &AtomicUsize,
        budget: &mut Budget,
    ) -> Result<bool> {
        if hosts.is_empty() {
            return Ok(true);
        }
        let worktree = self.worktree;
        let cwd = worktree.root();
        let mut go_on = true;
        let mut failure: Option<anyhow::Error> = None;
        let mut next = width.clamp(1, hosts.len());
        let mut starting = &hosts[..next];
        self.journal_batch(starting)?;
        // Nothing in here returns early: every host started is waited for,
        // and its result kept, so that the run can put it back.
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let mut running = 0;
            loop {
                for job in starting {
                    let tx = tx.clone();
                    // A host's thread that panicked must still report, or
                    // this loop would wait for it forever.
                    s.spawn(move || {
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            host::run(job, cwd)
                        }));
                        let _ = tx.send(result);
                    });
                }
                running += starting.len();
                if running == 0 {
                    return;
                }
                let first = rx.recv().expect("the sender is held here");
                let arrived: Vec<HostResult<'p>> = std::iter::once(first)
                    .chain(rx.try_iter())
                    .map(|r| r.unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                    .collect();
                running -= arrived.len();
                let failed = arrived.iter().any(HostResult::failed);
                // Who takes the free places: in the same write, unless a
                // failure first has to be weighed against the budget.
                let mut take = |n: usize| {
                    let end = (next + n).min(hosts.len());
                    let slice = &hosts[next..end];
                    next = end;
                    slice
                };
                starting = if go_on && failure.is_none() && !failed {
                    take(arrived.len())
                } else {
                    &[]
                };
                let mut records: Vec<Record> =
                    arrived.iter().flat_map(|r| self.records(r)).collect();
                if !starting.is_empty() {
                    records.push(self.batch_record(starting));
                }
                if let Err(e) = self.journal.append(&records) {
                    self.stop_on_journal(e, &mut failure);
                    starting = &[];
                }
                let freed = arrived.len();
                for r in arrived {
                    done.fetch_add(1, Ordering::Relaxed);
                    r.show(self.ui);
                    results.push(r);
                }
                if failed && go_on && failure.is_none() {
                    go_on = self.settle(repo, stage, results, budget);
                    if go_on {
                        starting = take(freed);
                        if !starting.is_empty()
                            && let Err(e) = self.journal_batch(starting)
                        {
                            self.stop_on_journal(e, &mut failure);
                            starting = &[];
                        }
                    }
                }
            }
        });
        match failure {
            Some(e) => Err(e),
            None => Ok(go_on),
        }
    }

    /// The first journal failure of a window stops it (said once).
    fn stop_on_journal(&self, e: anyhow::Error, failure: &mut Option<anyhow::Error>) {
        if failure.is_none() {
            self.ui
                .line(format_args!("cannot write the journal, stopping: {e:#}"));
            *failure = Some(e);
        }
    }

    /// Hosts staged but never activated, when the run stops: their files
    /// go back (the run only puts back the hosts in `results`).
    fn put_back_staged(&mut self, repo: &Repository, stage: &Stage, staged: Vec<HostResult<'p>>) {
        if staged.is_empty() {
            return;
        }
        self.ui.line(format_args!(
            "group {}: putting back the {} host{} staged but not activated: {}",
            stage.group,
            staged.len(),
            plural(staged.len()),
            crate::ui::capped(staged.iter().map(|r| r.job.host.as_str()))
        ));
        let refs: Vec<&HostResult<'_>> = staged.iter().collect();
        self.put_back(repo, &refs);
    }

    /// Deploys and verifies every host of `stage`, wave by wave, and returns
    /// their results (in host order). On a failure nothing is activated:
    /// the hosts staged so far are put back here, the failed ones go to
    /// `results` (the run puts them back), and `None` says stop.
    fn stage_all(
        &mut self,
        repo: &Repository,
        stage: &'p Stage,
        waves: &[&'p [HostJob]],
        results: &mut Vec<HostResult<'p>>,
    ) -> Result<Option<Vec<HostResult<'p>>>> {
        let cwd = self.worktree.root();
        let mut staged = Vec::new();
        for wave in waves {
            self.journal_batch(wave)?;
            let got = parallel(wave.iter().collect(), |job| {
                host::run_roles(job, cwd, STAGE)
            });
            // A staged host is journaled once it is activated; a failed one
            // now.
            let failures: Vec<Record> = got
                .iter()
                .filter(|r| r.failed())
                .flat_map(|r| self.records(r))
                .collect();
            self.journal.append(&failures)?;
            for r in &got {
                if r.failed() {
                    r.show(self.ui);
                } else {
                    self.ui.line(format_args!(
                        "[{}] staged {}",
                        r.job.host,
                        seconds(r.duration)
                    ));
                }
            }
            staged.extend(got);
            if staged.iter().any(HostResult::failed) {
                break;
            }
        }
        let (failed, ok): (Vec<_>, Vec<_>) = staged.into_iter().partition(HostResult::failed);
        if failed.is_empty() {
            self.ui.line(format_args!(
                "group {}: {} host{} staged, activating",
                stage.group,
                ok.len(),
                plural(ok.len())
            ));
            return Ok(Some(ok));
        }
        self.ui.line(format_args!(
            "group {}: staging failed on {}: nothing was activated",
            stage.group,
            crate::ui::capped(failed.iter().map(|r| r.job.host.as_str()))
        ));
        self.put_back_staged(repo, stage, ok);
        results.extend(failed);
        Ok(None)
    }

    /// One wave of staged hosts: arm, reload, health, disarm per host.
    fn activate(
        &mut self,
        wave: &'p [HostJob],
        staged: Vec<HostResult<'p>>,
        results: &mut Vec<HostResult<'p>>,
        done: &AtomicUsize,
    ) -> Result<()> {
        self.journal_batch(wave)?;
        let cwd = self.worktree.root();
        let got = parallel(wave.iter().collect(), |job| {
            host::run_roles(job, cwd, ACTIVATE)
        });
        let merged = staged.into_iter().zip(got).map(|(a, b)| merge(a, b));
        self.finish(merged.collect(), results, done)
    }

    /// Every staged host of the group reloaded at the same moment: all arm
    /// first (one failure and nothing is reloaded), then all reloads are
    /// released together, then health and disarm on all. `Ok(false)` when
    /// arming failed: no host was reloaded, and the run stops.
    fn together(
        &mut self,
        stage: &'p Stage,
        staged: Vec<HostResult<'p>>,
        results: &mut Vec<HostResult<'p>>,
        done: &AtomicUsize,
    ) -> Result<bool> {
        self.journal_batch(&stage.hosts)?;
        let cwd = self.worktree.root();
        let n = staged.len();
        self.ui.line(format_args!(
            "group {}: reloading {n} host{} at once",
            stage.group,
            plural(n)
        ));
        let all_armed = AtomicBool::new(true);
        let reload = Barrier::new(n);
        let health = Barrier::new(n);
        let activated: Vec<HostResult<'p>> = std::thread::scope(|s| {
            let handles: Vec<_> = staged
                .iter()
                .map(|st| {
                    let job = st.job;
                    let (all_armed, reload, health) = (&all_armed, &reload, &health);
                    s.spawn(move || {
                        let armed = host::run_roles(job, cwd, &["arm"]);
                        if armed.failed() {
                            all_armed.store(false, Ordering::SeqCst);
                        }
                        reload.wait();
                        if !all_armed.load(Ordering::SeqCst) {
                            return not_activated(armed, "arming failed in the group");
                        }
                        let reloaded = host::run_roles(job, cwd, &["reload"]);
                        health.wait();
                        let so_far = merge(armed, reloaded);
                        if so_far.failed() {
                            return so_far;
                        }
                        merge(so_far, host::run_roles(job, cwd, &["health", "disarm"]))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a host's thread panicked"))
                .collect()
        });
        let merged = staged.into_iter().zip(activated).map(|(a, b)| merge(a, b));
        self.finish(merged.collect(), results, done)?;
        if all_armed.load(Ordering::SeqCst) {
            return Ok(true);
        }
        self.ui.line(format_args!(
            "group {}: arming failed, so no host was reloaded",
            stage.group
        ));
        Ok(false)
    }

    /// Health on every host of the group done so far (`results[first..]`),
    /// round after round for `bake`; a host failing there is failed in
    /// `results`, journaled, and the bake ends.
    fn bake(
        &mut self,
        stage: &Stage,
        results: &mut [HostResult<'p>],
        first: usize,
        bake: Duration,
    ) -> Result<()> {
        let cwd = self.worktree.root();
        let healthy: Vec<usize> = (first..results.len())
            .filter(|&i| !results[i].failed())
            .collect();
        if healthy.is_empty() {
            return Ok(());
        }
        let what = format!("{} host{}", healthy.len(), plural(healthy.len()));
        self.ui.line(format_args!(
            "group {}: baking {} before the next wave: health on {what}",
            stage.group,
            humantime::format_duration(bake)
        ));
        let started = Instant::now();
        let mut beat = Instant::now();
        loop {
            let jobs: Vec<&'p HostJob> = healthy.iter().map(|&i| results[i].job).collect();
            let checks = parallel(jobs, |job| host::run_roles(job, cwd, &["health"]));
            let mut sick = false;
            for (&i, check) in healthy.iter().zip(&checks) {
                let Some(bad) = check.services.iter().find(|s| s.failure.is_some()) else {
                    continue;
                };
                let (error, output) = bad.failure.clone().unwrap_or_default();
                let error = format!(
                    "{error} (during the bake, {} after the wave)",
                    seconds(started.elapsed())
                );
                let r = &mut results[i];
                for s in r.services.iter_mut() {
                    if s.job.service == bad.job.service {
                        s.failure = Some((error.clone(), output.clone()));
                        s.armed = false;
                    }
                }
                let records: Vec<Record> = self
                    .records(r)
                    .into_iter()
                    .filter(|rec| rec.result == Outcome::Failed)
                    .collect();
                self.journal.append(&records)?;
                self.ui
                    .line(format_args!("[{}] FAILED: {error}", r.job.host));
                self.ui.output(&output);
                sick = true;
            }
            if sick {
                return Ok(());
            }
            let left = bake.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            if beat.elapsed() >= BAKE_BEAT {
                self.ui.line(format_args!(
                    "... baking group {}: {what} healthy, {} left",
                    stage.group,
                    seconds(left)
                ));
                beat = Instant::now();
            }
            std::thread::sleep(left.min(BAKE_ROUND));
        }
        self.ui.line(format_args!(
            "group {}: {what} healthy through the {} bake",
            stage.group,
            humantime::format_duration(bake)
        ));
        Ok(())
    }

    /// After a wave or a bake. Failures within the group's budget are put
    /// back now, listed as left behind, and the rollout goes on; past the
    /// budget `false`: the run stops with them in `results`. Infallible on
    /// purpose: a window settles while hosts still run, and an early return
    /// there would lose their results (and so their restore).
    fn settle(
        &mut self,
        repo: &Repository,
        stage: &Stage,
        results: &mut Vec<HostResult<'p>>,
        budget: &mut Budget,
    ) -> bool {
        let failed = results.iter().filter(|r| r.failed()).count();
        if failed == 0 {
            return true;
        }
        budget.used += failed;
        if budget.used > budget.allowed {
            if budget.allowed > 0 {
                self.ui.line(format_args!(
                    "group {}: {} hosts failed, more than max_failures = {} allows: stopping",
                    stage.group,
                    budget.used,
                    budget.describe()
                ));
            }
            return false;
        }
        let (bad, good): (Vec<_>, Vec<_>) = std::mem::take(results)
            .into_iter()
            .partition(HostResult::failed);
        *results = good;
        self.ui.line(format_args!(
            "group {}: {} failed ({} of max_failures = {}): putting {} back and going on",
            stage.group,
            crate::ui::capped(bad.iter().map(|r| r.job.host.as_str())),
            budget.used,
            budget.describe(),
            if bad.len() == 1 { "it" } else { "them" }
        ));
        let refs: Vec<&HostResult<'_>> = bad.iter().collect();
        let restored = self.put_back(repo, &refs);
        report_armed(self.ui, &refs, &restored);
        self.left_behind
            .extend(bad.iter().map(|r| r.job.host.clone()));
        true
    }

    /// Puts `hosts` back on what they ran before this run, mid-run (the
    /// run's own put-back happens at its end, in `run`).
    fn put_back(&mut self, repo: &Repository, hosts: &[&HostResult<'_>]) -> Vec<Restored> {
        restore::restore(
            repo,
            self.history,
            hosts,
            &self.plan.rev,
            self.rec,
            &mut self.journal,
            self.ui,
        )
    }

    fn journal_batch(&mut self, wave: &[HostJob]) -> Result<()> {
        let record = self.batch_record(wave);
        self.journal.append(&[record])
    }

    /// Says that `hosts` start now: `status` calls a host interrupted when
    /// its batch began and its result never came.
    fn batch_record(&self, hosts: &[HostJob]) -> Record {
        let mut record =
            self.rec
                .record(Event::Batch, self.action, &self.plan.rev, Outcome::Started);
        record.hosts = hosts.iter().map(super::group_host).collect();
        record
    }

    fn records(&self, r: &HostResult<'_>) -> Vec<Record> {
        let before = |host: &str, service: &str| {
            self.history.last_good(host, service).map(|p| p.rev.clone())
        };
        r.records(self.rec, self.action, &self.plan.rev, before)
    }

    /// Journals finished hosts, then reports them.
    fn finish(
        &mut self,
        finished: Vec<HostResult<'p>>,
        results: &mut Vec<HostResult<'p>>,
        done: &AtomicUsize,
    ) -> Result<()> {
        let records: Vec<Record> = finished.iter().flat_map(|r| self.records(r)).collect();
        self.journal.append(&records)?;
        for r in finished {
            done.fetch_add(1, Ordering::Relaxed);
            r.show(self.ui);
            results.push(r);
        }
        Ok(())
    }
}

/// Says which failed hosts are left to their dead-man's switch: armed when
/// they failed, and not put back.
pub(super) fn report_armed(ui: &Ui, failed: &[&HostResult<'_>], restored: &[Restored]) {
    for r in failed {
        for s in &r.services {
            let back = restored
                .iter()
                .any(|x| x.host == r.job.host && !x.changed());
            if s.failure.is_some() && s.armed && !back {
                ui.line(format_args!(
                    "[{}] {}: left to its armed revert (it could not be put back)",
                    r.job.host, s.job.service
                ));
            }
        }
    }
}

/// `r` with every service that did not fail marked as not activated.
fn not_activated<'p>(mut r: HostResult<'p>, why: &str) -> HostResult<'p> {
    for s in r.services.iter_mut().filter(|s| s.failure.is_none()) {
        s.failure = Some((
            format!("{}: not activated ({why})", s.job.service),
            String::new(),
        ));
    }
    r
}

/// `f` on every job at once, results in job order.
fn parallel<'p>(
    jobs: Vec<&'p HostJob>,
    f: impl Fn(&'p HostJob) -> HostResult<'p> + Sync,
) -> Vec<HostResult<'p>> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| s.spawn(move || f(job)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a host's thread panicked"))
            .collect()
    })
}

/// One host's results of two phases, as one: every service of `a`, with
/// what `b` then did to it. A service that `a` got through but `b` never
/// reached (an earlier service failed) has its files but was not
/// activated: that is a failure too.
fn merge<'p>(a: HostResult<'p>, b: HostResult<'p>) -> HostResult<'p> {
    let stopped = b.failure().map(|(e, _)| e.clone());
    let mut services = a.services;
    for s in services.iter_mut().filter(|s| s.failure.is_none()) {
        match b.services.iter().find(|x| x.job.service == s.job.service) {
            Some(x) => {
                s.duration += x.duration;
                s.failure.clone_from(&x.failure);
                s.armed |= x.armed;
            }
            None => {
                if let Some(why) = &stopped {
                    s.failure = Some((
                        format!("{}: not activated ({why})", s.job.service),
                        String::new(),
                    ));
                }
            }
        }
    }
    HostResult {
        job: a.job,
        services,
        duration: a.duration + b.duration,
    }
}
