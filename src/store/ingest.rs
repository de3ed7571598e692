//! The ingest writer: one task owns every write of reports. Callers enqueue a validated report
//! and wait; the writer takes everything pending (up to a batch limit), stores it in ONE
//! transaction — executions, worker state — and answers each caller only after the commit.
//! An acknowledged report is therefore durable, and a failed commit acknowledges nothing.
//!
//! Idempotency: `execution_id` is unique. A report whose id is already stored, or that repeats an
//! id earlier in the same batch, is answered `Duplicate` and changes nothing.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use prost::Message;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QuerySelect,
};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use super::{
    Store,
    anomalies::{
        NewAnomaly, decode_recent, encode_recent, insert as insert_anomalies, open_kinds as open_anomaly_kinds,
        resolve as resolve_anomalies,
    },
    entities::{executions, workers},
    executions::{MAX_ROWS_PER_INSERT, existing_ids, insert_new as insert_executions},
    rollups::PendingRollups,
    to_micros,
};
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
        validation::{ValidReport, to_timestamp},
        worker_settings,
    },
    error::Error,
    proto::v1::{Analysis, Execution, Outcome, WorkerHealth as ProtoHealth, WorkerHealthChange},
};

/// Worker rows per upsert statement: well under SQLite's and PostgreSQL's bound-parameter limits.
const WORKER_UPSERT_CHUNK: usize = 100;

/// What happened to one submitted report.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    /// Stored by this submission, with what the server computed for it.
    Stored(Box<Analysis>),
    /// A report with this execution_id was already stored; nothing changed.
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Reports waiting for the writer before submissions are refused with RESOURCE_EXHAUSTED.
    pub queue_capacity: usize,
    /// Most reports committed in one transaction.
    pub max_batch: usize,
    /// How long a unary SubmitReport that finds the queue full waits for a place (first come,
    /// first served) before it is refused. Zero refuses at once.
    pub admission_wait: Duration,
    pub scoring: ScoringConfig,
}

/// The default [`IngestConfig::admission_wait`].
pub const DEFAULT_ADMISSION_WAIT: Duration = Duration::from_millis(100);

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            queue_capacity: 10_000,
            max_batch: 1_000,
            admission_wait: DEFAULT_ADMISSION_WAIT,
            scoring: ScoringConfig::default(),
        }
    }
}

/// A place in the writer's queue held for one report: a call that found the queue full waited
/// for it ([`Ingest::reserve`]) and is admitted with it, ahead of anyone who came later. Cloneable
/// so it can travel in a request's extensions; the first [`Ingest::submit_in`] uses it.
#[derive(Clone)]
pub struct Reservation(Arc<std::sync::Mutex<Option<mpsc::OwnedPermit<Job>>>>);

impl Reservation {
    /// The place, the first time; `None` once used.
    fn take(&self) -> Option<mpsc::OwnedPermit<Job>> {
        self.0.lock().ok()?.take()
    }
}

/// What waiting for a place in the queue ended with.
pub enum Admission {
    Reserved(Reservation),
    /// No place came up in time.
    TimedOut,
    /// The writer is shutting down.
    Closed,
}

struct Job {
    report: ValidReport,
    received_at: DateTime<Utc>,
    ack: oneshot::Sender<Result<Ack, Error>>,
}

/// Executions published to live watchers after each commit.
pub const EVENTS_CAPACITY: usize = 1024;

/// The submitting side of the writer; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    tx: mpsc::Sender<Job>,
    capacity: usize,
    admission_wait: Duration,
    events: broadcast::Sender<Arc<Execution>>,
    health: broadcast::Sender<Arc<WorkerHealthChange>>,
    /// Streams other replicas ended (for the guardian's cache).
    stream_ends: broadcast::Sender<Arc<Vec<String>>>,
}

/// The running writer: its own OS thread with a single-threaded runtime, so the CPU it needs
/// (scoring, statements) is never queued behind request handling on the server's runtime.
pub struct Writer {
    done: oneshot::Receiver<()>,
    stop: Arc<Notify>,
}

