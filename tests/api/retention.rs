//! Retention deletes raw executions, rollups and resolved anomalies past their windows, in batches,
//! and statistics keep counting the runs whose raw rows are gone.

use chrono::{TimeDelta, Utc};
use runwarden::{
    domain::{
        anomaly::{AnomalyKind, Evidence, Finding, Severity},
        validation::to_timestamp,
    },
    proto::v1::{GetWorkerStatsRequest, ListAnomaliesRequest, ListExecutionsRequest, StatsWindow},
    store::{Store, anomalies::NewAnomaly, to_micros, workers},
};

use crate::{
    backend_tests,
    helpers::{Backend, ManualClock, TestDatabase, report, spawn_app_with_clock},
};

backend_tests!(retention_deletes_in_batches_and_keeps_statistics);

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
