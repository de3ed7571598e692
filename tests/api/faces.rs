//! One port, five faces: gRPC, grpc-web, REST, health/reflection and /metrics agree.

use runwarden::proto::v1::{
    Execution, GetExecutionRequest, ListExecutionsRequest, ListExecutionsResponse, SubmitReportRequest,
    SubmitReportResponse,
};
use serde_json::Value;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    backend_tests,
    helpers::{Backend, report, report_at, spawn_app},
};

backend_tests!(
    reflection_lists_the_services_v1_and_v1alpha,
    health_is_serving_for_every_service,
    rest_and_grpc_web_return_what_grpc_returns,
    rest_submit_and_errors,
    metrics_count_requests,
);

async fn reflection_lists_the_services_v1_and_v1alpha(backend: Backend) {
    let app = spawn_app(backend).await;
    let expected = ["grpc.health.v1.Health", "runwarden.v1.QueryService", "runwarden.v1.ReportService"];

    use tonic_reflection::pb::{v1, v1alpha};
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        client.server_reflection_info(futures::stream::iter([request])).await.expect("v1 reflection").into_inner();
    let response = responses.message().await.expect("v1 answer").expect("a response");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) = response.message_response
    else {
        panic!("unexpected v1 response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for name in expected {
        assert!(names.iter().any(|n| n == name), "v1 lists {name}: {names:?}");
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "runwarden.v1.ReportService".into(),
        )),
    };
    let mut responses =
        client.server_reflection_info(futures::stream::iter([request])).await.expect("v1alpha").into_inner();
    let response = responses.message().await.expect("v1alpha answer").expect("a response");
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        response.message_response
    else {
        panic!("unexpected v1alpha response");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

async fn health_is_serving_for_every_service(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "runwarden.v1.ReportService", "runwarden.v1.QueryService"] {
        let status =
            health.check(HealthCheckRequest { service: service.into() }).await.expect("check").into_inner().status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "nope.Service".into() }).await.expect_err("unknown");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

async fn rest_and_grpc_web_return_what_grpc_returns(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..3 {
        app.submit(report_at("intel_aggregation_hourly", 100 * (i + 1))).await.expect("stored");
    }
    let request =
        ListExecutionsRequest { worker_name: "intel_aggregation_hourly".into(), limit: 2, ..Default::default() };
    let grpc = app.query.clone().list_executions(request.clone()).await.expect("grpc").into_inner();
    assert_eq!(grpc.executions.len(), 2);

    let web: ListExecutionsResponse =
        app.grpc_web("/runwarden.v1.QueryService/ListExecutions", &request).await.expect("grpc-web");
    assert_eq!(web, grpc);

    let rest: ListExecutionsResponse = app
        .http
        .get(app.url("/api/v1/orchestrator/workers/intel_aggregation_hourly/executions?limit=2"))
        .send()
        .await
        .expect("rest")
        .json::<Value>()
        .await
        .map(|v| serde_json::from_value(v).expect("proto3 JSON"))
        .expect("json");
    assert_eq!(rest, grpc);

    // Every field is present, snake_case, zeros included.
    let raw: Value = app
        .http
        .get(app.url(&format!("/api/v1/orchestrator/executions/{}", grpc.executions[0].execution_id)))
        .send()
        .await
        .expect("rest")
        .json()
        .await
        .expect("json");
    let data = &raw["report"]["data_verification"];
    assert_eq!(data["records_failed"], Value::from("5"));
    assert_eq!(data["records_skipped"], Value::from("0"));
    assert_eq!(data["api_rate_limited"], Value::from(false));
    assert_eq!(raw["report"]["outcome"], Value::from("OUTCOME_SUCCESS"));
    let single: Execution = serde_json::from_value(raw).expect("proto3 JSON");
    assert_eq!(single, grpc.executions[0]);

    let web_single: Execution = app
        .grpc_web(
            "/runwarden.v1.QueryService/GetExecution",
            &GetExecutionRequest { execution_id: single.execution_id.clone() },
        )
        .await
        .expect("grpc-web get");
    assert_eq!(web_single, single);

    // grpc-web errors carry the gRPC status.
    let err = app
        .grpc_web::<_, Execution>(
            "/runwarden.v1.QueryService/GetExecution",
            &GetExecutionRequest { execution_id: uuid::Uuid::new_v4().to_string() },
        )
        .await
        .expect_err("not found");
    assert_eq!(err.0, "5");

    // And a submission over grpc-web is stored like any other.
    let submitted: SubmitReportResponse = app
        .grpc_web(
            "/runwarden.v1.ReportService/SubmitReport",
            &SubmitReportRequest { report: Some(report("dashboard_worker")) },
        )
        .await
        .expect("grpc-web submit");
    assert!(!submitted.duplicate);
}

