//! The REST/JSON shim: the paths existing consumers call, in the proto3 JSON mapping (snake_case
//! field names, every field present, 64-bit integers as strings, as grpc-gateway emits them).
//! Handlers decode JSON or query strings, call the same service methods as gRPC, and answer the
//! same errors as `{code, status, message, details}` with the matching HTTP status.

use std::collections::HashMap;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, Query, State, rejection::BytesRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::DateTime;
use serde::Serialize;

use crate::{
    api::{GuardianApi, QueryApi, ReportApi, workers::WorkerApi},
    auth::Caller,
    domain::validation::to_timestamp,
    error::Error,
    proto::v1::{
        AnomalyKind, DeleteWorkerRequest, ExecutionReport, GetDataQualitySummaryRequest, GetExecutionRequest,
        GetSystemLearningRequest, GetWorkerLearningRequest, GetWorkerRequest, GetWorkerStatsRequest,
        ListAnomaliesRequest, ListExecutionsRequest, ListStreamsRequest, ListWorkersRequest, Outcome, StatsWindow,
        StreamState, SubmitReportBatchRequest, UpsertWorkerRequest,
    },
    received,
};

#[derive(Clone)]
pub struct RestState {
    pub report: ReportApi,
    pub query: QueryApi,
    pub guardian: GuardianApi,
    pub workers: WorkerApi,
}

/// One documented REST route (see [`crate::openapi`]).
pub struct RouteDoc {
    pub method: &'static str,
    pub path: &'static str,
    pub operation: &'static str,
    pub summary: &'static str,
    /// Query parameters and what they mean.
    pub query: &'static [(&'static str, &'static str)],
    /// The request body's message (in `runwarden.v1`).
    pub body: Option<&'static str>,
    /// The response's message (in `runwarden.v1`).
    pub response: &'static str,
}

const PAGE: [(&str, &str); 2] = [("limit", "page size"), ("page_token", "from the previous page's next_page_token")];
const WINDOW: [(&str, &str); 3] = [
    ("window", "24h, 7d, 30d or 90d"),
    ("since", "RFC 3339 start (instead of window)"),
    ("until", "RFC 3339 end (default now)"),
];

