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
//!
//! A server that requires auth takes a `report:write` token: [`Client::connect_with`] with
//! [`ClientOptions::token`]. `https://` addresses use TLS (the system's roots, or
//! [`ClientOptions::ca_cert`]).

use std::time::Duration;

use std::path::PathBuf;

use tonic::{
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

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
    #[error("invalid token: it must be printable ASCII")]
    Token,
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("cannot connect to runwarden: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The server's answer: INVALID_ARGUMENT names the fields; UNAVAILABLE and RESOURCE_EXHAUSTED
    /// are worth retrying with the same `execution_id`.
    #[error("runwarden refused the report: {}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// For the connection and for each call.
    pub timeout: Duration,
    /// Sent as `authorization: Bearer <token>`.
    pub token: Option<String>,
    /// PEM CA certificate to trust for `https://` instead of the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate and key, for servers that require mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions { timeout: Duration::from_secs(5), token: None, ca_cert: None, identity: None }
    }
}

/// Adds the bearer token to every call.
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection to runwarden's ReportService. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    reports: ReportServiceClient<InterceptedService<Channel, Bearer>>,
}

impl Client {
    /// Connects to `addr` (`host:port` or `http://host:port`), waiting at most 5 s.
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        Self::connect_with_timeout(addr, Duration::from_secs(5)).await
    }

    /// Connects with `timeout` for the connection and for each call.
    pub async fn connect_with_timeout(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        Self::connect_with(addr, &ClientOptions { timeout, ..ClientOptions::default() }).await
    }

    /// Connects with a token, TLS settings and timeout.
    pub async fn connect_with(addr: &str, options: &ClientOptions) -> Result<Client, ClientError> {
        Ok(Client { reports: ReportServiceClient::with_interceptor(channel(addr, options).await?, bearer(options)?) })
    }

    /// Submits one report and returns what the server stored (or recognised as a duplicate).
    pub async fn submit(&mut self, report: ExecutionReport) -> Result<SubmitReportResponse, ClientError> {
        Ok(self.reports.submit_report(SubmitReportRequest { report: Some(report) }).await?.into_inner())
    }
}

/// The interceptor that sends `options.token`.
pub fn bearer(options: &ClientOptions) -> Result<Bearer, ClientError> {
    let value = match &options.token {
        Some(token) => Some(format!("Bearer {}", token.trim()).parse().map_err(|_| ClientError::Token)?),
        None => None,
    };
    Ok(Bearer(value))
}

/// A channel to `addr` (`host:port`, `http://…` or `https://…`).
pub async fn channel(addr: &str, options: &ClientOptions) -> Result<Channel, ClientError> {
    let uri = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let address_error = |reason: String| ClientError::Address { addr: addr.to_owned(), reason };
    let mut endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| address_error(e.to_string()))?
        .connect_timeout(options.timeout)
        .timeout(options.timeout);
    if uri.starts_with("https://") {
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| ClientError::File { path: path.display().to_string(), reason: e.to_string() })
        };
        let mut tls = ClientTlsConfig::new();
        tls = match &options.ca_cert {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read(path)?)),
            None => tls.with_native_roots(),
        };
        if let Some((cert, key)) = &options.identity {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| address_error(e.to_string()))?;
    }
    Ok(endpoint.connect().await?)
}