async fn rest_submit_and_errors(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = serde_json::json!({
        "worker_name": "youtube_worker",
        "outcome": "OUTCOME_SUCCESS",
        "duration_ms": 5000,
        "data_verification": { "records_processed": 150, "records_fetched": 150 },
        "custom_metrics": { "quota_used_today": 192 }
    });
    let response = app.http.post(app.url("/api/v1/orchestrator/reports")).json(&body).send().await.expect("post");
    assert_eq!(response.status(), 200);
    let submitted: Value = response.json().await.expect("json");
    let id = submitted["execution_id"].as_str().expect("id").to_owned();
    assert_eq!(submitted["duplicate"], Value::from(false));

    let workers: Value =
        app.http.get(app.url("/api/v1/orchestrator/workers")).send().await.expect("get").json().await.expect("json");
    assert_eq!(workers["workers"][0]["worker_name"], Value::from("youtube_worker"));
    assert_eq!(workers["workers"][0]["run_count"], Value::from("1"));

    let mut resend = body.clone();
    resend["execution_id"] = Value::from(id.clone());
    let again: Value = app
        .http
        .post(app.url("/api/v1/orchestrator/reports"))
        .json(&resend)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(again["duplicate"], Value::from(true));

    // A rule violation: 400 with the field named in google.rpc.BadRequest details.
    let mut bad = body.clone();
    bad["data_verification"]["records_failed"] = Value::from(-3);
    let response = app.http.post(app.url("/api/v1/orchestrator/reports")).json(&bad).send().await.expect("post");
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["code"], Value::from(3));
    assert_eq!(error["details"][0]["field_violations"][0]["field"], Value::from("data_verification.records_failed"));

    // Malformed JSON, unknown fields and wrong types: 400 naming the problem.
    for (body, needle) in [
        ("{not json", "invalid report JSON"),
        (r#"{"worker_name":"w","outcome":"OUTCOME_SUCCESS","duration_ms":1,"bogus":1}"#, "bogus"),
        (r#"{"worker_name":"w","outcome":"NOPE","duration_ms":1}"#, "NOPE"),
    ] {
        let response = app
            .http
            .post(app.url("/api/v1/orchestrator/reports"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 400, "{body}");
        let error: Value = response.json().await.expect("json");
        assert!(error["message"].as_str().unwrap_or("").contains(needle), "{body}: {error}");
    }

    // Too large: 413 in the same shape.
    let huge = format!(r#"{{"worker_name":"w","error_message":"{}"}}"#, "x".repeat(1024 * 1024 + 1));
    let response = app
        .http
        .post(app.url("/api/v1/orchestrator/reports"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 413);

    // Unknown worker and unknown route: 404 with a JSON body.
    let response = app.http.get(app.url("/api/v1/orchestrator/workers/nobody/executions")).send().await.expect("get");
    assert_eq!(response.status(), 404);
    let response = app.http.get(app.url("/api/v1/orchestrator/nothing-here")).send().await.expect("get");
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["code"], Value::from(5));

    // Bad query parameters name the parameter.
    for (query, field) in [("limit=abc", "limit"), ("outcome=MAYBE", "outcome"), ("since=yesterday", "since")] {
        let response = app
            .http
            .get(app.url(&format!("/api/v1/orchestrator/workers/youtube_worker/executions?{query}")))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 400, "{query}");
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["details"][0]["field_violations"][0]["field"], Value::from(field));
    }
}

async fn metrics_count_requests(backend: Backend) {
    let app = spawn_app(backend).await;
    app.submit(report("metrics_worker")).await.expect("stored");
    let text = app.http.get(app.url("/metrics")).send().await.expect("metrics").text().await.expect("text");
    assert!(text.contains("runwarden_requests_total{method=\"SubmitReport\",code=\"OK\"}"), "{text}");
    assert!(text.contains("runwarden_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("runwarden_ingest_batch_size"), "{text}");
    assert!(text.contains("runwarden_ingest_queue_depth"), "{text}");
    let response = app.http.get(app.url("/metrics")).send().await.expect("metrics");
    assert!(response.headers().contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_rest_route_answers() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    let document: serde_json::Value =
        app.http.get(app.url("/api/v1/openapi.json")).send().await.expect("get").json().await.expect("json");
    assert_eq!(document["openapi"], "3.0.3");
    let paths = document["paths"].as_object().expect("paths");
    assert!(paths.len() >= 13, "{paths:?}");
    for (path, operations) in paths {
        let concrete = path
            .replace("{worker_name}", "documented_worker")
            .replace("{execution_id}", "0190b6a2-0000-7000-8000-000000000000");
        for method in operations.as_object().expect("operations").keys() {
            let url = app.url(&concrete);
            let request = match method.as_str() {
                "get" => app.http.get(url),
                "delete" => app.http.delete(url),
                "post" => app.http.post(url).header("content-type", "application/json").body("{}"),
                "put" => app.http.put(url).header("content-type", "application/json").body("{}"),
                other => panic!("undocumented method {other}"),
            };
            let response = request.send().await.expect("send");
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            assert!(status != 405 && !body.contains("no route for"), "{method} {path}: {status} {body}");
            assert!(status.as_u16() < 500, "{method} {path}: {status} {body}");
        }
    }
}

/// Native gRPC takes a shorter stack of layers than grpc-web and REST (`runwarden::front`); every
/// face still answers with the caller's request id, or a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_face_answers_with_a_request_id() {
    use tonic::{Code, Request};
    let app = spawn_app(Backend::Sqlite).await;
    let mut client = app.report.clone();

    let mut mine = Request::new(SubmitReportRequest { report: Some(report("request_id_worker")) });
    mine.metadata_mut().insert("x-request-id", "trace-me-123".parse().expect("metadata"));
    let answer = client.submit_report(mine).await.expect("native gRPC");
    assert_eq!(answer.metadata().get("x-request-id").and_then(|v| v.to_str().ok()), Some("trace-me-123"));

    let fresh = |response_id: Option<&tonic::metadata::MetadataValue<tonic::metadata::Ascii>>| {
        let text = response_id.and_then(|v| v.to_str().ok()).expect("a request id").to_owned();
        let id = uuid::Uuid::parse_str(&text).expect("a UUID");
        assert_eq!(id.get_version_num(), 4, "{text}");
        id
    };
    let first = client
        .submit_report(SubmitReportRequest { report: Some(report("request_id_worker")) })
        .await
        .expect("native gRPC");
    let second = client
        .submit_report(SubmitReportRequest { report: Some(report("request_id_worker")) })
        .await
        .expect("native gRPC");
    assert_ne!(fresh(first.metadata().get("x-request-id")), fresh(second.metadata().get("x-request-id")));

    // An error, and a method no service has, carry one too.
    let refused = client.submit_report(SubmitReportRequest { report: None }).await.expect_err("no report");
    assert_eq!(refused.code(), Code::InvalidArgument);
    fresh(refused.metadata().get("x-request-id"));
    let mut health = tonic::client::Grpc::new(app.channel.clone());
    health.ready().await.expect("ready");
    let unknown = health
        .unary::<HealthCheckRequest, HealthCheckRequest, _>(
            Request::new(HealthCheckRequest::default()),
            "/runwarden.v1.NoSuchService/Nothing".parse().expect("path"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("no such service");
    assert_eq!(unknown.code(), Code::Unimplemented, "{unknown:?}");
    fresh(unknown.metadata().get("x-request-id"));

    // grpc-web, from a page on another origin: a request id, and the CORS headers that let the
    // browser read the gRPC status.
    let request = SubmitReportRequest { report: Some(report("request_id_worker")) };
    let web = app
        .http
        .post(app.url("/runwarden.v1.ReportService/SubmitReport"))
        .header("content-type", "application/grpc-web+proto")
        .header("origin", "https://dashboard.example")
        .body(crate::helpers::grpc_web_frame(&request))
        .send()
        .await
        .expect("grpc-web");
    assert_eq!(web.status(), 200);
    let header = |name: &str| web.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(header("access-control-allow-origin").as_deref(), Some("https://dashboard.example"));
    assert!(header("access-control-expose-headers").is_some_and(|h| h.contains("grpc-status")));
    uuid::Uuid::parse_str(&header("x-request-id").expect("a request id")).expect("a UUID");

    // REST keeps the caller's id.
    let rest = app
        .http
        .get(app.url("/api/v1/orchestrator/workers"))
        .header("x-request-id", "rest-call-7")
        .send()
        .await
        .expect("rest");
    assert_eq!(rest.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("rest-call-7"));
    app.stop().await;
}

/// A native gRPC call's log lines are inside its `request` span, with its request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_grpc_calls_log_lines_carry_its_request_id() {
    let db = crate::helpers::TestDatabase::create(Backend::Sqlite).await;
    let mut server =
        crate::helpers::LoggedServer::start(&db.url, "info,runwarden::api=debug,runwarden::front=debug").await;
    let addr = server.addr.clone();
    let mut client =
        runwarden::proto::v1::report_service_client::ReportServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
    let mut request = tonic::Request::new(SubmitReportRequest { report: Some(report("logged_worker")) });
    request.metadata_mut().insert("x-request-id", "log-me-42".parse().expect("metadata"));
    client.submit_report(request).await.expect("submit");
    let line_of = |text: &str, message: &str| -> Option<Value> {
        text.lines().find(|l| l.contains(message)).and_then(|l| serde_json::from_str(l).ok())
    };
    let mut text = String::new();
    for _ in 0..50 {
        text = server.text();
        if line_of(&text, "finished processing request").is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    server.stop();
    // The handler's own line, and the one the layer writes when the call ends.
    for message in ["report submitted", "finished processing request"] {
        let line = line_of(&text, message).unwrap_or_else(|| panic!("no {message:?} line in {text}"));
        assert_eq!(line["span"]["name"], "request", "{line}");
        assert_eq!(line["span"]["request_id"], "log-me-42", "{line}");
        assert_eq!(line["span"]["path"], "/runwarden.v1.ReportService/SubmitReport", "{line}");
    }
    let finished = line_of(&text, "finished processing request").unwrap_or_default();
    assert_eq!(finished["status"], 200, "{finished}");
    assert!(finished["latency_ms"].is_u64(), "{finished}");
}
