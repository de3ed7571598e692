//! Worker schedules (WorkerService and its REST face), the missed-run detector on a fake clock,
//! health states and their live events, the schedule-aware anomalies, and learning.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use runwarden::{
    domain::validation::to_timestamp,
    proto::v1::{
        AnomalyKind, DataVerification, DeleteWorkerRequest, ExecutionReport, GetSystemLearningRequest,
        GetWorkerLearningRequest, GetWorkerRequest, HealthEvent, ListAnomaliesRequest, Outcome, Severity,
        UpsertWorkerRequest, WatchHealthRequest, Worker, WorkerHealth, guardian_service_client::GuardianServiceClient,
        health_event,
    },
};
use serde_json::{Value, json};
use tonic::Code;

use crate::{
    backend_tests,
    helpers::{Backend, ManualClock, TestApp, TestDatabase, report, spawn_app, spawn_app_with_clock},
};

backend_tests!(
    schedules_are_declared_validated_and_deleted,
    missed_runs_follow_a_fake_clock_timeline,
    schedule_aware_anomalies_open_and_close,
    failure_rate_is_found_by_the_detector,
    learning_finds_the_better_hour_and_says_why,
);

/// A run of `worker` starting at `at`.
fn run_at(worker: &str, at: DateTime<Utc>) -> ExecutionReport {
    ExecutionReport {
        execution_id: uuid::Uuid::new_v4().to_string(),
        started_at: Some(to_timestamp(at)),
        duration_ms: Some(1000),
        ..report(worker)
    }
}

fn hourly(worker: &str) -> UpsertWorkerRequest {
    UpsertWorkerRequest {
        worker_name: worker.into(),
        expected_interval: "3600".into(),
        grace_seconds: Some(300),
        ..Default::default()
    }
}

async fn upsert(app: &TestApp, request: UpsertWorkerRequest) -> Worker {
    app.workers.clone().upsert_worker(request).await.expect("upsert").into_inner()
}

async fn worker(app: &TestApp, name: &str) -> Worker {
    app.query.clone().get_worker(GetWorkerRequest { worker_name: name.into() }).await.expect("get").into_inner()
}

async fn open_anomalies(app: &TestApp, worker: &str, kind: AnomalyKind) -> Vec<runwarden::proto::v1::Anomaly> {
    app.query
        .clone()
        .list_anomalies(ListAnomaliesRequest {
            worker_name: worker.into(),
            kind: kind as i32,
            open_only: true,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .anomalies
}

async fn schedules_are_declared_validated_and_deleted(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut request = hourly("intel_news_fetcher");
    request.owner = "data-team".into();
    request.worker_type = "intel".into();
    request.labels.insert("team".into(), "intel".into());
    let created = upsert(&app, request).await;
    assert_eq!(created.health, WorkerHealth::New as i32, "declared but never ran");
    let schedule = created.schedule.expect("schedule");
    assert_eq!((schedule.interval_seconds, schedule.grace_seconds, schedule.inferred), (3600, 300, false));
    assert_eq!((created.owner.as_str(), created.worker_type.as_str()), ("data-team", "intel"));
    assert_eq!(created.labels.get("team").map(String::as_str), Some("intel"));

    // A cron that does not parse: INVALID_ARGUMENT naming the field and the cron field.
    let mut bad = hourly("intel_news_fetcher");
    bad.expected_interval = "0 25 * * *".into();
    let status = app.workers.clone().upsert_worker(bad).await.expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("expected_interval") && status.message().contains("hour"), "{status:?}");

    // REST: PUT with a cron, the same validation, GET shows it, DELETE removes everything.
    let put = app
        .http
        .put(app.url("/api/v1/orchestrator/workers/analytics_flush_worker"))
        .json(&json!({"expected_interval": "*/15 * * * MON-FRI", "description": "flushes analytics"}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), 200);
    let body: Value = put.json().await.expect("json");
    assert_eq!(body["schedule"]["cron"], "*/15 * * * MON-FRI");
    assert_eq!(body["schedule"]["grace_seconds"], "90", "10 % of 15 minutes");
    assert_eq!(body["health"], "WORKER_HEALTH_NEW");
    let bad = app
        .http
        .put(app.url("/api/v1/orchestrator/workers/analytics_flush_worker"))
        .json(&json!({"expected_interval": "5", "grace_seconds": -1}))
        .send()
        .await
        .expect("put");
    assert_eq!(bad.status(), 400);
    let error: Value = bad.json().await.expect("json");
    let fields: Vec<&str> = error["details"][0]["field_violations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(|d| d["field"].as_str())
        .collect();
    assert_eq!(fields, ["expected_interval", "grace_seconds"], "{error}");

    app.submit(report("analytics_flush_worker")).await.expect("stored");
    let deleted =
        app.http.delete(app.url("/api/v1/orchestrator/workers/analytics_flush_worker")).send().await.expect("delete");
    assert_eq!(deleted.status(), 200);
    let body: Value = deleted.json().await.expect("json");
    assert_eq!(body["executions_deleted"], "1");
    let gone = app.http.get(app.url("/api/v1/orchestrator/workers/analytics_flush_worker")).send().await.expect("get");
    assert_eq!(gone.status(), 404);
    let again = app
        .workers
        .clone()
        .delete_worker(DeleteWorkerRequest { worker_name: "analytics_flush_worker".into() })
        .await
        .expect_err("already gone");
    assert_eq!(again.code(), Code::NotFound);
}

/// The next worker health change on a WatchHealth stream (guardian statuses are skipped).
async fn next_change(stream: &mut tonic::Streaming<HealthEvent>) -> (i32, i32) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("in time")
            .expect("ok")
            .expect("an event");
        if let Some(health_event::Event::WorkerHealth(change)) = event.event {
            return (change.previous, change.current);
        }
    }
}

