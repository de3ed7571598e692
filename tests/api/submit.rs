//! SubmitReport: storage, idempotency, validation, concurrency.

use std::collections::HashSet;

use runwarden::proto::v1::{DataVerification, GetExecutionRequest, ListExecutionsRequest, Outcome, ResourceMetrics};
use tonic::Code;
use tonic_types::StatusExt;

use crate::{
    backend_tests,
    helpers::{Backend, report, report_at, spawn_app},
};

backend_tests!(
    submit_then_list_then_get,
    duplicate_resubmission_stores_one_row,
    concurrent_duplicates_store_one_row,
    invalid_reports_name_the_field_and_store_nothing,
    thousand_concurrent_submissions_are_stored_exactly_once,
    oversized_message_is_resource_exhausted,
);

async fn submit_then_list_then_get(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut sent = report("analytics_flush_worker");
    sent.custom_metrics =
        Some(serde_json::from_str(r#"{"categories":["gaming","music"],"quota_used_today":192}"#).expect("struct"));
    let response = app.submit(sent.clone()).await.expect("stored");
    assert!(!response.duplicate);
    assert_eq!(uuid::Uuid::parse_str(&response.execution_id).map(|u| u.get_version_num()), Ok(7));

    let listed = app
        .query
        .clone()
        .list_executions(ListExecutionsRequest { worker_name: "analytics_flush_worker".into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.executions.len(), 1);
    assert!(listed.next_page_token.is_empty());
    let execution = &listed.executions[0];
    assert_eq!(execution.execution_id, response.execution_id);
    let stored = execution.report.as_ref().expect("report");
    assert_eq!(stored.data_verification, sent.data_verification);
    assert_eq!(stored.resource_metrics, sent.resource_metrics);
    assert_eq!(stored.custom_metrics, sent.custom_metrics);
    assert_eq!(stored.duration_ms, Some(1500));
    assert!(stored.started_at.is_some() && stored.completed_at.is_some());

    let got = app
        .query
        .clone()
        .get_execution(GetExecutionRequest { execution_id: response.execution_id.to_uppercase() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(&got, execution);
}

async fn duplicate_resubmission_stores_one_row(backend: Backend) {
    let app = spawn_app(backend).await;
    let sent = report_at("coach_cleanup_worker", 60);
    let first = app.submit(sent.clone()).await.expect("first");
    let second = app.submit(sent.clone()).await.expect("second");
    assert!(!first.duplicate);
    assert!(second.duplicate);
    assert_eq!(first.execution_id, second.execution_id);
    let listed = app
        .query
        .clone()
        .list_executions(ListExecutionsRequest { worker_name: "coach_cleanup_worker".into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.executions.len(), 1);
    let worker = app
        .query
        .clone()
        .get_worker(runwarden::proto::v1::GetWorkerRequest { worker_name: "coach_cleanup_worker".into() })
        .await
        .expect("worker")
        .into_inner();
    assert_eq!(worker.run_count, 1);
}

async fn concurrent_duplicates_store_one_row(backend: Backend) {
    let app = spawn_app(backend).await;
    let sent = report_at("intel_aggregation_hourly", 10);
    let calls = (0..50).map(|_| {
        let app = &app;
        let sent = sent.clone();
        async move { app.submit(sent).await.expect("accepted") }
    });
    let responses = futures::future::join_all(calls).await;
    assert_eq!(responses.iter().filter(|r| !r.duplicate).count(), 1, "exactly one submission stores it");
    let listed = app
        .query
        .clone()
        .list_executions(ListExecutionsRequest { worker_name: "intel_aggregation_hourly".into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.executions.len(), 1);
}

async fn invalid_reports_name_the_field_and_store_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases: Vec<(&str, runwarden::proto::v1::ExecutionReport)> = vec![
        ("worker_name", runwarden::proto::v1::ExecutionReport { worker_name: "bad name!".into(), ..report("x") }),
        ("execution_id", runwarden::proto::v1::ExecutionReport { execution_id: "42".into(), ..report("w") }),
        ("outcome", runwarden::proto::v1::ExecutionReport { outcome: Outcome::Unspecified as i32, ..report("w") }),
        ("duration_ms", runwarden::proto::v1::ExecutionReport { duration_ms: Some(-5), ..report("w") }),
        (
            "data_verification.records_failed",
            runwarden::proto::v1::ExecutionReport {
                data_verification: Some(DataVerification { records_failed: -1, ..Default::default() }),
                ..report("w")
            },
        ),
        (
            "resource_metrics.cpu_percent_avg",
            runwarden::proto::v1::ExecutionReport {
                resource_metrics: Some(ResourceMetrics { cpu_percent_avg: Some(f64::NAN), ..Default::default() }),
                ..report("w")
            },
        ),
        (
            "started_at",
            runwarden::proto::v1::ExecutionReport {
                started_at: Some(runwarden::domain::validation::to_timestamp(
                    chrono::Utc::now() + chrono::TimeDelta::hours(1),
                )),
                ..report("w")
            },
        ),
    ];
    for (field, bad) in cases {
        let status = app.submit(bad).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
        let details = status.get_details_bad_request().expect("BadRequest details");
        let fields: Vec<_> = details.field_violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, [field]);
    }
    let status = app
        .report
        .clone()
        .submit_report(runwarden::proto::v1::SubmitReportRequest { report: None })
        .await
        .expect_err("missing report");
    assert_eq!(status.code(), Code::InvalidArgument);
    let listed = app.query.clone().list_executions(ListExecutionsRequest::default()).await.expect("list").into_inner();
    assert!(listed.executions.is_empty(), "nothing stored for rejected reports");
    let workers = app
        .query
        .clone()
        .list_workers(runwarden::proto::v1::ListWorkersRequest::default())
        .await
        .expect("workers")
        .into_inner();
    assert!(workers.workers.is_empty());
}

async fn thousand_concurrent_submissions_are_stored_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let reports: Vec<_> = (0..1000).map(|i| report_at(&format!("worker_{}", i % 7), i % 300)).collect();
    let sent_ids: HashSet<String> = reports.iter().map(|r| r.execution_id.clone()).collect();
    let calls = reports.into_iter().map(|r| {
        let app = &app;
        async move { app.submit(r).await.expect("accepted") }
    });
    let responses = futures::stream::iter(calls).buffer_unordered(256).collect::<Vec<_>>().await;
    assert!(responses.iter().all(|r| !r.duplicate));

    let mut seen = HashSet::new();
    for id in app.all_execution_ids().await {
        assert!(seen.insert(id), "listed twice");
    }
    assert_eq!(seen, sent_ids);
    let workers = app
        .query
        .clone()
        .list_workers(runwarden::proto::v1::ListWorkersRequest::default())
        .await
        .expect("workers")
        .into_inner();
    assert_eq!(workers.workers.iter().map(|w| w.run_count).sum::<i64>(), 1000);
}

async fn oversized_message_is_resource_exhausted(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut big = report("w");
    big.error_message = "x".repeat(1024 * 1024 + 10);
    let status = app.submit(big).await.expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted);
}

use futures::StreamExt;
