//! The ingest writer: callers enqueue a validated report and wait; every report is stored by one
//! writer, in batches of ONE transaction each — executions, worker state, rollups, anomalies —
//! and each caller is answered only after its batch commits. An acknowledged report is therefore
//! durable, and a failed commit acknowledges nothing.
//!
//! Two threads share the work, so that computing a batch and committing the one before it
//! overlap instead of taking turns:
//! - the **planner** gathers what is queued (up to a batch limit) while the writer is busy, and
//!   computes what the batch does — scores, learning state, anomalies, rows ([`plan`]) — from its
//!   cache of the worker rows the previous batches left;
//! - the **writer** commits the batch: it applies the plan if the database still holds exactly the
//!   worker rows the plan was computed from and none of its reports is stored yet; otherwise (a
//!   worker changed elsewhere, a retried report, a worker not cached) it computes the batch again
//!   from the database inside the transaction. Either way what is stored is what computing it in
//!   the transaction gives. A batch is handed over when the writer is free, or while the writer
//!   commits the one before if it is full or, once that batch's COMMIT has begun, large
//!   ([`IngestConfig::hand_over_during_commit`]) — but not if its plan rests on rows of a batch
//!   the writer computes itself; at most two batches are with the writer, and either way the
//!   planner learns each outcome and corrects its cache before it plans on. On SQLite's C API
//!   connection the writer takes the worker and rollup rows its own commits left from memory
//!   instead of reading them back, for as long as no other connection has committed
//!   ([`Remembered`]).
//!
//! Idempotency: `execution_id` is unique. A report whose id is already stored, or that repeats an
//! id earlier in the same batch, is answered `Duplicate` and changes nothing.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use super::{
    FastMap, Store,
    anomalies::{insert as insert_anomalies, open_kinds as open_anomaly_kinds, resolve as resolve_anomalies},
    c_api::CApiTxn,
    entities::workers,
    executions::existing_ids,
    rollups::{PendingRollups, RollupKey},
    to_micros,
};
use crate::{
    domain::{
        rollup::Rollup,
        scoring::ScoringConfig,
        validation::{ValidReport, to_timestamp},
    },
    error::Error,
    proto::v1::{Analysis, Execution, WorkerHealth as ProtoHealth, WorkerHealthChange},
};

mod plan;

use plan::{Plan, WorkerStart};

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
    /// Reports waiting in the queue before submissions are refused with RESOURCE_EXHAUSTED. Besides
    /// these, the batch being committed, a full one waiting behind it and the one being gathered
    /// hold up to `max_batch` each.
    pub queue_capacity: usize,
    /// Most reports committed in one transaction ([`DEFAULT_MAX_BATCH`]).
    pub max_batch: usize,
    /// How long a unary SubmitReport that finds the queue full waits for a place (first come,
    /// first served) before it is refused. Zero refuses at once.
    pub admission_wait: Duration,
    /// A batch of at least this many reports goes to the writer as soon as the writer begins to
    /// commit the batch before it ([`DEFAULT_HAND_OVER_DURING_COMMIT`]).
    pub hand_over_during_commit: usize,
    pub scoring: ScoringConfig,
}

/// The default [`IngestConfig::max_batch`]. A batch takes what is queued when the writer becomes
/// free, so it reaches this size only under a backlog; there each transaction's fixed cost (BEGIN,
/// COMMIT's fsync, handing the batch over) is shared by more reports: streaming into SQLite, 2,000
/// gave ~20 % more reports/s than 1,000 (docs/performance.md, eleventh session), while a report
/// that arrives behind a full batch waits for a transaction about twice as long.
pub const DEFAULT_MAX_BATCH: usize = 2_000;

/// The default [`IngestConfig::hand_over_during_commit`]. A batch that large goes to the writer as
/// soon as the writer begins to commit the batch before it (the COMMIT, an fsync, takes
/// milliseconds), so that it is planned and waiting by the time that commit ends instead of being
/// finished and handed over after it. A smaller batch waits until the writer is free, gathering
/// what arrives meanwhile: handing it over early would only make more, smaller commits (unary
/// calls, a few at a time, never reach it). Measured with batches of 100 from 16 callers: ~10 %
/// more reports/s (docs/performance.md, fifteenth session).
pub const DEFAULT_HAND_OVER_DURING_COMMIT: usize = 256;