async fn missed_runs_follow_a_fake_clock_timeline(backend: Backend) {
    // 22:00 UTC, so the timeline crosses midnight.
    let t0 = Utc.with_ymd_and_hms(2026, 3, 28, 22, 0, 0).unwrap();
    let clock = ManualClock::starting_at(t0);
    let app = spawn_app_with_clock(TestDatabase::create(backend).await, |_| {}, clock.clone()).await;
    let name = "cron_hourly_sync";
    upsert(&app, hourly(name)).await;
    let mut watch = GuardianServiceClient::new(app.channel.clone())
        .watch_health(WatchHealthRequest {})
        .await
        .expect("watch")
        .into_inner();
    app.submit(run_at(name, t0)).await.expect("stored");
    assert_eq!(next_change(&mut watch).await, (WorkerHealth::New as i32, WorkerHealth::Up as i32));
    let at = |minutes: i64| t0 + TimeDelta::minutes(minutes);
    let set = |minutes: i64| clock.advance((at(minutes) - clock_now(&clock)).num_seconds());

    // 22:00 + 1 h + 5 min grace: up until then.
    set(64);
    let pass = app.detector.run_once().await.expect("pass");
    assert_eq!((pass.missed_runs, pass.health_changes), (0, 0));
    assert_eq!(worker(&app, name).await.health, WorkerHealth::Up as i32);
    assert_eq!(worker(&app, name).await.next_deadline.map(|t| t.seconds), Some(at(65).timestamp()));

    set(66);
    let pass = app.detector.run_once().await.expect("pass");
    assert_eq!((pass.missed_runs, pass.health_changes), (1, 1));
    assert_eq!(next_change(&mut watch).await, (WorkerHealth::Up as i32, WorkerHealth::Late as i32));
    let missed = open_anomalies(&app, name, AnomalyKind::MissedRun).await;
    assert_eq!(missed.len(), 1);
    assert_eq!(missed[0].severity, Severity::Warning as i32);
    let evidence = missed[0].evidence.clone().expect("evidence");
    assert!(evidence.detail.contains("2026-03-28 23:00 UTC"), "{evidence:?}");
    assert_eq!(evidence.threshold, 5.0, "grace in minutes");

    // Another pass in the same slot records nothing new: once per slot, not per tick.
    set(90);
    let pass = app.detector.run_once().await.expect("pass");
    assert_eq!((pass.missed_runs, pass.health_changes), (0, 0));
    assert_eq!(open_anomalies(&app, name, AnomalyKind::MissedRun).await.len(), 1);

    // Past midnight: the 00:00 slot is missed too, and the worker is DOWN.
    set(126);
    let pass = app.detector.run_once().await.expect("pass");
    assert_eq!((pass.missed_runs, pass.health_changes), (1, 1));
    assert_eq!(next_change(&mut watch).await, (WorkerHealth::Late as i32, WorkerHealth::Down as i32));
    let missed = open_anomalies(&app, name, AnomalyKind::MissedRun).await;
    assert_eq!(missed.len(), 2);
    assert!(missed.iter().any(|a| a.severity == Severity::Critical as i32
        && a.evidence.as_ref().is_some_and(|e| e.detail.contains("2026-03-29 00:00 UTC"))));

    // A late report resolves both and brings the worker straight back UP.
    set(130);
    app.submit(run_at(name, at(129))).await.expect("stored");
    assert_eq!(next_change(&mut watch).await, (WorkerHealth::Down as i32, WorkerHealth::Up as i32));
    assert!(open_anomalies(&app, name, AnomalyKind::MissedRun).await.is_empty());
    assert_eq!(worker(&app, name).await.health, WorkerHealth::Up as i32);

    // Paused: nothing is expected, however long.
    upsert(&app, UpsertWorkerRequest { paused: Some(true), ..hourly(name) }).await;
    assert_eq!(next_change(&mut watch).await, (WorkerHealth::Up as i32, WorkerHealth::Paused as i32));
    set(600);
    let pass = app.detector.run_once().await.expect("pass");
    assert_eq!((pass.missed_runs, pass.health_changes), (0, 0));
    assert_eq!(worker(&app, name).await.health, WorkerHealth::Paused as i32);
    assert!(worker(&app, name).await.next_deadline.is_none());

    // Resumed at +10 h: a full interval plus grace from the resume before it can be late, and the
    // slots inside the pause are never reported.
    upsert(&app, UpsertWorkerRequest { paused: Some(false), ..hourly(name) }).await;
    assert_eq!(next_change(&mut watch).await, (WorkerHealth::Paused as i32, WorkerHealth::Up as i32));
    set(664);
    assert_eq!(app.detector.run_once().await.expect("pass").missed_runs, 0);
    set(666);
    let pass = app.detector.run_once().await.expect("pass");
    assert_eq!((pass.missed_runs, pass.health_changes), (1, 1));
    let missed = open_anomalies(&app, name, AnomalyKind::MissedRun).await;
    assert_eq!(missed.len(), 1, "only the slot after the resume");
    assert!(missed[0].evidence.as_ref().is_some_and(|e| e.detail.contains("2026-03-29 09:00 UTC")), "{missed:?}");
}

