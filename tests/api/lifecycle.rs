//! Restarts, graceful shutdown and crashes: an acknowledged report is always there afterwards.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use runwarden::proto::v1::{
    ListStreamsRequest, StreamState, SubmitReportRequest, WatchExecutionsRequest, WatchHealthRequest,
    guardian_service_client::GuardianServiceClient, query_service_client::QueryServiceClient,
    report_service_client::ReportServiceClient,
};
use tonic::transport::Channel;

use crate::{
    backend_tests,
    helpers::{Backend, TestDatabase, report_at, spawn_app, spawn_app_with},
};

backend_tests!(
    data_survives_a_restart,
    a_graceful_stop_closes_the_streams_of_open_watches,
    sigterm_under_load_loses_no_acked_report,
    sigkill_under_load_loses_no_acked_report
);

async fn data_survives_a_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut sent = HashSet::new();
    for i in 0..20 {
        let r = report_at("analytics_flush_worker", 60 * (i + 1));
        sent.insert(r.execution_id.clone());
        app.submit(r).await.expect("stored");
    }
    let db = app.stop().await;
    let app = spawn_app_with(db, |_| {}).await;
    let ids: HashSet<String> = app.all_execution_ids().await.into_iter().collect();
    assert_eq!(ids, sent);
    let worker = app
        .query
        .clone()
        .get_worker(runwarden::proto::v1::GetWorkerRequest { worker_name: "analytics_flush_worker".into() })
        .await
        .expect("worker")
        .into_inner();
    assert_eq!(worker.run_count, 20);
}

/// Starts the real binary on `db` and returns it with its address (read from its JSON log).
pub(crate) fn start_binary(db: &TestDatabase) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0", "--shutdown-timeout", "5", "--database"])
        .arg(&db.url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start runwarden");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent && line.contains("runwarden ready") {
                let value: serde_json::Value = serde_json::from_str(&line).expect("json log line");
                let _ = tx.send(value["addr"].as_str().unwrap_or_default().to_owned());
                sent = true;
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(60)).expect("server reports its address");
    (child, addr)
}

/// Submits continuously from 16 tasks, kills the server with `signal` mid-load, and checks that
/// every acknowledged report is stored afterwards, exactly once. SIGKILL: five times in a row,
/// each at a random moment, restarting on the same database each time.
async fn kill_under_load(backend: Backend, signal: &str) {
    let db = TestDatabase::create(backend).await;
    let rounds = if signal == "-KILL" { 5 } else { 1 };
    let mut acked = Vec::new();
    for round in 0..rounds {
        // A random moment between 0.3 and 1.5 s into the load.
        let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 1200 / 255;
        let delay = Duration::from_millis(300 + jitter);
        let got = signal_under_load(&db, signal, delay).await;
        eprintln!("round {round}: {} reports acked before {signal} at {delay:?}", got.len());
        acked.extend(got);
    }

    let app = spawn_app_with(db, |_| {}).await;
    let stored = app.all_execution_ids().await;
    let stored_set: HashSet<&String> = stored.iter().collect();
    assert_eq!(stored_set.len(), stored.len(), "nothing stored twice");
    let missing: Vec<_> = acked.iter().filter(|id| !stored_set.contains(id)).collect();
    assert!(missing.is_empty(), "{} of {} acked reports missing after {signal}", missing.len(), acked.len());
}

/// A call the server never took: its stream was opened after the server's graceful GOAWAY
/// (NO_ERROR), which HTTP/2 guarantees was not processed, so it is safe to send again. tonic's
/// client reports it as INTERNAL with the h2 error as its source, not as UNAVAILABLE.
fn refused_by_goaway(status: &tonic::Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = error.source();
    }
    false
}

