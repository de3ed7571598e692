//! What a batch of reports does, computed without the database: each new run scored against its
//! worker's running state and folded into it, its anomalies decided, its execution row built,
//! and the workers' rows as the batch leaves them.
//!
//! A [`Plan`] is built from worker rows handed to it — loaded inside the write transaction, or
//! taken from the planner's cache of the rows the previous batches left — and records the rows
//! as it found them ([`Touched::found`]). The writer applies a plan only if the database still holds
//! exactly those rows; otherwise it builds the plan again from what the database holds. So a
//! plan computed ahead of its transaction stores exactly what one computed inside it would.

use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::{DbBackend, Statement};
use uuid::Uuid;

use super::Ack;
use crate::{
    domain::{
        analysis::analyze,
        anomaly::{
            AnomalyConfig, AnomalyKind, Finding, RUN_LEVEL_KINDS, RunSample, detect, quota_exhaustion, resolves,
            running_too_often_finding,
        },
        learning::WorkerRunningState,
        rollup::ExecutionFacts,
        schedule::{self, Expected, Schedule},
        scoring::ScoringConfig,
        validation::ValidReport,
    },
    proto::v1::{Analysis, Outcome, WorkerHealthChange},
    store::{
        FastMap, FastSet,
        anomalies::{NewAnomaly, as_stored, decode_recent, encode_recent},
        entities::{executions, workers},
        executions::insert_statements,
        to_micros,
    },
};

/// One batch's effects, built report by report ([`Plan::add`]) and closed by [`Plan::finish`].
pub struct Plan {
    /// One per report added, in order: `Stored` with its analysis, or `Duplicate` for a repeat
    /// of an execution_id earlier in the batch (or one the caller skipped as already stored).
    pub acks: Vec<Ack>,
    /// The workers the batch's runs touched, by name.
    pub workers: FastMap<String, Touched>,
    /// Anomalies the runs opened and resolved.
    pub book: AnomalyBook,
    /// Per stored run, what the rollups fold in (worker id, facts), in storage order.
    pub facts: Vec<(i64, ExecutionFacts)>,
    /// The execution rows, until [`Plan::finish`] turns them into INSERT statements.
    executions: Vec<executions::Model>,
    /// The INSERT statements of the execution rows (after [`Plan::finish`]).
    pub inserts: Vec<Statement>,
    /// Execution ids stored by this batch, in order.
    pub stored: Vec<String>,
    /// Health changes the batch causes (after [`Plan::finish`]).
    pub health_changes: Vec<WorkerHealthChange>,
    /// The batch's latest receipt (after [`Plan::finish`]).
    pub now: DateTime<Utc>,
    seen: FastSet<Uuid>,
}

/// A worker the batch touched.
pub struct Touched {
    /// Its row when the batch first touched it: what the database must still hold.
    pub found: workers::Model,
    /// Its row with the batch's runs folded in: what the batch writes back.
    pub row: workers::Model,
    recent: Vec<RunSample>,
    declared: Option<Schedule>,
}

/// What a plan starts a worker from: its row, and the recent runs the row holds if the caller has
/// them decoded already (the planner's cache); otherwise the plan decodes them from the row.
#[derive(Clone)]
pub struct WorkerStart {
    pub row: workers::Model,
    /// Exactly what decoding `row.recent_runs` gives ([`as_stored`]), or `None`.
    pub recent: Option<Vec<RunSample>>,
}

impl WorkerStart {
    /// A row as the database holds it.
    pub fn from_row(row: workers::Model) -> WorkerStart {
        WorkerStart { row, recent: None }
    }
}

/// A report's worker has no row the plan can use.
#[derive(Debug)]
pub struct NoRow;

impl Plan {
    pub fn with_capacity(reports: usize) -> Plan {
        Plan {
            acks: Vec::with_capacity(reports),
            workers: FastMap::default(),
            book: AnomalyBook::default(),
            facts: Vec::with_capacity(reports),
            executions: Vec::with_capacity(reports),
            inserts: Vec::new(),
            stored: Vec::with_capacity(reports),
            health_changes: Vec::new(),
            now: DateTime::default(),
            seen: FastSet::with_capacity_and_hasher(reports, Default::default()),
        }
    }

    /// A report the caller knows is already stored: answered `Duplicate`, changes nothing.
    pub fn skip(&mut self) {
        self.acks.push(Ack::Duplicate);
    }