/// Starts the writer on `store`.
pub fn spawn(store: Store, config: IngestConfig) -> (Ingest, Writer) {
    let capacity = config.queue_capacity.max(1);
    let (tx, rx) = mpsc::channel(capacity);
    let stop = Arc::new(Notify::new());
    let (events, _) = broadcast::channel(EVENTS_CAPACITY);
    let (health, _) = broadcast::channel(EVENTS_CAPACITY);
    let channels = Channels { executions: events.clone(), health: health.clone() };
    let (finished, done) = oneshot::channel();
    let writer_stop = stop.clone();
    let task = run(store, rx, config.max_batch.max(1), config.scoring, writer_stop, channels);
    let spawned = std::thread::Builder::new().name("runwarden-writer".into()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(task),
            Err(e) => tracing::error!(error = %e, "cannot start the ingest writer's runtime"),
        }
        let _ = finished.send(());
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the ingest writer thread");
    }
    let (stream_ends, _) = broadcast::channel(EVENTS_CAPACITY);
    (Ingest { tx, capacity, admission_wait: config.admission_wait, events, health, stream_ends }, Writer { done, stop })
}

/// The refusal of a report that finds the queue full, counted in
/// `runwarden_ingest_rejected_total{reason="queue_full"}`.
pub fn queue_full(capacity: usize) -> Error {
    metrics::counter!("runwarden_ingest_rejected_total", "reason" => "queue_full").increment(1);
    Error::ResourceExhausted(format!("ingest queue is full ({capacity} reports waiting); retry with backoff"))
}

impl Ingest {
    /// Queues `report` and waits until it is committed (or refused).
    pub async fn submit(&self, report: ValidReport, received_at: DateTime<Utc>) -> Result<Ack, Error> {
        self.submit_in(None, Duration::ZERO, report, received_at).await
    }

    /// [`Ingest::submit`] into the place `reservation` holds, if it still holds one; otherwise, if
    /// the queue is full, after waiting up to `wait` for a place ([`Ingest::reserve`]).
    ///
    /// The report is queued (or refused) before this returns; the future only waits for the
    /// commit. So the report is moved once, into the queue, and the future every unary call
    /// carries stays small: a report is ~640 bytes, and an `async fn` holding it across its
    /// awaits made each call's future several KiB, copied at every level that awaited it.
    pub fn submit_in(
        &self,
        reservation: Option<&Reservation>,
        wait: Duration,
        report: ValidReport,
        received_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<Ack, Error>> + Send + 'static {
        let (ack, done) = oneshot::channel();
        let job = Job { report, received_at, ack };
        let queued = match reservation.and_then(Reservation::take) {
            Some(permit) => {
                permit.send(job);
                Queued::Sent
            }
            None => match self.tx.try_send(job) {
                Ok(()) => Queued::Sent,
                Err(mpsc::error::TrySendError::Closed(_)) => Queued::Refused(shutting_down()),
                Err(mpsc::error::TrySendError::Full(_)) if wait.is_zero() => Queued::Refused(queue_full(self.capacity)),
                Err(mpsc::error::TrySendError::Full(job)) => {
                    let (tx, capacity) = (self.tx.clone(), self.capacity);
                    // Boxed: the rare path, which holds the report while it waits.
                    Queued::Waiting(Box::pin(async move {
                        match reserve(tx, wait).await {
                            Admission::Reserved(place) => match place.take() {
                                Some(permit) => {
                                    permit.send(job);
                                    Ok(())
                                }
                                None => Err(queue_full(capacity)),
                            },
                            Admission::TimedOut => Err(queue_full(capacity)),
                            Admission::Closed => Err(shutting_down()),
                        }
                    }))
                }
            },
        };
        if matches!(queued, Queued::Sent) {
            metrics::gauge!("runwarden_ingest_queue_depth").set(self.depth() as f64);
        }
        async move {
            match queued {
                Queued::Sent => {}
                Queued::Refused(e) => return Err(e),
                Queued::Waiting(admitted) => admitted.await?,
            }
            done.await.unwrap_or_else(|_| Err(Error::Unavailable("report was not stored; retry".into())))
        }
    }