/// One round: starts the binary on `db`, loads it, sends `signal` after `delay`, and returns the
/// acknowledged execution ids.
async fn signal_under_load(db: &TestDatabase, signal: &str, delay: Duration) -> Vec<String> {
    let (mut child, addr) = start_binary(db);
    let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..16 {
        let mut client = ReportServiceClient::new(channel.clone());
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let report = report_at(&format!("load_worker_{t}"), i % 3600);
                let id = report.execution_id.clone();
                match tokio::time::timeout(
                    Duration::from_secs(10),
                    client.submit_report(SubmitReportRequest { report: Some(report) }),
                )
                .await
                {
                    Ok(Ok(response)) => {
                        assert_eq!(response.into_inner().execution_id, id);
                        acked.lock().expect("lock").push(id);
                    }
                    Ok(Err(status)) => {
                        assert!(
                            matches!(
                                status.code(),
                                tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                            ) || refused_by_goaway(&status),
                            "only retriable failures while stopping: {status:?}"
                        );
                        return;
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the load run, then stop the server while it is busy.
    tokio::time::sleep(delay).await;
    let before = acked.lock().expect("lock").len();
    assert!(before > 0, "the load generator got acknowledgements before the signal");
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    for task in tasks {
        task.await.expect("load task");
    }
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    if signal == "-TERM" {
        assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    }
    acked.lock().expect("lock").clone()
}

/// The streams the server tracks for its own live watches (a dashboard's WatchExecutions and
/// WatchHealth) are recorded as closed when the server stops gracefully, not left open to be
/// counted as orphans by the next start's guardian. The closes need the database, so they must
/// happen before the server closes it.
async fn a_graceful_stop_closes_the_streams_of_open_watches(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let (mut child, addr) = start_binary(&db);
    let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let executions = QueryServiceClient::new(channel.clone()).watch_executions(WatchExecutionsRequest::default()).await;
    let health = GuardianServiceClient::new(channel.clone()).watch_health(WatchHealthRequest::default()).await;
    let mut executions = executions.expect("watch executions").into_inner();
    let mut health = health.expect("watch health").into_inner();
    health.message().await.expect("the guardian's status comes first");
    let mut guardian = GuardianServiceClient::new(channel);
    let listed = guardian.list_streams(ListStreamsRequest::default()).await.expect("list").into_inner().streams;
    assert_eq!(listed.len(), 2, "each watch is a tracked stream: {listed:?}");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    // Each watch ends at once, telling its client to reconnect (not at the shutdown timeout).
    assert_eq!(end_of(&mut executions).await, tonic::Code::Unavailable);
    assert_eq!(end_of(&mut health).await, tonic::Code::Unavailable);
    let exit = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");

    let app = spawn_app_with(db, |_| {}).await;
    let streams = app.guardian.list(None, None, None, 100).await.expect("list after the restart");
    assert_eq!(streams.len(), 2);
    for stream in streams {
        assert_eq!(stream.state(), StreamState::Closed, "{stream:?}");
        assert!(stream.closed_at.is_some(), "{stream:?}");
    }
}

/// The status a live stream ends with, after whatever messages come before it.
async fn end_of<T>(stream: &mut tonic::Streaming<T>) -> tonic::Code {
    loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => return status.code(),
        }
    }
}

async fn sigterm_under_load_loses_no_acked_report(backend: Backend) {
    kill_under_load(backend, "-TERM").await;
}

async fn sigkill_under_load_loses_no_acked_report(backend: Backend) {
    kill_under_load(backend, "-KILL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_backup_restores_every_report() {
    let app = spawn_app(Backend::Sqlite).await;
    let mut sent = HashSet::new();
    for i in 0..10 {
        let r = report_at("backed_up_worker", 60 * (i + 1));
        sent.insert(r.execution_id.clone());
        app.submit(r).await.expect("stored");
    }
    let dir = tempfile::tempdir().expect("dir");
    let copy = dir.path().join("copy.db");
    let url = app.database_url();
    let backup = |to: std::path::PathBuf| {
        let url = url.clone();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_runwarden"))
                .args(["backup", "--database", &url, "--to"])
                .arg(to)
                .output()
                .await
                .expect("runwarden backup runs")
        }
    };
    // While the server runs and keeps accepting reports.
    let out = backup(copy.clone()).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    app.submit(report_at("backed_up_worker", 5)).await.expect("the server keeps writing");
    let again = backup(copy.clone()).await;
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // Restore = start on the copy: every report acknowledged before the backup is there.
    let restored =
        spawn_app_with(TestDatabase::borrowed(&format!("sqlite://{}?mode=rw", copy.display())), |_| {}).await;
    let ids: HashSet<String> = restored.all_execution_ids().await.into_iter().collect();
    assert_eq!(ids, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_refuses_postgresql_with_the_right_tool() {
    let Some(url) = crate::helpers::postgres_url() else { return };
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(["backup", "--database", &url, "--to", "/tmp/never-written.db"])
        .output()
        .await
        .expect("runwarden backup runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));
}
