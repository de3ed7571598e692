//! `runwarden.v1.ReportService`: workers submit their reports here.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};

use super::{Services, observe};
use crate::{
    auth::Caller,
    domain::validation::validate_received,
    domain::validation::{FieldViolation as DomainViolation, ValidReport},
    error::Error,
    proto::v1::{
        Analysis, ExecutionReport, FieldViolation, RejectedReport, SubmitReportResponse, SubmitReportsResponse,
    },
    received::{SubmitReportBatchRequest, SubmitReportRequest, service::report_service_server::ReportService},
    store::{
        executions,
        ingest::{Ack, Reservation},
    },
};

#[derive(Clone)]
pub struct ReportApi {
    services: Arc<Services>,
}

impl ReportApi {
    pub fn new(services: Arc<Services>) -> Self {
        ReportApi { services }
    }

    /// Validates, stores durably, and answers once the report is committed.
    pub async fn submit_report(
        &self,
        caller: &Caller,
        request: SubmitReportRequest,
    ) -> Result<SubmitReportResponse, Error> {
        self.submit_report_in(caller, None, None, request).await
    }

    /// [`ReportApi::submit_report`] into a place already reserved in the writer's queue, if any;
    /// without one, a full queue is waited on for at most half of `deadline` (the call's
    /// `grpc-timeout`).
    pub async fn submit_report_in(
        &self,
        caller: &Caller,
        place: Option<&Reservation>,
        deadline: Option<Duration>,
        request: SubmitReportRequest,
    ) -> Result<SubmitReportResponse, Error> {
        observe("SubmitReport", async {
            let received_at = self.services.clock.now();
            let valid =
                validate_received(request.report, request.received, received_at).map_err(Error::InvalidArgument)?;
            caller.may_report_for(&valid.report.worker_name)?;
            let execution_id = valid.report.execution_id.clone();
            let worker = valid.report.worker_name.clone();
            // A call without a place that finds the queue full (REST, or a gRPC call the queue
            // filled up behind while it was decoded) waits for one like `server::ShedWhenFull`.
            let ingest = &self.services.ingest;
            let wait = wait_within(ingest.admission_wait(), deadline);
            let ack = ingest.submit_in(place, wait, valid, received_at).await?;
            let (duplicate, analysis) = match ack {
                Ack::Stored(analysis) => (false, *analysis),
                // The worker learns the scores of the copy that was stored first.
                // (Boxed: the query's future is large, and inline it would be carried, and moved,
                // by every call's future, duplicate or not.)
                Ack::Duplicate => (true, Box::pin(stored_analysis(&self.services, &execution_id)).await?),
            };
            tracing::debug!(worker = %worker, execution_id = %execution_id, duplicate, "report submitted");
            Ok(SubmitReportResponse {
                execution_id,
                duplicate,
                scores: analysis.scores,
                quality_level: analysis.quality_level,
                reasons: analysis.reasons,
                weights: analysis.weights,
                learning: analysis.learning,
            })
        })
        .await
    }
}

async fn stored_analysis(services: &Services, execution_id: &str) -> Result<Analysis, Error> {
    let row = executions::find_by_execution_id(services.store.reader(), execution_id)
        .await?
        .ok_or_else(|| Error::internal(format!("duplicate execution {execution_id} is not readable")))?;
    row.analysis().map_err(Error::internal)
}

/// Most reports in one SubmitReportBatch.
pub const MAX_BATCH_REPORTS: usize = 1000;
/// Reports of a stream handed to the writer together.
const STREAM_CHUNK: usize = 500;
/// Chunks of one stream being committed while the next is read.
const STREAM_CHUNKS_IN_FLIGHT: usize = 4;

impl ReportApi {
    /// Validates each report on its own, stores the valid ones, and summarises.
    pub async fn submit_report_batch(
        &self,
        caller: &Caller,
        request: SubmitReportBatchRequest,
    ) -> Result<SubmitReportsResponse, Error> {
        observe("SubmitReportBatch", async {
            if request.reports.len() > MAX_BATCH_REPORTS {
                return Err(Error::invalid(
                    "reports",
                    format!("must hold at most {MAX_BATCH_REPORTS} reports, got {}", request.reports.len()),
                ));
            }
            let mut summary = BatchSummary::default();
            let chunk = self.validate_chunk(0, request.into_pairs(), &mut summary);
            chunk.check(caller)?;
            let results = self.services.ingest.submit_many(chunk.valid).await?;
            summary.record(chunk.indices, results)?;
            Ok(summary.finish())
        })
        .await
    }

    /// The client-streaming form: reads the stream in chunks and commits a chunk while reading
    /// the next.
    pub async fn submit_report_stream(
        &self,
        caller: &Caller,
        mut stream: impl futures::Stream<Item = Result<SubmitReportRequest, Status>> + Unpin,
    ) -> Result<SubmitReportsResponse, Error> {
        use futures::{StreamExt, stream::FuturesOrdered};
        observe("SubmitReports", async {
            let mut summary = BatchSummary::default();
            let mut in_flight = FuturesOrdered::new();
            let mut next_index = 0usize;
            let mut pending = Vec::with_capacity(STREAM_CHUNK);
            loop {
                let message = stream.next().await;
                let end = message.is_none();
                if let Some(message) = message {
                    let message =
                        message.map_err(|status| Error::Malformed(format!("stream error: {}", status.message())))?;
                    pending.push((message.report.unwrap_or_default(), message.received));
                }
                if pending.len() == STREAM_CHUNK || (end && !pending.is_empty()) {
                    let reports = std::mem::take(&mut pending);
                    let first = next_index;
                    next_index += reports.len();
                    let chunk = self.validate_chunk(first, reports, &mut summary);
                    // Chunks before one with a foreign worker stay stored (as with any failure
                    // mid-stream, a retry answers them as duplicates).
                    chunk.check(caller)?;
                    let ingest = self.services.ingest.clone();
                    in_flight.push_back(async move { (chunk.indices, ingest.submit_many(chunk.valid).await) });
                    while in_flight.len() >= STREAM_CHUNKS_IN_FLIGHT || (end && !in_flight.is_empty()) {
                        if let Some((indices, results)) = in_flight.next().await {
                            summary.record(indices, results?)?;
                        }
                    }
                }
                if end {
                    break;
                }
            }
            while let Some((indices, results)) = in_flight.next().await {
                summary.record(indices, results?)?;
            }
            Ok(summary.finish())
        })
        .await
    }

