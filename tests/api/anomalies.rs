//! Anomalies found at ingest, with their evidence, listed and resolved.

use chrono::{TimeDelta, Utc};
use runwarden::{
    domain::validation::to_timestamp,
    proto::v1::{AnomalyKind, ListAnomaliesRequest, Outcome, ResourceMetrics, Severity},
};
use serde_json::Value;

use crate::{
    backend_tests,
    helpers::{Backend, TestApp, run, spawn_app},
};

backend_tests!(injected_anomalies_are_found_with_evidence_and_resolved, a_clean_history_has_no_anomalies);

async fn anomalies(app: &TestApp, request: ListAnomaliesRequest) -> Vec<runwarden::proto::v1::Anomaly> {
    app.query.clone().list_anomalies(request).await.expect("list").into_inner().anomalies
}

async fn injected_anomalies_are_found_with_evidence_and_resolved(backend: Backend) {
    let app = spawn_app(backend).await;
    // Twenty steady runs around one second, then a run that takes ten.
    for i in 0..20 {
        app.submit(run("intel_aggregation_hourly", 200 - i, 1000 + (i % 5) * 20, Outcome::Success))
            .await
            .expect("stored");
    }
    assert!(anomalies(&app, ListAnomaliesRequest::default()).await.is_empty(), "a steady history is quiet");
    let spike = run("intel_aggregation_hourly", 150, 10_000, Outcome::Success);
    app.submit(spike.clone()).await.expect("stored");
    let found = anomalies(&app, ListAnomaliesRequest { open_only: true, ..Default::default() }).await;
    // The slow run also lost its performance points, so its overall score dropped 25 points.
    let mut kinds: Vec<i32> = found.iter().map(|a| a.kind).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, [AnomalyKind::DurationSpike as i32, AnomalyKind::QualityDrop as i32], "{found:?}");
    let a = found.iter().find(|a| a.kind == AnomalyKind::DurationSpike as i32).expect("spike");
    assert_eq!(a.kind, AnomalyKind::DurationSpike as i32);
    assert_eq!(a.worker_name, "intel_aggregation_hourly");
    assert_eq!(a.execution_id, spike.execution_id);
    let evidence = a.evidence.as_ref().expect("evidence");
    assert_eq!(evidence.value, 10_000.0);
    assert_eq!(evidence.baseline_median, Some(1040.0));
    assert!(evidence.threshold > 0.0 && evidence.window >= 10, "{evidence:?}");
    assert!(a.resolved_at.is_none());

    // The next normal run resolves it.
    app.submit(run("intel_aggregation_hourly", 140, 1000, Outcome::Success)).await.expect("stored");
    assert!(anomalies(&app, ListAnomaliesRequest { open_only: true, ..Default::default() }).await.is_empty());
    let all = anomalies(&app, ListAnomaliesRequest::default()).await;
    assert!(all.iter().all(|a| a.resolved_at.is_some()));

    // Three failures in a row: one FAILURE_STREAK, critical, resolved by the next success.
    for i in 0..3 {
        app.submit(run("coach_cleanup_worker", 100 - i, 1000, Outcome::Failed)).await.expect("stored");
    }
    let streaks = anomalies(
        &app,
        ListAnomaliesRequest {
            kind: AnomalyKind::FailureStreak as i32,
            worker_name: "coach_cleanup_worker".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(streaks.len(), 1);
    assert_eq!(streaks[0].severity, Severity::Critical as i32);
    app.submit(run("coach_cleanup_worker", 90, 1000, Outcome::Failed)).await.expect("stored");
    assert!(
        anomalies(
            &app,
            ListAnomaliesRequest { kind: AnomalyKind::FailureStreak as i32, open_only: true, ..Default::default() }
        )
        .await
        .len()
            == 1,
        "a fourth failure neither repeats nor resolves the streak"
    );
    app.submit(run("coach_cleanup_worker", 80, 1000, Outcome::Success)).await.expect("stored");
    assert!(
        anomalies(
            &app,
            ListAnomaliesRequest { kind: AnomalyKind::FailureStreak as i32, open_only: true, ..Default::default() }
        )
        .await
        .is_empty()
    );

    // Crossing the 500 MB memory line is a resource spike.
    let mut heavy = run("clip_radar_recap_worker", 60, 1000, Outcome::Success);
    heavy.resource_metrics = Some(ResourceMetrics { memory_peak_mb: Some(120.0), ..Default::default() });
    app.submit(heavy.clone()).await.expect("stored");
    heavy.execution_id = uuid::Uuid::new_v4().to_string();
    heavy.started_at = Some(to_timestamp(Utc::now() - TimeDelta::minutes(50)));
    heavy.resource_metrics = Some(ResourceMetrics { memory_peak_mb: Some(640.0), ..Default::default() });
    app.submit(heavy).await.expect("stored");
    let resource =
        anomalies(&app, ListAnomaliesRequest { kind: AnomalyKind::ResourceSpike as i32, ..Default::default() }).await;
    assert_eq!(resource.len(), 1);
    assert!(resource[0].evidence.as_ref().is_some_and(|e| e.value == 640.0));

    // REST, filtered by kind and worker.
    let rest: Value = app
        .http
        .get(app.url("/api/v1/orchestrator/anomalies?kind=duration_spike&worker_name=intel_aggregation_hourly"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(rest["anomalies"][0]["kind"], Value::from("ANOMALY_KIND_DURATION_SPIKE"));
    assert_eq!(rest["anomalies"][0]["evidence"]["value"], Value::from(10_000.0));
    let bad = app.http.get(app.url("/api/v1/orchestrator/anomalies?kind=bored")).send().await.expect("get");
    assert_eq!(bad.status(), 400);
}

async fn a_clean_history_has_no_anomalies(backend: Backend) {
    let app = spawn_app(backend).await;
    let reports: Vec<_> = (0..120)
        .map(|i| run("analytics_flush_worker", 600 - i * 4, 1000 + ((i * 37) % 200), Outcome::Success))
        .collect();
    let response = app
        .report
        .clone()
        .submit_report_batch(runwarden::proto::v1::SubmitReportBatchRequest { reports })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(response.accepted, 120);
    assert!(anomalies(&app, ListAnomaliesRequest::default()).await.is_empty());
}

/// The UPDATE that resolves a worker's open anomalies runs in every ingest batch: on SQLite it
/// must seek the (worker_id, kind, resolved_at_us, opened_at_us) index. Without that index the
/// planner read every anomaly the worker ever had, and ingest slowed as the history grew.
#[tokio::test]
async fn resolving_anomalies_is_an_index_seek_on_sqlite() {
    use runwarden::store::{Store, StoreOptions, anomalies::resolve_statement};
    use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement};

    let db = crate::helpers::TestDatabase::create(Backend::Sqlite).await;
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let update = resolve_statement(7, "DURATION_SPIKE", 1_000).build(DbBackend::Sqlite);
    let explain = Statement::from_sql_and_values(
        DbBackend::Sqlite,
        format!("EXPLAIN QUERY PLAN {}", update.sql),
        update.values.map(|v| v.0).unwrap_or_default(),
    );
    let plan: Vec<String> = store
        .reader()
        .query_all_raw(explain)
        .await
        .expect("explain")
        .iter()
        .filter_map(|row| row.try_get_by_index::<String>(3).ok())
        .collect();
    assert!(
        plan.iter().any(|step| step.contains("USING INDEX idx_anomalies_worker_kind_open")),
        "resolve must seek the anomaly index, got {plan:?}"
    );
    store.close().await;
}
