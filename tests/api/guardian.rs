//! The stream guardian: streams through their states on a manual clock, the tick's metrics and
//! warnings, its own sse_guardian report, live watches over gRPC and grpc-web, and one tick per
//! interval across two replicas.

use std::time::Duration;

use runwarden::api::Clock;
use runwarden::proto::v1::{
    CloseStreamRequest, Execution, GetGuardianStatusRequest, GuardianStatus, HealthEvent, HeartbeatBatchRequest,
    HeartbeatRequest, ListExecutionsRequest, ListStreamsRequest, OpenStreamRequest, QualityLevel, StreamState,
    WatchExecutionsRequest, WatchHealthRequest, WorkerHealth, guardian_service_client::GuardianServiceClient,
    health_event,
};
use serde_json::Value;
use tonic::Code;

use crate::{
    backend_tests,
    helpers::{Backend, ManualClock, TestApp, TestDatabase, report, spawn_app, spawn_app_with, spawn_app_with_clock},
};

backend_tests!(
    streams_go_healthy_stale_orphaned_cleaned,
    guardian_reports_itself_as_sse_guardian,
    watches_deliver_live_over_grpc_and_grpc_web,
    a_disconnected_watcher_leaves_no_open_stream,
    opening_validates_and_rest_shows_the_guardian,
    heartbeat_batches_keep_the_live_and_list_the_rest,
);

fn client(app: &TestApp) -> GuardianServiceClient<tonic::transport::Channel> {
    GuardianServiceClient::new(app.channel.clone())
}

async fn open(app: &TestApp, stream_type: &str, owner: &str) -> String {
    client(app)
        .open_stream(OpenStreamRequest { stream_type: stream_type.into(), owner: owner.into(), ..Default::default() })
        .await
        .expect("open")
        .into_inner()
        .stream_id
}

