//! Overload: far more concurrent submissions than the writer's queue holds. The excess is shed
//! with RESOURCE_EXHAUSTED (never a hang, never another error) once the admission wait is over,
//! every admitted report is stored, and once the flood stops the next submission is served
//! normally.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::Code;

use crate::helpers::{Backend, TestDatabase, report, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_with_resource_exhausted_and_admitted_reports_are_stored() {
    use sqlx::{Connection, Executor, SqliteConnection};

    let app = spawn_app_with(TestDatabase::create(Backend::Sqlite).await, |c| {
        c.ingest.queue_capacity = 32;
        c.ingest.max_batch = 16;
        c.store.busy_timeout = Duration::from_secs(30);
    })
    .await;
    // The writer is stuck for the flood's first half second (another connection holds SQLite's
    // write lock), five times the admission wait: the queue is full whatever the speed of this
    // build's request path against the writer's, and calls are shed; then it drains.
    let mut lock = SqliteConnection::connect(&app.database_url()).await.expect("second connection");
    lock.execute("BEGIN IMMEDIATE").await.expect("take the write lock");
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        lock.execute("ROLLBACK").await.expect("release the lock");
    });
    let calls = (0..3000).map(|i| {
        let mut client = app.report.clone();
        async move {
            let sent = report(&format!("flood_{}", i % 20));
            let started = Instant::now();
            let result = client.submit_report(runwarden::proto::v1::SubmitReportRequest { report: Some(sent) }).await;
            let took = started.elapsed();
            match result {
                Ok(ack) => (ack.into_inner().execution_id, Ok(()), took),
                Err(status) => (String::new(), Err(status.code()), took),
            }
        }
    });
    let results: Vec<_> = futures::stream::iter(calls).buffer_unordered(1000).collect().await;
    release.await.expect("the lock is released");
    let admitted: Vec<&String> = results.iter().filter(|(_, r, _)| r.is_ok()).map(|(id, _, _)| id).collect();
    let shed: Vec<Duration> =
        results.iter().filter(|(_, r, _)| *r == Err(Code::ResourceExhausted)).map(|(_, _, took)| *took).collect();
    let other: Vec<_> =
        results.iter().filter(|(_, r, _)| !matches!(r, Ok(()) | Err(Code::ResourceExhausted))).collect();
    assert!(other.is_empty(), "only OK or RESOURCE_EXHAUSTED under overload: {:?}", &other[..other.len().min(5)]);
    assert!(!shed.is_empty(), "a 3,000-wide flood against a 32-report queue sheds load");
    assert!(!admitted.is_empty(), "and still admits what fits");
    eprintln!(
        "admitted {}, shed {} (slowest shed answer {:?})",
        admitted.len(),
        shed.len(),
        shed.iter().max().copied().unwrap_or_default()
    );

    // Every admitted report is stored; nothing else is.
    let stored: std::collections::HashSet<String> = app.all_execution_ids().await.into_iter().collect();
    assert_eq!(stored.len(), admitted.len());
    assert!(admitted.iter().all(|id| stored.contains(*id)));

    // After the flood, a submission is served normally.
    app.submit(report("after_the_flood")).await.expect("served once the load stops");
    app.stop().await;
}