    /// Validates `reports` (each with its bytes as received, if kept), the first of them at
    /// `first` in the stream or batch.
    fn validate_chunk(
        &self,
        first: usize,
        reports: impl IntoIterator<Item = (ExecutionReport, Option<Vec<u8>>)>,
        summary: &mut BatchSummary,
    ) -> ValidChunk {
        let received_at = self.services.clock.now();
        let reports = reports.into_iter();
        // Sized up front: a chunk's reports are large, and growing its vectors copied them over
        // and over (~700 instructions per report in streams of 1,000).
        let expected = reports.size_hint().0;
        let mut chunk = ValidChunk { indices: Vec::with_capacity(expected), valid: Vec::with_capacity(expected) };
        for (offset, (report, received)) in reports.enumerate() {
            let index = first + offset;
            let execution_id = report.execution_id.clone();
            match validate_received(Some(report), received, received_at) {
                Ok(valid) => {
                    chunk.indices.push((index, valid.report.execution_id.clone()));
                    chunk.valid.push((valid, received_at));
                }
                Err(violations) => summary.reject(index, execution_id, violations),
            }
        }
        chunk
    }
}

#[derive(Default)]
struct ValidChunk {
    /// Index in the stream and stored id of each valid report.
    indices: Vec<(usize, String)>,
    valid: Vec<(ValidReport, chrono::DateTime<chrono::Utc>)>,
}

impl ValidChunk {
    /// Refuses the whole chunk if the caller may not report for one of its workers.
    fn check(&self, caller: &Caller) -> Result<(), Error> {
        self.valid.iter().try_for_each(|(valid, _)| caller.may_report_for(&valid.report.worker_name))
    }
}

/// Collects the outcome of every report of a batch or stream, by index.
#[derive(Default)]
struct BatchSummary {
    response: SubmitReportsResponse,
}

impl BatchSummary {
    fn set_id(&mut self, index: usize, id: String) {
        let ids = &mut self.response.execution_ids;
        if ids.len() <= index {
            ids.resize(index + 1, String::new());
        }
        ids[index] = id;
    }

    fn reject(&mut self, index: usize, execution_id: String, violations: Vec<DomainViolation>) {
        self.set_id(index, String::new());
        self.response.rejected.push(RejectedReport {
            index: index as i64,
            execution_id,
            violations: violations
                .into_iter()
                .map(|v| FieldViolation { field: v.field, description: v.description })
                .collect(),
        });
    }

    /// Records the writer's answers; a retriable failure fails the whole call (a retry is safe:
    /// what was stored answers as duplicate).
    fn record(&mut self, ids: Vec<(usize, String)>, results: Vec<Result<Ack, Error>>) -> Result<(), Error> {
        for ((index, id), result) in ids.into_iter().zip(results) {
            match result? {
                Ack::Stored(_) => self.response.accepted += 1,
                Ack::Duplicate => self.response.duplicates += 1,
            }
            self.set_id(index, id);
        }
        Ok(())
    }

    fn finish(mut self) -> SubmitReportsResponse {
        self.response.rejected.sort_by_key(|r| r.index);
        self.response
    }
}

/// The admission wait, never more than half the caller's deadline (so the refusal reaches it first).
pub(crate) fn wait_within(wait: Duration, deadline: Option<Duration>) -> Duration {
    deadline.map_or(wait, |d| wait.min(d / 2))
}

#[tonic::async_trait]
impl ReportService for ReportApi {
    async fn submit_report(
        &self,
        request: Request<SubmitReportRequest>,
    ) -> Result<Response<SubmitReportResponse>, Status> {
        let caller = Caller::of(request.extensions())?;
        // A place in the queue this call waited for while it was full (see `server::ShedWhenFull`).
        let place = request.extensions().get::<Reservation>().cloned();
        let deadline = request.metadata().get("grpc-timeout").and_then(|v| super::grpc_timeout(v.as_encoded_bytes()));
        let call = ReportApi::submit_report_in(self, &caller, place.as_ref(), deadline, request.into_inner());
        Ok(Response::new(call.await?))
    }

    async fn submit_reports(
        &self,
        request: Request<tonic::Streaming<SubmitReportRequest>>,
    ) -> Result<Response<SubmitReportsResponse>, Status> {
        let caller = Caller::of(request.extensions())?;
        Ok(Response::new(self.submit_report_stream(&caller, request.into_inner()).await?))
    }

    async fn submit_report_batch(
        &self,
        request: Request<SubmitReportBatchRequest>,
    ) -> Result<Response<SubmitReportsResponse>, Status> {
        let caller = Caller::of(request.extensions())?;
        Ok(Response::new(ReportApi::submit_report_batch(self, &caller, request.into_inner()).await?))
    }
}
