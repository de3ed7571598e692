//! Several replicas on one PostgreSQL: live events submitted to one replica reach watchers on the
//! others (LISTEN/NOTIFY), also after the listening connection is cut, with two in-process servers
//! and with three server processes.

use std::time::{Duration, Instant};

use runwarden::proto::v1::{
    HealthEvent, UpsertWorkerRequest, WatchExecutionsRequest, WatchHealthRequest, WorkerHealth,
    guardian_service_client::GuardianServiceClient, health_event, query_service_client::QueryServiceClient,
    report_service_client::ReportServiceClient,
};
use sqlx::{Connection, PgConnection};
use tonic::transport::Channel;

use crate::{
    helpers::{Backend, TestDatabase, postgres_url, report, spawn_app_with},
    lifecycle::start_binary,
};

/// The next execution on `stream`, and how long it took to come.
async fn next_execution(
    stream: &mut tonic::Streaming<runwarden::proto::v1::Execution>,
) -> (runwarden::proto::v1::Execution, Duration) {
    let started = Instant::now();
    let execution = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("delivered in time")
        .expect("ok")
        .expect("an execution");
    (execution, started.elapsed())
}

async fn next_health_change(stream: &mut tonic::Streaming<HealthEvent>) -> runwarden::proto::v1::WorkerHealthChange {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("delivered in time")
            .expect("ok")
            .expect("an event");
        if let Some(health_event::Event::WorkerHealth(change)) = event.event {
            return change;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_cross_replicas_and_survive_a_lost_connection() {
    let Some(_) = postgres_url() else { return };
    let db = TestDatabase::create(Backend::Postgres).await;
    let url = db.url.clone();
    let a = spawn_app_with(db, |_| {}).await;
    let b = spawn_app_with(TestDatabase::borrowed(&url), |_| {}).await;
    let mut executions =
        b.query.clone().watch_executions(WatchExecutionsRequest::default()).await.expect("watch").into_inner();
    let mut health = GuardianServiceClient::new(b.channel.clone())
        .watch_health(WatchHealthRequest {})
        .await
        .expect("watch")
        .into_inner();
    // Give B's listener a moment to be subscribed before the first notice.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sent = a.submit(report("replicated_worker")).await.expect("stored on A");
    let (got, latency) = next_execution(&mut executions).await;
    assert_eq!(got.execution_id, sent.execution_id);
    assert!(got.report.is_some() && got.scores.is_some());
    eprintln!("A → B execution latency: {latency:?}");
    let change = next_health_change(&mut health).await;
    assert_eq!((change.worker_name.as_str(), change.current), ("replicated_worker", WorkerHealth::Up as i32));

    // An operator pauses the worker on A: B's health watchers hear it.
    a.workers
        .clone()
        .upsert_worker(UpsertWorkerRequest {
            worker_name: "replicated_worker".into(),
            paused: Some(true),
            ..Default::default()
        })
        .await
        .expect("upsert");
    let change = next_health_change(&mut health).await;
    assert_eq!((change.previous, change.current), (WorkerHealth::Up as i32, WorkerHealth::Paused as i32));

    // A stream heartbeated on B and closed on A: B refuses its next heartbeat (its cache is told).
    let mut guardian_a = GuardianServiceClient::new(a.channel.clone());
    let mut guardian_b = GuardianServiceClient::new(b.channel.clone());
    let opened = guardian_a
        .open_stream(runwarden::proto::v1::OpenStreamRequest { stream_type: "generation".into(), ..Default::default() })
        .await
        .expect("open")
        .into_inner();
    let beat = || runwarden::proto::v1::HeartbeatRequest { stream_id: opened.stream_id.clone() };
    guardian_b.heartbeat(beat()).await.expect("B accepts a heartbeat for a stream opened on A");
    guardian_a
        .close_stream(runwarden::proto::v1::CloseStreamRequest {
            stream_id: opened.stream_id.clone(),
            reason: "done".into(),
        })
        .await
        .expect("close");
    let mut refused = false;
    for _ in 0..40 {
        match guardian_b.heartbeat(beat()).await {
            Err(status) if status.code() == tonic::Code::NotFound => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(refused, "B learned that A closed the stream");

    // Cut every LISTEN connection: the listeners reconnect by themselves.
    let mut admin = PgConnection::connect(&url).await.expect("connect");
    let cut: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&mut admin)
    .await
    .expect("terminate");
    assert!(!cut.is_empty(), "the replicas were listening");
    let mut delivered = false;
    for _ in 0..20 {
        let sent = a.submit(report("replicated_worker")).await.expect("stored on A");
        if let Ok(Ok(Some(got))) = tokio::time::timeout(Duration::from_millis(500), executions.message()).await {
            assert_eq!(got.execution_id, sent.execution_id);
            delivered = true;
            break;
        }
    }
    assert!(delivered, "B hears A again after its LISTEN connection was cut");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_server_processes_share_live_events() {
    let Some(_) = postgres_url() else { return };
    let db = TestDatabase::create(Backend::Postgres).await;
    let replicas: Vec<_> = (0..3).map(|_| start_binary(&TestDatabase::borrowed(&db.url))).collect();
    let mut channels = Vec::new();
    for (_, addr) in &replicas {
        channels.push(Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect"));
    }
    let mut watches = Vec::new();
    for channel in &channels {
        watches.push(
            QueryServiceClient::new(channel.clone())
                .watch_executions(WatchExecutionsRequest::default())
                .await
                .expect("watch")
                .into_inner(),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A report to each replica in turn reaches the watchers of all three.
    for (i, channel) in channels.iter().enumerate() {
        let sent = ReportServiceClient::new(channel.clone())
            .submit_report(runwarden::proto::v1::SubmitReportRequest { report: Some(report("fleet_worker")) })
            .await
            .expect("stored")
            .into_inner();
        for (j, watch) in watches.iter_mut().enumerate() {
            let (got, latency) = next_execution(watch).await;
            assert_eq!(got.execution_id, sent.execution_id, "replica {j} sees what replica {i} stored");
            eprintln!("replica {i} → replica {j}: {latency:?}");
        }
    }
    for (mut child, _) in replicas {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detector_passes_on_two_replicas_record_each_missed_slot_once() {
    use chrono::{TimeZone, Utc};
    let Some(_) = postgres_url() else { return };
    let t0 = Utc.with_ymd_and_hms(2026, 3, 28, 22, 0, 0).unwrap();
    let clock = crate::helpers::ManualClock::starting_at(t0);
    let db = TestDatabase::create(Backend::Postgres).await;
    let url = db.url.clone();
    let a = crate::helpers::spawn_app_with_clock(db, |_| {}, clock.clone()).await;
    let b = crate::helpers::spawn_app_with_clock(TestDatabase::borrowed(&url), |_| {}, clock.clone()).await;
    a.workers
        .clone()
        .upsert_worker(UpsertWorkerRequest {
            worker_name: "singleton_checked".into(),
            expected_interval: "3600".into(),
            grace_seconds: Some(300),
            ..Default::default()
        })
        .await
        .expect("upsert");
    let mut run = report("singleton_checked");
    run.started_at = Some(runwarden::domain::validation::to_timestamp(t0));
    run.duration_ms = Some(1000);
    a.submit(run).await.expect("stored");
    // Three missed hours later both replicas run a pass at the same moment, twice.
    clock.advance(3 * 3600 + 600);
    for _ in 0..2 {
        let (pa, pb) = tokio::join!(a.detector.run_once(), b.detector.run_once());
        let (pa, pb) = (pa.expect("pass on A"), pb.expect("pass on B"));
        assert!(pa.missed_runs + pb.missed_runs <= 3, "{pa:?} {pb:?}");
    }
    let missed = a
        .query
        .clone()
        .list_anomalies(runwarden::proto::v1::ListAnomaliesRequest {
            kind: runwarden::proto::v1::AnomalyKind::MissedRun as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .anomalies;
    assert_eq!(missed.len(), 3, "one anomaly per missed slot across both replicas: {missed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_two_replicas_deletes_each_row_once() {
    let Some(_) = postgres_url() else { return };
    let db = TestDatabase::create(Backend::Postgres).await;
    let url = db.url.clone();
    let a = spawn_app_with(db, |c| c.retention.batch = 3).await;
    let b = spawn_app_with(TestDatabase::borrowed(&url), |c| c.retention.batch = 3).await;
    for i in 0..20 {
        let mut r = report("old_worker");
        r.started_at = Some(runwarden::domain::validation::to_timestamp(
            chrono::Utc::now() - chrono::TimeDelta::days(60) + chrono::TimeDelta::seconds(i),
        ));
        r.duration_ms = Some(1000);
        a.submit(r).await.expect("stored");
    }
    let (pa, pb) = tokio::join!(a.retention.run_once(), b.retention.run_once());
    let (pa, pb) = (pa.expect("pass on A"), pb.expect("pass on B"));
    assert!(pa.ran || pb.ran, "{pa:?} {pb:?}");
    let rest = a.retention.run_once().await.expect("pass");
    assert_eq!(pa.executions + pb.executions + rest.executions, 20, "{pa:?} {pb:?} {rest:?}");
}
