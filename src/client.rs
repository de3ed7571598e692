//! A typed client for Rust workers: connect, build an [`ExecutionReport`], submit. No proto files
//! or code generation needed on the worker's side.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use runwarden::client::{Client, ExecutionReport, Outcome};
//! let mut client = Client::connect("127.0.0.1:50051").await?;
//! let ack = client
//!     .submit(ExecutionReport {
//!         worker_name: "nightly_export".into(),
//!         outcome: Outcome::Success as i32,
//!         duration_ms: Some(1_250),
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("stored as {} ({:?})", ack.execution_id, ack.quality_level());
//! # Ok(()) }
//! ```

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::proto::v1::SubmitReportRequest;
pub use crate::proto::v1::{
    DataVerification, ExecutionReport, Outcome, ResourceMetrics, SubmitReportResponse,
    report_service_client::ReportServiceClient,
};

/// Why a submission failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot connect to runwarden: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The server's answer: INVALID_ARGUMENT names the fields; UNAVAILABLE and RESOURCE_EXHAUSTED
    /// are worth retrying with the same `execution_id`.
    #[error("runwarden refused the report: {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// A connection to runwarden's ReportService. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    reports: ReportServiceClient<Channel>,
}

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`), waiting at most 5 s.
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Self::connect_with_timeout(addr, Duration::from_secs(5)).await
    }

    /// Connects with `timeout` for the connection and for each call.
    pub async fn connect_with_timeout(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let uri = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| ClientError::Address { addr: addr.to_owned(), reason: e.to_string() })?
            .connect_timeout(timeout)
            .timeout(timeout);
        Ok(Client { reports: ReportServiceClient::new(endpoint.connect().await?) })
    }

    /// Submits one report and returns what the server stored (or recognised as a duplicate).
    pub async fn submit(&mut self, report: ExecutionReport) -> Result<SubmitReportResponse, ClientError> {
        Ok(self.reports.submit_report(SubmitReportRequest { report: Some(report) }).await?.into_inner())
    }
}