/// The default [`IngestConfig::admission_wait`].
pub const DEFAULT_ADMISSION_WAIT: Duration = Duration::from_millis(100);

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            queue_capacity: 10_000,
            max_batch: DEFAULT_MAX_BATCH,
            admission_wait: DEFAULT_ADMISSION_WAIT,
            hand_over_during_commit: DEFAULT_HAND_OVER_DURING_COMMIT,
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
    planned: Arc<PlanCounts>,
}

/// How the committed batches were planned, also exported as
/// `runwarden_ingest_batches_total{planned="ahead"|"in_transaction"}`.
#[derive(Debug, Default)]
pub struct PlanCounts {
    /// Committed as the planner computed them, ahead of their transaction.
    pub ahead: AtomicU64,
    /// Computed again inside their transaction (first batch of a worker, rows changed elsewhere,
    /// a retried report).
    pub in_transaction: AtomicU64,
    /// Handed to the writer while it committed the batch before (planned ahead, as
    /// [`IngestConfig::hand_over_during_commit`] allows).
    pub during_commit: AtomicU64,
}

/// The running planner and writer: each on its own OS thread with a single-threaded runtime, so
/// the CPU they need (scoring, statements) is never queued behind request handling on the
/// server's runtime.
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
    let planned = Arc::new(PlanCounts::default());
    let channels = Channels {
        executions: events.clone(),
        health: health.clone(),
        planned: planned.clone(),
        callers: tokio::runtime::Handle::try_current().ok(),
    };
    let (finished, done) = oneshot::channel();
    let (batches_tx, batches_rx) = mpsc::channel(1);
    let (settled_tx, settled_rx) = mpsc::unbounded_channel();
    let (committing_tx, committing_rx) = tokio::sync::watch::channel(0);
    let links = PlannerLinks { batches: batches_tx, settled: settled_rx, committing: committing_rx };
    let limits = BatchLimits { max: config.max_batch.max(1), during_commit: config.hand_over_during_commit.max(1) };
    let planner = plan(rx, stop.clone(), links, planned.clone(), store.backend(), limits, config.scoring);
    let writer = write(store, batches_rx, settled_tx, committing_tx, config.scoring, channels);
    on_own_thread("runwarden-plan", planner, || {});
    on_own_thread("runwarden-writer", writer, move || {
        let _ = finished.send(());
    });
    let (stream_ends, _) = broadcast::channel(EVENTS_CAPACITY);
    let ingest = Ingest { tx, capacity, admission_wait: config.admission_wait, events, health, stream_ends, planned };
    (ingest, Writer { done, stop })
}

/// Runs `task` on a thread of its own with a single-threaded runtime, then `finished`.
fn on_own_thread(
    name: &str,
    task: impl Future<Output = ()> + Send + 'static,
    finished: impl FnOnce() + Send + 'static,
) {
    let spawned = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(task),
            Err(e) => tracing::error!(error = %e, "cannot start the ingest runtime"),
        }
        finished();
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, thread = name, "cannot start an ingest thread");
    }
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

    /// How the batches committed so far were planned: (ahead, in the transaction).
    pub fn plan_counts(&self) -> (u64, u64) {
        (self.planned.ahead.load(Ordering::Relaxed), self.planned.in_transaction.load(Ordering::Relaxed))
    }

    /// Batches handed to the writer while it committed the one before, not being full.
    pub fn handed_over_during_commit(&self) -> u64 {
        self.planned.during_commit.load(Ordering::Relaxed)
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

/// A batch on its way from the planner to the writer.
struct Batch {
    /// Its place in the order batches are handed over (from 1).
    seq: u64,
    jobs: Vec<Job>,
    /// Computed ahead of the transaction from the planner's cache of worker rows; `None` when a
    /// report's worker was not in it.
    plan: Option<Plan>,
}

/// What became of a batch, as the planner needs to know it.
enum Settled {
    /// Committed as planned: the planner's cache already holds the rows it left.
    Applied,
    /// Committed after planning it again from the database (the rows had changed, a report was
    /// already stored, or there was no plan): the worker rows as the commit left them.
    Recomputed(Vec<workers::Model>),
    /// Not committed.
    Failed,
}

/// When the planner hands a batch over ([`IngestConfig`]).
struct BatchLimits {
    max: usize,
    during_commit: usize,
}

/// How the planner and the writer reach each other.
struct PlannerLinks {
    /// Batches to the writer.
    batches: mpsc::Sender<Batch>,
    /// What became of each batch, in order.
    settled: mpsc::UnboundedReceiver<Settled>,
    /// The `seq` of the batch whose COMMIT the writer has begun.
    committing: tokio::sync::watch::Receiver<u64>,
}

/// Most worker rows the planner keeps; past this, the least recently used half is dropped (their
/// workers' next batch is planned in the transaction, from the database, and cached again).
const CACHED_WORKERS: usize = 20_000;

/// The planner's copy of the worker rows as the batches it sent leave them, with their recent
/// runs decoded (a batch of a few reports per worker otherwise spends a sixth of its planning
/// decoding them again).
#[derive(Default)]
struct RowCache {
    rows: HashMap<String, (WorkerStart, u64)>,
    batches: u64,
}

impl RowCache {
    fn get(&self, name: &str) -> Option<WorkerStart> {
        self.rows.get(name).map(|(start, _)| start.clone())
    }

    fn put(&mut self, rows: impl IntoIterator<Item = WorkerStart>) {
        self.batches += 1;
        for start in rows {
            self.rows.insert(start.row.worker_name.clone(), (start, self.batches));
        }
        if self.rows.len() > CACHED_WORKERS {
            let mut used: Vec<u64> = self.rows.values().map(|(_, batch)| *batch).collect();
            let (_, &mut cutoff, _) = used.select_nth_unstable(self.rows.len() / 2);
            let newest = self.batches;
            self.rows.retain(|_, (_, batch)| *batch > cutoff || *batch == newest);
        }
    }

    fn forget<'a>(&mut self, names: impl IntoIterator<Item = &'a String>) {
        for name in names {
            self.rows.remove(name);
        }
    }
}

