//! The ingest planner computes each batch ahead of its transaction from its cache of worker rows,
//! and the writer applies that plan only if the database still holds the rows it was computed
//! from. What is stored must be exactly what computing every batch inside its transaction stores,
//! and a worker row changed elsewhere in between must never be overwritten by a stale plan.

use chrono::{DateTime, TimeDelta, Utc};
use runwarden::{
    domain::{
        scoring::ScoringConfig,
        validation::{ValidReport, to_timestamp, validate_report},
    },
    proto::v1::{DataVerification, ExecutionReport, Outcome},
    store::{
        Store, StoreOptions,
        entities::{anomalies, executions, worker_rollups, workers},
        ingest::{self, Ack, IngestConfig, write_batch},
    },
};
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder, Statement, TransactionTrait};

use crate::{
    backend_tests,
    helpers::{Backend, TestDatabase, report},
};

backend_tests!(
    planned_ahead_stores_what_the_transaction_would,
    full_batches_handed_over_early_store_what_the_transaction_would,
    batches_handed_over_during_a_commit_store_what_the_transaction_would,
    a_backlog_is_planned_ahead_after_a_batch_the_writer_computed,
    a_worker_row_changed_elsewhere_is_not_overwritten,
    a_rollup_changed_elsewhere_is_folded_into,
    the_store_works_after_the_writer_stops
);