    /// Adds the next report. The first report of a worker takes its row from `row_of`; a worker
    /// without one leaves the plan unusable (`Err`, and nothing of this report is added).
    pub fn add(
        &mut self,
        job: &ValidReport,
        received_at: DateTime<Utc>,
        scoring: &ScoringConfig,
        row_of: impl FnOnce(&str) -> Option<WorkerStart>,
    ) -> Result<(), NoRow> {
        self.add_encoded(job, None, received_at, scoring, row_of)
    }

    /// [`Plan::add`] with the bytes to store already taken out of `job` (`encoded`, moved into
    /// its row instead of copied); `None`, or empty, copies or encodes them from `job`.
    pub fn add_encoded(
        &mut self,
        job: &ValidReport,
        encoded: Option<Vec<u8>>,
        received_at: DateTime<Utc>,
        scoring: &ScoringConfig,
        row_of: impl FnOnce(&str) -> Option<WorkerStart>,
    ) -> Result<(), NoRow> {
        if self.seen.contains(&job.execution_id) {
            self.acks.push(Ack::Duplicate);
            return Ok(());
        }
        let name = &job.report.worker_name;
        if !self.workers.contains_key(name) {
            let WorkerStart { row: found, recent } = row_of(name).ok_or(NoRow)?;
            // Parsed once per worker and batch (a cron is parsed, its default grace searched).
            let declared = crate::store::workers::declared_schedule(&found, received_at);
            let recent = recent.unwrap_or_else(|| decode_recent(found.recent_runs.as_deref()));
            self.workers.insert(name.clone(), Touched { row: found.clone(), found, recent, declared });
        }
        self.seen.insert(job.execution_id);
        let Some(worker) = self.workers.get_mut(name) else { return Err(NoRow) };
        let mut state = running_state(&worker.row);
        let analysis = analyze(job, &mut state, scoring);
        store_running_state(&mut worker.row, &state);
        observe_run(&mut worker.row, job, &analysis);
        let worker_id = worker.row.id;
        let run = run_sample(job, &analysis);
        self.book.observe_schedule(worker_id, &worker.recent, &run, worker.declared.as_ref(), to_micros(received_at));
        self.book.observe(worker_id, &mut worker.recent, run, &job.report.execution_id);
        let scores = analysis.scores.unwrap_or_default();
        self.facts.push((worker_id, ExecutionFacts::from_report(&job.report, &scores, to_micros(job.started_at))));
        let learning = analysis.learning.unwrap_or_default();
        let data = job.report.data_verification.as_ref();
        self.executions.push(executions::Model {
            id: 0,
            execution_id: job.report.execution_id.clone(),
            worker_id,
            outcome: job.outcome as i32,
            started_at_us: to_micros(job.started_at),
            completed_at_us: to_micros(job.completed_at),
            duration_ms: job.duration_ms,
            received_at_us: to_micros(received_at),
            records_fetched: data.map_or(0, |d| d.records_fetched),
            records_processed: data.map_or(0, |d| d.records_processed),
            records_failed: data.map_or(0, |d| d.records_failed),
            report: encoded.filter(|bytes| !bytes.is_empty()).unwrap_or_else(|| job.encoded_copy()),
            score_reliability: scores.reliability,
            score_performance: scores.performance,
            score_data_quality: scores.data_quality,
            score_resource_efficiency: scores.resource_efficiency,
            score_overall: scores.overall,
            quality_level: analysis.quality_level,
            time_of_day_utc: learning.time_of_day_utc as i32,
            day_of_week: learning.day_of_week as i32,
            execution_number_today: learning.execution_number_today,
            analysis: Some(analysis.encode_to_vec()),
        });
        self.stored.push(job.report.execution_id.clone());
        self.acks.push(Ack::Stored(Box::new(analysis)));
        Ok(())
    }

    /// Closes the plan at `now` (the batch's latest receipt): each worker's recent runs go back
    /// into its row, its health is judged, and the execution rows become `backend`'s INSERTs.
    pub fn finish(&mut self, now: DateTime<Utc>, backend: DbBackend) {
        self.now = now;
        for worker in self.workers.values_mut() {
            worker.row.recent_runs = Some(encode_recent(&worker.recent));
            let starts: Vec<DateTime<Utc>> = worker.recent.iter().map(|r| r.started_at).collect();
            let health = crate::store::workers::verdict_with_starts(&worker.row, &starts, now).health.as_str();
            if health != worker.row.health {
                self.health_changes.push(super::health_change(
                    &worker.row.worker_name,
                    &worker.row.health,
                    health,
                    now,
                ));
                health.clone_into(&mut worker.row.health);
            }
        }
        self.inserts = insert_statements(backend, std::mem::take(&mut self.executions));
    }

