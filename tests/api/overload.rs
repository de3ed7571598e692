//! Overload: far more concurrent submissions than the writer's queue holds. The excess is shed
//! at once with RESOURCE_EXHAUSTED (never a hang, never another error), every admitted report is
//! stored, and once the flood stops the next submission is served normally.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::Code;

use crate::helpers::{Backend, TestDatabase, report, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_shed_with_resource_exhausted_and_admitted_reports_are_stored() {
    let app = spawn_app_with(TestDatabase::create(Backend::Sqlite).await, |c| {
        c.ingest.queue_capacity = 32;
        c.ingest.max_batch = 16;
    })
    .await;
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
