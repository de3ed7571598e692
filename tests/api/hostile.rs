//! Hostile input, end to end: truncated and malformed grpc-web frames, deep and huge
//! custom_metrics, invalid UTF-8 and out-of-range numbers in REST JSON, forged page tokens, SQL
//! metacharacters in every free-text field, and 10,000 distinct workers in one go. Each gets a
//! clear error or is stored exactly as sent; none hurts the server or other data.

use pbjson_types::{Struct, Value, value::Kind};
use runwarden::proto::v1::{
    ExecutionReport, GetExecutionRequest, ListExecutionsRequest, ListWorkersRequest, SubmitReportBatchRequest,
};
use tonic::Code;

use crate::{
    backend_tests,
    helpers::{Backend, TestApp, report, spawn_app},
};

backend_tests!(sql_metacharacters_are_stored_exactly_as_sent, ten_thousand_workers_in_one_minute);

/// Checks the server still answers and still holds `expected_runs` runs.
async fn still_healthy(app: &TestApp, expected_runs: usize) {
    assert_eq!(app.all_execution_ids().await.len(), expected_runs, "stored data is intact");
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let status = health.check(tonic_health::pb::HealthCheckRequest::default()).await.expect("health");
    assert_eq!(status.into_inner().status, 1, "SERVING");
}