/// With the writer stuck (another connection holds SQLite's write lock) and its queue full, a
/// SubmitReport or SubmitReportBatch is refused before its body is decoded: RESOURCE_EXHAUSTED
/// over gRPC and grpc-web, never a transport error or a reset stream. Once the lock is released,
/// what was admitted is stored and the next call is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_unary_ingest_before_decoding() {
    use runwarden::proto::v1::{SubmitReportBatchRequest, SubmitReportRequest, SubmitReportsResponse};
    use sqlx::{Connection, Executor, SqliteConnection};

    let app = spawn_app_with(TestDatabase::create(Backend::Sqlite).await, |c| {
        c.ingest.queue_capacity = 2;
        c.ingest.max_batch = 1;
        c.store.busy_timeout = Duration::from_secs(30);
    })
    .await;
    let mut lock = SqliteConnection::connect(&app.database_url()).await.expect("second connection");
    lock.execute("BEGIN IMMEDIATE").await.expect("take the write lock");

    // Batches of one: one report for the stuck writer, one (a full batch) waiting with it, one for
    // the planner behind them, two to fill the queue.
    let mut waiting = Vec::new();
    for i in 0..5 {
        let mut client = app.report.clone();
        waiting.push(tokio::spawn(async move {
            client.submit_report(SubmitReportRequest { report: Some(report(&format!("queued_{i}"))) }).await
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let refused = app.submit(report("one_too_many")).await.expect_err("the queue is full");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("ingest queue is full"), "{}", refused.message());
    let batch = SubmitReportBatchRequest { reports: vec![report("batch_a"), report("batch_b")] };
    let refused = app.report.clone().submit_report_batch(batch.clone()).await.expect_err("still full");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let (status, message) = app
        .grpc_web::<_, SubmitReportsResponse>("/runwarden.v1.ReportService/SubmitReportBatch", &batch)
        .await
        .expect_err("full over grpc-web too");
    assert_eq!(status, "8", "RESOURCE_EXHAUSTED over grpc-web: {message}");
    let metrics = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("runwarden_ingest_rejected_total"), "the refusals are counted");

    lock.execute("ROLLBACK").await.expect("release the lock");
    for call in waiting {
        call.await.expect("task").expect("admitted before the queue filled, stored once the lock is released");
    }
    app.submit(report("after")).await.expect("served again");
    assert_eq!(app.all_execution_ids().await.len(), 6);
    app.stop().await;
}

/// A SubmitReport that finds the queue full waits up to the admission wait for a place (without
/// decoding its body) instead of being refused at once: admitted when a place comes up in time,
/// RESOURCE_EXHAUSTED when none does — and never before the wait is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_unary_calls_wait_for_a_place_then_refuses() {
    use runwarden::proto::v1::SubmitReportRequest;
    use sqlx::{Connection, Executor, SqliteConnection};
    use tonic::IntoRequest;

    let wait = Duration::from_secs(2);
    let app = spawn_app_with(TestDatabase::create(Backend::Sqlite).await, |c| {
        c.ingest.queue_capacity = 2;
        c.ingest.max_batch = 1;
        c.ingest.admission_wait = wait;
        c.store.busy_timeout = Duration::from_secs(30);
    })
    .await;
    let submit = |name: String| {
        let mut client = app.report.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = client.submit_report(SubmitReportRequest { report: Some(report(&name)) }).await;
            (result, started.elapsed())
        })
    };
    // One report for the stuck writer, one waiting with it, one for the planner behind them, two
    // to fill the queue.
    let mut lock = SqliteConnection::connect(&app.database_url()).await.expect("second connection");
    lock.execute("BEGIN IMMEDIATE").await.expect("take the write lock");
    let mut queued = Vec::new();
    for i in 0..5 {
        queued.push(submit(format!("queued_{i}")));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Two calls and a REST post find the queue full and wait; the lock goes away within their wait.
    let first = submit("waited_a".into());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = submit("waited_b".into());
    let rest = {
        let (http, url) = (app.http.clone(), app.url("/api/v1/orchestrator/reports"));
        let body =
            serde_json::json!({ "worker_name": "waited_rest", "outcome": "OUTCOME_SUCCESS", "duration_ms": 900 });
        tokio::spawn(async move { http.post(url).json(&body).send().await.map(|r| r.status().as_u16()) })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !first.is_finished() && !second.is_finished() && !rest.is_finished(),
        "calls that find the queue full wait for a place"
    );
    lock.execute("ROLLBACK").await.expect("release the lock");
    assert_eq!(rest.await.expect("task").expect("post"), 200, "the REST post was admitted too");
    for call in [first, second] {
        let (result, took) = call.await.expect("task");
        let ack = result.expect("admitted into a place that came up within the wait");
        assert!(!ack.into_inner().duplicate);
        assert!(took < wait + Duration::from_secs(1), "admitted as soon as a place came up, took {took:?}");
    }
    for call in queued {
        call.await.expect("task").0.expect("stored");
    }
    assert_eq!(app.all_execution_ids().await.len(), 8);

    // No place within the wait: RESOURCE_EXHAUSTED, after the wait and not before.
    lock.execute("BEGIN IMMEDIATE").await.expect("take the write lock again");
    let mut queued = Vec::new();
    for i in 5..10 {
        queued.push(submit(format!("queued_{i}")));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (result, took) = submit("refused".into()).await.expect("task");
    let refused = result.expect_err("no place came up");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(took >= wait, "refused only once the wait was over, took {took:?}");
    // A caller with a deadline shorter than the wait hears the refusal before its deadline.
    let mut hurried = SubmitReportRequest { report: Some(report("hurried")) }.into_request();
    hurried.set_timeout(Duration::from_millis(600));
    let started = Instant::now();
    let refused = app.report.clone().submit_report(hurried).await.expect_err("no place came up");
    assert_eq!(refused.code(), Code::ResourceExhausted, "refused, not DEADLINE_EXCEEDED: {refused:?}");
    assert!(started.elapsed() < Duration::from_millis(600), "within the deadline: {:?}", started.elapsed());
    lock.execute("ROLLBACK").await.expect("release the lock");
    for call in queued {
        call.await.expect("task").0.expect("stored");
    }
    assert_eq!(app.all_execution_ids().await.len(), 13, "the refused report is not stored");
    app.stop().await;
}