fn clock_now(clock: &ManualClock) -> DateTime<Utc> {
    use runwarden::api::Clock;
    clock.now()
}

async fn schedule_aware_anomalies_open_and_close(backend: Backend) {
    let app = spawn_app(backend).await;
    let now = Utc::now();
    // Declared hourly, but running every ten minutes.
    upsert(&app, hourly("too_often_worker")).await;
    for i in 0..7 {
        app.submit(run_at("too_often_worker", now - TimeDelta::minutes(70 - 10 * i))).await.expect("stored");
    }
    let found = open_anomalies(&app, "too_often_worker", AnomalyKind::RunningTooOften).await;
    assert_eq!(found.len(), 1, "opened once, on the crossing");
    let evidence = found[0].evidence.clone().expect("evidence");
    assert_eq!((evidence.value, evidence.baseline_median), (600.0, Some(3600.0)));

    // API quota falling 100 per hourly run: at 100 left, the next run would find none.
    for (i, quota) in [400, 300, 200, 100].into_iter().enumerate() {
        let mut r = run_at("quota_worker", now - TimeDelta::hours(4 - i as i64));
        r.data_verification = Some(DataVerification { api_quota_remaining: Some(quota), ..Default::default() });
        app.submit(r).await.expect("stored");
    }
    let quota = open_anomalies(&app, "quota_worker", AnomalyKind::QuotaExhaustion).await;
    assert_eq!(quota.len(), 1, "{quota:?}");
    assert_eq!(quota[0].evidence.as_ref().map(|e| e.value), Some(100.0));
    // The quota was reset: resolved.
    let mut r = run_at("quota_worker", now - TimeDelta::minutes(1));
    r.data_verification = Some(DataVerification { api_quota_remaining: Some(5000), ..Default::default() });
    app.submit(r).await.expect("stored");
    assert!(open_anomalies(&app, "quota_worker", AnomalyKind::QuotaExhaustion).await.is_empty());
}

async fn failure_rate_is_found_by_the_detector(backend: Backend) {
    let app = spawn_app(backend).await;
    let now = Utc::now();
    let name = "intel_api_fetcher";
    // 40 runs over the previous weeks, one failure; then 4 of 6 runs failed in the last hours.
    for day in 0..40 {
        let mut r = run_at(name, now - TimeDelta::days(2) - TimeDelta::hours(12 * day));
        if day == 7 {
            r.outcome = Outcome::Failed as i32;
        }
        app.submit(r).await.expect("stored");
    }
    for i in 0..6 {
        let mut r = run_at(name, now - TimeDelta::hours(6 - i));
        if i % 3 != 0 {
            r.outcome = Outcome::Failed as i32;
        }
        app.submit(r).await.expect("stored");
    }
    let pass = app.detector.run_once().await.expect("pass");
    assert_eq!(pass.failure_rate_opened, 1, "{pass:?}");
    let found = open_anomalies(&app, name, AnomalyKind::FailureRate).await;
    assert_eq!(found.len(), 1);
    let evidence = found[0].evidence.clone().expect("evidence");
    assert!((evidence.value - 4.0 / 6.0).abs() < 1e-9, "{evidence:?}");
    assert_eq!(found[0].severity, Severity::Critical as i32, "at least half failed");
    // The next pass does not open it again.
    assert_eq!(app.detector.run_once().await.expect("pass").failure_rate_opened, 0);
    assert_eq!(open_anomalies(&app, name, AnomalyKind::FailureRate).await.len(), 1);
}