/// Every route [`router`] serves, documented; a test checks the two agree.
pub const ROUTES: &[RouteDoc] = &[
    RouteDoc {
        method: "post",
        path: "/api/v1/orchestrator/reports",
        operation: "SubmitReport",
        summary: "Store one execution report (the body is the report)",
        query: &[],
        body: Some("ExecutionReport"),
        response: "SubmitReportResponse",
    },
    RouteDoc {
        method: "post",
        path: "/api/v1/orchestrator/reports:batch",
        operation: "SubmitReportBatch",
        summary: "Store up to 1,000 reports; each is judged on its own",
        query: &[],
        body: Some("SubmitReportBatchRequest"),
        response: "SubmitReportsResponse",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/workers",
        operation: "ListWorkers",
        summary: "Workers by name, with health and the last 24 hours",
        query: &PAGE,
        body: None,
        response: "ListWorkersResponse",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/workers/{worker_name}",
        operation: "GetWorker",
        summary: "One worker",
        query: &[],
        body: None,
        response: "Worker",
    },
    RouteDoc {
        method: "put",
        path: "/api/v1/orchestrator/workers/{worker_name}",
        operation: "UpsertWorker",
        summary: "Declare a worker's schedule, grace, pause, owner and labels",
        query: &[],
        body: Some("UpsertWorkerRequest"),
        response: "Worker",
    },
    RouteDoc {
        method: "delete",
        path: "/api/v1/orchestrator/workers/{worker_name}",
        operation: "DeleteWorker",
        summary: "Delete a worker and everything stored about it",
        query: &[],
        body: None,
        response: "DeleteWorkerResponse",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/workers/{worker_name}/learning",
        operation: "GetWorkerLearning",
        summary: "Best hour and day, breakdowns, trends and recommendations",
        query: &[("window", "24h, 7d, 30d (default) or 90d")],
        body: None,
        response: "WorkerLearning",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/learning/system",
        operation: "GetSystemLearning",
        summary: "The fleet at a glance",
        query: &[],
        body: None,
        response: "SystemLearning",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/workers/{worker_name}/executions",
        operation: "ListExecutions",
        summary: "A worker's executions, newest first",
        query: &[
            ("limit", "page size (default 20, at most 500)"),
            ("page_token", "from the previous page"),
            ("outcome", "SUCCESS, PARTIAL, FAILED, TIMEOUT or SKIPPED"),
            ("since", "RFC 3339"),
            ("until", "RFC 3339"),
        ],
        body: None,
        response: "ListExecutionsResponse",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/workers/{worker_name}/stats",
        operation: "GetWorkerStats",
        summary: "Aggregated figures over a window, from rollups",
        query: &WINDOW,
        body: None,
        response: "WorkerStats",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/executions/{execution_id}",
        operation: "GetExecution",
        summary: "One execution",
        query: &[],
        body: None,
        response: "Execution",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/data-quality/summary",
        operation: "GetDataQualitySummary",
        summary: "Data quality across workers, lowest first",
        query: &WINDOW,
        body: None,
        response: "DataQualitySummary",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/anomalies",
        operation: "ListAnomalies",
        summary: "Anomalies, newest first",
        query: &[
            ("worker_name", "only this worker"),
            ("kind", "e.g. DURATION_SPIKE"),
            ("since", "RFC 3339"),
            ("open_only", "true or false"),
            ("limit", "page size"),
            ("page_token", "from the previous page"),
        ],
        body: None,
        response: "ListAnomaliesResponse",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/guardian",
        operation: "GetGuardianStatus",
        summary: "The stream guardian's latest tick",
        query: &[],
        body: None,
        response: "GuardianStatus",
    },
    RouteDoc {
        method: "get",
        path: "/api/v1/orchestrator/guardian/streams",
        operation: "ListStreams",
        summary: "Tracked streams",
        query: &[
            ("state", "HEALTHY, STALE, ORPHANED or CLOSED"),
            ("stream_type", "e.g. generation"),
            ("limit", "page size"),
            ("page_token", "from the previous page"),
        ],
        body: None,
        response: "ListStreamsResponse",
    },
];

pub fn router(state: RestState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/orchestrator/reports", post(submit_report))
        .route("/api/v1/orchestrator/reports:batch", post(submit_report_batch))
        .route("/api/v1/orchestrator/workers", get(list_workers))
        .route("/api/v1/orchestrator/workers/{worker_name}", get(get_worker).put(upsert_worker).delete(delete_worker))
        .route("/api/v1/orchestrator/workers/{worker_name}/learning", get(get_worker_learning))
        .route("/api/v1/orchestrator/learning/system", get(get_system_learning))
        .route("/api/v1/orchestrator/workers/{worker_name}/executions", get(list_executions))
        .route("/api/v1/orchestrator/workers/{worker_name}/stats", get(get_worker_stats))
        .route("/api/v1/orchestrator/executions/{execution_id}", get(get_execution))
        .route("/api/v1/orchestrator/data-quality/summary", get(get_data_quality_summary))
        .route("/api/v1/orchestrator/anomalies", get(list_anomalies))
        .route("/api/v1/orchestrator/guardian", get(get_guardian_status))
        .route("/api/v1/orchestrator/guardian/streams", get(list_streams))
        .with_state(state)
}

async fn openapi() -> Response {
    axum::Json(crate::openapi::document()).into_response()
}

/// A proto message as a JSON response.
struct ProtoJson<T>(T);

impl<T: Serialize> IntoResponse for ProtoJson<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => Error::internal(format!("encoding response: {e}")).into_response(),
        }
    }
}

/// Query-string parameters, each parsed with an error naming it.
struct Params(HashMap<String, String>);