    /// Queues all of `reports` at once (or none: a batch that does not fit in the queue is
    /// refused whole) and waits until they are committed. One result per report, in order.
    pub async fn submit_many(
        &self,
        reports: Vec<(ValidReport, DateTime<Utc>)>,
    ) -> Result<Vec<Result<Ack, Error>>, Error> {
        if reports.is_empty() {
            return Ok(Vec::new());
        }
        let permits = self.tx.try_reserve_many(reports.len()).map_err(|e| match e {
            mpsc::error::TrySendError::Full(()) => {
                metrics::counter!("runwarden_ingest_rejected_total", "reason" => "queue_full")
                    .increment(reports.len() as u64);
                Error::ResourceExhausted(format!(
                    "ingest queue cannot take {} more reports (capacity {}); retry with backoff",
                    reports.len(),
                    self.capacity
                ))
            }
            mpsc::error::TrySendError::Closed(()) => shutting_down(),
        })?;
        let mut waiting = Vec::with_capacity(reports.len());
        for (permit, (report, received_at)) in permits.zip(reports) {
            let (ack, done) = oneshot::channel();
            permit.send(Job { report, received_at, ack });
            waiting.push(done);
        }
        metrics::gauge!("runwarden_ingest_queue_depth").set(self.depth() as f64);
        let mut results = Vec::with_capacity(waiting.len());
        for done in waiting {
            results.push(done.await.unwrap_or_else(|_| Err(Error::Unavailable("report was not stored; retry".into()))));
        }
        Ok(results)
    }

    /// Every execution stored from now on, right after its commit.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Execution>> {
        self.events.subscribe()
    }

    /// Every worker health change from now on (from ingest, the detector and UpsertWorker).
    pub fn subscribe_health(&self) -> broadcast::Receiver<Arc<WorkerHealthChange>> {
        self.health.subscribe()
    }

    /// Announces health changes committed elsewhere (the detector, UpsertWorker).
    pub fn publish_health(&self, changes: Vec<WorkerHealthChange>) {
        publish_health(&self.health, changes);
    }

    /// Health changes another replica committed (already logged there).
    pub fn relay_health(&self, changes: Vec<WorkerHealthChange>) {
        for change in changes {
            let _ = self.health.send(Arc::new(change));
        }
    }

    /// Streams another replica closed, orphaned or cleaned.
    pub fn relay_stream_ends(&self, stream_ids: Vec<String>) {
        let _ = self.stream_ends.send(Arc::new(stream_ids));
    }

    pub fn subscribe_stream_ends(&self) -> broadcast::Receiver<Arc<Vec<String>>> {
        self.stream_ends.subscribe()
    }

    /// An execution another replica committed, to this replica's watchers.
    pub fn publish_execution(&self, execution: Arc<Execution>) {
        let _ = self.events.send(execution);
    }

    /// Reports waiting for the writer.
    pub fn depth(&self) -> usize {
        self.capacity - self.tx.capacity()
    }

    /// Whether a report submitted now would be refused for want of room.
    pub fn is_full(&self) -> bool {
        self.tx.capacity() == 0
    }

    /// Most reports that may wait for the writer.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long a unary call that finds the queue full waits for a place.
    pub fn admission_wait(&self) -> Duration {
        self.admission_wait
    }

    /// Waits up to `wait` for a place in the queue; waiters get places in the order they came.
    pub async fn reserve(&self, wait: Duration) -> Admission {
        reserve(self.tx.clone(), wait).await
    }
}

async fn reserve(tx: mpsc::Sender<Job>, wait: Duration) -> Admission {
    match tokio::time::timeout(wait, tx.reserve_owned()).await {
        Ok(Ok(permit)) => Admission::Reserved(Reservation(Arc::new(std::sync::Mutex::new(Some(permit))))),
        Ok(Err(_)) => Admission::Closed,
        Err(_) => Admission::TimedOut,
    }
}

