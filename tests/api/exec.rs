//! `runwarden exec`: the real binary wraps real commands and reports them to a real server.

use runwarden::proto::v1::{Execution, ListExecutionsRequest, Outcome};

use crate::helpers::{Backend, TestApp, spawn_app};

async fn exec(app: Option<&TestApp>, args: &[&str]) -> std::process::Output {
    let addr = app.map_or_else(|| "127.0.0.1:1".to_owned(), |a| a.addr.to_string());
    tokio::process::Command::new(env!("CARGO_BIN_EXE_runwarden"))
        .args(["exec", "--addr", &addr, "--report-timeout", "1"])
        .args(args)
        .output()
        .await
        .expect("runwarden exec runs")
}

async fn latest(app: &TestApp, worker: &str) -> Execution {
    let mut found = app
        .query
        .clone()
        .list_executions(ListExecutionsRequest { worker_name: worker.into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner()
        .executions;
    assert_eq!(found.len(), 1, "one run reported for {worker}");
    found.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_forwards_output_and_exit_code_and_reports_the_run() {
    let app = spawn_app(Backend::Sqlite).await;

    // A failing command: its output passes through, its exit code is ours, the tail of its stderr
    // is the error message.
    let out = exec(
        Some(&app),
        &["--worker", "nightly_export", "--worker-type", "cron", "--", "sh", "-c", "echo out; echo boom >&2; exit 3"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("boom"));
    let run = latest(&app, "nightly_export").await;
    let report = run.report.expect("report");
    assert_eq!(report.outcome, Outcome::Failed as i32);
    assert_eq!(report.worker_type, "cron");
    assert_eq!(report.error_message, "exit code 3; stderr: boom");
    assert!(report.duration_ms.is_some());

    // A successful command that writes metrics: they are merged; memory and CPU are measured.
    let script = r#"echo '{"data_verification": {"records_processed": 120, "records_fetched": 125}}' > "$RUNWARDEN_METRICS_FILE""#;
    let out = exec(Some(&app), &["--worker", "metrics_writer", "--", "sh", "-c", script]).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report = latest(&app, "metrics_writer").await.report.expect("report");
    assert_eq!(report.outcome, Outcome::Success as i32);
    let data = report.data_verification.expect("metrics merged");
    assert_eq!((data.records_processed, data.records_fetched), (120, 125));
    let resources = report.resource_metrics.expect("resources");
    assert!(resources.memory_peak_mb.is_some_and(|m| m > 0.0), "{resources:?}");
    assert!(resources.cpu_percent_avg.is_some());

    // Killed by --timeout: TIMEOUT, exit code 124.
    let out = exec(Some(&app), &["--worker", "slow_job", "--timeout", "1", "--", "sleep", "30"]).await;
    assert_eq!(out.status.code(), Some(124));
    assert_eq!(latest(&app, "slow_job").await.report.expect("report").outcome, Outcome::Timeout as i32);

    // A command that does not exist: 127, reported as FAILED.
    let out = exec(Some(&app), &["--worker", "typo_job", "--", "/nonexistent/command"]).await;
    assert_eq!(out.status.code(), Some(127));
    let report = latest(&app, "typo_job").await.report.expect("report");
    assert!(report.error_message.contains("could not start"), "{}", report.error_message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_keeps_the_exit_code_when_runwarden_is_unreachable() {
    let out = exec(None, &["--worker", "lonely_job", "--", "sh", "-c", "exit 7"]).await;
    assert_eq!(out.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("could not report"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = exec(None, &["--worker", "lonely_job", "--", "true"]).await;
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_submits_and_surfaces_refusals() {
    use runwarden::client::{Client, ClientError, ExecutionReport};
    let app = spawn_app(Backend::Sqlite).await;
    let mut client = Client::connect(&app.addr.to_string()).await.expect("connect");
    let ack = client
        .submit(ExecutionReport {
            outcome: Outcome::Success as i32,
            duration_ms: Some(10),
            ..crate::helpers::report("rust_worker")
        })
        .await
        .expect("stored");
    assert_eq!(latest(&app, "rust_worker").await.execution_id, ack.execution_id);
    let refused = client.submit(ExecutionReport::default()).await.expect_err("invalid");
    assert!(
        matches!(&refused, ClientError::Status(s) if s.code() == tonic::Code::InvalidArgument && s.message().contains("worker_name")),
        "{refused}"
    );
    assert!(matches!(
        Client::connect("not a uri at all").await,
        Err(ClientError::Address { .. } | ClientError::Connect(_))
    ));
}