impl Params {
    fn int(&self, name: &str) -> Result<i32, Error> {
        match self.0.get(name) {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| Error::invalid(name, format!("must be an integer, got {v:?}"))),
        }
    }

    fn text(&self, name: &str) -> String {
        self.0.get(name).cloned().unwrap_or_default()
    }

    fn time(&self, name: &str) -> Result<Option<pbjson_types::Timestamp>, Error> {
        self.0
            .get(name)
            .map(|v| {
                DateTime::parse_from_rfc3339(v).map(|t| to_timestamp(t.to_utc())).map_err(|_| {
                    Error::invalid(name, format!("must be an RFC 3339 time like 2026-11-28T12:00:00Z, got {v:?}"))
                })
            })
            .transpose()
    }

    /// `24h`, `7d`, `30d`, `90d` (or the enum names).
    fn window(&self, name: &str) -> Result<i32, Error> {
        let Some(v) = self.0.get(name) else { return Ok(0) };
        let window = match v.to_ascii_lowercase().trim_start_matches("stats_window_") {
            "24h" => StatsWindow::StatsWindow24h,
            "7d" => StatsWindow::StatsWindow7d,
            "30d" => StatsWindow::StatsWindow30d,
            "90d" => StatsWindow::StatsWindow90d,
            _ => return Err(Error::invalid(name, format!("must be one of 24h, 7d, 30d, 90d, got {v:?}"))),
        };
        Ok(window as i32)
    }

    /// `SUCCESS`, `success` or `OUTCOME_SUCCESS`.
    fn outcome(&self, name: &str) -> Result<i32, Error> {
        let Some(v) = self.0.get(name) else { return Ok(0) };
        let full = enum_name(v, "OUTCOME_");
        match Outcome::from_str_name(&full) {
            Some(o) if o != Outcome::Unspecified => Ok(o as i32),
            _ => Err(Error::invalid(
                name,
                format!("must be one of SUCCESS, PARTIAL, FAILED, TIMEOUT, SKIPPED, got {v:?}"),
            )),
        }
    }
}

/// The full proto enum name for a query parameter given short (`success`) or in full
/// (`OUTCOME_SUCCESS`), in any case.
fn enum_name(value: &str, prefix: &str) -> String {
    let upper = value.to_ascii_uppercase();
    if upper.starts_with(prefix) { upper } else { format!("{prefix}{upper}") }
}

/// The body is the report itself (as with grpc-gateway's `body: "report"`).
async fn submit_report(
    State(state): State<RestState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = read_body(body)?;
    let report: ExecutionReport =
        serde_json::from_slice(&body).map_err(|e| Error::Malformed(format!("invalid report JSON: {e}")))?;
    let response = state
        .report
        .submit_report(&caller, received::SubmitReportRequest { report: Some(report), received: None })
        .await?;
    Ok(ProtoJson(response).into_response())
}

/// The body is `{"reports": [...]}`, as with grpc-gateway's `body: "*"`.
async fn submit_report_batch(
    State(state): State<RestState>,
    caller: Caller,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = read_body(body)?;
    let request: SubmitReportBatchRequest =
        serde_json::from_slice(&body).map_err(|e| Error::Malformed(format!("invalid batch JSON: {e}")))?;
    Ok(ProtoJson(state.report.submit_report_batch(&caller, request.into()).await?).into_response())
}

fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Error> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => Error::TooLarge(format!("request body is larger than the limit: {e}")),
        _ => Error::Malformed(format!("cannot read request body: {e}")),
    })
}

async fn list_workers(
    State(state): State<RestState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let params = Params(params);
    let request = ListWorkersRequest { limit: params.int("limit")?, page_token: params.text("page_token") };
    Ok(ProtoJson(state.query.list_workers(request).await?).into_response())
}

async fn get_worker(State(state): State<RestState>, Path(worker_name): Path<String>) -> Result<Response, Error> {
    Ok(ProtoJson(state.query.get_worker(GetWorkerRequest { worker_name }).await?).into_response())
}

/// The body is the UpsertWorkerRequest without (or with the same) `worker_name`.
async fn upsert_worker(
    State(state): State<RestState>,
    Path(worker_name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    let body = read_body(body)?;
    let mut request: UpsertWorkerRequest = if body.iter().all(u8::is_ascii_whitespace) {
        UpsertWorkerRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| Error::Malformed(format!("invalid worker JSON: {e}")))?
    };
    if !request.worker_name.is_empty() && request.worker_name != worker_name {
        return Err(Error::invalid(
            "worker_name",
            format!("the body names {:?} but the path names {worker_name:?}", request.worker_name),
        ));
    }
    request.worker_name = worker_name;
    Ok(ProtoJson(state.workers.upsert_worker(request).await?).into_response())
}