/// Where [`Ingest::submit_in`] left a report.
enum Queued {
    Sent,
    Refused(Error),
    /// Waiting for a place in a full queue.
    Waiting(std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>),
}

fn shutting_down() -> Error {
    Error::Unavailable("server is shutting down; retry".into())
}

impl Writer {
    /// Stops accepting, commits everything already queued, and waits for the task to end.
    pub async fn shutdown(self) {
        self.stop.notify_one();
        if self.done.await.is_err() {
            tracing::error!("ingest writer thread ended abnormally");
        }
    }
}

async fn run(
    store: Store,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    scoring: ScoringConfig,
    stop: Arc<Notify>,
    events: Channels,
) {
    let mut closing = false;
    loop {
        let first = tokio::select! {
            biased;
            job = rx.recv() => match job {
                Some(job) => job,
                None => break,
            },
            () = stop.notified(), if !closing => {
                // Refuse new work; what is already queued is still committed below.
                rx.close();
                closing = true;
                continue;
            }
        };
        let mut batch = Vec::with_capacity(max_batch.min(rx.len() + 1));
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        commit(&store, &scoring, batch, &events).await;
        metrics::gauge!("runwarden_ingest_queue_depth").set(rx.len() as f64);
    }
    tracing::info!("ingest writer stopped");
}

/// Commits one batch and answers every caller in it.
async fn commit(store: &Store, scoring: &ScoringConfig, batch: Vec<Job>, channels: &Channels) {
    let events = &channels.executions;
    let started = Instant::now();
    let size = batch.len();
    let (jobs, acks): (Vec<_>, Vec<_>) = batch.into_iter().map(|job| ((job.report, job.received_at), job.ack)).unzip();
    let result = write_batch(store, scoring, &jobs).await;
    let elapsed = started.elapsed();
    metrics::histogram!("runwarden_ingest_batch_size").record(size as f64);
    metrics::histogram!("runwarden_ingest_commit_seconds").record(elapsed.as_secs_f64());
    match result {
        Ok(Written { acks: outcomes, health_changes }) => {
            publish_health(&channels.health, health_changes);
            let stored = outcomes.iter().filter(|a| matches!(a, Ack::Stored(_))).count();
            metrics::counter!("runwarden_reports_stored_total").increment(stored as u64);
            metrics::counter!("runwarden_reports_duplicate_total").increment((size - stored) as u64);
            tracing::debug!(size, stored, elapsed_ms = elapsed.as_millis() as u64, "batch committed");
            if events.receiver_count() > 0 {
                for ((job, received_at), outcome) in jobs.iter().zip(&outcomes) {
                    if let Ack::Stored(analysis) = outcome {
                        let _ = events.send(Arc::new(Execution {
                            execution_id: job.report.execution_id.clone(),
                            report: Some(job.report.clone()),
                            received_at: Some(to_timestamp(*received_at)),
                            scores: analysis.scores,
                            quality_level: analysis.quality_level,
                            reasons: analysis.reasons.clone(),
                            weights: analysis.weights,
                            learning: analysis.learning,
                        }));
                    }
                }
            }
            for (ack, outcome) in acks.into_iter().zip(outcomes) {
                let _ = ack.send(Ok(outcome));
            }
        }
        Err(e) => {
            metrics::counter!("runwarden_db_errors_total").increment(1);
            tracing::warn!(error = %e, size, "batch not committed; every report in it is refused");
            for ack in acks {
                let _ = ack.send(Err(Error::Unavailable("database unavailable; report not stored, retry".into())));
            }
        }
    }
}

/// Where the writer announces what it committed.
struct Channels {
    executions: broadcast::Sender<Arc<Execution>>,
    health: broadcast::Sender<Arc<WorkerHealthChange>>,
}