async fn learning_finds_the_better_hour_and_says_why(backend: Backend) {
    let app = spawn_app(backend).await;
    let name = "analytics_rollup";
    let today = Utc::now().date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    // Twelve days of 14:00 runs that fail half their records, ten days of clean 03:00 runs.
    for day in 1..=12 {
        let mut r = run_at(name, today - TimeDelta::days(day) + TimeDelta::hours(14));
        r.outcome = Outcome::Partial as i32;
        r.data_verification = Some(DataVerification {
            records_fetched: 200,
            records_processed: 100,
            records_failed: 100,
            validation_checks_passed: 5,
            validation_checks_failed: 5,
            ..Default::default()
        });
        app.submit(r).await.expect("stored");
    }
    for day in 1..=10 {
        app.submit(run_at(name, today - TimeDelta::days(day) + TimeDelta::hours(3))).await.expect("stored");
    }
    let learning = app
        .query
        .clone()
        .get_worker_learning(GetWorkerLearningRequest { worker_name: name.into(), ..Default::default() })
        .await
        .expect("learning")
        .into_inner();
    assert_eq!(learning.runs, 22);
    assert_eq!(learning.optimal_hour, Some(3), "{learning:?}");
    assert!(learning.optimal_hour_note.contains("03:00 UTC") && learning.optimal_hour_note.contains("10 runs"));
    assert_eq!(learning.hourly_performance.iter().map(|s| (s.slot, s.runs)).collect::<Vec<_>>(), [(3, 10), (14, 12)]);
    let schedule = learning.recommendations.iter().find(|r| r.kind == "SCHEDULE").expect("a schedule move");
    assert!(schedule.message.contains("from 14:00 to 03:00"), "{schedule:?}");
    assert!(schedule.evidence.contains("12 and 10 runs"), "{schedule:?}");
    // Each weekday has at most 4 runs in 22 days: fewer than the 5 needed, so no guess.
    assert_eq!(learning.optimal_day, None);
    assert!(learning.optimal_day_note.contains("not enough data"), "{}", learning.optimal_day_note);
    assert_eq!(learning.data_volume_trend.expect("trend").samples, 12);

    // REST, and the system view.
    let rest: Value = app
        .http
        .get(app.url(&format!("/api/v1/orchestrator/workers/{name}/learning?window=30d")))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(rest["optimal_hour"], 3);
    let system = app.query.clone().get_system_learning(GetSystemLearningRequest {}).await.expect("system").into_inner();
    assert_eq!(system.workers, 1);
    assert_eq!(system.runs_by_hour.len(), 24);
    assert!(
        system.optimization_opportunities.iter().any(|r| r.worker_name == name && r.kind == "SCHEDULE"),
        "{system:?}"
    );
    let rest: Value = app
        .http
        .get(app.url("/api/v1/orchestrator/learning/system"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(rest["workers"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_each_workers_judgement() {
    let app = spawn_app(Backend::Sqlite).await;
    upsert(&app, hourly("exported_worker")).await;
    app.submit(report("exported_worker")).await.expect("stored");
    for _ in 0..3 {
        let mut failed = report("streaky_worker");
        failed.outcome = Outcome::Failed as i32;
        app.submit(failed).await.expect("stored");
    }
    let text = app.http.get(app.url("/metrics")).send().await.expect("get").text().await.expect("text");
    for line in [
        "runwarden_workers 2",
        "runwarden_worker_last_outcome{worker=\"exported_worker\",outcome=\"SUCCESS\"} 1",
        "runwarden_worker_last_outcome{worker=\"streaky_worker\",outcome=\"FAILED\"} 1",
        "runwarden_worker_health{worker=\"exported_worker\",state=\"UP\"} 1",
        "runwarden_worker_health{worker=\"exported_worker\",state=\"LATE\"} 0",
        "runwarden_worker_runs_24h{worker=\"streaky_worker\"} 3",
        "runwarden_worker_success_rate_24h{worker=\"streaky_worker\"} 0",
        "runwarden_worker_open_anomalies{worker=\"streaky_worker\",kind=\"FAILURE_STREAK\"} 1",
        "runwarden_guardian_orphan_rate 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    // Every sample line is `name{labels} value` with a number.
    for sample in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let value = sample.rsplit_once(' ').map(|(_, v)| v).expect("a value");
        assert!(value.parse::<f64>().is_ok(), "{sample}");
    }
}