/// A batch with the writer, as the planner keeps track of it.
#[derive(Default)]
struct InFlight {
    seq: u64,
    workers: Vec<String>,
    /// The batch carries a plan computed from rows the cache holds as committed or as left by the
    /// batches before it, so the cache already holds the rows it leaves if it commits as planned.
    /// False for a batch the writer computes in its transaction, whose rows the planner learns
    /// only when it settles.
    foreseen: bool,
}

/// The batch before settled in other ways than planned: the batches behind it were planned from
/// rows it did not leave, and the writer will compute them again.
fn unforeseen(in_flight: &mut VecDeque<InFlight>) {
    for batch in in_flight {
        batch.foreseen = false;
    }
}

/// The batch the planner is gathering while the writer commits the previous one.
struct Pending {
    jobs: Vec<Job>,
    plan: Option<Plan>,
}

impl Pending {
    /// Room for `reports` without growing: the size of the batch before, since growing a batch's
    /// vectors one doubling at a time copied each of its reports several times.
    fn with_capacity(reports: usize) -> Pending {
        Pending { jobs: Vec::with_capacity(reports), plan: Some(Plan::with_capacity(reports)) }
    }

    fn push(&mut self, mut job: Job, cache: &RowCache, scoring: &ScoringConfig) {
        if let Some(plan) = &mut self.plan {
            // Moved into the plan's row, not copied: should the plan be dropped, planning again
            // from the jobs encodes the report anew.
            let encoded = std::mem::take(&mut job.report.encoded);
            if plan.add_encoded(&job.report, Some(encoded), job.received_at, scoring, |name| cache.get(name)).is_err() {
                self.plan = None;
            }
        }
        self.jobs.push(job);
    }

    /// True if the plan was computed from cached rows of any of `workers`.
    fn rests_on(&self, workers: &[String]) -> bool {
        self.plan.as_ref().is_some_and(|plan| workers.iter().any(|name| plan.workers.contains_key(name)))
    }

    /// Plans the gathered reports again, after the cache changed under them.
    fn replan(&mut self, cache: &RowCache, scoring: &ScoringConfig) {
        let jobs = std::mem::take(&mut self.jobs);
        *self = Pending::with_capacity(jobs.len());
        for job in jobs {
            self.push(job, cache, scoring);
        }
    }
}