fn publish_health(health: &broadcast::Sender<Arc<WorkerHealthChange>>, changes: Vec<WorkerHealthChange>) {
    for change in changes {
        tracing::info!(
            worker = %change.worker_name,
            previous = worker_health_name(change.previous),
            current = worker_health_name(change.current),
            "worker health changed"
        );
        let _ = health.send(Arc::new(change));
    }
}

/// The wire name of a health value, for logs.
pub fn worker_health_name(value: i32) -> &'static str {
    ProtoHealth::try_from(value).map_or("UNSPECIFIED", |h| h.as_str_name())
}

/// A domain health as its wire enum.
pub fn health_to_proto(health: &str) -> ProtoHealth {
    match health {
        "NEW" => ProtoHealth::New,
        "UP" => ProtoHealth::Up,
        "LATE" => ProtoHealth::Late,
        "DOWN" => ProtoHealth::Down,
        "PAUSED" => ProtoHealth::Paused,
        _ => ProtoHealth::Unspecified,
    }
}

/// A health change of `worker` as the event WatchHealth sends.
pub fn health_change(worker: &str, previous: &str, current: &str, at: DateTime<Utc>) -> WorkerHealthChange {
    WorkerHealthChange {
        worker_name: worker.to_owned(),
        previous: health_to_proto(previous) as i32,
        current: health_to_proto(current) as i32,
        at: Some(to_timestamp(at)),
    }
}

/// What one committed batch produced.
pub struct Written {
    /// One per job, in order.
    pub acks: Vec<Ack>,
    /// Workers whose health the batch changed (a LATE worker reporting is UP again).
    pub health_changes: Vec<WorkerHealthChange>,
}

