//! SubmitReports (client streaming) and SubmitReportBatch (unary, grpc-web, REST): each report
//! stands on its own; one bad report never sinks the others.

use std::collections::HashSet;

use runwarden::proto::v1::{ExecutionReport, SubmitReportBatchRequest, SubmitReportRequest, SubmitReportsResponse};
use serde_json::Value;
use tonic::Code;

use crate::{
    backend_tests,
    helpers::{Backend, TestApp, report_at, spawn_app},
};

backend_tests!(
    batch_stores_the_good_and_reports_the_bad,
    stream_of_thousands_is_stored_exactly_once,
    batch_faces_agree,
    workers_first_seen_late_in_a_large_batch_are_created
);

async fn stored_ids(app: &TestApp) -> HashSet<String> {
    app.all_execution_ids().await.into_iter().collect()
}

async fn batch_stores_the_good_and_reports_the_bad(backend: Backend) {
    let app = spawn_app(backend).await;
    let already = report_at("clip_radar_recap_worker", 900);
    app.submit(already.clone()).await.expect("stored");
    let good = report_at("clip_radar_recap_worker", 600);
    let bad_name = ExecutionReport { worker_name: "no spaces allowed".into(), ..report_at("x", 500) };
    let bad_counts = ExecutionReport { duration_ms: Some(-1), ..report_at("clip_radar_recap_worker", 400) };
    let no_id = ExecutionReport { execution_id: String::new(), ..report_at("clip_radar_recap_worker", 300) };
    let reports = vec![good.clone(), bad_name, already.clone(), bad_counts, no_id, good.clone()];
    let response =
        app.report.clone().submit_report_batch(SubmitReportBatchRequest { reports }).await.expect("batch").into_inner();
    assert_eq!(response.accepted, 2, "good and no_id");
    assert_eq!(response.duplicates, 2, "already stored, and good repeated in the batch");
    let rejected: Vec<(i64, &str)> =
        response.rejected.iter().map(|r| (r.index, r.violations[0].field.as_str())).collect();
    assert_eq!(rejected, [(1, "worker_name"), (3, "duration_ms")]);
    assert_eq!(response.execution_ids.len(), 6);
    assert_eq!(response.execution_ids[0], good.execution_id);
    assert_eq!(response.execution_ids[1], "");
    assert_eq!(response.execution_ids[2], already.execution_id);
    assert!(uuid::Uuid::parse_str(&response.execution_ids[4]).is_ok(), "generated id is returned");
    assert_eq!(stored_ids(&app).await.len(), 3);

    let too_many = SubmitReportBatchRequest { reports: (0..1001).map(|i| report_at("w", i)).collect() };
    let status = app.report.clone().submit_report_batch(too_many).await.expect_err("too many");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("reports"), "{}", status.message());
}

async fn stream_of_thousands_is_stored_exactly_once(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut expected = HashSet::new();
    let mut messages = Vec::new();
    for i in 0..2500i64 {
        let mut r = report_at(&format!("relay_worker_{}", i % 9), i % 7000 + 1);
        if i % 250 == 7 {
            r.outcome = 0; // invalid: rejected with its index
        } else {
            expected.insert(r.execution_id.clone());
        }
        messages.push(SubmitReportRequest { report: Some(r) });
        if i % 500 == 3 {
            // A resend of the previous report within the stream.
            messages.push(messages[messages.len() - 1].clone());
        }
    }
    let response: SubmitReportsResponse =
        app.report.clone().submit_reports(futures::stream::iter(messages.clone())).await.expect("stream").into_inner();
    assert_eq!(response.accepted as usize, expected.len());
    assert_eq!(response.duplicates, 5);
    assert_eq!(response.rejected.len(), 10);
    assert!(response.rejected.iter().all(|r| r.violations[0].field == "outcome"));
    assert_eq!(response.execution_ids.len(), messages.len());
    assert_eq!(stored_ids(&app).await, expected);

    // Replaying the whole stream (a relay retrying after a lost reply) changes nothing.
    let again = app.report.clone().submit_reports(futures::stream::iter(messages)).await.expect("stream").into_inner();
    assert_eq!(again.accepted, 0);
    assert_eq!(again.duplicates as usize, expected.len() + 5);
    assert_eq!(stored_ids(&app).await, expected);
}