async fn open(backend: Backend) -> (TestDatabase, Store) {
    let db = TestDatabase::create(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    (db, store)
}

/// Run `i` of a worker: steady, then a duration spike, a failure streak, falling API quota and a
/// near-silent success, so anomalies open and resolve across batches.
fn run(worker: &str, i: i64, now: DateTime<Utc>) -> ValidReport {
    let (outcome, duration_ms, processed) = match i {
        25 => (Outcome::Success, 30_000, 195),
        40..=42 => (Outcome::Failed, 1_000, 0),
        55 => (Outcome::Success, 1_100, 2),
        _ => (Outcome::Success, 1_000 + (i * 37) % 200, 195),
    };
    let started = now - TimeDelta::minutes(10 * (80 - i));
    let report = ExecutionReport {
        execution_id: uuid::Uuid::new_v4().to_string(),
        started_at: Some(to_timestamp(started)),
        duration_ms: Some(duration_ms),
        outcome: outcome as i32,
        data_verification: Some(DataVerification {
            records_fetched: 200,
            records_processed: processed,
            api_calls_made: 4,
            api_calls_succeeded: 4,
            api_quota_remaining: Some(5_000 - 60 * i),
            ..Default::default()
        }),
        ..report(worker)
    };
    validate_report(Some(report), now).expect("valid")
}

async fn planned_ahead_stores_what_the_transaction_would(backend: Backend) {
    stores_what_the_transaction_would(backend, IngestConfig::default()).await;
}

/// Batches of 4: each full batch is handed to the writer while it commits the one before, planned
/// from rows that batch has not committed yet — and a retry in a batch makes that batch commit
/// other rows than planned, so the batch behind it must be computed again, not applied.
async fn full_batches_handed_over_early_store_what_the_transaction_would(backend: Backend) {
    stores_what_the_transaction_would(backend, IngestConfig { max_batch: 4, ..IngestConfig::default() }).await;
}

/// Batches of two or more go to the writer as soon as it begins the COMMIT of the batch before,
/// planned from rows that batch has not committed yet (and behind a retry, from rows it will not
/// leave).
async fn batches_handed_over_during_a_commit_store_what_the_transaction_would(backend: Backend) {
    let config = IngestConfig { hand_over_during_commit: 2, ..IngestConfig::default() };
    let during_commit = stores_what_the_transaction_would(backend, config).await;
    assert!(during_commit > 0, "no batch was handed over during a commit");
}

/// Stores the same reports through the planned path and in reference transactions, compares every
/// row, and returns how many batches were handed over during a commit.
async fn stores_what_the_transaction_would(backend: Backend, config: IngestConfig) -> u64 {
    let (_a, ahead) = open(backend).await;
    let (_b, reference) = open(backend).await;
    let now = Utc::now();
    let mut groups = Vec::new();
    for group in 0..8 {
        let mut jobs = Vec::new();
        for i in (group * 10)..(group * 10 + 10) {
            for worker in ["alpha_worker", "beta_worker", "gamma_worker"] {
                jobs.push((run(worker, i, now), now));
            }
        }
        // Now and then a retry of a report of the group before: a duplicate the planned path
        // must notice.
        if group % 3 == 2
            && let Some(previous) = groups.last().and_then(|g: &Vec<(ValidReport, DateTime<Utc>)>| g.first()).cloned()
        {
            jobs.push(previous);
        }
        groups.push(jobs);
    }

    let (ingest, writer) = ingest::spawn(ahead.clone(), config);
    let scoring = ScoringConfig::default();
    for jobs in &groups {
        // Queued together, in order: the planner takes them in batches of its own choosing.
        let acks = ingest.submit_many(jobs.clone()).await.expect("queued");
        let written = write_batch(&reference, &scoring, jobs).await.expect("reference");
        let kinds = |acks: Vec<Ack>| acks.into_iter().map(|a| matches!(a, Ack::Stored(_))).collect::<Vec<_>>();
        assert_eq!(
            kinds(acks.into_iter().map(|a| a.expect("stored")).collect()),
            kinds(written.acks),
            "the same reports are stored and the same ones are duplicates"
        );
    }
    let (planned, recomputed) = ingest.plan_counts();
    assert!(planned >= 4, "batches are planned ahead: {planned} ahead, {recomputed} in the transaction");
    let during_commit = ingest.handed_over_during_commit();

    assert_eq!(
        workers::Entity::find().order_by_asc(workers::Column::Id).all(ahead.reader()).await.expect("workers"),
        workers::Entity::find().order_by_asc(workers::Column::Id).all(reference.reader()).await.expect("workers"),
    );
    let executions = |store: &Store| {
        let db = store.reader().clone();
        async move {
            let mut rows = executions::Entity::find().all(&db).await.expect("executions");
            rows.sort_by(|a, b| a.execution_id.cmp(&b.execution_id));
            rows.into_iter().map(|row| executions::Model { id: 0, ..row }).collect::<Vec<_>>()
        }
    };
    let stored = executions(&ahead).await;
    assert_eq!(stored.len(), 240, "3 workers × 80 runs");
    assert_eq!(stored, executions(&reference).await, "every execution row, analysis included");
    let anomalies = |store: &Store| {
        let db = store.reader().clone();
        async move {
            let mut rows = anomalies::Entity::find().all(&db).await.expect("anomalies");
            rows.sort_by(|a, b| (a.worker_id, &a.kind, a.opened_at_us).cmp(&(b.worker_id, &b.kind, b.opened_at_us)));
            rows.into_iter().map(|row| anomalies::Model { id: 0, ..row }).collect::<Vec<_>>()
        }
    };
    let opened = anomalies(&ahead).await;
    assert!(opened.len() >= 3 * 3, "the spike, the streak and the quota open anomalies: {opened:?}");
    assert_eq!(opened, anomalies(&reference).await);
    assert_eq!(
        worker_rollups::Entity::find().all(ahead.reader()).await.expect("rollups").len(),
        worker_rollups::Entity::find().all(reference.reader()).await.expect("rollups").len(),
    );
    let mut rollups = worker_rollups::Entity::find().all(ahead.reader()).await.expect("rollups");
    let mut expected = worker_rollups::Entity::find().all(reference.reader()).await.expect("rollups");
    rollups.sort_by_key(|r| format!("{r:?}"));
    expected.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(rollups, expected);
    writer.shutdown().await;
    ahead.close().await;
    reference.close().await;
    during_commit
}

/// A backlog of new workers: the first batches are computed in the writer's transaction (no row
/// is cached yet), and the full batches behind them must not be handed over planned from rows
/// those batches are about to change — each would be computed again in its turn, and so would
/// the one behind it, for as long as the backlog lasts (every batch of a bulk load, measured).
async fn a_backlog_is_planned_ahead_after_a_batch_the_writer_computed(backend: Backend) {
    let (_db, store) = open(backend).await;
    let now = Utc::now();
    let (ingest, writer) = ingest::spawn(store.clone(), IngestConfig { max_batch: 8, ..IngestConfig::default() });
    let jobs: Vec<_> = (0..50)
        .flat_map(|i| ["alpha_worker", "beta_worker", "gamma_worker"].map(|worker| (run(worker, i, now), now)))
        .collect();
    let acks = ingest.submit_many(jobs).await.expect("queued");
    assert!(acks.into_iter().all(|ack| matches!(ack, Ok(Ack::Stored(_)))));
    let (ahead, in_transaction) = ingest.plan_counts();
    assert!(ahead + in_transaction >= 150 / 8, "batches of at most 8: {ahead} + {in_transaction}");
    assert!(
        in_transaction <= 3,
        "only the batches before every worker's row is known are computed in the transaction: \
         {ahead} ahead, {in_transaction} in the transaction"
    );
    writer.shutdown().await;
    store.close().await;
}

async fn a_worker_row_changed_elsewhere_is_not_overwritten(backend: Backend) {
    let (_db, store) = open(backend).await;
    let now = Utc::now();
    let (ingest, writer) = ingest::spawn(store.clone(), IngestConfig::default());
    let first = run("clip_radar_recap_worker", 1, now);
    assert!(matches!(ingest.submit(first, now).await, Ok(Ack::Stored(_))));
    let second = run("clip_radar_recap_worker", 2, now);
    assert!(matches!(ingest.submit(second.clone(), now).await, Ok(Ack::Stored(_))));
    let (ahead_before, _) = ingest.plan_counts();
    assert_eq!(ahead_before, 1, "the second report is planned from the cached row");

    // Another writer (UpsertWorker, the detector, another replica) changes the row.
    let txn = store.begin_write().await.expect("begin");
    txn.execute_raw(Statement::from_string(
        store.backend(),
        "UPDATE workers SET owner = 'team-x', description = 'changed elsewhere' \
         WHERE worker_name = 'clip_radar_recap_worker'",
    ))
    .await
    .expect("update");
    txn.commit().await.expect("commit");
    let third = run("clip_radar_recap_worker", 3, now);
    assert!(matches!(ingest.submit(third, now).await, Ok(Ack::Stored(_))));
    // A retry of a stored report, planned from the cache: still a duplicate.
    assert_eq!(ingest.submit(second, now).await.expect("answered"), Ack::Duplicate);
    // The retry's batch touched no row, so the planner forgets what it had planned for the worker
    // and the next report is planned in the transaction again; the one after, from the cache.
    for i in [4, 5] {
        let next = run("clip_radar_recap_worker", i, now);
        assert!(matches!(ingest.submit(next, now).await, Ok(Ack::Stored(_))));
    }
    let (ahead, in_transaction) = ingest.plan_counts();

    let row = workers::Entity::find().one(store.reader()).await.expect("query").expect("the worker");
    assert_eq!((row.owner.as_str(), row.description.as_str()), ("team-x", "changed elsewhere"));
    assert_eq!(row.run_count, 5, "every stored run counted once");
    assert_eq!(in_transaction, 4, "the first report, the changed row, the retry, the report after it");
    assert_eq!(ahead, 2, "the second report and the fifth");
    writer.shutdown().await;
    store.close().await;
}

/// On SQLite the writer takes the rollup rows its own commits left from memory instead of reading
/// them back, for as long as no other connection commits: a rollup another connection changed
/// in between (a rebuild, an operator's repair) must be read again and folded into, not
/// overwritten with what the writer remembered.
async fn a_rollup_changed_elsewhere_is_folded_into(backend: Backend) {
    let (_db, store) = open(backend).await;
    let now = Utc::now();
    let started = now - TimeDelta::minutes(5);
    // Every report starts at the same instant: all fold into the same hour row and day row.
    let at = |i: i64| {
        let mut report = run("ops_rollup_worker", i, now).report;
        report.started_at = Some(to_timestamp(started));
        report.completed_at = None;
        validate_report(Some(report), now).expect("valid")
    };
    let (ingest, writer) = ingest::spawn(store.clone(), IngestConfig::default());
    for i in [1, 2] {
        assert!(matches!(ingest.submit(at(i), now).await, Ok(Ack::Stored(_))));
    }
    let runs = |store: Store| async move {
        let rows = worker_rollups::Entity::find().all(store.reader()).await.expect("rollups");
        let mut runs: Vec<(i16, i64)> = rows.iter().map(|r| (r.period, r.runs)).collect();
        runs.sort_unstable();
        runs
    };
    assert_eq!(runs(store.clone()).await, vec![(1, 2), (2, 2)], "an hour row and a day row, two runs each");

    let txn = store.begin_write().await.expect("begin");
    txn.execute_raw(Statement::from_string(store.backend(), "UPDATE worker_rollups SET runs = runs + 100"))
        .await
        .expect("update");
    txn.commit().await.expect("commit");
    assert!(matches!(ingest.submit(at(3), now).await, Ok(Ack::Stored(_))));
    assert_eq!(runs(store.clone()).await, vec![(1, 103), (2, 103)], "the third run folded into the changed rows");

    // And with nothing changed elsewhere, the next run folds into what the writer left.
    assert!(matches!(ingest.submit(at(4), now).await, Ok(Ack::Stored(_))));
    assert_eq!(runs(store.clone()).await, vec![(1, 104), (2, 104)]);
    writer.shutdown().await;
    store.close().await;
}

/// The writer runs on a thread and runtime of its own, and a connection is driven by the runtime
/// that opened it: on PostgreSQL the writer commits on a connection of its own (named
/// `runwarden-writer`), closed when it stops, never one it opened into the pool everyone else
/// uses (as `runwarden demo` stops it and goes on). The store works on after it stops.
async fn the_store_works_after_the_writer_stops(backend: Backend) {
    let (_db, store) = open(backend).await;
    let now = Utc::now();
    // Two of the shared pool's connections busy (on PostgreSQL readers and writers share one
    // pool), so a writer taking from that pool would open a third.
    let busy = [store.reader().begin().await.expect("begin"), store.reader().begin().await.expect("begin")];
    let (ingest, writer) = ingest::spawn(store.clone(), IngestConfig::default());
    for i in 1..=3 {
        let report = run("intel_hourly_worker", i, now);
        assert!(matches!(ingest.submit(report, now).await, Ok(Ack::Stored(_))));
    }
    for txn in busy {
        txn.rollback().await.expect("rollback");
    }
    // On PostgreSQL the writer committed on a connection of its own, not one of the shared pool's.
    let writers = |store: Store| async move {
        let sql = "SELECT COUNT(*) FROM pg_stat_activity \
                   WHERE datname = current_database() AND application_name = 'runwarden-writer'";
        let row = store.reader().query_one_raw(Statement::from_string(store.backend(), sql)).await;
        row.expect("pg_stat_activity").expect("a row").try_get_by_index::<i64>(0).expect("count")
    };
    if backend == Backend::Postgres {
        assert_eq!(writers(store.clone()).await, 1, "the writer's own connection");
    }
    writer.shutdown().await;
    if backend == Backend::Postgres {
        // Its server process exits a moment after the connection is closed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while writers(store.clone()).await > 0 {
            assert!(std::time::Instant::now() < deadline, "the writer's connection is closed with it");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    // Every connection the pools hold, all at once (so each is handed out), still answers.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(store.reader().begin().await.expect("a pooled connection after the writer stopped"));
    }
    for txn in &held {
        let row = txn
            .query_one_raw(Statement::from_string(store.backend(), "SELECT COUNT(*) FROM executions"))
            .await
            .expect("a query on a pooled connection after the writer stopped")
            .expect("a row");
        assert_eq!(row.try_get_by_index::<i64>(0).expect("count"), 3);
    }
    drop(held);
    let txn = store.begin_write().await.expect("a write transaction after the writer stopped");
    txn.commit().await.expect("commit");
    store.close().await;
}