/// The ids ListStreams returns for `state`, in its order.
async fn ids_in_state(app: &TestApp, state: StreamState) -> Vec<String> {
    let listed = client(app)
        .list_streams(ListStreamsRequest { state: state as i32, ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    listed.streams.into_iter().map(|s| s.stream_id).collect()
}

async fn tick(app: &TestApp) -> GuardianStatus {
    app.guardian.run_once().await.expect("tick").expect("this replica ticks");
    client(app).get_guardian_status(GetGuardianStatusRequest {}).await.expect("status").into_inner()
}

async fn streams_go_healthy_stale_orphaned_cleaned(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with_clock(TestDatabase::create(backend).await, |_| {}, clock.clone()).await;
    let a = open(&app, "generation", "asset-service").await;
    let b = open(&app, "coach_start", "coach").await;
    let c = open(&app, "profile_start", "profiles").await;

    let status = tick(&app).await;
    assert_eq!((status.active_streams, status.healthy_streams, status.stale_streams), (3, 3, 0));
    assert_eq!(status.orphan_rate, 0.0);

    clock.advance(20);
    client(&app).heartbeat(HeartbeatRequest { stream_id: a.clone() }).await.expect("beat");
    clock.advance(15);
    let status = tick(&app).await;
    assert_eq!((status.healthy_streams, status.stale_streams, status.orphaned_streams), (1, 2, 0), "{status:?}");

    clock.advance(100);
    let status = tick(&app).await;
    assert_eq!((status.active_streams, status.stale_streams, status.orphaned_streams), (3, 1, 2), "{status:?}");
    assert!((status.orphan_rate - 2.0 / 3.0).abs() < 1e-9);
    assert_eq!(status.orphaned_by_type.get("coach_start"), Some(&1));
    assert_eq!(status.orphaned_by_type.get("profile_start"), Some(&1));
    assert_eq!(status.orphaned_by_type.get("generation"), Some(&0));
    let kinds: Vec<&str> = status.warnings.iter().map(|w| w.kind.as_str()).collect();
    assert_eq!(kinds, ["ORPHAN_RATE_HIGH"]);

    // An orphaned stream must be reopened; a stale one can still be saved by a heartbeat.
    let refused = client(&app).heartbeat(HeartbeatRequest { stream_id: b.clone() }).await.expect_err("orphaned");
    assert_eq!(refused.code(), Code::NotFound);
    client(&app).heartbeat(HeartbeatRequest { stream_id: a.clone() }).await.expect("stale is revived");
    assert_eq!(ids_in_state(&app, StreamState::Healthy).await, [a.as_str()]);

    let closed = client(&app)
        .close_stream(CloseStreamRequest { stream_id: a.clone(), reason: "done".into() })
        .await
        .expect("close")
        .into_inner();
    assert_eq!(closed.state, StreamState::Closed as i32);
    let refused = client(&app).heartbeat(HeartbeatRequest { stream_id: a.clone() }).await.expect_err("closed");
    assert_eq!(refused.code(), Code::NotFound);

    clock.advance(301);
    let status = tick(&app).await;
    assert_eq!((status.active_streams, status.cleaned_streams, status.orphan_rate), (0, 3, 0.0), "{status:?}");
    let left = client(&app).list_streams(ListStreamsRequest::default()).await.expect("list").into_inner();
    assert!(left.streams.is_empty());
    let gone = client(&app).heartbeat(HeartbeatRequest { stream_id: c }).await.expect_err("cleaned");
    assert_eq!(gone.code(), Code::NotFound);
}

async fn heartbeat_batches_keep_the_live_and_list_the_rest(backend: Backend) {
    let clock = ManualClock::starting_now();
    let db = TestDatabase::create(backend).await;
    let url = db.url.clone();
    let app = spawn_app_with_clock(db, |_| {}, clock.clone()).await;
    let live = open(&app, "generation", "asset-service").await;
    let quiet = open(&app, "coach_start", "coach").await;
    let closed = open(&app, "profile_start", "profiles").await;
    client(&app)
        .close_stream(CloseStreamRequest { stream_id: closed.clone(), reason: "done".into() })
        .await
        .expect("close");
    tick(&app).await;

    clock.advance(20);
    let ids = vec![live.clone(), closed.clone(), "never-opened".to_owned(), live.clone()];
    let reply = client(&app)
        .heartbeat_batch(HeartbeatBatchRequest { stream_ids: ids })
        .await
        .expect("a batch with refused ids still succeeds")
        .into_inner();
    assert_eq!(reply.accepted, 2, "{reply:?}");
    let refused: Vec<(i64, &str, &str)> =
        reply.refused.iter().map(|r| (r.index, r.stream_id.as_str(), r.reason.as_str())).collect();
    assert_eq!(refused, [(1, closed.as_str(), "closed"), (2, "never-opened", "unknown")]);
    let stale_at = reply.stale_at.expect("stale_at");
    assert_eq!(stale_at.seconds, clock.now().timestamp() + 30, "stale 30 s after the beat");

    // The tick reads the beats not yet flushed: the batched stream stays healthy, the quiet one
    // goes stale, and the beats are still waiting for the flush afterwards.
    clock.advance(15);
    let status = tick(&app).await;
    assert_eq!((status.active_streams, status.healthy_streams, status.stale_streams), (2, 1, 1), "{status:?}");
    assert_eq!(app.guardian.flush_heartbeats().await.expect("flush"), 1, "the tick did not flush");
    assert_eq!(app.guardian.flush_heartbeats().await.expect("flush"), 0, "flushed beats leave the buffer");
    assert_eq!(ids_in_state(&app, StreamState::Healthy).await, [live.as_str()]);
    assert_eq!(ids_in_state(&app, StreamState::Stale).await, [quiet.as_str()]);

    // A replica that knows none of the streams reads them in one query, each id once.
    let fresh = spawn_app_with_clock(TestDatabase::borrowed(&url), |_| {}, clock.clone()).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.extend([closed.clone(), quiet.clone(), "never-opened".to_owned(), live.clone()]);
    }
    let reply = client(&fresh)
        .heartbeat_batch(HeartbeatBatchRequest { stream_ids: ids })
        .await
        .expect("batch on a replica with a cold cache")
        .into_inner();
    assert_eq!(reply.accepted, 6, "{reply:?}");
    let refused: Vec<(i64, &str)> = reply.refused.iter().map(|r| (r.index, r.reason.as_str())).collect();
    assert_eq!(refused, [(0, "closed"), (2, "unknown"), (4, "closed"), (6, "unknown"), (8, "closed"), (10, "unknown")]);

    for (ids, why) in [(vec![], "empty"), (vec![live.clone(); 10_001], "over 10,000")] {
        let error = client(&app).heartbeat_batch(HeartbeatBatchRequest { stream_ids: ids }).await.expect_err(why);
        assert_eq!(error.code(), Code::InvalidArgument, "{why}");
        assert!(error.message().contains("stream_ids"), "{why}: {}", error.message());
    }
}

async fn guardian_reports_itself_as_sse_guardian(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with_clock(TestDatabase::create(backend).await, |_| {}, clock.clone()).await;
    for _ in 0..12 {
        open(&app, "generation", "asset-service").await;
    }
    tick(&app).await;
    clock.advance(40);
    let status = tick(&app).await;
    assert_eq!(status.stale_streams, 12);
    assert!(status.warnings.iter().any(|w| w.kind == "TOO_MANY_STALE" && w.message == "stale_streams 12 > 10"));
    let runs = app
        .query
        .clone()
        .list_executions(ListExecutionsRequest { worker_name: "sse_guardian".into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner()
        .executions;
    assert_eq!(runs.len(), 2);
    let latest = runs[0].report.as_ref().expect("report");
    assert_eq!(latest.worker_type, "sse");
    let custom: Value = serde_json::to_value(latest.custom_metrics.as_ref().expect("metrics")).expect("json");
    assert_eq!(custom["stale_streams"], Value::from(12.0));
    assert_eq!(custom["active_streams"], Value::from(12.0));
}

/// The guardian status an event carries (a worker health change here is a test failure).
fn guardian_status(event: HealthEvent) -> GuardianStatus {
    match event.event {
        Some(health_event::Event::Guardian(status)) => status,
        other => panic!("expected a guardian status, got {other:?}"),
    }
}

async fn watches_deliver_live_over_grpc_and_grpc_web(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with_clock(TestDatabase::create(backend).await, |_| {}, clock.clone()).await;
    tick(&app).await;

    // gRPC: the current status at once, then the next tick's.
    let mut health = client(&app).watch_health(WatchHealthRequest {}).await.expect("watch").into_inner();
    let first = guardian_status(health.message().await.expect("first").expect("an event"));
    assert!(first.at.is_some());
    let mut executions = app
        .query
        .clone()
        .watch_executions(WatchExecutionsRequest { worker_name: "watched_worker".into(), ..Default::default() })
        .await
        .expect("watch")
        .into_inner();

    // grpc-web (what the dashboard uses): the same two streams over HTTP/1.1.
    let mut web_health = app.grpc_web_stream("/runwarden.v1.GuardianService/WatchHealth", &WatchHealthRequest {}).await;
    let web_first = guardian_status(web_health.next::<HealthEvent>().await.expect("grpc-web first status"));
    assert_eq!(web_first.at, first.at);
    let mut web_executions = app
        .grpc_web_stream(
            "/runwarden.v1.QueryService/WatchExecutions",
            &WatchExecutionsRequest { min_level: QualityLevel::Excellent as i32, ..Default::default() },
        )
        .await;

    tokio::time::sleep(Duration::from_millis(50)).await;
    app.submit(report("other_worker")).await.expect("stored");
    let sent = app.submit(report("watched_worker")).await.expect("stored");

    let got = tokio::time::timeout(Duration::from_secs(5), executions.message()).await.expect("in time").expect("ok");
    let got = got.expect("an execution");
    assert_eq!(got.execution_id, sent.execution_id, "the filter skips other workers");
    assert_eq!(got.quality_level, sent.quality_level);
    let web_got: Execution =
        tokio::time::timeout(Duration::from_secs(5), web_executions.next()).await.expect("in time").expect("execution");
    assert!(web_got.report.is_some());

    clock.advance(20);
    tick(&app).await;
    // Both health watches saw the two new workers come UP, then the tick's status.
    let mut changes = Vec::new();
    let second = loop {
        let event = tokio::time::timeout(Duration::from_secs(5), health.message()).await.expect("in time");
        match event.expect("ok").expect("event").event {
            Some(health_event::Event::WorkerHealth(change)) => changes.push((change.worker_name, change.current)),
            Some(health_event::Event::Guardian(status)) => break status,
            None => panic!("empty event"),
        }
    };
    changes.sort();
    let up = WorkerHealth::Up as i32;
    assert_eq!(changes, [("other_worker".to_owned(), up), ("watched_worker".to_owned(), up)]);
    assert!(second.active_streams >= 4, "the four watches are tracked streams");
    let mut web_changes = 0;
    let web_second = loop {
        let event = tokio::time::timeout(Duration::from_secs(5), web_health.next::<HealthEvent>()).await;
        match event.expect("in time").expect("event").event {
            Some(health_event::Event::WorkerHealth(_)) => web_changes += 1,
            Some(health_event::Event::Guardian(status)) => break status,
            None => panic!("empty event"),
        }
    };
    assert_eq!(web_changes, 2, "grpc-web carries the health changes too");
    assert!(web_second.at.map(|t| (t.seconds, t.nanos)) >= web_first.at.map(|t| (t.seconds, t.nanos)));
}

async fn a_disconnected_watcher_leaves_no_open_stream(backend: Backend) {
    let clock = ManualClock::starting_now();
    let app = spawn_app_with_clock(TestDatabase::create(backend).await, |_| {}, clock.clone()).await;
    let watch = client(&app).watch_health(WatchHealthRequest {}).await.expect("watch").into_inner();
    let open_watches = || async {
        client(&app)
            .list_streams(ListStreamsRequest { stream_type: "watch_health".into(), ..Default::default() })
            .await
            .expect("list")
            .into_inner()
            .streams
            .into_iter()
            .filter(|s| s.state != StreamState::Closed as i32)
            .count()
    };
    assert_eq!(open_watches().await, 1);
    drop(watch);
    let mut closed = false;
    for _ in 0..100 {
        if open_watches().await == 0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the watch stream is closed when its client goes away");
    clock.advance(400);
    let status = tick(&app).await;
    assert_eq!(status.active_streams, 0);
    assert_eq!(status.cleaned_streams, 1);
}

async fn opening_validates_and_rest_shows_the_guardian(backend: Backend) {
    let app = spawn_app(backend).await;
    let status = client(&app)
        .open_stream(OpenStreamRequest { stream_type: "telepathy".into(), ..Default::default() })
        .await
        .expect_err("unknown type");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("generation"), "lists the allowed types: {}", status.message());
    let id = open(&app, "coach_continue", "coach").await;
    let again = client(&app)
        .open_stream(OpenStreamRequest {
            stream_id: id.clone(),
            stream_type: "coach_continue".into(),
            ..Default::default()
        })
        .await
        .expect_err("taken");
    assert_eq!(again.code(), Code::AlreadyExists);
    let missing = client(&app).heartbeat(HeartbeatRequest { stream_id: "nope".into() }).await.expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);

    app.guardian.run_once().await.expect("tick");
    let rest: Value =
        app.http.get(app.url("/api/v1/orchestrator/guardian")).send().await.expect("get").json().await.expect("json");
    assert_eq!(rest["active_streams"], Value::from("1"));
    assert_eq!(rest["orphan_rate"], Value::from(0.0));
    let streams: Value = app
        .http
        .get(app.url("/api/v1/orchestrator/guardian/streams?state=healthy"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(streams["streams"][0]["stream_id"], Value::from(id));
    let bad = app.http.get(app.url("/api/v1/orchestrator/guardian/streams?state=asleep")).send().await.expect("get");
    assert_eq!(bad.status(), 400);
}

/// Two servers on one PostgreSQL database tick about once per interval between them, and the
/// survivor keeps ticking when one stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_tick_once_per_interval_with_failover() {
    if crate::helpers::postgres_url().is_none() {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let url = db.url.clone();
    let configure = |c: &mut runwarden::Config| {
        c.background_tasks = true;
        c.guardian.tick_interval = Duration::from_millis(500);
    };
    let a = spawn_app_with(db, configure).await;
    let b = spawn_app_with(TestDatabase::borrowed(&url), configure).await;
    let store = runwarden::store::Store::connect(&url, &Default::default()).await.expect("open");
    let count = || async { runwarden::store::streams::snapshot_count(store.reader()).await.expect("count") };
    let before = count().await;
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let ticks = count().await - before;
    assert!((4..=8).contains(&ticks), "two replicas at 500 ms made {ticks} ticks in 3 s (one replica alone makes ~6)");
    drop(a);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = count().await;
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let ticks = count().await - before;
    assert!(ticks >= 3, "the survivor keeps ticking: {ticks} ticks in 2 s");
    drop(b);
}