    /// Whether the database's rows (`row` by name) are exactly the rows this plan was computed
    /// from.
    pub fn matches<'a>(&self, row: impl Fn(&str) -> Option<&'a workers::Model>) -> bool {
        self.workers.iter().all(|(name, worker)| row(name).is_some_and(|row| *row == worker.found))
    }
}

impl Touched {
    /// The worker as the batch leaves it (after [`Plan::finish`]), for the planner's cache.
    pub fn left(&self) -> WorkerStart {
        WorkerStart { row: self.row.clone(), recent: as_stored(&self.recent) }
    }
}

/// A stored run as anomaly detection sees it.
fn run_sample(job: &ValidReport, analysis: &Analysis) -> RunSample {
    let absent = crate::proto::v1::DataVerification::default();
    let data = job.report.data_verification.as_ref().unwrap_or(&absent);
    let resources = job.report.resource_metrics.unwrap_or_default();
    let scores = analysis.scores.unwrap_or_default();
    RunSample {
        started_at: job.started_at,
        outcome_success: job.outcome == Outcome::Success,
        outcome_failed: matches!(job.outcome, Outcome::Failed | Outcome::Timeout),
        skipped: job.outcome == Outcome::Skipped,
        duration_ms: job.duration_ms as f64,
        overall_score: scores.overall,
        data_quality_score: scores.data_quality,
        memory_peak_mb: resources.memory_peak_mb,
        cpu_percent_avg: resources.cpu_percent_avg,
        records_processed: data.records_processed as f64,
        api_rate_limited: data.api_rate_limited,
        api_quota_remaining: data.api_quota_remaining.map(|q| q as f64),
    }
}

/// What a batch's runs opened and resolved, decided in storage order so a spike followed by a
/// normal run in the same batch is opened and resolved.
#[derive(Default)]
pub struct AnomalyBook {
    config: AnomalyConfig,
    pub opened: Vec<NewAnomaly>,
    /// (worker, kind) → the first run in this batch that resolved anomalies opened before it.
    pub resolve_existing: FastMap<(i64, &'static str), i64>,
}

impl AnomalyBook {
    /// Closes anomalies of `kind` opened before `at_us` (in the database and in this batch).
    fn resolve(&mut self, worker_id: i64, kind: AnomalyKind, at_us: i64) {
        self.resolve_existing.entry((worker_id, kind.as_str())).or_insert(at_us);
        for open in self.opened.iter_mut().filter(|a| a.worker_id == worker_id && a.finding.kind == kind) {
            open.resolved_at_us.get_or_insert(at_us);
        }
    }

    fn open(&mut self, worker_id: i64, finding: Finding, at_us: i64, execution_id: Option<&str>) {
        tracing::info!(
            worker_id,
            kind = finding.kind.as_str(),
            severity = finding.severity.as_str(),
            detail = %finding.evidence.detail,
            "anomaly"
        );
        self.opened.push(NewAnomaly {
            worker_id,
            finding,
            opened_at_us: at_us,
            resolved_at_us: None,
            execution_id: execution_id.map(str::to_owned),
        });
    }

