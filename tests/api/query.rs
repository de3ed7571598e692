//! QueryService: workers, executions, pagination, filters, errors.

use std::collections::HashSet;

use chrono::{TimeDelta, Utc};
use runwarden::{
    domain::validation::to_timestamp,
    proto::v1::{
        ExecutionReport, GetExecutionRequest, GetWorkerRequest, ListExecutionsRequest, ListWorkersRequest, Outcome,
    },
};
use tonic::Code;

use crate::{
    backend_tests,
    helpers::{Backend, report, report_at, spawn_app},
};

backend_tests!(
    pagination_walks_every_row_exactly_once,
    filters_by_outcome_and_time,
    workers_are_registered_by_their_first_report,
    unknown_ids_are_not_found,
    bad_query_arguments_are_invalid,
);

async fn pagination_walks_every_row_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let tie = Utc::now() - TimeDelta::minutes(30);
    let mut sent = HashSet::new();
    for i in 0..57 {
        // Every third report shares one start time, so the keyset must break ties by id.
        let mut r = report_at("clip_radar_recap_worker", 60 * (i + 1));
        if i % 3 == 0 {
            r.started_at = Some(to_timestamp(tie));
        }
        sent.insert(r.execution_id.clone());
        app.submit(r).await.expect("stored");
    }
    app.submit(report_at("other_worker", 5)).await.expect("stored");

    let mut seen = Vec::new();
    let mut previous_start = None;
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .query
            .clone()
            .list_executions(ListExecutionsRequest {
                worker_name: "clip_radar_recap_worker".into(),
                limit: 10,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        for e in &page.executions {
            let started = e.report.as_ref().and_then(|r| r.started_at).map(|t| (t.seconds, t.nanos));
            if let Some(prev) = previous_start {
                assert!(started <= prev, "newest first");
            }
            previous_start = Some(started);
            seen.push(e.execution_id.clone());
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 6);
    assert_eq!(seen.len(), 57);
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), sent);
}

async fn filters_by_outcome_and_time(backend: Backend) {
    let app = spawn_app(backend).await;
    for (i, outcome) in [Outcome::Success, Outcome::Failed, Outcome::Success, Outcome::Timeout].into_iter().enumerate()
    {
        let r =
            ExecutionReport { outcome: outcome as i32, ..report_at("intel_aggregation_daily", 3600 * (i as i64 + 1)) };
        app.submit(r).await.expect("stored");
    }
    let list = |request: ListExecutionsRequest| {
        let mut query = app.query.clone();
        async move { query.list_executions(request).await.expect("list").into_inner().executions }
    };
    let failed = list(ListExecutionsRequest {
        worker_name: "intel_aggregation_daily".into(),
        outcome: Outcome::Failed as i32,
        ..Default::default()
    })
    .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].report.as_ref().map(|r| r.outcome), Some(Outcome::Failed as i32));

    let recent = list(ListExecutionsRequest {
        worker_name: "intel_aggregation_daily".into(),
        since: Some(to_timestamp(Utc::now() - TimeDelta::minutes(150))),
        ..Default::default()
    })
    .await;
    assert_eq!(recent.len(), 2);
    let older = list(ListExecutionsRequest {
        worker_name: "intel_aggregation_daily".into(),
        until: Some(to_timestamp(Utc::now() - TimeDelta::minutes(150))),
        ..Default::default()
    })
    .await;
    assert_eq!(older.len(), 2);
}

async fn workers_are_registered_by_their_first_report(backend: Backend) {
    let app = spawn_app(backend).await;
    let first = report_at("analytics_flush_worker", 7200);
    let last = ExecutionReport { outcome: Outcome::Partial as i32, ..report_at("analytics_flush_worker", 60) };
    app.submit(last.clone()).await.expect("stored");
    app.submit(first.clone()).await.expect("stored");
    app.submit(report("coach_cleanup_worker")).await.expect("stored");

    let worker = app
        .query
        .clone()
        .get_worker(GetWorkerRequest { worker_name: "analytics_flush_worker".into() })
        .await
        .expect("worker")
        .into_inner();
    assert_eq!(worker.run_count, 2);
    assert_eq!(worker.worker_type, "analytics");
    // Worker times are kept to the microsecond.
    let micros = |t: Option<pbjson_types::Timestamp>| t.map(|t| (t.seconds, t.nanos / 1000));
    assert_eq!(micros(worker.first_seen), micros(first.started_at));
    assert_eq!(worker.last_outcome, Outcome::Partial as i32, "the latest run's outcome, whatever the arrival order");

    let page1 = app
        .query
        .clone()
        .list_workers(ListWorkersRequest { limit: 1, ..Default::default() })
        .await
        .expect("workers")
        .into_inner();
    assert_eq!(page1.workers.len(), 1);
    assert_eq!(page1.workers[0].worker_name, "analytics_flush_worker");
    let page2 = app
        .query
        .clone()
        .list_workers(ListWorkersRequest { limit: 1, page_token: page1.next_page_token })
        .await
        .expect("workers")
        .into_inner();
    assert_eq!(page2.workers.len(), 1);
    assert_eq!(page2.workers[0].worker_name, "coach_cleanup_worker");
    assert!(page2.next_page_token.is_empty());
}

async fn unknown_ids_are_not_found(backend: Backend) {
    let app = spawn_app(backend).await;
    let status = app
        .query
        .clone()
        .get_execution(GetExecutionRequest { execution_id: uuid::Uuid::new_v4().to_string() })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status =
        app.query.clone().get_worker(GetWorkerRequest { worker_name: "nobody".into() }).await.expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
    let status = app
        .query
        .clone()
        .list_executions(ListExecutionsRequest { worker_name: "nobody".into(), ..Default::default() })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);
}

async fn bad_query_arguments_are_invalid(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        ("page_token", ListExecutionsRequest { page_token: "forged".into(), ..Default::default() }),
        ("limit", ListExecutionsRequest { limit: 501, ..Default::default() }),
        ("limit", ListExecutionsRequest { limit: -1, ..Default::default() }),
        ("outcome", ListExecutionsRequest { outcome: 99, ..Default::default() }),
        ("worker_name", ListExecutionsRequest { worker_name: "no spaces".into(), ..Default::default() }),
    ];
    for (field, request) in cases {
        let status = app.query.clone().list_executions(request).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(status.message().contains(field), "{field}: {}", status.message());
    }
    let status = app
        .query
        .clone()
        .get_execution(GetExecutionRequest { execution_id: "1' OR '1'='1".into() })
        .await
        .expect_err("not a uuid");
    assert_eq!(status.code(), Code::InvalidArgument);
}
