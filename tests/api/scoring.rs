//! Scores, quality levels, reasons and learning fields through every face.

use std::collections::HashSet;

use chrono::{Days, TimeDelta, Utc};
use runwarden::{
    domain::validation::to_timestamp,
    proto::v1::{
        DataVerification, DurationTrend, ExecutionReport, GetExecutionRequest, GetWorkerRequest, ListExecutionsRequest,
        Outcome, QualityLevel, SubmitReportRequest, SubmitReportResponse,
    },
};
use serde_json::Value;

use crate::{
    backend_tests,
    helpers::{Backend, report, report_at, spawn_app},
};

backend_tests!(
    responses_carry_scores_level_reasons_and_learning,
    slow_run_loses_performance_points_against_history,
    two_hundred_concurrent_reports_number_one_to_two_hundred,
);

async fn responses_carry_scores_level_reasons_and_learning(backend: Backend) {
    let app = spawn_app(backend).await;
    // A clean first run: EXCELLENT, full marks, default weights, first-run learning fields.
    let clean = ExecutionReport {
        data_verification: Some(DataVerification {
            records_processed: 100,
            validation_checks_passed: 5,
            ..Default::default()
        }),
        ..report_at("analytics_flush_worker", 600)
    };
    let first = app.submit(clean.clone()).await.expect("stored");
    assert_eq!(first.quality_level, QualityLevel::Excellent as i32);
    let scores = first.scores.expect("scores");
    assert_eq!(scores.overall, 100.0);
    let weights = first.weights.expect("weights");
    assert_eq!(
        (weights.reliability, weights.performance, weights.data_quality, weights.resource_efficiency),
        (0.35, 0.25, 0.30, 0.10)
    );
    let learning = first.learning.expect("learning");
    assert_eq!(learning.execution_number_today, 1);
    assert_eq!(learning.time_since_last_run_seconds, None);
    assert_eq!(learning.duration_vs_avg, None);
    let started = clean.started_at.map(|t| chrono::DateTime::from_timestamp(t.seconds, 0).expect("time"));
    assert_eq!(Some(learning.time_of_day_utc), started.map(|t| chrono::Timelike::hour(&t)));

    // A failed run with failed records: never better than POOR, and the reasons say why.
    let failed = ExecutionReport {
        outcome: Outcome::Failed as i32,
        error_message: "upstream 503".into(),
        data_verification: Some(DataVerification { records_processed: 195, records_failed: 5, ..Default::default() }),
        ..report_at("analytics_flush_worker", 300)
    };
    let second = app.submit(failed.clone()).await.expect("stored");
    assert!(second.quality_level >= QualityLevel::Poor as i32, "{second:?}");
    let reasons = second.reasons.clone().expect("reasons");
    assert!(reasons.reliability.iter().any(|r| r.contains("outcome FAILED")), "{reasons:?}");
    assert!(reasons.data_quality.iter().any(|r| r.starts_with("records_failed 5/200")), "{reasons:?}");
    let learning = second.learning.expect("learning");
    // The second run of the (UTC) day, unless midnight fell between the two runs.
    let day = |r: &ExecutionReport| r.started_at.map(|t| t.seconds.div_euclid(86_400));
    let expected_number = if day(&clean) == day(&failed) { 2 } else { 1 };
    assert_eq!(learning.execution_number_today, expected_number);
    assert!(learning.time_since_last_run_seconds.is_some_and(|s| (s - 300.0).abs() < 1.0));
    assert_eq!(learning.duration_vs_avg, Some(1.0));

    // The stored execution returns the same analysis on gRPC, grpc-web and REST.
    let grpc = app
        .query
        .clone()
        .get_execution(GetExecutionRequest { execution_id: second.execution_id.clone() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        (grpc.scores, grpc.quality_level, grpc.reasons.clone()),
        (second.scores, second.quality_level, Some(reasons))
    );
    assert_eq!(grpc.learning, second.learning);
    let web: runwarden::proto::v1::Execution = app
        .grpc_web(
            "/runwarden.v1.QueryService/GetExecution",
            &GetExecutionRequest { execution_id: second.execution_id.clone() },
        )
        .await
        .expect("grpc-web");
    assert_eq!(web, grpc);
    let rest: Value = app
        .http
        .get(app.url(&format!("/api/v1/orchestrator/executions/{}", second.execution_id)))
        .send()
        .await
        .expect("rest")
        .json()
        .await
        .expect("json");
    assert_eq!(rest["quality_level"], Value::from("QUALITY_LEVEL_POOR"));
    assert!(rest["scores"]["overall"].as_f64().is_some());
    assert!(rest["reasons"]["data_quality"][0].as_str().is_some_and(|r| r.starts_with("records_failed")));
    assert_eq!(rest["learning"]["execution_number_today"], Value::from("2"));

    // A duplicate answers with the scores of the copy stored first.
    let again = app.submit(failed).await.expect("duplicate");
    assert!(again.duplicate);
    assert_eq!((again.scores, again.quality_level), (second.scores, second.quality_level));

    // grpc-web and REST submissions get the scores too.
    let web_submit: SubmitReportResponse = app
        .grpc_web(
            "/runwarden.v1.ReportService/SubmitReport",
            &SubmitReportRequest { report: Some(report("web_worker")) },
        )
        .await
        .expect("grpc-web");
    assert!(web_submit.scores.is_some() && web_submit.quality_level != 0);
    let rest_submit: Value = app
        .http
        .post(app.url("/api/v1/orchestrator/reports"))
        .json(&serde_json::json!({"worker_name": "rest_worker", "outcome": "OUTCOME_SUCCESS", "duration_ms": 10}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(rest_submit["quality_level"], Value::from("QUALITY_LEVEL_EXCELLENT"));
    assert_eq!(rest_submit["weights"]["reliability"], Value::from(0.35));
}

async fn slow_run_loses_performance_points_against_history(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..5 {
        let steady =
            ExecutionReport { duration_ms: Some(1000), ..report_at("intel_aggregation_hourly", 3600 * (10 - i)) };
        let response = app.submit(steady).await.expect("stored");
        assert_eq!(response.scores.map(|s| s.performance), Some(100.0));
    }
    let slow = ExecutionReport { duration_ms: Some(2500), ..report_at("intel_aggregation_hourly", 60) };
    let response = app.submit(slow).await.expect("stored");
    let performance = response.scores.map_or(100.0, |s| s.performance);
    assert!(performance < 100.0, "a 2.5x slower run loses points: {performance}");
    let reasons = response.reasons.expect("reasons").performance;
    assert!(reasons.iter().any(|r| r.starts_with("duration 2.50x mean 1000ms")), "{reasons:?}");
    let learning = response.learning.expect("learning");
    assert_eq!(learning.duration_vs_avg, Some(2.5));
    assert_eq!(learning.duration_trend, DurationTrend::Slower as i32);
}

async fn two_hundred_concurrent_reports_number_one_to_two_hundred(backend: Backend) {
    let app = spawn_app(backend).await;
    // All on yesterday's UTC date, so they share one UTC day whatever the time now.
    let noon = Utc::now()
        .date_naive()
        .checked_sub_days(Days::new(1))
        .expect("date")
        .and_hms_opt(12, 0, 0)
        .expect("time")
        .and_utc();
    let calls = (0..200).map(|i| {
        let app = &app;
        let r = ExecutionReport {
            started_at: Some(to_timestamp(noon + TimeDelta::seconds(i))),
            ..report_at("coach_cleanup_worker", 0)
        };
        async move { app.submit(r).await.expect("stored") }
    });
    let responses = futures::future::join_all(calls).await;
    let numbers: HashSet<i64> =
        responses.iter().map(|r| r.learning.as_ref().map_or(0, |l| l.execution_number_today)).collect();
    assert_eq!(numbers, (1..=200).collect::<HashSet<i64>>(), "1..200 without gaps or repeats");
    let worker = app
        .query
        .clone()
        .get_worker(GetWorkerRequest { worker_name: "coach_cleanup_worker".into() })
        .await
        .expect("worker")
        .into_inner();
    assert_eq!(worker.run_count, 200);
    // The stored rows agree with the responses.
    let stored = app
        .query
        .clone()
        .list_executions(ListExecutionsRequest {
            worker_name: "coach_cleanup_worker".into(),
            limit: 500,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let stored_numbers: HashSet<i64> =
        stored.executions.iter().map(|e| e.learning.as_ref().map_or(0, |l| l.execution_number_today)).collect();
    assert_eq!(stored_numbers, numbers);
}
