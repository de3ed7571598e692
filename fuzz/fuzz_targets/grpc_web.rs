//! Fuzzes the grpc-web and gRPC framing decoders as the server runs them: tonic-web's
//! `GrpcWebLayer` around a `ReportServiceServer` with the server's message-size limit and gzip
//! settings, called in-process (no socket, no database) on a tokio current-thread runtime.
//!
//! Input: byte 0 chooses the request, byte 1 the body's chunking, the rest is the body.
//! - byte 0, bits 0-1, the content type: 0 `application/grpc-web+proto` (the rest as is);
//!   1 `application/grpc-web-text` (the rest, base64-encoded, so the fuzzer shapes the frames
//!   inside); 2 `application/grpc-web-text` (the rest as is: hostile base64); 3 plain
//!   `application/grpc` over HTTP/2 (tonic's own framing, which tonic-web passes through).
//! - byte 0, bits 2-3, the method: `SubmitReport` (0, 3), `SubmitReportBatch` (1) or the
//!   client-streaming `SubmitReports` (2).
//! - byte 0, bit 4: send `grpc-encoding: gzip`, so a frame's compressed flag is honoured.
//! - byte 1: the body arrives in chunks of this many bytes (0: one chunk), so frames and base64
//!   quanta straddle chunk boundaries.
//!
//! A frame is `flags(1) length(4, big-endian) message`; flags 0x80 marks a trailers frame.
//! The service behind the layer decodes nothing itself (tonic did) and only runs
//! `validate_report`, answering INVALID_ARGUMENT with field violations like the real one.
//! Left out, because `server::grpc_web` is private: the bearer-token layer and the rewrite of
//! tonic's OUT_OF_RANGE / INTERNAL answers to RESOURCE_EXHAUSTED / INVALID_ARGUMENT.
//!
//! Must hold: the whole exchange, request through the last byte of the response body, never
//! panics and finishes within 5 seconds.

#![no_main]

use std::{convert::Infallible, sync::OnceLock, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use futures::stream;
use http::{Method, Request, Version, header};
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::fuzz_target;
use runwarden::{
    config::MAX_MESSAGE_BYTES,
    domain::validation::validate_received,
    error::Error,
    proto::v1::{FieldViolation, RejectedReport, SubmitReportResponse, SubmitReportsResponse},
    received::{
        SubmitReportBatchRequest, SubmitReportRequest,
        service::report_service_server::{ReportService, ReportServiceServer},
    },
};
use tokio::runtime::Runtime;
use tonic::{Status, Streaming, codec::CompressionEncoding};
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, ServiceExt};

/// `ReportService` with validation only: no store, no ingest queue, no clock.
struct ValidatingReportService;

impl ValidatingReportService {
    fn summarize(reports: impl IntoIterator<Item = SubmitReportRequest>) -> SubmitReportsResponse {
        let mut response = SubmitReportsResponse::default();
        for (index, request) in reports.into_iter().enumerate() {
            match validate_received(request.report, request.received, runwarden_fuzz::now()) {
                Ok(valid) => {
                    response.accepted += 1;
                    response.execution_ids.push(valid.report.execution_id);
                }
                Err(violations) => {
                    response.execution_ids.push(String::new());
                    response.rejected.push(RejectedReport {
                        index: index as i64,
                        execution_id: String::new(),
                        violations: violations
                            .into_iter()
                            .map(|v| FieldViolation { field: v.field, description: v.description })
                            .collect(),
                    });
                }
            }
        }
        response
    }
}

#[tonic::async_trait]
impl ReportService for ValidatingReportService {
    async fn submit_report(
        &self,
        request: tonic::Request<SubmitReportRequest>,
    ) -> Result<tonic::Response<SubmitReportResponse>, Status> {
        let request = request.into_inner();
        let valid = validate_received(request.report, request.received, runwarden_fuzz::now())
            .map_err(Error::InvalidArgument)?;
        Ok(tonic::Response::new(SubmitReportResponse { execution_id: valid.report.execution_id, ..Default::default() }))
    }

    async fn submit_reports(
        &self,
        request: tonic::Request<Streaming<SubmitReportRequest>>,
    ) -> Result<tonic::Response<SubmitReportsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut reports = Vec::new();
        while let Some(report) = stream.message().await? {
            reports.push(report);
        }
        Ok(tonic::Response::new(Self::summarize(reports)))
    }

    async fn submit_report_batch(
        &self,
        request: tonic::Request<SubmitReportBatchRequest>,
    ) -> Result<tonic::Response<SubmitReportsResponse>, Status> {
        let reports = request
            .into_inner()
            .into_pairs()
            .map(|(report, received)| SubmitReportRequest { report: Some(report), received });
        Ok(tonic::Response::new(Self::summarize(reports)))
    }
}

type Stack = GrpcWebService<ReportServiceServer<ValidatingReportService>>;

/// Built once per process: the runtime and the service stack, as `server.rs` assembles it.
fn stack() -> &'static (Runtime, Stack) {
    static STACK: OnceLock<(Runtime, Stack)> = OnceLock::new();
    STACK.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime");
        let service = ReportServiceServer::new(ValidatingReportService)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip);
        (runtime, GrpcWebLayer::new().layer(service))
    })
}

fuzz_target!(|data: &[u8]| {
    let [flags, chunk, body @ ..] = data else { return };
    let (content_type, version, body) = match flags & 0b11 {
        0 => ("application/grpc-web+proto", Version::HTTP_11, body.to_vec()),
        1 => ("application/grpc-web-text", Version::HTTP_11, STANDARD.encode(body).into_bytes()),
        2 => ("application/grpc-web-text", Version::HTTP_11, body.to_vec()),
        _ => ("application/grpc", Version::HTTP_2, body.to_vec()),
    };
    let method = match (flags >> 2) & 0b11 {
        1 => "SubmitReportBatch",
        2 => "SubmitReports",
        _ => "SubmitReport",
    };
    let chunk = if *chunk == 0 { body.len().max(1) } else { usize::from(*chunk) };
    let frames: Vec<Result<_, Infallible>> =
        body.chunks(chunk).map(|c| Ok(http_body::Frame::data(Bytes::copy_from_slice(c)))).collect();

    let mut request = Request::builder()
        .method(Method::POST)
        .version(version)
        .uri(format!("http://runwarden.test/runwarden.v1.ReportService/{method}"))
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ACCEPT, content_type)
        .header("te", "trailers");
    if flags & 0b1_0000 != 0 {
        request = request.header("grpc-encoding", "gzip").header("grpc-accept-encoding", "gzip");
    }
    let request = request.body(StreamBody::new(stream::iter(frames))).expect("a well-formed request");

    let (runtime, service) = stack();
    let exchange = async {
        let response = service.clone().oneshot(request).await.expect("tonic services never fail the call");
        // Reading the body runs the response side: message encoding and grpc-web trailers.
        let _ = response.into_body().collect().await;
    };
    // The timer is created inside the runtime, which drives it.
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), exchange).await })
        .expect("the grpc-web exchange did not finish within 5 seconds");
});