/// The planner: gathers the queued reports into a batch and computes what they do while the
/// writer commits the batch before, then hands the batch over as soon as the writer is free — or,
/// once it is full (a backlog), at once, and once it is large, as soon as the writer begins the
/// COMMIT of the batch before, to wait with the writer so that no thread wake-up lies between two
/// commits. At most two batches are with the writer. A plan is computed from the rows
/// the batches before it leave if they commit as planned; if one does not, the writer finds that
/// the rows differ from what the plan was computed from, and computes the batch again in its
/// transaction ([`write_planned`]), so a plan handed over early is never applied to other rows.
/// A plan that rests on rows of a batch the writer computes itself ([`InFlight::foreseen`]) does
/// not go early: those rows are known only once that batch settles, and the plan is computed
/// again from them.
async fn plan(
    mut rx: mpsc::Receiver<Job>,
    stop: Arc<Notify>,
    links: PlannerLinks,
    counts: Arc<PlanCounts>,
    backend: DbBackend,
    limits: BatchLimits,
    scoring: ScoringConfig,
) {
    let PlannerLinks { batches, mut settled, mut committing } = links;
    let max_batch = limits.max;
    let mut cache = RowCache::default();
    let mut pending = Pending::with_capacity(0);
    // Each batch handed to the writer and not yet settled, oldest first: the one it commits, and
    // at most one batch waiting behind it.
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(2);
    let mut handed_over = 0u64;
    let (mut closing, mut drained, mut writer_gone) = (false, false, false);
    loop {
        tokio::select! {
            biased;
            outcome = settled.recv(), if !in_flight.is_empty() => {
                let InFlight { workers, .. } = in_flight.pop_front().unwrap_or_default();
                match outcome {
                    Some(Settled::Applied) => {}
                    Some(Settled::Recomputed(rows)) => {
                        // What the plan said of workers the batch did not touch after all (its
                        // reports were stored already) is not so either.
                        cache.forget(&workers);
                        cache.put(rows.into_iter().map(WorkerStart::from_row));
                        pending.replan(&cache, &scoring);
                        unforeseen(&mut in_flight);
                    }
                    Some(Settled::Failed) | None => {
                        cache.forget(&workers);
                        pending.replan(&cache, &scoring);
                        unforeseen(&mut in_flight);
                    }
                }
            }
            job = rx.recv(), if !drained && pending.jobs.len() < max_batch => match job {
                Some(job) => {
                    pending.push(job, &cache, &scoring);
                    // While the writer is busy, take what else is queued; the batch goes when
                    // the writer is free, or once it is full (below).
                    while !in_flight.is_empty() && settled.is_empty() && pending.jobs.len() < max_batch {
                        match rx.try_recv() {
                            Ok(job) => pending.push(job, &cache, &scoring),
                            Err(_) => break,
                        }
                    }
                }
                None => drained = true,
            },
            // Only wakes the loop: the batch in flight may now be committing (below).
            changed = committing.changed(), if in_flight.len() == 1 && !writer_gone => {
                writer_gone = changed.is_err();
            }
            () = stop.notified(), if !closing => {
                // Refuse new work; what is already queued is still committed.
                rx.close();
                closing = true;
            }
            else => break,
        }
        metrics::gauge!("runwarden_ingest_queue_depth").set(rx.len() as f64);
        // A batch goes when the writer is free; a full one also while the writer commits the
        // batch before it, and a large one once that batch's COMMIT has begun (see `plan`), so
        // that the writer starts on it at once.
        // Not behind a batch the writer computes itself if the pending plan rests on rows that
        // batch will change: the writer would compute that one again too, and the one behind it,
        // and so on for as long as batches keep coming early (a backlog after a restart did).
        // Asked last: the sizes rule most loop turns out without scanning the batch's workers.
        let early = || {
            in_flight.len() == 1
                && in_flight.front().is_some_and(|batch| batch.foreseen || !pending.rests_on(&batch.workers))
        };
        let full_behind = pending.jobs.len() >= max_batch && early();
        let behind_a_commit = pending.jobs.len() >= limits.during_commit
            && in_flight.front().is_some_and(|batch| *committing.borrow() == batch.seq)
            && early();
        if !pending.jobs.is_empty() && (in_flight.is_empty() || full_behind || behind_a_commit) {
            if behind_a_commit && !full_behind {
                counts.during_commit.fetch_add(1, Ordering::Relaxed);
            }
            let next = Pending::with_capacity(pending.jobs.len());
            let Pending { jobs, plan } = std::mem::replace(&mut pending, next);
            let plan = plan.map(|mut plan| {
                let now = jobs.iter().map(|job| job.received_at).max().unwrap_or_default();
                plan.finish(now, backend);
                cache.put(plan.workers.values().map(plan::Touched::left));
                plan
            });
            let mut workers: Vec<&str> = jobs.iter().map(|job| job.report.report.worker_name.as_str()).collect();
            workers.sort_unstable();
            workers.dedup();
            handed_over += 1;
            in_flight.push_back(InFlight {
                seq: handed_over,
                workers: workers.into_iter().map(str::to_owned).collect(),
                foreseen: plan.is_some(),
            });
            if batches.send(Batch { seq: handed_over, jobs, plan }).await.is_err() {
                tracing::error!("ingest writer is gone; queued reports are refused");
                break;
            }
        }
        if drained && in_flight.is_empty() && pending.jobs.is_empty() {
            break;
        }
    }
}