async fn batch_faces_agree(backend: Backend) {
    let app = spawn_app(backend).await;
    let reports = vec![report_at("web_worker", 30), ExecutionReport { outcome: 9, ..report_at("web_worker", 20) }];
    let web: SubmitReportsResponse = app
        .grpc_web("/runwarden.v1.ReportService/SubmitReportBatch", &SubmitReportBatchRequest { reports })
        .await
        .expect("grpc-web");
    assert_eq!((web.accepted, web.rejected.len()), (1, 1));

    let body = serde_json::json!({ "reports": [
        { "worker_name": "rest_worker", "outcome": "OUTCOME_SUCCESS", "duration_ms": 10 },
        { "worker_name": "rest_worker", "outcome": "OUTCOME_FAILED", "duration_ms": -10 },
    ]});
    let response = app.http.post(app.url("/api/v1/orchestrator/reports:batch")).json(&body).send().await.expect("post");
    assert_eq!(response.status(), 200);
    let summary: Value = response.json().await.expect("json");
    assert_eq!(summary["accepted"], Value::from("1"));
    assert_eq!(summary["duplicates"], Value::from("0"));
    assert_eq!(summary["rejected"][0]["index"], Value::from("1"));
    assert_eq!(summary["rejected"][0]["violations"][0]["field"], Value::from("duration_ms"));
}

/// One writer transaction of 700 reports in which new workers first appear after several full
/// INSERT statements have been sent (the writer inserts executions while it scores the next ones,
/// and must finish that statement before it creates a worker): everything is stored once, under the
/// right worker, with the right run counts.
async fn workers_first_seen_late_in_a_large_batch_are_created(backend: Backend) {
    use runwarden::{
        domain::{scoring::ScoringConfig, validation::validate_report},
        store::{
            Store, StoreOptions,
            ingest::{Ack, write_batch},
        },
    };
    use sea_orm::{ConnectionTrait, Statement};

    let db = crate::helpers::TestDatabase::create(backend).await;
    let store = Store::connect(&db.url, &StoreOptions::default()).await.expect("connect");
    store.migrate().await.expect("migrate");
    let now = chrono::Utc::now();
    let jobs: Vec<_> = (0..700i64)
        .map(|i| {
            // Worker "early" from the start; "late_1" from report 200, "late_2" from report 450.
            let worker = match i {
                0..200 => "early_worker".to_owned(),
                _ if i % 2 == 0 && i < 450 => "late_worker_1".to_owned(),
                _ if i % 2 == 0 => "late_worker_2".to_owned(),
                _ => "early_worker".to_owned(),
            };
            let valid = validate_report(Some(report_at(&worker, 7000 - i)), now).expect("valid");
            (valid, now)
        })
        .collect();
    let written = write_batch(&store, &ScoringConfig::default(), &jobs).await.expect("write");
    assert!(written.acks.iter().all(|a| matches!(a, Ack::Stored(_))), "every report is new");

    let counts: Vec<(String, i64, i64)> = store
        .reader()
        .query_all_raw(Statement::from_string(
            store.backend(),
            "SELECT w.worker_name, w.run_count, (SELECT count(*) FROM executions e WHERE e.worker_id = w.id) \
             FROM workers w ORDER BY w.worker_name",
        ))
        .await
        .expect("counts")
        .iter()
        .map(|row| {
            (
                row.try_get_by_index::<String>(0).expect("name"),
                row.try_get_by_index::<i64>(1).expect("runs"),
                row.try_get_by_index::<i64>(2).expect("stored"),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("early_worker".to_owned(), 450, 450),
            ("late_worker_1".to_owned(), 125, 125),
            ("late_worker_2".to_owned(), 125, 125)
        ]
    );
    // The same batch again: all duplicates, nothing changes.
    let again = write_batch(&store, &ScoringConfig::default(), &jobs).await.expect("write again");
    assert!(again.acks.iter().all(|a| matches!(a, Ack::Duplicate)));
    store.close().await;
}