/// Stores the new reports of `jobs` in one transaction; returns one [`Ack`] per job, in order.
/// This is the writer's own commit; bulk loaders (the benchmark, `runwarden demo`) call it
/// directly so that what they store is exactly what ingest would have stored.
pub async fn write_batch(
    store: &Store,
    scoring: &ScoringConfig,
    jobs: &[(ValidReport, DateTime<Utc>)],
) -> Result<Written, DbErr> {
    let txn = store.begin_write().await?;

    // First occurrence of each id in the batch is the candidate; later copies are duplicates.
    let mut first_index: HashMap<&str, usize> = HashMap::with_capacity(jobs.len());
    let mut acks = vec![Ack::Duplicate; jobs.len()];
    for (i, (job, _)) in jobs.iter().enumerate() {
        first_index.entry(job.report.execution_id.as_str()).or_insert(i);
    }
    let candidates: Vec<&str> = first_index.keys().copied().collect();
    let existing = existing_ids(&txn, &candidates).await?;
    for id in &existing {
        first_index.remove(id.as_str());
    }
    let mut new_indices: Vec<usize> = first_index.into_values().collect();
    new_indices.sort_unstable();
    if new_indices.is_empty() {
        txn.commit().await?;
        return Ok(Written { acks, health_changes: Vec::new() });
    }
    let now = jobs.iter().map(|(_, received_at)| *received_at).max().unwrap_or_default();

    let mut worker_rows = load_workers(&txn, store.backend(), jobs, &new_indices).await?;
    let mut touched: HashMap<String, bool> = HashMap::new();
    let mut recent: HashMap<i64, Vec<RunSample>> = HashMap::new();
    let mut book = AnomalyBook::default();
    let mut schedules: HashMap<i64, Option<Schedule>> = HashMap::new();
    // Executions go to SQLite (or PostgreSQL) in statements of MAX_ROWS_PER_INSERT while the
    // next rows are computed: the statement runs on the connection's own thread, so the two
    // overlap instead of taking turns. At most one statement is in flight; it is awaited before
    // anything else uses the transaction.
    let mut rows = Vec::with_capacity(new_indices.len().min(MAX_ROWS_PER_INSERT));
    let mut inserting: Option<InFlight<'_>> = None;
    let mut facts = Vec::with_capacity(new_indices.len());
    for &i in &new_indices {
        let (job, received_at) = &jobs[i];
        let name = &job.report.worker_name;
        let worker = match worker_rows.get_mut(name) {
            Some(worker) => worker,
            None => {
                settle(&mut inserting).await?;
                let inserted = workers::ActiveModel {
                    worker_name: Set(name.clone()),
                    worker_type: Set(job.report.worker_type.clone()),
                    first_seen_us: Set(to_micros(job.started_at)),
                    last_seen_us: Set(to_micros(job.completed_at)),
                    last_outcome: Set(job.outcome as i32),
                    run_count: Set(0),
                    ..Default::default()
                }
                .insert(&txn)
                .await?;
                touched.insert(name.clone(), true);
                worker_rows.entry(name.clone()).or_insert(inserted)
            }
        };
        let mut state = running_state(worker);
        let analysis = analyze(job, &mut state, scoring);
        store_running_state(worker, &state);
        observe_run(worker, job, &analysis);
        let history = recent.entry(worker.id).or_insert_with(|| decode_recent(worker.recent_runs.as_deref()));
        // Parsed once per worker and batch (a cron is parsed, its default grace searched).
        let declared = schedules.entry(worker.id).or_insert_with(|| {
            worker_settings::declared(
                worker.schedule_interval_secs,
                worker.schedule_cron.as_deref(),
                worker.schedule_grace_secs,
                worker.paused,
                *received_at,
            )
        });
        let run = run_sample(job, &analysis);
        book.observe_schedule(worker.id, history, &run, declared.as_ref(), to_micros(*received_at));
        book.observe(worker.id, history, run, &job.report.execution_id);
        let scores = analysis.scores.unwrap_or_default();
        facts.push((worker.id, ExecutionFacts::from_report(&job.report, &scores, to_micros(job.started_at))));
        touched.entry(name.clone()).or_insert(false);
        let learning = analysis.learning.unwrap_or_default();
        rows.push(executions::Model {
            id: 0,
            execution_id: job.report.execution_id.clone(),
            worker_id: worker.id,
            outcome: job.outcome as i32,
            started_at_us: to_micros(job.started_at),
            completed_at_us: to_micros(job.completed_at),
            duration_ms: job.duration_ms,
            received_at_us: to_micros(*received_at),
            records_fetched: job.report.data_verification.as_ref().map_or(0, |d| d.records_fetched),
            records_processed: job.report.data_verification.as_ref().map_or(0, |d| d.records_processed),
            records_failed: job.report.data_verification.as_ref().map_or(0, |d| d.records_failed),
            report: job.report.encode_to_vec(),
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
        acks[i] = Ack::Stored(Box::new(analysis));
        if rows.len() == MAX_ROWS_PER_INSERT {
            settle(&mut inserting).await?;
            let full = std::mem::replace(&mut rows, Vec::with_capacity(MAX_ROWS_PER_INSERT));
            inserting = Some(start(insert_executions(&txn, full)));
        }
    }
    settle(&mut inserting).await?;
    drop(inserting);
    insert_executions(&txn, rows).await?;

    // Rollups fold the runs in storage order, as a rebuild does, so both give identical rows.
    let mut keys: Vec<_> =
        facts.iter().flat_map(|(worker_id, f)| PendingRollups::keys_of(*worker_id, f.started_at_us)).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut rollups = PendingRollups::load(&txn, &keys).await?;
    for (worker_id, f) in &facts {
        rollups.observe(*worker_id, f);
    }
    rollups.save(&txn).await?;

    // Anomalies: close what this batch's runs resolved (only where something is open), then
    // record what they opened.
    let mut resolved = Vec::new();
    if !book.resolve_existing.is_empty() {
        let mut ids: Vec<i64> = book.resolve_existing.keys().map(|(w, _)| *w).collect();
        ids.sort_unstable();
        ids.dedup();
        for (worker_id, kind) in open_anomaly_kinds(&txn, &ids).await? {
            if let Some(&at_us) = book.resolve_existing.get(&(worker_id, kind.as_str()))
                && resolve_anomalies(&txn, worker_id, &kind, at_us).await? > 0
            {
                resolved.push((worker_id, kind, at_us));
            }
        }
    }
    insert_anomalies(&txn, &book.opened).await?;
    let mut health_changes = Vec::new();
    for worker in worker_rows.values_mut() {
        if let Some(history) = recent.get(&worker.id) {
            worker.recent_runs = Some(encode_recent(history));
        }
        if touched.contains_key(&worker.worker_name) {
            let starts: Vec<DateTime<Utc>> =
                recent.get(&worker.id).map(|h| h.iter().map(|r| r.started_at).collect()).unwrap_or_default();
            let health = super::workers::verdict_with_starts(worker, &starts, now).health.as_str();
            if health != worker.health {
                health_changes.push(health_change(&worker.worker_name, &worker.health, health, now));
                health.clone_into(&mut worker.health);
            }
        }
    }

    // Alerts for what changed, in this transaction (the outbox; see crate::alerts).
    if !resolved.is_empty() || !book.opened.is_empty() || !health_changes.is_empty() {
        let names: HashMap<i64, String> = worker_rows.values().map(|w| (w.id, w.worker_name.clone())).collect();
        let events = super::alerts::events_of(&book.opened, &resolved, &health_changes, &names);
        super::alerts::record(&txn, &events, to_micros(now)).await?;
    }

    // One upsert writes back every worker the batch touched.
    let touched_rows: Vec<_> =
        touched.keys().filter_map(|name| worker_rows.remove(name)).map(|w| w.into_active_model()).collect();
    {
        use sea_orm::{Iterable, sea_query::OnConflict};
        let values: Vec<workers::Column> =
            workers::Column::iter().filter(|c| !matches!(c, workers::Column::Id)).collect();
        let mut pending = touched_rows.into_iter().peekable();
        while pending.peek().is_some() {
            let chunk: Vec<_> = pending.by_ref().take(WORKER_UPSERT_CHUNK).collect();
            workers::Entity::insert_many(chunk)
                .on_conflict(OnConflict::column(workers::Column::Id).update_columns(values.iter().copied()).to_owned())
                .exec_without_returning(&txn)
                .await?;
        }
    }
    let stored: Vec<&str> = jobs
        .iter()
        .zip(&acks)
        .filter(|(_, ack)| matches!(ack, Ack::Stored(_)))
        .map(|((job, _), _)| job.report.execution_id.as_str())
        .collect();
    super::notify::send(&txn, store.replica(), &stored, &health_changes).await?;
    txn.commit().await?;
    Ok(Written { acks, health_changes })
}

/// A statement sent to the database and not yet awaited.
type InFlight<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), DbErr>> + Send + 'a>>;

/// Polls `statement` once, which sends it to the connection (sqlx runs SQLite on its own thread,
/// and PostgreSQL on the server), and returns it to be awaited after other work.
fn start<'a>(statement: impl std::future::Future<Output = Result<(), DbErr>> + Send + 'a) -> InFlight<'a> {
    use futures::FutureExt;
    let mut statement: InFlight<'a> = Box::pin(statement);
    match (&mut statement).now_or_never() {
        Some(done) => Box::pin(std::future::ready(done)),
        None => statement,
    }
}