/// grpc-web body bytes posted raw to SubmitReport; returns (HTTP status, grpc-status).
async fn raw_grpc_web(app: &TestApp, body: Vec<u8>, content_type: &str) -> (u16, String) {
    let response = app
        .http
        .post(app.url("/runwarden.v1.ReportService/SubmitReport"))
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(body)
        .send()
        .await
        .expect("grpc-web request");
    let http = response.status().as_u16();
    let header = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.bytes().await.unwrap_or_default();
    let trailer = String::from_utf8_lossy(&body)
        .split("grpc-status:")
        .nth(1)
        .map(|s| s.trim().chars().take_while(char::is_ascii_digit).collect::<String>());
    (http, header.or(trailer).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_grpc_web_frames_get_errors() {
    let app = spawn_app(Backend::Sqlite).await;
    app.submit(report("steady")).await.expect("a normal report first");
    let valid = {
        use prost::Message;
        runwarden::proto::v1::SubmitReportRequest { report: Some(report("framed")) }.encode_to_vec()
    };
    let frame = |flag: u8, declared: u32, payload: &[u8]| {
        let mut body = vec![flag];
        body.extend_from_slice(&declared.to_be_bytes());
        body.extend_from_slice(payload);
        body
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated payload", frame(0, valid.len() as u32, &valid[..valid.len() / 2])),
        ("truncated header", vec![0, 0, 0]),
        ("length beyond the limit", frame(0, u32::MAX, b"abc")),
        ("compressed flag without compression", frame(1, valid.len() as u32, &valid)),
        ("garbage protobuf", frame(0, 8, &[0xff; 8])),
    ];
    for (label, body) in cases {
        let (http, status) = raw_grpc_web(&app, body, "application/grpc-web+proto").await;
        assert!(http == 200 || http >= 400, "{label}: HTTP {http}");
        assert!(!status.is_empty() && status != "0", "{label}: an error status, got {status:?} (HTTP {http})");
    }
    // grpc-web-text with invalid base64.
    let (_, status) = raw_grpc_web(&app, b"%%%not base64%%%".to_vec(), "application/grpc-web-text").await;
    assert!(!status.is_empty() && status != "0", "invalid base64: {status:?}");
    // A second message on a unary call is ignored (as tonic does): the first is stored, once.
    let twice = [frame(0, valid.len() as u32, &valid), frame(0, valid.len() as u32, &valid)].concat();
    let (_, status) = raw_grpc_web(&app, twice, "application/grpc-web+proto").await;
    assert_eq!(status, "0");
    still_healthy(&app, 2).await;
}

fn nested(depth: usize) -> Struct {
    let mut inner = Struct { fields: std::collections::HashMap::from([("leaf".to_owned(), Value::from(1.0))]) };
    for _ in 0..depth {
        inner = Struct {
            fields: std::collections::HashMap::from([("n".to_owned(), Value { kind: Some(Kind::StructValue(inner)) })]),
        };
    }
    inner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_huge_custom_metrics_are_refused_by_name() {
    let app = spawn_app(Backend::Sqlite).await;
    // Deeper than the contract allows, but decodable: INVALID_ARGUMENT naming the field.
    let status =
        app.submit(ExecutionReport { custom_metrics: Some(nested(20)), ..report("deep") }).await.expect_err("too deep");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("custom_metrics"), "{}", status.message());
    // Deeper than protobuf decoding follows (prost's recursion limit): refused before any of
    // our code runs, still as the client's fault.
    let status = app
        .submit(ExecutionReport { custom_metrics: Some(nested(500)), ..report("abyss") })
        .await
        .expect_err("undecodable depth");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // Huge: many keys.
    let fields = (0..5000).map(|i| (format!("metric_{i}"), Value::from(f64::from(i)))).collect();
    let status = app
        .submit(ExecutionReport { custom_metrics: Some(Struct { fields }), ..report("huge") })
        .await
        .expect_err("too big");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("custom_metrics"), "{}", status.message());
    // At the limits it is stored exactly.
    let ok = ExecutionReport { custom_metrics: Some(nested(14)), ..report("just_deep_enough") };
    let id = app.submit(ok.clone()).await.expect("within limits").execution_id;
    let stored = app.query.clone().get_execution(GetExecutionRequest { execution_id: id }).await.expect("get");
    assert_eq!(stored.into_inner().report.and_then(|r| r.custom_metrics), ok.custom_metrics);
    still_healthy(&app, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rest_json_gets_a_400_naming_the_problem() {
    let app = spawn_app(Backend::Sqlite).await;
    let post = |body: Vec<u8>| {
        let app = &app;
        async move {
            let response = app
                .http
                .post(app.url("/api/v1/orchestrator/reports"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("post");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };
    let mut invalid_utf8 = br#"{"worker_name": "w", "outcome": "OUTCOME_SUCCESS", "error_message": ""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0x80]);
    invalid_utf8.extend_from_slice(br#""}"#);
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid UTF-8", invalid_utf8, ""),
        ("u64 max + 1", br#"{"worker_name":"w","outcome":"OUTCOME_SUCCESS","duration_ms":"18446744073709551616"}"#.to_vec(), ""),
        ("negative count", br#"{"worker_name":"w","outcome":"OUTCOME_SUCCESS","duration_ms":5,"data_verification":{"records_processed":-5}}"#.to_vec(), "records_processed"),
        ("NaN string", br#"{"worker_name":"w","outcome":"OUTCOME_SUCCESS","duration_ms":"NaN"}"#.to_vec(), ""),
        ("deep JSON", format!(r#"{{"worker_name":"w","outcome":"OUTCOME_SUCCESS","custom_metrics":{{"x":{deep}}}}}"#).into_bytes(), ""),
        ("not JSON", b"\x00\x01\x02".to_vec(), ""),
        ("wrong type", br#"{"worker_name":5}"#.to_vec(), ""),
    ];
    for (label, body, field) in cases {
        let (status, text) = post(body).await;
        assert_eq!(status, 400, "{label}: {text}");
        let json: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{label}: not JSON ({e}): {text}"));
        assert_eq!(json["status"], "INVALID_ARGUMENT", "{label}: {text}");
        assert!(json["message"].as_str().is_some_and(|m| m.contains(field)), "{label}: {text}");
    }
    // In custom_metrics, "NaN" is a string like any other: stored as sent.
    let (status, text) = post(
        br#"{"worker_name":"w","outcome":"OUTCOME_SUCCESS","duration_ms":5,"custom_metrics":{"x":"NaN"}}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    still_healthy(&app, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_page_tokens_are_invalid_arguments() {
    let app = spawn_app(Backend::Sqlite).await;
    for token in ["garbage", "AAAAAAAAAAAA", "eyJ0IjoxfQ", "' OR 1=1 --", "%00%00", &"A".repeat(5000)] {
        let status = app
            .query
            .clone()
            .list_executions(ListExecutionsRequest { page_token: token.to_owned(), ..Default::default() })
            .await
            .expect_err("forged");
        assert_eq!(status.code(), Code::InvalidArgument, "{token}");
        assert!(status.message().contains("page_token"), "{}", status.message());
        let status = app
            .query
            .clone()
            .list_workers(ListWorkersRequest { page_token: token.to_owned(), ..Default::default() })
            .await
            .expect_err("forged");
        assert_eq!(status.code(), Code::InvalidArgument, "{token}");
    }
    still_healthy(&app, 0).await;
}

async fn sql_metacharacters_are_stored_exactly_as_sent(backend: Backend) {
    let app = spawn_app(backend).await;
    let nasty = "'; DROP TABLE executions; -- \" \\ %_ $1 ? :name \u{0} NULL ✓";
    let sent = ExecutionReport {
        worker_name: "robert.tables:drop-1".into(),
        worker_type: "x'); DELETE FROM workers;--".into(),
        error_message: nasty.into(),
        custom_metrics: Some(Struct {
            fields: std::collections::HashMap::from([(nasty.to_owned(), Value::from(nasty.to_owned()))]),
        }),
        ..report("ignored")
    };
    let sent = ExecutionReport { worker_name: "robert.tables:drop-1".into(), ..sent };
    let id = app.submit(sent.clone()).await.expect("stored").execution_id;
    let stored = app.query.clone().get_execution(GetExecutionRequest { execution_id: id }).await.expect("get");
    let stored = stored.into_inner().report.expect("report");
    assert_eq!(stored.error_message, sent.error_message);
    assert_eq!(stored.worker_type, sent.worker_type);
    assert_eq!(stored.custom_metrics, sent.custom_metrics);
    // The worker name filter is a bound parameter too.
    let listed = app
        .query
        .clone()
        .list_executions(ListExecutionsRequest { worker_name: "robert.tables:drop-1".into(), ..Default::default() })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.executions.len(), 1);
    still_healthy(&app, 1).await;
}

async fn ten_thousand_workers_in_one_minute(backend: Backend) {
    let app = spawn_app(backend).await;
    for batch in 0..10 {
        let reports = (0..1000).map(|i| report(&format!("burst_{batch}_{i}"))).collect();
        let response = app
            .report
            .clone()
            .submit_report_batch(SubmitReportBatchRequest { reports })
            .await
            .expect("batch")
            .into_inner();
        assert_eq!(response.accepted, 1000);
    }
    let mut names = 0;
    let mut token = String::new();
    loop {
        let page = app
            .query
            .clone()
            .list_workers(ListWorkersRequest { limit: 500, page_token: token.clone() })
            .await
            .expect("list")
            .into_inner();
        names += page.workers.len();
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(names, 10_000);
    let metrics = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.contains("per-worker") || metrics.contains("runwarden_worker"), "metrics still render");
    still_healthy(&app, 10_000).await;
}