    /// The schedule-aware verdicts on a new run, before it joins `history`: any report ends a
    /// missed-run anomaly; RUNNING_TOO_OFTEN (declared schedules only) and QUOTA_EXHAUSTION open when
    /// their condition starts and close when it ends.
    fn observe_schedule(
        &mut self,
        worker_id: i64,
        history: &[RunSample],
        run: &RunSample,
        declared: Option<&Schedule>,
        received_at_us: i64,
    ) {
        let at = to_micros(run.started_at);
        self.resolve(worker_id, AnomalyKind::MissedRun, received_at_us);
        let declared_active = declared.filter(|s| !s.paused);
        if declared_active.is_none() && run.api_quota_remaining.is_none() {
            return;
        }
        // One place more for the new run's start (pushed below), so it is never reallocated.
        let mut starts: Vec<DateTime<Utc>> = Vec::with_capacity(history.len() + 1);
        starts.extend(history.iter().map(|r| r.started_at));
        // Whether a condition already held before this run is asked only when it holds after it
        // (to open it once): a healthy run pays for one verdict per condition, not two.
        if let Some(declared) = declared_active {
            starts.push(run.started_at);
            let finding = running_too_often_finding(declared, &starts);
            starts.pop();
            match finding {
                Some(finding) if !schedule::running_too_often(declared, &starts) => {
                    self.open(worker_id, finding, at, None)
                }
                Some(_) => {}
                None => self.resolve(worker_id, AnomalyKind::RunningTooOften, at),
            }
        }
        if run.api_quota_remaining.is_some() {
            // When the next run comes: the declared schedule, else the typical gap between starts.
            starts.push(run.started_at);
            // Only a falling quota asks when the next run comes (the typical gap sorts the starts).
            let typical_gap = std::cell::OnceCell::new();
            let next_after = |t: DateTime<Utc>| match declared.map(|s| &s.expected) {
                Some(Expected::Every(interval)) => t.checked_add_signed(*interval).unwrap_or(t),
                Some(Expected::Cron(cron)) => cron.next_after(t).unwrap_or(t),
                None => typical_gap
                    .get_or_init(|| schedule::typical_gap(&starts))
                    .and_then(|gap| t.checked_add_signed(gap))
                    .unwrap_or(t),
            };
            let mut samples: Vec<(DateTime<Utc>, f64)> = Vec::with_capacity(history.len() + 1);
            samples.extend(history.iter().filter_map(|r| Some((r.started_at, r.api_quota_remaining?))));
            samples.push((run.started_at, run.api_quota_remaining.unwrap_or_default()));
            match quota_exhaustion(&samples, || next_after(run.started_at)) {
                Some(finding) => {
                    samples.pop();
                    let was =
                        samples.last().is_some_and(|(t, _)| quota_exhaustion(&samples, || next_after(*t)).is_some());
                    if !was {
                        self.open(worker_id, finding, at, None);
                    }
                }
                None => self.resolve(worker_id, AnomalyKind::QuotaExhaustion, at),
            }
        }
    }