/// Waits for the statement in flight, if any, so the transaction is free for the next one.
async fn settle(in_flight: &mut Option<InFlight<'_>>) -> Result<(), DbErr> {
    match in_flight.take() {
        Some(statement) => statement.await,
        None => Ok(()),
    }
}

/// Loads the rows of the workers that `new_indices` report for, locked on PostgreSQL so that
/// concurrent writers on other replicas serialize on them.
async fn load_workers(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    jobs: &[(ValidReport, DateTime<Utc>)],
    new_indices: &[usize],
) -> Result<HashMap<String, workers::Model>, DbErr> {
    let mut names: Vec<&str> = new_indices.iter().map(|&i| jobs[i].0.report.worker_name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut rows = HashMap::with_capacity(names.len());
    for chunk in names.chunks(500) {
        let mut query = workers::Entity::find().filter(workers::Column::WorkerName.is_in(chunk.iter().copied()));
        if backend == DbBackend::Postgres {
            query = query.lock_exclusive();
        }
        for row in query.all(txn).await? {
            rows.insert(row.worker_name.clone(), row);
        }
    }
    Ok(rows)
}

/// A stored run as anomaly detection sees it.
fn run_sample(job: &ValidReport, analysis: &Analysis) -> RunSample {
    let data = job.report.data_verification.clone().unwrap_or_default();
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
struct AnomalyBook {
    config: AnomalyConfig,
    opened: Vec<NewAnomaly>,
    /// (worker, kind) → the first run in this batch that resolved anomalies opened before it.
    resolve_existing: HashMap<(i64, &'static str), i64>,
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
        let mut starts: Vec<DateTime<Utc>> = history.iter().map(|r| r.started_at).collect();
        if let Some(declared) = declared.filter(|s| !s.paused) {
            let was = schedule::running_too_often(declared, &starts);
            starts.push(run.started_at);
            match running_too_often_finding(declared, &starts) {
                Some(finding) if !was => self.open(worker_id, finding, at, None),
                Some(_) => {}
                None => self.resolve(worker_id, AnomalyKind::RunningTooOften, at),
            }
            starts.pop();
        }
        if run.api_quota_remaining.is_some() {
            // When the next run comes: the declared schedule, else the typical gap between starts.
            starts.push(run.started_at);
            let typical_gap = schedule::typical_gap(&starts);
            let next_after = |t: DateTime<Utc>| match declared.map(|s| &s.expected) {
                Some(Expected::Every(interval)) => t.checked_add_signed(*interval).unwrap_or(t),
                Some(Expected::Cron(cron)) => cron.next_after(t).unwrap_or(t),
                None => typical_gap.and_then(|gap| t.checked_add_signed(gap)).unwrap_or(t),
            };
            let mut samples: Vec<(DateTime<Utc>, f64)> =
                history.iter().filter_map(|r| Some((r.started_at, r.api_quota_remaining?))).collect();
            let was = samples.last().is_some_and(|(t, _)| quota_exhaustion(&samples, next_after(*t)).is_some());
            samples.push((run.started_at, run.api_quota_remaining.unwrap_or_default()));
            match quota_exhaustion(&samples, next_after(run.started_at)) {
                Some(finding) if !was => self.open(worker_id, finding, at, None),
                Some(_) => {}
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
    use super::*;
    use crate::proto::v1::{ExecutionReport, Outcome};
    use uuid::Uuid;

    fn valid(outcome: Outcome, started_s: i64, completed_s: i64) -> ValidReport {
        let started_at = DateTime::from_timestamp(started_s, 0).unwrap_or_default();
        let completed_at = DateTime::from_timestamp(completed_s, 0).unwrap_or_default();
        ValidReport {
            report: ExecutionReport { worker_type: "intel".into(), ..Default::default() },
            execution_id: Uuid::nil(),
            outcome,
            started_at,
            completed_at,
            duration_ms: (completed_s - started_s) * 1000,
        }
    }

    #[test]
    fn observe_run_keeps_the_latest_outcome_by_completion() {
        let mut worker = workers::Model {
            id: 1,
            worker_name: "w".into(),
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
        };
        // An older run arriving late changes the count and first_seen, not the last outcome.
        observe_run(&mut worker, &valid(Outcome::Failed, 50, 60), &Analysis::default());
        assert_eq!((worker.run_count, worker.first_seen_us), (2, 50_000_000));
        assert_eq!(worker.last_outcome, Outcome::Success as i32);
        observe_run(&mut worker, &valid(Outcome::Timeout, 300, 400), &Analysis::default());
        assert_eq!((worker.last_seen_us, worker.last_outcome), (400_000_000, Outcome::Timeout as i32));
        assert_eq!(worker.worker_type, "intel");
    }
}