async fn delete_worker(State(state): State<RestState>, Path(worker_name): Path<String>) -> Result<Response, Error> {
    Ok(ProtoJson(state.workers.delete_worker(DeleteWorkerRequest { worker_name }).await?).into_response())
}

/// `?window=30d` (the default) or 24h, 7d, 90d.
async fn get_worker_learning(
    State(state): State<RestState>,
    Path(worker_name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let params = Params(params);
    let request = GetWorkerLearningRequest { worker_name, window: params.window("window")? };
    Ok(ProtoJson(state.query.get_worker_learning(request).await?).into_response())
}

async fn get_system_learning(State(state): State<RestState>) -> Result<Response, Error> {
    Ok(ProtoJson(state.query.get_system_learning(GetSystemLearningRequest {}).await?).into_response())
}

async fn list_executions(
    State(state): State<RestState>,
    Path(worker_name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let params = Params(params);
    let request = ListExecutionsRequest {
        worker_name,
        limit: params.int("limit")?,
        page_token: params.text("page_token"),
        outcome: params.outcome("outcome")?,
        since: params.time("since")?,
        until: params.time("until")?,
    };
    Ok(ProtoJson(state.query.list_executions(request).await?).into_response())
}

async fn get_worker_stats(
    State(state): State<RestState>,
    Path(worker_name): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let params = Params(params);
    let request = GetWorkerStatsRequest {
        worker_name,
        window: params.window("window")?,
        since: params.time("since")?,
        until: params.time("until")?,
    };
    Ok(ProtoJson(state.query.get_worker_stats(request).await?).into_response())
}

async fn get_data_quality_summary(
    State(state): State<RestState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let params = Params(params);
    let request = GetDataQualitySummaryRequest {
        window: params.window("window")?,
        since: params.time("since")?,
        until: params.time("until")?,
    };
    Ok(ProtoJson(state.query.get_data_quality_summary(request).await?).into_response())
}

/// `?worker_name=&kind=DURATION_SPIKE&since=&open_only=true&limit=&page_token=`
async fn list_anomalies(
    State(state): State<RestState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let params = Params(params);
    let kind = match params.0.get("kind") {
        None => 0,
        Some(v) => {
            let full = enum_name(v, "ANOMALY_KIND_");
            match AnomalyKind::from_str_name(&full) {
                Some(k) if k != AnomalyKind::Unspecified => k as i32,
                _ => return Err(Error::invalid("kind", format!("unknown anomaly kind {v:?}"))),
            }
        }
    };
    let open_only = match params.0.get("open_only").map(String::as_str) {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(v) => return Err(Error::invalid("open_only", format!("must be true or false, got {v:?}"))),
    };
    let request = ListAnomaliesRequest {
        worker_name: params.text("worker_name"),
        kind,
        since: params.time("since")?,
        open_only,
        limit: params.int("limit")?,
        page_token: params.text("page_token"),
    };
    Ok(ProtoJson(state.query.list_anomalies(request).await?).into_response())
}

async fn get_guardian_status(State(state): State<RestState>) -> Result<Response, Error> {
    Ok(ProtoJson(state.guardian.get_guardian_status().await?).into_response())
}

/// `?state=STALE&stream_type=generation&limit=&page_token=`
async fn list_streams(
    State(state): State<RestState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let params = Params(params);
    let stream_state = match params.0.get("state") {
        None => 0,
        Some(v) => {
            let full = enum_name(v, "STREAM_STATE_");
            match StreamState::from_str_name(&full) {
                Some(s) if s != StreamState::Unspecified => s as i32,
                _ => {
                    return Err(Error::invalid(
                        "state",
                        format!("must be one of HEALTHY, STALE, ORPHANED, CLOSED, got {v:?}"),
                    ));
                }
            }
        }
    };
    let request = ListStreamsRequest {
        state: stream_state,
        stream_type: params.text("stream_type"),
        limit: params.int("limit")?,
        page_token: params.text("page_token"),
    };
    Ok(ProtoJson(state.guardian.list_streams(request).await?).into_response())
}

async fn get_execution(State(state): State<RestState>, Path(execution_id): Path<String>) -> Result<Response, Error> {
    Ok(ProtoJson(state.query.get_execution(GetExecutionRequest { execution_id }).await?).into_response())
}

/// Unknown paths answer in the same error shape as everything else.
/// A trailers-only gRPC answer carrying `status`, in the caller's content type (so grpc-web
/// clients read it too): gRPC clients look for the status in the headers, not a JSON body.
pub fn grpc_status_response(status: tonic::Status, content_type: Option<axum::http::HeaderValue>) -> Response {
    let mut response = status.into_http::<axum::body::Body>();
    if let Some(content_type) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response
}

pub async fn not_found(uri: axum::http::Uri, headers: axum::http::HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/grpc"));
    if grpc {
        let status = tonic::Status::unimplemented(format!("no service or method {}", uri.path()));
        return grpc_status_response(status, headers.get(header::CONTENT_TYPE).cloned());
    }
    Error::NotFound(format!("no route for {}", uri.path())).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(method, path)` of every `.route(...)` in [`router`], read from this file's source.
    fn served_routes() -> Vec<(String, String)> {
        let source = include_str!("rest.rs");
        let body = source.split("pub fn router(").nth(1).and_then(|r| r.split("\n}\n").next()).unwrap_or_default();
        let mut routes = Vec::new();
        for call in body.split(".route(").skip(1) {
            let path = call.split('"').nth(1).unwrap_or_default().to_owned();
            for method in ["get", "post", "put", "delete"] {
                if call.contains(&format!("{method}(")) {
                    routes.push((method.to_owned(), path.clone()));
                }
            }
        }
        routes
    }

    proptest::proptest! {
        /// The JSON bodies the shim decodes, from arbitrary bytes: an error or a message, never a panic.
        #[test]
        fn json_bodies_from_arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = serde_json::from_slice::<ExecutionReport>(&bytes);
            let _ = serde_json::from_slice::<SubmitReportBatchRequest>(&bytes);
            let _ = serde_json::from_slice::<UpsertWorkerRequest>(&bytes);
        }

        #[test]
        fn json_shaped_bodies_never_panic(body in r#"\{("[a-z_]{1,20}": ("[^"]{0,20}"|-?[0-9]{1,25}|true|null|\[\]|\{\}), ){0,6}"x": 1\}"#) {
            let _ = serde_json::from_str::<ExecutionReport>(&body);
            let _ = serde_json::from_str::<UpsertWorkerRequest>(&body);
        }
    }

    #[test]
    fn every_served_route_is_documented_and_every_documented_route_is_served() {
        let mut served = served_routes();
        served.retain(|(_, path)| path != "/api/v1/openapi.json");
        served.sort();
        let mut documented: Vec<(String, String)> =
            ROUTES.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
        documented.sort();
        assert!(served.len() >= 15, "the source scan found the routes: {served:?}");
        assert_eq!(served, documented);
    }

    #[test]
    fn every_schema_reference_resolves() {
        let document = crate::openapi::document();
        let schemas = document["components"]["schemas"].as_object().expect("schemas");
        let text = document.to_string();
        for reference in text.split("\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap_or_default();
            assert!(schemas.contains_key(name), "{name} is referenced but not defined");
        }
        for route in ROUTES {
            assert!(schemas.contains_key(&format!("runwarden.v1.{}", route.response)), "{}", route.response);
            if let Some(body) = route.body {
                assert!(schemas.contains_key(&format!("runwarden.v1.{body}")), "{body}");
            }
        }
        let report = &schemas["runwarden.v1.ExecutionReport"]["properties"];
        assert_eq!(report["outcome"]["enum"][1], "OUTCOME_SUCCESS");
        assert_eq!(report["started_at"]["format"], "date-time");
        assert_eq!(report["custom_metrics"]["type"], "object");
    }
}