/// The writer: commits each batch the planner hands over, answers its callers, and tells the
/// planner what became of it.
async fn write(
    store: Store,
    mut batches: mpsc::Receiver<Batch>,
    settled: mpsc::UnboundedSender<Settled>,
    committing: tokio::sync::watch::Sender<u64>,
    scoring: ScoringConfig,
    channels: Channels,
) {
    // One transaction at a time: one connection, opened (on PostgreSQL) by this thread's runtime.
    let own = store.own_pool("runwarden-writer", 1);
    let store = own.clone().unwrap_or(store);
    let mut memory = Remembered::default();
    while let Some(batch) = batches.recv().await {
        commit(&store, &scoring, batch, &channels, &settled, &committing, &mut memory).await;
    }
    if let Some(own) = own {
        own.close().await;
    }
    tracing::info!("ingest writer stopped");
}

/// Commits one batch, tells the planner what became of it, and answers every caller in it.
///
/// The planner hears first, as soon as the transaction has ended; the callers are answered, and
/// the reports dropped, by a task on the callers' runtime ([`Channels::callers`]) while this
/// thread begins the next batch.
async fn commit(
    store: &Store,
    scoring: &ScoringConfig,
    batch: Batch,
    channels: &Channels,
    settled: &mpsc::UnboundedSender<Settled>,
    committing: &tokio::sync::watch::Sender<u64>,
    memory: &mut Remembered,
) {
    let events = &channels.executions;
    let started = Instant::now();
    let size = batch.jobs.len();
    let seq = batch.seq;
    let (jobs, acks): (Vec<_>, Vec<_>) =
        batch.jobs.into_iter().map(|job| ((job.report, job.received_at), job.ack)).unzip();
    let result = write_planned(store, scoring, &jobs, batch.plan, memory, || {
        committing.send_replace(seq);
    })
    .await;
    let elapsed = started.elapsed();
    metrics::histogram!("runwarden_ingest_batch_size").record(size as f64);
    metrics::histogram!("runwarden_ingest_commit_seconds").record(elapsed.as_secs_f64());
    match result {
        Ok((plan, applied)) => {
            let (label, count) = if applied {
                ("ahead", &channels.planned.ahead)
            } else {
                ("in_transaction", &channels.planned.in_transaction)
            };
            count.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("runwarden_ingest_batches_total", "planned" => label).increment(1);
            let Plan { acks: outcomes, health_changes, workers, .. } = plan;
            let _ = settled.send(if applied {
                Settled::Applied
            } else {
                Settled::Recomputed(workers.into_values().map(|worker| worker.row).collect())
            });
            publish_health(&channels.health, health_changes);
            let stored = outcomes.iter().filter(|a| matches!(a, Ack::Stored(_))).count();
            metrics::counter!("runwarden_reports_stored_total").increment(stored as u64);
            metrics::counter!("runwarden_reports_duplicate_total").increment((size - stored) as u64);
            tracing::debug!(size, stored, applied, elapsed_ms = elapsed.as_millis() as u64, "batch committed");
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
            let answer = move || {
                for (ack, outcome) in acks.into_iter().zip(outcomes) {
                    let _ = ack.send(Ok(outcome));
                }
                drop(jobs);
            };
            match &channels.callers {
                Some(runtime) => drop(runtime.spawn(async move { answer() })),
                None => answer(),
            }
        }
        Err(e) => {
            let _ = settled.send(Settled::Failed);
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
    planned: Arc<PlanCounts>,
    /// The runtime the callers wait on: a committed batch's callers are answered (and its reports
    /// freed) by a task there, where waking each caller is a push onto a local queue, and not by
    /// the writer, whose next transaction would wait for it.
    callers: Option<tokio::runtime::Handle>,
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
    let (plan, _) = write_planned(store, scoring, jobs, None, &mut Remembered::default(), || {}).await?;
    Ok(Written { acks: plan.acks, health_changes: plan.health_changes })
}

/// Commits `jobs` in one transaction: with `plan` (computed ahead from cached worker rows) if the
/// database still holds the rows it was computed from and none of its reports is stored yet;
/// otherwise with a plan computed in the transaction. Returns the plan committed, and whether it
/// was the one given. `committing` is called as the COMMIT begins.
///
/// Whether a planned report is stored already is not asked before the plan is applied: its
/// INSERTs skip stored ids, and if any row was skipped (a retried report, rare) the transaction is
/// rolled back and the batch planned again from the database.
///
/// The rows the writer's own commits left are taken from `memory` rather than read back, where
/// it may ([`Remembered`]).
async fn write_planned(
    store: &Store,
    scoring: &ScoringConfig,
    jobs: &[(ValidReport, DateTime<Utc>)],
    plan: Option<Plan>,
    memory: &mut Remembered,
    committing: impl Fn(),
) -> Result<(Plan, bool), DbErr> {
    let written = match store.c_api_writer() {
        Some(writer) => write_planned_on(|| writer.begin(), store, scoring, jobs, plan, memory, committing).await,
        None => write_planned_on(|| store.begin_write(), store, scoring, jobs, plan, memory, committing).await,
    };
    if written.is_err() {
        // Whether a failed COMMIT left anything is not certain: read everything again.
        memory.forget();
    }
    written
}

/// [`write_planned`] in transactions `begin` opens.
async fn write_planned_on<T: WriteTxn, F: Future<Output = Result<T, DbErr>>>(
    begin: impl Fn() -> F,
    store: &Store,
    scoring: &ScoringConfig,
    jobs: &[(ValidReport, DateTime<Utc>)],
    plan: Option<Plan>,
    memory: &mut Remembered,
    committing: impl Fn(),
) -> Result<(Plan, bool), DbErr> {
    let mut txn = begin().await?;
    memory.check(txn.data_version()?);
    if let Some(mut plan) = plan {
        let unknown: Vec<&str> =
            plan.workers.keys().map(String::as_str).filter(|name| !memory.workers.contains_key(*name)).collect();
        let loaded =
            if unknown.is_empty() { HashMap::new() } else { load_workers(&txn, store.backend(), unknown).await? };
        if plan.matches(|name| memory.workers.get(name).or_else(|| loaded.get(name))) {
            match apply(&txn, store, &mut plan, &memory.rollups).await? {
                Applied::Whole(rollups) => {
                    committing();
                    txn.commit().await?;
                    memory.committed(&plan, rollups);
                    return Ok((plan, true));
                }
                Applied::AlreadyStored => {
                    txn.rollback().await?;
                    txn = begin().await?;
                    memory.check(txn.data_version()?);
                }
            }
        }
    }
    let mut plan = plan_in(&txn, store.backend(), scoring, jobs).await?;
    match apply(&txn, store, &mut plan, &memory.rollups).await? {
        Applied::Whole(rollups) => {
            committing();
            txn.commit().await?;
            memory.committed(&plan, rollups);
            Ok((plan, false))
        }
        // Only another replica's writer, committing the same execution_id since `plan_in` looked
        // (PostgreSQL), gets here: nothing is committed and the callers retry.
        Applied::AlreadyStored => {
            Err(DbErr::Custom("a report of the batch was stored concurrently by another writer; retry".into()))
        }
    }
}

/// Most worker rows, and twice as many rollup rows, [`Remembered`] keeps (a few batches' worth):
/// past this it starts again from what the next commit leaves. A worker row carries its recent
/// runs, a few KiB.
const REMEMBERED_WORKERS: usize = 4_096;

/// The worker and rollup rows as the writer's own commits left them, kept between transactions
/// so that a batch planned ahead is checked against its workers' rows, and its rollups folded,
/// without reading back what this connection wrote itself (a fifth of a unary batch's
/// transaction did). Only on SQLite's C API connection, and only while no other connection has
/// committed since the last commit here: SQLite's `PRAGMA data_version`, read inside each
/// transaction, changes when one has (heartbeats, the guardian, admin and retention on sqlx's
/// connection, another process), and then everything is forgotten and read again.
#[derive(Default)]
struct Remembered {
    /// `data_version` as the rows below were left; `None` if nothing may be taken from them.
    version: Option<i64>,
    workers: HashMap<String, workers::Model>,
    rollups: FastMap<RollupKey, Rollup>,
}

impl Remembered {
    /// At the start of a transaction that reads `version` (`None`: a connection that cannot
    /// tell): keeps the rows if no other connection has committed since they were left.
    fn check(&mut self, version: Option<i64>) {
        if version.is_none() || version != self.version {
            self.forget();
            self.version = version;
        }
    }

    /// After `plan` committed, with `rollups` as it saved them (`data_version` is as the
    /// transaction began: a connection's own commits leave it as it is).
    fn committed(&mut self, plan: &Plan, rollups: FastMap<RollupKey, Rollup>) {
        // A plan that stores nothing writes nothing (`apply`).
        if self.version.is_none() || plan.stored.is_empty() {
            return;
        }
        if self.workers.len() + plan.workers.len() > REMEMBERED_WORKERS {
            self.workers.clear();
        }
        if self.rollups.len() + rollups.len() > 2 * REMEMBERED_WORKERS {
            self.rollups.clear();
        }
        for worker in plan.workers.values() {
            self.workers.insert(worker.row.worker_name.clone(), worker.row.clone());
        }
        self.rollups.extend(rollups);
    }

    fn forget(&mut self) {
        self.version = None;
        self.workers.clear();
        self.rollups.clear();
    }
}

/// A write transaction the ingest writer commits: sea-orm's (sqlx's connection, or PostgreSQL) or
/// the SQLite C API's ([`CApiTxn`]).
trait WriteTxn: ConnectionTrait + Send {
    async fn commit(self) -> Result<(), DbErr>;
    async fn rollback(self) -> Result<(), DbErr>;
    /// SQLite's `data_version` ([`CApiTxn::data_version`]), where the connection can tell it.
    fn data_version(&self) -> Result<Option<i64>, DbErr>;
}

impl WriteTxn for DatabaseTransaction {
    async fn commit(self) -> Result<(), DbErr> {
        DatabaseTransaction::commit(self).await
    }

    async fn rollback(self) -> Result<(), DbErr> {
        DatabaseTransaction::rollback(self).await
    }

    fn data_version(&self) -> Result<Option<i64>, DbErr> {
        Ok(None)
    }
}

impl WriteTxn for CApiTxn {
    async fn commit(self) -> Result<(), DbErr> {
        CApiTxn::commit(self)
    }

    async fn rollback(self) -> Result<(), DbErr> {
        CApiTxn::rollback(self)
    }

    fn data_version(&self) -> Result<Option<i64>, DbErr> {
        CApiTxn::data_version(self).map(Some)
    }
}

/// What [`apply`] came to.
#[must_use]
enum Applied {
    /// Everything the plan decided is written, the rollups as given; the caller commits.
    Whole(FastMap<RollupKey, Rollup>),
    /// An execution the plan stores was already stored: the transaction must be rolled back.
    AlreadyStored,
}

/// Plans `jobs` from the database, inside the write transaction: reports already stored are
/// duplicates, and a worker reporting for the first time gets its row.
async fn plan_in(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    scoring: &ScoringConfig,
    jobs: &[(ValidReport, DateTime<Utc>)],
) -> Result<Plan, DbErr> {
    let mut candidates: Vec<&str> = jobs.iter().map(|(job, _)| job.report.execution_id.as_str()).collect();
    candidates.sort_unstable();
    candidates.dedup();
    let existing: HashSet<String> = existing_ids(txn, &candidates).await?.into_iter().collect();
    let is_new = |job: &ValidReport| !existing.contains(&job.report.execution_id);
    let names: Vec<&str> =
        jobs.iter().filter(|(job, _)| is_new(job)).map(|(job, _)| job.report.worker_name.as_str()).collect();
    let mut rows = load_workers(txn, backend, names).await?;
    // New workers, registered in the order they first report.
    for (job, _) in jobs.iter().filter(|(job, _)| is_new(job)) {
        let name = &job.report.worker_name;
        if !rows.contains_key(name) {
            let inserted = workers::ActiveModel {
                worker_name: Set(name.clone()),
                worker_type: Set(job.report.worker_type.clone()),
                first_seen_us: Set(to_micros(job.started_at)),
                last_seen_us: Set(to_micros(job.completed_at)),
                last_outcome: Set(job.outcome as i32),
                run_count: Set(0),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            rows.insert(name.clone(), inserted);
        }
    }
    let mut plan = Plan::with_capacity(jobs.len());
    for (job, received_at) in jobs {
        if !is_new(job) {
            plan.skip();
        } else if plan.add(job, *received_at, scoring, |name| rows.remove(name).map(WorkerStart::from_row)).is_err() {
            return Err(DbErr::Custom(format!("worker {:?} has no row after registering it", job.report.worker_name)));
        }
    }
    let now = jobs.iter().map(|(_, received_at)| *received_at).max().unwrap_or_default();
    plan.finish(now, backend);
    Ok(plan)
}

/// Writes what `plan` decided: the executions, rollups, anomalies, alerts, the workers' rows and
/// (on PostgreSQL) the notice to the other replicas. The caller commits, unless one of the
/// executions was already stored ([`Applied::AlreadyStored`]; then nothing after them is written).
///
/// `known` holds rollup rows as the database holds them (see [`Remembered`]); the others are read.
async fn apply(
    txn: &impl ConnectionTrait,
    store: &Store,
    plan: &mut Plan,
    known: &FastMap<RollupKey, Rollup>,
) -> Result<Applied, DbErr> {
    if plan.stored.is_empty() {
        return Ok(Applied::Whole(FastMap::default()));
    }
    let mut inserted = 0;
    for statement in std::mem::take(&mut plan.inserts) {
        inserted += txn.execute_raw(statement).await?.rows_affected();
    }
    if inserted != plan.stored.len() as u64 {
        return Ok(Applied::AlreadyStored);
    }

    // Rollups fold the runs in storage order, as a rebuild does, so both give identical rows.
    let mut keys: Vec<_> =
        plan.facts.iter().flat_map(|(worker_id, f)| PendingRollups::keys_of(*worker_id, f.started_at_us)).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut rollups = PendingRollups::load(txn, &keys, known).await?;
    for (worker_id, f) in &plan.facts {
        rollups.observe(*worker_id, f);
    }
    rollups.save(txn).await?;

    // Anomalies: close what this batch's runs resolved (only where something is open), then
    // record what they opened.
    let book = &plan.book;
    let mut resolved = Vec::new();
    if !book.resolve_existing.is_empty() {
        let mut ids: Vec<i64> = book.resolve_existing.keys().map(|(w, _)| *w).collect();
        ids.sort_unstable();
        ids.dedup();
        for (worker_id, kind) in open_anomaly_kinds(txn, &ids).await? {
            if let Some(&at_us) = book.resolve_existing.get(&(worker_id, kind.as_str()))
                && resolve_anomalies(txn, worker_id, &kind, at_us).await? > 0
            {
                resolved.push((worker_id, kind, at_us));
            }
        }
    }
    insert_anomalies(txn, &book.opened).await?;

    // Alerts for what changed, in this transaction (the outbox; see crate::alerts).
    if !resolved.is_empty() || !book.opened.is_empty() || !plan.health_changes.is_empty() {
        let names: HashMap<i64, String> =
            plan.workers.values().map(|w| (w.row.id, w.row.worker_name.clone())).collect();
        let events = super::alerts::events_of(&book.opened, &resolved, &plan.health_changes, &names);
        super::alerts::record(txn, &events, to_micros(plan.now)).await?;
    }

    // One upsert writes back every worker the batch touched.
    {
        use sea_orm::{Iterable, sea_query::OnConflict};
        let values: Vec<workers::Column> =
            workers::Column::iter().filter(|c| !matches!(c, workers::Column::Id)).collect();
        let rows: Vec<_> = plan.workers.values().map(|w| w.row.clone().into_active_model()).collect();
        for chunk in rows.chunks(WORKER_UPSERT_CHUNK) {
            workers::Entity::insert_many(chunk.to_vec())
                .on_conflict(OnConflict::column(workers::Column::Id).update_columns(values.iter().copied()).to_owned())
                .exec_without_returning(txn)
                .await?;
        }
    }
    let stored: Vec<&str> = plan.stored.iter().map(String::as_str).collect();
    super::notify::send(txn, store.replica(), &stored, &plan.health_changes).await?;
    Ok(Applied::Whole(rollups.into_rows()))
}

/// Loads the rows of the workers `names` (in any order, repeats allowed), locked on PostgreSQL
/// so that concurrent writers on other replicas serialize on them.
async fn load_workers(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    mut names: Vec<&str>,
) -> Result<HashMap<String, workers::Model>, DbErr> {
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
