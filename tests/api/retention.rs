//! Retention deletes raw executions, rollups, resolved anomalies and alert history past their
//! windows, in batches; statistics keep counting the runs whose raw rows are gone, and alerting
//! keeps every row it still needs.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use runwarden::{
    domain::{
        alerting::AlertEvent,
        anomaly::{AnomalyKind, Evidence, Finding, Severity},
        validation::to_timestamp,
    },
    proto::v1::{GetWorkerStatsRequest, ListAnomaliesRequest, ListExecutionsRequest, StatsWindow},
    retention::{Retention, RetentionConfig},
    store::{
        Store,
        alerts::{self, Attempt, Next},
        anomalies::NewAnomaly,
        to_micros, workers,
    },
};
use sea_orm::ConnectionTrait;

use crate::{
    backend_tests,
    helpers::{Backend, ManualClock, TestDatabase, report, spawn_app_with_clock},
};

backend_tests!(
    retention_deletes_in_batches_and_keeps_statistics,
    retention_prunes_alert_history_alerting_no_longer_needs,
    retention_keeps_an_alert_change_while_an_attempt_at_it_is_kept
);

async fn retention_deletes_in_batches_and_keeps_statistics(backend: Backend) {
    let clock = ManualClock::starting_now();
    let db = TestDatabase::create(backend).await;
    let url = db.url.clone();
    let app = spawn_app_with_clock(db, |c| c.retention.batch = 2, clock.clone()).await;
    let now = Utc::now();
    let at = |ago: TimeDelta, second: i64| {
        let mut r = report("retained_worker");
        r.started_at = Some(to_timestamp(now - ago + TimeDelta::seconds(second)));
        r.duration_ms = Some(1000);
        r
    };
    for i in 0..3 {
        app.submit(at(TimeDelta::days(500), i)).await.expect("stored");
    }
    for i in 0..3 {
        app.submit(at(TimeDelta::days(40), i)).await.expect("stored");
    }
    for i in 0..2 {
        app.submit(at(TimeDelta::days(1), i)).await.expect("stored");
    }
    // One anomaly resolved 100 days ago (past the 90-day window), one still open from long ago.
    let store = Store::connect(&url, &Default::default()).await.expect("open");
    let worker = workers::find_by_name(store.reader(), "retained_worker").await.expect("query").expect("worker");
    let finding = |kind| Finding {
        kind,
        severity: Severity::Warning,
        evidence: Evidence {
            value: 1.0,
            baseline_median: None,
            mad: None,
            threshold: 1.0,
            window: 1,
            detail: "x".into(),
        },
    };
    let old = to_micros(now - TimeDelta::days(200));
    let anomalies = [
        NewAnomaly {
            worker_id: worker.id,
            finding: finding(AnomalyKind::DurationSpike),
            opened_at_us: old,
            resolved_at_us: Some(to_micros(now - TimeDelta::days(100))),
            execution_id: None,
        },
        NewAnomaly {
            worker_id: worker.id,
            finding: finding(AnomalyKind::FailureStreak),
            opened_at_us: old,
            resolved_at_us: None,
            execution_id: None,
        },
    ];
    let txn = store.begin_write().await.expect("begin");
    runwarden::store::anomalies::insert(&txn, &anomalies).await.expect("insert");
    txn.commit().await.expect("commit");

    let pass = app.retention.run_once().await.expect("pass");
    assert!(pass.ran);
    assert_eq!((pass.executions, pass.rollups, pass.anomalies), (6, 2, 1), "{pass:?}");
    assert!(pass.batches >= 5, "batches of 2: {pass:?}");

    let left = app
        .query
        .clone()
        .list_executions(ListExecutionsRequest { worker_name: "retained_worker".into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner()
        .executions;
    assert_eq!(left.len(), 2, "only the runs inside 30 days keep their raw rows");
    let stats = app
        .query
        .clone()
        .get_worker_stats(GetWorkerStatsRequest {
            worker_name: "retained_worker".into(),
            window: StatsWindow::StatsWindow90d as i32,
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.total_executions, 5, "rollups still count the 40-day-old runs");
    let kept = app.query.clone().list_anomalies(ListAnomaliesRequest::default()).await.expect("list").into_inner();
    assert_eq!(kept.anomalies.len(), 1);
    assert!(kept.anomalies[0].resolved_at.is_none(), "open anomalies are never deleted");

    // A second pass finds nothing.
    let again = app.retention.run_once().await.expect("pass");
    assert_eq!((again.executions, again.rollups, again.anomalies), (0, 0, 0));
}

/// Writes one alert state change at `at`, as ingest records it, and returns its outbox id.
async fn change(store: &Store, event: AlertEvent, at: DateTime<Utc>) -> i64 {
    let key = event.key.clone();
    let txn = store.begin_write().await.expect("begin");
    assert_eq!(alerts::record(&txn, &[event], to_micros(at)).await.expect("record"), 1, "{key} changed state");
    txn.commit().await.expect("commit");
    outbox(store).await.into_iter().filter(|(_, (k, _))| *k == key).map(|(id, _)| id).max().expect("the row")
}

/// Fans the outbox row `id` out to one channel at `at`, as the alert sender does, and makes one
/// attempt at its send then, which `next` settles.
async fn send(store: &Store, id: i64, at: DateTime<Utc>, next: Option<Next>) {
    let row = alerts::unfanned(store.reader(), 1000).await.expect("unfanned").into_iter().find(|r| r.id == id);
    let row = row.expect("not fanned out yet");
    let txn = store.begin_write().await.expect("begin");
    alerts::fan_out(&txn, &[(&row, vec!["oncall".to_owned()])], to_micros(at)).await.expect("fan out");
    txn.commit().await.expect("commit");
    if let Some(next) = next {
        attempt(store, id, at, next).await;
    }
}

/// Makes one attempt at `at` at the send of the outbox row `id` (due then), which `next` settles.
async fn attempt(store: &Store, id: i64, at: DateTime<Utc>, next: Next) {
    let txn = store.begin_write().await.expect("begin");
    let claimed = alerts::claim_due(&txn, to_micros(at), 60_000_000, 1000).await.expect("claim");
    let (send, _) = claimed.iter().find(|(_, r)| r.id == id).expect("its send is due");
    let attempt = Attempt { ok: matches!(next, Next::Delivered), http_status: Some(200), latency_ms: 3, error: None };
    alerts::finish(&txn, send, &attempt, next, to_micros(at)).await.expect("finish");
    txn.commit().await.expect("commit");
}

/// Every outbox row: id → (alert key, fanned out).
async fn outbox(store: &Store) -> BTreeMap<i64, (String, bool)> {
    let rows = store
        .reader()
        .query_all_raw(sea_orm::Statement::from_string(
            store.backend(),
            "SELECT id, alert_key, fanned_out FROM alert_outbox".to_owned(),
        ))
        .await
        .expect("outbox");
    rows.iter()
        .map(|r| {
            let id: i64 = r.try_get_by_index(0).expect("id");
            (id, (r.try_get_by_index(1).expect("key"), r.try_get_by_index(2).expect("fanned out")))
        })
        .collect()
}

async fn count(store: &Store, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let row = store.reader().query_one_raw(sea_orm::Statement::from_string(store.backend(), sql)).await;
    row.expect("count").expect("a row").try_get_by_index(0).expect("count")
}

/// A fresh, migrated database of `backend` and the store on it (the database lives as long as
/// the first).
async fn migrated(backend: Backend) -> (TestDatabase, Store) {
    let db = TestDatabase::create(backend).await;
    let store = Store::connect(&db.url, &Default::default()).await.expect("open");
    store.migrate().await.expect("migrate");
    (db, store)
}

async fn retention_prunes_alert_history_alerting_no_longer_needs(backend: Backend) {
    let (_db, store) = migrated(backend).await;
    let now = Utc::now();
    let ago = |days: i64| now - TimeDelta::days(days);
    let fire =
        |kind: &str, at| AlertEvent::firing("w", kind, "WARNING", format!("{kind} fired"), serde_json::json!({}), at);
    let resolve = |kind: &str, at| AlertEvent::resolved("w", kind, at);
    let delivered = || Some(Next::Delivered);

    // A: fired, resolved and fired again long ago, all delivered. The last firing is A's state.
    let a1 = change(&store, fire("A", ago(200)), ago(200)).await;
    send(&store, a1, ago(200), delivered()).await;
    let a2 = change(&store, resolve("A", ago(190)), ago(190)).await;
    send(&store, a2, ago(190), delivered()).await;
    let a3 = change(&store, fire("A", ago(180)), ago(180)).await;
    send(&store, a3, ago(180), delivered()).await;
    // B: fired long ago; its resolution is not fanned out yet, and goes where the firing went.
    let b1 = change(&store, fire("B", ago(200)), ago(200)).await;
    send(&store, b1, ago(200), Some(Next::GiveUp)).await;
    let b2 = change(&store, resolve("B", ago(150)), ago(150)).await;
    // C: a firing whose send is still being retried, then resolved and fired again.
    let c1 = change(&store, fire("C", ago(200)), ago(200)).await;
    send(&store, c1, ago(200), Some(Next::RetryAt(to_micros(now)))).await;
    let c2 = change(&store, resolve("C", ago(190)), ago(190)).await;
    send(&store, c2, ago(190), delivered()).await;
    let c3 = change(&store, fire("C", ago(100)), ago(100)).await;
    send(&store, c3, ago(100), None).await;
    // D: inside the window.
    let d1 = change(&store, fire("D", ago(10)), ago(10)).await;
    send(&store, d1, ago(10), delivered()).await;
    let d2 = change(&store, resolve("D", ago(5)), ago(5)).await;
    send(&store, d2, ago(5), delivered()).await;
    assert_eq!(outbox(&store).await.len(), 10);
    assert_eq!((count(&store, "alert_sends").await, count(&store, "alert_attempts").await), (9, 8));

    let clock = ManualClock::starting_at(now);
    let config = RetentionConfig { batch: 1, ..Default::default() };
    let retention = Retention::new(store.clone(), clock, config);
    let pass = retention.run_once().await.expect("pass");
    assert!(pass.ran);
    // Gone: A's first firing and resolution (A fired again since, and both were delivered) and
    // C's resolution (C fired again since); their sends with them; every attempt past 90 days.
    assert_eq!((pass.alert_changes, pass.alert_attempts), (3, 6), "{pass:?}");
    assert!(pass.batches >= 3 + 6, "batches of one row: {pass:?}");
    let kept: Vec<i64> = outbox(&store).await.into_keys().collect();
    assert_eq!(kept, vec![a3, b1, b2, c1, c3, d1, d2], "A's state, B's firing and unsent resolution, C's pending send");
    assert_eq!(count(&store, "alert_sends").await, 9 - 3, "the sends of deleted changes go with them");
    assert_eq!(count(&store, "alert_attempts").await, 2, "D's attempts are recent");

    // Alerting reads what it needs from what is left.
    assert!(alerts::is_firing(store.reader(), "w/A").await.expect("state"), "A still fires");
    assert!(alerts::is_firing(store.reader(), "w/C").await.expect("state"));
    assert!(!alerts::is_firing(store.reader(), "w/B").await.expect("state"));
    let b2_row = alerts::unfanned(store.reader(), 10).await.expect("unfanned").into_iter().find(|r| r.id == b2);
    let firing = alerts::firing_of(store.reader(), &b2_row.expect("B's resolution waits")).await.expect("firing");
    assert_eq!(firing, Some((b1, vec!["oncall".to_owned()])), "B's resolution goes where its firing went");
    let pending = store
        .reader()
        .query_one_raw(sea_orm::Statement::from_string(
            store.backend(),
            format!("SELECT COUNT(*) FROM alert_sends WHERE outbox_id = {c1} AND state = 'pending'"),
        ))
        .await
        .expect("pending")
        .and_then(|r| r.try_get_by_index::<i64>(0).ok());
    assert_eq!(pending, Some(1), "C's first send is still retried");

    // Once B's resolution is fanned out, its firing goes on the next pass; nothing else does.
    send(&store, b2, now, delivered()).await;
    let again = retention.run_once().await.expect("pass");
    assert_eq!((again.alert_changes, again.alert_attempts), (1, 0), "{again:?}");
    let kept: Vec<i64> = outbox(&store).await.into_keys().collect();
    assert_eq!(kept, vec![a3, b2, c1, c3, d1, d2]);
    store.close().await;
}

/// A delivery attempt is kept by its own time, which can be long after its alert's state change
/// (a channel that was down for weeks): the change stays while any attempt at it does, so every
/// attempt `ListAlertDeliveries` lists still names its alert.
async fn retention_keeps_an_alert_change_while_an_attempt_at_it_is_kept(backend: Backend) {
    let (_db, store) = migrated(backend).await;
    let now = Utc::now();
    let ago = |days: i64| now - TimeDelta::days(days);
    let fire = |at| AlertEvent::firing("w", "E", "WARNING", "E fired".to_owned(), serde_json::json!({}), at);

    // E fired 120 days ago; the first attempt failed, the retry got through 60 days ago. It was
    // resolved 110 days ago, and that was delivered at once.
    let e1 = change(&store, fire(ago(120)), ago(120)).await;
    send(&store, e1, ago(120), Some(Next::RetryAt(to_micros(ago(60))))).await;
    attempt(&store, e1, ago(60), Next::Delivered).await;
    let e2 = change(&store, AlertEvent::resolved("w", "E", ago(110)), ago(110)).await;
    send(&store, e2, ago(110), Some(Next::Delivered)).await;
    assert_eq!(count(&store, "alert_attempts").await, 3);

    // The 90-day window: E's first two attempts go; the firing stays for the one 60 days old.
    let clock = ManualClock::starting_at(now);
    let retention = Retention::new(store.clone(), clock.clone(), RetentionConfig::default());
    let pass = retention.run_once().await.expect("pass");
    assert_eq!((pass.alert_changes, pass.alert_attempts), (0, 2), "{pass:?}");
    assert_eq!(outbox(&store).await.into_keys().collect::<Vec<_>>(), vec![e1, e2]);
    let listed = alerts::attempts(store.reader(), None, 100).await.expect("attempts");
    assert_eq!(listed.len(), 1);
    let (kept, row) = &listed[0];
    assert!(kept.ok, "the retry that got through");
    assert_eq!(row.as_ref().map(|r| (r.alert_key.as_str(), r.state.as_str())), Some(("w/E", "firing")));

    // Once that attempt is past the window too, both go: the firing with it, in the same pass.
    clock.advance(31 * 86_400);
    let pass = retention.run_once().await.expect("pass");
    assert_eq!((pass.alert_changes, pass.alert_attempts), (1, 1), "{pass:?}");
    assert_eq!(outbox(&store).await.into_keys().collect::<Vec<_>>(), vec![e2], "E's state");
    store.close().await;
}
