//! `runwarden.v1.ReportService`: workers submit their reports here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Services, observe};
use crate::{
    domain::validation::validate_report,
    error::Error,
    proto::v1::{Analysis, SubmitReportRequest, SubmitReportResponse, report_service_server::ReportService},
    store::{executions, ingest::Ack},
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
    pub async fn submit_report(&self, request: SubmitReportRequest) -> Result<SubmitReportResponse, Error> {
        observe("SubmitReport", async {
            let received_at = self.services.clock.now();
            let valid = validate_report(request.report, received_at).map_err(Error::InvalidArgument)?;
            let execution_id = valid.report.execution_id.clone();
            let worker = valid.report.worker_name.clone();
            let ack = self.services.ingest.submit(valid, received_at).await?;
            let (duplicate, analysis) = match ack {
                Ack::Stored(analysis) => (false, *analysis),
                // The worker learns the scores of the copy that was stored first.
                Ack::Duplicate => (true, stored_analysis(&self.services, &execution_id).await?),
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

#[tonic::async_trait]
impl ReportService for ReportApi {
    async fn submit_report(
        &self,
        request: Request<SubmitReportRequest>,
    ) -> Result<Response<SubmitReportResponse>, Status> {
        Ok(Response::new(ReportApi::submit_report(self, request.into_inner()).await?))
    }
}