    fn observe(&mut self, worker_id: i64, history: &mut Vec<RunSample>, run: RunSample, execution_id: &str) {
        let findings = detect(history, &run, &self.config);
        let at = to_micros(run.started_at);
        for kind in RUN_LEVEL_KINDS {
            if resolves(kind, &run, &findings, &self.config) {
                self.resolve(worker_id, kind, at);
            }
        }
        for finding in findings {
            self.open(worker_id, finding, at, Some(execution_id));
        }
        history.push(run);
        let excess = history.len().saturating_sub(self.config.window);
        history.drain(..excess);
    }
}

/// The learning state kept in a worker's row.
fn running_state(worker: &workers::Model) -> WorkerRunningState {
    WorkerRunningState {
        run_count: u64::try_from(worker.run_count).unwrap_or(0),
        duration_mean_ms: worker.duration_mean_ms,
        duration_m2: worker.duration_m2,
        records_mean: worker.records_mean,
        records_m2: worker.records_m2,
        duration_ewma_ms: worker.duration_ewma_ms,
        records_ewma: worker.records_ewma,
        last_run_at: worker.last_run_at_us.and_then(DateTime::from_timestamp_micros),
        runs_today: u64::try_from(worker.runs_today).unwrap_or(0),
        runs_today_day: worker.runs_today_day.and_then(|days| {
            chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_days(chrono::Days::new(u64::try_from(days).ok()?))
        }),
    }
}

fn store_running_state(worker: &mut workers::Model, state: &WorkerRunningState) {
    worker.duration_mean_ms = state.duration_mean_ms;
    worker.duration_m2 = state.duration_m2;
    worker.records_mean = state.records_mean;
    worker.records_m2 = state.records_m2;
    worker.duration_ewma_ms = state.duration_ewma_ms;
    worker.records_ewma = state.records_ewma;
    worker.last_run_at_us = state.last_run_at.map(to_micros);
    worker.runs_today = i64::try_from(state.runs_today).unwrap_or(i64::MAX);
    worker.runs_today_day = state.runs_today_day.map(|day| {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        i32::try_from((day - epoch).num_days()).unwrap_or(i32::MAX)
    });
}

/// Folds one stored run into its worker's row.
fn observe_run(worker: &mut workers::Model, job: &ValidReport, analysis: &Analysis) {
    let started = to_micros(job.started_at);
    let completed = to_micros(job.completed_at);
    worker.run_count += 1;
    worker.first_seen_us = worker.first_seen_us.min(started);
    if completed >= worker.last_seen_us {
        worker.last_seen_us = completed;
        worker.last_outcome = job.outcome as i32;
        worker.last_overall_score = analysis.scores.map_or(0.0, |s| s.overall);
        worker.last_quality_level = analysis.quality_level;
    }
    if !job.report.worker_type.is_empty() {
        worker.worker_type.clone_from(&job.report.worker_type);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::proto::v1::ExecutionReport;

    fn valid(outcome: Outcome, started_s: i64, completed_s: i64) -> ValidReport {
        let started_at = DateTime::from_timestamp(started_s, 0).unwrap_or_default();
        let completed_at = DateTime::from_timestamp(completed_s, 0).unwrap_or_default();
        ValidReport {
            report: ExecutionReport { worker_type: "intel".into(), ..Default::default() },
            encoded: Vec::new(),
            execution_id: Uuid::nil(),
            outcome,
            started_at,
            completed_at,
            duration_ms: (completed_s - started_s) * 1000,
        }
    }

    fn worker(id: i64, name: &str) -> workers::Model {
        workers::Model {
            id,
            worker_name: name.into(),
            worker_type: String::new(),
            first_seen_us: 100_000_000,
            last_seen_us: 200_000_000,
            last_outcome: Outcome::Success as i32,
            run_count: 1,
            duration_mean_ms: 0.0,
            duration_m2: 0.0,
            records_mean: 0.0,
            records_m2: 0.0,
            duration_ewma_ms: 0.0,
            records_ewma: 0.0,
            last_run_at_us: None,
            runs_today: 0,
            runs_today_day: None,
            last_overall_score: 0.0,
            last_quality_level: 0,
            recent_runs: None,
            schedule_interval_secs: None,
            schedule_cron: None,
            schedule_grace_secs: None,
            paused: false,
            resumed_at_us: None,
            owner: String::new(),
            description: String::new(),
            labels: None,
            health: "NEW".into(),
            missed_through_us: None,
        }
    }

    #[test]
    fn observe_run_keeps_the_latest_outcome_by_completion() {
        let mut worker = worker(1, "w");
        // An older run arriving late changes the count and first_seen, not the last outcome.
        observe_run(&mut worker, &valid(Outcome::Failed, 50, 60), &Analysis::default());
        assert_eq!((worker.run_count, worker.first_seen_us), (2, 50_000_000));
        assert_eq!(worker.last_outcome, Outcome::Success as i32);
        observe_run(&mut worker, &valid(Outcome::Timeout, 300, 400), &Analysis::default());
        assert_eq!((worker.last_seen_us, worker.last_outcome), (400_000_000, Outcome::Timeout as i32));
        assert_eq!(worker.worker_type, "intel");
    }

    fn report(worker: &str, id: u128, started_s: i64) -> ValidReport {
        let mut report = valid(Outcome::Success, started_s, started_s + 60);
        report.execution_id = Uuid::from_u128(id);
        report.report.execution_id = report.execution_id.to_string();
        report.report.worker_name = worker.into();
        report
    }

    #[test]
    fn a_plan_touches_each_worker_once_and_stores_each_id_once() {
        let now = DateTime::from_timestamp(10_000, 0).unwrap_or_default();
        let rows = [worker(1, "a"), worker(2, "b")];
        let mut plan = Plan::with_capacity(4);
        let mut asked = Vec::new();
        for job in [report("a", 1, 1000), report("b", 2, 1100), report("a", 3, 1200), report("b", 2, 1300)] {
            plan.add(&job, now, &ScoringConfig::default(), |name| {
                asked.push(name.to_owned());
                rows.iter().find(|r| r.worker_name == name).cloned().map(WorkerStart::from_row)
            })
            .expect("rows given");
        }
        plan.finish(now, DbBackend::Sqlite);
        assert_eq!(asked, ["a", "b"], "each worker's row is asked for once");
        let kinds: Vec<bool> = plan.acks.iter().map(|a| matches!(a, Ack::Stored(_))).collect();
        assert_eq!(kinds, [true, true, true, false], "the repeated id is a duplicate");
        assert_eq!(plan.stored.len(), 3);
        assert_eq!(plan.workers["a"].row.run_count, 3);
        assert_eq!(plan.workers["a"].found, rows[0], "the row as found is kept for the writer's check");
        let same: HashMap<String, workers::Model> = rows.iter().map(|r| (r.worker_name.clone(), r.clone())).collect();
        assert!(plan.matches(|name| same.get(name)));
        assert!(!plan.matches(|name| same.get(name).filter(|r| r.worker_name != "b")), "a row gone is not the plan's");
        let mut changed = same.clone();
        if let Some(b) = changed.get_mut("b") {
            b.owner = "someone else".into();
        }
        assert!(!plan.matches(|name| changed.get(name)), "a row changed since it was read is not the plan's");
        assert_eq!(plan.inserts.len(), 2, "3 rows: statements of 2 and 1");
    }

    #[test]
    fn a_row_stores_the_bytes_handed_over_or_else_the_reports_encoding() {
        let now = DateTime::from_timestamp(10_000, 0).unwrap_or_default();
        let rows = [worker(1, "a")];
        let row_of = |_: &str| rows.first().cloned().map(WorkerStart::from_row);
        let mut job = report("a", 1, 1000);
        // Bytes as received: the report plus a field this server does not know (number 999).
        job.encoded = job.report.encode_to_vec();
        prost::encoding::string::encode(999, &"from a newer client".to_string(), &mut job.encoded);
        let received = job.encoded.clone();
        let mut copied = Plan::with_capacity(1);
        copied.add(&job, now, &ScoringConfig::default(), row_of).expect("row");
        assert_eq!(copied.executions[0].report, received, "copied from the job");
        let taken = std::mem::take(&mut job.encoded);
        let mut moved = Plan::with_capacity(1);
        moved.add_encoded(&job, Some(taken), now, &ScoringConfig::default(), row_of).expect("row");
        assert_eq!(moved.executions[0].report, received, "moved in");
        // Planned again from the job after its bytes were taken: encoded anew from the report.
        let mut again = Plan::with_capacity(1);
        again.add(&job, now, &ScoringConfig::default(), row_of).expect("row");
        assert_eq!(again.executions[0].report, job.report.encode_to_vec());
    }

    #[test]
    fn a_repeated_id_of_another_worker_does_not_touch_it() {
        let now = DateTime::from_timestamp(10_000, 0).unwrap_or_default();
        let mut plan = Plan::with_capacity(2);
        let rows = [worker(1, "a")];
        plan.add(&report("a", 1, 1000), now, &ScoringConfig::default(), |_| {
            rows.first().cloned().map(WorkerStart::from_row)
        })
        .expect("row");
        // Same id, another worker with no row: a duplicate, and not a reason to need that row.
        plan.add(&report("b", 1, 1000), now, &ScoringConfig::default(), |_| None).expect("duplicate needs no row");
        assert!(!plan.workers.contains_key("b"));
        let mut unknown = Plan::with_capacity(1);
        assert!(unknown.add(&report("c", 9, 1000), now, &ScoringConfig::default(), |_| None).is_err());
    }

    #[test]
    fn a_batch_planned_from_the_cached_window_is_the_batch_planned_from_the_row() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap_or_default();
        let scoring = ScoringConfig::default();
        // Starts with nanoseconds, which the stored window keeps only to the microsecond.
        let job = |id: u128, start_s: i64, nanos: u32, outcome: Outcome| {
            let mut job = report("a", id, start_s);
            job.outcome = outcome;
            job.started_at += chrono::Duration::nanoseconds(i64::from(nanos));
            job
        };
        let mut first = Plan::with_capacity(12);
        for i in 0..12 {
            let outcome = if i % 5 == 4 { Outcome::Failed } else { Outcome::Success };
            first
                .add(&job(i, 10_000 + 3_600 * i as i64, 123_457, outcome), now, &scoring, |_| {
                    Some(WorkerStart::from_row(worker(1, "a")))
                })
                .expect("row");
        }
        first.finish(now, DbBackend::Sqlite);
        let left = first.workers["a"].left();
        assert_eq!(left.recent.as_deref(), Some(&decode_recent(left.row.recent_runs.as_deref())[..]));

        let second = |start: WorkerStart| {
            let mut plan = Plan::with_capacity(3);
            for (i, start_s) in [(100, 60_000), (101, 63_600), (102, 63_601)] {
                plan.add(&job(i, start_s, 999, Outcome::Success), now, &scoring, |_| Some(start.clone())).expect("row");
            }
            plan.finish(now, DbBackend::Sqlite);
            plan
        };
        let (cached, from_row) = (second(left.clone()), second(WorkerStart::from_row(left.row.clone())));
        assert_eq!(cached.acks, from_row.acks);
        assert_eq!(cached.workers["a"].row, from_row.workers["a"].row);
        assert_eq!(cached.book.opened.len(), from_row.book.opened.len());
        assert_eq!(cached.book.resolve_existing, from_row.book.resolve_existing);
    }
}
